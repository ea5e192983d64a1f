"""Round 0, the seeded random batch, without torch: the Streamlit server runs it in its own
process (a new project, the demo), and importing torch there slows every later page rerun."""

from __future__ import annotations

import numpy as np

import storage
from engine.names import IMPORTED


class RoundError(ValueError):
    """A round cannot run now; the message says what to do instead."""


def run_initial_round(project: storage.Project, selector: str = "random") -> storage.Round:
    """Round 0: a seeded random batch of `settings.initial_size` unlabeled, non-validation items.

    Reserves the validation sample first so it never overlaps the batch.
    Raises RoundError if a round already exists or nothing can be queued.
    """
    storage.reserve_validation(project)
    inputs = storage.read_round_inputs(project)
    if inputs.latest is not None:
        raise RoundError("the initial random batch was already made; run a selection round instead")
    size = first_batch_size(inputs)
    rng = np.random.default_rng(inputs.settings.seed)
    chosen = rng.choice(np.asarray(inputs.candidates, dtype=np.int64), size=size, replace=False)
    return storage.create_round(
        project,
        strategy="random",
        selector=selector,
        item_ids=chosen.tolist(),
        scores=[0.0] * size,
        n_labeled=len(inputs.training),
        index=0,
    )


def start_from_labels(project: storage.Project) -> storage.Round | None:
    """Round 0 of a project that came with labels (storage.import_labels), or None when this is no such start.

    With training labels in at least two classes before any round, a random first batch would ignore
    them: round 0 is recorded with no images (strategy IMPORTED, the labels counted as its
    `n_labeled`), so the next round, the first batch to label, comes from a proxy trained on them
    (queue it: app.jobs.advance). When no image is left to queue at all (every one labeled or in the
    validation set) round 0 is recorded too, and the project is at its end (app.jobs: exhausted).
    Reserves the validation sample first, as every round 0 does. None when a round exists or the
    labels are too few to train on and images are left to queue (make the usual first batch).
    """
    storage.reserve_validation(project)
    inputs = storage.read_round_inputs(project)
    classes = {inputs.settings.classes[position] for position in inputs.training.values()}
    if inputs.latest is not None or not inputs.training or (len(classes) < 2 and inputs.candidates):
        return None
    return storage.create_round(
        project,
        strategy=IMPORTED,
        selector=f"{len(inputs.training)} labels brought with the images, in {len(classes)} classes",
        item_ids=[],
        scores=[],
        n_labeled=len(inputs.training),
        index=0,
    )


def first_batch_size(inputs: storage.RoundInputs) -> int:
    """How many items round 0 queues; RoundError when none can be."""
    size = min(inputs.settings.initial_size, inputs.budget_left, len(inputs.candidates))
    if size < 1:
        raise RoundError("no unlabeled images are left to queue; add images or raise the budget")
    return size


def candidate_ids(project: storage.Project) -> list[int]:
    """Usable items a round may still queue: not labeled, skipped, in the validation set or queued."""
    return storage.read_round_inputs(project).candidates


# `auto` picks typical images only while the first batch is a small share of the pool, the low-budget
# regime TypiClust is for: at 0.5 % (CIFAR-10) and 7.7 % (digits) it beat random by 5.0 and 2.1 points,
# at 41 % (245 photos) it lost 6.7 (docs/representation.md)
TYPICAL_SHARE = 0.10


def initial_strategy(settings: storage.Settings, pool_size: int) -> tuple[str, str]:
    """(round 0's strategy, the selector recorded): the setting; `auto` = typiclust with a backbone and a
    first batch of at most TYPICAL_SHARE of the `pool_size` usable images, else random."""
    name = getattr(settings, "initial_strategy", "auto")
    if name != "auto":
        return name, name
    if (settings.backbone or "none") == "none":
        return "random", "random"
    if settings.initial_size > TYPICAL_SHARE * pool_size:
        return "random", f"random: a first batch above {TYPICAL_SHARE:.0%} of the pool gains nothing from typical picks"
    return "typiclust", "typiclust"
