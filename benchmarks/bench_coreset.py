"""The core-set study (issue 24, part 8): Selection via Proxy's Table 3, DeepCore's Table 1 and DynaMS in shape.

On an ImageFolder root holding train/<class>/ (the labeled set) and
test/<class>/, for each seed, all in one run:

- one selector run per selector: the proxy (or the target as its own
  selector, SVP's baseline) trains once on every label while
  `engine.example_stats` records forgetting, EL2N and GraNd, then scores the
  set (`score_labeled_set`); every method x keep selects from those scores
  (class-balanced, DeepCore's setting);
- the target trained on each selected subset, on all of the data, and on a
  class-balanced random subset at each keep;
- with table 3, DynaMS (`engine.training.dynamic`, when it exists) at an
  average keep of 0.6.

The target's plan is counted in passes over its training set, never capped in
seconds: a subset of half the data trains half the steps (a time cap would
make it train as long as all data and save nothing). The proxy's plan is
passes too (no step floor or ceiling, no time cap). End to end time of a row
= selector training + scoring + selection + target training; each row counts
its selector run in full, as if it were run alone; random = selection +
target; all data = target.

    .venv/bin/python -m benchmarks.bench_coreset --data ROOT [--train-per-class N] [--seeds 0 1 2]
        [--tables 1 2 3] [--json docs/coreset/NAME.json] [--doc docs/coreset.md]

`--resume` skips the rows --json already holds; `--render` only rewrites the
tables from --json. Compare rows of one run: the machine may be shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import storage
from engine.config import LEVELS, TRAINING_LEVELS, StageConfig, scaled_to_subset, stage_config
from engine.coreset import CoresetConfig, LabeledData, _settings, load_labeled_data, train_target
from engine.example_stats import score_labeled_set
from engine.machine import machine_description, machine_info
from engine.models import build_model
from engine.names import COLD_START
from engine.pool_cache import channel_stats
from engine.precision import use_bf16
from engine.selection.balance import class_balanced
from engine.selection.coreset import labeled_pool
from engine.selection.strategies import STRATEGIES, random_sample
from engine.train import TrainingFailed, best_device, evaluate, plan, train

SVP_METHODS = ("forgetting", "entropy", "kcenter")
SVP_KEEPS = (0.3, 0.5, 0.7)
KEEPS = (0.1, 0.3, 0.5, 0.7, 0.9)
DYNAMIC_KEEP = 0.6
SELECTORS = ("proxy", "target")
DYNAMIC_MODULE = "engine.training.dynamic"
# The tables' times: CPU seconds of this process. Pinned to one core with one thread, that is the time
# the run takes on a core of its own, which other work on a shared machine does not inflate (the wall
# times, which it does, are in the JSON: *_s beside *_cpu_s).
CLOCK = "e2e_cpu_s"
MAX_STEPS = 10**7  # no cap: the plan is passes x steps per pass, whatever the size


# cold-start strategies pick by typicality in a backbone's embeddings; hybrid starts as typiclust
NOT_LABELED_SET = (*COLD_START, "hybrid")


def methods_for_labeled_sets() -> list[str]:
    """Every registered method that selects from a labeled set: all but random (the baseline) and the
    cold-start ones (they need a backbone's embeddings)."""
    return [name for name in STRATEGIES if name != "random" and name not in NOT_LABELED_SET]


# ---------------------------------------------------------------- data


def load_data(args: argparse.Namespace) -> LabeledData:
    """The labeled and test sets, each cut to a balanced sample of --train-per-class / --test-per-class
    (drawn once with --sample-seed: every seed trains on the same images)."""
    config = CoresetConfig(data=args.data, out=Path(os.devnull), image_size=args.image_size)
    data = load_labeled_data(config)
    rng = np.random.default_rng(args.sample_seed)
    kept = per_class_sample(data.labels, args.train_per_class, rng)
    test = per_class_sample(data.test_labels, args.test_per_class, rng)
    if kept is None and test is None:
        return data
    images = data.images if kept is None else data.images[kept]
    labels = data.labels if kept is None else data.labels[kept]
    mean, std = channel_stats(images)
    return dataclasses.replace(
        data,
        images=images,
        labels=labels,
        test_images=data.test_images if test is None else data.test_images[test],
        test_labels=data.test_labels if test is None else data.test_labels[test],
        normalization=(tuple(mean), tuple(std)),
    )


def per_class_sample(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray | None:
    """Sorted positions of at most `per_class` examples of each class, or None for all (0)."""
    if not per_class:
        return None
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


# ---------------------------------------------------------------- stages


def stages(args: argparse.Namespace, data: LabeledData, seed: int) -> dict[str, StageConfig]:
    """The proxy's and the target's model and plan for `seed`: passes, with no time cap and no step floor
    or ceiling, so a subset trains the same passes as all data, in fewer steps (and the proxy's cost is
    its passes, not the level's 200-step floor)."""
    config = CoresetConfig(
        data=args.data,
        out=Path(os.devnull),
        proxy=args.proxy,
        target=args.target,
        proxy_training=args.proxy_training,
        target_training=args.target_training,
        seed=seed,
        device=args.device,
    )
    settings = _settings(config, data.classes)
    proxy, target = stage_config(settings, "proxy"), stage_config(settings, "target")
    proxy_passes = args.proxy_passes or LEVELS["proxy"][args.proxy_training].passes
    target_passes = args.target_passes or LEVELS["target"][args.target_training].passes
    proxy_train = dataclasses.replace(
        proxy.train, passes=proxy_passes, steps=args.proxy_steps, min_steps=1, max_steps=MAX_STEPS, max_seconds=None
    )
    # check=False: a target that learned nothing from a tiny subset is a result (its accuracy), not an error
    target_train = dataclasses.replace(
        target.train,
        passes=target_passes,
        steps=0,
        min_steps=1,
        max_steps=MAX_STEPS,
        max_seconds=None,
        check=False,
    )
    return {
        "proxy": StageConfig(proxy.model_name, proxy_train),
        "target": StageConfig(target.model_name, target_train),
    }


def run_selector(stage: StageConfig, data: LabeledData, seed: int):
    """Train the selector once on every label with the statistics recorded and score the set: (pool, row)."""
    model = build_model(stage.model_name, len(data.classes), data.size, seed=seed)
    cpu = time.process_time()
    scored = score_labeled_set(model, data.images, data.labels, stage.train, data.normalization)
    cpu = time.process_time() - cpu
    row = {
        "model": stage.model_name,
        "steps": scored.steps,
        "train_s": round(scored.train_s, 3),
        "score_s": round(scored.score_s, 3),
        "cpu_s": round(cpu, 3),
        "test_acc": round(evaluate(model, data.test_images, data.test_labels, data.normalization), 4),
    }
    return labeled_pool(scored, data.labels), row


def target_row(stage: StageConfig, data: LabeledData, picks: np.ndarray, subset_plan: str = "own") -> dict:
    """The target trained on `picks`: test accuracy, seconds (wall: training; CPU: training and the test
    pass), size, batch and steps (or why it failed). `subset_plan` "own": the target's passes over the
    subset, planned on the subset alone (the study's plan, as the tables of 2026-12-04 ran); "share": the
    subset's share of the steps all the data is planned (`engine.coreset.train_target`, the product's since
    those tables). They differ under 1,024 images, where a subset's batch is smaller than all data's."""
    n = len(data.labels)
    own = subset_plan == "own" or len(picks) == n
    batch, steps = plan(len(picks), stage.train if own else scaled_to_subset(stage.train, n, len(picks)))
    cpu = time.process_time()
    try:
        trained = _train_own_plan(stage, data, picks) if own else train_target(stage, data, picks)
    except TrainingFailed as exc:
        return {"test_acc": None, "target_s": None, "n": len(picks), "batch": batch, "steps": steps, "failed": str(exc)}
    return {
        "test_acc": trained["test_acc"],
        "target_s": trained["seconds"],
        "target_cpu_s": round(time.process_time() - cpu, 3),
        "n": len(picks),
        "batch": batch,
        "steps": steps,
    }


def _train_own_plan(stage: StageConfig, data: LabeledData, picks: np.ndarray) -> dict:
    """`train_target` without the subset's share: `stage.train` planned on the picks alone."""
    model = build_model(stage.model_name, len(data.classes), data.size, seed=stage.train.seed)
    started = time.perf_counter()
    train(model, data.images[picks], data.labels[picks], stage.train, data.normalization)
    seconds = time.perf_counter() - started
    accuracy = evaluate(model, data.test_images, data.test_labels, data.normalization)
    return {"test_acc": round(accuracy, 4), "seconds": round(seconds, 2), "n": len(picks)}


def select(method, pool, keep_n: int, seed: int) -> tuple[np.ndarray, float, float]:
    """Class-balanced `method` (a name or a strategy) picks `keep_n` of the pool with rng(seed);
    (positions, wall seconds, CPU seconds)."""
    started, cpu = time.perf_counter(), time.process_time()
    strategy = STRATEGIES[method] if isinstance(method, str) else method
    picks = class_balanced(strategy)(pool, [], keep_n, rng=np.random.default_rng(seed))
    return picks, time.perf_counter() - started, time.process_time() - cpu


def keep_count(keep: float, n: int) -> int:
    return max(1, round(keep * n))


# ---------------------------------------------------------------- the plan of one run


def requested(args: argparse.Namespace) -> list[dict]:
    """Every row the run must hold, as keys (kind, seed, selector, method, keep), in running order:
    per seed the all-data baseline, then table 1, then table 2, then DynaMS; random at each keep
    before the methods at that keep."""
    rows: list[dict] = []
    for seed in args.seeds:
        seed_rows = [key("full", seed)]
        wanted: list[tuple[float, str, str]] = []
        if 1 in args.tables:
            wanted += [(k, m, s) for k in args.svp_keeps for s in args.svp_selectors for m in args.svp_methods]
        if 2 in args.tables:
            wanted += [(k, m, "proxy") for k in args.keeps for m in args.methods]
        for keep, method, selector in wanted:
            random_key = key("random", seed, keep=keep)
            if random_key not in seed_rows:
                seed_rows.append(random_key)
            subset_key = key("subset", seed, selector, method, keep)
            if subset_key not in seed_rows:
                seed_rows.append(subset_key)
        if 3 in args.tables:
            dynamic = [key("random", seed, keep=DYNAMIC_KEEP), key("subset", seed, "proxy", "forgetting", DYNAMIC_KEEP)]
            seed_rows += [k for k in dynamic if k not in seed_rows] + [key("dynamic", seed, keep=DYNAMIC_KEEP)]
        rows += seed_rows
    return rows


def key(kind: str, seed: int, selector: str | None = None, method: str | None = None, keep: float | None = None):
    return {"kind": kind, "seed": seed, "selector": selector, "method": method, "keep": keep}


def row_key(row: dict) -> tuple:
    return tuple(row.get(k) for k in ("kind", "seed", "selector", "method", "keep"))


# ---------------------------------------------------------------- running


def run(
    args: argparse.Namespace, data: LabeledData, done: list[dict], save: Callable[[list[dict]], None]
) -> list[dict]:
    """Measure every requested row not already in `done`; `save` gets all rows after each one."""
    rows = list(done)
    have = {row_key(r) for r in rows}
    todo = [k for k in requested(args) if row_key(k) not in have]
    say = args.progress
    say(f"{len(todo)} rows to measure ({len(have)} already done)")
    for seed in args.seeds:
        mine = [k for k in todo if k["seed"] == seed]
        if not mine:
            continue
        config = stages(args, data, seed)
        selectors_needed = {k["selector"] for k in mine if k["kind"] == "subset"}
        pools, selector_rows = {}, {}
        for selector in SELECTORS:
            if selector not in selectors_needed:
                continue
            say(f"seed {seed}: {selector} ({config[selector].model_name}) trains on {len(data.labels)} and scores")
            pools[selector], selector_rows[selector] = run_selector(config[selector], data, seed)
            row = {**key("selector", seed, selector), **selector_rows[selector]}
            rows = [r for r in rows if row_key(r) != row_key(row)] + [row]
            save(rows)
            say(f"  {_describe(row)}")
        for k in mine:
            row = measure(k, args, data, config, pools, selector_rows)
            rows.append(row)
            save(rows)
            say(f"  {_describe(row)}")
    return rows


def measure(k: dict, args, data: LabeledData, config: dict, pools: dict, selector_rows: dict) -> dict:
    seed, keep, n = k["seed"], k["keep"], len(data.labels)
    target = config["target"]
    if k["kind"] == "full":
        row = target_row(target, data, np.arange(n))
        return {**k, **row, "e2e_s": row["target_s"], "e2e_cpu_s": row.get("target_cpu_s")}
    if k["kind"] == "random":
        picks, select_s, select_cpu = select(random_sample, pools_any(pools, data), keep_count(keep, n), seed + 1)
        row = target_row(target, data, picks, args.subset_plan)
        return {
            **k,
            **row,
            "select_s": round(select_s, 4),
            "select_cpu_s": round(select_cpu, 4),
            "e2e_s": _sum(select_s, row["target_s"]),
            "e2e_cpu_s": _sum(select_cpu, row.get("target_cpu_s")),
        }
    if k["kind"] == "subset":
        picks, select_s, select_cpu = select(k["method"], pools[k["selector"]], keep_count(keep, n), seed)
        chosen = selector_rows[k["selector"]]
        row = target_row(target, data, picks, args.subset_plan)
        selector_s = chosen["train_s"] + chosen["score_s"]
        return {
            **k,
            **row,
            "selector_s": round(selector_s, 3),
            "selector_cpu_s": chosen["cpu_s"],
            "select_s": round(select_s, 4),
            "select_cpu_s": round(select_cpu, 4),
            "e2e_s": _sum(selector_s, select_s, row["target_s"]),
            "e2e_cpu_s": _sum(chosen["cpu_s"], select_cpu, row.get("target_cpu_s")),
        }
    if k["kind"] == "dynamic":
        return {**k, **dynamic_row(target, data, keep)}
    raise ValueError(f"unknown row kind {k['kind']!r}")


def pools_any(pools: dict, data: LabeledData):
    """A pool for random selection: any selector's, else the labels alone (random reads only the labels)."""
    if pools:
        return next(iter(pools.values()))
    from engine.score import PoolScores

    n = len(data.labels)
    return PoolScores(
        np.full((n, len(data.classes)), 1 / len(data.classes), np.float32),
        np.zeros((n, 1), np.float32),
        labels=data.labels,
    )


def dynamic_available() -> bool:
    try:
        return importlib.util.find_spec(DYNAMIC_MODULE) is not None
    except ModuleNotFoundError:
        return False


def dynamic_row(target: StageConfig, data: LabeledData, keep: float) -> dict:
    """The target trained on all the data with DynaMS at an average keep of `keep` (engine.training.dynamic):
    the same passes as full training, each over the subset of the moment, so about `keep` of its steps."""
    if not dynamic_available():
        return {"test_acc": None, "target_s": None, "e2e_s": None, "failed": f"{DYNAMIC_MODULE} does not exist yet"}
    from engine.training.dynamic import DynamicKeep

    sampler = DynamicKeep(keep)
    model = build_model(target.model_name, len(data.classes), data.size, seed=target.train.seed)
    batch, _ = plan(len(data.labels), target.train)
    started, cpu = time.perf_counter(), time.process_time()
    try:
        train(model, data.images, data.labels, target.train, data.normalization, sampler=sampler)
    except TrainingFailed as exc:
        return {"test_acc": None, "target_s": None, "e2e_s": None, "failed": str(exc)}
    seconds = time.perf_counter() - started
    accuracy = round(evaluate(model, data.test_images, data.test_labels, data.normalization), 4)
    cpu = time.process_time() - cpu  # training and the test pass, as target_row's
    report = sampler.report
    return {
        "test_acc": accuracy,
        "target_s": round(seconds, 2),
        "target_cpu_s": round(cpu, 3),
        "e2e_s": round(seconds, 2),
        "e2e_cpu_s": round(cpu, 3),
        "n": len(data.labels),
        "batch": batch,
        "steps": report.steps,
        "full_steps": report.full_steps,
        "selections": len(report.selections),
        "selection_s": round(report.selection_seconds, 3),
    }


def _sum(*seconds) -> float | None:
    return None if any(s is None for s in seconds) else round(sum(seconds), 3)


def _describe(row: dict) -> str:
    what = " ".join(str(row[k]) for k in ("kind", "selector", "method") if row.get(k))
    keep = f" keep {row['keep']:.0%}" if row.get("keep") else ""
    acc = "failed: " + row["failed"] if row.get("failed") else f"test {row['test_acc']:.3f}"
    extra = f" n {row['n']} {row['steps']} steps" if "n" in row else f" {row.get('steps', '?')} steps"
    seconds = row.get("e2e_s", row.get("train_s"))
    return f"seed {row['seed']} {what}{keep}:{extra} {acc} {seconds} s"


# ---------------------------------------------------------------- tables


def render(result: dict) -> str:
    """The markdown of one data set's tables from its JSON result (rows and runs)."""
    rows, meta = result["rows"], result["meta"]
    seeds = sorted({r["seed"] for r in rows})
    lines = [_header(meta, rows, seeds)]
    lines += ["", *table_svp(rows, meta), "", *table_deepcore(rows, meta), "", *table_dynamic(rows), ""]
    lines += goals(rows)
    return "\n".join(lines)


def _values(rows: list[dict], field: str = "test_acc", **match) -> list[float]:
    return [
        r[field]
        for r in rows
        if all(r.get(k) == v for k, v in match.items()) and r.get(field) is not None and not r.get("failed")
    ]


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _cell(values: list[float], scale: float = 100, digits: int = 1) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def _ratios(rows: list[dict], field: str = CLOCK, **match) -> list[float]:
    """End to end seconds (`field`) of the matching rows over the all-data target's of the same seed."""
    full = {r["seed"]: r[field] for r in rows if r["kind"] == "full" and r.get(field)}
    return [
        r[field] / full[r["seed"]]
        for r in rows
        if all(r.get(k) == v for k, v in match.items()) and r.get(field) and r["seed"] in full
    ]


def _time_cell(rows: list[dict], **match) -> str:
    minutes = [s / 60 for s in _values(rows, CLOCK, **match)]
    if not minutes:
        return "–"
    ratio = _ratios(rows, **match)
    return (
        f"{statistics.fmean(minutes):.2f} ({statistics.fmean(ratio):.2f}x)"
        if ratio
        else f"{statistics.fmean(minutes):.2f}"
    )


def _header(meta: dict, rows: list[dict], seeds: list[int]) -> str:
    data, run = meta["data"], meta["runs"][-1]
    machine = run["machine"]
    full = [r for r in rows if r["kind"] == "full"]
    selectors = {r["selector"]: r for r in rows if r["kind"] == "selector"}
    proxy = selectors.get("proxy", {})
    lines = [
        f"### {data['name']}: {data['n_train']} labeled"
        + (f" ({data['train_per_class']} per class)" if data["train_per_class"] else "")
        + f", {data['n_test']} test"
        + (f" ({data['test_per_class']} per class)" if data["test_per_class"] else "")
        + ", "
        f"{data['size']} px, {data['classes']} classes",
        "",
        f"Seeds {', '.join(map(str, seeds))} ({'mean ± std over seeds' if len(seeds) > 1 else 'one seed'}). "
        f"Target `{run['target_model']}`: {run['target_passes']:g} passes over its training set, no time cap "
        f"(all data: {full[0]['steps'] if full else '?'} steps of {full[0]['batch'] if full else '?'}). "
        f"Proxy `{run['proxy_model']}`: {run['proxy_passes']:g} passes"
        + (f" ({proxy['steps']} steps)" if proxy else "")
        + f". Machine: {machine['cpu']}, {machine['cores']} cores, {_pinned(meta['runs'])}, "
        f"torch {machine.get('torch')} with **{machine.get('torch_threads')} thread**, "
        f"{'no GPU' if not machine.get('gpu') else machine['gpu']}, bf16 {run['bf16']}; "
        f"load average {', '.join(str(r['machine']['load_average_1min']) for r in meta['runs'])} at the start of "
        f"each of the {len(meta['runs'])} invocation(s), {sum(r.get('wall_s') or 0 for r in meta['runs']) / 60:.0f} "
        "min of running in all. Times: CPU minutes of the run's process (one thread on one core: its time on a "
        "core of its own; the wall clock, which other work on the machine inflates, is in the JSON); ratios are "
        "against the target on all data of the same seed.",
    ]
    if selectors:
        accs = {s: _cell(_values(rows, kind="selector", selector=s)) for s in selectors}
        lines += [
            "",
            "Selectors trained on all labels (their own test accuracy %, CPU seconds training + scoring): "
            + "; ".join(
                f"{s} `{selectors[s]['model']}` {accs[s]} %, "
                f"{_mean(_values(rows, 'cpu_s', kind='selector', selector=s)) or 0:.1f} s"
                for s in selectors
            )
            + ".",
        ]
    return "\n".join(lines)


def _pinned(runs: list[dict]) -> str:
    """Where the invocations ran: one core each (the same or, listed in order, different ones), or not pinned."""
    placed = [tuple(run.get("affinity") or ()) for run in runs]
    if all(len(cores) == 1 for cores in placed):
        if len(set(placed)) == 1:
            return f"pinned to core {placed[0][0]}"
        return f"each invocation pinned to one core (cores {', '.join(str(cores[0]) for cores in placed)})"
    return "; ".join(f"on cores {', '.join(map(str, cores))}" if cores else "affinity unknown" for cores in placed)


def requested_in(meta: dict, table: int, field: str) -> list:
    """The union of `field` (keeps or methods) over the invocations that asked for `table`, in order."""
    out: list = []
    for run in meta["runs"]:
        if table in run["args"]["tables"]:
            out += [v for v in run["args"][field] if v not in out]
    return sorted(out) if field.endswith("keeps") else out


def table_svp(rows: list[dict], meta: dict) -> list[str]:
    keeps, methods = requested_in(meta, 1, "svp_keeps"), requested_in(meta, 1, "svp_methods")
    title = "#### SVP Table 3 in shape: target test accuracy (%) and end-to-end minutes (x all data)"
    if not keeps:
        return [title, "", "Not measured on this data set."]
    head = "| method | selector | " + " | ".join(f"{k:.0%} acc | {k:.0%} min" for k in keeps) + " |"
    lines = [title, "", head, "|" + "---|" * (2 + 2 * len(keeps))]
    measured = {r["selector"] for r in rows if r["kind"] == "subset"}
    for method in methods:
        for selector in [s for s in SELECTORS if s in measured]:
            cells = []
            for keep in keeps:
                match = dict(kind="subset", selector=selector, method=method, keep=keep)
                cells += [_cell(_values(rows, **match)), _time_cell(rows, **match)]
            lines.append(f"| {method} | {selector} | " + " | ".join(cells) + " |")
    cells = []
    for keep in keeps:
        cells += [_cell(_values(rows, kind="random", keep=keep)), _time_cell(rows, kind="random", keep=keep)]
    lines.append("| random (balanced) | – | " + " | ".join(cells) + " |")
    full = [_cell(_values(rows, kind="full")), _time_cell(rows, kind="full")] * len(keeps)
    lines.append("| all data | – | " + " | ".join(full) + " |")
    return lines


def table_deepcore(rows: list[dict], meta: dict) -> list[str]:
    keeps, methods = requested_in(meta, 2, "keeps"), requested_in(meta, 2, "methods")
    title = "#### DeepCore Table 1 in shape: target test accuracy (%) on the proxy's class-balanced selection"
    if not keeps:
        return [title, "", "Not measured on this data set."]
    means = {
        (m, k): _mean(_values(rows, kind="subset", selector="proxy", method=m, keep=k)) for m in methods for k in keeps
    }
    means.update({("random", k): _mean(_values(rows, kind="random", keep=k)) for k in keeps})
    best = {k: max((v for (m, kk), v in means.items() if kk == k and v is not None), default=None) for k in keeps}
    lines = [title, "", "| method | " + " | ".join(f"{k:.0%}" for k in keeps) + " | select s at 50 % |"]
    lines.append("|" + "---|" * (len(keeps) + 2))
    for method in [*methods, "random"]:
        cells = []
        for keep in keeps:
            match = (
                dict(kind="random", keep=keep)
                if method == "random"
                else dict(kind="subset", selector="proxy", method=method, keep=keep)
            )
            cell = _cell(_values(rows, **match))
            mean = means[(method, keep)]
            cells.append(
                f"**{cell}**" if mean is not None and best[keep] is not None and mean >= best[keep] - 1e-12 else cell
            )
        select_match = dict(kind="random" if method == "random" else "subset", keep=0.5)
        if method != "random":
            select_match.update(selector="proxy", method=method)
        select_s = _values(rows, "select_cpu_s", **select_match)
        lines.append(
            f"| {method} | " + " | ".join(cells) + f" | {_mean(select_s):.2f} |"
            if select_s
            else f"| {method} | " + " | ".join(cells) + " | – |"
        )
    lines.append("| all data | " + " | ".join([_cell(_values(rows, kind="full"))] * len(keeps)) + " | – |")
    target_min = [_cell([s / 60 for s in _values(rows, "target_cpu_s", kind="random", keep=k)], 1, 2) for k in keeps]
    lines.append("| *target training, min (random subset)* | " + " | ".join(target_min) + " | – |")
    lines += ["", "Bold: the best mean in each column (random included)."]
    return lines


def table_dynamic(rows: list[dict]) -> list[str]:
    title = f"#### DynaMS at an average keep of {DYNAMIC_KEEP:.0%}"
    dynamic = [r for r in rows if r["kind"] == "dynamic"]
    if not dynamic or all(r.get("failed") for r in dynamic):
        reason = dynamic[0]["failed"] if dynamic else "not requested in this run"
        return [title, "", f"Not measured yet ({reason})."]
    lines = [title, "", "| run | test acc % | end to end min (x all data) | target steps |", "|---|---|---|---|"]
    for label, match in (
        ("DynaMS (smallest margins, re-selected)", dict(kind="dynamic")),
        ("fixed random 60 %", dict(kind="random", keep=DYNAMIC_KEEP)),
        (
            "fixed forgetting 60 % (proxy)",
            dict(kind="subset", selector="proxy", method="forgetting", keep=DYNAMIC_KEEP),
        ),
        ("all data", dict(kind="full")),
    ):
        steps = _cell(_values(rows, "steps", **match), 1, 0)
        lines.append(f"| {label} | {_cell(_values(rows, **match))} | {_time_cell(rows, **match)} | {steps} |")
    selections = _values(rows, "selections", kind="dynamic")
    selection_s = _values(rows, "selection_s", kind="dynamic")
    lines += [
        "",
        f"DynaMS re-selected {_cell(selections, 1, 0)} times, scoring every training image each time: "
        f"{_cell(selection_s, 1, 1)} s of its training time. Its time is the target's only (no proxy).",
    ]
    return lines


def goals(rows: list[dict]) -> list[str]:
    """Part 8's goals on this machine, each met or not, from the means over seeds."""
    out = ["#### Goals of part 8 (means over seeds)", ""]
    at = dict(keep=0.5)
    forgetting = _mean(_values(rows, kind="subset", selector="proxy", method="forgetting", **at))
    random50 = _mean(_values(rows, kind="random", **at))
    full = _mean(_values(rows, kind="full"))
    ratio = _mean(_ratios(rows, kind="subset", selector="proxy", method="forgetting", **at))
    if forgetting is not None and random50 is not None and full is not None:
        out.append(
            _goal(
                "forgetting via the proxy at 50 % >= random 50 % + 1 point",
                forgetting * 100,
                random50 * 100 + 1,
                f"{forgetting:.1%} vs random {random50:.1%}",
            )
        )
        out.append(
            _goal(
                "... and within 1.5 points of all data",
                forgetting * 100,
                full * 100 - 1.5,
                f"{forgetting:.1%} vs all data {full:.1%}",
            )
        )
    if ratio is not None:
        wall = _mean(_ratios(rows, "e2e_s", kind="subset", selector="proxy", method="forgetting", **at)) or 0
        out.append(
            _goal(
                "... end to end in at most 0.7x the time of all data",
                -ratio,
                -0.7,
                f"{ratio:.2f}x in CPU time ({wall:.2f}x by the wall clock)",
            )
        )
    for method in SVP_METHODS:
        proxy = _mean(_values(rows, kind="subset", selector="proxy", method=method, **at))
        target = _mean(_values(rows, kind="subset", selector="target", method=method, **at))
        if proxy is not None and target is not None:
            out.append(
                _goal(
                    f"{method} at 50 %: proxy selection within 1 point of target selection (or better)",
                    proxy * 100,
                    target * 100 - 1,
                    f"{proxy:.1%} vs {target:.1%}",
                )
            )
    dynamic = _mean(_values(rows, kind="dynamic"))
    if dynamic is not None and full is not None:
        dyn_ratio = _mean(_ratios(rows, kind="dynamic")) or float("inf")
        out.append(
            _goal(
                "DynaMS at 0.6 within 1 point of all data",
                dynamic * 100,
                full * 100 - 1,
                f"{dynamic:.1%} vs {full:.1%}",
            )
        )
        out.append(_goal("DynaMS in at most 0.75x the time of all data", -dyn_ratio, -0.75, f"{dyn_ratio:.2f}x"))
    else:
        out.append("- DynaMS: not measured, so its goals are not met here.")
    return out


def _goal(text: str, value: float, bound: float, figures: str) -> str:
    return f"- {text}: {figures} — {'**met**' if value >= bound - 1e-9 else '**not met**'}"


# ---------------------------------------------------------------- files


def write_doc(doc: Path, name: str, markdown: str) -> None:
    """Put `markdown` between this data set's markers in `doc` (appended at the end when they are missing)."""
    begin, end = f"<!-- BEGIN bench_coreset: {name} -->", f"<!-- END bench_coreset: {name} -->"
    text = doc.read_text() if doc.exists() else ""
    block = f"{begin}\n{markdown}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    with storage.atomic_write(doc) as tmp:
        tmp.write_text(text)


def save_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with storage.atomic_write(path) as tmp:
        tmp.write_text(json.dumps(result, indent=1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="ImageFolder root with train/<class>/ and test/<class>/"
    )
    parser.add_argument("--name", help="the data set's name in the docs (default: the folder's name)")
    parser.add_argument("--train-per-class", type=int, default=0, help="balanced sample of train/ (0 = all)")
    parser.add_argument("--test-per-class", type=int, default=0, help="balanced sample of test/ (0 = all)")
    parser.add_argument("--sample-seed", type=int, default=0, help="draws the samples, the same for every seed")
    parser.add_argument("--image-size", type=int, default=0, help="0 = picked from the images")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tables", type=int, nargs="+", default=[1, 2], choices=[1, 2, 3])
    parser.add_argument("--keeps", type=float, nargs="+", default=list(KEEPS), help="table 2")
    parser.add_argument("--svp-keeps", type=float, nargs="+", default=list(SVP_KEEPS), help="table 1")
    parser.add_argument("--methods", nargs="+", help="table 2 (default: every labeled-set method registered)")
    parser.add_argument("--svp-methods", nargs="+", default=list(SVP_METHODS), help="table 1")
    parser.add_argument(
        "--svp-selectors",
        nargs="+",
        choices=SELECTORS,
        default=list(SELECTORS),
        help="table 1: who selects (the target as its own selector costs a full target run per seed)",
    )
    parser.add_argument("--proxy", default="auto")
    parser.add_argument("--target", default="auto")
    parser.add_argument("--proxy-training", default="balanced", choices=TRAINING_LEVELS)
    parser.add_argument("--target-training", default="balanced", choices=TRAINING_LEVELS)
    parser.add_argument("--proxy-passes", type=float, default=0, help="0 = the proxy level's passes")
    parser.add_argument("--target-passes", type=float, default=0, help="0 = the target level's passes")
    parser.add_argument("--proxy-steps", type=int, default=0, help="fixed proxy steps (0 = planned by passes)")
    parser.add_argument(
        "--subset-plan",
        default="own",
        choices=("own", "share"),
        help="a subset trains the target's passes over itself (own: the study's plan, as the tables of 2026-12-04) "
        "or its share of all data's steps (share: engine.coreset.train_target's, the product's)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch (and FAISS) threads")
    parser.add_argument("--pin", type=int, help="run on this CPU core only (like taskset -c)")
    parser.add_argument("--json", type=Path, help="raw rows (default docs/coreset/NAME.json)")
    parser.add_argument("--doc", type=Path, help="write the tables between this data set's markers in this file")
    parser.add_argument("--resume", action="store_true", help="skip the rows --json already holds")
    parser.add_argument("--render", action="store_true", help="only rewrite the tables from --json")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="PART",
        help="measure nothing: add to --json the rows and invocations these JSONs hold that it does not (seeds run "
        "at once on different cores, each with --resume into a copy of --json), then rewrite the tables",
    )
    args = parser.parse_args(argv)
    args.name = args.name or args.data.resolve().name
    args.methods = args.methods or methods_for_labeled_sets()
    args.json = args.json or Path("docs/coreset") / f"{args.name}.json"
    for method in {*args.methods, *args.svp_methods}:
        if method not in STRATEGIES or method in NOT_LABELED_SET:
            parser.error(
                f"method {method!r} is not a labeled-set method; choose from {', '.join(methods_for_labeled_sets())}"
            )
    for keep in [*args.keeps, *args.svp_keeps]:
        if not 0 < keep <= 1:
            parser.error(f"keeps must lie in (0, 1], got {keep}")
    return args


def main(argv: list[str] | None = None, progress: Callable[[str], None] | None = None) -> dict:
    args = parse_args(argv)
    args.progress = progress or (lambda line: print(line, flush=True))
    if args.merge:
        result = merge(json.loads(args.json.read_text()), [json.loads(part.read_text()) for part in args.merge])
        save_json(args.json, result)
    elif args.render:
        result = json.loads(args.json.read_text())
    else:
        result = measure_all(args)
    markdown = render(result)
    if args.doc:
        write_doc(args.doc, args.name, markdown)
    else:
        print(markdown)
    return result


def merge(base: dict, parts: list[dict]) -> dict:
    """`base` with the rows of `parts` it lacks and the invocations that measured them. A row `base` holds stays
    as it is: a resumed run trains its selector again and rewrites that row with its own timings."""
    rows, runs = list(base["rows"]), list(base["meta"]["runs"])
    have = {row_key(r) for r in rows}
    for part in parts:
        if part["meta"]["data"] != base["meta"]["data"]:
            raise SystemExit(f"a part holds rows of other data: {part['meta']['data']}")
        new = [r for r in part["rows"] if row_key(r) not in have]
        rows += new
        have |= {row_key(r) for r in new}
        runs += [run for run in part["meta"]["runs"] if run not in runs]
    return {"meta": {**base["meta"], "runs": runs}, "rows": rows}


def measure_all(args: argparse.Namespace) -> dict:
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    torch.set_num_threads(args.threads)
    if "faiss" in sys.modules or importlib.util.find_spec("faiss"):
        import faiss

        faiss.omp_set_num_threads(args.threads)
    args.progress(machine_description())
    data = load_data(args)
    config = stages(args, data, args.seeds[0])
    info = {
        "name": args.name,
        "root": str(args.data),
        "n_train": len(data.labels),
        "n_test": len(data.test_labels),
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "size": data.size,
        "classes": len(data.classes),
    }
    args.progress(f"data {info}")
    previous = json.loads(args.json.read_text()) if args.resume and args.json.exists() else None
    if previous is not None and previous["meta"]["data"] != info:
        raise SystemExit(f"{args.json} holds rows of other data: {previous['meta']['data']}")
    runs = previous["meta"]["runs"] if previous else []
    this_run = {
        "args": {
            k: v if isinstance(v, int | float | str | list | type(None)) else str(v)
            for k, v in vars(args).items()
            if k != "progress"
        },
        "machine": machine_info(),
        "bf16": "on" if use_bf16(best_device(args.device)) else "off",
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "proxy_model": config["proxy"].model_name,
        "target_model": config["target"].model_name,
        "proxy_passes": config["proxy"].train.passes,
        "target_passes": config["target"].train.passes,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "wall_s": None,
    }
    runs = [*runs, this_run]
    started = time.perf_counter()
    result = {"meta": {"data": info, "runs": runs}, "rows": previous["rows"] if previous else []}

    def save(rows: list[dict]) -> None:
        this_run["wall_s"] = round(time.perf_counter() - started, 1)
        result["rows"] = rows
        save_json(args.json, result)

    save(run(args, data, result["rows"], save))
    return result


if __name__ == "__main__":
    main()
