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
        project, strategy="random", selector=selector, item_ids=chosen.tolist(),
        scores=[0.0] * size, n_labeled=len(storage.training_labels(project)),
    )


def taken_ids(project: storage.Project) -> list[int]:
    """Items that count as already chosen: labeled, validation, skipped or queued."""
    return sorted(set(storage.labeled_ids(project)) | set(storage.validation_ids(project))
                  | set(storage.skipped_ids(project)) | set(storage.queued_ids(project)))


def candidate_ids(project: storage.Project) -> list[int]:
    taken = set(taken_ids(project))
    return [item.id for item in storage.usable_items(project) if item.id not in taken]
