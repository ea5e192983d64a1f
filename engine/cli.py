"""`proxy-labeler` (or `python -m engine`) {run,simulate,coreset,import-labels,bench,worker,predict,study}: the
command line.

Subcommand modules are imported only when their command runs, so `--help`
imports neither torch nor FAISS; `run` starts the Streamlit app in its own
process (the engine never imports Streamlit).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine.names import CORESET_DEFAULT_KEEP, CORESET_DEFAULT_METHOD, CORESET_METHODS, LABELING_STRATEGIES


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its subcommands."""
    from storage.project import TRAINING_LEVELS

    parser = argparse.ArgumentParser(prog="proxy-labeler", description="Active-learning image labeling (SVP).")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{run,simulate,coreset,import-labels,bench,worker,predict,study}"
    )

    run = commands.add_parser(
        "run",
        help="start the app (streamlit run server.py)",
        description="Start the labeling app; arguments after `--` go to the app (e.g. -- --project DIR), "
        "others to `streamlit run` (e.g. --server.port 8600).",
    )
    run.add_argument("streamlit_args", nargs=argparse.REMAINDER, help="passed on to streamlit run")
    run.set_defaults(run="engine.cli:run_app_command")

    simulate = commands.add_parser(
        "simulate",
        help="run the active-learning loop headless with an oracle",
        description="Run the whole loop on an ImageFolder tree (train/, test/).",
    )
    add_simulate_arguments(simulate)
    add_launch_arguments(simulate)
    simulate.set_defaults(run="engine.simulate:main")

    bench = commands.add_parser(
        "bench",
        help="benchmark k-center selection and one round",
        description="(a) k-center greedy on random data; (b) one round on the CIFAR subset. "
        "--labeled is shared: labeled positions in (a), oracle labels in (b).",
    )
    bench.add_argument("--only", choices=("kcenter", "round"), help="run one of the two benchmarks")
    add_kcenter_arguments(bench.add_argument_group("k-center benchmark (a)"))
    round_bench = bench.add_argument_group("round benchmark (b)")
    round_bench.add_argument(
        "--data", type=Path, default=None, help="an image folder of class subfolders (default: unzip the CIFAR subset)"
    )
    round_bench.add_argument("--round-size", type=int, default=1000, help="images the timed round selects")
    round_bench.add_argument("--strategy", default="least_confidence", help="selection strategy")
    round_bench.add_argument("--proxy", default=None, help="proxy model (default: the settings default)")
    round_bench.add_argument(
        "--proxy-training",
        choices=TRAINING_LEVELS,
        default=None,
        help="proxy training level (default: the settings default)",
    )
    round_bench.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    bench.set_defaults(run="benchmarks.bench_round:main_all")

    add_worker_arguments(commands.add_parser("worker", help="run the background worker of a project"))
    agent = commands.add_parser(
        "stage-agent",
        help="lend this machine's processes to the stages another machine's jobs announce (--nnodes)",
        description="Join, with this machine's processes, every training and scoring stage announced in "
        "--stage-dir by the machine running the job (docs/scale.md, several machines).",
    )
    add_launch_arguments(agent)
    agent.add_argument("--once", action="store_true", help="exit after joining one stage")
    agent.add_argument("--idle-exit", type=float, default=None, help="exit after this many seconds without a stage")
    agent.set_defaults(run="engine.distributed.agent:main")

    predict = commands.add_parser(
        "predict",
        help="classify images with an exported target checkpoint",
        description="Print one line per image: path, class, probability (tab-separated).",
    )
    predict.add_argument("checkpoint", type=Path, help="the checkpoint folder (model.safetensors, metadata.json)")
    predict.add_argument("images", type=Path, nargs="+", help="image files")
    predict.add_argument("--device", default="cpu", help="cpu | cuda | mps")
    predict.set_defaults(run="engine.cli:run_predict_command")

    coreset = commands.add_parser(
        "coreset",
        help="keep the part of a labeled set that matters, and train the target on it",
        description="Train a selector once on a labeled ImageFolder tree (train/, test/), keep --keep of it by "
        "--method, train the target on the kept images and test it; one JSON with accuracies and seconds.",
    )
    add_coreset_arguments(coreset)
    add_launch_arguments(coreset)
    coreset.set_defaults(run="engine.coreset:main")

    add_import_labels_arguments(
        commands.add_parser(
            "import-labels",
            help="import labels that come with the images: class subfolders, or a CSV / JSONL file",
            description="Label a project's images from class subfolders (each image's first folder under the "
            "image folder is its class) or from a CSV / JSONL file with path and class columns, as the export "
            "writes them. All or nothing: any problem and nothing is imported. Prints the report; exit status "
            "0 when imported (or, with --dry-run, importable), 1 when rows have problems, 2 when the file or "
            "project cannot be read.",
        )
    )

    study = commands.add_parser(
        "study",
        help="run the Selection-via-Proxy study, then its tables and plots",
        description="scripts/svp_study.py (resumable), then scripts/plot_study.py.",
    )
    study.set_defaults(run="engine.cli:run_study_command")

    from engine.users_cli import add_users_arguments  # accounts of a shared server (torch-free)

    add_users_arguments(commands.add_parser("users", help="accounts of a shared server: add, passwd, disable, list"))
    return parser


