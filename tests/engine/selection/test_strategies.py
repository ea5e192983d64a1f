"""Selection strategies: exact picks on hand-built arrays, k-center greedy
against a brute-force reference, every error path."""

import numpy as np
import pytest
import torch

from engine.score import PoolScores
from engine.selection import kcenter as kc
from engine.selection.strategies import (
    STRATEGIES,
    balanced_top_k,
    entropy_scores,
    k_center_greedy,
    least_confidence_scores,
    margin_scores,
    strategy_scores,
    top_k,
)

PROBS = np.array(
    [
        [0.90, 0.05, 0.05],  # 0: confident
        [0.40, 0.35, 0.25],  # 1: least confident, small margin
        [0.50, 0.50, 0.00],  # 2: zero margin
        [0.34, 0.33, 0.33],  # 3: near uniform: highest entropy
        [0.40, 0.35, 0.25],  # 4: same as 1 (tie -> lower index first)
    ],
    np.float32,
)
EMB = np.array([[0, 0], [1, 0], [10, 0], [0, 7], [5, 5]], np.float32)
# with the labels and training statistics of a core-set run, so every registered method runs on it
STATISTICS = {"forgetting": np.array([0, 2, np.inf, 1, 0.0]), "el2n": np.array([0.1, 0.5, 0.9, 0.3, 0.2])}
POOL = PoolScores(
    probs=PROBS,
    embeddings=EMB,
    labels=np.array([0, 1, 2, 1, 2]),
    per_example={**STATISTICS, "grand": STATISTICS["el2n"] * 3},
)


def brute_k_center(X, labeled, budget, rng=None):
    """Textbook greedy, recomputing every chosen-to-candidate distance each step."""
    X = np.asarray(X, np.float32).astype(np.float64)
    chosen, picks = list(labeled), []
    for _ in range(budget):
        free = np.ones(len(X), bool)
        free[chosen] = False
        cand = np.flatnonzero(free)
        if not chosen:
            best = int(cand[rng.integers(len(cand))])
        else:
            d = ((X[cand][:, None, :] - X[chosen][None, :, :]) ** 2).sum(-1).min(1)  # [cand]
            best = int(cand[np.argmax(d)])  # first maximum: lowest index
        chosen.append(best)
        picks.append(best)
    return np.array(picks, np.int64)


