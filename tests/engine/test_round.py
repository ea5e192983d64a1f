"""Rounds end to end on generated images through the real storage layer."""

from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch

import storage
from engine.config import LEVELS
from engine.representation import load_backbone, project_embeddings
from engine.round import (
    WARM_START_FILE,
    RoundError,
    load_project_pool,
    run_initial_round,
    run_round,
    select_among,
    select_next_batch,
    warm_config,
)
from engine.score import PoolScores, predict_logits
from engine.selection.neighbours import SealsCandidates
from engine.train import Cancelled, TrainConfig, plan
from tests.support import label_by_folder, label_queue, make_tiny_project, write_ssl_backbone


def test_initial_round_is_a_seeded_random_batch(tiny_project):
    first = run_initial_round(tiny_project)
    items = storage.round_items(tiny_project, first.id)
    assert (first.index, first.strategy, first.selector, first.n_labeled) == (0, "random", "random", 0)
    assert len(items) == 6 and {score for _, score in items} == {0.0}
    assert storage.budget_left(tiny_project) == 8
    with pytest.raises(RoundError, match="initial random batch was already made"):
        run_initial_round(tiny_project)


def test_initial_round_skips_the_validation_sample(tmp_path):
    project = make_tiny_project(tmp_path, validation_size=5)
    first = run_initial_round(project)
    validation = set(storage.validation_ids(project))
    assert len(validation) == 5
    assert not validation & {item_id for item_id, _ in storage.round_items(project, first.id)}


def test_round_end_to_end(labeled_project, fake_clock):
    import engine.round as round_module

    # each stage is timed by two clock reads; reads advance 1, 2, 4, 8, 16 s: train 1, score 4, select 16
    fake_clock(round_module, 1, 2, 4, 8, 16)
    seen = []
    outcome = select_next_batch(labeled_project, on_progress=lambda f, m: seen.append((f, m)))
    made = outcome.round
    queue = storage.round_queue(labeled_project, made.id)
    assert (made.index, made.strategy, made.selector, made.n_labeled) == (1, "least_confidence", "proxy_tiny", 6)
    assert len(queue) == 4
    assert not {i for i, _ in queue} & set(storage.labeled_ids(labeled_project))
    assert all(math.isfinite(score) for _, score in queue)
    assert [score for _, score in queue] == sorted((score for _, score in queue), reverse=True)
    assert (made.train_s, made.score_s, made.select_s) == (1.0, 4.0, 16.0)
    assert made.proxy_val_acc is None and made.proxy_val_n is None  # no validation labels
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("step 30/30" in m for _, m in seen)
    assert seen[-1] == (1.0, "batch 2 ready: 4 images to label")  # round 1 chose batch 2, as the Label page counts
    assert storage.budget_left(labeled_project) == 4
    # the stored guess of each queued image is the trained proxy's most likely class, with its probability
    guesses = storage.round_guesses(labeled_project, made.id)
    ids = [i for i, _ in queue]
    assert set(guesses) == set(ids)
    logits = predict_logits(outcome.model, outcome.pool.subset(ids).images, outcome.pool.normalization)
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    classes = storage.load_settings(labeled_project).classes
    assert [guesses[i][0] for i in ids] == [classes[c] for c in probs.argmax(1)]
    np.testing.assert_allclose([guesses[i][1] for i in ids], probs.max(1), atol=1e-5)


def test_rounds_continue_until_the_budget_is_spent(labeled_project):
    for expected_index in (1, 2):
        made = run_round(labeled_project)
        assert made.index == expected_index
        label_queue(labeled_project)
    assert storage.budget_left(labeled_project) == 0
    assert len(storage.training_labels(labeled_project)) == 14
    with pytest.raises(RoundError, match="budget of 14 is spent"):
        run_round(labeled_project)


def test_round_records_validation_accuracy(tmp_path):
    project = make_tiny_project(tmp_path, validation_size=4)
    run_initial_round(project)
    label_queue(project)
    label_by_folder(project, storage.validation_ids(project), annotator="user")
    made = run_round(project)
    # solid-colour classes: right on every validation image of a class it has labels for, and only those
    trained = set(storage.training_labels(project).values())
    validation = storage.validation_labels(project)
    seen = sum(label in trained for label in validation.values()) / len(validation)
    assert made.proxy_val_acc == pytest.approx(seen)
    assert made.proxy_val_n == 4  # the validation images it was measured on, stored with it
    assert made.n_labeled == 6  # validation labels do not train


