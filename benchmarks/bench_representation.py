"""Representation benchmarks (docs/representation.md).

`ssl`: SimCLR (engine.ssl) on an ImageFolder's train/ pool for --seconds,
with snapshots at --snapshots seconds; each snapshot's k-NN accuracy (all
train labels -> test) and linear-probe accuracy (engine.frozen heads on
100 / 1,000 / 5,000 random labels), beside a randomly initialised backbone
of the same architecture. Saves the final backbone (safetensors + json, as
a project stores it) so `al` and `simulate --backbone FILE` can reuse it.

`round`: wall seconds of whole rounds through storage on the pool, the
linear proxy against the pixel proxy in the same project.

`target`: on the same random labels, the target trained from scratch (the
`auto` model at --level), the backbone fine-tuned (target `backbone`), and
the linear head on the frozen backbone; test accuracy and train seconds.

`al`: active learning on a backbone's frozen embeddings with the linear
proxy: the first 100 labels by random / typiclust / probcover, then rounds
to 200, 500 and 1,000 labels by least confidence or at random; the test
accuracy of the linear proxy at each budget, for --seeds seeds. With
--scratch, the from-scratch pipeline of the app (random first batch,
least-confidence rounds, the CPU proxy trained on pixels) at the same
budgets, through `engine.simulate` on the same data.

    .venv/bin/python benchmarks/bench_representation.py ssl --data /tmp/cifar --seconds 900 --out /tmp/rep
    .venv/bin/python benchmarks/bench_representation.py al --data /tmp/cifar \
        --backbone /tmp/rep/backbone_ssl.safetensors
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

from engine.embeddings import Backbone, embed_images, load_ssl_weights, save_ssl_backbone
from engine.frozen import Features, HeadConfig, accuracy, head_probs, knn_accuracy, train_head
from engine.machine import machine_description
from engine.models import model_from_config
from engine.pool_cache import channel_stats, pick_image_size
from engine.score import PoolScores
from engine.selection.coldstart import probcover, typiclust
from engine.selection.strategies import least_confidence, random_sample
from engine.simulate import load_test_set
from engine.ssl import SSLConfig, backbone_config, pretrain, ssl_input_size

BUDGETS = (100, 200, 500, 1000)
PROBE_LABELS = (100, 1000, 5000)


def load_data(root: Path, size: int) -> tuple:
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not size:
        from PIL import Image

        first = sorted((root / "train").glob("*/*"))[:200]
        size = pick_image_size([Image.open(p).size for p in first])
    xtr, ytr = load_test_set(root / "train", classes, size)
    xte, yte = load_test_set(root / "test", classes, size)
    return classes, xtr, ytr, xte, yte


def probe(backbone: Backbone, xtr, ytr, xte, yte, classes: int, seed: int = 0) -> dict:
    """k-NN (all train labels) and linear-probe accuracies on the test set."""
    started = time.perf_counter()
    etr, ete = embed_images(backbone, xtr), embed_images(backbone, xte)
    out = {"embed_s": round(time.perf_counter() - started, 1), "knn_all": knn_accuracy(etr, ytr, ete, yte, classes)}
    features = Features(np.concatenate([etr, ete]))
    test = np.arange(len(ytr), len(ytr) + len(yte))
    rng = np.random.default_rng(seed)
    for n in PROBE_LABELS:
        if n <= len(ytr):
            pos = rng.choice(len(ytr), n, replace=False)
            out[f"linear_{n}"] = accuracy(train_head(features, pos, ytr[pos], classes), features, test, yte)
    return out


def run_ssl(args) -> dict:
    classes, xtr, ytr, xte, yte = load_data(args.data, args.image_size)
    normalization = channel_stats(xtr)
    config = SSLConfig(
        steps=args.steps, max_seconds=None if args.steps else args.seconds, seed=args.seed, device=args.device
    )
    size = ssl_input_size(xtr.shape[-1])
    snapshots: dict[int, dict] = {}

    def on_progress(p) -> None:
        for mark in args.snapshots:
            reached = p.step >= mark if args.steps else p.seconds >= mark
            if mark not in snapshots and reached:
                snapshots[mark] = {"step": p.step, "seconds": p.seconds, "state": copy.deepcopy(p.model.state_dict())}

    result = pretrain(xtr, normalization, config, on_progress=on_progress)
    mconfig = backbone_config(config, size)
    rows = []
    random_model = model_from_config(mconfig, seed=args.seed).eval()
    rows.append(
        {
            "seconds": 0,
            "steps": 0,
            **probe(Backbone("random", random_model, size, normalization, "r"), xtr, ytr, xte, yte, len(classes)),
        }
    )
    for _, snap in sorted(snapshots.items()):
        model = model_from_config(mconfig)
        model.load_state_dict(snap["state"])
        rows.append(
            {
                "seconds": round(snap["seconds"]),
                "steps": snap["step"],
                **probe(Backbone("ssl", model.eval(), size, normalization, "s"), xtr, ytr, xte, yte, len(classes)),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    rows.append(
        {
            "seconds": round(result.seconds),
            "steps": result.steps,
            **probe(Backbone("ssl", result.model, size, normalization, "f"), xtr, ytr, xte, yte, len(classes)),
        }
    )
    args.out.mkdir(parents=True, exist_ok=True)
    save_ssl_backbone(
        args.out,
        result.model,
        {
            "model_config": mconfig.__dict__,
            "normalization": [list(v) for v in normalization],
            "steps": result.steps,
            "seconds": result.seconds,
        },
    )
    return {
        "machine": machine_description(),
        "data": str(args.data),
        "pool": len(ytr),
        "test": len(yte),
        "image_size": int(xtr.shape[-1]),
        "ssl_input": size,
        "config": config.__dict__,
        "rows": rows,
    }


def run_al(args) -> dict:
    classes, xtr, ytr, xte, yte = load_data(args.data, args.image_size)
    backbone = load_ssl_weights(args.backbone)
    started = time.perf_counter()
    etr, ete = embed_images(backbone, xtr), embed_images(backbone, xte)
    embed_s = time.perf_counter() - started
    features = Features(np.concatenate([etr, ete]))
    test = np.arange(len(ytr), len(ytr) + len(yte))
    c = len(classes)
    initial = {"random": random_sample, "typiclust": typiclust, "probcover": probcover}
    budgets = [b for b in BUDGETS if b <= len(ytr)]
    rows = []
    for seed in range(args.seeds):
        for first_name, first in initial.items():
            for later in ("least_confidence", "random"):
                rng = np.random.default_rng(seed)
                pool = PoolScores(probs=np.full((len(etr), c), 1 / c, np.float32), embeddings=etr)
                chosen = first(pool, [], budgets[0], rng=rng)
                curve, head = {}, None
                for i, budget in enumerate(budgets):
                    if i:
                        probs = head_probs(head, features, np.arange(len(ytr)))
                        pool = PoolScores(probs=probs, embeddings=etr)
                        pick = least_confidence if later == "least_confidence" else random_sample
                        chosen = np.concatenate([chosen, pick(pool, chosen, budget - len(chosen), rng=rng)])
                    t = time.perf_counter()
                    head = train_head(features, chosen, ytr[chosen], c, HeadConfig(seed=seed))
                    curve[budget] = {
                        "acc": accuracy(head, features, test, yte),
                        "head_s": round(time.perf_counter() - t, 3),
                    }
                rows.append({"seed": seed, "initial": first_name, "rounds": later, "curve": curve})
                print(json.dumps(rows[-1]), file=sys.stderr)
    return {
        "machine": machine_description(),
        "data": str(args.data),
        "backbone": str(args.backbone),
        "pool": len(ytr),
        "embed_s": round(embed_s, 1),
        "rows": rows,
    }


def run_target(args) -> dict:
    """The target from scratch (the `auto` model, as the app trains it) against the backbone fine-tuned
    (target `backbone`), and the linear head on the frozen backbone, on the same random labels."""
    import storage
    from engine.config import stage_config
    from engine.embeddings import backbone_classifier, resize_images
    from engine.models import build_model
    from engine.train import evaluate, train

    classes, xtr, ytr, xte, yte = load_data(args.data, args.image_size)
    backbone = load_ssl_weights(args.backbone)
    normalization = channel_stats(xtr)
    settings = storage.Settings(
        image_root="", classes=tuple(classes), device=args.device, seed=args.seed, target_training=args.level
    )
    features = Features(np.concatenate([embed_images(backbone, xtr), embed_images(backbone, xte)]))
    test = np.arange(len(ytr), len(ytr) + len(yte))
    rows = []
    for n in (n for n in args.labels if n <= len(ytr)):
        pos = np.random.default_rng(args.seed).choice(len(ytr), n, replace=False)
        head = train_head(features, pos, ytr[pos], len(classes), HeadConfig(seed=args.seed))
        rows.append({"labels": n, "model": "linear head (frozen)", "acc": accuracy(head, features, test, yte)})
        for name in ("auto", "backbone"):
            stage = stage_config(settings, "target", model_name=name)
            if name == "backbone":
                model = backbone_classifier(backbone, len(classes), seed=args.seed)
                size, norm = backbone.input_size, backbone.normalization
            else:
                model = build_model(stage.model_name, len(classes), xtr.shape[-1], seed=args.seed)
                size, norm = xtr.shape[-1], normalization
            started = time.perf_counter()
            train(model, resize_images(xtr[pos], size), ytr[pos], stage.train, norm)
            rows.append(
                {
                    "labels": n,
                    "model": stage.model_name,
                    "acc": evaluate(model, resize_images(xte, size), yte, norm, tta=True),
                    "train_s": round(time.perf_counter() - started, 1),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    return {
        "machine": machine_description(),
        "data": str(args.data),
        "backbone": str(args.backbone),
        "level": args.level,
        "pool": len(ytr),
        "test": len(yte),
        "rows": rows,
    }


def run_round_timing(args) -> dict:
    """Wall seconds of whole rounds (storage reads, training, scoring, selection, the write) on the pool:
    the linear proxy on the backbone's cached embeddings against the pixel proxy, in the same project."""
    import dataclasses
    import tempfile

    import storage
    from engine.round import run_first_round, select_next_batch

    train_root = (args.data / "train").resolve()
    classes = sorted(p.name for p in train_root.iterdir() if p.is_dir())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-rep-") as tmp:
        settings = storage.Settings(
            image_root=str(train_root),
            classes=tuple(classes),
            budget=args.labels + 500,
            round_size=100,
            initial_size=args.labels,
            strategy="least_confidence",
            proxy="linear",
            backbone=str(args.backbone),
            initial_strategy="typiclust",
            image_size=args.image_size,
            device=args.device,
            auto_next_round=False,
        )
        project = storage.create_project(Path(tmp) / "project", settings)
        started = time.perf_counter()
        storage.ingest(project)
        ingest_s = time.perf_counter() - started
        started = time.perf_counter()
        first = run_first_round(project)  # decodes the pool and embeds it once
        first_s = time.perf_counter() - started
        folder = {item.id: item.path.split("/")[0] for item in storage.usable_items(project)}

        def label(made) -> None:
            for item_id, _ in storage.round_queue(project, made.id):
                storage.set_label(project, item_id, folder[item_id], annotator="oracle", round_id=made.id)

        label(first)
        for proxy in ["linear"] * args.rounds + ["proxy_tiny"]:
            storage.save_settings(project, dataclasses.replace(storage.load_settings(project), proxy=proxy))
            started = time.perf_counter()
            outcome = select_next_batch(project)
            wall = time.perf_counter() - started
            made = outcome.round
            rows.append(
                {
                    "proxy": proxy,
                    "labels": made.n_labeled,
                    "wall_s": round(wall, 3),
                    "train_s": round(made.train_s, 3),
                    "score_s": round(made.score_s, 3),
                    "select_s": round(made.select_s, 3),
                    "val_acc": made.proxy_val_acc,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
            label(made)
        pool = len(storage.usable_items(project))
    return {
        "machine": machine_description(),
        "data": str(args.data),
        "pool": pool,
        "ingest_s": round(ingest_s, 1),
        "first_round_s": round(first_s, 1),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    ssl = sub.add_parser("ssl")
    ssl.add_argument("--seconds", type=float, default=900)
    ssl.add_argument(
        "--steps", type=int, default=0, help="a fixed step count instead of --seconds (then --snapshots are steps)"
    )
    ssl.add_argument("--snapshots", type=float, nargs="*", default=[300, 600])
    al = sub.add_parser("al")
    al.add_argument("--backbone", type=Path, required=True)
    al.add_argument("--seeds", type=int, default=3)
    timing = sub.add_parser("round")
    timing.add_argument("--backbone", type=Path, required=True)
    timing.add_argument("--labels", type=int, default=1000, help="labels before the timed rounds")
    timing.add_argument("--rounds", type=int, default=3, help="timed linear-proxy rounds (then one pixel-proxy round)")
    target = sub.add_parser("target")
    target.add_argument("--backbone", type=Path, required=True)
    target.add_argument("--labels", type=int, nargs="*", default=[100, 1000])
    target.add_argument("--level", default="balanced", help="the target's training level (fast, balanced, thorough)")
    for p in (ssl, al, timing, target):
        p.add_argument("--data", type=Path, required=True)
        p.add_argument("--out", type=Path, default=Path("/tmp/rep"))
        p.add_argument("--image-size", type=int, default=0)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto")
    args = parser.parse_args()
    result = {"ssl": run_ssl, "al": run_al, "round": run_round_timing, "target": run_target}[args.what](args)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.what}_{args.data.name}.json"
    (args.out / name).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
