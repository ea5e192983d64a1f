"""Progress page: learning curve, labels per class, time per round, budget left."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import storage
from app import pool_map, project_forms


def rounds_frame(project: storage.Project) -> pd.DataFrame:
    """One row per round: labels it was trained on, proxy validation accuracy, stage seconds."""
    rows = [
        {
            "round": r.index,
            "strategy": r.strategy,
            "selector": r.selector,
            "labels": r.n_labeled,
            "proxy validation accuracy": r.proxy_val_acc,
            "train s": r.train_s or 0.0,
            "score s": r.score_s or 0.0,
            "select s": r.select_s or 0.0,
        }
        for r in storage.list_rounds(project)
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "round",
            "strategy",
            "selector",
            "labels",
            "proxy validation accuracy",
            "train s",
            "score s",
            "select s",
        ],
    )


def headline(project: storage.Project, frame: pd.DataFrame) -> None:
    settings = storage.load_settings(project)
    labeled = len(storage.training_labels(project))
    n_val = len(storage.validation_labels(project))
    cols = st.columns(4)
    cols[0].metric("Labeled (training)", labeled)
    cols[1].metric("Budget left to queue", storage.budget_left(project), help=f"Budget: {settings.budget} images")
    cols[2].metric("Rounds", len(frame))
    cols[3].metric("Validation labeled", f"{n_val} of {len(storage.validation_ids(project))}")
    st.progress(min(1.0, labeled / settings.budget), text=f"Budget used: {labeled} of {settings.budget} labels")


def learning_curve(frame: pd.DataFrame) -> None:
    st.subheader("Learning curve")
    curve = frame.dropna(subset=["proxy validation accuracy"])
    if curve.empty:
        st.caption(
            "The proxy's accuracy on labeled validation images appears here after the first trained "
            "round. Label some validation images (Label page, Validation) to see it."
        )
        return
    st.line_chart(
        curve,
        x="labels",
        y="proxy validation accuracy",
        x_label="training labels",
        y_label="proxy validation accuracy",
        height=280,
    )


def labels_per_class(project: storage.Project) -> None:
    st.subheader("Labels per class")
    counts = storage.label_counts(project)
    st.bar_chart(pd.DataFrame({"labels": counts}), height=max(280, 60 + 24 * len(counts)), horizontal=True)


def time_per_round(frame: pd.DataFrame) -> None:
    st.subheader("Time per round")
    trained = frame[(frame["selector"] != "random") & (frame["strategy"] != "imported")]
    if trained.empty:
        st.caption(
            "Round 0 is a random batch, or the labels the images came with (no training); later rounds show "
            "train, score and select seconds."
        )
        return
    st.bar_chart(trained, x="round", y=["train s", "score s", "select s"], y_label="seconds", height=280)


def main() -> None:
    project = project_forms.require_project()
    st.title("Progress")
    frame = rounds_frame(project)
    headline(project, frame)
    left, right = st.columns(2)
    with left:
        learning_curve(frame)
    with right:
        labels_per_class(project)
    time_per_round(frame)
    pool_map.show(project)
    with st.expander("Rounds"):
        st.dataframe(frame, hide_index=True)


if __name__ == "__main__":
    main()
