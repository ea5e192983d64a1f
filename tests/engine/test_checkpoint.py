"""Checkpoints: save -> load -> predict gives the original model's outputs; clear errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from engine.models import build_model
from engine.pool_cache import image_to_array
from engine.score import predict_logits

torch.set_num_threads(1)

CLASSES = ["cat", "dog", "<b>bird</b>"]
NORM = ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))


@pytest.fixture
def trained():
    """A proxy with non-trivial BN statistics (one forward pass in train mode)."""
    model = build_model("proxy_tiny", 3, 16, seed=0)
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 16, 16) * 2 + 1)
    return model.eval()


def pil_images(n=5, size=20, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)) for _ in range(n)]


def save(model, folder):
    return save_checkpoint(
        model,
        folder,
        class_names=CLASSES,
        image_size=16,
        normalization=NORM,
        metrics={"val_acc": np.float32(0.5)},
        n_labels=42,
    )


def test_save_writes_weights_and_metadata(tmp_path, trained):
    folder = save(trained, tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "model.safetensors"]
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["model"] == {
        "name": "proxy_tiny",
        "family": "preact_resnet",
        "depth": 8,
        "width": 16,
        "num_classes": 3,
        "image_size": 16,
    }
    assert meta["class_names"] == CLASSES and meta["image_size"] == 16 and meta["n_labels"] == 42
    assert meta["normalization"] == {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}
    assert meta["metrics"] == {"val_acc": 0.5} and meta["torch_version"] == torch.__version__
    assert meta["created_at"].endswith("+00:00")


def test_load_and_predict_match_the_original_model(tmp_path, trained):
    loaded = load_checkpoint(save(trained, tmp_path / "ckpt"))
    assert not loaded.model.training and loaded.class_names == CLASSES
    for a, b in zip(trained.state_dict().values(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    images = pil_images()
    uint8 = np.stack([image_to_array(img, 16) for img in images])
    expected = torch.softmax(torch.from_numpy(predict_logits(trained, uint8, NORM)), 1).numpy()
    probs = loaded.predict_proba(images)
    assert probs.shape == (5, 3) and np.allclose(probs, expected, atol=1e-5)
    predictions = loaded.predict(images)
    assert [name for name, _ in predictions] == [CLASSES[i] for i in expected.argmax(1)]
    assert all(np.isclose(p, expected[i].max(), atol=1e-5) for i, (_, p) in enumerate(predictions))


def test_predict_accepts_any_mode_and_an_empty_list(tmp_path, trained):
    loaded = load_checkpoint(save(trained, tmp_path / "ckpt"))
    odd = [Image.new("L", (30, 10), 90), Image.new("RGBA", (16, 16), (1, 2, 3, 0)), Image.new("P", (9, 9))]
    assert len(loaded.predict(odd)) == 3
    assert loaded.predict([]) == [] and loaded.predict_proba([]).shape == (0, 3)


def test_overwriting_a_checkpoint_replaces_it(tmp_path, trained):
    folder = save(trained, tmp_path / "ckpt")
    other = build_model("proxy_tiny", 3, 16, seed=9)
    save(other, folder)
    assert torch.equal(load_checkpoint(folder).model.stem.weight, other.stem.weight)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_missing_checkpoint_raises_a_clear_error(tmp_path, trained):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "nothing")
    folder = save(trained, tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        load_checkpoint(folder)
    (folder / "metadata.json").unlink()
    with pytest.raises(CheckpointError, match=r"metadata\.json is missing"):
        load_checkpoint(folder)


def test_corrupt_files_raise_a_clear_error(tmp_path, trained):
    folder = save(trained, tmp_path / "ckpt")
    (folder / "model.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(CheckpointError, match="corrupt checkpoint: cannot read"):
        load_checkpoint(folder)
    (folder / "metadata.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(folder)
    (folder / "metadata.json").write_text(json.dumps({"model": {}}))
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(folder)


def test_weights_that_do_not_fit_the_metadata_raise(tmp_path, trained):
    folder = save(trained, tmp_path / "ckpt")
    meta = json.loads((folder / "metadata.json").read_text())
    meta["model"]["depth"] = 14
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(folder)
    meta["model"]["family"] = "transformer"
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="bad model settings"):
        load_checkpoint(folder)


def test_save_refuses_mismatched_class_names_or_foreign_models(tmp_path, trained):
    with pytest.raises(CheckpointError, match="class names"):
        save_checkpoint(
            trained, tmp_path / "c", class_names=["a"], image_size=16, normalization=NORM, metrics={}, n_labels=1
        )
    with pytest.raises(CheckpointError, match=r"engine\.models"):
        save_checkpoint(
            torch.nn.Linear(2, 3),
            tmp_path / "c",
            class_names=CLASSES,
            image_size=16,
            normalization=NORM,
            metrics={},
            n_labels=1,
        )


def test_channels_last_models_save_and_resnet18_round_trips(tmp_path):
    model = build_model("resnet18", 3, 16, seed=0).to(memory_format=torch.channels_last).eval()
    loaded = load_checkpoint(save(model, tmp_path / "r18"))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded.model(x), atol=1e-5)
