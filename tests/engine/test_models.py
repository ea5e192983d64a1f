"""Models by name: shapes of forward and embed, configs, seeded init, local pretrained weights."""

import pytest
import torch

from engine.models import MODELS, ModelConfig, build_model, load_pretrained, model_from_config, stem_stride

torch.set_num_threads(1)

EMBED_DIMS = {
    "proxy_tiny": 64,
    "resnet20": 64,
    "resnet56": 64,
    "resnet18": 512,
    "tv_resnet18": 512,
    "tv_resnet50": 2048,
}


@pytest.mark.parametrize("name", ["proxy_tiny", "resnet20", "resnet18", "tv_resnet18"])
@pytest.mark.parametrize("size", [16, 32, 64])
def test_forward_and_embed_shapes(name, size):
    model = build_model(name, 5, size, seed=0).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits, emb = model(x), model.embed(x)
    assert logits.shape == (2, 5)
    assert emb.shape == (2, EMBED_DIMS[name]) == (2, model.embed_dim)
    assert torch.allclose(model.classify(emb), logits, atol=1e-5)
    assert model.config == MODELS[name](5, size)


def test_tv_resnet50_shapes():
    model = build_model("tv_resnet50", 3, 64, seed=0).eval()
    with torch.no_grad():
        assert model.embed(torch.randn(1, 3, 64, 64)).shape == (1, 2048)


def test_large_images_use_a_strided_stem():
    assert [stem_stride(s) for s in (16, 32, 48, 64, 96, 128)] == [1, 1, 1, 2, 2, 4]
    model = build_model("proxy_tiny", 2, 128, seed=0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 128, 128)).shape == (1, 2)


def test_config_is_frozen_and_rebuilds_the_same_architecture():
    model = build_model("resnet20", 4, 32, seed=1)
    with pytest.raises(AttributeError):
        model.config.depth = 8
    rebuilt = model_from_config(model.config)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert model.config.depth == 20 and model.config.width == 16 and model.config.family == "preact_resnet"


def test_seed_gives_same_weights_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_model("proxy_tiny", 3, 16, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = build_model("proxy_tiny", 3, 16, seed=7)
    c = build_model("proxy_tiny", 3, 16, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.stem.weight, c.stem.weight)


@pytest.mark.parametrize(
    "config, message",
    [
        (ModelConfig("x", "preact_resnet", 10, 16, 3, 32), "6n\\+2"),
        (ModelConfig("x", "vit", 8, 16, 3, 32), "family"),
        (ModelConfig("x", "resnet_small", 19, 64, 3, 32), "depth"),
        (ModelConfig("x", "resnet_small", 18, 32, 3, 32), "width"),
        (ModelConfig("x", "preact_resnet", 8, 16, 0, 32), "num_classes"),
        (ModelConfig("x", "preact_resnet", 8, 16, 3, 4), "image_size"),
    ],
)
def test_invalid_configs_raise(config, message):
    with pytest.raises(ValueError, match=message):
        model_from_config(config)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="proxy_tiny"):
        build_model("resnet9000", 3, 32)


def test_pretrained_from_local_file_skips_only_a_different_head(tmp_path):
    from safetensors.torch import save_file

    source = build_model("resnet20", 10, 32, seed=1)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = build_model("resnet20", 4, 32, seed=2, pretrained_path=path)
    assert torch.equal(model.stem.weight, source.stem.weight)
    assert model.fc.weight.shape == (4, 64)

    torch_path = tmp_path / "w.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, torch_path)
    same = build_model("resnet20", 10, 32, pretrained_path=torch_path)
    assert torch.equal(same.fc.weight, source.fc.weight)


def test_pretrained_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_model("proxy_tiny", 3, 32, pretrained_path=tmp_path / "nope.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save(build_model("proxy_tiny", 3, 32).state_dict(), wrong)
    with pytest.raises(ValueError, match=r"does not fit|shape"):
        load_pretrained(build_model("resnet20", 3, 32), wrong)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="cannot read"):
        load_pretrained(build_model("proxy_tiny", 3, 32), junk)
