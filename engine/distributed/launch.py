"""Heavy stages as torchrun jobs: the caller stays one process, the stage runs in N.

A job (a round, the target, a simulation) runs in one process as always. With more than one process asked
for (`Launch.processes`, set by `launching` from the `processes` setting or `--processes`), its heavy
stages — training a model, scoring the pool — run as a child `torchrun` job instead: the inputs go to a
stage folder (weights, the labeled images, the path of the pool cache's memmap), every rank runs
`engine.distributed.stage` on them, and rank 0 writes the result there atomically. The caller reads
progress from the folder as rank 0 writes it, stops the child when its job is stopped, and retries a
crashed stage once; a training that failed for a reason (diverged, learned nothing) is raised as itself.
With one process nothing of this runs: the stage is called in-process, the same code as ever.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "Launch",
    "StageFailed",
    "current",
    "launch_from_args",
    "launching",
    "on_device",
    "resolve_processes",
    "run_stage",
    "torchrun_argv",
]

KCENTER_STAGE_ROWS = 1_000_000  # k-center runs across processes from this pool size (below, one is faster)
POLL_S = 0.2  # how often the caller reads progress and asks should_stop
KILL_GRACE_S = 5.0  # after SIGTERM, seconds before the child's process group is killed
STOP_GRACE_S = 30.0  # after a stop is asked, seconds the ranks have to save their state and exit
STOP_FILE = "stop"  # in the stage folder: the caller's job was stopped
LOG_TAIL = 2000  # characters of the child's log quoted in an error


class StageFailed(RuntimeError):
    """A torchrun stage exited without a result (a rank crashed, was killed, or timed out)."""


@dataclass(frozen=True)
class Launch:
    """How heavy stages run: `processes` per machine, and torchrun's rendezvous for several machines."""

    processes: int = 1
    nnodes: str = "1"  # torchrun --nnodes: N, or MIN:MAX for an elastic job
    rdzv_endpoint: str | None = None  # host:port of the rendezvous (several machines)
    rdzv_id: str | None = None  # the job's id at that rendezvous
    max_restarts: int = 0  # torchrun --max-restarts: elastic restarts of the whole stage
    retries: int = 1  # times a crashed stage is started again before the job fails
    stage_dir: str | None = None  # where stage folders go; several machines: a folder all see at the same path
    cpu: bool = False  # the job's device is the CPU: its stages see no GPU (and join with gloo)

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError(f"processes must be at least 1, got {self.processes}")
        if self.max_restarts < 0 or self.retries < 0:
            raise ValueError("max_restarts and retries must be >= 0")
        if self.nnodes != "1" and not (self.rdzv_endpoint and self.stage_dir):
            raise ValueError(
                "several machines (--nnodes) need --rdzv-endpoint HOST:PORT and --stage-dir, a folder every "
                "machine sees at the same path (docs/scale.md)"
            )

    @property
    def machines(self) -> bool:
        """More than one machine: the others run `proxy-labeler stage-agent` to join each stage."""
        return self.nnodes != "1"

    @property
    def distributed(self) -> bool:
        """Stages run as torchrun jobs (more than one process here, or more than one machine)."""
        return self.processes > 1 or self.nnodes != "1"


_CURRENT: list[Launch] = [Launch()]


def current() -> Launch:
    """The launch in force: set by `launching`; one process by default."""
    return _CURRENT[-1]


@contextmanager
def launching(launch: Launch) -> Iterator[Launch]:
    """Run heavy stages inside this block as `launch` says."""
    _CURRENT.append(launch)
    try:
        yield launch
    finally:
        _CURRENT.pop()


