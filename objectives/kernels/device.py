"""Moving small values between host and device without synchronising.

A loss call on an accelerator should queue work and return: any read of a device value on the host
(``float(t)``, ``.item()``, ``bool(t)``) or copy from pageable host memory waits for every queued
kernel. These helpers keep such values where they are unless reading them is free.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def reads_are_free(t: Tensor) -> bool:
    """True for a CPU tensor outside ``torch.compile`` tracing: its value can be read on the host
    at no cost (a compiled graph cannot branch on it, and an accelerator would have to synchronise)."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def host_float(value: float | Tensor) -> float | Tensor:
    """A 0-dim tensor as a Python float where :func:`reads_are_free`, else the tensor unchanged
    (numbers pass through as floats)."""
    if isinstance(value, Tensor):
        return float(value) if reads_are_free(value) else value
    return float(value)


def host_values(values: Sequence, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small tensor of Python numbers on ``device`` without a host-device synchronisation.

    A plain ``torch.tensor(values, device="cuda")`` copies from pageable memory and waits for the
    stream; here CUDA values are staged in pinned memory and copied asynchronously. While
    ``torch.compile`` traces, the values become a graph constant.
    """
    if torch.compiler.is_compiling() or device.type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype).pin_memory().to(device, non_blocking=True)


def checks_on_device(t: Tensor) -> bool:
    """True where a check on ``t`` is queued with ``torch._assert_async`` instead of read on the host:
    CUDA tensors (no synchronisation) and any tensor while ``torch.compile`` traces (no graph break).
    Elsewhere (CPU, other accelerators) the value is read and a precise error raised."""
    return torch.compiler.is_compiling() or t.device.type == "cuda"
