"""Export page: labels as CSV, JSONL and an ImageFolder zip; the target checkpoint bundle."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import storage
from app import exports, project_forms, state, widgets


def summary(project: storage.Project) -> int:
    counts = storage.export_summary(project)
    total = sum(counts.values())
    st.metric(
        "Labeled images to export",
        total,
        help="Training and validation labels. Skipped images are listed in the CSV and JSONL "
        "(split: skipped) and left out of the zip.",
    )
    if counts:
        st.bar_chart(pd.DataFrame({"labels": counts}), horizontal=True, height=60 + 24 * len(counts))
    return total


def label_downloads(project: storage.Project, name: str, empty: bool) -> None:
    st.subheader("Labels")
    st.caption(
        "Columns: path (relative to the image folder), class, split (train, validation, skipped), annotator, "
        "labeled_at (UTC), round, source (typed, accepted guess, bulk grid label, oracle). In the CSV a cell "
        "starting with = + - @ gets a leading ' so a spreadsheet shows it as text."
    )
    csv, jsonl, folder = st.columns(3)
    csv.download_button(
        "Labels as CSV",
        state.audited(lambda: exports.labels_csv(project), "export.labels_csv", str(project.root)),
        f"{name}_labels.csv",
        "text/csv",
        key="dl-csv",
        disabled=empty,
        icon=":material/table:",
    )
    jsonl.download_button(
        "Labels as JSONL",
        state.audited(lambda: exports.labels_jsonl(project), "export.labels_jsonl", str(project.root)),
        f"{name}_labels.jsonl",
        "application/jsonl",
        key="dl-jsonl",
        disabled=empty,
        icon=":material/data_object:",
    )
    folder.download_button(
        "ImageFolder zip",
        state.audited(lambda: exports.imagefolder_zip(project), "export.imagefolder_zip", str(project.root)),
        f"{name}_imagefolder.zip",
        "application/zip",
        key="dl-zip",
        disabled=empty,
        icon=":material/folder_zip:",
        help="train/ and validation/, each with one folder per class (names made safe for file systems), "
        "and classes.json mapping class order to folders.",
    )


def checkpoint_download(project: storage.Project, name: str) -> None:
    st.subheader("Target model")
    ready = exports.checkpoint_dir(project) is not None
    if not ready:
        st.caption("No target checkpoint yet: train it on the Target page.")
    bundle = f"{name}_target_checkpoint.zip"
    st.download_button(
        "Target checkpoint bundle",
        state.audited(
            lambda: exports.checkpoint_bundle(project, bundle), "export.target_checkpoint", str(project.root)
        ),
        bundle,
        "application/zip",
        key="dl-checkpoint",
        disabled=not ready,
        icon=":material/deployed_code:",
        help="model.safetensors, metadata.json, metrics.json and a README on loading it.",
    )


def main() -> None:
    project = project_forms.require_project("manage", "export")
    st.title("Export")
    name = storage.sanitize_class_name(project.root.name) or "project"
    total = summary(project)
    label_downloads(project, name, empty=total == 0)
    checkpoint_download(project, name)
    st.caption(f"Files are also kept in {widgets.md(project.exports_dir)}.")


if __name__ == "__main__":
    main()
