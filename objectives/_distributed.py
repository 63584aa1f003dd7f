"""Cross-rank reductions that keep gradients (used only when torch.distributed is initialised).

Convention (the one DistributedDataParallel's gradient averaging expects): every rank returns the
*global* loss value, and the gradient that reaches a rank's local embeddings is ``world_size`` times
the gradient of the global loss with respect to them, so that DDP's mean over ranks of parameter
gradients equals the single-process gradient on the concatenated batch.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import Tensor

_local = threading.local()


@contextlib.contextmanager
def no_gather() -> Iterator[None]:
    """Within this block objectives compute on this process's rows only, as in one process.

    For rank-local work inside a distributed run (e.g. evaluation on rank 0), where a gather would
    wait for ranks that never join it.
    """
    previous = getattr(_local, "disabled", False)
    _local.disabled = True
    try:
        yield
    finally:
        _local.disabled = previous


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is not initialised or inside no_gather()."""
    if getattr(_local, "disabled", False):
        return 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_rows(x: Tensor) -> Tensor:
    """Concatenate ``x`` (..., B_local, d) over ranks along dim -2, with gradients."""
    _, size = world()
    if size == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=-2)


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum over ranks, differentiable (backward sums the incoming gradients over ranks)."""
    _, size = world()
    if size == 1:
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x, op=torch.distributed.ReduceOp.SUM)


def gather_flat(x: Tensor) -> Tensor:
    """Concatenate 1-D per-row values of all ranks, with gradients."""
    _, size = world()
    if size == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)