def add_coreset_arguments(parser: argparse.ArgumentParser) -> None:
    """The coreset flags. Omitted flags take engine.coreset.CoresetConfig's defaults."""
    from storage.project import TRAINING_LEVELS

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="ImageFolder root with train/<class>/ and test/<class>/")
    source.add_argument(
        "--project",
        type=Path,
        help="a project: its training labels, the target tested on its labeled validation images; the run is "
        "saved in the project (the Curate page shows it)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the JSON result")
    parser.add_argument(
        "--subset-csv",
        type=Path,
        metavar="FILE",
        help="also a CSV of every labeled image with a kept column (1 or 0): with --data path (relative to "
        "train/), class, kept; with --project the project's label export",
    )
    parser.add_argument(
        "--method",
        default=CORESET_DEFAULT_METHOD,
        help=f"{' | '.join(CORESET_METHODS)} (default: {CORESET_DEFAULT_METHOD})",
    )
    parser.add_argument(
        "--keep",
        type=float,
        default=CORESET_DEFAULT_KEEP,
        help=f"share of the labeled set kept, in (0, 1] (default: {CORESET_DEFAULT_KEEP})",
    )
    parser.add_argument("--selector", choices=("proxy", "target"), default="proxy", help="which model selects")
    parser.add_argument("--no-balance", action="store_true", help="select without balancing the classes")
    parser.add_argument("--baselines", action="store_true", help="also the target on all data and a random subset")
    parser.add_argument(
        "--dynamic-keep",
        type=float,
        default=0.0,
        metavar="R",
        help="also the target with DynaMS keeping R of the data on average, and on all data (steps and seconds "
        "saved in the same run); 0 = not",
    )
    parser.add_argument("--proxy", default="auto")
    parser.add_argument("--target", default="auto")
    parser.add_argument("--proxy-training", choices=TRAINING_LEVELS, default="balanced")
    parser.add_argument("--target-training", choices=TRAINING_LEVELS, default="balanced")
    parser.add_argument("--proxy-steps", type=int, default=0, help="fixed optimizer steps (0 = planned)")
    parser.add_argument("--target-steps", type=int, default=0, help="fixed optimizer steps (0 = planned)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--image-size", type=int, default=0, help="cache side in px (0 = picked from the images)")


def add_import_labels_arguments(parser: argparse.ArgumentParser) -> None:
    """The import-labels flags: a project, one source, and --dry-run."""
    parser.add_argument("--project", type=Path, required=True, help="the project directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", type=Path, help="a .csv or .jsonl file: path and class (or label) per image")
    source.add_argument(
        "--subfolders", action="store_true", help="each image's first folder under the image folder is its class"
    )
    parser.add_argument("--dry-run", action="store_true", help="check and report; import nothing")
    parser.set_defaults(run="engine.cli:run_import_labels_command")


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """How heavy stages run (`engine.distributed.launch`): processes here, and torchrun's rendezvous."""
    group = parser.add_argument_group("processes (training and scoring as torchrun jobs; docs/scale.md)")
    group.add_argument(
        "--processes", default=None, help="processes per machine: auto (one per GPU, 1 on a CPU) or N (default 1)"
    )
    group.add_argument("--nnodes", default="1", help="machines (torchrun --nnodes: N or MIN:MAX)")
    group.add_argument("--rdzv-endpoint", default=None, help="HOST:PORT of the rendezvous, for several machines")
    group.add_argument("--rdzv-id", default=None, help="the job's id at the rendezvous")
    group.add_argument("--max-restarts", type=int, default=0, help="torchrun's elastic restarts of a stage")
    group.add_argument(
        "--stage-dir", default=None, help="where stages keep their files; several machines: a folder all see"
    )