def _picks(tmp_path, name):
    project = make_tiny_project(tmp_path / name)
    run_initial_round(project)
    label_queue(project)
    made = run_round(project)
    paths = {item.id: item.path for item in storage.usable_items(project)}
    return [(paths[i], round(score, 5)) for i, score in storage.round_items(project, made.id)]


def test_rounds_are_reproducible_for_a_fixed_seed(tmp_path):
    assert _picks(tmp_path, "a") == _picks(tmp_path, "b")


def test_round_reads_no_image_file_once_cached(labeled_project, tmp_path):
    load_project_pool(labeled_project)
    shutil.move(tmp_path / "images", tmp_path / "moved")
    made = run_round(labeled_project)
    assert len(storage.round_items(labeled_project, made.id)) == 4
    assert storage.rejected_files(labeled_project) == []  # no file was looked for, so none was marked missing
    assert len(storage.usable_items(labeled_project)) == 30


@pytest.mark.parametrize("strategy", ["random", "margin", "entropy", "kcenter"])
def test_every_strategy_runs_a_round(tmp_path, strategy):
    project = make_tiny_project(tmp_path, strategy=strategy)
    run_initial_round(project)
    label_queue(project)
    made = run_round(project)
    assert made.strategy == strategy
    assert len(storage.round_items(project, made.id)) == 4


def test_warm_start_reuses_the_last_proxy_with_half_the_planned_steps(tmp_path, monkeypatch):
    # the step counts under test, not the level's time cap (which a loaded machine reaches)
    monkeypatch.setitem(LEVELS["proxy"], "fast", dataclasses.replace(LEVELS["proxy"]["fast"], max_seconds=3600.0))
    project = make_tiny_project(tmp_path, warm_start=True, proxy_steps=0, proxy_training="fast")
    run_initial_round(project)
    label_queue(project)
    first = select_next_batch(project)
    saved = project.models_dir / WARM_START_FILE
    assert saved.is_file() and first.train_steps == LEVELS["proxy"]["fast"].min_steps  # from scratch: the plan
    label_queue(project)
    second = select_next_batch(project)
    assert second.round.index == 2 and second.train_steps == first.train_steps // 2


def test_warm_config_halves_planned_steps_only():
    planned = TrainConfig(max_seconds=20.0)
    assert warm_config(planned, 1000).steps == plan(1000, planned)[1] // 2
    assert warm_config(planned, 1000).max_seconds == 20.0
    assert warm_config(TrainConfig(steps=30), 1000).steps == 30


