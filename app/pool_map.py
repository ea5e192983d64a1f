"""A 2-D map of the pool: PCA of the backbone's embeddings, coloured by label, the open batch highlighted.

Reads the embeddings cache the engine writes (cache/embeddings/*.npy) with
numpy alone, so the server never imports torch for it.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import storage

MAX_UNLABELED = 5000  # unlabeled points drawn (a seeded sample): the browser stays fast
UNLABELED, BATCH = "unlabeled", "in the batch"


def latest_embeddings(cache_dir: Path) -> tuple[Path, Path] | None:
    """(rows, ids) files of the most recently written embeddings, or None when the pool has none."""
    found = sorted((Path(cache_dir) / "embeddings").glob("*_ids.npy"), key=lambda p: p.stat().st_mtime)
    for ids_path in reversed(found):
        rows_path = ids_path.with_name(ids_path.name.removesuffix("_ids.npy") + ".npy")
        if rows_path.is_file():
            return rows_path, ids_path
    return None


def pca_2d(rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """float32 [N, 2]: the rows projected on their first two principal components."""
    x = np.asarray(rows, dtype=np.float32)
    mean = x.mean(axis=0)
    sample = x if len(x) <= 20000 else x[np.random.default_rng(seed).choice(len(x), 20000, replace=False)]
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    return (x - mean) @ vt[:2].T


@st.cache_data(max_entries=4, show_spinner=False)
def _projection(rows_path: str, ids_path: str, mtime: float) -> tuple[np.ndarray, np.ndarray]:
    ids = np.load(ids_path)
    rows = np.load(rows_path, mmap_mode="r")
    if rows.shape[0] != len(ids):
        raise ValueError("the embeddings are being rewritten")
    return ids, pca_2d(rows)


def map_frame(project: storage.Project) -> pd.DataFrame | None:
    """x, y, label and whether in the open batch, for labeled, queued and a sample of unlabeled items."""
    files = latest_embeddings(project.cache_dir)
    if files is None:
        return None
    rows_path, ids_path = files
    try:
        ids, xy = _projection(str(rows_path), str(ids_path), ids_path.stat().st_mtime)
    except (OSError, ValueError):
        return None
    classes = storage.class_names(project)
    labels = {**storage.training_labels(project), **storage.validation_labels(project)}
    batch = {item_id for made in storage.open_rounds(project) for item_id, _ in storage.round_queue(project, made.id)}
    usable = {item.id for item in storage.usable_items(project)}
    keep = np.isin(ids, list(usable))
    frame = pd.DataFrame({"item": ids[keep], "x": xy[keep, 0], "y": xy[keep, 1]})
    frame["label"] = [
        classes[labels[i]] if i in labels and labels[i] < len(classes) else UNLABELED for i in frame["item"]
    ]
    frame["batch"] = frame["item"].isin(batch)
    plain = frame[(frame["label"] == UNLABELED) & ~frame["batch"]]
    if len(plain) > MAX_UNLABELED:
        frame = frame.drop(plain.sample(len(plain) - MAX_UNLABELED, random_state=0).index)
    return frame


def show(project: storage.Project) -> None:
    st.subheader("Map of the pool")
    frame = map_frame(project)
    if frame is None:
        st.caption("Appears once a backbone has embedded the pool (Backbone in the project settings).")
        return
    base = alt.Chart(frame).encode(x=alt.X("x", axis=None), y=alt.Y("y", axis=None), tooltip=["item", "label", "batch"])
    unlabeled = base.transform_filter(alt.datum.label == UNLABELED).mark_circle(size=12, color="#c8c8c8")
    labeled = (
        base.transform_filter(alt.datum.label != UNLABELED)
        .mark_circle(size=30, opacity=0.9)
        .encode(color=alt.Color("label", title="label"))
    )
    batch = base.transform_filter(alt.datum.batch).mark_point(size=80, shape="diamond", color="black", strokeWidth=1.5)
    st.altair_chart((unlabeled + labeled + batch).properties(height=420), width="stretch")
    st.caption(
        f"First two principal components of the pool's embeddings. Grey: unlabeled; colours: labels; "
        f"black diamonds: the open batch ({int(frame['batch'].sum())} images)."
    )
