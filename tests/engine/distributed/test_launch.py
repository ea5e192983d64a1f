"""Heavy stages as real torchrun jobs (2 processes, gloo): training and scoring give what one process gives,
progress reaches the caller, a stop stops every rank, a crash is retried once and then reported."""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np
import pytest
import torch

from engine.distributed import launch as launch_module
from engine.distributed.launch import Launch, StageFailed, launching, resolve_processes, run_stage, torchrun_argv
from engine.models import build_model
from engine.score import score_pool
from engine.train import Cancelled, LearnedNothing, TrainConfig, evaluate
from tests.engine.distributed.test_training import CLASSES, NORM, squares

pytestmark = pytest.mark.distributed

TWO = Launch(processes=2)


def test_training_as_a_two_process_stage_learns_and_reports_progress():
    images, labels = squares(40, seed=0)
    model = build_model("proxy_tiny", CLASSES, 16, seed=0)
    seen = []
    with launching(TWO):
        trained = launch_module.train_model(
            model, images, labels, TrainConfig(steps=60, device="cpu", report_every=20), NORM, on_progress=seen.append
        )
    test_images, test_labels = squares(20, seed=1)
    assert trained is model and not model.training
    assert evaluate(model, test_images, test_labels, NORM, device="cpu") >= 0.9
    assert [p.step for p in seen] == [20, 40, 60] and all(p.steps == 60 for p in seen)


def test_scoring_as_a_two_process_stage_equals_one_process(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(600, 3, 16, 16), dtype=np.uint8)
    np.save(tmp_path / "pool.npy", images)
    pool = np.load(tmp_path / "pool.npy", mmap_mode="r")
    model = build_model("proxy_tiny", CLASSES, 16, seed=2)
    want = score_pool(model, images, NORM, device="cpu")
    with launching(TWO):
        got = launch_module.score_model(model, pool, NORM)
    np.testing.assert_array_equal(got.probs, want.probs)
    np.testing.assert_array_equal(got.embeddings, want.embeddings)


def test_a_stop_kills_every_rank_and_raises_cancelled(tmp_path):
    images, labels = squares(40, seed=0)
    model = build_model("proxy_tiny", CLASSES, 16, seed=0)
    stop = threading.Event()  # set once the ranks are training: their first progress report
    config = TrainConfig(steps=100_000, device="cpu", report_every=5)
    with launching(TWO), pytest.raises(Cancelled):
        launch_module.train_model(
            model, images, labels, config, NORM, on_progress=lambda p: stop.set(), should_stop=stop.is_set
        )
    stopped = time.monotonic()
    left = []
    while time.monotonic() - stopped < 10:  # no rank outlives the stop
        left = subprocess.run(["pgrep", "-f", "engine.distributed.stage"], capture_output=True, text=True).stdout
        if not left:
            break
        time.sleep(0.2)
    assert not left


def test_a_failure_the_stage_explains_is_raised_as_itself():
    images = np.zeros((32, 3, 16, 16), np.uint8)  # nothing to learn: every image the same
    labels = np.repeat(np.arange(CLASSES), 8)
    model = build_model("proxy_tiny", CLASSES, 16, seed=0)
    with launching(TWO), pytest.raises(LearnedNothing):
        launch_module.train_model(model, images, labels, TrainConfig(steps=30, device="cpu"), NORM)


