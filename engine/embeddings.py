"""Backbones and the pool's embeddings, computed once per backbone and reused by every round.

A project's `backbone` setting is one of:
- `none`: no backbone; the proxy trains from scratch on pixels (engine.round).
- `ssl`: the SimCLR backbone trained on the project's own pool
  (engine.ssl, run as a background job; saved as models/backbone_ssl.*).
- a local weights file of a torchvision ResNet (resnet18/34/50; the
  architecture is read from the file), or just the name `resnet18`,
  `resnet34` or `resnet50`, looked up in the local torch cache
  ($TORCH_HOME/hub/checkpoints, default ~/.cache/torch). Nothing is ever
  downloaded; a missing or mismatched file is a BackboneError saying which.

Embeddings live beside the pool cache as a float16 memmap,
`cache/embeddings/<fingerprint>_<size>.npy`, with the item id of each row in
`..._ids.npy`; the fingerprint names the weights, so new weights never reuse
old rows. Items added later are embedded alone and appended.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import storage
from engine.backbone_files import (  # noqa: F401  (re-exported)
    NONE,
    SSL,
    SSL_META,
    SSL_STATE,
    SSL_WEIGHTS,
    TORCH_ARCHS,
    BackboneError,
    check_backbone_setting,
    find_cached_weights,
    read_meta,
    ssl_meta,
    torch_cache_dir,
    weights_path,
)
from engine.device import Normalization, best_device, check_images, normalization_tensors
from engine.models import TORCHVISION, Model, ModelConfig, _read_state_dict, model_from_config
from engine.pool_cache import read_rows
from engine.precision import autocast

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PRETRAINED_MIN_INPUT = 96  # ImageNet ResNets downsample 32x: smaller inputs leave them 1x1 maps too early
PRETRAINED_MAX_INPUT = 224
EMBED_BATCH = 256
EMBED_CHUNK = 8192  # pool rows read into memory at a time to embed (25 MB at 32 px, 400 MB at 128 px)


@dataclass
class Backbone:
    """A model whose `embed(x)` gives the representation, and how to feed it."""

    name: str  # "ssl", or the weights file's name
    model: Model  # eval mode; embed(normalized float [B, 3, s, s]) -> [B, D]
    input_size: int  # images are resized to this side before embedding
    normalization: Normalization
    fingerprint: str  # names these weights in the embedding cache

    @property
    def dim(self) -> int:
        return int(self.model.embed_dim)


def load_backbone_file(path: str | Path, pool_image_size: int) -> Backbone:
    """A torchvision ResNet from a local state dict; the depth is read from the tensors' names."""
    path = Path(path)
    try:
        state = _read_state_dict(path)
    except (ValueError, FileNotFoundError) as exc:
        raise BackboneError(str(exc)) from exc
    depth = resnet_depth(state, path)
    classes = int(state["fc.weight"].shape[0]) if "fc.weight" in state else 1000
    config = ModelConfig(f"tv_resnet{depth}", TORCHVISION, depth, 64, classes, PRETRAINED_MAX_INPUT)
    model = model_from_config(config)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith("fc.")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise BackboneError(
            f"{path} does not fit a torchvision resnet{depth}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    size = min(PRETRAINED_MAX_INPUT, max(PRETRAINED_MIN_INPUT, pool_image_size))
    return Backbone(path.name, model.eval(), size, IMAGENET, file_fingerprint(path))


def resnet_depth(state: dict[str, torch.Tensor], path: Path) -> int:
    """18, 34 or 50 from a ResNet state dict's block names; BackboneError for anything else."""
    if "conv1.weight" not in state or "layer4.0.conv1.weight" not in state:
        raise BackboneError(
            f"{path} does not look like a torchvision ResNet state dict "
            f"(no conv1/layer4 weights); supported: {', '.join(TORCH_ARCHS)}"
        )
    blocks = [1 + max(int(k.split(".")[1]) for k in state if k.startswith(f"layer{i}.")) for i in range(1, 5)]
    bottleneck = "layer1.0.conv3.weight" in state
    known = {(False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34, (True, (3, 4, 6, 3)): 50}
    depth = known.get((bottleneck, (blocks[0], blocks[1], blocks[2], blocks[3])))
    if depth is None:
        raise BackboneError(f"{path} holds a ResNet with blocks {blocks}; supported: {', '.join(TORCH_ARCHS)}")
    return depth


def file_fingerprint(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256 (remembered per path, size and modification time:
    rounds ask for it every time and a ResNet-50 file is 100 MB)."""
    stat = Path(path).stat()
    return _fingerprint(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- the ssl backbone on disk


def _ssl_bytes(model: nn.Module) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def ssl_fingerprint(model: nn.Module) -> str:
    """The fingerprint the model's weights file will have once saved (safetensors bytes are deterministic)."""
    return hashlib.sha256(_ssl_bytes(model)).hexdigest()[:16]


def save_ssl_backbone(models_dir: Path, model: nn.Module, meta: dict) -> None:
    """Store a trained SSL backbone: the weights, then its metadata (the file that says it is ready)."""
    data = _ssl_bytes(model)
    with storage.atomic_write(models_dir / SSL_WEIGHTS) as tmp:
        tmp.write_bytes(data)
    meta = dict(meta, fingerprint=hashlib.sha256(data).hexdigest()[:16])
    with storage.atomic_write(models_dir / SSL_META) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))


def load_ssl_backbone(models_dir: Path) -> Backbone | None:
    """The project's trained SSL backbone, or None when it has not finished training."""
    return load_ssl_weights(models_dir / SSL_WEIGHTS)


def load_ssl_weights(weights: Path) -> Backbone | None:
    """An SSL backbone from its weights and the metadata beside them (same name, .json); None if either is absent."""
    from safetensors.torch import load_file

    meta = read_meta(weights.with_suffix(".json"))
    if meta is None or not weights.is_file():
        return None
    try:
        config = ModelConfig(**meta["model_config"])
        model = model_from_config(config)
        model.load_state_dict(load_file(str(weights)))
        mean, std = meta["normalization"]
    except Exception as exc:  # damaged or foreign files: say so; the job can be run again
        raise BackboneError(
            f"the self-supervised backbone {weights} cannot be read ({exc}); train it again from the Project page"
        ) from exc
    return Backbone(SSL, model.eval(), config.image_size, (tuple(mean), tuple(std)), meta["fingerprint"])


# ---------------------------------------------------------------- embeddings


@torch.inference_mode()
def embed_images(
    backbone: Backbone, images: np.ndarray, device: str = "auto", on_progress: Callable[[float], None] | None = None
) -> np.ndarray:
    """float32 [N, D] embeddings of uint8 `images` [N, 3, S, S], resized to the backbone's input."""
    check_images(images)
    target = best_device(device)
    model = backbone.model.to(target).eval()  # .to and .eval return the module itself
    mean, std = normalization_tensors(backbone.normalization, target)
    out = np.empty((len(images), backbone.dim), np.float32)
    size = backbone.input_size
    for start in range(0, len(images), EMBED_BATCH):
        batch = torch.from_numpy(np.array(images[start : start + EMBED_BATCH], dtype=np.uint8)).to(target)
        x = (batch.float() - mean) / std
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=x.shape[-1] > size, align_corners=False)
        with autocast(target):
            embedded = model.embed(x.contiguous(memory_format=torch.channels_last))
        out[start : start + len(batch)] = embedded.float().cpu()
        if on_progress is not None:
            on_progress(min(1.0, (start + len(batch)) / len(images)))
    return out


