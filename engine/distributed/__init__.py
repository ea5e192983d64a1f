"""Several processes, one job: the only code that calls torch.distributed (issue 26).

A job started by torchrun runs the same code in each process; `world.World` says which process this is
(rank, world size, local device) and world size 1 is the ordinary single process, with no process group.
Modules:

- `world`: the process group (from torchrun's environment), contiguous shards of a pool, and the few
  collectives the jobs need (broadcast a decision of rank 0, the best of every rank's candidate, a barrier),
  each with a timeout, so a dead or hung rank fails the job with a reason instead of hanging it;
- `kcenter`: exact k-center greedy with the pool split across ranks, picks identical to one process's;
- `scoring`: the pool scored in contiguous shards, each rank writing its rows of the same files.
"""
