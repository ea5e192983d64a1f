"""SEALS against the whole pool: the same active-learning runs with `candidates = all` and `seals`.

Draws a balanced sample of the CIFAR-10 ImageFolder at `--data` (train/ and
test/; `--pool-per-class` and `--test-per-class` images of each class, drawn
once with `--sample-seed`, copied into a temporary folder), then runs
`engine.simulate` on it for every strategy, seed and candidate mode: the
same seed gives both modes the same random first batch and the same first
proxy, so they differ only from the first batch SEALS chooses. Each
selection round records the proxy's test accuracy, the candidates it chose
among and the selection seconds; the target trains once at the end of each
run. Nothing is written into the repository but `--out`.

    taskset -c 0 .venv/bin/python benchmarks/bench_seals.py --data /tmp/cifar --out /tmp/seals.json

`--pin CORE` does what taskset does, from inside. The markdown table is
printed at the end (docs/seals.md holds one).

`--scale N` instead times one round's selection on N random embeddings
(`--dim`, 10 classes): SEALS's search of a batch of new labels, and least
confidence and k-center over the whole pool and over the candidates.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from engine.machine import machine_info
from storage.walk import find_images


def sample_folder(data: Path, dest: Path, pool_per_class: int, test_per_class: int, seed: int) -> Path:
    """dest/train/<class>/ and dest/test/<class>/ holding copies of a balanced sample of `data` (the same
    sample for every run: drawn once with `seed`)."""
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", pool_per_class), ("test", test_per_class)):
        for folder in sorted(p for p in (data / split).iterdir() if p.is_dir() and not p.name.startswith(".")):
            found = sorted(find_images(folder).paths)
            chosen = rng.permutation(len(found))[:per_class] if per_class else range(len(found))
            target = dest / split / folder.name
            target.mkdir(parents=True)
            for i in sorted(chosen):
                shutil.copyfile(folder / found[i], target / Path(found[i]).name)
    return dest


def run_one(args: argparse.Namespace, data: Path, strategy: str, seed: int, candidates: str) -> dict:
    """One simulate run; its rounds, the target's accuracy and the wall-clock seconds."""
    from engine.simulate import ProgressLine, SimulateConfig, expected_rounds, simulate

    config = SimulateConfig(
        data=data,
        out=Path(tempfile.mkdtemp(prefix="bench-seals-")) / "run.json",
        strategy=strategy,
        initial=args.initial,
        round_size=args.round_size,
        budget=args.budget,
        proxy=args.proxy,
        target=args.target,
        seed=seed,
        proxy_steps=args.proxy_steps,
        target_steps=args.target_steps,
        device="cpu",
        image_size=args.image_size,
        initial_strategy="random",
        candidates=candidates,
        seals_k=args.seals_k,
    )
    started = time.perf_counter()
    result = simulate(config, progress=ProgressLine(expected_rounds(config), io.StringIO()))
    shutil.rmtree(config.out.parent, ignore_errors=True)
    pool = result["settings"]["pool_size"]
    rounds = [
        {
            "round": r["round"],
            "labeled": r["labeled"],
            "proxy_test_acc": r["proxy_test_acc"],
            "select_s": r["select_s"],
            "candidates": r.get("candidates"),
            "free": pool - r["labeled"],  # no validation set: every image not labeled yet could be chosen
        }
        for r in result["rounds"]
    ]
    return {
        "strategy": strategy,
        "seed": seed,
        "candidates": candidates,
        "rounds": rounds,
        "target_test_acc": result["target"]["test_acc"],
        "target_labeled": result["target"]["labeled"],
        "seconds": time.perf_counter() - started,
        "pool_size": pool,
        "test_size": result["settings"]["test_size"],
    }


