"""A project's representation of its pool: its backbone, the pool's embeddings, and the SSL job.

`load_backbone` turns the `backbone` setting into a Backbone (None for
`none`, and for `ssl` until its training has finished); `project_embeddings`
gives the pool's embeddings through the cache; `train_ssl_backbone` is the
background job that learns the `ssl` backbone on the pool, resumable after a
crash or a cancel, and ends with a quality readout on the labels so far.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import storage
from engine.distributed.launch import pretrain_model
from engine.embeddings import (
    NONE,
    SSL,
    SSL_STATE,
    Backbone,
    BackboneError,
    load_backbone_file,
    load_ssl_backbone,
    load_ssl_weights,
    pool_embeddings,
    save_ssl_backbone,
    ssl_fingerprint,
    ssl_meta,
    weights_path,
)
from engine.frozen import knn_predict
from engine.initial import RoundError
from engine.pool_cache import PoolCache
from engine.ssl import SSLConfig, SSLProgress, backbone_config, ssl_input_size

OnProgress = Callable[[float, str], None]


def load_backbone(project: storage.Project, settings: storage.Settings, image_size: int) -> Backbone | None:
    """The project's backbone; None for `none`, or for `ssl` while it has not finished training."""
    value = (settings.backbone or NONE).strip()
    if value == NONE:
        return None
    if value == SSL:
        return load_ssl_backbone(project.models_dir)
    path = weights_path(value)
    if path.suffix == ".safetensors" and path.with_suffix(".json").is_file():
        return load_ssl_backbone_file(path)
    return load_backbone_file(path, image_size)


def load_ssl_backbone_file(path: Path) -> Backbone:
    """An SSL backbone exported from another project (its .safetensors with the .json beside it)."""
    backbone = load_ssl_weights(path)
    if backbone is None:
        raise BackboneError(f"{path} has no readable metadata beside it ({path.with_suffix('.json').name})")
    return backbone


def project_embeddings(
    project: storage.Project,
    backbone: Backbone,
    pool: PoolCache,
    device: str = "auto",
    on_progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """float32 [N, D] embeddings of the pool's rows (cached per backbone, new items embedded alone)."""
    rows = pool_embeddings(project.cache_dir, backbone, pool.item_ids, pool.images, device, on_progress)
    return np.asarray(rows, dtype=np.float32)


def ssl_config(settings: storage.Settings, steps: int = 0) -> SSLConfig:
    """The SimCLR run of a project: its device and seed, `ssl_minutes` long (or `steps` steps)."""
    return dataclasses.replace(
        SSLConfig(),
        device=settings.device,
        seed=settings.seed,
        steps=steps,
        max_seconds=None if steps else float(settings.ssl_minutes) * 60,
    )


def train_ssl_backbone(
    project: storage.Project,
    on_progress: OnProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    steps: int = 0,
) -> dict:
    """Learn the `ssl` backbone on the project's pool, save it, embed the pool; return its metadata.

    Resumes from the saved training state when one exists (a crash, a
    cancel). The metadata holds the steps, seconds, final loss and
    `knn_accuracy`: leave-one-out weighted k-NN accuracy of the embeddings on
    the labels so far (None with fewer than 2 classes labeled).
    """
    from engine.round import load_project_pool  # engine.round imports this module

    report = on_progress or (lambda fraction, message: None)
    settings = storage.load_settings(project)
    pool = load_project_pool(project, settings, lambda f: report(0.05 * f, "decoding images"))
    config = ssl_config(settings, steps)
    state = project.models_dir / SSL_STATE

    def on_step(p: SSLProgress) -> None:
        report(
            0.05 + 0.85 * p.fraction, f"learning the pool's representation: step {p.step}/{p.steps}, loss {p.loss:.2f}"
        )

    result = pretrain_model(pool.images, pool.normalization, config, state, on_step, should_stop)
    model_config = backbone_config(config, ssl_input_size(pool.image_size))
    meta = {
        "model_config": dataclasses.asdict(model_config),
        "normalization": [list(v) for v in pool.normalization],
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "final_loss": result.final_loss,
        "pool_size": len(pool.item_ids),
        "finished_at": time.time(),
    }
    # embedded before it is saved, so rounds keep the previous backbone (weights and metadata together) until then
    backbone = Backbone(
        SSL, result.model.eval(), model_config.image_size, pool.normalization, ssl_fingerprint(result.model)
    )
    report(0.9, "embedding the pool")
    embeddings = project_embeddings(
        project, backbone, pool, settings.device, lambda f: report(0.9 + 0.1 * f, "embedding the pool")
    )
    meta["knn_accuracy"] = labels_knn_accuracy(project, pool, embeddings, len(settings.classes))
    save_ssl_backbone(project.models_dir, result.model, meta)
    state.unlink(missing_ok=True)
    report(1.0, "representation ready")
    return ssl_meta(project.models_dir) or meta


def labels_knn_accuracy(
    project: storage.Project, pool: PoolCache, embeddings: np.ndarray, num_classes: int
) -> float | None:
    """Leave-one-out weighted k-NN accuracy of `embeddings` on every label so far (validation included)."""
    labels = {**storage.training_labels(project), **storage.validation_labels(project)}
    in_pool = set(pool.item_ids.tolist())
    labels = {i: c for i, c in labels.items() if i in in_pool}
    if len(set(labels.values())) < 2 or len(labels) < 3:
        return None
    ids = sorted(labels)
    rows = embeddings[pool.positions(ids)]
    truth = np.array([labels[i] for i in ids])
    predicted = knn_predict(rows, truth, rows, num_classes, exclude_self=True)
    return float((predicted == truth).mean())


def require_backbone(
    project: storage.Project,
    settings: storage.Settings,
    image_size: int,
    instead: str = "a proxy that trains on pixels",
) -> Backbone:
    """The project's backbone, or RoundError saying why there is none to use (and to choose `instead`)."""
    try:
        backbone = load_backbone(project, settings, image_size)
    except BackboneError as exc:
        raise RoundError(str(exc)) from exc
    if backbone is not None:
        return backbone
    if settings.backbone == SSL:
        raise RoundError(
            f"the self-supervised backbone has not finished training; wait for it (Project page) or choose {instead}"
        )
    raise RoundError(f"the project has no backbone; set backbone to ssl or a weights file, or choose {instead}")
