"""The pool cache: every usable image decoded once into a memory-mappable uint8 array.

Files in `cache_dir` for image size S:
- `pool_{S}.npy`: uint8 [N, 3, S, S], RGB, loaded with `np.load(mmap_mode="r")`;
- `pool_{S}_ids.npy`: int64 [N], the item id of each row (row = pool position);
- `pool_{S}_stats.json`: per-channel mean/std in 0..1 units, N, a hash of the
  ids and a CRC-32 per block of BLOCK rows of pixels.

Each file is written under a temporary name and moved into place with
os.replace, the stats last; `load_pool_cache` checks the three agree, and
the pixels against their block checksums (once per process and file
version), so an interrupted build or a damaged file (pixels zeroed behind a
valid header) is seen as "no cache" and rebuilt, never trained on.
This module imports no torch: decoding workers start fast.

Memory: no pass over the pool holds it. The build writes the pixels with
plain file writes, block by block as they are decoded, keeping the channel
histograms and the checksums as they pass; the check on loading and every
other pass over the memmap (`read_rows`) hands the pages it read back to the
page cache at once. The resident memory of a pass is one chunk whatever the
pool's size (a million 32 px images are 3 GB of pixels, 128 px ones 49 GB).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from storage.parallel import process_map

CHUNK = 128  # images per worker task
STATS_CHUNK = 2048  # images per step when computing channel statistics
BLOCK = 1024  # rows per checksum block
WORKERS = 2
BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white


class PoolCacheError(RuntimeError):
    """An image could not be decoded, or the cache request is invalid."""


class UnreadableImage(PoolCacheError):
    """The image at `path` could not be read or decoded (`reason` says why)."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot decode image {path}: {reason}")
        self.path, self.reason = str(path), reason

    def __reduce__(self):  # raised in a decoding process: must survive pickling
        return UnreadableImage, (self.path, self.reason)


