"""Round 0, the seeded random batch, without torch: the Streamlit server runs it in its own
process (a new project, the demo), and importing torch there slows every later page rerun."""

from __future__ import annotations

import numpy as np

import storage


class RoundError(ValueError):
    """A round cannot run now; the message says what to do instead."""


def run_initial_round(project: storage.Project, selector: str = "random") -> storage.Round:
    """Round 0: a seeded random batch of `settings.initial_size` unlabeled, non-validation items.

    Reserves the validation sample first so it never overlaps the batch.
    Raises RoundError if a round already exists or nothing can be queued.
    """
    settings = storage.load_settings(project)
    if storage.current_round(project) is not None:
        raise RoundError("the initial random batch was already made; run a selection round instead")
    storage.reserve_validation(project)
    candidates = candidate_ids(project)
    size = min(settings.initial_size, storage.budget_left(project), len(candidates))
    if size < 1:
        raise RoundError("no unlabeled images are left to queue; add images or raise the budget")
    rng = np.random.default_rng(settings.seed)
    chosen = rng.choice(np.asarray(candidates, dtype=np.int64), size=size, replace=False)
    return storage.create_round(
        project,
        strategy="random",
        selector=selector,
        item_ids=chosen.tolist(),
        scores=[0.0] * size,
        n_labeled=len(storage.training_labels(project)),
        index=0,
    )


def taken_ids(project: storage.Project) -> list[int]:
    """Items that count as already chosen: labeled, validation, skipped or queued."""
    return sorted(
        set(storage.labeled_ids(project))
        | set(storage.validation_ids(project))
        | set(storage.skipped_ids(project))
        | set(storage.queued_ids(project))
    )


def candidate_ids(project: storage.Project) -> list[int]:
    taken = set(taken_ids(project))
    return [item.id for item in storage.usable_items(project) if item.id not in taken]


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