def resolve_processes(value: str | int, device: str = "auto") -> int:
    """`auto`: one process per GPU, one on a CPU (or when the job's `device` is the CPU); else a positive
    integer."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        if device == "cpu" or not torch.cuda.is_available():
            return 1
        return max(1, torch.cuda.device_count())
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"processes must be auto or a positive integer, got {value!r}") from None
    if count < 1:
        raise ValueError(f"processes must be auto or a positive integer, got {value!r}")
    return count


def on_device(launch: Launch, device: str) -> Launch:
    """`launch` for a job whose device setting is `device`: a job told to use the CPU keeps its stages
    there, and `auto` processes on the CPU are one."""
    return dataclasses.replace(launch, cpu=True) if device == "cpu" else launch


def launch_from_args(args) -> Launch:
    """The Launch the --processes, --nnodes, --rdzv-endpoint, --rdzv-id and --max-restarts flags ask for
    (`engine.cli.add_launch_arguments`); --processes missing means one."""
    return Launch(
        processes=resolve_processes(args.processes if args.processes is not None else 1),
        nnodes=str(args.nnodes),
        rdzv_endpoint=args.rdzv_endpoint,
        rdzv_id=args.rdzv_id,
        max_restarts=args.max_restarts,
        stage_dir=getattr(args, "stage_dir", None),
    )


def torchrun_argv(launch: Launch, folder: Path, rdzv_id: str | None = None) -> list[str]:
    """The torchrun command running `engine.distributed.stage` on `folder` (`rdzv_id`: this stage's id at
    the rendezvous, the same on every machine; default the launch's)."""
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={launch.processes}"]
    argv.append(f"--max-restarts={launch.max_restarts}")
    if launch.rdzv_endpoint:
        argv += [f"--nnodes={launch.nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={launch.rdzv_endpoint}"]
        argv.append(f"--rdzv-id={rdzv_id or launch.rdzv_id or 'proxy-labeler'}")
    else:
        argv.append("--standalone")  # one machine: a free local port
    return [*argv, "-m", "engine.distributed.stage", str(folder)]


ANNOUNCE = "current_stage.json"  # in stage_dir: the stage the other machines' agents join


def announce(launch: Launch, folder: Path, attempt: int) -> str:
    """Tell the other machines' agents (stage_dir/ANNOUNCE, written atomically) which stage to join;
    returns the stage's rendezvous id."""
    from storage.files import atomic_write

    rdzv_id = f"{launch.rdzv_id or 'proxy-labeler'}-{folder.name}-{attempt}"
    with atomic_write(Path(launch.stage_dir or folder.parent) / ANNOUNCE) as tmp:
        tmp.write_text(json.dumps({"folder": str(folder), "rdzv_id": rdzv_id}))
    return rdzv_id


def run_stage(
    kind: str,
    inputs: Callable[[Path], dict],
    *,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    launch: Launch | None = None,
    workdir: Path | None = None,
) -> tuple[dict, Path]:
    """Run stage `kind` as a torchrun job; return (rank 0's result, the folder holding its files).

    `inputs(folder)` writes the stage's files into a fresh folder and returns the request's parameters.
    Progress lines rank 0 writes go to `on_progress`; `should_stop()` turning True stops the child and raises
    `engine.train.Cancelled`. A child that crashes is started again (`launch.retries` times) before StageFailed;
    a failure the stage explains (TrainingFailed, LearnedNothing, ValueError) is raised as that. The caller
    removes the folder when it is done with the files (`shutil.rmtree`)."""
    launch = launch or current()
    if workdir is None and launch.stage_dir is not None:
        workdir = Path(launch.stage_dir)
        workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"stage-{kind}-", dir=workdir))
    try:
        return _attempts(kind, inputs, launch, folder, on_progress, should_stop), folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _attempts(kind: str, inputs, launch: Launch, folder: Path, on_progress, should_stop) -> dict:
    request = {"kind": kind, "params": inputs(folder)}
    (folder / "request.json").write_text(json.dumps(request))
    for attempt in range(launch.retries + 1):
        _clear(folder)
        rdzv_id = announce(launch, folder, attempt) if launch.machines else None
        code = _run_child(launch, folder, on_progress, should_stop, rdzv_id)
        result = folder / "result.json"
        if code == 0 and result.exists():
            return json.loads(result.read_text())
        reason = _raise_explained(folder)
        if attempt == launch.retries:
            raise StageFailed(
                f"the {kind} stage failed in {launch.processes} processes (exit code {code}, "
                f"{attempt + 1} attempt{'s' if attempt else ''}): {reason or 'a rank crashed or was killed'}; "
                f"{_rank_errors(folder)}"
            )
    raise AssertionError("unreachable")


def _clear(folder: Path) -> None:
    for name in ("result.json", "error.json", "progress.jsonl", "log.txt", STOP_FILE):
        (folder / name).unlink(missing_ok=True)
    for path in folder.glob("rank*.err"):
        path.unlink()


def _run_child(launch: Launch, folder: Path, on_progress, should_stop, rdzv_id: str | None = None) -> int:
    from engine.train import Cancelled  # the caller's own exception for a stop

    with open(folder / "log.txt", "wb") as log:
        child = subprocess.Popen(
            torchrun_argv(launch, folder, rdzv_id),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a stop reaches every rank
            preexec_fn=_die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **({"CUDA_VISIBLE_DEVICES": ""} if launch.cpu else {})},
        )
        read = 0
        try:
            while child.poll() is None:
                read = _forward_progress(folder, read, on_progress)
                if should_stop is not None and should_stop():
                    _ask_to_stop(folder, child)
                    raise Cancelled("stopped")
                time.sleep(POLL_S)
        except BaseException:
            _stop(child)
            raise
        _forward_progress(folder, read, on_progress)
        return child.returncode


