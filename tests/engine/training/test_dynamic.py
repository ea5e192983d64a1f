"""DynaMS (engine.training.dynamic): the keep schedule, per-class smallest margins, and real tiny trainings that
take about keep x the steps and still learn, under a time cap, cancelled, and watched by an observer."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import engine.train as train_module
import engine.training.dynamic as dynamic_module
from engine.models import build_model
from engine.train import Cancelled, Progress, TrainConfig, evaluate, train
from engine.training.dynamic import (
    DynamicKeep,
    keep_schedule,
    kept_per_class,
    margins,
    smallest_margins,
    step_plan,
)
from tests.engine.test_train import NORM, separable, shapes, weights

# 96 images, batches of 16: full training is 10 passes of 6 steps
CONFIG = TrainConfig(steps=60, batch_size=16, device="cpu", report_every=1, check=False)


def average(segments) -> float:
    return sum((s.stop - s.start) * s.ratio for s in segments)


# ---------------------------------------------------------------- the keep schedule


@pytest.mark.parametrize("keep", [0.2, 0.3, 0.5, 0.6, 0.75, 0.9, 0.99])
def test_all_data_for_the_first_tenth_then_a_linear_decrease_averaging_keep(keep):
    segments = keep_schedule(keep)
    assert (segments[0].start, segments[0].stop, segments[0].ratio) == (0.0, 0.1, 1.0)
    assert len(segments) == 10 and segments[-1].stop == 1.0
    assert all(s.stop == pytest.approx(s.start + 0.1) for s in segments[1:])
    ratios = [s.ratio for s in segments[1:]]
    steps = np.diff(ratios)
    assert (steps < 0).all() and steps == pytest.approx(np.full(8, steps[0]))  # linear: equal decrements
    assert all(0 < r <= 1 for r in ratios) and ratios[-1] >= ratios[4] / 2 - 1e-9  # never below half the mean
    assert average(segments) == pytest.approx(keep, abs=1e-12)


def test_a_keep_of_one_is_all_data_throughout_and_a_small_keep_shortens_the_start():
    assert [(s.start, s.stop, s.ratio) for s in keep_schedule(1.0)] == [(0.0, 1.0, 1.0)]
    small = keep_schedule(0.1)
    assert small[0].stop == pytest.approx(0.05) and average(small) == pytest.approx(0.1)
    assert all(s.ratio > 0 for s in small)
    coarse = keep_schedule(0.6, interval=0.25)  # segments of a quarter: the last one shorter
    assert [s.stop for s in coarse] == pytest.approx([0.1, 0.35, 0.6, 0.85, 1.0])
    assert average(coarse) == pytest.approx(0.6)


@pytest.mark.parametrize("keep", [0, -0.1, 1.5, math.nan, True, "0.5", None])
def test_a_keep_outside_zero_to_one_is_refused_readably(keep):
    with pytest.raises(ValueError, match=r"the keep ratio must lie in \(0, 1\]"):
        DynamicKeep(keep)


@pytest.mark.parametrize("interval", [0, 1.5, -1])
def test_a_bad_interval_is_refused(interval):
    with pytest.raises(ValueError, match=r"interval must be a share of the run in \(0, 1\]"):
        DynamicKeep(0.5, interval=interval)


def test_every_class_keeps_at_least_one_example():
    assert kept_per_class(0.05, np.array([3, 0, 100, 1, 30])).tolist() == [1, 0, 5, 1, 2]
    assert kept_per_class(1.0, np.array([3, 0, 7])).tolist() == [3, 0, 7]
    assert kept_per_class(0.25, np.array([10])).tolist() == [3]  # 2.5 rounds up


def test_the_step_plan_takes_keep_times_the_steps_and_keeps_the_average():
    counts = np.full(10, 500)
    starts, kept = step_plan(keep_schedule(0.6), counts, 128, 1200)  # 40 steps a pass, 30 passes
    assert starts[0] == 0 and starts[1] == 120  # the first tenth: 3 passes over all 5,000
    assert starts[-1] == 720  # 0.6 x 1200
    assert kept[0].tolist() == counts.tolist()
    kept_share = kept.sum(1) / counts.sum()
    lengths = np.full(10, 0.1)
    assert (lengths * kept_share).sum() == pytest.approx(0.6, abs=1e-3)
    assert (np.diff(kept.sum(1)) < 0).all()


def test_small_classes_are_never_dropped_from_the_plan():
    counts = np.array([1, 2, 200])
    _, kept = step_plan(keep_schedule(0.2), counts, 16, 500)
    assert (kept[:, :2] >= 1).all() and (kept[1:, 2] < 200).all()


# ---------------------------------------------------------------- margins and picks


def test_margins_are_the_labels_logit_minus_the_largest_other():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0]])
    assert margins(logits, torch.tensor([0, 0, 2])).tolist() == [1.0, -3.0, 0.0]


def test_per_class_smallest_margins_by_hand():
    values = torch.tensor([0.5, -2.0, 3.0, 0.1, 1.0, 0.2, -1.0])
    labels = torch.tensor([0, 1, 0, 0, 1, 1, 2])
    picks = smallest_margins(values, labels, np.array([2, 1, 1]))
    # class 0 (0.5, 3.0, 0.1): 0.1 then 0.5; class 1 (-2.0, 1.0, 0.2): -2.0; class 2: its only one
    assert picks.tolist() == [3, 0, 1, 6]
    assert picks.dtype == torch.int64
    with pytest.raises(ValueError, match="cannot keep"):
        smallest_margins(values, labels, np.array([4, 1, 1]))


def test_equal_margins_are_drawn_with_the_generator():
    values = torch.tensor([0.5, 0.1, 0.1, 0.1, 0.9])
    labels = torch.zeros(5, dtype=torch.int64)
    assert smallest_margins(values, labels, np.array([2])).tolist() == [1, 2]  # no generator: by position
    drawn = {
        frozenset(smallest_margins(values, labels, np.array([2]), torch.Generator().manual_seed(s)).tolist())
        for s in range(30)
    }
    assert drawn == {frozenset(pair) for pair in itertools.combinations([1, 2, 3], 2)}


# ---------------------------------------------------------------- real tiny trainings


class Watch:
    """An observer that records each step's positions and labels, and whether the model was training."""

    def __init__(self, model):
        self.model, self.steps = model, []

    def observe(self, step, positions, logits, embeddings, labels):
        self.steps.append((step, positions.tolist(), labels.tolist(), self.model.training))