def test_a_proxy_that_learned_nothing_gives_a_random_batch_instead_of_a_dead_end(tmp_path):
    from PIL import Image

    folder = tmp_path / "same"
    for index in range(16):  # identical grey images, one pixel apart: nothing to learn
        pixels = np.full((8, 8, 3), 128, np.uint8)
        pixels[index // 8, index % 8] = 129
        (folder / ("a" if index % 2 else "b")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / ("a" if index % 2 else "b") / f"{index:02d}.png")
    project = storage.create_project(
        tmp_path / "project",
        storage.Settings(
            image_root=str(folder),
            classes=("a", "b"),
            budget=12,
            round_size=4,
            initial_size=8,
            proxy="proxy_tiny",
            image_size=8,
            device="cpu",
            proxy_steps=30,
            warm_start=True,
        ),
    )
    storage.ingest(project)
    run_initial_round(project)
    for item_id, _ in storage.round_queue(project, storage.current_round(project).id):
        storage.set_label(project, item_id, storage.get_item(project, item_id).path.split("/")[0])
    seen = []
    made = run_round(project, on_progress=lambda f, m: seen.append(m))
    assert (made.strategy, made.selector) == ("random", "random: proxy_tiny learned nothing yet")
    assert len(storage.round_items(project, made.id)) == 4
    assert any("this batch is drawn at random" in m for m in seen)
    assert storage.round_guesses(project, made.id) == {}  # no guesses from a model that learned nothing
    assert not (project.models_dir / WARM_START_FILE).exists()  # nothing to warm-start from


def test_the_target_stage_selects_with_the_targets_model_and_training(tmp_path):
    project = make_tiny_project(
        tmp_path, proxy="proxy_tiny", proxy_steps=10, target="resnet20", target_steps=40, warm_start=True
    )
    run_initial_round(project)
    label_queue(project)
    outcome = select_next_batch(project, stage="target")
    assert (outcome.round.selector, outcome.train_steps) == ("resnet20", 40)
    assert outcome.model.config.name == "resnet20"
    assert not (project.models_dir / WARM_START_FILE).exists()  # the proxy's warm start is not the target's


def test_model_override_selects_with_another_model(labeled_project):
    made = run_round(labeled_project, model_name="resnet20", steps=30)
    assert made.selector == "resnet20"


# ---------------------------------------------------------------- refusals: nothing is written


def _refuses(project, match, **kwargs):
    before = storage.list_rounds(project)
    with pytest.raises(RoundError, match=match):
        run_round(project, **kwargs)
    assert storage.list_rounds(project) == before


def test_refuses_while_the_previous_round_is_unlabeled(tiny_project):
    run_initial_round(tiny_project)
    _refuses(tiny_project, "^batch 1 still has 6 unlabeled images; label or skip them before the next batch is chosen$")


def test_after_imported_labels_the_messages_count_batches_from_the_first_one_chosen(tiny_project):
    """Round 0 stands for imported labels (no batch), so round 1 made batch 1: its progress line and the refusal
    while it is open say so, as the Label page counts (engine.names.batch_offset)."""
    from engine.initial import start_from_labels

    label_by_folder(tiny_project, [item.id for item in storage.usable_items(tiny_project)][::5])  # 2 per class
    assert start_from_labels(tiny_project).strategy == "imported"
    seen = []
    made = run_round(tiny_project, on_progress=lambda f, m: seen.append(m))
    assert made.index == 1 and seen[-1] == "batch 1 ready: 4 images to label"
    _refuses(tiny_project, "^batch 1 still has 4 unlabeled images; label or skip them before the next batch is chosen$")


def test_refuses_when_the_budget_is_spent(tmp_path):
    project = make_tiny_project(tmp_path, budget=6)
    run_initial_round(project)
    label_queue(project)
    _refuses(project, "budget of 6 is spent")


def test_refuses_with_fewer_than_two_classes(tiny_project):
    first = run_initial_round(tiny_project)
    for item_id, _ in storage.round_queue(tiny_project, first.id):
        storage.set_label(tiny_project, item_id, "red")
    _refuses(tiny_project, r"at least 2 classes \(labeled so far: red\)")


def test_refuses_without_labels(tiny_project):
    _refuses(tiny_project, r"at least 2 classes \(labeled so far: none\)")


def test_refuses_when_no_candidates_are_left(tmp_path):
    project = make_tiny_project(tmp_path, per_class=2, budget=8)
    run_initial_round(project)
    label_queue(project)
    _refuses(project, "every usable image is already labeled")


def test_refuses_an_unknown_strategy_or_model(tmp_path):
    project = make_tiny_project(tmp_path, strategy="best_guess")
    run_initial_round(project)
    label_queue(project)
    _refuses(project, "unknown strategy 'best_guess'; choose one of")
    storage.save_settings(project, dataclasses.replace(storage.load_settings(project), strategy="forgetting"))
    _refuses(project, "forgetting selects from a labeled set")  # a core-set method, named before any training
    storage.save_settings(
        project,
        storage.Settings(**{**storage.load_settings(project).__dict__, "strategy": "margin", "proxy": "tiny_net"}),
    )
    with pytest.raises(ValueError, match="unknown model 'tiny_net'"):
        run_round(project)


def test_cancelled_round_writes_nothing(labeled_project):
    before = storage.list_rounds(labeled_project)
    with pytest.raises(Cancelled):
        run_round(labeled_project, should_stop=lambda: True)
    assert storage.list_rounds(labeled_project) == before
    assert storage.budget_left(labeled_project) == 8


# ---------------------------------------------------------------- SEALS candidates


def _line_pool(*xs: float, probs=None) -> PoolScores:
    """Pool scores of points on a line (2-D embeddings), uniform probabilities unless given."""
    embeddings = np.array([[x, 0.0] for x in xs], dtype=np.float32)
    if probs is None:
        probs = np.full((len(xs), 2), 0.5, np.float32)
    return PoolScores(np.asarray(probs, np.float32), embeddings)


def test_select_among_runs_the_strategy_on_the_candidates_only():
    # least confidence: rows 3 and 4 are the least sure of all, but only 1, 2 and 5 are candidates
    probs = [[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.5, 0.5], [0.5, 0.5], [0.7, 0.3]]
    pool = _line_pool(0, 1, 2, 3, 4, 5, probs=probs)
    rng = np.random.default_rng(0)
    picks, scores, note = select_among("least_confidence", pool, np.array([0]), 2, np.array([1, 2, 5]), rng=rng)
    assert picks.tolist() == [2, 5] and note == ""
    np.testing.assert_allclose(scores, [0.4, 0.3], atol=1e-6)
    whole, _, _ = select_among("least_confidence", pool, np.array([0]), 2, None, rng=rng)
    assert whole.tolist() == [3, 4]  # None: the whole pool, as before


def test_select_among_keeps_measuring_k_center_from_every_taken_image():
    # taken: 0 (x = 0) and 3 (x = 10), neither a candidate; candidates 1 (x = 9) and 2 (x = 4):
    # 2 is the farther from the taken images, though 1 is the farther from the other candidate
    pool = _line_pool(0, 9, 4, 10, 100)
    picks, scores, _ = select_among(
        "kcenter", pool, np.array([0, 3]), 1, np.array([1, 2]), rng=np.random.default_rng(0)
    )
    assert picks.tolist() == [2] and scores.tolist() == [4.0]


def test_select_among_takes_the_rest_from_the_whole_pool_when_the_candidates_run_out():
    pool = _line_pool(0, 1, 2, 50, 100)
    picks, scores, note = select_among(
        "kcenter", pool, np.array([0]), 3, np.array([0, 1]), rng=np.random.default_rng(0)
    )
    # 1 is the one candidate left (0 is taken); then k-center on the whole pool, measuring from 0 and 1
    assert picks.tolist() == [1, 4, 3]
    assert scores.tolist() == [1.0, 99.0, 49.0]
    assert note == "2 from the whole pool (fewer candidates than the batch)"


def test_a_seals_round_chooses_among_the_backbones_neighbours_of_the_labels(tmp_path, monkeypatch):
    import engine.selection.neighbours as neighbours

    project = make_tiny_project(
        tmp_path,
        backbone=str(write_ssl_backbone(tmp_path / "exported")),
        initial_strategy="random",
        candidates="seals",
        seals_k=2,
    )
    run_initial_round(project)
    labeled = label_queue(project)
    seen: list[str] = []
    outcome = select_next_batch(project, on_progress=lambda f, m: seen.append(m))
    pool = outcome.pool
    settings = storage.load_settings(project)
    backbone = load_backbone(project, settings, pool.image_size)
    assert backbone is not None
    embeddings = project_embeddings(project, backbone, pool)
    expected = SealsCandidates(len(pool), 2).candidates(embeddings, pool.positions(labeled))
    picks = pool.positions([i for i, _ in storage.round_queue(project, outcome.round.id)])
    assert 4 <= len(expected) <= 12 and set(picks.tolist()) <= set(expected.tolist())
    assert outcome.candidates == len(expected)
    share = f"{len(expected)} candidates of 24 ({100 * len(expected) / 24:.1f} %)"
    assert outcome.round.selector == f"proxy_tiny, SEALS k=2 on ssl embeddings: {share}"
    assert f"selecting 4 images (least_confidence) among {len(expected)} candidates" in seen

    # the next round searches only its new labels: the embeddings are fixed, the candidate pool grows
    searched: list[int] = []
    real = neighbours.nearest

    def spy(x, k, rows=None):
        searched.extend(np.asarray(rows).tolist())
        return real(x, k, rows)

    monkeypatch.setattr(neighbours, "nearest", spy)
    new = label_queue(project)
    select_next_batch(project)
    assert sorted(searched) == sorted(pool.positions(new).tolist())


def test_a_seals_round_without_a_backbone_searches_the_proxys_embeddings(labeled_project):
    settings = storage.load_settings(labeled_project)
    storage.save_settings(labeled_project, dataclasses.replace(settings, candidates="seals", seals_k=3))
    outcome = select_next_batch(labeled_project)
    assert outcome.candidates is not None and 1 <= outcome.candidates <= 18
    assert outcome.round.selector.startswith("proxy_tiny, SEALS k=3 on the proxy's embeddings: ")
    assert len(storage.round_queue(labeled_project, outcome.round.id)) == 4