def _die_with_parent() -> None:
    """In the torchrun child, before it runs: the kernel sends it SIGTERM when the job's process dies (a
    killed worker), and torchrun then stops its ranks, so no stage outlives its job. Linux only."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


PR_SET_PDEATHSIG = 1


def _forward_progress(folder: Path, read: int, on_progress) -> int:
    path = folder / "progress.jsonl"
    if on_progress is None or not path.exists():
        return read
    with open(path, "rb") as handle:
        handle.seek(read)
        chunk = handle.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    for line in complete.splitlines():
        on_progress(json.loads(line))
    return read + len(complete)


def _ask_to_stop(folder: Path, child: subprocess.Popen) -> None:
    """Ask the ranks to stop (rank 0 reads the stop file between steps, saves what it saves on a stop and
    broadcasts the stop); kill them if they are not gone within STOP_GRACE_S."""
    (folder / STOP_FILE).touch()
    try:
        child.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        _stop(child)


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    except ProcessLookupError:
        pass


def _raise_explained(folder: Path) -> str | None:
    """Raise the failure rank 0 explained in error.json as its own type when the caller knows it; else
    say what it was (None when rank 0 explained nothing)."""
    path = folder / "error.json"
    if not path.exists():
        return None
    error = json.loads(path.read_text())
    from engine.train import LearnedNothing, TrainingFailed

    known: dict[str, type[Exception]] = {
        "LearnedNothing": LearnedNothing,
        "TrainingFailed": TrainingFailed,
        "ValueError": ValueError,
    }
    if error["type"] in known:
        raise known[error["type"]](error["message"])
    return f"rank 0 raised {error['type']}: {error['message']}"


def _rank_errors(folder: Path) -> str:
    """What the ranks said of their failure (their rank*.err files), else the end of torchrun's log."""
    said = [
        f"{path.stem}: {path.read_text(errors='replace')[-LOG_TAIL:].strip()}"
        for path in sorted(folder.glob("rank*.err"))
    ]
    if said:
        return "the ranks said:\n" + "\n".join(said)
    text = (folder / "log.txt").read_text(errors="replace") if (folder / "log.txt").exists() else ""
    return "its log ends:\n" + (text[-LOG_TAIL:].strip() or "(nothing)")


# ---------------------------------------------------------------- the stages the jobs call


def pool_file(images) -> dict | None:
    """Where a stage finds `images` (a memmap of an .npy file: path, offset, shape); None for arrays in
    memory, which a stage cannot open."""
    if not isinstance(images, np.memmap) or images.filename is None:
        return None
    return {"path": str(images.filename), "offset": int(images.offset), "shape": list(images.shape)}


def _listed(normalization) -> list[list[float]]:
    return [list(normalization[0]), list(normalization[1])]


def _forwarded(on_progress, kind):
    """A stage's progress lines as `kind` (Progress, SSLProgress) to the caller's callback."""

    def forward(line: dict) -> None:
        if on_progress is not None:
            on_progress(kind(line["step"], line["steps"], line["loss"], line["seconds"]))

    return forward


