"""Pool cache: decoding any mode to RGB, the resize rule, incremental builds, stats, failures."""

import json
import multiprocessing
import os
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import engine.pool_cache as pc
import storage.parallel
from engine.pool_cache import PoolCacheError, build_pool_cache, decode_image, load_pool_cache, pick_image_size

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def pixel(array, y=None, x=None):
    s = array.shape[-1]
    return tuple(int(v) for v in array[:, s // 2 if y is None else y, s // 2 if x is None else x])


def save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_rgb_png_round_trips_exactly(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path = save(Image.fromarray(data), tmp_path / "a.png")
    out = decode_image(path, 8)
    assert out.shape == (3, 8, 8) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(out, data.transpose(2, 0, 1))


def test_grayscale_and_bilevel_become_rgb(tmp_path):
    gray = decode_image(save(Image.new("L", (8, 8), 77), tmp_path / "l.png"), 8)
    assert pixel(gray) == (77, 77, 77)
    one = decode_image(save(Image.new("1", (8, 8), 1), tmp_path / "1.png"), 8)
    assert pixel(one) == WHITE


def test_transparency_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 4, 8))
    out = decode_image(save(rgba, tmp_path / "rgba.png"), 8)
    assert pixel(out, 4, 0) == BLUE and pixel(out, 4, 7) == WHITE
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 255, 0] + [255, 0, 0] * 255)
    out = decode_image(save(palette, tmp_path / "p.png", transparency=1), 8)
    assert pixel(out) == WHITE
    la = decode_image(save(Image.new("LA", (8, 8), (0, 255)), tmp_path / "la.png"), 8)
    assert pixel(la) == (0, 0, 0)


def test_cmyk_and_16_bit_images(tmp_path):
    cmyk = decode_image(save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "c.tiff"), 8)
    assert pixel(cmyk) == RED
    deep = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert deep.mode.startswith("I")
    assert pixel(decode_image(save(deep, tmp_path / "i16.png"), 8)) == WHITE
    half = Image.fromarray(np.full((8, 8), 32896, np.uint16))
    assert pixel(decode_image(save(half, tmp_path / "h16.png"), 8)) == (128, 128, 128)


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    path = save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=10)
    r, _g, b = pixel(decode_image(path, 8))
    assert r > 200 and b < 50


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), RED)
    img.paste(BLUE, (20, 0, 40, 20))  # stored: left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    out = decode_image(save(img, tmp_path / "rot.jpg", exif=exif, quality=95), 8)
    top, bottom = pixel(out, 0, 0), pixel(out, 7, 0)
    assert top[0] > 200 and top[2] < 60  # displayed: red on top ...
    assert bottom[2] > 200 and bottom[0] < 60  # ... blue at the bottom


def test_non_square_images_are_center_cropped(tmp_path):
    img = Image.new("RGB", (24, 8), GREEN)
    img.paste(RED, (8, 0, 16, 8))
    img.paste(BLUE, (16, 0, 24, 8))
    out = decode_image(save(img, tmp_path / "wide.png"), 8)
    assert out.shape == (3, 8, 8)
    assert all(pixel(out, y, x) == RED for y in range(8) for x in range(8))
    tall = decode_image(save(img.rotate(90, expand=True), tmp_path / "tall.png"), 8)
    assert all(pixel(tall, y, x) == RED for y in range(8) for x in range(8))


def test_large_jpeg_is_downscaled(tmp_path):
    out = decode_image(save(Image.new("RGB", (640, 480), (10, 200, 30)), tmp_path / "big.jpg"), 32)
    assert out.shape == (3, 32, 32)
    assert np.abs(out[:, 16, 16].astype(int) - (10, 200, 30)).max() < 8


def test_decode_failure_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(PoolCacheError, match=r"broken\.png"):
        decode_image(bad, 8)
    with pytest.raises(PoolCacheError, match=r"missing\.png"):
        decode_image(tmp_path / "missing.png", 8)


def test_pick_image_size_rule():
    assert pick_image_size([(32, 32)] * 5) == 32
    assert pick_image_size([(48, 60), (40, 40), (500, 30)]) == 32
    assert pick_image_size([(64, 80)] * 3) == 64
    assert pick_image_size([(150, 120)]) == 96
    assert pick_image_size([(4000, 3000), (800, 600), (32, 32)]) == 128
    with pytest.raises(ValueError):
        pick_image_size([])


