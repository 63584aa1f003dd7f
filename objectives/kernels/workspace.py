"""Reusable CPU scratch memory for the similarity blocks of the fused kernels."""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

# Scratch memory for the (rows x columns) blocks on the CPU. A fresh multi-megabyte tensor per call
# is served by mmap and pays a page fault per 4 KiB page on first touch: measured here at 10-30 % of
# the time of a 1024 x 5120 x 256 GEMM. One reusable buffer per thread and dtype removes that.
# CUDA's caching allocator already reuses memory, so GPU blocks are ordinary allocations.
WORKSPACE_MAX_BYTES = 512 * 2**20
_workspace = threading.local()


def _scratch(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised tensor for a block that never leaves the kernel call (reused on the CPU)."""
    numel = math.prod(shape)
    if device.type != "cpu" or numel * dtype.itemsize > WORKSPACE_MAX_BYTES:
        return torch.empty(shape, dtype=dtype, device=device)
    buffers = _workspace.__dict__.setdefault("buffers", {})
    buf = buffers.get(dtype)
    if buf is None or buf.numel() < numel:
        # a normal tensor even when first made under inference_mode: an inference tensor could not
        # be written by later calls outside it
        with torch.inference_mode(False):
            buffers[dtype] = buf = torch.empty(numel, dtype=dtype)
    return buf[:numel].view(shape)


def release_workspace() -> None:
    """Free this thread's CPU block buffers (at most ``WORKSPACE_MAX_BYTES`` per dtype are kept)."""
    _workspace.__dict__.pop("buffers", None)