def _read_then_remove(folder: Path, name: str):
    """A stage's result file (.pt weights or .npy rows), read into memory; then the stage folder is removed."""
    try:
        if name.endswith(".pt"):
            return torch.load(folder / name, map_location="cpu", weights_only=True)
        return np.load(folder / name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def save_model(model: nn.Module, path: Path) -> None:
    """The model's config (to rebuild it) and weights, for a stage to load."""
    config = model.config
    assert dataclasses.is_dataclass(config) and not isinstance(config, type)  # engine.models.ModelConfig
    torch.save({"config": dataclasses.asdict(config), "state": model.state_dict()}, path)


def train_model(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    config,
    normalization,
    on_progress=None,
    should_stop=None,
    sampler=None,
) -> nn.Module:
    """`engine.train.train`, as a torchrun stage when the launch in force has several processes.

    The stage trains under DDP (`engine.train` joins the ranks) and rank 0 writes the weights; they are
    loaded into `model`, which is returned in eval mode. A sampler with state of its own (DynaMS), a model
    without a `config`, or one process train in this process."""
    from engine.train import Progress, train

    launch = current()
    if not launch.distributed or sampler is not None or not hasattr(model, "config"):
        return train(model, images, labels, config, normalization, on_progress, should_stop, sampler=sampler)

    def inputs(folder: Path) -> dict:
        save_model(model, folder / "model.pt")
        np.save(folder / "images.npy", np.asarray(images))
        np.save(folder / "labels.npy", np.asarray(labels))
        return {"config": dataclasses.asdict(config), "normalization": _listed(normalization)}

    progress = _forwarded(on_progress, Progress)
    _result, folder = run_stage("train", inputs, on_progress=progress, should_stop=should_stop, launch=launch)
    model.load_state_dict(_read_then_remove(folder, "weights.pt"))
    return model.eval()


def score_model(model: nn.Module, images: np.ndarray, normalization, *, tta: bool = False, device=None):
    """`engine.score.score_pool`, as a torchrun stage (each rank scores its shard of the memmap) when the
    launch in force has several processes and `images` is a memmap a stage can open; returns PoolScores."""
    from engine.score import PoolScores, score_pool

    launch = current()
    if not launch.distributed or pool_file(images) is None:
        return score_pool(model, images, normalization, device=device, tta=tta)

    def inputs(folder: Path) -> dict:
        save_model(model, folder / "model.pt")
        return {"pool": pool_file(images), "normalization": _listed(normalization), "tta": tta}

    _result, folder = run_stage("score", inputs, launch=launch)
    probs = np.load(folder / "scores_probs.npy")
    return PoolScores(probs=probs, embeddings=_read_then_remove(folder, "scores_embeddings.npy"))


def pretrain_model(images: np.ndarray, normalization, config, state_path: Path, on_progress=None, should_stop=None):
    """`engine.ssl.pretrain` (SimCLR), as a torchrun stage when the launch in force has several processes and
    `images` is a memmap: each rank trains on its shard of the pool with the global batch's negatives, rank 0
    saves the resumable state at `state_path` and the backbone. Returns an SSLResult."""
    from engine.ssl import SSLProgress, SSLResult, backbone_config, pretrain, ssl_input_size

    launch = current()
    if not launch.distributed or pool_file(images) is None:
        return pretrain(images, normalization, config, state_path, on_progress, should_stop)

    def inputs(folder: Path) -> dict:
        values = dataclasses.asdict(config)
        return {
            "pool": pool_file(images),
            "normalization": _listed(normalization),
            "config": values,
            "state": str(state_path),
        }

    progress = _forwarded(on_progress, SSLProgress)
    result, folder = run_stage("ssl", inputs, on_progress=progress, should_stop=should_stop, launch=launch)
    from engine.models import model_from_config

    model = model_from_config(backbone_config(config, ssl_input_size(int(images.shape[-1]))))
    model.load_state_dict(_read_then_remove(folder, "backbone.pt"))
    return SSLResult(model.eval(), result["steps"], result["seconds"], result["final_loss"], result["resumed_from"])


def k_center_model(embeddings: np.ndarray, labeled, budget: int, *, rng=None) -> np.ndarray:
    """`engine.selection.kcenter.k_center_greedy`, split across the processes of a torchrun stage when the
    launch in force has several and the pool has at least KCENTER_STAGE_ROWS rows (a stage costs seconds to
    start; below that one process is faster). The picks are the same either way: the first center, when
    nothing is labeled, is drawn here with `rng` as one process draws it."""
    from engine.selection.kcenter import check_embeddings, check_selection, draw_first, k_center_greedy

    launch = current()
    if not launch.distributed or len(embeddings) < KCENTER_STAGE_ROWS or budget == 0:
        return k_center_greedy(embeddings, labeled, budget, rng=rng)
    X = check_embeddings(embeddings)
    lab = check_selection(len(X), labeled, budget)
    first: list[int] = []
    if len(lab) == 0:
        taken = np.zeros(len(X), bool)
        first = [draw_first(taken, rng)]
        lab = np.asarray(first, np.int64)

    def inputs(folder: Path) -> dict:
        np.save(folder / "embeddings.npy", X)
        return {"labeled": lab.tolist(), "budget": budget - len(first)}

    result, folder = run_stage("kcenter", inputs, launch=launch)
    shutil.rmtree(folder, ignore_errors=True)
    return np.asarray(first + result["picks"], np.int64)


def embed_rows(backbone, images: np.ndarray, rows: np.ndarray, device: str = "auto", on_progress=None) -> np.ndarray:
    """float16 [len(rows), D] embeddings of the pool rows `rows` by `backbone`, in chunks read from `images`
    (the pool's memmap); as a torchrun stage when the launch in force has several processes, each rank
    embedding a contiguous shard of the rows into one shared file (identical rows to one process's)."""
    from engine.embeddings import embed_chunks

    launch = current()
    if not launch.distributed or len(rows) == 0 or pool_file(images) is None:
        return embed_chunks(backbone, images, rows, device, on_progress)

    def inputs(folder: Path) -> dict:
        save_model(backbone.model, folder / "model.pt")
        np.save(folder / "rows.npy", np.asarray(rows, np.int64))
        norm = _listed(backbone.normalization)
        return {"pool": pool_file(images), "normalization": norm, "input_size": backbone.input_size, "device": device}

    _result, folder = run_stage("embed", inputs, launch=launch)
    return _read_then_remove(folder, "embeddings.npy")
