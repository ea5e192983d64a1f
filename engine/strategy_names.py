"""The selection strategies by name, without torch: what the settings offer, how the Label page words an
item's score, and which strategies read distances. `engine.select` maps each name to its functions
(`STRATEGIES`, `SCORES`); a test checks the three agree."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StrategyInfo:
    caption: Callable[[float], str]  # an item's score (engine.select.strategy_scores) as the annotator reads it
    reads_distances: bool = False  # reads the pool's embeddings: with a backbone, the backbone's
    cold_start: bool = False  # needs embeddings that mean something before any label (a backbone's)


def _score(s: float) -> str:
    return f"score {s:.2f}"


STRATEGY_INFO: dict[str, StrategyInfo] = {
    "random": StrategyInfo(lambda s: "random pick"),
    "least_confidence": StrategyInfo(lambda s: f"proxy {1 - s:.0%} sure"),
    "margin": StrategyInfo(lambda s: f"margin {1 - s:.2f}"),
    "entropy": StrategyInfo(lambda s: f"entropy {s:.2f}"),
    "kcenter": StrategyInfo(lambda s: f"distance {s:.2f}", reads_distances=True),
    "typiclust": StrategyInfo(lambda s: f"typical of its cluster ({s:.1f})", reads_distances=True, cold_start=True),
    "probcover": StrategyInfo(lambda s: f"near {s:.0f} pool images", reads_distances=True, cold_start=True),
    "hybrid": StrategyInfo(_score, reads_distances=True),  # typiclust, then least confidence
}
STRATEGY_NAMES = tuple(STRATEGY_INFO)
DISTANCE_STRATEGIES = tuple(name for name, info in STRATEGY_INFO.items() if info.reads_distances)
COLD_START = tuple(name for name, info in STRATEGY_INFO.items() if info.cold_start)