def backbone_classifier(backbone: Backbone, num_classes: int, *, seed: int | None = None) -> Model:
    """The backbone's architecture and weights with a fresh `num_classes` classifier, to fine-tune as a
    target; it takes the backbone's input size and normalization (`resize_images`)."""
    config = dataclasses.replace(backbone.model.config, num_classes=num_classes, image_size=backbone.input_size)
    model = model_from_config(config, seed=seed)
    trunk = {k: v for k, v in backbone.model.state_dict().items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(trunk, strict=False)
    if unexpected or any(not k.startswith("fc.") for k in missing):
        raise BackboneError(
            f"the {backbone.name} backbone does not fit {config.name}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, 3, size, size] of uint8 `images` [N, 3, S, S] (bilinear, antialiased when shrinking)."""
    images = np.asarray(images)
    if images.shape[-1] == size:
        return images
    out = np.empty((len(images), 3, size, size), np.uint8)
    for start in range(0, len(images), EMBED_BATCH):
        batch = torch.from_numpy(np.array(images[start : start + EMBED_BATCH], dtype=np.float32))
        resized = F.interpolate(
            batch, size=(size, size), mode="bilinear", antialias=batch.shape[-1] > size, align_corners=False
        )
        out[start : start + len(batch)] = resized.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def pool_embeddings(
    cache_dir: Path,
    backbone: Backbone,
    item_ids: np.ndarray,
    images: np.ndarray,
    device: str = "auto",
    on_progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """float16 [N, D] embeddings of the pool rows `item_ids` (int64, images[i] is item_ids[i]).

    Rows already in the cache for this backbone are read from it; only the
    others are embedded, EMBED_CHUNK images read from `images` (the pool's
    memmap) at a time, so memory holds a chunk of the pool, never the pool;
    then the cache is rewritten with all of them (the rows file first, the
    ids last, each moved into place whole).
    """
    item_ids = np.asarray(item_ids, dtype=np.int64)
    rows_path, ids_path = embedding_paths(cache_dir, backbone)
    cached_ids, cached = _load_embeddings(rows_path, ids_path, backbone.dim)
    have = np.isin(item_ids, cached_ids)
    if have.all() and len(cached_ids):
        return cached[_rows_of(cached_ids, item_ids)]
    todo = np.flatnonzero(~have)
    from engine.distributed.launch import embed_rows  # several processes when the job runs in several

    new = embed_rows(backbone, images, todo, device, on_progress)
    all_ids = np.concatenate([cached_ids, item_ids[todo]])
    order = np.argsort(all_ids, kind="stable")
    all_rows = np.empty((len(all_ids), backbone.dim), np.float16)
    rank = np.empty(len(all_ids), np.int64)
    rank[order] = np.arange(len(all_ids))  # where each cached row, then each new row, goes
    all_rows[rank[len(cached_ids) :]] = new
    for start in range(0, len(cached_ids), EMBED_CHUNK):
        stop = min(start + EMBED_CHUNK, len(cached_ids))
        all_rows[rank[start:stop]] = read_rows(cached, slice(start, stop))
    all_ids = all_ids[order]
    _write(rows_path, all_rows)
    _write(ids_path, all_ids)
    if np.array_equal(all_ids, item_ids):
        return all_rows  # the whole pool, in its order: no copy
    return all_rows[_rows_of(all_ids, item_ids)]


def embed_chunks(
    backbone: Backbone,
    images: np.ndarray,
    rows: np.ndarray,
    device: str = "auto",
    on_progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """float16 [len(rows), D] embeddings of `images[rows]`, EMBED_CHUNK rows read at a time (from the pool's
    memmap: memory holds a chunk of the pool, never the pool)."""
    new = np.empty((len(rows), backbone.dim), np.float16)
    for start in range(0, len(rows), EMBED_CHUNK):
        part = rows[start : start + EMBED_CHUNK]
        progress = _chunk_progress(on_progress, start, len(part), len(rows))
        new[start : start + len(part)] = embed_images(backbone, read_rows(images, part), device, progress)
    return new


def _chunk_progress(on_progress: Callable[[float], None] | None, start: int, size: int, total: int):
    """A chunk's own 0..1 progress as the whole run's."""
    if on_progress is None:
        return None
    return lambda fraction: on_progress((start + fraction * size) / total)


def embedding_paths(cache_dir: Path, backbone: Backbone) -> tuple[Path, Path]:
    folder = Path(cache_dir) / "embeddings"
    stem = f"{backbone.fingerprint}_{backbone.input_size}"
    return folder / f"{stem}.npy", folder / f"{stem}_ids.npy"


def _load_embeddings(rows_path: Path, ids_path: Path, dim: int) -> tuple[np.ndarray, np.ndarray]:
    empty = (np.empty(0, np.int64), np.empty((0, dim), np.float16))
    try:
        ids = np.load(ids_path)
        rows = np.load(rows_path, mmap_mode="r")
    except (FileNotFoundError, ValueError, OSError):
        return empty
    if rows.shape != (len(ids), dim) or rows.dtype != np.float16 or np.any(np.diff(ids) <= 0):
        return empty  # written by an interrupted run, or by other weights: embed again
    return ids.astype(np.int64), rows


def _rows_of(sorted_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_ids, wanted)


def _write(path: Path, array: np.ndarray) -> None:
    with storage.atomic_write(path) as tmp:
        np.save(tmp, array)
