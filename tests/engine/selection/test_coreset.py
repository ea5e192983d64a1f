"""Core-set methods on hand-checked statistics: order, random ties, what they refuse, and the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app import project_forms
from engine.example_stats import ExampleScores, LabeledSetScores
from engine.names import LABELING_STRATEGIES, STRATEGY_INFO
from engine.score import PoolScores
from engine.selection.coreset import el2n, forgetting, grand, labeled_pool
from engine.selection.strategies import STRATEGIES, strategy_scores

PROBS = np.full((5, 2), 0.5)
EMB = np.zeros((5, 3), np.float32)


def scored(forgetting_events, el2n_values, grand_values) -> LabeledSetScores:
    n = len(forgetting_events)
    training = ExampleScores(
        np.asarray(forgetting_events, float), np.asarray(el2n_values), np.asarray(grand_values), np.full(n, 4)
    )
    return LabeledSetScores(training, PoolScores(PROBS[:n], EMB[:n]), steps=10)


POOL = labeled_pool(
    scored([0, 2, math.inf, 1, 0], [0.1, 0.5, 0.9, 0.3, 0.2], [1.0, 0.2, 3.0, 2.0, np.nan]), np.array([0, 1, 0, 1, 0])
)


def test_the_most_forgotten_first_and_the_never_learned_before_all():
    assert forgetting(POOL, [], 3, rng=np.random.default_rng(0)).tolist() == [2, 1, 3]


def test_the_largest_early_error_and_gradient_first_with_a_missing_value_last():
    assert el2n(POOL, [], 5).tolist() == [2, 1, 3, 4, 0]
    assert grand(POOL, [], 5).tolist() == [2, 3, 0, 1, 4]  # position 4 had no early presentation


def test_taken_positions_are_never_picked():
    first, second = forgetting(POOL, [2, 1], 2, rng=np.random.default_rng(0)).tolist()
    assert first == 3 and second in (0, 4)  # 0 and 4 tie at no forgetting event
    assert 2 not in forgetting(POOL, [2], 4, rng=np.random.default_rng(0)).tolist()


def test_ties_are_drawn_with_the_rng_not_by_file_order():
    pool = labeled_pool(scored(np.zeros(5), np.zeros(5), np.zeros(5)), np.zeros(5, int))
    picks = [tuple(forgetting(pool, [], 2, rng=np.random.default_rng(seed)).tolist()) for seed in range(10)]
    assert picks[0] == tuple(forgetting(pool, [], 2, rng=np.random.default_rng(0)).tolist())  # seeded
    assert len(set(picks)) > 3


def test_an_unlabeled_pool_has_no_training_statistics_to_select_by():
    with pytest.raises(ValueError, match="forgetting needs the statistics a proxy gathers while it trains"):
        forgetting(PoolScores(PROBS, EMB), [], 2, rng=None)
    unrecorded = labeled_pool(scored(np.zeros(5), np.full(5, np.nan), np.full(5, np.nan)), np.zeros(5, int))
    with pytest.raises(ValueError, match="el2n was not recorded in this run"):
        el2n(unrecorded, [], 2)


def test_labels_must_match_the_scored_set():
    with pytest.raises(ValueError, match=r"labels must have shape \(5,\)"):
        labeled_pool(scored(np.zeros(5), np.zeros(5), np.zeros(5)), np.zeros(4, int))


def test_core_set_methods_are_registered_but_not_offered_for_labeling():
    for name in ("forgetting", "el2n", "grand"):
        assert name in STRATEGIES and not STRATEGY_INFO[name].labeling and name not in LABELING_STRATEGIES
    assert project_forms.engine_choices()[0] == list(LABELING_STRATEGIES)
    assert strategy_scores("forgetting", POOL, [2, 1]).tolist() == [math.inf, 2.0]
    assert STRATEGY_INFO["forgetting"].caption(2.0) == "forgotten 2 times"