def scale_timing(n: int, dim: int, labeled: int, batch: int, k: int, seed: int = 0) -> dict:
    """One round at scale on random embeddings: `labeled` images labeled before, `batch` new labels
    searched (the rest already were), then a batch chosen over the whole pool and over the candidates."""
    from engine.round import select_among
    from engine.score import PoolScores
    from engine.selection.neighbours import SealsCandidates

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    logits = rng.normal(size=(n, 10)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pool = PoolScores(probs, x)
    taken = np.sort(rng.permutation(n)[: labeled + batch])
    before, new = taken[:labeled], taken
    seals = SealsCandidates(n, k)
    seals.candidates(x, before, taken)  # the earlier rounds' searches
    started = time.perf_counter()
    candidates = seals.candidates(x, new, taken)
    figures: dict = {"n": n, "dim": dim, "labeled": labeled + batch, "batch": batch, "k": k}
    figures["search_s"] = time.perf_counter() - started
    figures["candidates"] = len(candidates)
    for name in ("least_confidence", "kcenter"):
        for mode, among in (("all", None), ("seals", candidates)):
            started = time.perf_counter()
            select_among(name, pool, taken, batch, among, rng=np.random.default_rng(seed))
            figures[f"{name}_{mode}_s"] = time.perf_counter() - started
    return figures


def render(result: dict) -> str:
    """The markdown table: per strategy and selection round, both modes' mean test accuracy over the
    seeds (each seed's in brackets), SEALS's candidates and their share of the free pool, and the
    selection seconds; then the target's accuracy."""
    runs = result["runs"]
    lines = [
        "| strategy | round | labeled | test acc, all | test acc, seals | candidates (share of free) "
        "| select s, all | select s, seals |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for strategy in result["args"]["strategies"]:
        mine = [r for r in runs if r["strategy"] == strategy]
        if not mine:
            continue
        indices = sorted({row["round"] for r in mine for row in r["rounds"] if row["round"] > 0})
        for index in indices:
            cells = {}
            for mode in ("all", "seals"):
                rows = [row for r in mine if r["candidates"] == mode for row in r["rounds"] if row["round"] == index]
                cells[mode] = rows
            seals = cells["seals"]
            labeled = (cells["all"] or seals)[0]["labeled"]
            share = (
                ", ".join(f"{row['candidates']:,} ({100 * row['candidates'] / row['free']:.0f} %)" for row in seals)
                if seals
                else "-"
            )
            lines.append(
                f"| {strategy} | {index} | {labeled:,} | {_accuracy(cells['all'])} | {_accuracy(seals)} | {share} "
                f"| {_seconds(cells['all'])} | {_seconds(seals)} |"
            )
        for mode in ("all", "seals"):
            targets = [r["target_test_acc"] for r in mine if r["candidates"] == mode]
            if targets:
                lines.append(
                    f"| {strategy} | target ({mine[0]['target_labeled']:,} labels), {mode} | | "
                    f"{_mean_cell(targets)} | | | | |"
                )
    return "\n".join(lines)


def _accuracy(rows: list[dict]) -> str:
    return _mean_cell([row["proxy_test_acc"] for row in rows]) if rows else "-"


def _mean_cell(values: list[float]) -> str:
    each = " / ".join(f"{100 * v:.1f}" for v in values)
    return f"{100 * statistics.mean(values):.1f} ({each})"


def _seconds(rows: list[dict]) -> str:
    return f"{statistics.mean(row['select_s'] for row in rows):.3f}" if rows else "-"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/cifar"), help="ImageFolder with train/ and test/")
    parser.add_argument("--out", type=Path, required=True, help="results JSON (written after every run)")
    parser.add_argument("--pool-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--initial", type=int, default=500)
    parser.add_argument("--round-size", type=int, default=500)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--strategies", nargs="+", default=["least_confidence", "kcenter"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seals-k", type=int, default=2, help="neighbours per labeled image (SEALS: 100)")
    parser.add_argument("--image-size", type=int, default=32, help="pixels (CIFAR-10: 32)")
    parser.add_argument("--proxy", default="proxy_tiny")
    parser.add_argument("--target", default="resnet20")
    parser.add_argument("--proxy-steps", type=int, default=300)
    parser.add_argument("--target-steps", type=int, default=600)
    parser.add_argument("--pin", type=int, help="run on this CPU core only (like taskset -c)")
    parser.add_argument("--scale", type=int, nargs="+", help="time one round's selection at these pool sizes instead")
    parser.add_argument("--dim", type=int, default=512, help="embedding width with --scale")
    parser.add_argument("--labeled", type=int, default=2000, help="labels before the round, with --scale")
    parser.add_argument("--batch", type=int, default=1000, help="the round's new labels and batch, with --scale")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # one thread per core this process may use
    result: dict = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info(),
        "cores_allowed": sorted(os.sched_getaffinity(0)),
        "date": date.today().isoformat(),
        "runs": [],
    }
    if args.scale:
        result["scale"] = []
        for n in args.scale:
            result["scale"].append(scale_timing(n, args.dim, args.labeled, args.batch, args.seals_k))
            print(json.dumps(result["scale"][-1]), file=sys.stderr, flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2))
        return result
    with tempfile.TemporaryDirectory(prefix="bench-seals-data-") as tmp:
        data = sample_folder(args.data, Path(tmp), args.pool_per_class, args.test_per_class, args.sample_seed)
        for strategy in args.strategies:
            for seed in args.seeds:
                for mode in ("all", "seals"):
                    run = run_one(args, data, strategy, seed, mode)
                    result["runs"].append(run)
                    accs = " ".join(f"{row['proxy_test_acc']:.3f}" for row in run["rounds"][1:])
                    cands = " ".join(str(row["candidates"]) for row in run["rounds"][1:])
                    print(
                        f"{strategy} seed {seed} {mode}: proxy {accs}; candidates {cands}; "
                        f"target {run['target_test_acc']:.3f}; {run['seconds']:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(result, indent=2))
    print(render(result))
    return result


if __name__ == "__main__":
    main()
