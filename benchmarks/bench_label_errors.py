"""How well the Curate page's "possibly mislabeled" list finds wrong labels (docs/label_review.md).

A labeled ImageFolder set (its `train/`) with a share of its labels flipped on purpose (--noise; each flipped
label becomes another class at random): the proxy trains once on the noisy labels exactly as the coreset job
does (`engine.example_stats.score_labeled_set`, the project's default proxy and training level), then:

- the suspects (`engine.coreset.suspects`): how many are flagged, precision (flagged that were flipped) and
  recall (flipped that were flagged);
- three orders of review, each read at k = the number flipped (R-precision, the share of the top k that were
  flipped): self-confidence (the trained proxy's probability of the given label, lowest first: cleanlab's
  simplest score, and the order `storage.suspects` lists them in), the training dynamics (never learned,
  then most forgotten, then least often right) and random (its expected value is the noise rate).

All in one run per seed, same proxy. Figures depend on the proxy's accuracy: printed with each row.

    .venv/bin/python -m benchmarks.bench_label_errors --data ROOT [--per-class 200] [--noise 0.05 0.1]
        [--seeds 0 1 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_coreset import per_class_sample
from engine.config import stage_config
from engine.coreset import CoresetConfig, _settings, load_labeled_data, suspects
from engine.example_stats import score_labeled_set
from engine.machine import machine_description, machine_info
from engine.models import build_model
from engine.pool_cache import channel_stats
from engine.selection.coreset import labeled_pool


def flip(labels: np.ndarray, share: float, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, bool mask of the flipped): `share` of the labels each moved to another class at random."""
    flipped = np.zeros(len(labels), bool)
    flipped[rng.choice(len(labels), round(share * len(labels)), replace=False)] = True
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, flipped.sum())) % classes
    return noisy, flipped


def dynamics_order(pool) -> np.ndarray:
    """Positions never learned first, then most forgotten, then least often right, then least confident."""
    forgetting = np.asarray(pool.per_example["forgetting"], dtype=np.float64)
    right = np.nan_to_num(np.asarray(pool.per_example["right_share"], dtype=np.float64), nan=1.0)
    confidence = np.asarray(pool.probs)[np.arange(len(pool.labels)), pool.labels]
    return np.lexsort((confidence, right, -forgetting))


def r_precision(order: np.ndarray, flipped: np.ndarray) -> float:
    k = int(flipped.sum())
    return float(flipped[order[:k]].mean()) if k else float("nan")


def measure(data, noise: float, seed: int, proxy_training: str) -> dict:
    rng = np.random.default_rng(seed)
    classes = len(data.classes)
    noisy, flipped = flip(data.labels, noise, classes, rng)
    settings = _settings(CoresetConfig(out=Path(os.devnull), data=Path("."), seed=seed), data.classes)
    stage = stage_config(settings, "proxy", level=proxy_training)
    model = build_model(stage.model_name, classes, data.size, seed=seed)
    started = time.perf_counter()
    scored = score_labeled_set(model, data.images, noisy, stage.train, data.normalization)
    seconds = time.perf_counter() - started
    pool = labeled_pool(scored, noisy)
    flagged = suspects(pool)
    confidence = np.asarray(pool.probs)[np.arange(len(noisy)), noisy]
    hits = int((flagged & flipped).sum())
    return {
        "noise": noise,
        "seed": seed,
        "n": len(noisy),
        "flipped": int(flipped.sum()),
        "proxy": stage.model_name,
        "proxy_train_acc_true_labels": round(float((pool.probs.argmax(1) == data.labels).mean()), 4),
        "proxy_s": round(seconds, 1),
        "flagged": int(flagged.sum()),
        "precision": round(hits / max(1, int(flagged.sum())), 4),
        "recall": round(hits / max(1, int(flipped.sum())), 4),
        "r_precision_dynamics": round(r_precision(dynamics_order(pool), flipped), 4),
        "r_precision_self_confidence": round(r_precision(np.argsort(confidence, kind="stable"), flipped), 4),
        "r_precision_random": round(r_precision(rng.permutation(len(noisy)), flipped), 4),
    }


def table(rows: list[dict], name: str) -> str:
    keys = ("precision", "recall", "r_precision_self_confidence", "r_precision_dynamics", "r_precision_random")
    lines = [
        f"**{name}** ({rows[0]['n']} labeled images, proxy {rows[0]['proxy']}, {len({r['seed'] for r in rows})} "
        "seeds, mean ± std)",
        "",
        "| noise | flipped | flagged | precision | recall | R-precision: self-confidence (review order) "
        "| training dynamics | random | proxy right on the true labels | proxy s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for noise in sorted({r["noise"] for r in rows}):
        mine = [r for r in rows if r["noise"] == noise]

        def cell(key: str, rows=mine) -> str:
            values = [r[key] for r in rows]
            spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.2f}{spread}"

        lines.append(
            f"| {noise:.0%} | {cell('flipped')} | {cell('flagged')} | "
            + " | ".join(cell(k) for k in keys)
            + f" | {cell('proxy_train_acc_true_labels')} | {cell('proxy_s')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, required=True, help="ImageFolder root with train/<class>/ and test/<class>/ (not used)"
    )
    parser.add_argument("--name", default=None, help="the data set's name in the table")
    parser.add_argument("--per-class", type=int, default=0, help="a balanced sample of this many per class (0: all)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--proxy-training", default="balanced")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_labeled_data(CoresetConfig(out=Path(os.devnull), data=args.data))
    picked = per_class_sample(data.labels, args.per_class, np.random.default_rng(0))
    if picked is not None:
        mean, std = channel_stats(data.images[picked])
        data = type(data)(
            data.images[picked],
            data.labels[picked],
            data.test_images,
            data.test_labels,
            (tuple(mean), tuple(std)),
            data.classes,
            data.size,
        )
    rows = [measure(data, noise, seed, args.proxy_training) for noise in args.noise for seed in args.seeds]
    for row in rows:
        print(json.dumps(row), flush=True)
    print(table(rows, args.name or args.data.name))
    print(machine_description())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "machine": machine_info(), "args": vars(args)}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
