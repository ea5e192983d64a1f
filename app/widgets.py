"""Small widgets shared by the pages: safe text, progress bars, the live job panel."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

import storage
from app import jobs

ASSETS = Path(__file__).resolve().parents[1] / "assets"
STYLE = ASSETS / "style.css"
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:=^])")


def md(text: object) -> str:
    """User text (class or file names) escaped for Streamlit markdown: shown literally, never as markup."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def apply_style() -> None:
    """The app's own static CSS (no user data): pixelated scaling and compact tiles."""
    if STYLE.is_file():
        st.html(f"<style>{STYLE.read_text()}</style>")


def show_job(job: storage.Job) -> None:
    """A job's progress bar and message."""
    text = (
        md(job.message) if job.message else ("waiting for the worker to start" if job.state == "queued" else job.state)
    )
    if job.cancel_requested:
        text = f"stopping (cancel requested) · {text}"
    st.progress(min(max(job.progress, 0.0), 1.0), text=f"{job.kind} job {job.id}: {text}")


@st.fragment(run_every=1.0)
def live_job(project_root: str, job_id: int) -> None:
    """Polls the job every second; reruns the whole page once it ends."""
    project = storage.Project(Path(project_root))
    job = storage.get_job(project, job_id)
    if job.state in jobs.ACTIVE:
        show_job(job)
        st.button(
            "Cancel",
            key=f"cancel-{job_id}",
            on_click=jobs.cancel,
            args=(project, job_id),
            disabled=job.cancel_requested,
            help="Stops the job within a few seconds. Labels are kept; you can start it again.",
        )
        jobs.keep_worker_for(project, job)
        return
    st.rerun(scope="app")


def job_failed(job: storage.Job, retry_label: str, on_retry) -> None:
    """A failed or cancelled job's reason (as text) and a Retry button; labels are untouched by either."""
    if job.state == "cancelled":
        st.info(f"The {job.kind} job was cancelled. Your labels are kept.")
    else:
        st.error(f"The {job.kind} job failed: {md(job.error or job.state)}")
    st.button(retry_label, on_click=on_retry, type="primary", key=f"retry-{job.id}")
