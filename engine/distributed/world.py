"""Which process this is, its shard of a pool, and the collectives jobs use.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each process it starts; `join`
reads them and joins the process group (NCCL on CUDA, gloo on CPU). Without them, or with WORLD_SIZE 1, the
world is this one process and every collective here returns its input, so single-process code pays nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = [
    "COLLECTIVE_TIMEOUT_S",
    "World",
    "barrier",
    "best_of",
    "buffers_from_main",
    "collective_timeout_s",
    "data_parallel",
    "from_main",
    "gather_with_grad",
    "join",
    "largest",
    "leave",
    "mean_over_ranks",
    "shard_range",
    "world",
]

# A collective that waits longer than this raises in every rank still alive: a rank that died or hangs fails the
# job within this time instead of holding the others forever. Long enough for a slow rank's checkpoint write.
# PROXY_LABELER_COLLECTIVE_TIMEOUT_S overrides it (read when the group is joined).
COLLECTIVE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one job: rank 0 of size 1 when there is no process group."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that reports progress and writes results."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """This rank's device: its own GPU (by local rank) when there are GPUs, else the CPU."""
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    def shard(self, n: int, align: int = 1) -> tuple[int, int]:
        """This rank's contiguous rows [start, stop) of n (see `shard_range`)."""
        return shard_range(n, self.rank, self.size, align)


def shard_range(n: int, rank: int, size: int, align: int = 1) -> tuple[int, int]:
    """Rows [start, stop) of n for `rank` of `size`: contiguous, in order of rank, together all n once.

    Shards are cut at multiples of `align` (a batch size), so each batch holds the same rows as in one
    process's pass and scores come out bit-identical; the blocks are shared as evenly as they go (the
    first ranks take one more), so a rank may get nothing when there are fewer blocks than ranks.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in a world of size {size}")
    if align < 1:
        raise ValueError(f"align must be at least 1, got {align}")
    blocks = -(-n // align)
    share, extra = divmod(blocks, size)
    first = rank * share + min(rank, extra)
    last = first + share + (1 if rank < extra else 0)
    return min(first * align, n), min(last * align, n)


def world() -> World:
    """The world of this process: from the process group when one is joined, else one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def join(timeout_s: float | None = None) -> World:
    """Join the process group torchrun described in the environment, once; a single process joins nothing.

    The backend follows the device: NCCL when there are GPUs (each rank on the GPU of its local rank), else
    gloo. `timeout_s` (default COLLECTIVE_TIMEOUT_S) bounds every collective.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return world()
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run with one process")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(
        backend="nccl" if cuda else "gloo",
        timeout=timedelta(seconds=collective_timeout_s() if timeout_s is None else timeout_s),
    )
    return world()


def collective_timeout_s() -> float:
    """Seconds a collective may wait for the other ranks."""
    return float(os.environ.get("PROXY_LABELER_COLLECTIVE_TIMEOUT_S", COLLECTIVE_TIMEOUT_S))


def leave() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (nothing with one process)."""
    if world().size > 1:
        dist.barrier()


def best_of(value: float, position: int) -> tuple[float, int]:
    """The best (value, position) over all ranks: the largest value, ties to the lowest position.

    One all-gather of two float64 per rank (pool positions are exact in float64 up to 2**53). A rank with no
    candidate passes (-inf, -1)."""
    here = world()
    if here.size == 1:
        return value, position
    mine = torch.tensor([value, float(position)], dtype=torch.float64, device=_collective_device())
    every = torch.empty(here.size * 2, dtype=torch.float64, device=mine.device)
    dist.all_gather_into_tensor(every, mine)
    pairs = every.view(here.size, 2).cpu().tolist()
    best = max((v, -p) for v, p in pairs if p >= 0)
    return best[0], int(-best[1])


def from_main(values: list[int]) -> list[int]:
    """Rank 0's `values` in every rank (one broadcast): decisions that must agree, such as a run's length."""
    if world().size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device=_collective_device())
    dist.broadcast(tensor, src=0)
    return [int(v) for v in tensor.tolist()]


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar tensor over all ranks (one all-reduce): a loss every rank checks alike."""
    if world().size == 1:
        return value
    out = value.detach().to(_collective_device(), torch.float64).reshape(1)
    dist.all_reduce(out)
    return out[0] / world().size


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` under DistributedDataParallel on `device`: one gradient all-reduce per step, and rank 0's
    weights and buffers copied to every rank at the start, so all ranks begin and stay identical."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=device.index if ids else None)


def buffers_from_main(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) into every rank's `module`: DDP copies them
    before each forward, so after the last step each rank still holds its own."""
    if world().size == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def gather_with_grad(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `tensor` (same shape in each), in rank order, with gradients flowing back to their
    ranks (torch.distributed.nn): what contrastive losses need to use other ranks' examples as negatives."""
    if world().size == 1:
        return [tensor]
    from torch.distributed.nn.functional import all_gather

    return list(all_gather(tensor))


def largest(values: list[int]) -> list[int]:
    """Each of `values` at its largest over all ranks (one all-reduce)."""
    if world().size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [int(v) for v in tensor.tolist()]


def _collective_device() -> torch.device:
    """Where collective tensors live: NCCL moves CUDA tensors only, gloo CPU ones."""
    return world().device if dist.get_backend() == "nccl" else torch.device("cpu")
