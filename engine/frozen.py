"""Frozen-feature proxies: a linear or one-hidden-layer head trained on fixed pool embeddings.

The cheapest proxy of all, in the spirit of Selection via Proxy: once the
pool's embeddings exist (engine.embeddings), a round trains a head on the
labeled rows in well under a second on a CPU and scores the whole pool with
one matrix product. Features are L2-normalised, then standardised with the
pool's own mean and spread, so one learning rate and one weight decay fit
any backbone.

Also here: weighted k-NN accuracy (Wu et al. 2018), the quality readout of
a backbone on the labels so far.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.backbone_files import FROZEN_PROXIES
from engine.score import PoolScores

HEADS = FROZEN_PROXIES
HIDDEN = 512


@dataclass(frozen=True)
class HeadConfig:
    """How a frozen-feature head trains: full-batch AdamW for a fixed number of steps."""

    kind: str = "linear"  # linear | mlp
    steps: int = 300
    lr: float = 0.01
    weight_decay: float = 0.05  # decoupled (AdamW): strong, because a few labels meet hundreds of features
    label_smoothing: float = 0.1
    seed: int = 0


class Features:
    """A pool's embeddings made ready for a head: L2-normalised, then standardised by the pool's statistics."""

    def __init__(self, embeddings: np.ndarray):
        x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
        if x.ndim != 2 or not len(x):
            raise ValueError(f"embeddings must be a non-empty 2-D array, got shape {tuple(x.shape)}")
        x = F.normalize(x, dim=1)
        self.mean = x.mean(0)
        self.std = x.std(0).clamp(min=1e-6) if len(x) > 1 else torch.ones(x.shape[1])
        self.data = (x - self.mean) / self.std
        self.raw = embeddings

    def transform(self, embeddings: np.ndarray) -> torch.Tensor:
        """Other images' embeddings (a test set) prepared with this pool's statistics."""
        return standardize(embeddings, self.mean, self.std)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def dim(self) -> int:
        return int(self.data.shape[1])


def standardize(embeddings: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Embeddings prepared as a head saw its pool's: L2-normalised, then standardised by that pool's
    `mean` and `std` (Features keeps them; a saved head keeps them beside its weights)."""
    x = F.normalize(torch.from_numpy(np.asarray(embeddings, dtype=np.float32)), dim=1)
    return (x - mean) / std


def build_head(kind: str, dim: int, num_classes: int, seed: int = 0) -> nn.Module:
    """A fresh `linear` or `mlp` head mapping `dim` features to `num_classes` logits."""
    if kind not in HEADS:
        raise ValueError(f"unknown frozen-feature proxy {kind!r}; choose one of {', '.join(HEADS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "linear":
            return nn.Linear(dim, num_classes)
        return nn.Sequential(nn.Linear(dim, HIDDEN), nn.ReLU(), nn.Dropout(0.2), nn.Linear(HIDDEN, num_classes))


def train_head(
    features: Features, positions: np.ndarray, labels: np.ndarray, num_classes: int, config: HeadConfig = HeadConfig()
) -> nn.Module:
    """A head trained on the rows `positions` of `features` with int `labels`; eval mode, on the CPU.

    Full-batch AdamW with a cosine decay: with the whole labeled set in every
    step the result does not depend on a batch order, and thousands of
    labels still take well under a second.
    """
    positions = np.asarray(positions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if positions.shape != labels.shape or not len(labels):
        raise ValueError(f"need one label per position and at least one, got {positions.shape} and {labels.shape}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    head = build_head(config.kind, features.dim, num_classes, config.seed)
    x, y = features.data[torch.from_numpy(positions)], torch.from_numpy(labels)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    head.train()
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(config.seed)
        for _ in range(config.steps):
            loss = F.cross_entropy(head(x), y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    if not torch.isfinite(loss):
        raise ValueError("the frozen-feature head diverged; check the embeddings for NaN")
    return head.eval()


class one_thread:
    """Run small tensor work on one CPU thread: with the cores busy (a worker beside the app, tests),
    a second thread that is not scheduled stalls every tiny operation. Measured: 300 head steps took
    14 s with two threads on a loaded 2-core machine, 0.3 s with one."""

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.threads)


@torch.inference_mode()
def head_probs(head: nn.Module, features: Features, positions: np.ndarray | None = None) -> np.ndarray:
    """Softmax probabilities float32 [N, C] of every row (or of `positions`)."""
    x = features.data if positions is None else features.data[torch.from_numpy(np.asarray(positions, np.int64))]
    return torch.softmax(head(x), dim=1).numpy()


def pool_scores(head: nn.Module, features: Features) -> PoolScores:
    """The PoolScores a selection strategy reads: the head's probabilities and the backbone's embeddings."""
    return PoolScores(probs=head_probs(head, features), embeddings=np.asarray(features.raw, dtype=np.float32))


def accuracy(head: nn.Module, features: Features, positions: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy (0..1) of `head` on the rows `positions` with true `labels`."""
    predicted = head_probs(head, features, positions).argmax(1)
    return float((predicted == np.asarray(labels)).mean())


@torch.inference_mode()
def accuracy_on(head: nn.Module, features: Features, embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy (0..1) of `head` on other images' `embeddings` (e.g. a test set) with true `labels`."""
    predicted = head(features.transform(embeddings)).argmax(1).numpy()
    return float((predicted == np.asarray(labels)).mean())


def knn_predict(
    train: np.ndarray,
    train_labels: np.ndarray,
    query: np.ndarray,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
    exclude_self: bool = False,
) -> np.ndarray:
    """Weighted k-NN class of each `query` row by cosine similarity (Wu et al. 2018), int64 [M].

    Each of the k nearest training rows votes for its label with weight
    exp(similarity / temperature). `exclude_self`: `query` is `train` and a
    row may not vote for itself (leave-one-out).
    """
    a = F.normalize(torch.from_numpy(np.asarray(train, np.float32)), dim=1)
    q = F.normalize(torch.from_numpy(np.asarray(query, np.float32)), dim=1)
    y = torch.from_numpy(np.asarray(train_labels, np.int64))
    k = min(k, len(a) - (1 if exclude_self else 0))
    if k < 1:
        raise ValueError("k-NN needs at least one other labeled image")
    out = []
    for start in range(0, len(q), 1024):
        sim = q[start : start + 1024] @ a.T
        if exclude_self:
            rows = torch.arange(start, min(start + 1024, len(q)))
            sim[rows - start, rows] = float("-inf")
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes).scatter_add_(1, y[idx], (top / temperature).exp())
        out.append(votes.argmax(1))
    return torch.cat(out).numpy()


def knn_accuracy(
    train: np.ndarray, train_labels: np.ndarray, query: np.ndarray, query_labels: np.ndarray, num_classes: int, **kwargs
) -> float:
    """Share of `query` rows whose weighted k-NN class (knn_predict) is their label."""
    predicted = knn_predict(train, train_labels, query, num_classes, **kwargs)
    return float((predicted == np.asarray(query_labels)).mean())
