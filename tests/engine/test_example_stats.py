"""Per-example statistics from training: forgetting events on scripted predictions, EL2N and GraNd by hand
and against autograd, and the observer inside a real training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.example_stats import ExampleStats, score_labeled_set
from engine.models import build_model
from engine.train import TrainConfig, train

torch.set_num_threads(1)

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def predicting(classes: list[int], num_classes: int = 2) -> torch.Tensor:
    """Logits whose argmax is each given class."""
    return F.one_hot(torch.tensor(classes), num_classes).float() * 5


def test_forgetting_events_follow_a_scripted_sequence_of_predictions():
    stats = ExampleStats(n=4, num_classes=2, early_steps=0)
    labels = torch.tensor([1, 1, 0, 0])
    # rows: what the model predicted for examples 0..3 at each presentation (example 3 is seen only twice)
    script = [[1, 0, 1, 0], [0, 1, 1, 1], [1, 1, 1, 0], [0, 1, 1]]
    for step, predicted in enumerate(script, start=1):
        positions = torch.arange(len(predicted))
        stats.observe(step, positions, predicting(predicted), None, labels[positions])
    scores = stats.scores()
    # 0: right, wrong, right, wrong -> 2; 1: wrong, right, right, right -> 0; 2: never right -> inf;
    # 3: right, wrong, right -> 1 (three presentations)
    assert scores.forgetting.tolist() == [2.0, 0.0, math.inf, 1.0]
    assert scores.presentations.tolist() == [4, 4, 4, 3]
    assert scores.right.tolist() == [2, 3, 0, 2]
    assert scores.right_share.tolist() == pytest.approx([0.5, 0.75, 0.0, 2 / 3])


def test_an_example_seen_twice_in_one_batch_is_counted_each_time():
    stats = ExampleStats(n=2, num_classes=2, early_steps=5)
    stats.observe(1, torch.tensor([0, 0, 1]), predicting([0, 1, 1]), None, torch.tensor([0, 0, 1]))
    assert stats.scores().presentations.tolist() == [2, 1]


def test_el2n_and_grand_by_hand_over_the_early_steps_only():
    stats = ExampleStats(n=2, num_classes=2, early_steps=1)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # softmax [0.25, 0.75] and [0.5, 0.5]
    embeddings = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    stats.observe(1, torch.tensor([0, 1]), logits, embeddings, torch.tensor([1, 0]))
    stats.observe(2, torch.tensor([0, 1]), torch.tensor([[9.0, -9.0], [9.0, -9.0]]), embeddings, torch.tensor([1, 0]))
    scores = stats.scores()
    # |[0.25, 0.75] - [0, 1]| = 0.25 * sqrt(2); |[0.5, 0.5] - [1, 0]| = 0.5 * sqrt(2); step 2 is past early_steps
    assert scores.el2n == pytest.approx([0.25 * math.sqrt(2), 0.5 * math.sqrt(2)])
    assert scores.grand == pytest.approx([0.25 * math.sqrt(2) * math.sqrt(26), 0.5 * math.sqrt(2) * 1.0])


def test_grand_is_the_norm_of_the_last_layer_gradient():
    torch.manual_seed(0)
    layer = nn.Linear(5, 3)
    embeddings, labels = torch.randn(4, 5), torch.tensor([0, 2, 1, 2])
    expected = []
    for h, y in zip(embeddings, labels, strict=True):
        layer.zero_grad()
        F.cross_entropy(layer(h[None]), y[None]).backward()
        expected.append(torch.cat([layer.weight.grad.flatten(), layer.bias.grad]).norm().item())
    stats = ExampleStats(n=4, num_classes=3, early_steps=1)
    stats.observe(1, torch.arange(4), layer(embeddings).detach(), embeddings, labels)
    assert stats.scores().grand == pytest.approx(expected, rel=1e-5)


def test_examples_not_seen_early_have_no_early_scores():
    stats = ExampleStats(n=3, num_classes=2, early_steps=1)
    stats.observe(1, torch.tensor([0]), predicting([0]), torch.ones(1, 2), torch.tensor([0]))
    stats.observe(2, torch.tensor([1, 2]), predicting([0, 0]), torch.ones(2, 2), torch.tensor([0, 1]))
    scores = stats.scores()
    assert not np.isnan(scores.el2n[0]) and np.isnan(scores.el2n[1:]).all() and np.isnan(scores.grand[1:]).all()
    assert scores.forgetting.tolist() == [0.0, 0.0, math.inf]


@pytest.mark.parametrize("args", [(0, 2, 1), (3, 1, 1), (3, 2, -1)])
def test_bad_arguments_are_refused(args):
    with pytest.raises(ValueError, match="n >= 1"):
        ExampleStats(*args)


def _separable(n_per_class=8, size=16, seed=0):
    rng = np.random.default_rng(seed)
    colours = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220]], np.float32)
    labels = np.repeat(np.arange(3), n_per_class)
    images = np.clip(colours[labels][:, :, None, None] + rng.normal(0, 25, (len(labels), 3, size, size)), 0, 255)
    return images.astype(np.uint8), labels.astype(np.int64)


def test_a_training_run_shows_every_step_to_the_observer_and_trains_the_same_weights(precision):
    images, labels = _separable()
    config = TrainConfig(steps=12, batch_size=8, device="cpu", check=False)  # 24 images in 3 batches: 4 passes
    plain = train(build_model("proxy_tiny", 3, 16, seed=0), images, labels, config, NORM)
    stats = ExampleStats(len(labels), 3, early_steps=3)
    observed = train(build_model("proxy_tiny", 3, 16, seed=0), images, labels, config, NORM, observer=stats)
    scores = stats.scores()
    assert scores.presentations.tolist() == [4] * len(labels)  # every example once a pass
    assert np.isfinite(scores.el2n).all() and np.isfinite(scores.grand).all()  # each seen once in the first pass
    assert (scores.grand > scores.el2n).all()  # the embedding's norm scales it
    assert all(
        torch.equal(a, b) for a, b in zip(plain.state_dict().values(), observed.state_dict().values(), strict=True)
    )


def test_a_trained_model_leaves_easy_examples_unforgotten():
    images, labels = _separable(n_per_class=16)
    stats = ExampleStats(len(labels), 3, early_steps=10)
    train(
        build_model("proxy_tiny", 3, 16, seed=0),
        images,
        labels,
        TrainConfig(steps=60, device="cpu"),
        NORM,
        observer=stats,
    )
    scores = stats.scores()
    assert np.isfinite(scores.forgetting).mean() == 1.0  # solid colours: every example learned
    assert np.median(scores.forgetting) <= 1


@pytest.mark.parametrize("seed", range(4))
def test_one_proxy_run_scores_every_example_and_points_at_the_wrong_label(seed):
    images, labels = _separable(n_per_class=16, seed=seed)
    wrong = int(np.flatnonzero(labels == 0)[0])
    noisy = labels.copy()
    noisy[wrong] = 1  # a red image labeled green
    scored = score_labeled_set(
        build_model("proxy_tiny", 3, 16, seed=0), images, noisy, TrainConfig(steps=60, device="cpu"), NORM
    )
    assert scored.steps == 60
    assert scored.final.probs.shape == (48, 3) and scored.final.embeddings.shape == (48, 64)
    assert scored.training.presentations.sum() == 60 * 16  # 60 steps of 16 (48 images, 3 batches a pass)
    # the only example whose label the trained proxy disputes, and none was forgotten more often
    assert np.flatnonzero(scored.final.probs.argmax(1) != noisy).tolist() == [wrong]
    others = np.delete(np.arange(48), wrong)
    assert scored.training.forgetting[wrong] >= scored.training.forgetting[others].max()


def test_scoring_a_labeled_set_refuses_a_bad_early_share():
    images, labels = _separable()
    with pytest.raises(ValueError, match=r"early_share must lie in \(0, 1\]"):
        score_labeled_set(build_model("proxy_tiny", 3, 16), images, labels, TrainConfig(steps=2), NORM, early_share=0)
