"""The latest round's proxy, kept so that it can be measured again on today's validation images.

A round measures its proxy on the validation images labeled at the time; the
validation set grows afterwards, so a proxy accuracy on 5 images sits beside a
target accuracy on 24 (issue 25). After a round, its own proxy (the project's
proxy at its training level, not an override, and one that learned) is saved
in `models/proxy/`, overwriting the one before: one proxy per project, never
one per round. The target job re-scores it on exactly the validation images
the target is measured on (`rescore`), so the two can be compared.

- a proxy trained on pixels: an engine.checkpoint (`model.safetensors`,
  `metadata.json`), whose weights are also the next round's warm start;
- a head on the backbone's embeddings: `head.safetensors` (the head's
  weights and the pool statistics its features were standardised with); it
  is measured again only while the backbone has the same weights
  (fingerprint).

`round.json` names the round and what is saved; it is removed first and
written last, so a crash in between leaves no proxy, never one with another
round's name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import storage
from engine.checkpoint import WEIGHTS, CheckpointError, load_checkpoint, save_checkpoint
from engine.embeddings import BackboneError, pool_embeddings, resize_images
from engine.frozen import Features, build_head, standardize
from engine.names import batch_offset
from engine.pool_cache import PoolCache
from engine.representation import load_backbone
from engine.score import predict_logits

PROXY_DIR = "proxy"
ROUND_FILE = "round.json"
HEAD_FILE = "head.safetensors"
FORMAT = "proxy-labeler-round-proxy/1"


def proxy_dir(project: storage.Project) -> Path:
    return project.models_dir / PROXY_DIR


def weights_path(project: storage.Project) -> Path:
    """The saved pixel proxy's weights (the warm start of the next round's proxy)."""
    return proxy_dir(project) / WEIGHTS


def save_pixel_proxy(
    project: storage.Project, made: storage.Round, model: nn.Module, pool: PoolCache, class_names: tuple[str, ...]
) -> Path:
    """Save round `made`'s proxy trained on pixels (an engine.checkpoint) in place of the last one."""
    folder = _begin(project)
    save_checkpoint(
        model,
        folder,
        class_names=class_names,
        image_size=pool.image_size,
        normalization=pool.normalization,
        metrics={"round_id": made.id, "round": made.index, "accuracy": made.proxy_val_acc, "n": made.proxy_val_n},
        n_labels=made.n_labeled,
    )
    (folder / HEAD_FILE).unlink(missing_ok=True)
    return _finish(folder, made, "pixels", class_names, {})


def save_head_proxy(
    project: storage.Project,
    made: storage.Round,
    head: nn.Module,
    kind: str,
    features: Features,
    fingerprint: str,
    input_size: int,
    class_names: tuple[str, ...],
) -> Path:
    """Save round `made`'s head on the backbone (weights and feature statistics) in place of the last proxy."""
    from safetensors.torch import save_file

    folder = _begin(project)
    state = {f"head.{k}": v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    state["features.mean"] = features.mean.contiguous()
    state["features.std"] = features.std.contiguous()
    with storage.atomic_write(folder / HEAD_FILE) as tmp:
        save_file(state, str(tmp))
    for name in (WEIGHTS, "metadata.json"):
        (folder / name).unlink(missing_ok=True)
    extra = {"head": kind, "dim": features.dim, "fingerprint": fingerprint, "input_size": int(input_size)}
    return _finish(folder, made, "head", class_names, extra)


def _begin(project: storage.Project) -> Path:
    folder = proxy_dir(project)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ROUND_FILE).unlink(missing_ok=True)  # from here until _finish no proxy is saved
    return folder


