"""Fused log-sum-exp of a whole similarity block (``total_lse``) and of every modality's
self-similarity block at once (``sphere_self_log_mean_kernels``): the kernel objectives' uniformity
and Cauchy-Schwarz terms."""

from __future__ import annotations
import math
import torch
from torch import Tensor
from objectives.kernels.device import host_float
from objectives.kernels.forms import _refuse_double_backward
from objectives.kernels.workspace import _scratch
from objectives.kernels.lse import _block, _exp_bound, _mask_positives, _unshifted_ok, _work_dtype


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
            s = _block(xs[s0 : s0 + step], cols, work)
            if exclude_diagonal:
                _mask_positives(s, s0, offset)
            return s

        def mass_of(e: Tensor) -> Tensor:  # float32 row sums, float64 over rows (a float64 pass is ~20x slower)
            return e.sum(dim=1).sum(dtype=torch.float64)

        # no shift when the bound on |S| allows it (see the section comment), else the exact maximum
        unshifted = _unshifted_ok(_exp_bound(xs, cols), R * cols.shape[0], work)
        if step == R:
            s = block(0)
            top = torch.zeros((), dtype=work, device=x.device) if unshifted else s.max()
            if not unshifted:
                s.sub_(top)
            mass = mass_of(s.exp_())
            total = top.double() + mass.log()
            blocks = [s]
        elif unshifted:
            top = torch.zeros((), dtype=work, device=x.device)
            mass = sum(mass_of(block(s0).exp_()) for s0 in range(0, R, step))
            total = mass.log()
            blocks = None
        else:  # chunked: online maximum and mass, blocks recomputed for the gradient
            top = torch.tensor(float("-inf"), dtype=work, device=x.device)
            mass = torch.zeros((), dtype=torch.float64, device=x.device)
            for s0 in range(0, R, step):
                s = block(s0)
                new_top = torch.maximum(top, s.max())
                mass = mass * torch.exp((top - new_top).double()) + mass_of(s.sub_(new_top).exp_())
                top = new_top
            total = top.double() + mass.log()
            blocks = None
        if need_grad:
            dx = torch.empty_like(x)
            dy = None if same else torch.zeros_like(cols)
            inv_mass = (1.0 / mass).to(work)
            # half inputs: E may exceed the half range, the softmax E / mass cannot; so normalise
            # the block before the cast; otherwise scale the (R, d) results instead of the block
            half = x.dtype != work
            for i, s0 in enumerate(range(0, R, step)):
                if blocks is not None:
                    g = blocks[i]  # exp(S - top)
                else:
                    g = block(s0)
                    g = g.exp_() if unshifted else g.sub_(top).exp_()
                g = g.mul_(inv_mass).to(x.dtype) if half else g
                torch.mm(g, cols, out=dx[s0 : s0 + step])
                if not same:
                    dy.addmm_(g.T, x[s0 : s0 + step])
            # softmax = exp(S - top) / mass; d/dx_i = scale * sum_j softmax_ij y_j
            post = scale if half else scale * inv_mass
            if same:
                # x enters as rows and as columns; G is symmetric when every row is local
                if offset != 0 or dx.shape[0] != cols.shape[0]:
                    raise ValueError("self-similarity LSE needs all rows (offset 0)")
                dx.mul_(2.0 * post)
                ctx.save_for_backward(dx)
            else:
                dx.mul_(post)
                dy.mul_(post)
                ctx.save_for_backward(dx, dy)
        ctx.same = same
        return total.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward()
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


class _SelfLSE(torch.autograd.Function):
    """(M,) log sum_{i,j} exp(scale * z_i^m . z_j^m) of every modality's self-similarity block in
    one node: one batched GEMM forward and one backward for all modalities (the per-modality
    ``total_lse`` calls cost ~15 operations each, which dominates small batches).

    ``scale`` is a Python float, or a 0-dim tensor for a value that stays on the device (a median
    bandwidth on an accelerator or under ``torch.compile``): the unshifted path is then not taken,
    since choosing it would read the value on the host. ``torch.compile`` traces this Function (no
    scratch buffer and no host read while tracing; the saved gradient is a fresh tensor).
    """

    @staticmethod
    def forward(ctx, z, scale, exclude_diagonal: bool, row_norm):
        M, B, d = z.shape
        work = _work_dtype(z.dtype)
        half = z.dtype != work
        traced = torch.compiler.is_compiling()
        on_host = not isinstance(scale, Tensor)
        if on_host and not traced:
            s = _scratch((M, B, B), work, z.device)
            if half:
                s.copy_(torch.bmm(z, z.transpose(1, 2))).mul_(scale)
            else:
                torch.baddbmm(s, z, z.transpose(1, 2), beta=0.0, alpha=scale, out=s)
        else:
            s = torch.mul(torch.bmm(z, z.transpose(1, 2)).to(work), scale)
        unshifted = False
        if on_host and (row_norm is not None or not traced):
            bound = _exp_bound(z, z) if row_norm is None else row_norm * row_norm
            unshifted = _unshifted_ok(scale * bound, B * B, work)
        if unshifted:
            top = torch.zeros((M, 1, 1), dtype=work, device=z.device)
            s.exp_()
        else:  # one exact shift per modality (see _TotalLSE)
            if exclude_diagonal:
                s.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
            top = s.amax(dim=(1, 2), keepdim=True)
            s.sub_(top).exp_()
        if exclude_diagonal:
            s.diagonal(dim1=1, dim2=2).zero_()
        mass = s.sum(dim=2).sum(dim=1, dtype=torch.float64)  # (M,) float32 rows, float64 over rows
        total = top.view(M).double() + mass.log()
        if ctx.needs_input_grad[0]:
            # d/dz_m = 2 scale softmax_m z_m (the block is symmetric)
            factor = (2.0 * scale / mass).to(work).view(M, 1, 1)
            if half:
                dz = torch.bmm(s.mul_(factor).to(z.dtype), z)
            else:
                # out of place: an in-place result would alias the product, which torch.compile
                # cannot carry from the forward to the backward
                dz = torch.bmm(s, z) * factor
            ctx.save_for_backward(dz)
        return total.to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward()
        (dz,) = ctx.saved_tensors
        return dz * grad_out.view(-1, 1, 1), None, None, None


def sphere_self_log_mean_kernels(
    z: Tensor, bandwidth: float | Tensor, exclude_diagonal: bool = False, row_norm: float | None = None
) -> Tensor:
    """(M,) LMK_s(X_m, X_m) for unit-norm rows of every modality of z: (M, B, d), in one node.

    ``bandwidth``: a number, or a detached 0-dim tensor (e.g. ``median_bandwidth_tensor``), read on
    the host only where that is free (a CPU tensor outside ``torch.compile``), else kept on the
    device. ``row_norm``: an upper bound on every row norm when known (see :func:`group_lse`).
    """
    n = z.shape[1]
    if exclude_diagonal and n < 2:
        raise ValueError(f"exclude_diagonal needs at least 2 samples, got {n}")
    pairs = n * (n - 1) if exclude_diagonal else n * n
    bandwidth = host_float(bandwidth)
    inv = 1.0 / (bandwidth.detach().double() if isinstance(bandwidth, Tensor) else bandwidth) ** 2
    total = _SelfLSE.apply(z.contiguous(), inv, bool(exclude_diagonal), None if row_norm is None else float(row_norm))
    return total - (inv + math.log(pairs))


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
