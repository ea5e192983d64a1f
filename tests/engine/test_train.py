"""Training: loss goes down, progress, cancellation, seeding, tiny sets, augmentation, errors."""
import numpy as np
import pytest
import torch

import engine.train as train_module
from engine.models import build_model
from engine.train import Cancelled, Progress, TrainConfig, augment, best_device, evaluate, train

torch.set_num_threads(1)

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
FAST = TrainConfig(epochs=3, batch_size=16, lr=0.2, device="cpu", report_every=1)
COLORS = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220]], np.float32)


def separable(n_per_class=16, size=16, seed=0):
    """uint8 [3n, 3, S, S] images whose class is their dominant colour (plus noise), int64 labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    noise = rng.normal(0, 25, (len(labels), 3, size, size))
    images = np.clip(COLORS[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
    order = rng.permutation(len(labels))
    return images[order], labels[order].astype(np.int64)


def weights(model):
    return [v.detach().cpu().clone() for v in model.state_dict().values()]


def test_loss_goes_down_and_accuracy_beats_chance():
    images, labels = separable()
    model = build_model("proxy_tiny", 3, 16, seed=0)
    reports = []
    trained = train(model, images, labels, TrainConfig(epochs=4, batch_size=16, lr=0.2, device="cpu"),
                    NORM, on_progress=reports.append)
    assert trained is model and not model.training
    epoch_losses = [p.loss for p in reports]
    assert len(epoch_losses) == 4 and epoch_losses[-1] < epoch_losses[0]
    assert evaluate(model, images, labels, NORM) > 0.6      # chance is 1/3


def test_progress_reports_every_step_with_positions():
    images, labels = separable(n_per_class=8)   # 24 images, batch 16 -> 2 steps per epoch
    reports: list[Progress] = []
    train(build_model("proxy_tiny", 3, 16, seed=0), images, labels, FAST, NORM, on_progress=reports.append)
    assert [(p.epoch, p.step) for p in reports] == [(e, s) for e in (1, 2, 3) for s in (1, 2)]
    assert all(p.epochs == 3 and p.steps == 2 and np.isfinite(p.loss) for p in reports)
    assert reports[-1].fraction == 1.0


def test_should_stop_raises_cancelled_before_the_first_step():
    images, labels = separable(n_per_class=4)
    model = build_model("proxy_tiny", 3, 16, seed=0)
    before = weights(model)
    with pytest.raises(Cancelled):
        train(model, images, labels, FAST, NORM, should_stop=lambda: True)
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model)))


def test_should_stop_cancels_between_steps(monkeypatch):
    monkeypatch.setattr(train_module, "STOP_CHECK_S", 0.0)
    images, labels = separable(n_per_class=8)
    reports = []
    with pytest.raises(Cancelled):
        train(build_model("proxy_tiny", 3, 16, seed=0), images, labels, FAST, NORM,
              on_progress=reports.append, should_stop=lambda: len(reports) >= 3)
    assert len(reports) == 3


def test_seeded_training_is_reproducible_on_cpu():
    images, labels = separable(n_per_class=6)
    runs = [train(build_model("proxy_tiny", 3, 16, seed=1), images, labels, FAST, NORM) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(weights(runs[0]), weights(runs[1])))
    other = train(build_model("proxy_tiny", 3, 16, seed=1), images, labels,
                  TrainConfig(**{**FAST.__dict__, "seed": 5}), NORM)
    assert not all(torch.equal(a, b) for a, b in zip(weights(runs[0]), weights(other)))


@pytest.mark.parametrize("name", ["proxy_tiny", "tv_resnet18"])    # tv_resnet18: 1x1 last map at 16 px
@pytest.mark.parametrize("n, batch_size", [(1, 128), (3, 128), (3, 2), (5, 4)])
def test_tiny_sets_and_single_example_classes_train(name, n, batch_size):
    images, labels = separable(n_per_class=2)
    model = train(build_model(name, 3, 16, seed=0), images[:n], labels[:n],
                  TrainConfig(epochs=2, batch_size=batch_size, device="cpu"), NORM)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


@pytest.mark.parametrize("n, batch_size, expected", [
    (1, 128, [2]),                     # a lone example is repeated
    (3, 2, [3]),                       # never a step of one
    (129, 128, [65, 64]),
    (1000, 128, [125] * 8),
    (5000, 128, [125] * 40),           # not 39 x 128 + a step of 8
    (4001, 128, [126] * 1 + [125] * 31),
])
def test_step_sizes_are_equal_batches_of_every_example(n, batch_size, expected):
    assert train_module._step_sizes(n, batch_size) == expected


@pytest.mark.parametrize("batch_size", [2, 3, 7, 128])
def test_step_sizes_use_each_example_once_and_never_one(batch_size):
    for n in range(2, 600):
        sizes = train_module._step_sizes(n, batch_size)
        assert sum(sizes) == n and min(sizes) >= 2 and max(sizes) - min(sizes) <= 1, (n, sizes)
        assert max(sizes) <= max(batch_size, 3), (n, sizes)


def test_cosine_schedule_and_torch_inputs():
    images, labels = separable(n_per_class=4)
    config = TrainConfig(epochs=1, batch_size=8, schedule="cosine", device="cpu")
    train(build_model("proxy_tiny", 3, 16, seed=0), torch.from_numpy(images), torch.from_numpy(labels), config, NORM)


@pytest.mark.parametrize("images, labels, config, message", [
    (np.zeros((0, 3, 16, 16), np.uint8), np.zeros(0, np.int64), FAST, "empty"),
    (np.zeros((2, 3, 16, 16), np.float32), np.zeros(2, np.int64), FAST, "uint8"),
    (np.zeros((2, 16, 16, 3), np.uint8), np.zeros(2, np.int64), FAST, "N, 3, H, W"),
    (np.zeros((2, 3, 16, 16), np.uint8), np.array([0, 3]), FAST, "0..2"),
    (np.zeros((2, 3, 16, 16), np.uint8), np.zeros(3, np.int64), FAST, "shape"),
    (np.zeros((2, 3, 16, 16), np.uint8), np.zeros(2, np.int64), TrainConfig(schedule="step"), "schedule"),
    (np.zeros((2, 3, 16, 16), np.uint8), np.zeros(2, np.int64), TrainConfig(epochs=0), ">= 1"),
    (np.zeros((2, 3, 16, 16), np.uint8), np.zeros(2, np.int64), TrainConfig(batch_size=1), ">= 2"),
])
def test_bad_inputs_raise_clear_errors(images, labels, config, message):
    with pytest.raises(ValueError, match=message):
        train(build_model("proxy_tiny", 3, 16), images, labels, config, NORM)


def test_augment_crops_with_reflection_and_flips():
    gen = torch.Generator().manual_seed(0)
    row = torch.arange(8, dtype=torch.uint8)
    batch = row.expand(64, 3, 8, 8).contiguous()          # each row reads 0..7
    flipped = augment(batch, 0, gen)
    assert flipped.shape == batch.shape and flipped.dtype == torch.uint8
    is_same = (flipped == batch).flatten(1).all(1)
    is_mirror = (flipped == batch.flip(3)).flatten(1).all(1)
    assert torch.all(is_same | is_mirror) and is_same.any() and is_mirror.any()
    shifted = augment(batch, 2, gen)
    assert shifted.max() <= 7 and not torch.equal(shifted, batch)
    # reflect padding never repeats the edge pixel: a 2 px shift right reads 2 1 0 1 2 3 4 5
    assert train_module._reflect(torch.arange(-2, 6), 8).tolist() == [2, 1, 0, 1, 2, 3, 4, 5]


def test_evaluate_counts_correct_predictions():
    images, labels = separable(n_per_class=2)
    model = build_model("proxy_tiny", 3, 16, seed=0)
    acc = evaluate(model, images, labels, NORM)
    assert acc in {k / len(labels) for k in range(len(labels) + 1)}
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, images[:0], labels[:0], NORM)


def test_best_device_choices():
    assert best_device("cpu") == torch.device("cpu")
    assert best_device("auto").type in ("cuda", "mps", "cpu")
    with pytest.raises(ValueError):
        best_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            best_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_cuda_with_device_resident_data():
    images, labels = separable(n_per_class=32, size=32)
    model = build_model("proxy_tiny", 3, 32, seed=0)
    reports = []
    train(model, images, labels, TrainConfig(epochs=6, batch_size=32, lr=0.2, device="cuda"), NORM,
          on_progress=reports.append)
    assert next(model.parameters()).is_cuda
    assert reports[-1].loss < reports[0].loss
    assert evaluate(model, images, labels, NORM) > 0.6
