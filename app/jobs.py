"""Asking the engine for background work: round, target, backbone and coreset jobs run by the worker process.

The page never trains: it enqueues a job in the project's jobs table, makes
sure a worker process is alive (`engine.worker.ensure_worker`) and polls the
job. The worker outlives the Streamlit server, so a refresh, a closed tab or
a server restart never stops a running round.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass

import storage
from engine.initial import RoundError, candidate_ids, run_initial_round

ACTIVE = ("queued", "running")
SILENT_BEATS = 3  # heartbeats a running job may miss before the page starts a new worker for it
TARGET_DIR = "target"  # engine.target saves under models_dir / "target" ...
SUBSET_TARGET_DIR = "target_subset"  # ... and a target trained on a core-set run's kept items beside it
# The next round starts while the newest batch is being finished, so it is ready when the batch
# is: between these shares of the batch done, as soon as the annotator's pace says the open items
# take EARLY_MARGIN times as long as the last round took, plus one label (the view picks the new
# batch up at the next label); at half the batch when no round was timed yet (the first one also
# waits for the worker to import torch). The open items count as taken; their labels join the
# round after. With no margin, rounds landed about with the batch's last label (bench_ui: 0.3-8.7 s
# waits on the demo at 2 s per image).
MIN_EARLY_FRACTION = 0.5
EARLY_FRACTION = 0.8
EARLY_MARGIN = 1.5
FIRST_ROUND = -1  # the `after_round` of the job that makes round 0


@dataclass(frozen=True)
class RoundState:
    """Where the project is between batches.

    kind: labeling (batch has open items) | running (a round job is queued or
    running) | first (no round yet; the job choosing the first batch is queued
    or running, behind the backbone job when the representation is being
    learned) | failed (the latest round job failed or was cancelled; `round` is
    None when it was the first) |
    waiting (batch done, auto_next_round off) | spent (budget used up) |
    exhausted (batch done, and every usable image is labeled, skipped, queued
    or in the validation set) | none (no round yet). Spent and exhausted come
    before failed: a retry could never succeed there.
    """

    kind: str
    round: storage.Round | None
    job: storage.Job | None = None


def start_worker(project: storage.Project) -> None:
    from engine.worker import ensure_worker

    ensure_worker(project.root)


def keep_worker_for(project: storage.Project, job: storage.Job) -> None:
    """Start a worker when `job` has none: it is queued, or it runs with a heartbeat silent for over
    SILENT_BEATS beats (its worker died; the new one claims it once the heartbeat is stale). A job
    whose heartbeat is live needs nothing, so a page polling it every second starts no process."""
    from engine.worker import HEARTBEAT_S

    silent = job.heartbeat_at is None or time.time() - job.heartbeat_at > SILENT_BEATS * HEARTBEAT_S
    if job.state == "queued" or (job.state == "running" and silent):
        start_worker(project)


def round_state(project: storage.Project) -> RoundState:
    """Read where the project stands; enqueues nothing. While items are open the user is
    labeling, even when the next round is already being made early (its job is then attached)."""
    current = storage.current_round(project)
    active = storage.active_jobs(project, "round")
    if current is None:
        if active:
            return RoundState("first", None, active[0])
        latest = storage.latest_job(project, "round")
        if latest is not None and latest.state in ("failed", "cancelled"):
            return RoundState("failed", None, latest)
        return RoundState("none", None)
    if storage.open_rounds(project):
        return RoundState("labeling", current, active[0] if active else None)
    if active:
        return RoundState("running", current, active[0])
    if storage.budget_left(project) <= 0:
        return RoundState("spent", current)
    if not candidate_ids(project):
        return RoundState("exhausted", current)
    latest = storage.latest_job(project, "round")
    if latest is not None and latest.state in ("failed", "cancelled") and latest.created_at > current.created_at:
        return RoundState("failed", current, latest)
    return RoundState("waiting", current)


def advance(project: storage.Project, *, force: bool = False) -> RoundState:
    """Enqueue the next round when the batch is done and auto_next_round is on (or `force`).

    Called when labels are committed (and by Retry / Start buttons), never by
    drawing a page. Two tabs finishing the same batch queue one job: the
    enqueue is one storage transaction, and the job names the round it
    follows, so a tab that had not seen the new round queues nothing the
    worker would run. A failed round is not retried automatically: the user
    sees its reason first and presses Retry (force=True); a round made early
    that failed is tried once more, normally, when the batch is done.
    """
    state = round_state(project)
    auto = storage.load_settings(project).auto_next_round
    if state.kind == "labeling" and auto and _start_early(project, state.round):
        job, _ = storage.enqueue_unless_active(project, "round", {"after_round": state.round.index, "early": True})
        state = RoundState("labeling", state.round, job)
    early_failed = state.kind == "failed" and bool((state.job.params or {}).get("early"))
    wants = state.kind == "waiting" or (state.kind == "failed" and (force or early_failed))
    if state.kind == "failed" and state.round is None:
        return start_first_round(project) if force else state
    if wants and (force or auto):
        job, _ = storage.enqueue_unless_active(project, "round", {"after_round": state.round.index})
        state = RoundState("running", state.round, job)
    if state.job is not None:
        start_worker(project)
    return state


def start_first_round(project: storage.Project) -> RoundState:
    """Queue the job that chooses the first batch on the backbone's embeddings (typiclust, probcover),
    behind a backbone job already queued; `after_round` -1 makes it a no-op once any round exists
    (a random batch made meanwhile with `random_first_round`)."""
    job, _ = storage.enqueue_unless_active(project, "round", {"after_round": FIRST_ROUND})
    start_worker(project)
    return RoundState("first", None, job)


def random_first_round(project: storage.Project, why: str) -> storage.Round:
    """Make the seeded random first batch now, in the page, instead of waiting for the queued one
    (its job is cancelled). Round 0 is made once (storage.create_round(index=0) refuses a second): when
    another tab or the worker's job, already past its checks, made it first, that batch is returned,
    as there is now a first batch to label; the job that lost ends cancelled."""
    for job in storage.active_jobs(project, "round"):
        storage.cancel_job(project, job.id)
    try:
        return run_initial_round(project, selector=f"random: {why}")
    except (RoundError, storage.StorageError):
        made = storage.list_rounds(project)
        if not made:
            raise
        return made[0]


def _start_early(project: storage.Project, current: storage.Round) -> bool:
    """Make the next round now? Once half the newest batch is done: when no round was timed yet,
    or when the open items will take the annotator (at their pace in this batch) no longer than
    EARLY_MARGIN times the last round plus one label; at EARLY_FRACTION in any case. Never when
    the budget is spent or a round job was already queued after this one (one that failed is not
    retried here)."""
    items = storage.round_items(project, current.id)
    times = storage.round_label_times(project, current.id)
    open_items = len(items) - len(times)
    if not items or len(times) < MIN_EARLY_FRACTION * len(items) or storage.budget_left(project) <= 0:
        return False
    latest = storage.latest_job(project, "round")
    if latest is not None and (latest.params or {}).get("after_round") == current.index:
        return False
    round_s = _round_seconds(latest)
    if len(times) >= EARLY_FRACTION * len(items) or round_s == 0:
        return True
    pace = _pace(times)
    return open_items * pace <= EARLY_MARGIN * round_s + pace


def _pace(times: list[float]) -> float:
    """Median seconds between consecutive labels (a pause of a minute or more is a break, not a pace)."""
    gaps = sorted(b - a for a, b in itertools.pairwise(times) if b - a < 60)
    return gaps[len(gaps) // 2] if gaps else float("inf")


def _round_seconds(job: storage.Job | None) -> float:
    """How long the last finished round job took from queued to done (0 when unknown)."""
    if job is None or job.state != "done" or job.finished_at is None or (job.result or {}).get("already_made"):
        return 0.0
    return job.finished_at - job.created_at


def start_target(
    project: storage.Project, coreset_run: int | None = None, dynamic_keep: float | None = None
) -> storage.Job:
    """Enqueue target training (on a core-set run's kept items, given one; with DynaMS at an average keep of
    `dynamic_keep`, given one) unless one is already queued or running."""
    params: dict = {}
    if coreset_run is not None:
        params["coreset_run"] = int(coreset_run)
    if dynamic_keep:
        params["dynamic_keep"] = float(dynamic_keep)
    job, _ = storage.enqueue_unless_active(project, "target", params or None)
    start_worker(project)
    return job


def start_coreset(project: storage.Project, method: str, keep: float, balance: bool, selector: str) -> storage.Job:
    """Enqueue curating the labeled set unless a curation is already queued or running."""
    params = {"method": method, "keep": float(keep), "balance": bool(balance), "selector": selector}
    job, _ = storage.enqueue_unless_active(project, "coreset", params)
    start_worker(project)
    return job


def latest_coreset(project: storage.Project) -> storage.Job | None:
    return storage.latest_job(project, "coreset")


def start_backbone(project: storage.Project) -> storage.Job:
    """Enqueue learning the ssl backbone unless it is already queued or running."""
    job, _ = storage.enqueue_unless_active(project, "backbone")
    start_worker(project)
    return job


def latest_backbone(project: storage.Project) -> storage.Job | None:
    return storage.latest_job(project, "backbone")


def cancel(project: storage.Project, job_id: int) -> None:
    """Cancel a queued job at once, or ask the worker to stop a running one (it checks every second)."""
    storage.cancel_job(project, job_id)


def latest_target(project: storage.Project) -> storage.Job | None:
    return storage.latest_job(project, "target")


def last_target_result(project: storage.Project, subset: bool = False) -> dict | None:
    """Metrics of the latest trained target (on all training labels; with `subset`, on a core-set run's kept
    items): its job's result, else the metrics saved beside the checkpoint."""
    job = storage.latest_job(project, "target")
    if job is not None and job.state == "done" and job.result and ("coreset_run" in job.params) == subset:
        return job.result
    saved = project.models_dir / (SUBSET_TARGET_DIR if subset else TARGET_DIR) / "metrics.json"
    try:
        return json.loads(saved.read_text())
    except (OSError, ValueError):
        return None
