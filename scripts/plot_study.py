"""Turn the SVP study's JSON results into tables, checks and plots.

Reads `docs/svp-study/results/*.json` (one `python -m engine simulate` run
each), writes `accuracy.png` and `runtime.png` beside them, and rewrites the
generated block of `docs/svp-study.md` (between the GENERATED markers), leaving
the hand-written text around it alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[1]
STUDY_DIR = REPO / "docs" / "svp-study"
DOC = REPO / "docs" / "svp-study.md"
BEGIN, END = "<!-- GENERATED: scripts/plot_study.py -->", "<!-- END GENERATED -->"


def load_runs(results: Path) -> dict[tuple[str, str], list[dict]]:
    """Group run JSONs by (strategy, selector)."""
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in sorted(results.glob("*__seed*.json")):
        run = json.loads(path.read_text())
        settings = run["settings"]
        runs[(settings["strategy"], settings["selector"])].append(run)
    return runs


def selection_seconds(run: dict) -> float:
    """Proxy (or target) train + score + select, summed over the selection rounds."""
    return sum((r.get("train_s") or 0) + (r.get("score_s") or 0) + (r.get("select_s") or 0) for r in run["rounds"])


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    if not values:
        return "–"
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def accuracy_by_budget(runs: list[dict], key: str) -> dict[int, list[float]]:
    """labeled count -> accuracies (one per seed) of `key` in the round rows."""
    table: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for row in run["rounds"]:
            if row.get(key) is not None:
                table[row["labeled"]].append(row[key])
        if key == "target_test_acc" and run.get("target"):
            target = run["target"]
            if target["labeled"] not in {r["labeled"] for r in run["rounds"] if r.get(key) is not None}:
                table[target["labeled"]].append(target["test_acc"])
    return dict(sorted(table.items()))


def budgets_of(runs: dict[tuple[str, str], list[dict]]) -> list[int]:
    return sorted({n for group in runs.values() for n in accuracy_by_budget(group, "target_test_acc")})


def component_seconds(run: dict, part: str) -> float:
    return sum(row.get(part) or 0 for row in run["rounds"])


def speedup(runs, strategy: str, selector: str) -> str:
    """Target-selector runtime over this row's runtime, for the proxy rows that have a target twin."""
    twin = (strategy, "target")
    if selector != "proxy" or twin not in runs:
        return "–"
    proxy = statistics.fmean(selection_seconds(run) for run in runs[(strategy, selector)])
    target = statistics.fmean(selection_seconds(run) for run in runs[twin])
    return f"{target / proxy:.1f}×"


def results_table(runs: dict[tuple[str, str], list[dict]]) -> list[str]:
    """SVP Table 2's shape: target accuracy at each budget, selection runtime, speed-up."""
    budgets = budgets_of(runs)
    lines = [
        "| strategy | selector | seeds | "
        + " | ".join(f"{n} labels" for n in budgets)
        + " | selection runtime (s) | speed-up |",
        "|---|---|---|" + "---|" * len(budgets) + "---|---|",
    ]
    for (strategy, selector), group in sorted(runs.items()):
        curve = accuracy_by_budget(group, "target_test_acc")
        runtime = [selection_seconds(run) for run in group]
        lines.append(
            f"| {strategy} | {selector} | {len(group)} | "
            + " | ".join(fmt(curve.get(n, []), 100) for n in budgets)
            + f" | {fmt(runtime, digits=0)} | {speedup(runs, strategy, selector)} |"
        )
    return lines


def runtime_table(runs: dict[tuple[str, str], list[dict]]) -> list[str]:
    lines = ["| strategy | selector | train (s) | score (s) | select (s) | in all (s) |", "|---|---|---|---|---|---|"]
    for (strategy, selector), group in sorted(runs.items()):
        parts = [
            fmt([component_seconds(run, part) for run in group], digits=1)
            for part in ("train_s", "score_s", "select_s")
        ]
        total = fmt([selection_seconds(run) for run in group], digits=1)
        lines.append(f"| {strategy} | {selector} | " + " | ".join(parts) + f" | {total} |")
    return lines


