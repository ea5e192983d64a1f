"""Shared test settings: keep CPU work small and deterministic on 2 cores."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")


@pytest.fixture(params=[False, True], ids=["float32", "bf16"])
def precision(request, monkeypatch):
    """Runs a test twice, with bf16 autocast forced off and on (PROXY_LABELER_BF16), whatever this CPU has;
    the value is True for bf16."""
    from engine.precision import BF16_ENV

    monkeypatch.setenv(BF16_ENV, "1" if request.param else "0")
    return request.param