def random_case(seed):
    r = np.random.default_rng(seed)
    n, d = int(r.integers(1, 120)), int(r.integers(1, 6))
    kind = seed % 3
    if kind == 0:  # integer coordinates: many exact ties
        X = r.integers(-2, 3, (n, d)).astype(np.float32)
    elif kind == 1:  # duplicated non-integer points
        X = r.standard_normal((max(1, n // 3), d)).astype(np.float32)[r.integers(0, max(1, n // 3), n)]
    else:  # offset from the origin: where ||x||^2 - 2x.c + ||c||^2 loses digits
        X = (r.standard_normal((n, d)) + 50).astype(np.float32)
    n_lab = int(r.integers(0, n))
    labeled = r.choice(n, n_lab, replace=False)
    budget = int(r.integers(0, n - n_lab + 1))
    return X, labeled, budget


# --- uncertainty strategies ---------------------------------------------------


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy"])
def test_on_a_labeled_set_uncertainty_keeps_the_plain_top_and_draws_ties(name):
    """A core-set: no balance over predicted classes (the class balancer balances by label), ties by rng."""
    probs = np.array([[0.5, 0.5], [0.55, 0.45], [0.6, 0.4], [0.65, 0.35], [0.1, 0.9], [0.2, 0.8]], np.float32)
    labeled_set = PoolScores(probs, np.zeros((6, 1), np.float32), labels=np.array([0, 0, 0, 0, 1, 1]))
    assert STRATEGIES[name](labeled_set, [], 2, rng=np.random.default_rng(0)).tolist() == [0, 1]
    unlabeled = PoolScores(probs, np.zeros((6, 1), np.float32))  # active learning: one per predicted class
    assert STRATEGIES[name](unlabeled, [], 2, rng=None).tolist() == [0, 5]
    tied = PoolScores(np.full((6, 2), 0.5, np.float32), np.zeros((6, 1), np.float32), labels=np.zeros(6, int))
    draws = {tuple(STRATEGIES[name](tied, [], 2, rng=np.random.default_rng(s)).tolist()) for s in range(8)}
    assert len(draws) > 1


def test_scores_by_hand():
    np.testing.assert_allclose(least_confidence_scores(PROBS), [0.10, 0.60, 0.50, 0.66, 0.60], rtol=1e-6)
    np.testing.assert_allclose(margin_scores(PROBS), [0.15, 0.95, 1.0, 0.99, 0.95], rtol=1e-6)
    ent = entropy_scores(PROBS)
    assert ent[2] == pytest.approx(np.log(2))  # the 0 * log 0 term counts as 0
    assert np.argmax(ent) == 3


@pytest.mark.parametrize(
    "name, labeled, expected",
    [
        ("least_confidence", [], [3, 1, 4, 2, 0]),
        ("least_confidence", [1], [3, 4, 2]),
        ("margin", [], [2, 3, 1, 4, 0]),
        ("margin", [2, 3], [1, 4]),
        ("entropy", [], [3, 1, 4, 2, 0]),
        ("kcenter", [0], [2, 4, 3, 1]),  # (10,0); (5,5) is sqrt 50 from both; (0,7); (1,0)
        ("kcenter", [2, 3], [1, 4]),  # (1,0): sqrt 50 from (0,7), beats (0,0) at 7
    ],
)
def test_exact_picks(name, labeled, expected):
    budget = len(expected)
    unlabeled = PoolScores(PROBS, EMB)  # an active-learning pool: every row predicted class 0
    got = STRATEGIES[name](unlabeled, np.array(labeled, np.int64), budget, rng=np.random.default_rng(0))
    assert got.dtype == np.int64
    assert got.tolist() == expected


def test_top_k_ties_go_to_lowest_index():
    assert top_k(np.array([1.0, 2.0, 2.0, 2.0, 0.5]), [2], 3).tolist() == [1, 3, 0]
    assert top_k(np.zeros(4), [], 4).tolist() == [0, 1, 2, 3]


def test_random_is_seeded_and_skips_labeled():
    a = STRATEGIES["random"](POOL, np.array([1, 3]), 3, rng=np.random.default_rng(7))
    b = STRATEGIES["random"](POOL, np.array([1, 3]), 3, rng=np.random.default_rng(7))
    assert a.tolist() == b.tolist() and sorted(a.tolist()) == [0, 2, 4]


def test_zero_budget_gives_empty_int64():
    for fn in STRATEGIES.values():
        got = fn(POOL, np.array([], np.int64), 0, rng=np.random.default_rng(0))
        assert got.shape == (0,) and got.dtype == np.int64


def test_strategy_scores():
    chosen = np.array([3, 1])
    np.testing.assert_allclose(strategy_scores("least_confidence", POOL, chosen), [0.66, 0.60], rtol=1e-6)
    assert strategy_scores("random", POOL, chosen).tolist() == [0.0, 0.0]
    # kcenter: distance to the nearest labeled or earlier chosen point
    got = strategy_scores("kcenter", POOL, [2, 4, 3, 1], labeled=[0])
    np.testing.assert_allclose(got, [10.0, np.sqrt(50), np.sqrt(29), 1.0])
    assert strategy_scores("kcenter", POOL, [2, 0])[0] == np.inf


def test_kcenter_scores_match_pick_time_distances():
    X, labeled, _ = random_case(5)
    X = np.tile(X, (3, 1)) + np.arange(3 * len(X))[:, None].astype(np.float32)
    budget = min(20, len(X) - len(labeled))
    picks, dist = k_center_greedy(X, labeled, budget, rng=np.random.default_rng(1), return_distances=True)
    pool = PoolScores(np.full((len(X), 2), 0.5, np.float32), X)
    np.testing.assert_array_equal(strategy_scores("kcenter", pool, picks, labeled=labeled), dist)
    assert np.all(np.diff(dist[1:]) <= 0)  # greedy distances never grow


# --- k-center greedy against the reference -----------------------------------


@pytest.mark.parametrize("seed", range(150))
def test_k_center_matches_brute_force(seed):
    X, labeled, budget = random_case(seed)
    expected = brute_k_center(X, labeled, budget, np.random.default_rng(seed))
    got = k_center_greedy(X, labeled, budget, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(got, expected)
    lab = kc.check_selection(len(X), labeled, budget)
    for path in (kc.k_center_torch, kc.k_center_numpy):
        np.testing.assert_array_equal(path(X, lab, budget, np.random.default_rng(seed))[0], expected)
    if seed % 3 != 1:  # the BLAS baseline rounds distances between duplicated non-integer points off 0
        blas = kc.k_center_numpy(X, lab, budget, np.random.default_rng(seed), blas_dtype=np.float64)[0]
        np.testing.assert_array_equal(blas, expected)


@pytest.mark.parametrize("seed", range(6))
def test_k_center_larger_cases_exercise_faiss_and_lazy_bounds(seed):
    # enough labeled points for the FAISS top-k check and enough picks for the
    # screened refresh (> 16 centers since a candidate's last refresh)
    r = np.random.default_rng(seed)
    X = (r.integers(-3, 4, (600, 3)) if seed % 2 else r.standard_normal((600, 8)) * 5 + 20).astype(np.float32)
    labeled = r.choice(600, 40 * seed, replace=False)
    expected = brute_k_center(X, labeled, 120, np.random.default_rng(seed))
    got = k_center_greedy(X, labeled, 120, rng=np.random.default_rng(seed), device="cpu")
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(
        kc.k_center_torch(X, kc.check_selection(600, labeled, 0), 120, np.random.default_rng(seed))[0], expected
    )


def test_k_center_one_dimension_and_whole_pool():
    X = np.array([[0], [3], [1], [9], [4], [9]], np.float32)
    got = k_center_greedy(X, [0], 5)
    assert got.tolist() == [3, 4, 1, 2, 5]  # 9 (first of two 9s), 4, then 3 and 1 tie at 1 -> 3
    assert got.tolist() == brute_k_center(X, [0], 5).tolist()


def test_k_center_first_center_from_rng():
    X = np.arange(10, dtype=np.float32)[:, None]
    a = k_center_greedy(X, [], 3, rng=np.random.default_rng(3))
    b = k_center_greedy(X, [], 3, rng=np.random.default_rng(3))
    assert a.tolist() == b.tolist()
    first = int(np.random.default_rng(3).integers(10))
    assert a[0] == first


def test_k_center_accepts_cpu_tensors_and_lists():
    X = torch.tensor(EMB)
    assert k_center_greedy(X, [0], 2).tolist() == [2, 4]
    assert k_center_greedy(EMB.tolist(), (0,), 2).tolist() == [2, 4]


def test_k_center_memory_is_linear():
    # no N x N or (|labeled| + budget) x N matrix: peak numpy memory far below one
    import tracemalloc

    r = np.random.default_rng(0)
    X = r.standard_normal((20_000, 16)).astype(np.float32)
    labeled = r.choice(20_000, 300, replace=False)
    tracemalloc.start()
    k_center_greedy(X, labeled, 300)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 320 * 20_000 * 8 / 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_k_center_cuda_matches_reference():
    r = np.random.default_rng(0)
    X = r.integers(-3, 4, (2000, 5)).astype(np.float32)
    labeled = r.choice(2000, 50, replace=False)
    expected = k_center_greedy(X, labeled, 200, device="cpu")
    np.testing.assert_array_equal(k_center_greedy(torch.tensor(X, device="cuda"), labeled, 200), expected)
    np.testing.assert_array_equal(k_center_greedy(X, labeled, 200, device="cuda"), expected)


# --- error paths ---------------------------------------------------------------


@pytest.mark.parametrize(
    "labeled, budget, message",
    [
        ([0, 1], 4, "larger than the 3 candidates"),
        ([], -1, ">= 0"),
        ([5], 1, "out of range"),
        ([-1], 1, "out of range"),
        ([1, 1], 1, "repeat"),
        ([[0, 1]], 1, "1-D"),
        ([0.0, 1.0], 1, "integer"),
        ([0], 1.5, "integer"),
        ([0], True, "integer"),
    ],
)
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_bad_selection_arguments(name, labeled, budget, message):
    with pytest.raises(ValueError, match=message):
        STRATEGIES[name](POOL, labeled, budget, rng=np.random.default_rng(0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(bad):
    probs, emb = PROBS.copy(), EMB.copy()
    probs[2, 1], emb[3, 0] = bad, bad
    for name in ("least_confidence", "margin", "entropy"):
        with pytest.raises(ValueError, match=r"probs contain NaN or inf.*rows \[2\]"):
            STRATEGIES[name](PoolScores(probs, EMB), [], 1, rng=None)
    with pytest.raises(ValueError, match=r"embeddings contain NaN or inf.*rows \[3\]"):
        STRATEGIES["kcenter"](PoolScores(PROBS, emb), [0], 1, rng=None)
    with pytest.raises(ValueError, match="embeddings contain NaN"):
        k_center_greedy(torch.tensor(emb), [0], 1)


def test_values_overflowing_float32_are_rejected():
    with pytest.raises(ValueError, match="NaN or inf \\(in float32\\)"):
        k_center_greedy(np.array([[0.0], [1e300]]), [0], 1)


@pytest.mark.parametrize("emb", [np.zeros(5), np.zeros((5, 0)), np.zeros((2, 2, 2)), np.array([["a"], ["b"]])])
def test_bad_embedding_shapes(emb):
    with pytest.raises(ValueError, match="embeddings"):
        k_center_greedy(emb, [], 0, rng=np.random.default_rng(0))


def test_bad_probs_shape():
    with pytest.raises(ValueError, match="probs must be a 2-D"):
        least_confidence_scores(np.zeros(4))


def test_k_center_without_labeled_needs_rng():
    with pytest.raises(ValueError, match="pass rng"):
        k_center_greedy(EMB, [], 2)
    with pytest.raises(ValueError, match="pass rng"):
        STRATEGIES["kcenter"](POOL, [], 1, rng=None)
    assert k_center_greedy(EMB, [], 0).tolist() == []  # nothing to draw


def test_random_needs_rng():
    with pytest.raises(ValueError, match="rng"):
        STRATEGIES["random"](POOL, [], 1, rng=None)


def test_bad_device():
    with pytest.raises(ValueError, match="device"):
        k_center_greedy(EMB, [0], 1, device="mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            k_center_greedy(EMB, [0], 1, device="cuda")


def test_strategy_scores_errors():
    with pytest.raises(ValueError, match="unknown strategy 'bogus'"):
        strategy_scores("bogus", POOL, [0])
    with pytest.raises(ValueError, match="out of range"):
        strategy_scores("margin", POOL, [7])
    with pytest.raises(ValueError, match="must not be labeled"):
        strategy_scores("kcenter", POOL, [0, 1], labeled=[1])


def test_bench_kcenter_smoke(capsys, fake_clock):
    from benchmarks import bench_select

    fake_clock(bench_select, 0.25)  # each timed run: 0.25 s
    result = bench_select.main(
        ["--n", "400", "--dims", "3", "--labeled", "10", "--budget", "30", "--repeats", "1", "--torch-device", "cpu"]
    )
    row = result["dims"][0]
    assert row["all_identical"] and row["torch"]["identical_to_lazy"]
    assert (row["lazy"]["seconds"], row["lazy"]["runs"]) == (0.25, [0.25])
    assert "SVP's way" in capsys.readouterr().out


# ---------------------------------------------------------------- class balance


def test_balanced_top_k_gives_each_predicted_class_an_equal_share():
    scores = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.10, 0.09, 0.50])
    predicted = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    # plain top-k would take five images predicted as class 0
    assert top_k(scores, [], 5).tolist() == [0, 1, 2, 3, 4]
    picks = balanced_top_k(scores, predicted, [], 5)
    assert sorted(np.bincount(predicted[picks], minlength=3).tolist()) == [1, 2, 2]
    assert picks.tolist() == [0, 1, 7, 5, 6]  # most informative first
    # class 2 has one candidate: its unused share goes to the others
    assert np.bincount(predicted[balanced_top_k(scores, predicted, [], 7)]).tolist() == [4, 2, 1]


def test_balanced_top_k_skips_labeled_and_breaks_ties_by_position():
    scores = np.array([0.5, 0.5, 0.5, 0.5])
    predicted = np.array([1, 0, 1, 0])
    assert balanced_top_k(scores, predicted, [1], 2).tolist() == [0, 3]
    assert balanced_top_k(scores, predicted, [], 4).tolist() == [0, 1, 2, 3]
    assert balanced_top_k(scores, predicted, [0, 1, 2, 3], 0).dtype == np.int64
    with pytest.raises(ValueError, match="predicted must have shape"):
        balanced_top_k(scores, predicted[:3], [], 1)


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy"])
def test_uncertainty_batches_are_not_dominated_by_one_predicted_class(name):
    rng = np.random.default_rng(0)
    # 900 images the proxy calls class 0 with low confidence, 100 it calls class 1 or 2 more surely
    unsure = np.column_stack([rng.uniform(0.34, 0.5, 900), rng.uniform(0, 0.33, 900), rng.uniform(0, 0.33, 900)])
    sure = np.column_stack([rng.uniform(0, 0.1, 100), rng.uniform(0.6, 0.9, 100), rng.uniform(0, 0.1, 100)])
    sure[50:, [1, 2]] = sure[50:, [2, 1]]
    probs = np.vstack([unsure, sure]).astype(np.float32)
    probs /= probs.sum(1, keepdims=True)
    pool = PoolScores(probs=probs, embeddings=np.zeros((1000, 2), np.float32))
    picks = STRATEGIES[name](pool, np.array([], np.int64), 30)
    assert np.bincount(probs[picks].argmax(1), minlength=3).tolist() == [10, 10, 10]


def test_the_strategy_registries_name_the_same_strategies():
    from engine.names import STRATEGY_NAMES
    from engine.selection.strategies import SCORES, STRATEGIES

    assert list(STRATEGIES) == list(SCORES) == list(STRATEGY_NAMES)
