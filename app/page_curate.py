"""Curate page: keep the labeled images that matter, and review the labels the proxy doubts.

Selection via Proxy's core-set half: a `coreset` job trains the proxy once on every training label,
a method keeps a share of them, and the run is saved with every item's statistics
(`storage.coreset`). The page shows the latest run: the kept share per class, a histogram of the
method's scores, the kept and dropped images of a class (the extremes first), exports of the subset,
the target trained on it, and the possibly mislabeled images, one class key away from a relabel.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pandas as pd
import streamlit as st

import storage
from app import exports, jobs, labeler, labeling, project_forms, state, widgets
from app.labeling import Entry, item_path
from app.page_target import comparison_table
from engine import names

METHOD_HELP = {
    "random": "a random share of each class: the baseline every method must beat",
    "forgetting": "the most often forgotten while the proxy trained, never learned first (Toneva et al.)",
    "el2n": "the largest error early in training (Paul et al.)",
    "grand": "the largest last-layer gradient early in training",
    "least_confidence": "the proxy least sure of, once trained",
    "margin": "the smallest gap between the proxy's two likeliest classes",
    "entropy": "the most uncertain under the trained proxy",
    "kcenter": "spread over the proxy's embedding space (k-center greedy)",
    "herding": "whose mean embedding stays closest to the mean of all",
    "facility_location": "the images that best represent the rest (facility location)",
    "graph_cut": "representative and diverse (graph cut)",
}
DEFAULT_METHOD = names.CORESET_DEFAULT_METHOD
DEFAULT_KEEP = round(100 * names.CORESET_DEFAULT_KEEP)  # percent
GRID_LIMIT = 60  # images per grid: the extremes of a class, not all of it
SUSPECT_LIMIT = 120
NAME_KEY = "curate_name"


def controls(project: storage.Project) -> None:
    labels = storage.training_labels(project)
    classes = len(set(labels.values()))
    st.write(
        f"The proxy trains once on the **{len(labels)} training labels** (validation images are left out and "
        "measure it), records how each image was learned, and a method keeps a share of them. Train the "
        "target on the kept share to train faster; review the labels it could not learn."
    )
    job = jobs.latest_coreset(project)
    busy = job is not None and job.state in jobs.ACTIVE
    if busy:
        widgets.live_job(str(project.root), job.id)
        return
    if job is not None and job.state in ("failed", "cancelled"):
        params = job.params or {}
        widgets.job_failed(
            job,
            "Retry",
            lambda: jobs.start_coreset(
                project,
                params.get("method", DEFAULT_METHOD),
                params.get("keep", DEFAULT_KEEP / 100),
                params.get("balance", True),
                params.get("selector", "proxy"),
            ),
        )
    if classes < 2:
        st.info("Curating needs training labels in at least two classes: label or import some first.")
        return
    with st.form("curate"):
        method_col, keep_col = st.columns([3, 2])
        method = method_col.selectbox(
            "Method",
            names.CORESET_METHODS,
            index=names.CORESET_METHODS.index(DEFAULT_METHOD),
            format_func=lambda name: f"{name}: {METHOD_HELP.get(name, '')}",
            key="curate_method",
        )
        keep = keep_col.slider("Keep", 5, 100, DEFAULT_KEEP, step=5, format="%d%%", key="curate_keep")
        balance_col, selector_col = st.columns([3, 2])
        balance = balance_col.toggle(
            "Keep the same share of every class",
            value=True,
            key="curate_balance",
            help="DeepCore's setting: the method picks within each class, in proportion to its labels.",
        )
        selector = selector_col.radio(
            "Selector",
            ("proxy", "target"),
            horizontal=True,
            key="curate_selector",
            help="The proxy is fast; the target selects for itself, the paper's baseline, and takes longer.",
        )
        if st.form_submit_button("Curate the labeled set", type="primary"):
            jobs.start_coreset(project, method, keep / 100, balance, selector)
            st.rerun()


def summary(run: storage.CoresetRun) -> None:
    cols = st.columns(4)
    cols[0].metric("Kept", f"{run.n_kept} of {run.n_labeled}", help=f"{run.keep:.0%} requested")
    cols[1].metric(
        "Method",
        run.method,
        help=("class-balanced" if run.balance else "not balanced") + f"; selector {run.selector_model}",
    )
    accuracy = "n/a" if run.val_acc is None else f"{run.val_acc:.1%}"
    cols[2].metric(
        "Selector accuracy",
        accuracy,
        help=f"{run.selector_model} on {run.n_val} labeled validation images, after training on every label.",
    )
    seconds = sum(s or 0.0 for s in (run.train_s, run.score_s, run.select_s))
    cols[3].metric(
        "Time",
        f"{seconds:.0f} s",
        help=f"training {run.train_s or 0:.1f} s ({run.steps} steps), scoring {run.score_s or 0:.1f} s, "
        f"selecting {run.select_s or 0:.2f} s",
    )
    st.caption(f"Selector accuracy measured on {run.n_val} validation images.")


def per_class_table(items: list[storage.CoresetItem]) -> None:
    names_seen = sorted({i.label for i in items if i.label is not None})
    table = pd.DataFrame(
        {
            "labeled": [sum(i.label == c for i in items) for c in names_seen],
            "kept": [sum(i.label == c and i.kept for i in items) for c in names_seen],
            "never learned": [sum(i.label == c and i.never_learned for i in items) for c in names_seen],
        },
        index=names_seen,
    )
    st.dataframe(table, width="stretch")


def histogram(run: storage.CoresetRun, items: list[storage.CoresetItem]) -> None:
    """Kept and dropped counts over bins of the method's score (for k-center, herding and the submodular
    methods: each image's distance to the nearest other kept image of its class), or, for random, of the
    forgetting events (one bar per count, the never learned in a bar of their own)."""
    if any(i.score is not None for i in items) and run.method != "forgetting":
        values = [(i.score, i.kept) for i in items if i.score is not None]
        scores = np.array([v for v, _ in values], dtype=np.float64)
        kept = np.array([k for _, k in values], dtype=bool)
        edges = np.histogram_bin_edges(scores, bins=min(20, max(1, len(np.unique(scores)))))
        counts_kept, _ = np.histogram(scores[kept], edges)
        counts_dropped, _ = np.histogram(scores[~kept], edges)
        labels = [f"{a:.2g}–{b:.2g}" for a, b in itertools.pairwise(edges)]
        what = names.KEPT_DISTANCE if run.method in names.KEPT_DISTANCE_SCORED else f"{run.method} score"
    else:
        forgotten = [i for i in items if i.forgetting is not None]
        if not forgotten:
            return
        finite = [int(i.forgetting) for i in forgotten if math.isfinite(i.forgetting)]
        bars = [*range(max(finite, default=0) + 1), "never learned"]
        labels = [str(b) for b in bars]
        counts_kept = [sum(i.kept and _bar(i) == b for i in forgotten) for b in bars]
        counts_dropped = [sum(not i.kept and _bar(i) == b for i in forgotten) for b in bars]
        what = "forgetting events" + ("" if run.method == "forgetting" else f" ({run.method} has no score per image)")
    st.caption(f"{widgets.md(what)}: {int(np.sum(counts_kept) + np.sum(counts_dropped))} images")
    frame = pd.DataFrame({"kept": counts_kept, "dropped": counts_dropped}, index=pd.Index(labels, name=what))
    st.bar_chart(frame, height=220, sort=False, color=["#1f77b4", "#c7c7c7"])


def _bar(item: storage.CoresetItem) -> int | str:
    assert item.forgetting is not None
    return int(item.forgetting) if math.isfinite(item.forgetting) else "never learned"


def caption(item: storage.CoresetItem, method: str) -> str:
    parts = [f"kept #{item.rank + 1}" if item.kept and item.rank is not None else "dropped"]
    if item.never_learned:
        parts.append("never learned")
    elif item.forgetting:
        parts.append(f"forgotten {item.forgetting:.0f}×")
    if item.score is not None:
        kept_distance = method in names.KEPT_DISTANCE_SCORED
        parts.append(f"{item.score:.2g} from kept" if kept_distance else f"score {item.score:.3g}")
    return " · ".join(parts)


def class_browser(project: storage.Project, run: storage.CoresetRun, items: list[storage.CoresetItem]) -> None:
    classes = storage.class_names(project)
    present = [c for c in classes if any(i.label == c for i in items)]
    if not present:
        return
    chosen = st.selectbox("Class", present, key="curate_class")
    mine = [i for i in items if i.label == chosen]
    kept = [i for i in mine if i.kept]  # by rank: most worth keeping first
    dropped = sorted((i for i in mine if not i.kept), key=_least_worth)
    root = str(project.root)
    for source, shown, title in (
        ("CurateKept", kept, f"Kept of {len(mine)} {chosen}, most worth keeping first"),
        ("CurateDropped", dropped, f"Dropped of {len(mine)} {chosen}, least worth keeping first"),
    ):
        if not shown:
            st.caption(f"{title}: none.")
            continue
        if len(shown) > GRID_LIMIT:
            st.caption(f"{title}; the first {GRID_LIMIT} shown.")
        entries = [_entry(root, i) for i in shown[:GRID_LIMIT]]
        labeler.show(
            project,
            source,
            entries,
            run.method,
            classes,
            captions={i.item_id: caption(i, run.method) for i in shown[:GRID_LIMIT]},
            mode="grid",
            title=title,
            captions_on_tiles=True,
        )


def _least_worth(item: storage.CoresetItem) -> tuple[float, int]:
    """Dropped items, the least worth keeping first: lowest score (for k-center and the other picking-order
    methods, the closest to a kept image of their class) or fewest forgetting events first."""
    value = item.score if item.score is not None else item.forgetting
    return (-math.inf if value is None else value, item.item_id)


def _entry(root: str, item: storage.CoresetItem) -> Entry:
    return Entry(item.item_id, item_path(root, item.item_id), None, False, item.current, item.current is None, None)


SUBSET_EXPORTS = (  # key, label, maker, file suffix, mime type, icon
    ("csv", "Labels with a kept column (CSV)", exports.subset_csv, ".csv", "text/csv", ":material/table:"),
    (
        "jsonl",
        "Labels with a kept column (JSONL)",
        exports.subset_jsonl,
        ".jsonl",
        "application/jsonl",
        ":material/data_object:",
    ),
    (
        "zip",
        "Kept images as an ImageFolder zip",
        exports.subset_zip,
        "_imagefolder.zip",
        "application/zip",
        ":material/folder_zip:",
    ),
)


def subset_exports(project: storage.Project, run: storage.CoresetRun) -> None:
    st.subheader("The kept subset")
    name = storage.sanitize_class_name(project.root.name) or "project"
    for column, (key, label, make, suffix, mime, icon) in zip(st.columns(3), SUBSET_EXPORTS, strict=True):
        column.download_button(
            label,
            state.audited(
                functools.partial(make, project, run.id), f"export.subset_{key}", f"{project.root} run {run.id}"
            ),
            f"{name}_coreset_{run.id}{suffix}",
            mime,
            key=f"dl-subset-{key}",
            icon=icon,
            help="train/ holds the kept images only; validation/ is whole (the subset's model is measured on it)."
            if key == "zip"
            else None,
        )


def subset_target(project: storage.Project, run: storage.CoresetRun) -> None:
    st.subheader("Train the target on the kept subset")
    job = jobs.latest_target(project)
    if job is not None and job.state in jobs.ACTIVE:
        widgets.live_job(str(project.root), job.id)
        return
    result = jobs.last_target_result(project, subset=True)
    full = jobs.last_target_result(project)
    if result is not None:
        comparison_table(result, full)
        trained_on = (result.get("coreset") or {}).get("run")
        if trained_on is not None and trained_on != run.id:
            st.caption(f"The subset target was trained on the kept share of an earlier run ({trained_on}).")
    st.button(
        f"Train the target on the {run.n_kept} kept",
        on_click=jobs.start_target,
        args=(project, run.id),
        key="train-subset-target",
        help="Saved beside the target on all labels (the Target page compares them).",
    )


def mislabeled(project: storage.Project, run: storage.CoresetRun, items: list[storage.CoresetItem]) -> None:
    st.subheader("Possibly mislabeled")
    flagged = storage.in_review_order(items)
    counts = storage.counted(flagged)
    st.write(
        f"{counts.suspects} labels the proxy could not learn or kept forgetting while it disagreed with them: "
        f"**{counts.reviewed} reviewed, {counts.changed} changed, {counts.open} to review**."
    )
    found = [s for s in flagged if not s.reviewed]
    if not found:
        return
    agree = sum(i.predicted == i.label for i in items) / max(1, len(items))
    st.caption(
        f"Least likely label first, as the proxy sees it. It answers the given label for {agree:.0%} of the "
        f"{len(items)} training labels: the weaker it is, the more right labels the list holds (measured: "
        "docs/label_review.md). Select images and press a class key to relabel them; pressing the key of the "
        "label they have, or marking them below, says the label is right. Either way they leave this list. "
        "The Labels page has the same list as a filter."
    )
    shown = found[:SUSPECT_LIMIT]
    root = str(project.root)
    labeler.show(
        project,
        "Suspects",
        [_entry(root, s) for s in shown],
        run.method,
        storage.class_names(project),
        captions={s.item_id: labeling.suspect_caption(s) for s in shown},
        captions_on_tiles=True,
        mode="grid",
        title="To review, least likely label first"
        + (f" (the first {SUSPECT_LIMIT} of {len(found)})" if len(found) > SUSPECT_LIMIT else ""),
    )
    with st.form("confirm"):
        chosen = st.multiselect(
            "Labels that are right",
            [s.item_id for s in shown],
            format_func=lambda item_id: _describe(item_id, shown),
            key="curate_confirm",
        )
        who = st.text_input("Your name", key=NAME_KEY)
        if st.form_submit_button("Mark as right") and chosen:
            if not who.strip():
                st.error("Type your name: each review is recorded with who made it.")
            else:
                for item_id in chosen:
                    storage.confirm_label(project, run.id, item_id, who.strip())
                st.rerun()


def _describe(item_id: int, shown: list[storage.CoresetItem]) -> str:
    item = next(s for s in shown if s.item_id == item_id)
    return f"{item.path} ({item.label})"


def main() -> None:
    project = project_forms.require_project("manage", "curate")
    widgets.apply_style()
    st.title("Curate")
    controls(project)
    run = storage.latest_coreset_run(project)
    if run is None:
        return
    st.subheader(f"Run {run.id}: {run.method}, keeping {run.keep:.0%}")
    summary(run)
    items = storage.coreset_items(project, run.id)
    table, chart = st.columns([1, 2])
    with table:
        per_class_table(items)
    with chart:
        histogram(run, items)
    class_browser(project, run, items)
    subset_exports(project, run)
    subset_target(project, run)
    mislabeled(project, run, items)


if __name__ == "__main__":
    main()
