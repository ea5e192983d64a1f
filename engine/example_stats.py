"""Per-example statistics gathered while a model trains, for core-set selection and label review.

`score_labeled_set` trains the proxy once on a labeled set and returns all of them, with the
trained model's probabilities and embeddings (Selection via Proxy's core-set half, issue 24).

`ExampleStats` is a `engine.train.StepObserver`: it sees each training step's
predictions before the update and keeps its counts on the training device, so
it costs no second pass over the data and no host sync. Per training example:

- forgetting events (Toneva et al., ICLR 2019): how often the example, right
  at one presentation, is wrong at its next; an example never right counts as
  forgotten infinitely often (`inf`);
- EL2N (Paul et al., NeurIPS 2021): the L2 norm of softmax(logits) minus the
  one-hot label, averaged over its presentations in the first `early_steps`;
- GraNd of the last layer: the norm of the example's cross-entropy gradient
  with respect to the final linear layer (weights and bias),
  `|softmax - one_hot| * sqrt(|embedding|^2 + 1)`, averaged over the same
  early presentations.

Presentations are the augmented views the training steps see, as in both papers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.device import Normalization, best_device
from engine.score import PoolScores, score_pool
from engine.train import Progress, StepsSeen, TrainConfig, plan, train

__all__ = ["ExampleScores", "ExampleStats", "LabeledSetScores", "score_labeled_set"]


@dataclass(frozen=True)
class ExampleScores:
    """One value per training example (float64 [N], in training-set order)."""

    forgetting: np.ndarray  # forgetting events; inf for an example never predicted right
    el2n: np.ndarray  # mean EL2N over its early presentations; nan if it had none
    grand: np.ndarray  # mean last-layer GraNd over its early presentations; nan if it had none (or no embeddings)
    presentations: np.ndarray  # times a training step saw it
    right: np.ndarray | None = None  # times a training step predicted its label (before that step's update)

    @property
    def right_share(self) -> np.ndarray:
        """Share of its presentations predicted right (nan if never presented): how much the model, over
        its training, agreed with the label, where the final model may have memorized a wrong one."""
        if self.right is None:
            return np.full(len(self.presentations), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.right / self.presentations.astype(np.float64)


class ExampleStats:
    """Counts forgetting events and accumulates early EL2N and GraNd for `n` examples of `num_classes`."""

    def __init__(self, n: int, num_classes: int, early_steps: int, device: torch.device | str = "cpu"):
        if n < 1 or num_classes < 2 or early_steps < 0:
            raise ValueError("need n >= 1 examples, num_classes >= 2 and early_steps >= 0")
        self.num_classes, self.early_steps = num_classes, early_steps
        self.last_right = torch.zeros(n, dtype=torch.bool, device=device)
        self.ever_right = torch.zeros(n, dtype=torch.bool, device=device)
        self.forgotten = torch.zeros(n, dtype=torch.int64, device=device)
        self.presented = torch.zeros(n, dtype=torch.int64, device=device)
        self.right = torch.zeros(n, dtype=torch.int64, device=device)
        self.early = torch.zeros(n, dtype=torch.int64, device=device)  # presentations in the first early_steps
        self.el2n_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.grand_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.has_embeddings = True

    def observe(
        self,
        step: int,
        positions: torch.Tensor,
        logits: torch.Tensor,
        embeddings: torch.Tensor | None,
        labels: torch.Tensor,
    ) -> None:
        positions = positions.to(self.presented.device)
        labels = labels.to(self.presented.device)
        right = logits.argmax(1).to(self.presented.device) == labels
        self.forgotten.index_add_(0, positions, (self.last_right[positions] & ~right).long())
        self.last_right[positions] = right
        self.ever_right[positions] |= right
        self.presented.index_add_(0, positions, torch.ones_like(positions))
        self.right.index_add_(0, positions, right.long())
        if step > self.early_steps:
            return
        error = torch.softmax(logits.double(), 1) - F.one_hot(labels, self.num_classes).double()
        el2n = error.norm(dim=1).to(self.presented.device)
        self.el2n_sum.index_add_(0, positions, el2n)
        self.early.index_add_(0, positions, torch.ones_like(positions))
        if embeddings is None:
            self.has_embeddings = False
            return
        scale = (embeddings.double().square().sum(1) + 1).sqrt().to(self.presented.device)
        self.grand_sum.index_add_(0, positions, el2n * scale)

    def scores(self) -> ExampleScores:
        """The statistics so far, on the host."""
        early = self.early.double()  # 0 / 0 is nan: no early presentation, no score
        el2n = (self.el2n_sum / early).cpu().numpy()
        grand = (self.grand_sum / early).cpu().numpy() if self.has_embeddings else np.full(len(early), np.nan)
        forgetting = self.forgotten.double().cpu().numpy()
        forgetting[~self.ever_right.cpu().numpy()] = np.inf
        return ExampleScores(forgetting, el2n, grand, self.presented.cpu().numpy(), self.right.cpu().numpy())


@dataclass(frozen=True)
class LabeledSetScores:
    """What one proxy run says about every example of a labeled set (training-set order)."""

    training: ExampleScores  # forgetting, early EL2N and GraNd, gathered while the proxy trained
    final: PoolScores  # the trained proxy's softmax and penultimate embeddings (no augmentation)
    steps: int  # optimizer steps the proxy took
    train_s: float = 0.0  # seconds training (statistics included)
    score_s: float = 0.0  # seconds of the final scoring pass


def score_labeled_set(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    normalization: Normalization,
    *,
    early_share: float = 0.1,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LabeledSetScores:
    """Train `model` (in place) once on the labeled set and score every example: the training statistics
    (forgetting events, and EL2N and GraNd over the first `early_share` of the planned steps) and, at the
    end, the model's probabilities and embeddings. Raises what `engine.train.train` raises."""
    if not 0 < early_share <= 1:
        raise ValueError(f"early_share must lie in (0, 1], got {early_share}")
    num_classes = int(model.config.num_classes)  # type: ignore[union-attr, arg-type]  # every registered model has one
    _, planned = plan(len(labels), config)
    stats = ExampleStats(len(labels), num_classes, max(1, round(early_share * planned)), best_device(config.device))
    steps = StepsSeen(on_progress)
    started = time.perf_counter()
    train(model, images, labels, config, normalization, on_progress=steps, should_stop=should_stop, observer=stats)
    trained = time.perf_counter()
    final = score_pool(model, images, normalization)
    return LabeledSetScores(stats.scores(), final, steps.last, trained - started, time.perf_counter() - trained)
