"""SimCLR across ranks (gloo, 2 ranks): negatives gathered with their gradients give the loss and gradients
of one global batch, every rank ends with the same backbone, and a stopped run resumes at another world size."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.pool_cache import channel_stats
from engine.ssl import nt_xent, pretrain
from engine.train import Cancelled
from tests.engine.distributed.ranks import run_ranks
from tests.engine.test_representation import TINY_SSL, leave_one_out_knn, stripes

pytestmark = pytest.mark.distributed

B, D, T = 4, 6, 0.2


def projections(seed: int = 0) -> torch.Tensor:
    """Both views of a global batch of 2 ranks x B images: [2, 2B, D] (view, rank-major rows, width)."""
    return torch.randn(2, 2 * B, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def gathered_loss_in_ranks() -> dict:
    from engine.distributed.world import world

    rank = world().rank
    z = projections()[:, rank * B : (rank + 1) * B].clone().requires_grad_(True)
    loss = nt_xent(z[0], z[1], T)
    loss.backward()
    return {"loss": loss.item(), "grad": z.grad.numpy().copy()}


def ssl_in_ranks(state: str) -> dict:
    images, labels = stripes(200)
    config = dataclasses.replace(TINY_SSL, steps=120, batch_size=16)
    result = pretrain(images, channel_stats(images), config)
    weights = [t.detach().numpy().copy() for t in result.model.state_dict().values()]
    stopped_at = []  # a second run, stopped on rank 0 and saved for a one-process resume
    try:
        pretrain(
            images,
            channel_stats(images),
            dataclasses.replace(config, steps=40, report_every=1),
            state,
            on_progress=lambda p: stopped_at.append(p.step),
            should_stop=lambda: len(stopped_at) >= 10,
        )
        stopped = False
    except Cancelled:
        stopped = True
    return {"knn": leave_one_out_knn(result.model, images, labels), "weights": weights, "stopped": stopped}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[list[dict], list[dict], object]:
    folder = tmp_path_factory.mktemp("ssl")
    state = folder / "state.pt"
    results = run_ranks(_both, 2, folder / "ranks", str(state))  # one start of the two ranks for every check
    return [r["loss"] for r in results], [r["ssl"] for r in results], state


def _both(state: str) -> dict:
    return {"loss": gathered_loss_in_ranks(), "ssl": ssl_in_ranks(state)}


def test_gathered_negatives_give_one_global_batch_loss_and_gradient(ranks):
    losses, _, _ = ranks
    z = projections().clone().requires_grad_(True)
    whole = nt_xent(z[0], z[1], T)  # one process, the whole global batch
    whole.backward()
    assert np.mean([r["loss"] for r in losses]) == pytest.approx(whole.item(), rel=1e-6)  # nt_xent computes in float32
    for rank, result in enumerate(losses):
        # each rank's gradient sums every rank's loss through the gather; DDP then averages over the 2 ranks
        mine = z.grad[:, rank * B : (rank + 1) * B].numpy()
        np.testing.assert_allclose(result["grad"] / 2, mine, rtol=1e-5, atol=1e-7)


def test_ssl_in_two_ranks_learns_and_leaves_both_the_same_backbone(ranks):
    _, runs, _ = ranks
    assert runs[0]["knn"] >= 0.9 and runs[0]["knn"] == runs[1]["knn"]
    for a, b in zip(runs[0]["weights"], runs[1]["weights"], strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_run_stopped_in_two_ranks_resumes_in_one(ranks):
    _, runs, state = ranks
    assert runs[0]["stopped"] and runs[1]["stopped"]  # the stop asked on rank 0 reached rank 1
    images, _ = stripes(200)
    config = dataclasses.replace(TINY_SSL, steps=40, batch_size=16, report_every=1)
    result = pretrain(images, channel_stats(images), config, state)
    assert 10 <= result.resumed_from < 40 and result.steps == 40
