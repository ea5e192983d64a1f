"""Benchmark (a) of `python -m engine bench`: k-center greedy on random data.

Times the FAISS + lazy-bounds path (the CPU default), the torch path (CUDA
when available), and the SVP reference's way in NumPy (one pass over the pool
per pick, float64 and float32) on the same standard-normal float32 data, all
in one run; prints speed ratios against the NumPy baselines, peak extra
memory, and whether every path picked the same positions.

Run alone: `python -m benchmarks.bench_select [--dims 64 512] [--json out.json]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
from typing import Any

import numpy as np
import torch

from engine.cli import add_kcenter_arguments
from engine.machine import machine_info
from engine.selection import kcenter as kc

MB = 2.0**20
PATHS = ("lazy", "torch", "numpy_svp", "numpy_blas_f64", "numpy_blas_f32")


def make_data(n: int, dim: int, n_labeled: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal float32 embeddings [n, dim] and n_labeled distinct positions."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim), dtype=np.float32)
    return X, np.sort(rng.choice(n, n_labeled, replace=False))


def _rss_reset() -> int | None:
    """Reset the kernel's peak-RSS mark (Linux) and return current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmRSS") * 1024
    except OSError:
        return None


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(key)


def timed(fn, repeats: int) -> dict:
    """Run fn() `repeats` times: picks of the first run, seconds of each, and
    the peak RSS growth (MB) over the run (None where /proc is unavailable)."""
    runs, picks, rss = [], None, []
    for _ in range(repeats):
        base = _rss_reset()
        t0 = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t0)
        if base is not None:
            rss.append((_status_kb("VmHWM") * 1024 - base) / MB)
        picks = out if picks is None else picks
    return {"seconds": statistics.median(runs), "runs": runs, "rss_peak_mb": max(rss) if rss else None, "picks": picks}


def traced_peak_mb(fn) -> float:
    """Peak of Python and NumPy allocations (tracemalloc) during fn(), in MB."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()


def bench_kcenter(
    n: int = 50_000,
    dims=(64, 512),
    n_labeled: int = 1_000,
    budget: int = 1_000,
    repeats: int = 3,
    slow_repeats: int = 1,
    torch_device: str = "auto",
    torch_cpu_budget: int = 100,
    seed: int = 0,
    baselines: bool = True,
) -> dict:
    """Time every k-center path per embedding width; return a JSON-able dict.

    repeats: runs of the fast path (median reported); slow_repeats: runs of
    the torch path on CPU and the NumPy baselines. Seconds are wall-clock.
    The torch path is a pass over the pool per labeled point and per pick,
    for CUDA; on CPU it makes only the first torch_cpu_budget picks (greedy
    picks are prefixes of longer runs, so they are still checked exactly).
    """
    device = torch.device(
        "cuda"
        if torch_device == "auto" and torch.cuda.is_available()
        else ("cpu" if torch_device == "auto" else torch_device)
    )
    result = {
        "machine": machine(),
        "n": n,
        "n_labeled": n_labeled,
        "budget": budget,
        "torch_device": str(device),
        "dims": [],
    }

    def measure(dim: int) -> dict:
        X, lab = make_data(n, dim, n_labeled, seed)
        row: dict[str, Any] = {"dim": dim, "embeddings_mb": X.nbytes / MB}
        row["lazy"] = timed(lambda: kc.k_center_lazy(X, lab, budget)[0], repeats)
        row["lazy"]["traced_peak_mb"] = traced_peak_mb(lambda: kc.k_center_lazy(X, lab, budget))
        on_gpu = device.type == "cuda"
        t_budget = budget if on_gpu else min(budget, torch_cpu_budget)
        row["torch"] = timed(
            lambda: kc.k_center_torch(X, lab, t_budget, device=device)[0], repeats if on_gpu else slow_repeats
        )
        row["torch"]["budget"] = t_budget
        if baselines:
            row["numpy_svp"] = timed(lambda: kc.k_center_numpy(X, lab, budget)[0], slow_repeats)
            row["numpy_blas_f64"] = timed(
                lambda: kc.k_center_numpy(X, lab, budget, blas_dtype=np.float64)[0], slow_repeats
            )
            row["numpy_blas_f32"] = timed(
                lambda: kc.k_center_numpy(X, lab, budget, blas_dtype=np.float32)[0], slow_repeats
            )
        _compare(row)
        return row

    result["dims"] = [measure(dim) for dim in dims]
    return result


def _compare(row: dict) -> None:
    """Agreement with the fast path's picks and speed ratios, in place; drops picks."""
    ref = row["lazy"]["picks"]
    for name in PATHS[1:]:
        if name in row:
            picks = row[name].pop("picks")
            row[name]["identical_to_lazy"] = bool(np.array_equal(picks, ref[: len(picks)]))
            full = len(picks) == len(ref)
            row[name]["lazy_speedup"] = row[name]["seconds"] / row["lazy"]["seconds"] if full else None
    row["lazy"].pop("picks")
    exact = [row[name]["identical_to_lazy"] for name in ("torch", "numpy_svp") if name in row]
    row["all_identical"] = all(exact)