def make_items(folder, start, count, size=12):
    """(item id, path) pairs of PNGs whose pixels all equal the item id (mod 256) in red."""
    folder.mkdir(exist_ok=True)
    items = []
    for item_id in range(start, start + count):
        path = folder / f"{item_id}.png"
        Image.new("RGB", (size, size), (item_id % 256, 100, 200)).save(path)
        items.append((item_id, path))
    return items


def test_build_saves_a_memmappable_cache_with_stats(tmp_path):
    items = make_items(tmp_path / "img", 1, 6)
    cache = build_pool_cache(tmp_path / "cache", items, 8)
    assert cache.item_ids.tolist() == [1, 2, 3, 4, 5, 6] and cache.item_ids.dtype == np.int64
    assert cache.images.shape == (6, 3, 8, 8) and cache.images.dtype == np.uint8
    assert isinstance(cache.images, np.memmap) and cache.image_size == 8
    assert [int(v) for v in cache.images[:, 0, 0, 0]] == [1, 2, 3, 4, 5, 6]
    as_float = cache.images.astype(np.float64) / 255
    assert np.allclose(cache.mean, as_float.mean(axis=(0, 2, 3)))
    assert np.allclose(cache.std[0], as_float[:, 0].std()) and cache.std[1] == 1.0  # constant channel
    assert np.load(tmp_path / "cache" / "pool_8.npy", mmap_mode="r").shape == (6, 3, 8, 8)
    stats = json.loads((tmp_path / "cache" / "pool_8_stats.json").read_text())
    assert stats["n"] == 6 and len(stats["mean"]) == 3
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "pool_8.npy",
        "pool_8_ids.npy",
        "pool_8_stats.json",
    ]
    assert cache.positions([4, 1]).tolist() == [3, 0]
    with pytest.raises(KeyError):
        cache.positions([99])


def test_subset_and_arrays_follow_item_ids(tmp_path):
    cache = build_pool_cache(tmp_path / "cache", make_items(tmp_path / "img", 1, 4), 8)
    assert cache.subset([1, 2, 3, 4]) is cache  # every row in order: the memmap itself, no copy
    part = cache.subset([4, 2])
    assert part.item_ids.tolist() == [4, 2] and [int(v) for v in part.images[:, 0, 0, 0]] == [4, 2]
    assert part.normalization == cache.normalization and part.image_size == 8
    images, targets = cache.arrays({3: 1, 1: 0})
    assert [int(v) for v in images[:, 0, 0, 0]] == [1, 3] and targets.tolist() == [0, 1]
    assert targets.dtype == np.int64 and images.dtype == np.uint8
    empty_images, empty_targets = cache.arrays({})
    assert empty_images.shape == (0, 3, 8, 8) and empty_targets.shape == (0,)
    with pytest.raises(KeyError):
        cache.subset([1, 99])


