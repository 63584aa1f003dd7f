"""Helpers for DistributedDataParallel training (gloo on CPU, nccl on CUDA).

Launch: ``torchrun --nproc_per_node N -m harness train ...`` (env vars RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Every rank draws the same global batch (same shuffling
generator), keeps its contiguous shard ``rows[r*B/W : (r+1)*B/W]``, and the objectives gather
embeddings across ranks with gradients (see ``objectives/_distributed.py``).

Every collective has a deadline: ``--dist-timeout-s`` (else ``$HARNESS_DIST_TIMEOUT_S``, else
600 s). A rank that hangs (stopped, deadlocked, lost) makes the others fail after that long with one
line naming this rank and the ranks that had stopped reporting progress (:func:`collective_errors`),
instead of waiting forever; torchrun then ends the remaining ranks.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Iterator
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


TIMEOUT_ENV = "HARNESS_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0
_PROGRESS_KEY = "harness/progress/{rank}"
_ALIVE_KEY = "harness/alive/{rank}"
HEARTBEAT_S = 1.0


def timeout_seconds(value: float | None = None) -> float:
    """The collective deadline: ``value``, else ``$HARNESS_DIST_TIMEOUT_S``, else 600 s."""
    if value is None:
        env = os.environ.get(TIMEOUT_ENV)
        if env:
            try:
                value = float(env)
            except ValueError:
                raise ValueError(f"${TIMEOUT_ENV}={env!r} is not a number of seconds") from None
        else:
            value = DEFAULT_TIMEOUT_S
    if not value > 0:
        raise ValueError(f"the distributed timeout must be a positive number of seconds, got {value}")
    return float(value)


def add_arguments(parser) -> None:
    """``--dist-timeout-s``, for commands that may run under torchrun."""
    parser.add_argument("--dist-timeout-s", type=float, default=None,
                        help=f"seconds a rank waits for the others in a collective before every rank stops "
                             f"with an error (default: ${TIMEOUT_ENV}, else {DEFAULT_TIMEOUT_S:g})")


def init_from_env(device: str = "cpu", timeout_s: float | None = None) -> DistInfo:
    """Initialise the process group when launched by torchrun with WORLD_SIZE > 1.

    ``timeout_s`` (see :func:`timeout_seconds`) bounds every collective."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world,
                                             timeout=datetime.timedelta(seconds=timeout_seconds(timeout_s)))
        _start_heartbeat(rank)
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


def _start_heartbeat(rank: int) -> None:
    """A daemon thread writing this rank's wall time to the store every second: a stopped or dead
    rank's entry goes stale, which names it in a timeout message."""
    import threading

    store = torch.distributed.distributed_c10d._get_default_store()

    def beat() -> None:
        while True:
            try:
                store.set(_ALIVE_KEY.format(rank=rank), f"{time.time():.3f}")
            except Exception:  # noqa: BLE001  # the group is gone: stop beating
                return
            time.sleep(HEARTBEAT_S)

    threading.Thread(target=beat, name=f"harness-heartbeat-{rank}", daemon=True).start()


def report_progress(info: DistInfo, step: int) -> None:
    """Record this rank's step in the rendezvous store (named in a timeout message)."""
    if not info.enabled:
        return
    try:
        store = torch.distributed.distributed_c10d._get_default_store()
        store.set(_PROGRESS_KEY.format(rank=info.rank), f"{step} {time.time():.0f}")
    except Exception:  # noqa: BLE001  # best effort: progress is only used in error messages
        pass


def _read_all(info: DistInfo, key: str) -> dict[int, str]:
    """The store's ``key`` of every rank (unreadable ranks absent)."""
    out: dict[int, str] = {}
    try:
        store = torch.distributed.distributed_c10d._get_default_store()
        store.set_timeout(datetime.timedelta(seconds=2))
        for r in range(info.world_size):
            try:
                out[r] = store.get(key.format(rank=r)).decode()
            except Exception:  # noqa: BLE001
                continue
    except Exception:  # noqa: BLE001
        pass
    return out


def describe_hung(info: DistInfo, exc: BaseException) -> str:
    """One line: which rank timed out and which ranks were behind (by their last reported step)."""
    steps = {r: int(v.split()[0]) for r, v in _read_all(info, _PROGRESS_KEY).items()}
    now = time.time()
    age = {r: now - float(v) for r, v in _read_all(info, _ALIVE_KEY).items()}
    mine = steps.get(info.rank)
    silent = [r for r in range(info.world_size) if r != info.rank and age.get(r, float("inf")) > 3 * HEARTBEAT_S]
    behind = [r for r in range(info.world_size)
              if r != info.rank and mine is not None and steps.get(r, -1) < mine]
    named = sorted(set(silent) | set(behind))
    if named:
        def one(r: int) -> str:
            alive = "no heartbeat" if r not in age else f"last heartbeat {age[r]:.0f}s ago"
            return f"rank {r} (last step {steps.get(r, 'none')}, {alive})"

        who = ", ".join(one(r) for r in named)
    else:
        who = "another rank"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"rank {info.rank} of {info.world_size}: a collective did not complete in time; {who} stopped "
            f"responding (hung, stopped or dead): {first[:200]}")


@contextlib.contextmanager
def collective_errors(info: DistInfo) -> Iterator[None]:
    """Turn a failed or timed-out collective into a ``TrainError`` naming the ranks involved."""
    if not info.enabled:
        yield
        return
    try:
        yield
    except (RuntimeError, torch.distributed.DistError) as exc:
        from harness.experiment.runs import TrainError

        if isinstance(exc, TrainError):
            raise
        text = str(exc).lower()
        if not any(w in text for w in ("timed out", "timeout", "connection", "peer", "gloo", "nccl")):
            raise
        raise TrainError(describe_hung(info, exc)) from exc


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
