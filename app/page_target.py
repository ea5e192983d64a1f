"""Target page: train the target model in the background; validation accuracy and confusion matrix.

A proxy is named by the batch it chose, numbered as on the Label page: round r's is batch r + offset
(labeling.batch_offset)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import storage
from app import jobs, labeling, project_forms, widgets
from engine import names
from engine.intervals import accuracy_interval, describe, span

DYNAMIC_KEEP = 60  # percent: DynaMS's average keep by default (docs/coreset.md)


def train_controls(project: storage.Project) -> None:
    settings = storage.load_settings(project)
    labels = storage.training_labels(project)
    n_classes = len(set(labels.values()))
    how = f"{settings.target_steps} training steps" if settings.target_steps else f"{settings.target_training} training"
    st.write(
        f"Target model **{widgets.md(model_name(settings))}** ({how}) on {len(labels)} labels; evaluated on "
        f"{len(storage.validation_labels(project))} labeled validation images."
    )
    job = jobs.latest_target(project)
    busy = job is not None and job.state in jobs.ACTIVE
    if busy:
        widgets.live_job(str(project.root), job.id)
    elif job is not None and job.state in ("failed", "cancelled"):
        widgets.job_failed(job, "Retry target training", lambda: jobs.start_target(project))
    if n_classes < 2:
        st.caption("The target needs labels in at least two classes.")
    if not busy:
        dynamic, share = st.columns([2, 3], vertical_alignment="center")
        use_dynamic = dynamic.toggle(
            "Train on a shrinking share (DynaMS)",
            key="dynamic-on",
            help="After a tenth of the run on all labels, the target trains on the images nearest its decision "
            "boundary in each class, re-chosen every tenth of the run, the share shrinking so that it averages "
            "the keep below: about that share of the steps (Wang et al., DynaMS). Measured on this machine: "
            "docs/coreset.md.",
        )
        keep = share.slider(
            "Average keep", 30, 90, DYNAMIC_KEEP, step=5, format="%d%%", key="dynamic-keep", disabled=not use_dynamic
        )
        st.button(
            "Train the target model",
            type="primary",
            disabled=n_classes < 2,
            on_click=jobs.start_target,
            args=(project, None, keep / 100 if use_dynamic else None),
            key="train-target",
        )


def results(project: storage.Project, result: dict, offset: int) -> None:
    """The target's accuracy beside a proxy's, each proxy named by the batch it chose (round + `offset`)."""
    classes = storage.class_names(project)
    st.subheader("Results")
    cols = st.columns(5)
    accuracy, n = result.get("accuracy"), result.get("n_validation", 0)
    same = same_images_proxy(result)
    cols[0].metric(
        "Validation accuracy",
        "n/a" if accuracy is None else f"{accuracy:.1%}",
        delta=None if accuracy is None or same is None else f"{100 * (accuracy - same['accuracy']):+.1f} pts vs proxy",
        help=f"The target on {n} labeled validation images. {describe(accuracy, n)}.",
    )
    earlier = None if same is not None else latest_proxy(project)
    if same is not None:
        cols[1].metric(
            "Proxy, same images",
            f"{same['accuracy']:.1%}",
            help=f"The proxy that chose batch {same['round'] + offset}, measured again when the target trained, on "
            f"the target's {same['n_validation']} validation images.",
        )
    else:
        cols[1].metric(
            "Proxy, last batch",
            "n/a" if earlier is None else f"{earlier.proxy_val_acc:.1%}",
            help="No proxy has chosen a batch yet."
            if earlier is None
            else f"The proxy that chose batch {earlier.index + offset}, on the validation images labeled when it "
            "trained.",
        )
    cols[2].metric("Validation images", n)
    cols[3].metric("Training labels", result.get("n_labels", 0))
    cols[4].metric(
        "Training time",
        f"{result.get('train_s', 0):.0f} s",
        help=f"{result.get('steps', '?')} optimizer steps of {widgets.md(result.get('model', ''))}",
    )
    comparison_note(result, same, earlier, offset)
    dynamic = result.get("dynamic")
    if dynamic:
        saved = 1 - dynamic["steps"] / max(1, dynamic["full_steps"])
        st.caption(
            f"Trained with DynaMS at an average keep of {dynamic['keep']:.0%}: {dynamic['steps']} steps where "
            f"training on every label plans {dynamic['full_steps']} ({saved:.0%} fewer), "
            f"{dynamic['selections']} re-selections."
        )
    if accuracy is None:
        st.caption("Label validation images to see accuracy, per-class accuracy and the confusion matrix.")
        return
    if same is not None and accuracy < same["accuracy"]:
        st.warning(
            f"On the same {n} validation images the target is less accurate than the proxy that chose batch "
            f"{same['round'] + offset} ({accuracy:.1%} vs {same['accuracy']:.1%}). Try thorough target training, "
            "or label more images."
        )
    per_class, confusion = st.columns([1, 2])
    with per_class:
        st.caption("Accuracy per class")
        values = result.get("per_class_accuracy") or []
        st.bar_chart(pd.DataFrame({"accuracy": values}, index=classes[: len(values)]), horizontal=True)
    with confusion:
        st.caption("Confusion matrix (rows: label given, columns: prediction)")
        matrix = result.get("confusion") or []
        st.dataframe(pd.DataFrame(matrix, index=classes[: len(matrix)], columns=classes[: len(matrix)]))


def subset_comparison(project: storage.Project, full: dict | None) -> None:
    """The target trained on a curation's kept share (Curate page) beside the one trained on every label."""
    subset = jobs.last_target_result(project, subset=True)
    if subset is None:
        return
    st.subheader("On the curated subset")
    comparison_table(subset, full)