def test_incremental_build_decodes_only_new_items(tmp_path):
    first = make_items(tmp_path / "img", 1, 5)
    calls = []
    build_pool_cache(tmp_path / "cache", first, 8, on_progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (5, 5)
    more = make_items(tmp_path / "img", 6, 3)
    calls.clear()
    cache = build_pool_cache(tmp_path / "cache", first + more, 8, on_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(3, 3)]
    assert cache.item_ids.tolist() == list(range(1, 9))
    assert [int(v) for v in cache.images[:, 0, 0, 0]] == list(range(1, 9))
    calls.clear()
    again = build_pool_cache(tmp_path / "cache", first + more, 8, on_progress=lambda d, t: calls.append((d, t)))
    assert calls == [] and again.item_ids.tolist() == list(range(1, 9))
    assert load_pool_cache(tmp_path / "cache", 8).item_ids.tolist() == list(range(1, 9))


def test_items_no_longer_listed_are_dropped_without_decoding(tmp_path):
    items = make_items(tmp_path / "img", 1, 5)
    build_pool_cache(tmp_path / "cache", items, 8)
    calls = []
    cache = build_pool_cache(tmp_path / "cache", [items[0], items[3]], 8, on_progress=lambda d, t: calls.append(d))
    assert calls == [] and cache.item_ids.tolist() == [1, 4]
    assert [int(v) for v in cache.images[:, 0, 0, 0]] == [1, 4]


_decode_chunk = pc._decode_chunk
PIDS_DIR = "POOL_CACHE_TEST_PIDS"  # environment variable: where decoding processes note their pids


def _decode_chunk_noting_pid(task):
    """engine.pool_cache's chunk decoder that also leaves a file named after the process it ran in (a
    module-level function, so a spawned worker imports it; the folder comes through the environment)."""
    Path(os.environ[PIDS_DIR], str(os.getpid())).touch()
    return _decode_chunk(task)


@pytest.mark.parametrize("threaded_caller", [False, True], ids=["fork", "spawn"])
def test_parallel_decoding_runs_in_worker_processes_and_matches_in_process(tmp_path, monkeypatch, threaded_caller):
    monkeypatch.setattr(storage.parallel, "POOL_THRESHOLD", 2)
    monkeypatch.setattr(pc, "CHUNK", 3)
    monkeypatch.setattr(pc, "_decode_chunk", _decode_chunk_noting_pid)
    methods = []

    def get_context(method):
        methods.append(method)
        return multiprocessing.get_context(method)

    monkeypatch.setattr(storage.parallel, "multiprocessing", types.SimpleNamespace(get_context=get_context))
    items = make_items(tmp_path / "img", 1, 10)
    pids = {name: tmp_path / f"pids_{name}" for name in ("par", "ser")}
    stop = threading.Event()
    if threaded_caller:  # a second live thread makes the pool spawn, as under Streamlit
        threading.Thread(target=stop.wait, daemon=True).start()
    else:  # a single-threaded caller, whatever threads earlier tests of this session left running
        monkeypatch.setattr(storage.parallel, "threading", types.SimpleNamespace(active_count=lambda: 1))
    built = {}
    try:
        for name, workers in (("par", 2), ("ser", 1)):
            pids[name].mkdir()
            monkeypatch.setenv(PIDS_DIR, str(pids[name]))
            built[name] = build_pool_cache(tmp_path / name, items, 8, workers=workers)
    finally:
        stop.set()
    assert methods == ["spawn" if threaded_caller else "fork"]  # one pool, for the parallel build only
    par_pids = {int(p.name) for p in pids["par"].iterdir()}
    assert par_pids and os.getpid() not in par_pids  # every chunk was decoded in a worker process
    assert {int(p.name) for p in pids["ser"].iterdir()} == {os.getpid()}
    assert np.array_equal(np.asarray(built["par"].images), np.asarray(built["ser"].images))


def test_a_bad_file_fails_the_build_and_keeps_the_old_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(storage.parallel, "POOL_THRESHOLD", 2)
    items = make_items(tmp_path / "img", 1, 4)
    build_pool_cache(tmp_path / "cache", items, 8)
    bad = tmp_path / "img" / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(PoolCacheError, match=r"corrupt\.jpg"):
        build_pool_cache(tmp_path / "cache", items + make_items(tmp_path / "img", 5, 3) + [(9, bad)], 8, workers=2)
    kept = load_pool_cache(tmp_path / "cache", 8)
    assert kept.item_ids.tolist() == [1, 2, 3, 4]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]


def test_inconsistent_or_missing_cache_loads_as_none(tmp_path):
    assert load_pool_cache(tmp_path / "nowhere", 8) is None
    items = make_items(tmp_path / "img", 1, 3)
    build_pool_cache(tmp_path / "cache", items, 8)
    assert load_pool_cache(tmp_path / "cache", 16) is None  # other size: not built
    np.save(tmp_path / "cache" / "pool_8_ids.npy", np.array([1, 2], np.int64))  # as if a crash mid-replace
    assert load_pool_cache(tmp_path / "cache", 8) is None
    calls = []
    rebuilt = build_pool_cache(tmp_path / "cache", items, 8, on_progress=lambda d, t: calls.append(t))
    assert calls[-1] == 3 and len(rebuilt) == 3
    (tmp_path / "cache" / "pool_8.npy").write_bytes(b"junk")
    assert load_pool_cache(tmp_path / "cache", 8) is None


def test_invalid_requests_raise(tmp_path):
    with pytest.raises(PoolCacheError, match="no items"):
        build_pool_cache(tmp_path, [], 8)
    items = make_items(tmp_path / "img", 1, 1)
    with pytest.raises(PoolCacheError, match="unique"):
        build_pool_cache(tmp_path / "cache", items + items, 8)
    with pytest.raises(PoolCacheError, match="image_size"):
        build_pool_cache(tmp_path / "cache", items, 4)


