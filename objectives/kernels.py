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
def median_bandwidth(*xs: Tensor, max_samples: int = 512) -> float:
    """Median pairwise distance over the pooled sample (i != j), detached.

    At most ``max_samples`` rows enter, the same number from each input (its first rows, so the
    heuristic is deterministic and no modality is left out), keeping the cost O(max_samples^2 d).
    """
    if not xs:
        raise ValueError("median bandwidth needs at least one sample set")
    per_set = max(1, max_samples // len(xs))
    pooled = torch.cat([x.detach().reshape(-1, x.shape[-1])[:per_set] for x in xs], dim=0)
    if pooled.shape[0] < 2:
        raise ValueError(f"median bandwidth needs at least 2 samples, got {pooled.shape[0]}")
    pooled = pooled.float() if pooled.dtype in (torch.float16, torch.bfloat16) else pooled
    n = pooled.shape[0]
    d2 = sq_dists(pooled, pooled)
    d2.fill_diagonal_(-1.0)  # the n diagonal entries become the n smallest values
    # lower median of the off-diagonal entries (each pair appears twice, which leaves it unchanged)
    k = n + (n * (n - 1) - 1) // 2 + 1
    med = d2.reshape(-1).kthvalue(k).values.sqrt().item()
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


# exp(x) of float32 underflows below about -87 (float64: -708); the single-shift fast path is used
# only when every row maximum lies within this margin of the largest one
_SHIFT_MARGIN = {torch.float32: 60.0, torch.float64: 600.0}


_TINY = {torch.float32: 1e-30, torch.float64: 1e-290}


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Elementwise work of half-precision blocks runs in float32; the GEMMs stay in ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _pair_lse_one_block(a, kf, nb, N, w_row, w_col, exclude, offset, need_grad):
    """Symmetric (row and column) case in one block with ~8 elementwise passes instead of ~20.

    With one shift per row, E = exp(S - rowmax_i), the row sums come directly and the column sums
    through one GEMV with u_i = exp(rowmax_i - c), c = max_i rowmax_i. The gradient
    w_row E_ij / r_i + w_col E_ij u_i / c_j = u_i E_ij (beta_i + v_j) is formed with one outer sum,
    and u_i is folded into the GEMMs' (B, d) operands, so each GEMM spans all column blocks.
    Returns None (the two-shift path then runs) when a shift could lose a row or column sum to
    underflow: a row maximum far below the largest, or a row / column sum below ``_TINY``.
    """
    work = _work_dtype(a.dtype)
    margin = _SHIFT_MARGIN.get(work)
    if margin is None:
        return None
    s = (a @ kf.T).to(work).view(-1, nb, N)
    if exclude:
        _mask_positives(s, 0, offset)
    rowmax = s.amax(dim=(1, 2))  # (R,) one shift per row for all blocks
    top = rowmax.max()
    u = torch.exp(rowmax - top)  # (R,)
    s.sub_(rowmax.view(-1, 1, 1)).exp_()  # E
    rowsum = s.sum(dim=2)  # (R, nb)
    colsum = (u @ s.view(s.shape[0], nb * N)).view(nb, N)
    tiny = _TINY[work]
    # one synchronising check for all three failure modes (each would need the two-shift path)
    if bool((top - rowmax).max() > margin) or bool(torch.minimum(rowsum.min(), colsum.min()) < tiny):
        return None
    row_lse = rowmax.unsqueeze(1) + rowsum.log()
    col_lse = top + colsum.log()
    total = w_row * row_lse.sum() + w_col * col_lse.sum()
    if not need_grad:
        return total, None, None
    beta = w_row / (rowsum * u.unsqueeze(1))  # (R, nb)
    v = w_col / colsum  # (nb, N)
    s.mul_(beta.unsqueeze(2) + v.unsqueeze(0))  # E * (beta_ib + v_bj); the gradient is u_i times it
    g = s.view(s.shape[0], nb * N).to(a.dtype)
    ucol = u.unsqueeze(1).to(a.dtype)
    da = (g @ kf).mul_(ucol)
    dk = g.T @ (a * ucol)
    return total, da, dk


class _PairLSE(torch.autograd.Function):
    """w_row * sum_i lse_j S[i,b,j] + w_col * sum_j lse_i S[i,b,j] summed over blocks b.

    S = a @ k[b]^T with a: (R, d) rows and k: (nb, N, d) column blocks. With ``exclude`` the
    positive S[i, b, i + offset] leaves every log-sum-exp (decoupled contrastive learning).
    Column log-sum-exps need every row, so w_col != 0 requires R == N; chunked, they take a first
    pass that accumulates them online and a second that forms the gradient.
    """

    @staticmethod
    def forward(ctx, a, k, w_row: float, w_col: float, exclude: bool, offset: int, chunk, scale: float = 1.0):
        a_in = a
        if scale != 1.0:
            a = a * scale  # the (R, d) operand, never the (R, N) block
        R, d = a.shape
        nb, N, _ = k.shape
        kf = k.reshape(nb * N, d)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        ctx.scale = scale
        step = R if chunk is None else max(1, min(int(chunk), R))
        work = _work_dtype(a.dtype)
        col_lse = None
        if w_col != 0.0:
            if R != N:
                raise ValueError(f"column log-sum-exp needs as many rows as columns, got {R} and {N}")
            if step < R:  # pass 1: online column log-sum-exp over row chunks
                cmax = torch.full((nb, N), float("-inf"), dtype=work, device=a.device)
                csum = torch.zeros((nb, N), dtype=work, device=a.device)
                for s0 in range(0, R, step):
                    s = (a[s0 : s0 + step] @ kf.T).to(work).view(-1, nb, N)
                    if exclude:
                        _mask_positives(s, s0, offset)
                    bmax = torch.maximum(cmax, s.amax(dim=0))
                    safe = torch.where(torch.isinf(bmax), torch.zeros_like(bmax), bmax)
                    csum = csum * torch.exp(cmax - safe) + torch.exp(s - safe).sum(dim=0)
                    cmax = bmax
                safe = torch.where(torch.isinf(cmax), torch.zeros_like(cmax), cmax)
                col_lse = csum.log() + safe
        if w_col != 0.0 and step == R:
            fast = _pair_lse_one_block(a, kf, nb, N, w_row, w_col, exclude, offset, need_grad)
            if fast is not None:
                total, da, dk = fast
                if need_grad:
                    ctx.save_for_backward(da, dk.view(nb, N, d))
                return total.to(a_in.dtype)
        total = torch.zeros((), dtype=torch.float64, device=a.device)
        da = torch.empty_like(a) if need_grad else None
        dk = torch.zeros_like(kf) if need_grad else None
        for s0 in range(0, R, step):
            a_c = a[s0 : s0 + step]
            s = (a_c @ kf.T).to(work).view(-1, nb, N)
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
            g = s.view(-1, nb * N).to(a.dtype)
            torch.mm(g, kf, out=da[s0 : s0 + step])
            dk.addmm_(g.T, a_c)
        if w_col != 0.0:
            total += w_col * col_lse.sum(dtype=torch.float64)
        if need_grad:
            ctx.save_for_backward(da, dk.view(nb, N, d))
        return total.to(a_in.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        da, dk = ctx.saved_tensors
        # S = scale * a k^T: the gradient w.r.t. the unscaled a carries one more factor of scale,
        # and dk was formed from the scaled a already
        ga = grad_out * ctx.scale * da if ctx.scale != 1.0 else grad_out * da
        return ga, grad_out * dk, None, None, None, None, None, None


# Below this many block entries (rows x columns) per call, per-operation overhead dominates and the
# plain autograd formulation is faster than the fused Function; tests lower it to 0 to cover both.
FUSED_MIN_ENTRIES = 192 * 192


def pair_lse(
    a: Tensor,
    k: Tensor,
    w_row: float = 1.0,
    w_col: float = 0.0,
    exclude_positive: bool = False,
    offset: int = 0,
    chunk_size: int | None = None,
    scale: float = 1.0,
) -> Tensor:
    """Weighted sums of row- and column-wise log-sum-exps of ``scale * a @ k[b]^T`` over blocks b.

    ``a``: (R, d) rows; ``k``: (nb, N, d) or (N, d); ``scale`` a Python float (a learnable scale
    should multiply ``a`` before the call). Row i's positive in every block is column
    ``i + offset``. Large blocks go through the fused Function, whose gradient is computed during
    the forward pass (see the section comment above); small ones through plain autograd.
    """
    if k.dim() == 2:
        k = k.unsqueeze(0)
    entries = a.shape[0] * k.shape[0] * k.shape[1]
    if chunk_size is None and entries < FUSED_MIN_ENTRIES:
        s = torch.einsum("id,bjd->ibj", a * scale if scale != 1.0 else a, k)
        if exclude_positive:
            rows = torch.arange(a.shape[0], device=a.device)
            cols = rows + offset
            keep = cols < k.shape[1]
            mask = torch.zeros(s.shape, dtype=torch.bool, device=a.device)
            mask[rows[keep], :, cols[keep]] = True
            s = s.masked_fill(mask, float("-inf"))
        work = _work_dtype(a.dtype)
        s = s.to(work)
        total = w_row * torch.logsumexp(s, dim=2).sum()
        if w_col != 0.0:
            total = total + w_col * torch.logsumexp(s, dim=0).sum()
        return total.to(a.dtype)
    return _PairLSE.apply(a, k, float(w_row), float(w_col), bool(exclude_positive), int(offset), chunk_size,
                          float(scale))


class _TotalLSE(torch.autograd.Function):
    """log sum_{i,j} exp(scale * x_i . y_j) over all entries (optionally without i == j + offset).

    One global shift c = max_ij S_ij is exact here: an entry that underflows in exp(S_ij - c) is
    below the float range relative to the largest one, so it cannot change the total. With
    ``y is None`` the block is the self-similarity of ``x`` and the symmetric gradient needs a
    single GEMM: d/dx = 2 * scale * G x with G the softmax over all entries.
    """

    @staticmethod
    def forward(ctx, x, y, scale: float, exclude_diagonal: bool, offset: int, chunk):
        same = y is None
        cols = x if same else y
        R = x.shape[0]
        step = R if chunk is None else max(1, min(int(chunk), R))
        need_grad = ctx.needs_input_grad[0] or (not same and ctx.needs_input_grad[1])
        xs = x * scale  # fold the scale into the (R, d) operand, not the (R, N) block
        work = _work_dtype(x.dtype)

        def block(s0: int) -> Tensor:
            s = (xs[s0 : s0 + step] @ cols.T).to(work)
            if exclude_diagonal:
                _mask_positives(s, s0, offset)
            return s

        if step == R:
            s = block(0)
            top = s.max()
            s.sub_(top).exp_()
            mass = s.sum(dtype=torch.float64)
            total = top.double() + mass.log()
            blocks = [s]
        else:  # chunked: online maximum and mass, blocks recomputed for the gradient
            top = torch.tensor(float("-inf"), dtype=work, device=x.device)
            mass = torch.zeros((), dtype=torch.float64, device=x.device)
            for s0 in range(0, R, step):
                s = block(s0)
                new_top = torch.maximum(top, s.max())
                mass = mass * torch.exp((top - new_top).double()) + torch.exp(s - new_top).sum(dtype=torch.float64)
                top = new_top
            total = top.double() + mass.log()
            blocks = None
        if need_grad:
            dx = torch.empty_like(x)
            dy = None if same else torch.zeros_like(cols)
            inv_mass = (1.0 / mass).to(x.dtype)
            for i, s0 in enumerate(range(0, R, step)):
                if blocks is not None:
                    g = blocks[i]  # exp(S - top)
                else:
                    g = block(s0).sub_(top).exp_()
                g = g.to(x.dtype)
                torch.mm(g, cols, out=dx[s0 : s0 + step])
                if not same:
                    dy.addmm_(g.T, x[s0 : s0 + step])
            # softmax = exp(S - top) / mass; d/dx_i = scale * sum_j softmax_ij y_j
            if same:
                # x enters as rows and as columns; G is symmetric when every row is local
                if offset != 0 or dx.shape[0] != cols.shape[0]:
                    raise ValueError("self-similarity LSE needs all rows (offset 0)")
                dx.mul_(2.0 * scale * inv_mass)
                ctx.save_for_backward(dx)
            else:
                dx.mul_(scale * inv_mass)
                dy.mul_(scale * inv_mass)
                ctx.save_for_backward(dx, dy)
        ctx.same = same
        return total.to(x.dtype)

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
