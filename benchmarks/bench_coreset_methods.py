"""Every core-set selection method on one large labeled set: seconds and peak memory (issue 24, part 3).

The graph methods (facility location, graph cut) run lazy greedy on a sparse k-nearest-neighbour graph
that FAISS builds, never an N x N matrix, so they are meant to run on 100,000 images. This times each
method of `engine.names.CORESET_METHODS` through `engine.coreset.select` (the path a curation takes) on
generated embeddings shaped like a proxy's: `--classes` labels, each a mixture of `--clusters` Gaussian
blobs in `--dim` dimensions, with random probabilities and training statistics. Baseline in the same run:
random selection of the same share. Seconds are wall-clock on one thread; each selection runs in a forked
child, and its peak is the child's resident memory growth during the call (Linux: VmHWM after resetting
it), against the embeddings' size.

    python -m benchmarks.bench_coreset_methods [--n 100000] [--dim 128] [--keep 0.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_select import MB, _rss_reset, _status_kb
from engine.coreset import select
from engine.machine import machine_info
from engine.names import CORESET_METHODS
from engine.score import PoolScores


def make_pool(n: int, dim: int, classes: int, clusters: int, seed: int = 0) -> PoolScores:
    """A labeled set of `n` float32 embeddings around `clusters` centres per class, with softmax-like
    probabilities and the training statistics a curation records (forgetting counts, some never learned)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, clusters, dim), dtype=np.float32) * 3
    blob = rng.integers(0, clusters, n)
    embeddings = centres[labels, blob] + rng.standard_normal((n, dim), dtype=np.float32)
    probs = rng.dirichlet(np.ones(classes), n).astype(np.float32)
    forgetting = rng.poisson(0.5, n).astype(np.float64)
    forgetting[rng.random(n) < 0.01] = np.inf
    per_example = {
        "forgetting": forgetting,
        "el2n": rng.random(n),
        "grand": rng.random(n) * 3,
        "right_share": rng.random(n),
    }
    return PoolScores(probs, np.ascontiguousarray(embeddings), labels=labels, per_example=per_example)


def measure(pool: PoolScores, method: str, keep_n: int, balance: bool, seed: int) -> dict:
    """One selection in a forked child, so its peak memory is its own (memory an earlier method freed to
    the allocator but not to the system would hide a later method's growth)."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_measure_in_child, args=(results, pool, method, keep_n, balance, seed))
    child.start()
    row = results.get()
    child.join()
    if "error" in row:
        raise RuntimeError(f"{method}: {row['error']}")
    return row


def _measure_in_child(results, pool: PoolScores, method: str, keep_n: int, balance: bool, seed: int) -> None:
    try:
        base = _rss_reset()
        started = time.perf_counter()
        picks = select(pool, method, keep_n, balance, seed)
        seconds = time.perf_counter() - started
        peak = None if base is None else (_status_kb("VmHWM") * 1024 - base) / MB
        if len(picks) != keep_n or len(np.unique(picks)) != keep_n:
            raise AssertionError(f"{len(picks)} picks, {len(np.unique(picks))} distinct, of {keep_n}")
        results.put({"method": method, "balance": balance, "seconds": round(seconds, 3), "rss_peak_mb": peak})
    except Exception as exc:  # reported to the parent, which raises it
        results.put({"error": repr(exc)})


def run(args: argparse.Namespace) -> dict:
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    pool = make_pool(args.n, args.dim, args.classes, args.clusters, args.seed)
    keep_n = round(args.keep * args.n)
    rows = []
    for balance in (True, False):
        for method in args.methods:
            row = measure(pool, method, keep_n, balance, args.seed)
            rows.append(row)
            peak = "n/a" if row["rss_peak_mb"] is None else f"{row['rss_peak_mb']:.0f} MB"
            print(f"{method:18s} balanced={balance!s:5s} {row['seconds']:8.2f} s  peak +{peak}", flush=True)
    return {
        "machine": machine_info(),
        "threads": args.threads,
        "n": args.n,
        "dim": args.dim,
        "classes": args.classes,
        "keep": args.keep,
        "embeddings_mb": pool.embeddings.nbytes / MB,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=20, help="blobs per class")
    parser.add_argument("--keep", type=float, default=0.5)
    parser.add_argument("--methods", nargs="+", default=list(CORESET_METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