def comparison_table(subset: dict, full: dict | None) -> None:
    """The subset's target and (when there is one) the full target, one row each, with their sample sizes."""
    run = subset.get("coreset") or {}
    rows = {f"kept by {run.get('method', '?')} ({run.get('keep', 0):.0%})": subset}
    if full is not None:
        rows[full_target_name(full)] = full
    st.dataframe(
        pd.DataFrame(
            {
                "validation accuracy": [_percent(r.get("accuracy")) for r in rows.values()],
                "validation images": [r.get("n_validation", 0) for r in rows.values()],
                "95% interval": [_interval(r) for r in rows.values()],
                "training labels": [r.get("n_labels", 0) for r in rows.values()],
                "training s": [round(r.get("train_s", 0.0), 1) for r in rows.values()],
                "steps": [r.get("steps") for r in rows.values()],
            },
            index=list(rows),
        ),
        width="stretch",
    )
    if full is not None and subset.get("n_validation") != full.get("n_validation"):
        st.caption(
            "The two were measured on different numbers of validation images (labeled between the two trainings): "
            "train both again to compare them on the same images."
        )


def full_target_name(full: dict) -> str:
    """How a comparison row names the target trained on every label (with DynaMS, if it was)."""
    dynamic = full.get("dynamic")
    return "every training label" + (f" (DynaMS, {dynamic['keep']:.0%} on average)" if dynamic else "")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _interval(result: dict) -> str:
    """The 95 % Wilson interval of a target's accuracy ('' without one)."""
    accuracy, n = result.get("accuracy"), result.get("n_validation", 0)
    if accuracy is None or not n:
        return ""
    low, high = result.get("interval") or accuracy_interval(accuracy, n)
    return span(low, high)


def model_name(settings: storage.Settings) -> str:
    """The target's model name; for `auto`, the model it stands for. Which one `auto` picks without a
    backbone depends on the device the worker finds, and the server never imports torch to ask: an
    explicit device answers, `auto` names both picks."""
    device_type = settings.device.split(":")[0]
    if names.auto_needs_device(settings.target, settings.backbone) and device_type == names.AUTO:
        picks = names.AUTO_MODELS["target"]
        return f"{picks['cuda']} on a CUDA GPU, else {picks['cpu']} (auto)"
    try:
        resolved = names.resolve_model_name(settings.target, "target", device_type, settings.backbone)
    except ValueError:  # an unknown name: the job will say so
        return settings.target
    return f"{resolved} (auto)" if settings.target == names.AUTO else resolved


def same_images_proxy(result: dict) -> dict | None:
    """The last proxy (its round: `round`) as the target job measured it again on the target's own validation images
    (engine.target.proxy_on_same_images), or None when it could not (or the target predates that)."""
    proxy = result.get("proxy") or {}
    if proxy.get("accuracy") is None or proxy.get("n_validation") != result.get("n_validation"):
        return None
    return proxy


def latest_proxy(project: storage.Project) -> storage.Round | None:
    """The latest round whose proxy was measured on validation images (when it trained), or None."""
    measured = [r for r in storage.list_rounds(project) if r.proxy_val_acc is not None]
    return measured[-1] if measured else None


def comparison_note(result: dict, same: dict | None, earlier: storage.Round | None, offset: int) -> None:
    """Each accuracy with its n and 95 % interval, and whether the two were measured on the same images; the
    proxy named by the batch it chose (round + `offset`)."""
    accuracy, n = result.get("accuracy"), result.get("n_validation", 0)
    lines = [f"**Target**: {describe(accuracy, n)}."]
    if same is not None:
        lines.append(
            f"**The proxy that chose batch {same['round'] + offset}** "
            f"({widgets.md(same.get('selector') or 'proxy')}), measured again on the same {same['n_validation']} "
            f"images: {describe(same['accuracy'], same['n_validation'])}. "
            f"Only the target was right on {same['target_only']} of them, only the proxy on {same['proxy_only']}."
        )
    elif earlier is not None:
        why = (result.get("proxy") or {}).get("unavailable") or (
            "this target was trained before the app kept the last proxy; train it again to compare the two on "
            "the same images"
        )
        lines.append(
            f"**The proxy that chose batch {earlier.index + offset}**: "
            f"{describe(earlier.proxy_val_acc, earlier.proxy_val_n)}, measured when it trained, on the validation "
            f"images labeled then, not the target's {n}: the two are on different images, so no difference is "
            f"shown. Not measured again: {widgets.md(why)}."
        )
    st.markdown("  \n".join(lines))


def main() -> None:
    project = project_forms.require_project("manage", "target")
    st.title("Target")
    train_controls(project)
    result = jobs.last_target_result(project)
    if result:
        results(project, result, labeling.batch_offset(project))
    subset_comparison(project, result)


if __name__ == "__main__":
    main()
