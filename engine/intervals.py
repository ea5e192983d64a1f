"""How sure an accuracy is: the Wilson score interval of a share measured on n images.

An accuracy measured on 5 validation images moves in 20-point steps and its
95 % interval spans most of 0..1; on 24 images it moves in 4-point steps.
Every accuracy the app shows carries its n and this interval, so a reader
can tell a real difference from noise. Torch-free (the Streamlit server
imports it): standard library only.

Wilson (1927): for k right of n, with z the normal quantile,
centre = (p + z²/2n) / (1 + z²/n) and
half-width = z √(p(1 - p)/n + z²/4n²) / (1 + z²/n), p = k / n.
Unlike p ± z√(p(1-p)/n) it stays inside 0..1 and is not zero-width at 0 of n
or n of n (Newcombe 1998 compares seven intervals; this is his method 3).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile: a two-sided 95 % interval
FEW = 20  # an accuracy on fewer validation images than this is drawn as uncertain


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval of `correct` right out of `n`; (0, 1) when n is 0.

    ValueError for a negative n or a count outside 0..n.
    """
    if n < 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n, got {correct} of {n}")
    if n == 0:
        return 0.0, 1.0  # nothing measured: every accuracy is possible
    p = correct / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # the bounds are exactly 0 and 1 at none and all right; rounding must not push them past
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def correct_count(accuracy: float, n: int) -> int:
    """How many of `n` were right for a stored `accuracy` (a share of n, so k / n rounded back)."""
    if n < 0 or not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"need an accuracy in 0..1 and n >= 0, got {accuracy} on {n}")
    return round(accuracy * n)


def accuracy_interval(accuracy: float, n: int) -> tuple[float, float]:
    """The Wilson interval of an accuracy stored as a share of `n` images."""
    return wilson(correct_count(accuracy, n), n)


def describe(accuracy: float | None, n: int | None) -> str:
    """'60.0% (3 of 5 validation images; 95% interval 23–88%)', or why there is no number.

    `n` None: a record from before sample sizes were stored.
    """
    if accuracy is None:
        return "n/a (no labeled validation images)" if not n else "n/a"
    if n is None:
        return f"{accuracy:.1%} (number of validation images not recorded)"
    low, high = accuracy_interval(accuracy, n)
    images = "validation image" if n == 1 else "validation images"
    return f"{accuracy:.1%} ({correct_count(accuracy, n)} of {n} {images}; 95% interval {span(low, high)})"


def span(low: float, high: float) -> str:
    """'23–88%': an interval in whole percent (one decimal when it is narrower than 2 points)."""
    digits = 1 if high - low < 0.02 else 0
    return f"{100 * low:.{digits}f}–{100 * high:.{digits}f}%"
