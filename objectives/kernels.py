"""Shared similarity and kernel computations (one implementation of each concept).

Every objective and every divergence estimator calls these; nothing re-derives them.

Bandwidth convention: ``bandwidth`` is the width ``s`` of ``k_s(u, v) = exp(-|u - v|^2 / (2 s^2))``.
A Gaussian KDE with bandwidth ``h`` has cross terms of width ``s = sqrt(2) h`` (see
``harness.divergence``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "sq_dists",
    "log_kernel_matrix",
    "log_mean_kernel",
    "median_bandwidth",
    "resolve_bandwidth",
]


def sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """Squared Euclidean distances (|x|, |y|), clamped at 0 against cancellation."""
    xx = (x * x).sum(-1, keepdim=True)
    yy = (y * y).sum(-1, keepdim=True)
    return (xx + yy.transpose(-1, -2) - 2.0 * (x @ y.transpose(-1, -2))).clamp_min(0.0)


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


@torch.no_grad()
def median_bandwidth(*xs: Tensor, max_samples: int = 4096) -> float:
    """Median pairwise distance over the pooled sample (i != j), detached.

    At most ``max_samples`` rows (the first ones, deterministic) enter the median so that the
    heuristic stays O(max_samples^2) for large batches.
    """
    pooled = torch.cat([x.detach().reshape(-1, x.shape[-1]) for x in xs], dim=0)[:max_samples]
    if pooled.shape[0] < 2:
        raise ValueError(f"median bandwidth needs at least 2 samples, got {pooled.shape[0]}")
    d2 = sq_dists(pooled.float(), pooled.float())
    iu = torch.triu_indices(d2.shape[0], d2.shape[1], offset=1, device=d2.device)
    med = d2[iu[0], iu[1]].median().sqrt().item()
    # identical samples give a zero median: fall back to a tiny positive width, never 0
    return max(med, 1e-3)


def resolve_bandwidth(bandwidth: float | str, *xs: Tensor) -> float:
    """A positive number, or "median" for the median heuristic on ``xs``."""
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise ValueError(f"bandwidth must be a positive number or 'median', got {bandwidth!r}")
        return median_bandwidth(*xs)
    return float(bandwidth)


# ----------------------------------------------------------------------------- fused log-sum-exp blocks
#
# The B x B similarity blocks dominate every contrastive and kernel objective. Because each loss is a
# scalar, the gradient of a log-sum-exp block with respect to its similarity matrix is known during
# the forward pass, so the two fused functions below compute it there (one GEMM forward, two or one
# backward, a handful of in-place elementwise passes) and keep only (B, d)-sized gradients for the
# backward: no B x B tensor outlives the call, and with ``chunk`` no more than (chunk, N) exists.


def _mask_positives(s: Tensor, start: int, offset: int) -> None:
    """Set s[i, ..., i + start + offset] = -inf for the rows of this chunk (in place)."""
    rows = torch.arange(s.shape[0], device=s.device)
    cols = rows + start + offset
    keep = cols < s.shape[-1]
    s[rows[keep], ..., cols[keep]] = float("-inf")


class _PairLSE(torch.autograd.Function):
    """w_row * sum_i lse_j S[i,b,j] + w_col * sum_j lse_i S[i,b,j] summed over blocks b.

    S = a @ k[b]^T with a: (R, d) rows and k: (nb, N, d) column blocks. With ``exclude`` the
    positive S[i, b, i + offset] leaves every log-sum-exp (decoupled contrastive learning).
    Column log-sum-exps need every row, so w_col != 0 requires R == N; chunked, they take a first
    pass that accumulates them online and a second that forms the gradient.
    """

    @staticmethod
    def forward(ctx, a, k, w_row: float, w_col: float, exclude: bool, offset: int, chunk):  # noqa: D401
        R, d = a.shape
        nb, N, _ = k.shape
        kf = k.reshape(nb * N, d)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        step = R if chunk is None else max(1, min(int(chunk), R))
        col_lse = None
        if w_col != 0.0:
            if R != N:
                raise ValueError(f"column log-sum-exp needs as many rows as columns, got {R} and {N}")
            if step < R:  # pass 1: online column log-sum-exp over row chunks
                cmax = torch.full((nb, N), float("-inf"), dtype=a.dtype, device=a.device)
                csum = torch.zeros((nb, N), dtype=a.dtype, device=a.device)
                for s0 in range(0, R, step):
                    s = (a[s0 : s0 + step] @ kf.T).view(-1, nb, N)
                    if exclude:
                        _mask_positives(s, s0, offset)
                    bmax = torch.maximum(cmax, s.amax(dim=0))
                    safe = torch.where(torch.isinf(bmax), torch.zeros_like(bmax), bmax)
                    csum = csum * torch.exp(cmax - safe) + torch.exp(s - safe).sum(dim=0)
                    cmax = bmax
                safe = torch.where(torch.isinf(cmax), torch.zeros_like(cmax), cmax)
                col_lse = csum.log() + safe
        total = torch.zeros((), dtype=torch.float64, device=a.device)
        da = torch.empty_like(a) if need_grad else None
        dk = torch.zeros_like(kf) if need_grad else None
        for s0 in range(0, R, step):
            a_c = a[s0 : s0 + step]
            s = (a_c @ kf.T).view(-1, nb, N)
            if exclude:
                _mask_positives(s, s0, offset)
            row_lse = torch.logsumexp(s, dim=2)  # (c, nb)
            if w_col != 0.0 and step == R:
                col_lse = torch.logsumexp(s, dim=0)  # (nb, N)
            total += w_row * row_lse.sum(dtype=torch.float64)
            if not need_grad:
                continue
            # gradient w.r.t. s, formed in place: w_row * softmax_rows + w_col * softmax_cols
            if w_col != 0.0:
                p_col = torch.sub(s, col_lse.unsqueeze(0)).exp_()
                if w_col != 1.0:
                    p_col.mul_(w_col)
            s.sub_(row_lse.unsqueeze(2)).exp_()
            if w_row != 1.0:
                s.mul_(w_row)
            if w_col != 0.0:
                s.add_(p_col)
                del p_col
            g = s.view(-1, nb * N)
            torch.mm(g, kf, out=da[s0 : s0 + step])
            dk.addmm_(g.T, a_c)
        if w_col != 0.0:
            total += w_col * col_lse.sum(dtype=torch.float64)
        if need_grad:
            ctx.save_for_backward(da, dk.view(nb, N, d))
        return total.to(a.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        da, dk = ctx.saved_tensors
        return grad_out * da, grad_out * dk, None, None, None, None, None


def pair_lse(
    a: Tensor,
    k: Tensor,
    w_row: float = 1.0,
    w_col: float = 0.0,
    exclude_positive: bool = False,
    offset: int = 0,
    chunk_size: int | None = None,
) -> Tensor:
    """Weighted sums of row- and column-wise log-sum-exps of ``a @ k[b]^T`` over column blocks b.

    ``a``: (R, d) rows (already multiplied by the logit scale); ``k``: (nb, N, d) or (N, d).
    Row i's positive in every block is column ``i + offset``. Returns a 0-dim tensor whose gradient
    is computed during the forward pass (see the section comment above).
    """
    if k.dim() == 2:
        k = k.unsqueeze(0)
    return _PairLSE.apply(a, k, float(w_row), float(w_col), bool(exclude_positive), int(offset), chunk_size)


class _TotalLSE(torch.autograd.Function):
    """log sum_{i,j} exp(scale * x_i . y_j) over all entries (optionally without i == j + offset).

    With ``y is None`` the block is the self-similarity of ``x`` and the symmetric gradient needs a
    single GEMM: d/dx = 2 * scale * G x with G the softmax over all entries.
    """

    @staticmethod
    def forward(ctx, x, y, scale: float, exclude_diagonal: bool, offset: int, chunk):
        same = y is None
        cols = x if same else y
        R = x.shape[0]
        step = R if chunk is None else max(1, min(int(chunk), R))
        need_grad = ctx.needs_input_grad[0] or (not same and ctx.needs_input_grad[1])
        blocks = []
        keep = step == R and need_grad
        row_lse_all = []
        for s0 in range(0, R, step):
            s = torch.mm(x[s0 : s0 + step], cols.T).mul_(scale)
            if exclude_diagonal:
                _mask_positives(s, s0, offset)
            row_lse_all.append(torch.logsumexp(s, dim=1))
            if keep:
                blocks.append(s)
        total = torch.logsumexp(torch.cat(row_lse_all), dim=0)
        if need_grad:
            dx = torch.empty_like(x)
            dy = None if same else torch.zeros_like(cols)
            for i, s0 in enumerate(range(0, R, step)):
                if keep:
                    s = blocks[i]
                else:
                    s = torch.mm(x[s0 : s0 + step], cols.T).mul_(scale)
                    if exclude_diagonal:
                        _mask_positives(s, s0, offset)
                g = s.sub_(total).exp_()
                torch.mm(g, cols, out=dx[s0 : s0 + step])
                if not same:
                    dy.addmm_(g.T, x[s0 : s0 + step])
            if same:
                # self-similarity: x enters as rows and as columns; G is symmetric when all rows are
                # local (offset 0), so both contributions are equal
                if offset != 0 or dx.shape[0] != cols.shape[0]:
                    raise ValueError("self-similarity LSE needs all rows (offset 0)")
                dx.mul_(2.0 * scale)
                ctx.save_for_backward(dx)
            else:
                dx.mul_(scale)
                dy.mul_(scale)
                ctx.save_for_backward(dx, dy)
        ctx.same = same
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = ctx.saved_tensors
        if ctx.same:
            return grad_out * saved[0], None, None, None, None, None
        return grad_out * saved[0], grad_out * saved[1], None, None, None, None


def total_lse(
    x: Tensor,
    y: Tensor | None,
    scale: float,
    exclude_diagonal: bool = False,
    offset: int = 0,
    chunk_size: int | None = None,
) -> Tensor:
    """log sum_ij exp(scale * x_i . y_j); ``y=None`` for the self-similarity of ``x``."""
    return _TotalLSE.apply(x, y, float(scale), bool(exclude_diagonal), int(offset), chunk_size)


def sphere_log_mean_kernel(
    x: Tensor,
    y: Tensor | None,
    bandwidth: float,
    exclude_diagonal: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """LMK_s for *unit-norm* rows: |u - v|^2 = 2 - 2 u.v, so log k_s = (u.v - 1) / s^2.

    Same value as :func:`log_mean_kernel` on unit vectors, through the fused kernel (``y=None``:
    the sample against itself).
    """
    n = x.shape[0]
    m = n if y is None else y.shape[0]
    if exclude_diagonal and n < 2:
        raise ValueError(f"exclude_diagonal needs at least 2 samples, got {n}")
    pairs = n * (n - 1) if exclude_diagonal else n * m
    inv = 1.0 / float(bandwidth) ** 2
    return total_lse(x, y, inv, exclude_diagonal, 0, chunk_size) - inv - math.log(pairs)
