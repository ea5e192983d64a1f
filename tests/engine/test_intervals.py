"""The Wilson score interval against published values and by hand, and how an accuracy is described."""

from __future__ import annotations

import math

import pytest

from engine.intervals import FEW, accuracy_interval, correct_count, describe, span, wilson


@pytest.mark.parametrize(
    ("correct", "n", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857, Table II, method 3 (score interval without correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_published_values(correct, n, low, high):
    got = wilson(correct, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_three_of_five_by_hand():
    # p = 0.6, z² = 3.8415: denominator 1 + 3.8415 / 5 = 1.7683, centre (0.6 + 0.38415) / 1.7683 = 0.5565,
    # half-width 1.96 · √(0.048 + 0.038415) / 1.7683 = 0.3258
    assert wilson(3, 5) == pytest.approx((0.2307, 0.8824), abs=1e-4)


def test_nothing_measured_is_the_whole_range():
    assert wilson(0, 0) == (0.0, 1.0)


def test_all_right_reaches_exactly_one_and_none_right_exactly_zero():
    low, high = wilson(5, 5)
    assert high == 1.0 and low == pytest.approx(0.5655, abs=1e-4)  # (n / (n + z²)) at k = n
    assert low == pytest.approx(5 / (5 + 1.959963984540054**2))
    low, high = wilson(0, 5)
    assert low == 0.0 and high == pytest.approx(1 - 5 / (5 + 1.959963984540054**2))


def test_the_interval_narrows_with_n_and_always_holds_the_share():
    widths = []
    for n in (5, 24, 100, 1000):
        low, high = wilson(n // 2, n)
        assert low <= (n // 2) / n <= high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True)
    for n in range(1, 40):
        for k in range(n + 1):
            low, high = wilson(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0


@pytest.mark.parametrize(("correct", "n"), [(-1, 5), (6, 5), (0, -1)])
def test_impossible_counts_are_refused(correct, n):
    with pytest.raises(ValueError):
        wilson(correct, n)


def test_a_stored_accuracy_gives_back_its_count():
    assert correct_count(0.6, 5) == 3
    assert correct_count(2 / 3, 24) == 16
    assert accuracy_interval(0.6, 5) == wilson(3, 5)
    with pytest.raises(ValueError):
        correct_count(1.5, 4)


def test_descriptions_carry_n_and_the_interval():
    assert describe(0.6, 5) == "60.0% (3 of 5 validation images; 95% interval 23–88%)"
    assert describe(1.0, 1) == "100.0% (1 of 1 validation image; 95% interval 21–100%)"
    assert describe(0.8, None) == "80.0% (number of validation images not recorded)"
    assert describe(None, 0) == "n/a (no labeled validation images)"
    assert span(0.5, 0.51) == "50.0–51.0%"
    assert FEW == 20


def test_the_module_is_torch_free():
    import subprocess
    import sys

    code = "import sys, engine.intervals; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert math.isclose(wilson(1, 2)[0] + wilson(1, 2)[1], 1.0)  # symmetric around one half
