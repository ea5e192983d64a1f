"""Training under DistributedDataParallel (gloo, 2 ranks): it learns, every rank ends with the same weights,
and stopping and the time cap are decided on rank 0 so no rank runs a different number of steps."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from engine.distributed.world import World
from engine.models import build_model
from engine.train import Cancelled, ShuffleAll, TrainConfig, evaluate, plan, train
from tests.engine.distributed.ranks import run_ranks

pytestmark = pytest.mark.distributed

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
CLASSES = 4
HANG_S = 12  # a hung rank's sleep; the collective timeout in these tests is 3 s


def squares(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 16 px images whose class is the colour of a square somewhere in them (flips and crops keep it)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, size=(per_class * CLASSES, 3, 16, 16), dtype=np.uint8)
    labels = np.repeat(np.arange(CLASSES), per_class)
    colours = np.array([[230, 0, 0], [0, 230, 0], [0, 0, 230], [230, 230, 230]], np.uint8)
    for i, k in enumerate(labels):
        y, x = rng.integers(0, 9, size=2)
        images[i, :, y : y + 7, x : x + 7] = colours[k][:, None, None]
    return images, labels


def train_in_ranks(config: TrainConfig) -> dict:
    from engine.distributed.world import world

    images, labels = squares(40, seed=0)
    model = build_model("proxy_tiny", CLASSES, 16, seed=world().rank)  # different starts: DDP copies rank 0's
    reports: list[int] = []
    train(model, images, labels, config, NORM, on_progress=lambda p: reports.append(p.step))
    test_images, test_labels = squares(20, seed=1)
    return {
        "accuracy": evaluate(model, test_images, test_labels, NORM, device="cpu"),
        "weights": [t.detach().cpu().numpy().copy() for t in model.state_dict().values()],
        "reports": reports,
    }


def test_ddp_training_learns_and_leaves_every_rank_the_same_model(runs):
    first, second = (rank["learn"] for rank in runs)
    assert first["accuracy"] >= 0.9, first["accuracy"]  # 4 classes: chance is 0.25
    assert first["accuracy"] == second["accuracy"]
    for a, b in zip(first["weights"], second["weights"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert first["reports"] == [20, 40, 60, 80] and second["reports"] == []  # only rank 0 reports


class _Recorded(ShuffleAll):
    """ShuffleAll that records the steps the run took; on rank 1 it plans late, so rank 1's clock starts
    `late_s` after rank 0's and each rank alone would fit a different length to the same time cap."""

    def __init__(self, late_s: float):
        self.late_s, self.steps_taken = late_s, -1

    def steps(self, labels, batch, planned):
        from engine.distributed.world import world

        if world().rank == 1:
            time.sleep(self.late_s)
        return planned

    def finish(self, steps: int, seconds: float) -> None:
        self.steps_taken = steps


def stop_or_cap_in_ranks(kind: str) -> dict:
    from engine.distributed.world import world

    images, labels = squares(40, seed=0)
    model = build_model("proxy_tiny", CLASSES, 16, seed=0)
    sampler = _Recorded(late_s=1.0)
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return kind == "stop" and len(calls) >= 3

    if kind == "stop":
        config = TrainConfig(steps=400, device="cpu", report_every=5, check=False)
    else:  # a time cap rank 1 alone would reach at another step than rank 0
        config = TrainConfig(steps=2000, device="cpu", report_every=5, max_seconds=2.0, check=False)
    try:
        train(model, images, labels, config, NORM, should_stop=should_stop, sampler=sampler)
        outcome = "finished"
    except Cancelled:
        outcome = "cancelled"
    return {"outcome": outcome, "steps": sampler.steps_taken, "polled": len(calls), "rank": world().rank}


def three_runs() -> dict:
    """The three runs the tests below read, in one start of two ranks (starting them costs seconds)."""
    return {
        "learn": train_in_ranks(TrainConfig(steps=80, device="cpu", report_every=20, seed=1)),
        "stop": stop_or_cap_in_ranks("stop"),
        "cap": stop_or_cap_in_ranks("cap"),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[dict]:
    return run_ranks(three_runs, 2, tmp_path_factory.mktemp("ranks"))


def test_a_stop_asked_on_rank_0_stops_every_rank_together(runs):
    first, second = (rank["stop"] for rank in runs)
    assert first["outcome"] == second["outcome"] == "cancelled"
    assert first["polled"] == 3 and second["polled"] == 0  # only rank 0 asks the database


def test_the_time_cap_is_fitted_on_rank_0_so_all_ranks_take_the_same_steps(runs):
    first, second = (rank["cap"] for rank in runs)
    assert first["outcome"] == second["outcome"] == "finished"
    assert first["steps"] == second["steps"] < 2000


def test_the_plan_splits_a_global_batch_over_processes():
    config = TrainConfig(batch_size=128)
    assert plan(10_000, config, 1)[0] == 128
    big, steps = plan(10_000, config, 4)
    assert big == 512 and steps < plan(10_000, config, 1)[1]  # fewer, larger steps for a large set
    assert plan(200, config, 4) == plan(200, config, 1)  # a small set's batch is n / 8 whatever the world


def test_too_small_a_batch_for_the_processes_is_refused(monkeypatch):
    import engine.train as train_module

    monkeypatch.setattr(train_module, "world", lambda: World(rank=0, size=8))
    images, labels = squares(2, seed=0)  # 8 images: batches of 2, not 2 per process for 8 processes
    with pytest.raises(ValueError, match="8 processes need batches of at least 16"):
        train(build_model("proxy_tiny", CLASSES, 16), images, labels, TrainConfig(device="cpu"), NORM)
    assert torch.distributed.is_available()


class _DiesOnRank1(ShuffleAll):
    """ShuffleAll whose rank 1 process dies at step `at`, as a crashed or killed rank would (or hangs there)."""

    def __init__(self, at: int, hang: bool = False):
        self.at, self.hang = at, hang

    def batches(self, run):
        import os

        from engine.distributed.world import world

        for step, idx in enumerate(super().batches(run), start=1):
            if step == self.at and world().rank == 1:
                if self.hang:
                    time.sleep(HANG_S)  # far longer than the collective timeout; then it dies
                os._exit(3)
            yield idx


def survive_a_dead_rank(hang: bool) -> dict:
    images, labels = squares(40, seed=0)
    started = time.monotonic()
    try:
        train(
            build_model("proxy_tiny", CLASSES, 16, seed=0),
            images,
            labels,
            TrainConfig(steps=200, device="cpu"),
            NORM,
            sampler=_DiesOnRank1(at=10, hang=hang),
        )
        return {"error": None}
    except Exception as exc:  # the collective's error, whatever torch calls it
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - started}


@pytest.mark.parametrize("hang", [False, True])
def test_a_rank_that_dies_or_hangs_fails_the_others_within_the_timeout(tmp_path, hang):
    first, second = run_ranks(
        survive_a_dead_rank,
        2,
        tmp_path,
        hang,
        may_die=True,
        env={"PROXY_LABELER_COLLECTIVE_TIMEOUT_S": "3"},
    )
    assert second is None  # rank 1 died, or hung and then died, without a result
    assert first["error"] is not None and first["seconds"] < HANG_S - 3, first  # it did not wait for rank 1
