"""Run the Selection-via-Proxy study: every strategy and selector over several seeds.

Each run is one `python -m engine simulate` call whose JSON lands in
`docs/svp-study/results/`. Finished runs are skipped, so an interrupted study
resumes where it stopped. `scripts/plot_study.py` turns the results into the
tables and plots of `docs/svp-study.md`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from engine.machine import machine_description

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets" / "cifar10"
RESULTS = REPO / "docs" / "svp-study" / "results"

# (strategy, selector): the SVP comparison grid of issue 5.
GRID = [
    ("random", "proxy"),
    ("least_confidence", "proxy"),
    ("kcenter", "proxy"),
    ("least_confidence", "target"),
    ("kcenter", "target"),
]

# Models and training levels (engine.config.LEVELS). The CPU profile is the app's CPU
# defaults: a smaller target than the paper and time-capped training, stated in
# docs/svp-study.md. The GPU profile is the paper's models, trained thoroughly.
PROFILES = {
    "cpu": dict(proxy="proxy_tiny", target="resnet20", proxy_training="balanced", target_training="balanced"),
    "gpu": dict(proxy="resnet20", target="resnet18", proxy_training="thorough", target_training="thorough"),
}


def unpack_cifar(dest: Path) -> Path:
    """Unzip the shared CIFAR-10 subset into `dest` (ImageFolder: train/, test/)."""
    if not (dest / "train").is_dir():
        for name in ("train.zip", "test.zip"):
            with zipfile.ZipFile(DATASETS / name) as archive:
                archive.extractall(dest)
    return dest


def run_name(strategy: str, selector: str, seed: int) -> str:
    return f"{strategy}__{selector}__seed{seed}"


def simulate_command(data: Path, out: Path, strategy: str, selector: str, seed: int, args) -> list[str]:
    profile = PROFILES[args.profile]
    return [
        sys.executable,
        "-m",
        "engine",
        "simulate",
        "--data",
        str(data),
        "--out",
        str(out),
        "--strategy",
        strategy,
        "--selector",
        selector,
        "--seed",
        str(seed),
        "--initial",
        str(args.initial),
        "--round-size",
        str(args.round_size),
        "--budget",
        str(args.budget),
        "--proxy",
        profile["proxy"],
        "--target",
        profile["target"],
        "--proxy-training",
        profile["proxy_training"],
        "--target-training",
        profile["target_training"],
        "--device",
        args.device,
    ] + (["--eval-every-round"] if args.eval_every_round else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--initial", type=int, default=1000)
    parser.add_argument("--round-size", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=5000)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--final-only",
        dest="eval_every_round",
        action="store_false",
        help="test the target only after the final round (default: after every round)",
    )
    parser.add_argument("--data", type=Path, help="ImageFolder root (default: unzip the shared subset)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    args.results.mkdir(parents=True, exist_ok=True)
    data = args.data or unpack_cifar(Path(tempfile.gettempdir()) / "svp-study-cifar10")
    started = time.perf_counter()
    for seed in args.seeds:
        for strategy, selector in GRID:
            out = args.results / f"{run_name(strategy, selector, seed)}.json"
            if out.exists():
                print(f"skip {out.name} (done)", flush=True)
                continue
            print(f"run {out.name}", flush=True)
            subprocess.run(simulate_command(data, out, strategy, selector, seed, args), cwd=REPO, check=True)
    total = time.perf_counter() - started
    (args.results / "study_run.json").write_text(
        json.dumps(
            {
                "profile": args.profile,
                "settings": PROFILES[args.profile],
                "seeds": args.seeds,
                "initial": args.initial,
                "round_size": args.round_size,
                "budget": args.budget,
                "eval_every_round": args.eval_every_round,
                "wall_s_this_invocation": round(total, 1),
                "machine": machine_description(),
            },
            indent=2,
        )
    )
    print(f"study finished in {total / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