def machine() -> dict:
    """engine.machine's record plus the library versions this benchmark depends on."""
    import faiss

    return {**machine_info(), "numpy": np.__version__, "faiss": faiss.__version__}


def print_kcenter(result: dict) -> None:
    """Print `bench_kcenter`'s result as a table, one block per width."""
    m = result["machine"]
    print(
        f"k-center greedy: N={result['n']:,}, {result['n_labeled']:,} labeled, budget {result['budget']:,}; "
        f"{m['cpu']} x{m['cores']} cores, load {m['load_average_1min']:.1f}, GPU {m['gpu'] or 'none'}, "
        f"torch on {result['torch_device']}"
    )
    for row in result["dims"]:
        print(f"\nD={row['dim']} (embeddings {row['embeddings_mb']:.0f} MB)")
        print(f"  {'path':<32}{'median s':>10}{'runs':>6}{'slower x':>10}{'peak RSS MB':>13}  same picks")
        for name, label in zip(
            PATHS,
            (
                "faiss + lazy bounds",
                f"torch ({result['torch_device']})",
                "numpy, SVP's way (exact)",
                "numpy, BLAS f64",
                "numpy, BLAS f32",
            ),
            strict=True,
        ):
            if name not in row:
                continue
            r = row[name]
            rss = "n/a" if r["rss_peak_mb"] is None else f"{r['rss_peak_mb']:.1f}"
            speedup = r.get("lazy_speedup", 1.0)
            slower = "-" if speedup is None else f"{speedup:.1f}"
            if r.get("budget", result["budget"]) != result["budget"]:
                label = f"{label}, {r['budget']} picks"
            same = "reference" if name == "lazy" else ("yes" if r["identical_to_lazy"] else "NO")
            print(f"  {label:<32}{r['seconds']:>10.3f}{len(r['runs']):>6}{slower:>10}{rss:>13}  {same}")
        print(
            f"  fast path traced peak (NumPy + Python): {row['lazy']['traced_peak_mb']:.1f} MB; "
            f"picks identical across exact paths: {'yes' if row['all_identical'] else 'NO'}"
        )


def run_kcenter_bench(args: argparse.Namespace) -> dict:
    """Run benchmark (a) from parsed `engine.cli.add_kcenter_arguments` options: print, maybe save, return."""
    result = bench_kcenter(
        n=args.n,
        dims=tuple(args.dims),
        n_labeled=args.labeled,
        budget=args.budget,
        repeats=args.repeats,
        slow_repeats=args.slow_repeats,
        torch_device=args.torch_device,
        torch_cpu_budget=args.torch_cpu_budget,
        seed=args.seed,
        baselines=not args.no_baselines,
    )
    print_kcenter(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_select", description=__doc__.splitlines()[0])
    add_kcenter_arguments(parser)
    return run_kcenter_bench(parser.parse_args(argv))


if __name__ == "__main__":
    main()
