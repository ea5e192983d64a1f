"""Pool scoring: shapes, dtypes, probabilities, memmap input, agreement with the model."""

import numpy as np
import pytest
import torch

from engine.models import build_model
from engine.precision import autocast
from engine.score import PoolScores, predict_logits, score_pool

torch.set_num_threads(1)

NORM = ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))


@pytest.fixture
def pool():
    return np.random.default_rng(0).integers(0, 256, (37, 3, 16, 16), dtype=np.uint8)


@pytest.mark.parametrize("name, dim", [("proxy_tiny", 64), ("resnet18", 512)])
def test_shapes_dtypes_and_probabilities(pool, name, dim):
    scores = score_pool(build_model(name, 4, 16, seed=0), pool, NORM, batch_size=10)
    assert isinstance(scores, PoolScores)
    assert scores.probs.shape == (37, 4) and scores.probs.dtype == np.float32
    assert scores.embeddings.shape == (37, dim) and scores.embeddings.dtype == np.float32
    assert np.allclose(scores.probs.sum(1), 1.0, atol=1e-5) and (scores.probs >= 0).all()


def test_matches_the_model_on_normalized_float_input_in_the_engine_precision(pool, precision):
    model = build_model("proxy_tiny", 3, 16, seed=0).eval()
    scores = score_pool(model, pool, NORM, batch_size=8)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORM)
    x = ((torch.from_numpy(pool).float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(x.device):  # what inference runs in: bf16 autocast, or none
        logits, embeddings = model(x).float(), model.embed(x).float()
    with torch.no_grad():
        float32_logits = model(x)
    tolerance = 3e-2 if precision else 1e-4  # bf16 keeps 8 bits of mantissa
    assert np.allclose(scores.probs, torch.softmax(logits, 1).numpy(), atol=tolerance)
    assert np.allclose(scores.embeddings, embeddings.numpy(), atol=tolerance)
    assert np.allclose(predict_logits(model, pool, NORM), logits.numpy(), atol=tolerance)
    # bf16 inference really ran in bf16: its logits are not the float32 ones
    off_float32 = np.abs(predict_logits(model, pool, NORM) - float32_logits.numpy()).max()
    assert bool(off_float32 > 1e-4) == precision


def test_batch_size_does_not_change_results(pool, precision):
    model = build_model("proxy_tiny", 3, 16, seed=0)
    a, b = score_pool(model, pool, NORM, batch_size=5), score_pool(model, pool, NORM, batch_size=512)
    tolerance = 3e-2 if precision else 1e-4
    assert np.allclose(a.probs, b.probs, atol=tolerance) and np.allclose(a.embeddings, b.embeddings, atol=tolerance)


def test_works_on_a_read_only_memmap(tmp_path, pool):
    path = tmp_path / "pool.npy"
    np.save(path, pool)
    mapped = np.load(path, mmap_mode="r")
    model = build_model("proxy_tiny", 3, 16, seed=0)
    from_map, from_ram = score_pool(model, mapped, NORM, batch_size=16), score_pool(model, pool, NORM)
    assert np.allclose(from_map.probs, from_ram.probs, atol=1e-5)


def test_restores_training_mode_and_handles_an_empty_pool(pool):
    model = build_model("proxy_tiny", 3, 16, seed=0).train()
    empty = score_pool(model, pool[:0], NORM)
    assert model.training
    assert empty.probs.shape == (0, 3) and empty.embeddings.shape == (0, 64)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 3, 16, 16), np.float32), "uint8"),
        (np.zeros((2, 1, 16, 16), np.uint8), "N, 3, H, W"),
    ],
)
def test_bad_inputs_raise(images, message):
    with pytest.raises(ValueError, match=message):
        score_pool(build_model("proxy_tiny", 3, 16), images, NORM)


def test_bad_batch_size_and_normalization_raise(pool):
    model = build_model("proxy_tiny", 3, 16)
    with pytest.raises(ValueError, match="batch_size"):
        score_pool(model, pool, NORM, batch_size=0)
    with pytest.raises(ValueError, match="positive"):
        score_pool(model, pool, ((0.5,) * 3, (0.0, 1.0, 1.0)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_scores_on_cuda_match_cpu(pool):
    model = build_model("proxy_tiny", 3, 16, seed=0)
    cpu = score_pool(model, pool, NORM, device="cpu")
    gpu = score_pool(model, pool, NORM, device="cuda")
    assert np.allclose(cpu.probs, gpu.probs, atol=1e-2)