def add_worker_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The worker's options (also parsed alone: see `main`)."""
    parser.description = "Take round, target, backbone and coreset jobs from a project's jobs table."
    parser.add_argument("--project", type=Path, required=True, help="the project directory")
    parser.add_argument("--once", action="store_true", help="exit when no job is waiting")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between looks at the jobs table")
    parser.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="the process that started it (the app server): exit within seconds once it is gone",
    )
    add_launch_arguments(parser)
    parser.set_defaults(command="worker", run="engine.cli:run_worker_command")
    return parser


def add_kcenter_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The k-center benchmark's options, for `python -m engine bench` too."""
    parser.add_argument("--n", type=int, default=50_000, help="pool size")
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 512], help="embedding widths")
    parser.add_argument("--labeled", type=int, default=1_000, help="labeled positions")
    parser.add_argument("--budget", type=int, default=1_000, help="positions to pick")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the fast path (median)")
    parser.add_argument("--slow-repeats", type=int, default=1, help="runs of the baselines and CPU torch")
    parser.add_argument("--torch-device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--torch-cpu-budget",
        type=int,
        default=100,
        help="picks made by the torch path when it runs on CPU (it is slow there)",
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip the NumPy baselines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulate flags. Omitted flags take engine.simulate.SimulateConfig's defaults."""
    from storage.project import CANDIDATES, TRAINING_LEVELS

    optional: dict[str, Any] = {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--data", type=Path, required=True, help="ImageFolder root holding train/<class>/ and test/<class>/"
    )
    parser.add_argument("--out", type=Path, required=True, help="results JSON; a CSV of the rounds goes beside it")
    parser.add_argument(
        "--strategy",
        help=" | ".join(LABELING_STRATEGIES),
        **optional,
    )
    parser.add_argument("--initial", type=int, help="size of the random initial batch", **optional)
    parser.add_argument("--round-size", type=int, help="images selected per round", **optional)
    parser.add_argument("--budget", type=int, help="labels in all, initial batch included", **optional)
    parser.add_argument(
        "--proxy",
        help="proxy model name (engine.models.MODELS), linear or mlp (a head on the backbone's embeddings), or auto",
        **optional,
    )
    parser.add_argument("--target", help="target model name, auto, or backbone (fine-tune the backbone)", **optional)
    parser.add_argument(
        "--selector",
        choices=("proxy", "target"),
        help="model that selects each batch; target = the SVP baseline",
        **optional,
    )
    parser.add_argument("--seed", type=int, **optional)
    parser.add_argument(
        "--proxy-training",
        choices=TRAINING_LEVELS,
        help="how long each proxy run trains (default balanced)",
        **optional,
    )
    parser.add_argument(
        "--target-training", choices=TRAINING_LEVELS, help="how long the target trains (default balanced)", **optional
    )
    parser.add_argument("--proxy-steps", type=int, help="fixed optimizer steps per proxy run (0 = planned)", **optional)
    parser.add_argument(
        "--target-steps", type=int, help="fixed optimizer steps of the target (0 = planned)", **optional
    )
    parser.add_argument(
        "--eval-every-round", action="store_true", help="also train and test the target every round", **optional
    )
    parser.add_argument("--device", help="auto | cpu | cuda | mps", **optional)
    parser.add_argument("--image-size", type=int, help="pixels; 0 = picked from the data", **optional)
    parser.add_argument("--workdir", type=Path, help="keep the project here (default: a temporary folder)", **optional)
    parser.add_argument(
        "--backbone",
        help="none | ssl (self-supervised on the pool first) | a local weights file "
        "(torchvision resnet18/34/50, or an ssl backbone's .safetensors) | resnet18/34/50 from "
        "the torch cache",
        **optional,
    )
    parser.add_argument(
        "--initial-strategy",
        choices=("auto", "random", "typiclust", "probcover"),
        help="round 0's picks (auto: typiclust with a backbone when the first batch is at most "
        "10 %% of the pool, else random)",
        **optional,
    )
    parser.add_argument("--ssl-minutes", type=float, help="how long the ssl backbone trains (default 10)", **optional)
    parser.add_argument(
        "--ssl-steps", type=int, help="a fixed number of ssl steps instead of --ssl-minutes", **optional
    )
    parser.add_argument(
        "--candidates",
        choices=CANDIDATES,
        help="what each batch is chosen among: all free images (default), or seals: the --seals-k nearest "
        "neighbours of every labeled image (backbone embeddings, else the proxy's; docs/seals.md)",
        **optional,
    )
    parser.add_argument("--seals-k", type=int, help="neighbours per labeled image with seals (default 100)", **optional)


def run_worker_command(args: argparse.Namespace) -> int:
    """`python -m engine worker`: takes the project's worker lock before importing the worker's modules,
    so a second worker exits within a fraction of a second and the lock alone says one is alive."""
    from engine.worker_lock import WorkerLock

    lock = WorkerLock(args.project)
    if args.project.is_dir() and not lock.acquire():
        return 0
    from engine.distributed.launch import launch_from_args
    from engine.worker import run_worker

    run_worker(
        args.project,
        once=args.once,
        poll_s=args.poll,
        idle_exit_s=args.idle_exit,
        parent_pid=args.parent_pid,
        lock=lock,
        launch=launch_from_args(args) if args.processes is not None else None,
    )
    return 0


def run_predict_command(args: argparse.Namespace) -> int:
    """`python -m engine predict CHECKPOINT IMAGE...`."""
    from PIL import Image

    from engine.checkpoint import CheckpointError, load_checkpoint

    try:
        model = load_checkpoint(args.checkpoint, device=args.device)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from exc
    for path in args.images:
        with Image.open(path) as image:
            [(name, probability)] = model.predict([image])
        print(f"{path}\t{name}\t{probability:.4f}")
    return 0


def run_import_labels_command(args: argparse.Namespace) -> int:
    """`proxy-labeler import-labels`: the report on stdout (0), or the problems on stderr (1); an unreadable
    file or project is one line through `main` (2)."""
    import storage

    project = storage.open_project(args.project)
    source = storage.SUBFOLDERS if args.subfolders else args.file
    try:
        plan = storage.import_labels(project, source, dry_run=args.dry_run)
    except storage.LabelImportError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(plan.report())
    return 0


def run_app_command(args: argparse.Namespace) -> int:
    """Replace this process with `streamlit run server.py ...` (server.py is installed beside the packages)."""
    spec = importlib.util.find_spec("server")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("server.py is not installed; run from the repository (make run)")
    command = [sys.executable, "-m", "streamlit", "run", spec.origin, *args.streamlit_args]
    os.execv(sys.executable, command)
    return 0  # not reached


def run_study_command(args: argparse.Namespace) -> int:
    """The study and its plots: scripts that live in the repository, not in the installed packages."""
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    for name in ("svp_study.py", "plot_study.py"):
        if not (scripts / name).is_file():
            raise FileNotFoundError(f"{scripts / name} not found; the study runs from a repository checkout")
        code = subprocess.call([sys.executable, str(scripts / name)])
        if code:
            return code
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` and run the chosen subcommand; errors a user can fix print one line and exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"] and argv[1:2] not in (["-h"], ["--help"]):
        # everything after `run` is streamlit's (argparse's REMAINDER drops a leading --option)
        args = argparse.Namespace(command="run", run="engine.cli:run_app_command", streamlit_args=argv[1:])
    elif argv[:1] == ["worker"] and not {"-h", "--help"} & set(argv):
        # parsed alone, without importing storage (sqlite-utils imports pandas: half a second),
        # so the worker holds its lock a moment after it starts
        args = add_worker_arguments(argparse.ArgumentParser(prog="proxy-labeler worker")).parse_args(argv[1:])
    else:
        args = build_parser().parse_args(argv)
    module, function = args.run.split(":")
    try:
        return getattr(importlib.import_module(module), function)(args)
    except Exception as exc:
        if not _user_error(exc):
            raise
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2


def _user_error(exc: Exception) -> bool:
    """Bad settings, a missing file, a project storage refuses: one line, not a traceback."""
    storage = sys.modules.get("storage")  # a StorageError was raised only if storage was imported
    return isinstance(exc, ValueError | FileNotFoundError) or (
        storage is not None and isinstance(exc, storage.StorageError)
    )