def test_a_crashing_stage_is_retried_once_then_reported_with_its_log(tmp_path):
    def inputs(folder):
        return {}

    with pytest.raises(StageFailed, match=r"(?s)2 attempts\): a rank crashed.*rank0: unknown stage 'no-such-stage'"):
        run_stage("no-such-stage", inputs, launch=TWO, workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # the stage folder is gone


def test_resolve_processes_and_the_command():
    assert resolve_processes("auto") == 1  # no GPU on the test machines' CPU path
    assert resolve_processes("3") == 3
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="auto or a positive integer"):
            resolve_processes(bad)
    argv = torchrun_argv(Launch(processes=4), tmp := __import__("pathlib").Path("/x"))
    assert "--nproc-per-node=4" in argv and "--standalone" in argv and argv[-1] == str(tmp)
    two_machines = Launch(processes=8, nnodes="2", rdzv_endpoint="head:29500", rdzv_id="job7", stage_dir="/shared")
    many = torchrun_argv(two_machines, tmp)
    assert {"--nnodes=2", "--rdzv-endpoint=head:29500", "--rdzv-id=job7", "--rdzv-backend=c10d"} <= set(many)


def test_ssl_as_a_two_process_stage_trains_saves_its_state_and_returns_the_backbone(tmp_path):
    import dataclasses

    from engine.pool_cache import channel_stats
    from tests.engine.test_representation import TINY_SSL, stripes

    images, _ = stripes(64, size=8)
    np.save(tmp_path / "pool.npy", images)
    pool = np.load(tmp_path / "pool.npy", mmap_mode="r")
    config = dataclasses.replace(TINY_SSL, steps=20, batch_size=8, report_every=5)
    seen = []
    with launching(TWO):
        result = launch_module.pretrain_model(
            pool, channel_stats(images), config, tmp_path / "state.pt", on_progress=seen.append
        )
    assert result.steps == 20 and result.resumed_from == 0 and np.isfinite(result.final_loss)
    assert [p.step for p in seen] == [5, 10, 15, 20]
    assert (tmp_path / "state.pt").is_file()  # rank 0 saved the resumable state where the caller asked
    assert not result.model.training and result.model.embed(torch.zeros(2, 3, 8, 8)).shape[0] == 2


def test_kcenter_on_a_huge_pool_runs_across_the_stage_processes_with_the_same_picks(monkeypatch):
    from engine.score import PoolScores
    from engine.selection.kcenter import k_center_greedy
    from engine.selection.strategies import STRATEGIES

    monkeypatch.setattr(launch_module, "KCENTER_STAGE_ROWS", 100)  # a "huge" pool of 400 rows
    X = np.random.default_rng(0).integers(0, 4, size=(400, 5)).astype(np.float32)  # many ties
    pool = PoolScores(probs=np.full((400, 2), 0.5, np.float32), embeddings=X)
    want = k_center_greedy(X, [], 30, rng=np.random.default_rng(7))
    runs = []
    monkeypatch.setattr(launch_module, "run_stage", _counting(launch_module.run_stage, runs))
    with launching(TWO):
        got = STRATEGIES["kcenter"](pool, np.empty(0, np.int64), 30, rng=np.random.default_rng(7))
    assert runs == ["kcenter"] and got.tolist() == want.tolist()


def _counting(run_stage, runs: list):
    def counted(kind, *args, **kwargs):
        runs.append(kind)
        return run_stage(kind, *args, **kwargs)

    return counted


def test_embedding_as_a_two_process_stage_equals_one_process(tmp_path):
    from engine.embeddings import Backbone, embed_chunks
    from engine.ssl import SSLConfig, backbone_config

    images = np.random.default_rng(1).integers(0, 256, size=(700, 3, 16, 16), dtype=np.uint8)
    np.save(tmp_path / "pool.npy", images)
    pool = np.load(tmp_path / "pool.npy", mmap_mode="r")
    from engine.models import model_from_config

    backbone = Backbone("b", model_from_config(backbone_config(SSLConfig(), 16), seed=4), 16, NORM, "b")
    rows = np.arange(3, 700, 2)  # the rows still to embed, not all of the pool
    want = embed_chunks(backbone, pool, rows, "cpu")
    with launching(TWO):
        got = launch_module.embed_rows(backbone, pool, rows, "cpu")
    assert got.dtype == np.float16 and got.shape == (len(rows), backbone.dim)
    np.testing.assert_array_equal(got, want)


