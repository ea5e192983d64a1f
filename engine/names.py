"""The names the app offers and shows, without torch: models, what `auto` stands for, strategies, batch numbers.

The Streamlit server reads this module (the settings forms, the Target page, the Label page's score
captions); importing torch there would slow every page and every label acknowledgement. The engine
maps each name to its code and tests check they agree: `engine.models.MODELS` registers
`MODEL_NAMES`, `engine.selection.strategies` maps `STRATEGY_NAMES` to functions (`STRATEGIES`, `SCORES`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.backbone_files import BACKBONE_TARGET, FROZEN_PROXIES, NONE

if TYPE_CHECKING:
    import storage

IMPORTED = "imported"  # the strategy of a round 0 that stands for labels brought with the images

# ---------------------------------------------------------------- models

AUTO = "auto"
# the models engine.models.MODELS registers, in its order
MODEL_NAMES = ("proxy_tiny", "resnet20", "resnet56", "resnet18", "tv_resnet18", "tv_resnet50")
# `auto` model per stage and device type: on a CPU resnet18 learns at ~40 images/s here,
# resnet20 at ~450, proxy_tiny at ~1,400 (docs/training.md), so the CPU picks are smaller.
AUTO_MODELS = {"proxy": {"cpu": "proxy_tiny", "cuda": "resnet20"}, "target": {"cpu": "resnet20", "cuda": "resnet18"}}


def auto_needs_device(name: str, backbone: str = NONE) -> bool:
    """Does the model `name` stands for depend on the device? Only `auto` without a backbone does."""
    return name == AUTO and (backbone or NONE) == NONE


def resolve_model_name(name: str, stage: str, device_type: str = "cpu", backbone: str = NONE) -> str:
    """`name`, or for `auto` the stage's model; ValueError if unknown.

    With a backbone, the `auto` proxy is the linear head on its embeddings
    (engine.frozen) and the `auto` target is the backbone fine-tuned
    (engine.target); otherwise `auto` is the stage's model for a device of
    type `device_type` ("cuda", else the CPU's pick; the engine passes the
    type of the device it runs on, `engine.config.resolve_model_name`).
    """
    if name == AUTO:
        if not auto_needs_device(name, backbone):  # measured: docs/representation.md, "the target"
            return "linear" if stage == "proxy" else BACKBONE_TARGET
        return AUTO_MODELS[stage]["cuda" if device_type == "cuda" else "cpu"]
    check_model_name(name, stage)
    return name


def check_model_name(name: str, stage: str = "proxy") -> None:
    """ValueError with the known names unless `name` is `auto`, a registered model, (proxy) a frozen head
    or (target) BACKBONE_TARGET."""
    allowed = set(MODEL_NAMES) | (set(FROZEN_PROXIES) if stage == "proxy" else {BACKBONE_TARGET})
    if name != AUTO and name not in allowed:
        raise ValueError(f"unknown model {name!r}; choose auto or one of {', '.join(sorted(allowed))}")


# ---------------------------------------------------------------- strategies


@dataclass(frozen=True)
class StrategyInfo:
    caption: Callable[
        [float], str
    ]  # an item's score (engine.selection.strategies.strategy_scores) as the annotator reads it
    reads_distances: bool = False  # reads the pool's embeddings: with a backbone, the backbone's
    cold_start: bool = False  # needs embeddings that mean something before any label (a backbone's)
    labeling: bool = True  # offered for choosing what to label; False: core-sets only (reads training statistics)


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
    # core-sets: statistics of a proxy trained on the labeled set (engine.selection.coreset)
    "forgetting": StrategyInfo(lambda s: f"forgotten {s:.0f} times", labeling=False),
    "el2n": StrategyInfo(lambda s: f"early error {s:.2f}", labeling=False),
    "grand": StrategyInfo(lambda s: f"early gradient norm {s:.2f}", labeling=False),
    # core-sets: submodular functions of the embeddings' similarity graph (engine.selection.submodular)
    "facility_location": StrategyInfo(lambda s: f"covers {s:.2f} more", reads_distances=True, labeling=False),
    "graph_cut": StrategyInfo(lambda s: f"graph-cut gain {s:.2f}", reads_distances=True, labeling=False),
    # core-sets: the chosen mean kept near the mean of all (engine.selection.herding)
    "herding": StrategyInfo(lambda s: f"chosen mean {s:.2f} from the mean", reads_distances=True, labeling=False),
}
STRATEGY_NAMES = tuple(STRATEGY_INFO)
LABELING_STRATEGIES = tuple(name for name, info in STRATEGY_INFO.items() if info.labeling)
DISTANCE_STRATEGIES = tuple(name for name, info in STRATEGY_INFO.items() if info.reads_distances)
COLD_START = tuple(name for name, info in STRATEGY_INFO.items() if info.cold_start)


def check_labeling_strategy(name: str) -> None:
    """ValueError unless `name` can choose what to label: an unknown name, or a core-set method that reads the
    statistics of a proxy trained on the labeled set (named before any training)."""
    if name in LABELING_STRATEGIES:
        return
    choices = ", ".join(LABELING_STRATEGIES)
    if name in STRATEGY_INFO:
        raise ValueError(
            f"{name} selects from a labeled set (a curation: proxy-labeler coreset, the Curate page), "
            f"not what to label; choose one of {choices}"
        )
    raise ValueError(f"unknown strategy {name!r}; choose one of {choices}")


# what can select from a labeled set (a core-set); the cold-start ones, and hybrid (typiclust until the labels
# cover the pool's clusters), are made for an unlabeled pool
# The defaults of a curation, from the study on this CPU (docs/coreset.md, "The product's defaults"): k-center at
# 70 % was never clearly below random on digits or the CIFAR-10 sample (ahead on digits, tied on CIFAR), where
# hard-first methods (forgetting, uncertainty) through a weak proxy lost to random
CORESET_DEFAULT_METHOD = "kcenter"
CORESET_DEFAULT_KEEP = 0.7
CORESET_METHODS = tuple(name for name, info in STRATEGY_INFO.items() if not info.cold_start and name != "hybrid")
# core-set methods with no score per example of their own (it depends on the order of picking): a curation
# records each example's distance to the nearest other kept example of its class instead (engine.coreset)
KEPT_DISTANCE_SCORED = ("kcenter", "herding", "facility_location", "graph_cut")
KEPT_DISTANCE = "distance to the nearest other kept image of its class"


# ---------------------------------------------------------------- batches


def batch_offset(rounds: Sequence[storage.Round]) -> int:
    """What to add to a round index to get the batch number people read (`rounds`: the project's, oldest
    first; storage.list_rounds). Batches count from 1 while round indexes stay 0-based in storage and the
    engine, and a round 0 that stands for imported labels (strategy IMPORTED) is no batch: round 1 chose
    batch 1 then. The one rule for the app's pages and the engine's messages."""
    return 0 if rounds and rounds[0].strategy == IMPORTED else 1