# ---------------------------------------------------------------- memory: no pass holds the pool


def _fake_decode(task):
    """Stands in for the chunk decoder: rows made from the item number in each (fake) path, no file opened."""
    paths, size = task
    numbers = np.array([int(Path(p).stem) for p in paths], dtype=np.int64)
    rows = (numbers[:, None] * 7 + np.arange(3 * size * size)) % 251
    return rows.astype(np.uint8).reshape(len(paths), 3, size, size)


def _fake_items(first: int, count: int) -> list[tuple[int, Path]]:
    return [(i, Path(f"/nowhere/{i}.png")) for i in range(first, first + count)]


def _resident_kb(path: Path) -> int:
    """This process's resident kB of its mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            inside = len(head) >= 6 and head[5] == str(path)
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


def test_the_writer_keeps_exact_stats_and_block_checksums_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(pc, "_decode_chunk", _fake_decode)
    monkeypatch.setattr(pc, "BLOCK", 5)  # blocks that chunks of 3 and copies of 4 rows cross
    monkeypatch.setattr(pc, "CHUNK", 3)
    monkeypatch.setattr(pc, "STATS_CHUNK", 4)
    build_pool_cache(tmp_path, _fake_items(1, 11), 8, workers=1)
    cache = build_pool_cache(tmp_path, _fake_items(3, 12), 8, workers=1)  # 9 rows copied, 3 decoded
    assert cache.item_ids.tolist() == list(range(3, 15))
    expected = _fake_decode(([f"{i}.png" for i in range(3, 15)], 8))
    np.testing.assert_array_equal(np.asarray(cache.images), expected)
    stats = json.loads((tmp_path / "pool_8_stats.json").read_text())
    assert stats["blocks"] == pc.block_checksums(expected) and len(stats["blocks"]) == 3
    assert (list(cache.mean), list(cache.std)) == pc.channel_stats(expected)


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_loading_the_cache_checks_it_without_keeping_the_pool_resident(tmp_path, monkeypatch):
    monkeypatch.setattr(pc, "_decode_chunk", _fake_decode)
    build_pool_cache(tmp_path, _fake_items(1, 4 * pc.BLOCK), 32, workers=1)  # 12 MB of pixels
    pc._intact.clear()  # checked again, as in a new process
    cache = load_pool_cache(tmp_path, 32)
    assert cache is not None
    block_kb = pc.BLOCK * 3 * 32 * 32 // 1024
    assert _resident_kb(tmp_path / "pool_32.npy") <= block_kb  # the whole pool stayed mapped before
    rows = pc.read_rows(cache.images, slice(0, len(cache)))
    np.testing.assert_array_equal(rows, _fake_decode(([f"{i}.png" for i in range(1, 4 * pc.BLOCK + 1)], 32)))
    assert _resident_kb(tmp_path / "pool_32.npy") <= 8  # read_rows hands its pages back too
    picked = pc.read_rows(cache.images, np.array([5, 7, 9]))
    np.testing.assert_array_equal(picked, rows[[5, 7, 9]])


BUILD_PEAK = """
import sys
from pathlib import Path
import numpy as np
import engine.pool_cache as pc

def kb(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])

def fake_decode(task):
    paths, size = task
    return np.full((len(paths), 3, size, size), len(paths), np.uint8)

pc._decode_chunk = fake_decode
items = [(i, Path(f"/nowhere/{i}.png")) for i in range(1, 32 * pc.BLOCK + 1)]
Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here
before = kb("VmRSS")
pc.build_pool_cache(Path(sys.argv[1]), items, 32, workers=1)
print((kb("VmHWM") - before) * 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_building_the_cache_keeps_a_chunk_of_the_pool_in_memory_not_the_pool(tmp_path):
    """A 100 MB pool built in a process of its own: its peak resident memory grows by a fraction of it (the
    memmap it was written through, then read back for its statistics and its check, held all of it)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", BUILD_PEAK, str(tmp_path)], cwd=repo, capture_output=True, text=True, check=True
    )
    pool_bytes = 32 * pc.BLOCK * 3 * 32 * 32
    assert int(done.stdout.split()[-1]) < pool_bytes / 4, done.stdout
