"""The step total a training run reports under a time cap (issue 25: it jumped 517, 540, 506 as the cap's
fit was redone at every report): it moves only when the fitted length leaves a band around it, never
falls behind the step, and is exact at the last report. The schedule itself is untouched."""

from __future__ import annotations

import itertools

import pytest

import engine.train as train_module
from engine.models import build_model
from engine.train import Progress, TrainConfig, train
from tests.engine.test_train import NORM, separable


def jittery_clock(monkeypatch, per_step: float) -> None:
    """A clock that each training step advances by about `per_step` seconds: a third faster or slower from
    one step to the next, and the machine busier or freer by some percent every ten steps (other work on it),
    so each refit of the time cap lands a few percent away from the last, as in issue 25."""
    now, steps = [100.0], itertools.count()
    jitter = [1.3, 0.7, 1.15, 1.0, 0.85, 1.3, 1.0, 0.7]
    load = [1.0, 1.12, 0.94, 1.08, 0.9, 1.05]
    step = train_module._step

    def timed_step(*args, **kwargs):
        k = next(steps)
        now[0] += per_step * jitter[k % len(jitter)] * load[(k // 10) % len(load)]
        return step(*args, **kwargs)

    monkeypatch.setattr(train_module, "_step", timed_step)
    monkeypatch.setattr(train_module.time, "perf_counter", lambda: now[0])


def capped_reports(monkeypatch) -> tuple[list[Progress], list[int]]:
    """Reports of a 400-step plan capped at 9 seconds, and the fitted lengths the schedule took."""
    jittery_clock(monkeypatch, per_step=0.1)
    fitted: list[int] = []
    fit = train_module._Clock.fit

    def recording_fit(self, step, schedule, max_seconds):
        fit(self, step, schedule, max_seconds)
        fitted.append(schedule.total)

    monkeypatch.setattr(train_module._Clock, "fit", recording_fit)
    monkeypatch.setattr(train_module, "MIN_CAPPED_STEPS", 10)
    images, labels = separable(n_per_class=8)
    config = TrainConfig(min_steps=400, max_seconds=9.0, device="cpu", report_every=5, check=False)
    reports: list[Progress] = []
    train(build_model("proxy_tiny", 3, 16, seed=0), images, labels, config, NORM, on_progress=reports.append)
    return reports, fitted


def test_the_reported_total_holds_still_while_the_fit_wanders(monkeypatch):
    reports, fitted = capped_reports(monkeypatch)
    after_first_fit = set(fitted[2:])
    assert len(after_first_fit) >= 4  # the schedule's length wandered ...
    shown = [p.steps for p in reports[:-1]]
    assert shown[0] == 400 and len(set(shown[1:])) == 1  # ... the plan, then one total a person can read
    assert reports[-1].step == reports[-1].steps == fitted[-1]  # exact at the end
    assert all(p.step <= p.steps for p in reports)
    fractions = [p.fraction for p in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


@pytest.mark.parametrize("fitted, step, shown", [(110, 50, 100), (89, 50, 89), (111, 50, 111), (105, 100, 105)])
def test_the_shown_total_moves_past_its_band_or_its_step(fitted, step, shown):
    total = train_module._ShownTotal(100)
    assert total(step, fitted) == shown