def _finish(folder: Path, made: storage.Round, kind: str, class_names: tuple[str, ...], extra: dict) -> Path:
    record = {
        "format": FORMAT,
        "kind": kind,
        "round_id": made.id,
        "round": made.index,
        "selector": made.selector,
        "class_names": list(class_names),
        "accuracy": made.proxy_val_acc,
        "n": made.proxy_val_n,
        **extra,
    }
    with storage.atomic_write(folder / ROUND_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return folder


@dataclass
class Rescored:
    """The saved proxy measured again: its round and predicted class per image, or why it could not be."""

    round: int | None = None  # the round whose proxy it is
    selector: str | None = None
    predicted: np.ndarray | None = None  # int64 [N], one per validation image, ascending item id
    unavailable: str | None = None  # why there is no measurement


def rescore(
    project: storage.Project, settings: storage.Settings, pool: PoolCache, labels: dict[int, int], device=None
) -> Rescored:
    """The saved proxy's class for each of `labels`' images (item id -> class; ascending id, as
    `pool.arrays`), or why it cannot give them: no proxy saved, the classes or the backbone changed since
    its round, or its files cannot be read. Never raises for a saved proxy that does not fit."""
    folder = proxy_dir(project)
    try:
        record = json.loads((folder / ROUND_FILE).read_text())
    except FileNotFoundError:
        return Rescored(
            unavailable="no proxy is kept yet (the app kept none before this version; the next proxy trained to "
            "choose a batch will be)"
        )
    except (OSError, ValueError) as exc:
        return Rescored(unavailable=f"the saved proxy's record cannot be read ({exc})")
    found = Rescored(round=record.get("round"), selector=record.get("selector"))
    try:
        made = storage.get_round(project, int(record["round_id"]))
    except (storage.StorageError, KeyError, TypeError, ValueError):
        made = None
    if made is None or made.index != found.round:
        found.unavailable = "the saved proxy belongs to no round of this project"
        return found
    chose = f"the proxy that chose batch {made.index + batch_offset(storage.list_rounds(project))}"  # as people count
    if list(record.get("class_names", [])) != list(settings.classes):
        found.unavailable = f"the classes changed since {chose} was saved"
        return found
    if not labels:
        found.unavailable = "no validation image is labeled"
        return found
    try:
        if record.get("kind") == "pixels":
            found.predicted = _pixel_predictions(folder, made, chose, pool, labels, device)
        elif record.get("kind") == "head":
            found.predicted = _head_predictions(project, settings, folder, record, chose, pool, labels)
        else:
            found.unavailable = f"the saved proxy is of an unknown kind {record.get('kind')!r}"
    except _Unfit as exc:
        found.unavailable = str(exc)
    except (CheckpointError, BackboneError, OSError, ValueError, RuntimeError, KeyError) as exc:
        found.unavailable = f"the saved proxy, {chose}, cannot be read ({exc})"
    return found


class _Unfit(Exception):
    """The saved proxy cannot be applied to today's images; the message says why."""


def _pixel_predictions(folder: Path, made: storage.Round, chose: str, pool: PoolCache, labels: dict[int, int], device):
    """`chose`: the proxy `made` trained, named for people ("the proxy that chose batch N")."""
    loaded = load_checkpoint(folder)
    if loaded.metadata.get("metrics", {}).get("round_id") != made.id:
        raise _Unfit(f"the saved proxy's weights are not those of {chose} (saving a proxy was interrupted)")
    images, _ = pool.arrays(labels)
    images = resize_images(images, loaded.image_size)
    logits = predict_logits(loaded.model, images, loaded.normalization, device=device, tta=True)
    return logits.argmax(1).astype(np.int64)


def _head_predictions(
    project, settings, folder: Path, record: dict, chose: str, pool: PoolCache, labels: dict[int, int]
):
    from safetensors.torch import load_file

    backbone = load_backbone(project, settings, pool.image_size)
    if backbone is None or backbone.fingerprint != record["fingerprint"] or backbone.input_size != record["input_size"]:
        raise _Unfit(
            f"the backbone changed since {chose}, a head on it, was saved: its embeddings are not the ones the "
            "head learned"
        )
    state = load_file(str(folder / HEAD_FILE))
    head = build_head(record["head"], int(record["dim"]), len(record["class_names"]))
    head.load_state_dict({k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")})
    ids = np.array(sorted(labels), dtype=np.int64)
    images, _ = pool.arrays(labels)
    embeddings = pool_embeddings(project.cache_dir, backbone, ids, images, settings.device)  # cached rows: no pass
    with torch.inference_mode():
        logits = head.eval()(standardize(embeddings, state["features.mean"], state["features.std"]))
    return logits.argmax(1).numpy().astype(np.int64)
