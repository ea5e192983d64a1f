"""Progress page: learning curve, labels per class, time per batch, budget left.

It numbers batches as the Label page does (from 1; labeling.batch_offset): round r's proxy, trained on the
labels of the batches before it, chose batch r + offset; a round 0 of imported labels is no batch."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

import storage
from app import claims, jobs, labeling, pool_map, project_forms
from engine.initial import IMPORTED
from engine.intervals import FEW, accuracy_interval, describe, span

ACCURACY = "proxy validation accuracy"
N = "validation images"
INTERVAL = "95% interval"
# how a curve point is drawn: by the number of validation images it was measured on
MANY, FEW_IMAGES, UNKNOWN = f"{FEW} or more", f"fewer than {FEW}", "not recorded"
COLOURS = {MANY: "#1f77b4", FEW_IMAGES: "#9e9e9e", UNKNOWN: "#cfcfcf"}
WHEN_TRAINED, AGAIN = "when it trained", "measured again for the target"
BATCH = "batch"  # the batch a round's proxy chose (or the random first batch), numbered as on the Label page


def rounds_frame(project: storage.Project, offset: int) -> pd.DataFrame:
    """One row per round: the batch it chose (`offset`: labeling.batch_offset; missing for a round 0 of
    imported labels, which is no batch), the labels its proxy was trained on, proxy validation accuracy with
    the number of validation images it was measured on and its 95 % interval, stage seconds."""
    rows = [
        {
            BATCH: None if r.strategy == IMPORTED else r.index + offset,
            "strategy": r.strategy,
            "selector": r.selector,
            "labels": r.n_labeled,
            ACCURACY: r.proxy_val_acc,
            N: r.proxy_val_n,
            INTERVAL: _interval(r.proxy_val_acc, r.proxy_val_n),
            "train s": r.train_s or 0.0,
            "score s": r.score_s or 0.0,
            "select s": r.select_s or 0.0,
        }
        for r in storage.list_rounds(project)
    ]
    frame = pd.DataFrame(
        rows,
        columns=[BATCH, "strategy", "selector", "labels", ACCURACY, N, INTERVAL, "train s", "score s", "select s"],
    )
    frame[BATCH] = frame[BATCH].astype("Int64")
    frame[N] = frame[N].astype("Int64")  # None stays missing (a round made before n was recorded)
    return frame


def _interval(accuracy: float | None, n: int | None) -> str:
    if accuracy is None or not n:
        return ""
    return span(*accuracy_interval(accuracy, n))


def headline(project: storage.Project, frame: pd.DataFrame) -> None:
    settings = storage.load_settings(project)
    labeled = len(storage.training_labels(project))
    n_val = len(storage.validation_labels(project))
    cols = st.columns(4)
    cols[0].metric("Labeled (training)", labeled)
    cols[1].metric("Budget left to queue", storage.budget_left(project), help=f"Budget: {settings.budget} images")
    cols[2].metric("Batches", int(frame[BATCH].count()), help="Batches chosen so far, the open ones included.")
    cols[3].metric("Validation labeled", f"{n_val} of {len(storage.validation_ids(project))}")
    st.progress(min(1.0, labeled / settings.budget), text=f"Budget used: {labeled} of {settings.budget} labels")


def curve_frame(frame: pd.DataFrame, today: int, offset: int, target: dict | None = None) -> pd.DataFrame:
    """The learning curve's points: each trained proxy, by the batch it chose, on the validation images
    labeled when it trained, with n, the 95 % interval, how it is drawn (`measured on`: by n) and whether it
    was measured on another number of images than the `today` labeled now (`other set`); plus, when the last
    target job measured a round's proxy again on its own validation images (`target`'s metrics, which name
    the round: its batch is round + `offset`), that point."""
    points = []
    for row in frame.dropna(subset=[ACCURACY]).to_dict("records"):
        n = None if pd.isna(row[N]) else int(row[N])
        points.append(_point(int(row[BATCH]), int(row["labels"]), float(row[ACCURACY]), n, today, WHEN_TRAINED))
    again = (target or {}).get("proxy") or {}
    trained = {p[BATCH]: p["labels"] for p in points}
    batch = None if again.get("round") is None else again["round"] + offset
    if again.get("accuracy") is not None and batch in trained:
        points.append(_point(batch, trained[batch], again["accuracy"], again["n_validation"], today, AGAIN))
    columns = [BATCH, "labels", "accuracy", "n", "low", "high", "interval", "measured on", "other set", "kind"]
    return pd.DataFrame(points, columns=columns)


def _point(batch: int, labels: int, accuracy: float, n: int | None, today: int, kind: str) -> dict:
    low, high = accuracy_interval(accuracy, n) if n else (None, None)
    return {
        BATCH: batch,
        "labels": labels,
        "accuracy": accuracy,
        "n": n,
        "low": low,
        "high": high,
        "interval": "" if low is None or high is None else span(low, high),
        "measured on": UNKNOWN if n is None else FEW_IMAGES if n < FEW else MANY,
        "other set": n is not None and n != today,
        "kind": kind,
    }


def learning_curve(project: storage.Project, frame: pd.DataFrame, offset: int) -> None:
    st.subheader("Learning curve")
    today = len(storage.validation_labels(project))
    points = curve_frame(frame, today, offset, jobs.last_target_result(project))
    if points.empty:
        st.caption(
            "The proxy's accuracy on labeled validation images appears here once a trained proxy has chosen a "
            "batch. Label some validation images (Label page, Validation) to see it."
        )
        return
    st.altair_chart(curve_chart(points), width="stretch")
    st.caption(curve_note(points, today))


def curve_chart(points: pd.DataFrame) -> alt.LayerChart:
    """Accuracy by training labels: a point per trained proxy coloured by its n (grey under FEW images, with
    its n written beside it), hollow when measured on another number of images than today's, its 95 % interval
    as a bar; a black diamond for a proxy measured again for the target."""
    drawn = points.loc[points["kind"] == WHEN_TRAINED, "measured on"]
    shown = [name for name in COLOURS if (drawn == name).any()]
    colour = alt.Color(
        "measured on:N",
        title="validation images",
        scale=alt.Scale(domain=shown, range=[COLOURS[name] for name in shown]),
        legend=alt.Legend(orient="bottom", direction="horizontal"),
    )
    x = alt.X("labels:Q", title="training labels", scale=alt.Scale(padding=28, zero=False))
    y = alt.Y("accuracy:Q", title=ACCURACY, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"))
    tooltip = [
        alt.Tooltip(f"{BATCH}:Q", title="proxy that chose batch"),
        alt.Tooltip("labels:Q", title="training labels"),
        alt.Tooltip("accuracy:Q", format=".1%"),
        alt.Tooltip("n:Q", title="validation images"),
        alt.Tooltip("interval:N", title=INTERVAL),
        alt.Tooltip("kind:N", title="measured"),
    ]
    base = alt.Chart(points).encode(x=x, y=y, tooltip=tooltip)
    trained = base.transform_filter(alt.datum.kind == WHEN_TRAINED)
    line = trained.mark_line(color="#bbbbbb")
    bars = trained.mark_rule(opacity=0.45, strokeWidth=4).encode(y=alt.Y("low:Q"), y2="high:Q", color=colour)
    same = trained.transform_filter("!datum['other set']").mark_circle(size=70, opacity=1).encode(color=colour)
    other = (
        trained.transform_filter("datum['other set']")
        .mark_point(size=70, filled=False, strokeWidth=2)
        .encode(color=colour)
    )
    counts = (
        trained.transform_filter(f"datum.n != null && datum.n < {FEW}")
        .transform_calculate(count="'n=' + datum.n")
        .mark_text(align="left", dx=9, dy=10, fontSize=11, color="#616161")
        .encode(text="count:N")
    )
    measured_again = base.transform_filter(alt.datum.kind == AGAIN)
    again = measured_again.mark_point(shape="diamond", size=60, filled=True, color="black")
    again_bar = measured_again.mark_rule(color="black", opacity=0.35, strokeWidth=2).encode(
        y=alt.Y("low:Q"), y2="high:Q"
    )
    return alt.layer(line, bars, again_bar, same, again, other, counts).properties(height=300)


def curve_note(points: pd.DataFrame, today: int) -> str:
    """Which images the curve is measured on, and what its marks mean."""
    trained = points[points["kind"] == WHEN_TRAINED]
    latest = trained.iloc[-1]
    n = None if pd.isna(latest["n"]) else int(latest["n"])
    lines = [
        f"Each point: the proxy that chose a batch, on the validation images labeled when it trained (n per "
        f"point; bars: 95% interval). Today {today} validation images are labeled. "
        f"Latest, the proxy that chose batch {latest[BATCH]}: {describe(latest['accuracy'], n)}."
    ]
    if (trained["measured on"] == FEW_IMAGES).any():
        lines.append(f"Grey points are on fewer than {FEW} images: one image moves them by 5 points or more.")
    other = trained[trained["other set"]]
    if not other.empty:
        numbers = [str(b) for b in other[BATCH]]
        batches = f"batch {numbers[0]}" if len(numbers) == 1 else f"batches {', '.join(numbers[:-1])} and {numbers[-1]}"
        again = points[points["kind"] == AGAIN]
        remeasured = (
            f"The black diamond is the proxy that chose batch {again.iloc[0][BATCH]}, measured again when the "
            f"target trained: {describe(again.iloc[0]['accuracy'], int(again.iloc[0]['n']))}."
            if not again.empty
            else "Training the target (Target page) measures the latest proxy again on today's set."
        )
        lines.append(
            f"Hollow points (the proxies that chose {batches}) were measured on another number of validation "
            f"images than today's {today}: the validation set changed since. Only the latest proxy is kept, so "
            f"earlier ones cannot be measured again on today's set. {remeasured}"
        )
    if (trained["measured on"] == UNKNOWN).any():
        lines.append("Proxies trained before this version did not record how many images they were measured on.")
    return "  \n".join(lines)


def labels_per_class(project: storage.Project) -> None:
    st.subheader("Labels per class")
    counts = storage.label_counts(project)
    st.bar_chart(pd.DataFrame({"labels": counts}), height=max(280, 60 + 24 * len(counts)), horizontal=True)


def labels_per_annotator(project: storage.Project) -> None:
    """Who labeled what: the labels and skips that stand per annotator, and when each last worked."""
    counts = storage.annotator_counts(project)
    holding = claims.HOLDS.holders(str(project.root))
    if not counts and not holding:
        return
    st.subheader("Labels per annotator")
    st.caption(
        "Labels and skips that stand now: an image relabeled, or an undo, counts for whoever gave its current "
        "label (as in the exports); validation images included; imported labels under their file's name. "
        "*Labeling now*: the images someone's open labeling view holds, so that no one else is sent to them "
        "(held for two minutes after their last label)."
    )
    rows = [
        {
            "annotator": c.annotator,
            "labels": c.labels,
            "skips": c.skips,
            "last active": pd.Timestamp(c.last_at, unit="s", tz="UTC").tz_convert(None).floor("s"),
            "labeling now": holding.pop(c.annotator, 0),
        }
        for c in counts
    ]
    rows += [
        {"annotator": name, "labels": 0, "skips": 0, "last active": pd.NaT, "labeling now": n}
        for name, n in holding.items()
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={
            "last active": "last active (UTC)",
            "labeling now": st.column_config.NumberColumn("labeling now (images held)", format="%d"),
        },
    )


def time_per_batch(frame: pd.DataFrame, offset: int) -> None:
    """The seconds it took to choose each batch (training, scoring, selection); a batch chosen with no
    timed stage (a random first batch) is not drawn."""
    st.subheader("Time per batch")
    stages = ["train s", "score s", "select s"]
    timed = frame[frame[BATCH].notna() & (frame[stages].sum(axis=1) > 0)]
    if timed.empty:
        first = "the imported labels are no batch" if offset == 0 else "a random first batch takes none"
        st.caption(
            f"The seconds it took to choose each batch (training, scoring, selection) appear here once a "
            f"proxy chooses one; {first}."
        )
        return
    st.caption("The seconds it took to choose each batch: training, scoring the pool, selection.")
    st.bar_chart(timed, x=BATCH, y=stages, y_label="seconds", height=280)


def main() -> None:
    project = project_forms.require_project("read", "progress")
    st.title("Progress")
    offset = labeling.batch_offset(project)
    frame = rounds_frame(project, offset)
    headline(project, frame)
    left, right = st.columns(2)
    with left:
        learning_curve(project, frame, offset)
    with right:
        labels_per_class(project)
    time_per_batch(frame, offset)
    labels_per_annotator(project)
    pool_map.show(project)
    with st.expander("Batches"):
        st.dataframe(frame, hide_index=True)


if __name__ == "__main__":
    main()