@dataclass
class PoolCache:
    """The decoded pool. Row i of `images` is item `item_ids[i]` (its pool position)."""

    item_ids: np.ndarray  # int64 [N]
    images: np.ndarray  # uint8 [N, 3, S, S], the read-only memmap (a copy in memory for a `subset`)
    mean: tuple[float, float, float]  # per channel, 0..1
    std: tuple[float, float, float]  # per channel, 0..1

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def normalization(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """(mean, std) as `engine.train` and `engine.score` take it."""
        return self.mean, self.std

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    def positions(self, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Pool positions (int64) of `item_ids`; KeyError if one is not cached."""
        wanted = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        order = np.argsort(self.item_ids, kind="stable")
        sorted_ids = self.item_ids[order]
        at = np.minimum(np.searchsorted(sorted_ids, wanted), max(0, len(sorted_ids) - 1))
        missing = sorted_ids[at] != wanted if len(sorted_ids) else np.ones(wanted.shape, bool)
        if np.any(missing):
            raise KeyError(f"items not in the pool cache: {wanted[missing][:10].tolist()}")
        return order[at].astype(np.int64)

    def subset(self, item_ids: Sequence[int] | np.ndarray) -> PoolCache:
        """The pool of `item_ids` only, rows in that order: this pool itself when they are its rows
        (no copy of the memmap), else a copy in memory; KeyError if one is not cached."""
        ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        if np.array_equal(ids, self.item_ids):
            return self
        return PoolCache(ids, np.asarray(self.images[self.positions(ids)]), self.mean, self.std)

    def arrays(self, labels: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images [L, 3, S, S], int64 class indices [L]) of `labels` (item id -> class), ascending id."""
        ids = sorted(labels)
        return np.asarray(self.images[self.positions(ids)]), np.array([labels[i] for i in ids], dtype=np.int64)


def pick_image_size(sizes: Sequence[tuple[int, int]]) -> int:
    """Cache side in px from the images' (width, height): by the median shorter side m.

    m <= 48 -> 32 (CIFAR-sized), m <= 96 -> 64, m <= 160 -> 96, else 128
    (photos; 128 keeps CPU rounds affordable). ValueError for no sizes.
    """
    if len(sizes) == 0:
        raise ValueError("pick_image_size needs at least one (width, height)")
    median = float(np.median([min(int(w), int(h)) for w, h in sizes]))
    for limit, size in ((48, 32), (96, 64), (160, 96)):
        if median <= limit:
            return size
    return 128


def decode_image(path: str | Path, image_size: int) -> np.ndarray:
    """uint8 [3, S, S] RGB of the image at `path` (S = image_size); PoolCacheError naming the file."""
    _check_size(image_size)
    try:
        with Image.open(path) as img:
            return image_to_array(img, image_size)
    except FileNotFoundError as exc:
        raise UnreadableImage(path, "file not found") from exc
    except Exception as exc:  # any decoder failure becomes one clear error
        raise UnreadableImage(path, str(exc) or type(exc).__name__) from exc


def image_to_array(img: Image.Image, image_size: int) -> np.ndarray:
    """uint8 [3, S, S] RGB of an open PIL image: the pool cache's resize rule.

    First frame of animations; EXIF orientation applied; any mode made RGB
    (see `to_rgb`); the shorter side resized to S (bicubic, antialiased) and
    the longer side center-cropped to S.
    """
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if img.format == "JPEG":
        img.draft("RGB", (image_size, image_size))  # DCT-domain downscale: keeps both sides >= S
    img = to_rgb(ImageOps.exif_transpose(img))
    img = ImageOps.fit(img, (image_size, image_size), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB version of any Pillow mode.

    Alpha (RGBA, LA, P with transparency) is composited onto white; 16-bit
    and 32-bit integer images are scaled from 0..65535 when they exceed 255;
    float images in 0..1 are scaled to 0..255.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(img), mode), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if mode == "F" and peak <= 1.0:
        values = values * 255.0
    elif mode.startswith("I;16") or peak > 255:
        values = values / 257.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def read_rows(images: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """`images[rows]` copied into memory (`rows`: a slice, or ascending int positions).

    From the pool cache's read-only memmap, the pages read are handed back at
    once (they stay in the page cache; only this process's mapping of them
    goes), so reading the whole pool a chunk at a time keeps one chunk
    resident, not the pool.
    """
    if isinstance(rows, slice):
        first, stop, _ = rows.indices(len(images))
    else:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.array(images[rows])
        first, stop = int(rows.min()), int(rows.max()) + 1
        if stop - first == len(rows) and np.all(np.diff(rows) == 1):
            rows = slice(first, stop)  # a run: one slice reads faster than positions
    out = np.array(images[rows])
    release_rows(images, first, stop)
    return out


def release_rows(images: np.ndarray, first: int, stop: int) -> None:
    """Hand back this process's pages of rows first:stop of a read-only memmap (nothing for other arrays).

    madvise(MADV_DONTNEED) on a read-only file mapping drops the mapping of
    those pages, never data: a later read maps them again from the page cache.
    """
    mapped = getattr(images, "_mmap", None)
    if (
        mapped is None
        or getattr(images, "mode", None) != "r"
        or not hasattr(mmap, "MADV_DONTNEED")
        or not images.flags.c_contiguous
        or stop <= first
    ):
        return
    base = np.frombuffer(mapped, np.uint8)  # the mapping's own start (numpy maps from a page boundary)
    start = images.ctypes.data - base.ctypes.data + first * images.strides[0]
    del base  # an exported buffer would keep the mapping from being closed
    begin = start - start % mmap.PAGESIZE
    end = min(len(mapped), start + (stop - first) * images.strides[0])
    if 0 <= begin < end:
        mapped.madvise(mmap.MADV_DONTNEED, begin, end - begin)


def load_pool_cache(cache_dir: str | Path, image_size: int) -> PoolCache | None:
    """The cache for `image_size` in `cache_dir`, or None if absent, incomplete or inconsistent."""
    array_path, ids_path, stats_path = _paths(Path(cache_dir), image_size)
    if not (array_path.is_file() and ids_path.is_file() and stats_path.is_file()):
        return None
    try:
        images = np.load(array_path, mmap_mode="r")
        ids = np.load(ids_path)
        stats = json.loads(stats_path.read_text())
    except (OSError, ValueError):
        return None
    n = ids.shape[0] if ids.ndim == 1 else -1
    if (
        images.dtype != np.uint8
        or images.shape != (n, 3, image_size, image_size)
        or ids.dtype != np.int64
        or stats.get("n") != n
        or stats.get("ids_sha256") != _ids_hash(ids)
        or not _pixels_intact(array_path, images, stats.get("blocks"))
    ):
        return None
    return PoolCache(ids, images, tuple(stats["mean"]), tuple(stats["std"]))


_intact: set[tuple] = set()  # (path, inode, size, mtime) of cache files whose blocks were checked


def _pixels_intact(path: Path, images: np.ndarray, blocks: list | None) -> bool:
    """Every block's CRC-32 matches the stats; checked once per process and version of the file."""
    try:
        info = path.stat()
    except OSError:
        return False
    key = (str(path), info.st_ino, info.st_size, info.st_mtime_ns)
    if key in _intact:
        return True
    if blocks is None or blocks != block_checksums(images):
        return False
    _intact.add(key)
    return True


def block_checksums(images: np.ndarray) -> list[int]:
    """CRC-32 of each run of BLOCK rows (about 1 GB/s: a 20,000-image 32 px pool in ~0.1 s); a memmap's
    pages are handed back block by block (`release_rows`)."""
    sums = []
    for start in range(0, images.shape[0], BLOCK):
        sums.append(zlib.crc32(np.ascontiguousarray(images[start : start + BLOCK]).data))
        release_rows(images, start, start + BLOCK)
    return sums


def build_pool_cache(
    cache_dir: str | Path,
    items: Sequence[tuple[int, str | Path]],
    image_size: int,
    on_progress: Callable[[int, int], None] | None = None,
    *,
    workers: int = WORKERS,
) -> PoolCache:
    """Cache exactly `items` ((item id, absolute path) pairs) at `image_size`; return the cache.

    Rows already cached are copied, never decoded again; new items are
    decoded (in `workers` processes when there are many) and appended, in the
    order given. Cached items missing from `items` are dropped. Calls
    `on_progress(decoded, to_decode)` as decoding advances. PoolCacheError
    names the first file that fails to decode; the old cache is then untouched.
    """
    _check_size(image_size)
    cache_dir = Path(cache_dir)
    ids = np.array([int(i) for i, _ in items], dtype=np.int64)
    if ids.size == 0:
        raise PoolCacheError("no items to cache")
    if np.unique(ids).size != ids.size:
        raise PoolCacheError("item ids passed to build_pool_cache must be unique")
    old = load_pool_cache(cache_dir, image_size)
    old_ids = old.item_ids if old is not None else np.empty(0, np.int64)
    keep = np.isin(old_ids, ids)
    cached = set(old_ids[keep].tolist())
    new_items = [(int(i), Path(p)) for i, p in items if int(i) not in cached]
    if old is not None and keep.all() and not new_items:
        return old
    cache_dir.mkdir(parents=True, exist_ok=True)
    final_ids = np.concatenate([old_ids[keep], np.array([i for i, _ in new_items], np.int64)])
    _write(cache_dir, image_size, final_ids, old, keep, new_items, on_progress, workers)
    cache = load_pool_cache(cache_dir, image_size)
    if cache is None:
        raise PoolCacheError(f"pool cache in {cache_dir} could not be read back after writing")
    return cache


def _write(cache_dir, size, final_ids, old, keep, new_items, on_progress, workers) -> None:
    array_path, ids_path, stats_path = _paths(cache_dir, size)
    tmp = [p.with_name(f"{p.name}.{os.getpid()}.tmp") for p in (array_path, ids_path, stats_path)]
    try:
        with _PixelWriter(tmp[0], len(final_ids), size) as out:
            kept = np.flatnonzero(keep)
            for start in range(0, len(kept), STATS_CHUNK):
                out.write(read_rows(old.images, kept[start : start + STATS_CHUNK]))
            for block in _decoded([p for _, p in new_items], size, on_progress, workers):
                out.write(block)
        mean, std = _stats_of(out.counts)
        with open(tmp[1], "wb") as f:
            np.save(f, final_ids)
        stats = {
            "n": len(final_ids),
            "image_size": size,
            "ids_sha256": _ids_hash(final_ids),
            "mean": mean,
            "std": std,
            "blocks": out.blocks,
        }
        tmp[2].write_text(json.dumps(stats, indent=1))
        for src, dst in zip(tmp, (array_path, ids_path, stats_path), strict=True):  # stats last: it commits
            os.replace(src, dst)
    finally:
        for p in tmp:
            p.unlink(missing_ok=True)


class _PixelWriter:
    """Writes uint8 [n, 3, S, S] as a .npy file, rows appended in order with plain writes (a memmap being
    written keeps every page it touched resident), keeping the channel histograms and the CRC-32 of each
    block of BLOCK rows as the rows pass."""

    def __init__(self, path: Path, n: int, size: int):
        self.n, self.written, self.in_block, self.crc = n, 0, 0, 0
        self.counts = np.zeros((3, 256), np.int64)
        self.blocks: list[int] = []
        self.file = open(path, "wb")  # noqa: SIM115  (closed by __exit__)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False}
        np.lib.format.write_array_header_1_0(self.file, {**header, "shape": (n, 3, size, size)})

    def __enter__(self) -> _PixelWriter:
        return self

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.uint8)
        self.counts += _channel_counts(rows)
        done = 0
        while done < len(rows):
            part = rows[done : done + BLOCK - self.in_block]
            self.file.write(part.data)
            self.crc = zlib.crc32(part.data, self.crc)
            self.in_block += len(part)
            done += len(part)
            if self.in_block == BLOCK:
                self.blocks.append(self.crc)
                self.in_block, self.crc = 0, 0
        self.written += len(rows)

    def __exit__(self, kind, *_) -> None:
        self.file.close()
        if kind is None:
            if self.in_block:
                self.blocks.append(self.crc)
            if self.written != self.n:
                raise PoolCacheError(f"the pool cache writer got {self.written} rows for {self.n}")


def _decoded(paths: list[Path], size: int, on_progress: Callable[[int, int], None] | None, workers: int):
    """uint8 blocks [<= CHUNK, 3, S, S] of the images at `paths`, in order, decoded in `workers` processes."""
    total = len(paths)
    chunks = [(paths[i : i + CHUNK], size) for i in range(0, total, CHUNK)]
    done = 0
    for block in process_map(_decode_chunk, chunks, workers, files=total):
        yield block
        done += len(block)
        if on_progress is not None:
            on_progress(done, total)


def _decode_chunk(task: tuple[list[Path], int]) -> np.ndarray:
    paths, size = task
    block = np.empty((len(paths), 3, size, size), np.uint8)
    for i, path in enumerate(paths):
        block[i] = decode_image(path, size)
    return block


def folder_image_size(root: Path, classes: list[str], per_class: int = 50) -> int:
    """`pick_image_size` for an ImageFolder split `root/<class>/`, from up to `per_class` images of each class
    (their headers only); ValueError when there are none."""
    from storage.walk import find_images

    sample = [root / c / p for c in classes for p in find_images(root / c).paths[:per_class]]
    if not sample:
        raise ValueError(f"no images under {root}/<class>/")
    sizes = []
    for path in sample:
        with Image.open(path) as image:
            sizes.append(image.size)
    return pick_image_size(sizes)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) in 0..1 units of uint8 [N, 3, H, W].

    Exact: from per-channel histograms of the 256 values, read in chunks (no
    float copy of the pool, no cancellation error for near-constant channels).
    A constant channel gets std 1.0 so normalizing never divides by zero.
    """
    counts = np.zeros((3, 256), np.int64)
    for start in range(0, images.shape[0], STATS_CHUNK):
        counts += _channel_counts(read_rows(images, slice(start, start + STATS_CHUNK)))
    return _stats_of(counts)


def _channel_counts(chunk: np.ndarray) -> np.ndarray:
    """int64 [3, 256]: how many pixels of each channel of uint8 [n, 3, H, W] have each value."""
    return np.stack([np.bincount(chunk[:, c].ravel(), minlength=256) for c in range(3)]).astype(np.int64)


def _stats_of(counts: np.ndarray) -> tuple[list[float], list[float]]:
    values = np.arange(256, dtype=np.float64) / 255.0
    n = np.maximum(counts.sum(1), 1)
    mean = counts @ values / n
    var = counts @ values**2 / n - mean**2
    std = np.sqrt(np.maximum(var, 0.0))
    std = np.where(std > 1e-6, std, 1.0)
    return [float(m) for m in mean], [float(s) for s in std]


def _paths(cache_dir: Path, size: int) -> tuple[Path, Path, Path]:
    return cache_dir / f"pool_{size}.npy", cache_dir / f"pool_{size}_ids.npy", cache_dir / f"pool_{size}_stats.json"


def _ids_hash(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


def _check_size(image_size: int) -> None:
    if not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise PoolCacheError(f"image_size must be an integer >= 8 px, got {image_size!r}")