def selector_curve_table(runs: dict[tuple[str, str], list[dict]]) -> list[str]:
    budgets = sorted({n for group in runs.values() for n in accuracy_by_budget(group, "proxy_test_acc")})
    lines = [
        "| strategy | selector | " + " | ".join(f"{n} labels" for n in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    for (strategy, selector), group in sorted(runs.items()):
        curve = accuracy_by_budget(group, "proxy_test_acc")
        lines.append(f"| {strategy} | {selector} | " + " | ".join(fmt(curve.get(n, []), 100) for n in budgets) + " |")
    return lines


def mean_acc(runs, key, budget: int) -> float | None:
    values = accuracy_by_budget(runs.get(key, []), "target_test_acc").get(budget)
    return statistics.fmean(values) * 100 if values else None


def compare_line(runs, text: str, mine, other, budgets: list[int], tolerance: float) -> str:
    """'text: 2000: a vs b (+d); ... — holds/does NOT hold at the final budget (k of n budgets)'."""
    parts, held = [], []
    for n in budgets:
        a, b = mean_acc(runs, mine, n), mean_acc(runs, other, n)
        if a is None or b is None:
            continue
        parts.append(f"{n}: {a:.1f} vs {b:.1f} ({a - b:+.1f})")
        held.append(a - b >= tolerance)
    if not held:
        return f"- {text}: no budget with both figures."
    verdict = "holds" if held[-1] else "does NOT hold"
    return (
        f"- {text}: " + "; ".join(parts) + f" — {verdict} at the final budget "
        f"(holds at {sum(held)} of {len(held)} budgets)."
    )


def checks(runs: dict[tuple[str, str], list[dict]]) -> list[str]:
    """The paper's expectations, stated against our numbers, at every budget after the first round."""
    budgets = [n for n in budgets_of(runs) if n > min(budgets_of(runs))] or budgets_of(runs)

    def runtime(key):
        return statistics.fmean(selection_seconds(run) for run in runs[key])

    lines = []
    for strategy in ("least_confidence", "kcenter"):
        if (strategy, "proxy") in runs and ("random", "proxy") in runs:
            lines.append(
                compare_line(
                    runs,
                    f"{strategy} via proxy ≥ random (target acc. %)",
                    (strategy, "proxy"),
                    ("random", "proxy"),
                    budgets,
                    0.0,
                )
            )
    for strategy in ("least_confidence", "kcenter"):
        proxy, target = (strategy, "proxy"), (strategy, "target")
        if proxy in runs and target in runs:
            lines.append(
                compare_line(
                    runs,
                    f"{strategy}: proxy selection within 1 point of target selection, or better",
                    proxy,
                    target,
                    budgets,
                    -1.0,
                )
            )
            ratio = runtime(target) / runtime(proxy)
            verdict = "holds" if ratio >= 3 else "does NOT hold"
            lines.append(
                f"- {strategy}: proxy selection ≥ 3× faster: target/proxy runtime "
                f"{runtime(target):.0f} s / {runtime(proxy):.0f} s = {ratio:.2f}× — {verdict}."
            )
    return lines


def plot_accuracy(runs, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    single_budget = all(len(accuracy_by_budget(g, "target_test_acc")) <= 1 for g in runs.values())
    if single_budget:
        plot_final_bars(axes[1], runs)
    for (strategy, selector), group in sorted(runs.items()):
        style = "-" if selector == "proxy" else "--"
        keys = ("proxy_test_acc",) if single_budget else ("proxy_test_acc", "target_test_acc")
        for ax, key in zip(axes, keys, strict=False):  # one axis per key, or more
            curve = accuracy_by_budget(group, key)
            if curve:
                xs = list(curve)
                ax.errorbar(
                    xs,
                    [mean_std(v)[0] * 100 for v in curve.values()],
                    yerr=[mean_std(v)[1] * 100 for v in curve.values()],
                    linestyle=style,
                    marker="o",
                    capsize=3,
                    label=f"{strategy} ({selector})",
                )
    axes[0].set_title("selector model test accuracy")
    axes[1].set_title("target test accuracy" + (" at the final budget" if single_budget else ""))
    for ax in axes[:1] if single_budget else axes:
        ax.set_xlabel("labels")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0 if single_budget else 1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_final_bars(ax, runs) -> None:
    """Target accuracy at the final budget as bars (mean, std over seeds) when no curve exists."""
    names = [f"{strategy}\n({selector})" for strategy, selector in sorted(runs)]
    stats = [mean_std([run["target"]["test_acc"] * 100 for run in runs[key]]) for key in sorted(runs)]
    ax.bar(names, [m for m, _ in stats], yerr=[s for _, s in stats], capsize=3, color="tab:blue", alpha=0.7)
    ax.set_ylim(min(m for m, _ in stats) - 5, max(m for m, _ in stats) + 5)
    ax.tick_params(axis="x", labelsize=7)


def plot_runtime(runs, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for (strategy, selector), group in sorted(runs.items()):
        per_round = defaultdict(list)
        for run in group:
            for row in run["rounds"]:
                if row.get("train_s") is not None:
                    per_round[row["labeled"]].append(row["train_s"] + row["score_s"] + row["select_s"])
        if per_round:
            xs = sorted(per_round)
            ax.plot(
                xs,
                [statistics.fmean(per_round[x]) for x in xs],
                marker="o",
                linestyle="-" if selector == "proxy" else "--",
                label=f"{strategy} ({selector})",
            )
    ax.set_xlabel("labels at the start of the round")
    ax.set_ylabel("seconds (train + score + select)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def training(settings: dict, stage: str) -> str:
    """How a stage trained, in words: its training level or fixed steps (older runs: epochs)."""
    if settings.get(f"{stage}_steps"):
        return f"{settings[f'{stage}_steps']} steps"
    if f"{stage}_training" in settings:
        return f"{settings[f'{stage}_training']} training"
    return f"{settings.get(f'{stage}_epochs', '?')} epochs"


def generated_block(runs, study_run: dict | None) -> str:
    lines = [BEGIN, ""]
    if study_run:
        lines += [f"Machine: {study_run['machine']}. Profile `{study_run['profile']}`.", ""]
    all_runs = [run for group in runs.values() for run in group]
    settings = all_runs[0]["settings"]
    lines += [
        f"Settings of every run: proxy `{settings['proxy']}` ({training(settings, 'proxy')}), "
        f"target `{settings['target']}` ({training(settings, 'target')}), initial {settings['initial']}, "
        f"rounds of {settings['round_size']}, budget {settings['budget']}, pool {settings['pool_size']}, "
        f"test set {settings['test_size']}. Runs: {len(all_runs)}; their summed running time: "
        f"{sum(run['total_s'] for run in all_runs) / 60:.0f} min"
        + (
            f"; the last `scripts/svp_study.py` invocation took {study_run['wall_s_this_invocation'] / 60:.0f} min"
            if study_run
            else ""
        )
        + ".",
        "",
    ]
    lines += [
        "### Target test accuracy (%) by labels, and selection runtime (mean ± std over seeds)",
        "",
        "Selection runtime: the selector's train + score + select, summed over the selection rounds. "
        "Speed-up: the target-selector row's runtime over the proxy-selector row's.",
        "",
    ]
    lines += results_table(runs)
    lines += ["", "### Selection runtime by part (s, summed over rounds)", "", *runtime_table(runs)]
    lines += ["", "### Selector model test accuracy (%) by labels", "", *selector_curve_table(runs)]
    lines += ["", "### The paper's expectations against our figures", "", *checks(runs)]
    lines += ["", "![accuracy](svp-study/accuracy.png)", "", "![runtime per round](svp-study/runtime.png)", "", END]
    return "\n".join(lines)


def write_doc(block: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Selection via Proxy: our study\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(head + block + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=STUDY_DIR / "results")
    args = parser.parse_args(argv)
    runs = load_runs(args.results)
    if not runs:
        raise SystemExit(f"no results in {args.results}: run scripts/svp_study.py first")
    study_run_path = args.results / "study_run.json"
    study_run = json.loads(study_run_path.read_text()) if study_run_path.exists() else None
    plot_accuracy(runs, STUDY_DIR / "accuracy.png")
    plot_runtime(runs, STUDY_DIR / "runtime.png")
    write_doc(generated_block(runs, study_run))
    print(f"wrote {DOC} and plots in {STUDY_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