def test_a_dynamic_run_takes_about_keep_times_the_steps_and_still_learns():
    images, labels = shapes(48, seed=2)  # 144: 96 to train on, 48 to test
    model = build_model("proxy_tiny", 3, 16, seed=0)
    sampler = DynamicKeep(0.6)
    reports: list[Progress] = []
    config = TrainConfig(steps=120, batch_size=16, device="cpu", report_every=10)
    train(model, images[:96], labels[:96], config, NORM, on_progress=reports.append, sampler=sampler)
    report = sampler.report
    assert report.full_steps == 120
    assert 0.5 * 120 <= report.steps <= 0.7 * 120
    assert reports[0].steps == reports[-1].steps == reports[-1].step == report.steps  # the schedule knew
    assert [n for _, n in report.selections] == sorted((n for _, n in report.selections), reverse=True)
    assert len(report.selections) == 9 and report.selections[0][1] < 96
    assert report.selections[0][0] == 13  # after the first tenth: 12 steps on all 96
    assert report.seconds > report.selection_seconds > 0
    assert evaluate(model, images[96:], labels[96:], NORM) >= 0.9


def test_the_learning_rate_reaches_zero_at_the_dynamic_runs_last_step(monkeypatch):
    seen = []
    real = train_module._step

    def step(model, x, y, optimizer, config, seen_by=None):
        seen.append(optimizer.param_groups[0]["lr"])
        return real(model, x, y, optimizer, config, seen_by)

    monkeypatch.setattr(train_module, "_step", step)
    images, labels = separable(n_per_class=32)
    sampler = DynamicKeep(0.5)
    train(build_model("proxy_tiny", 3, 16, seed=0), images, labels, CONFIG, NORM, sampler=sampler)
    assert len(seen) == sampler.report.steps < 60
    peak = max(seen)
    assert seen[-1] < 0.05 * peak  # the last step runs at the end of the decay, not cut off mid-way


def test_the_first_tenth_draws_exactly_full_trainings_batches_and_positions_stay_rows(monkeypatch):
    scored, chosen = [], []
    score, pick = dynamic_module.score_margins, dynamic_module.smallest_margins
    monkeypatch.setattr(dynamic_module, "score_margins", lambda run: scored.append(score(run)) or scored[-1])
    monkeypatch.setattr(dynamic_module, "smallest_margins", lambda *a, **k: chosen.append(pick(*a, **k)) or chosen[-1])
    images, labels = separable(n_per_class=32)
    full = build_model("proxy_tiny", 3, 16, seed=0)
    full_watch = Watch(full)
    train(full, images, labels, CONFIG, NORM, observer=full_watch)
    model = build_model("proxy_tiny", 3, 16, seed=0)
    watch = Watch(model)
    sampler = DynamicKeep(0.5)
    train(model, images, labels, CONFIG, NORM, observer=watch, sampler=sampler)
    assert [s[1] for s in watch.steps[:6]] == [s[1] for s in full_watch.steps[:6]]  # 6 steps: a tenth of 60
    assert watch.steps[6][1] != full_watch.steps[6][1]
    assert all(training for *_, training in watch.steps)  # back in train mode after every scoring pass
    assert len(watch.steps) == sampler.report.steps
    bounds = [step for step, _ in sampler.report.selections] + [len(watch.steps) + 1]
    assert len(scored) == len(chosen) == len(sampler.report.selections)
    for (start, kept), stop, values, subset in zip(sampler.report.selections, bounds[1:], scored, chosen, strict=True):
        subset = subset.tolist()
        segment = [s for s in watch.steps if start <= s[0] < stop]
        used = {p for s in segment for p in s[1]}
        assert len(subset) == kept and used <= set(subset)  # trained only on the subset chosen at `start`
        values = values.numpy()
        for c in range(3):  # per class, the kept examples are those of smallest margin
            own = np.flatnonzero(labels == c)
            mine = np.intersect1d(own, subset)
            assert len(mine) >= 1 and values[mine].max() <= values[np.setdiff1d(own, subset)].min()
    for _, positions, seen_labels, _ in watch.steps:
        assert all(0 <= p < len(labels) for p in positions) and labels[positions].tolist() == seen_labels


