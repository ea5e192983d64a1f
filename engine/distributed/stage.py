"""One heavy stage in every rank of a torchrun job: `python -m engine.distributed.stage FOLDER`.

`engine.distributed.launch` writes FOLDER/request.json and the inputs; each rank joins the process group,
runs the stage, and rank 0 writes the result (weights, scores) under temporary names moved into place,
then result.json last. A failure rank 0 can explain goes to error.json; the exit code is 1.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.distributed.world import join, leave, world
from engine.models import ModelConfig, model_from_config
from storage.files import atomic_write


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    request = json.loads((folder / "request.json").read_text())
    if request["kind"] not in STAGES:  # before joining: a bad request fails at once, in every rank
        _said(folder, f"unknown stage {request['kind']!r}; known: {', '.join(STAGES)}")
        return 2
    here = join()
    try:
        result = STAGES[request["kind"]](folder, request["params"])
        if here.main:
            with atomic_write(folder / "result.json") as tmp:
                tmp.write_text(json.dumps(result))
        return 0
    except Exception as exc:
        if here.main:
            with atomic_write(folder / "error.json") as tmp:
                tmp.write_text(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
        _said(folder, traceback.format_exc())
        return 1
    finally:
        leave()


def _said(folder: Path, text: str) -> None:
    """This rank's account of its failure, for the caller's error (rank*.err) and torchrun's log."""
    print(text, file=sys.stderr)
    (folder / f"rank{os.environ.get('RANK', '0')}.err").write_text(text)


def _stop_asked(folder: Path):
    """should_stop for the stage: the caller writes the stop file when its job is stopped."""
    from engine.distributed.launch import STOP_FILE

    stop = folder / STOP_FILE
    return stop.exists


def _pool(params: dict) -> np.memmap:
    """The pool cache's pixels, read-only, from the memmap the caller named (`launch.pool_file`)."""
    pool = params["pool"]
    return np.memmap(pool["path"], dtype=np.uint8, mode="r", offset=pool["offset"], shape=tuple(pool["shape"]))


@contextmanager
def _progress_log(folder: Path) -> Iterator[Callable]:
    """A progress callback writing each report as a line the caller reads (rank 0's; the others' do nothing)."""
    if not world().main:
        yield lambda progress: None
        return
    with open(folder / "progress.jsonl", "a") as log:

        def report(p) -> None:
            log.write(json.dumps({"step": p.step, "steps": p.steps, "loss": p.loss, "seconds": p.seconds}) + "\n")
            log.flush()

        yield report


def _model(folder: Path):
    saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    model = model_from_config(ModelConfig(**saved["config"]))
    model.load_state_dict(saved["state"])
    return model


def _normalization(params: dict):
    mean, std = params["normalization"]
    return tuple(mean), tuple(std)


def train_stage(folder: Path, params: dict) -> dict:
    from engine.train import TrainConfig, train

    model = _model(folder)
    images = np.load(folder / "images.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    here = world()
    config = TrainConfig(**params["config"])
    with _progress_log(folder) as report:
        train(model, images, labels, config, _normalization(params), report, _stop_asked(folder))
    if here.main:
        with atomic_write(folder / "weights.pt") as tmp:
            torch.save(model.state_dict(), tmp)
    return {"processes": here.size}


def score_stage(folder: Path, params: dict) -> dict:
    from engine.distributed.scoring import score_sharded

    images = _pool(params)
    score_sharded(_model(folder), images, _normalization(params), folder, tta=params["tta"])
    return {"processes": world().size, "n": len(images)}


def ssl_stage(folder: Path, params: dict) -> dict:
    from engine.ssl import SSLConfig, pretrain

    images = _pool(params)
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in params["config"].items()}
    here = world()
    config = SSLConfig(**values)
    with _progress_log(folder) as report:
        result = pretrain(images, _normalization(params), config, params["state"], report, _stop_asked(folder))
    if here.main:
        with atomic_write(folder / "backbone.pt") as tmp:
            torch.save(result.model.state_dict(), tmp)
    return {
        "processes": here.size,
        "steps": result.steps,
        "seconds": result.seconds,
        "final_loss": result.final_loss,
        "resumed_from": result.resumed_from,
    }


def kcenter_stage(folder: Path, params: dict) -> dict:
    from engine.distributed.kcenter import k_center_sharded

    embeddings = np.load(folder / "embeddings.npy", mmap_mode="r")  # each rank reads its rows and the centers
    picks = k_center_sharded(embeddings, params["labeled"], params["budget"])
    return {"processes": world().size, "picks": picks.tolist()}


def embed_stage(folder: Path, params: dict) -> dict:
    from engine.distributed.scoring import write_shared
    from engine.embeddings import EMBED_BATCH, Backbone, embed_chunks

    images = _pool(params)
    rows = np.load(folder / "rows.npy")
    model = _model(folder)
    backbone = Backbone("stage", model, params["input_size"], _normalization(params), "stage")
    here = world()
    start, stop = here.shard(len(rows), align=EMBED_BATCH)  # whole batches: rows identical to one process's
    device = str(here.device) if params["device"] != "cpu" else "cpu"
    mine = embed_chunks(backbone, images, rows[start:stop], device)
    write_shared(folder / "embeddings.npy", (len(rows), backbone.dim), np.float16, start, mine)
    return {"processes": here.size, "n": len(rows)}


STAGES = {"train": train_stage, "score": score_stage, "ssl": ssl_stage, "kcenter": kcenter_stage, "embed": embed_stage}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
