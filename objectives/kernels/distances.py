"""Distances, Gaussian kernels and the median bandwidth heuristic on plain (B, d) samples.

Every objective and every divergence estimator calls these; nothing re-derives them.

Bandwidth convention: ``bandwidth`` is the width ``s`` of ``k_s(u, v) = exp(-|u - v|^2 / (2 s^2))``.
A Gaussian KDE with bandwidth ``h`` has cross terms of width ``s = sqrt(2) h`` (see
``harness.instruments.divergence``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from objectives.kernels.device import reads_are_free


def sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """Squared Euclidean distances (|x|, |y|), clamped at 0 against cancellation."""
    xx = (x * x).sum(-1, keepdim=True)
    yy = (y * y).sum(-1, keepdim=True)
    # in place on the two fresh (n, m) tensors: the same bits as the out-of-place expression with two
    # allocations instead of four (allocation and first touch cost more than the GEMM below d ~ 100)
    out = xx + yy.transpose(-1, -2)
    return out.sub_(torch.matmul(x, y.transpose(-1, -2)).mul_(2.0)).clamp_min_(0.0)


def log_kernel_matrix(x: Tensor, y: Tensor, bandwidth: float | Tensor) -> Tensor:
    """log k_s(x_i, y_j) = -|x_i - y_j|^2 / (2 s^2) for all pairs."""
    return -sq_dists(x, y) / (2.0 * bandwidth**2)


def log_mean_kernel(
    x: Tensor,
    y: Tensor,
    bandwidth: float | Tensor,
    exclude_diagonal: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """LMK_s(X, Y) = log( 1/(|X| |Y|) sum_ij k_s(x_i, y_j) ), computed with logsumexp.

    ``exclude_diagonal`` drops the i == j terms (requires |X| == |Y|; the mean is then over
    |X| (|X| - 1) pairs), which is what the uniformity of a sample against itself uses.
    ``chunk_size`` processes rows of ``x`` in blocks so that only a (chunk, |Y|) block is alive.
    """
    n, m = x.shape[-2], y.shape[-2]
    if exclude_diagonal and n != m:
        raise ValueError(f"exclude_diagonal needs equal sample counts, got x: {n} rows and y: {m} rows")
    if exclude_diagonal and n < 2:
        raise ValueError(f"exclude_diagonal needs at least 2 samples, got {n}")
    step = n if chunk_size is None else int(chunk_size)
    row_lse = []
    for start in range(0, n, step):
        block = log_kernel_matrix(x[..., start : start + step, :], y, bandwidth)
        if exclude_diagonal:
            rows = torch.arange(block.shape[-2], device=x.device)
            block = block.clone()
            block[..., rows, rows + start] = float("-inf")
        row_lse.append(torch.logsumexp(block, dim=-1))
    total = torch.logsumexp(torch.cat(row_lse, dim=-1), dim=-1)
    pairs = n * (n - 1) if exclude_diagonal else n * m
    return total - math.log(pairs)


def median_bandwidth_tensor(*xs: Tensor, max_samples: int = 512) -> Tensor:
    """Median pairwise distance over the pooled sample (i != j) as a detached 0-dim float64 tensor
    on the samples' device, with no host-device synchronisation (usable inside ``torch.compile``).

    At most ``max_samples`` rows enter, the same number from each input (its first rows, so the
    heuristic is deterministic and no modality is left out), keeping the cost O(max_samples^2 d).
    The value is the lower median of the off-diagonal squared distances, square-rooted in float64,
    and at least 1e-3 (identical samples would otherwise give a zero width).

        >>> x = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
        >>> float(median_bandwidth_tensor(x))  # distances 1, 2, 2, 3, 4, 5: lower median 2
        2.0
    """
    if not xs:
        raise ValueError("median bandwidth needs at least one sample set")
    per_set = max(1, max_samples // len(xs))
    # detached rows: the heuristic's value never carries a gradient
    pooled = torch.cat([x.detach().reshape(-1, x.shape[-1])[:per_set] for x in xs], dim=0)
    if pooled.shape[0] < 2:
        raise ValueError(f"median bandwidth needs at least 2 samples, got {pooled.shape[0]}")
    pooled = pooled.float() if pooled.dtype in (torch.float16, torch.bfloat16) else pooled
    n = pooled.shape[0]
    d2 = sq_dists(pooled, pooled)
    d2.fill_diagonal_(-1.0)  # the n diagonal entries become the n smallest values
    # lower median of the off-diagonal entries (each pair appears twice, which leaves it unchanged)
    k = n + (n * (n - 1) - 1) // 2
    med2 = _kth_smallest(d2.reshape(-1), k).double()
    # identical samples give a zero median: fall back to a tiny positive width, never 0
    return med2.clamp_min(0.0).sqrt().clamp_min(1e-3)


def _kth_smallest(values: Tensor, k: int) -> Tensor:
    """The k-th smallest entry (0-based) of a 1-D tensor, as a 0-dim tensor on its device.

    Both branches select the same element exactly. On the CPU numpy's introselect is used (reading
    host memory costs no synchronisation there; torch.kthvalue took ~14x longer at 512 rows, a large
    share of a small-batch loss); on an accelerator, and while torch.compile traces, torch.kthvalue.
    """
    if reads_are_free(values):
        return torch.from_numpy(np.partition(values.numpy(), k)[k : k + 1]).reshape(())
    return torch.kthvalue(values, k + 1).values


def median_bandwidth(*xs: Tensor, max_samples: int = 512) -> float:
    """:func:`median_bandwidth_tensor` as a Python float (one synchronising read on an accelerator)."""
    return float(median_bandwidth_tensor(*xs, max_samples=max_samples))


def resolve_bandwidth(bandwidth: float | str, *xs: Tensor) -> float:
    """A positive number, or "median" for the median heuristic on ``xs``."""
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise ValueError(f"bandwidth must be a positive number or 'median', got {bandwidth!r}")
        return median_bandwidth(*xs)
    return float(bandwidth)