def test_two_machines_share_a_stage_through_the_stage_agent(tmp_path):
    """Two "machines" on this one: the job's own torchrun and a stage agent's, one process each, joined at a
    c10d rendezvous; the stage's two ranks train one model."""
    import sys

    from tests.engine.distributed.ranks import free_port

    endpoint = f"127.0.0.1:{free_port()}"
    flags = ["--nnodes", "2", "--rdzv-endpoint", endpoint, "--rdzv-id", "t", "--stage-dir", str(tmp_path)]
    agent = subprocess.Popen(
        [sys.executable, "-m", "engine", "stage-agent", "--processes", "1", *flags, "--once", "--idle-exit", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        images, labels = squares(40, seed=0)
        model = build_model("proxy_tiny", CLASSES, 16, seed=0)
        seen = []
        launch = Launch(processes=1, nnodes="2", rdzv_endpoint=endpoint, rdzv_id="t", stage_dir=str(tmp_path))
        with launching(launch):
            launch_module.train_model(
                model,
                images,
                labels,
                TrainConfig(steps=40, device="cpu", report_every=20),
                NORM,
                on_progress=seen.append,
            )
        output = agent.communicate(timeout=120)[0]
    finally:
        agent.kill()
    assert agent.returncode == 0 and "joined 1 stage(s)" in output, output
    test_images, test_labels = squares(20, seed=1)
    assert [p.step for p in seen] == [20, 40]
    assert evaluate(model, test_images, test_labels, NORM, device="cpu") >= 0.9


def test_several_machines_need_a_rendezvous_and_a_shared_stage_folder():
    with pytest.raises(ValueError, match="--rdzv-endpoint HOST:PORT and --stage-dir"):
        Launch(processes=2, nnodes="2", rdzv_endpoint="head:29500")


def test_a_stage_dies_with_the_job_process_that_started_it(tmp_path):
    """A worker killed outright (SIGKILL: no clean-up runs) takes its torchrun stage and ranks with it."""
    import signal
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import numpy as np
        from engine.distributed import launch
        from engine.models import build_model
        from engine.train import TrainConfig
        from tests.engine.distributed.test_training import CLASSES, NORM, squares
        images, labels = squares(40, seed=0)
        with launch.launching(launch.Launch(processes=2)):
            launch.train_model(build_model("proxy_tiny", CLASSES, 16), images, labels,
                               TrainConfig(steps=100_000, device="cpu", report_every=5), NORM,
                               on_progress=lambda p: open({str(tmp_path / "started")!r}, "w").close())
    """)
    job = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            assert job.poll() is None, "the job ended before its stage trained"
            time.sleep(0.2)
        assert (tmp_path / "started").exists()
        job.send_signal(signal.SIGKILL)
        job.wait(10)
        left = "?"
        for _ in range(100):  # torchrun stops its ranks on SIGTERM within seconds
            left = subprocess.run(["pgrep", "-f", "engine.distributed.stage"], capture_output=True, text=True).stdout
            if not left:
                break
            time.sleep(0.2)
        assert not left, f"stage processes outlived their job: {left}"
    finally:
        job.kill()


def test_a_job_on_the_cpu_hides_the_gpus_from_its_stages(monkeypatch, tmp_path):
    seen = {}

    class Done:
        returncode, pid = 0, 0

        def __init__(self, argv, **kwargs):
            seen.update(kwargs["env"])

        def poll(self):
            return 0

    monkeypatch.setattr(launch_module.subprocess, "Popen", Done)
    launch_module._run_child(Launch(processes=2, cpu=True), tmp_path, None, None)
    assert seen["CUDA_VISIBLE_DEVICES"] == ""
    seen.clear()
    launch_module._run_child(Launch(processes=2), tmp_path, None, None)
    assert "CUDA_VISIBLE_DEVICES" not in seen or seen["CUDA_VISIBLE_DEVICES"] != ""
    assert resolve_processes("auto", "cpu") == 1
