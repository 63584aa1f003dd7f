"""Helpers for DistributedDataParallel training (gloo on CPU, nccl on CUDA).

Launch: ``torchrun --nproc_per_node N -m harness train ...`` (env vars RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Every rank draws the same global batch (same shuffling
generator), keeps its contiguous shard ``rows[r*B/W : (r+1)*B/W]``, and the objectives gather
embeddings across ranks with gradients (see ``objectives/_distributed.py``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str = "cpu") -> DistInfo:
    """Initialise the process group when launched by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def shard(indices: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous shard of a global batch (its size must divide by world_size)."""
    if not info.enabled:
        return indices
    n = indices.shape[0]
    if n % info.world_size:
        raise ValueError(f"global batch of {n} rows does not split evenly over {info.world_size} ranks")
    per = n // info.world_size
    return indices[info.rank * per : (info.rank + 1) * per]


def average_gradients(params, info: DistInfo) -> None:
    """Mean of .grad over ranks, in place (for parameters outside the DDP module)."""
    if not info.enabled:
        return
    for p in params:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)
            p.grad /= info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        torch.distributed.barrier()


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(info: DistInfo) -> None:
    if info.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def local_objectives() -> contextlib.AbstractContextManager[None]:
    """Make the objectives behave as in a single process (no cross-rank gathering).

    Used for rank-0-only evaluation inside a distributed run: otherwise an objective's forward
    would wait in an all_gather that the other ranks never join.
    """
    from objectives import no_gather

    return no_gather()