def test_recalibration_and_the_final_check_use_all_the_data(monkeypatch):
    sizes = []
    real = train_module.recalibrate_batchnorm
    monkeypatch.setattr(
        train_module, "recalibrate_batchnorm", lambda model, data, *a: sizes.append(len(data)) or real(model, data, *a)
    )
    checked = []
    monkeypatch.setattr(train_module, "check_learned", lambda model, data, targets, *a: checked.append(len(targets)))
    images, labels = separable(n_per_class=32)
    train(build_model("proxy_tiny", 3, 16, seed=0), images, labels, CONFIG, NORM, sampler=DynamicKeep(0.3))
    assert sizes == [96]
    assert checked == []  # CONFIG does not check
    config = TrainConfig(**{**CONFIG.__dict__, "check": True})
    train(build_model("proxy_tiny", 3, 16, seed=0), images, labels, config, NORM, sampler=DynamicKeep(0.3))
    assert checked == [96]


def test_a_keep_of_one_trains_exactly_as_full_training():
    images, labels = separable(n_per_class=8)
    full = train(build_model("proxy_tiny", 3, 16, seed=0), images, labels, CONFIG, NORM)
    sampler = DynamicKeep(1.0)
    same = train(build_model("proxy_tiny", 3, 16, seed=0), images, labels, CONFIG, NORM, sampler=sampler)
    assert all(torch.equal(a, b) for a, b in zip(weights(full), weights(same), strict=True))
    assert sampler.report.steps == sampler.report.full_steps == 60 and sampler.report.selections == ()


def test_a_time_cap_shrinks_every_segment_and_the_run_still_reaches_the_smallest_keep(monkeypatch):
    monkeypatch.setattr(train_module, "MIN_CAPPED_STEPS", 30)
    images, labels = separable(n_per_class=32)
    sampler = DynamicKeep(0.5)
    reports: list[Progress] = []
    config = TrainConfig(steps=600, batch_size=16, max_seconds=1e-6, device="cpu", report_every=1, check=False)
    model = build_model("proxy_tiny", 3, 16, seed=0)
    train(model, images, labels, config, NORM, on_progress=reports.append, sampler=sampler)
    report = sampler.report
    assert reports[0].steps == sampler.starts[-1] and report.full_steps == 600  # planned: about half of 600
    assert 0.45 * 600 <= reports[0].steps <= 0.6 * 600
    assert report.steps == reports[-1].step == reports[-1].steps == 30  # then cut to the floor
    kept = [n for _, n in report.selections]
    assert kept == sorted(kept, reverse=True) and kept[-1] == sampler.kept[-1].sum()  # the last, smallest ratio


def test_a_stop_request_is_heard_during_a_scoring_pass(monkeypatch):
    monkeypatch.setattr(train_module, "STOP_CHECK_S", 0.0)
    monkeypatch.setitem(dynamic_module.SCORE_BATCH, "cpu", 8)
    images, labels = separable(n_per_class=32)
    model = build_model("proxy_tiny", 3, 16, seed=0)
    watch = Watch(model)
    sampler = DynamicKeep(0.5)
    with pytest.raises(Cancelled):
        stop = lambda: not model.training  # inside a scoring pass
        train(model, images, labels, CONFIG, NORM, observer=watch, sampler=sampler, should_stop=stop)
    assert len(watch.steps) == 6  # the first tenth trained, then stopped inside the first scoring pass
    assert model.training  # the scoring pass restored the mode on its way out
    assert sampler.report.selections == ()


def test_a_stop_request_between_steps_cancels_a_dynamic_run(monkeypatch):
    monkeypatch.setattr(train_module, "STOP_CHECK_S", 0.0)
    images, labels = separable(n_per_class=32)
    model = build_model("proxy_tiny", 3, 16, seed=0)
    sampler = DynamicKeep(0.5)
    reports: list[Progress] = []
    with pytest.raises(Cancelled):
        train(
            model,
            images,
            labels,
            CONFIG,
            NORM,
            on_progress=reports.append,
            sampler=sampler,
            should_stop=lambda: len(sampler.selections) >= 2,
        )
    assert len(reports) == sampler.selections[1][0] - 1  # stopped before the step after the second selection
    assert sampler.report.steps < reports[0].steps
