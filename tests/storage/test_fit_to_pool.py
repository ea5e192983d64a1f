"""Defaults that fit the pool (issue 25): budget, round size, first batch and validation size from the
number of usable images, so a small pool gets several rounds and a validation set that can tell models
apart, and the last round still chooses its batch."""

from __future__ import annotations

import dataclasses
import math
import tempfile

import pytest

import storage

BLANK = storage.Settings(image_root="", classes=())


@pytest.mark.parametrize(
    "pool, validation, budget, round_size",
    [
        (100, 20, 48, 5),
        (245, 49, 117, 12),  # issue 25's pool: was 24 validation, budget 221 (every image left), rounds of 50
        (2_000, 200, 500, 50),
        (100_000, 250, 500, 50),
    ],
)
def test_defaults_fit_the_pool(pool, validation, budget, round_size):
    fitted = storage.fit_to_pool(BLANK, pool)
    assert (fitted.validation_size, fitted.budget, fitted.round_size, fitted.initial_size) == (
        validation,
        budget,
        round_size,
        round_size,
    )
    storage.validate_settings(checkable(fitted), pool_size=pool)
    batches = 1 + math.ceil((fitted.budget - fitted.initial_size) / fitted.round_size)
    assert batches >= 9  # several rounds, a small pool included
    left = pool - fitted.validation_size - fitted.budget
    assert left >= 0.4 * (pool - fitted.validation_size) - 1  # the last round chooses among many
    assert left > fitted.round_size
    assert fitted.validation_size >= 20 and fitted.validation_size <= fitted.budget // 2


def checkable(settings: storage.Settings) -> storage.Settings:
    """The fitted numbers with an image root and classes, for validate_settings."""
    return dataclasses.replace(settings, image_root=tempfile.gettempdir(), classes=("a", "b"))


@pytest.mark.parametrize("pool", [1, 2, 5, 12, 30, 500, 10_000])
def test_any_pool_gets_valid_settings(pool):
    fitted = storage.fit_to_pool(BLANK, pool)
    storage.validate_settings(checkable(fitted), pool_size=pool)
    assert 1 <= fitted.initial_size <= fitted.budget and 1 <= fitted.round_size <= fitted.budget


def test_typed_fields_are_kept_and_the_others_fit_around_them():
    typed = storage.Settings(image_root="", classes=(), budget=150, round_size=7, initial_size=20, validation_size=40)
    assert storage.fit_to_pool(typed, 245, keep=storage.FITTED) == typed
    budget_only = storage.fit_to_pool(typed, 245, keep=("budget",))
    assert budget_only.budget == 150
    assert budget_only.validation_size == 49  # still fits: 150 + 49 <= 245
    assert (budget_only.round_size, budget_only.initial_size) == (15, 15)
    squeezed = storage.fit_to_pool(dataclasses.replace(typed, budget=220), 245, keep=("budget",))
    assert squeezed.validation_size == 25  # what the typed budget leaves
    val_only = storage.fit_to_pool(typed, 245, keep=("validation_size",))
    assert (val_only.validation_size, val_only.budget) == (40, 123)  # 60 % of the 205 left
    rounds = storage.fit_to_pool(typed, 245, keep=("round_size",))
    assert (rounds.round_size, rounds.initial_size) == (7, 7)
