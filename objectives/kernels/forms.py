"""Fused normalisation and modality-level quadratic forms (one autograd node each).

While ``torch.compile`` traces them they are written as plain tensor operations instead (the same
values up to rounding), which the compiler fuses itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from objectives.kernels.device import host_values


def _refuse_double_backward() -> None:
    """The fused Functions form their gradients from saved tensors without autograd history, so a
    backward with create_graph=True (second derivatives: gradient penalties, Hessian-vector
    products) would be silently wrong; refuse it instead."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "objectives' fused kernels do not support create_graph=True (second derivatives): "
            "their gradients are formed in the forward pass without autograd history"
        )


class _UnitRows(torch.autograd.Function):
    """Stack M (B, d) tensors (or take one (M, B, d)) and divide each row by max(|row|, eps).

    The same values and gradients as ``torch.stack`` + ``F.normalize`` with five operations forward
    (stack, norm, clamp, reciprocal, in-place scaling) and five backward, instead of about twenty
    autograd operations (this matters for small batches, where every operation costs ~10 us).
    """

    @staticmethod
    def forward(ctx, eps: float, *xs):
        one_tensor = len(xs) == 1
        y = xs[0].clone(memory_format=torch.contiguous_format) if one_tensor else torch.stack(xs)
        norms = torch.linalg.vector_norm(y, dim=-1, keepdim=True)  # (M, B, 1)
        inv = norms.clamp_min(eps).reciprocal_()
        y.mul_(inv)
        ctx.one_tensor = one_tensor
        ctx.save_for_backward(y, inv, norms >= eps)  # clamp_min passes the gradient at equality
        return y

    @staticmethod
    def backward(ctx, grad_y):
        _refuse_double_backward()
        y, inv, projected = ctx.saved_tensors
        # d(x / |x|) = (g - y <g, y>) / |x|; rows clamped at eps are scaled only: g / eps
        dot = torch.linalg.vecdot(grad_y, y, dim=-1).unsqueeze(-1).mul_(projected)
        dx = torch.addcmul(grad_y, y, dot, value=-1.0).mul_(inv)
        return (None, dx) if ctx.one_tensor else (None, *dx.unbind(0))


def unit_rows(xs: Sequence[Tensor] | Tensor, eps: float = 1e-12) -> Tensor:
    """(M, B, d) with every row of every modality scaled to unit L2 norm (F.normalize semantics)."""
    if torch.compiler.is_compiling():
        return F.normalize(xs if isinstance(xs, Tensor) else torch.stack(list(xs)), dim=-1, eps=eps)
    if isinstance(xs, Tensor):
        return _UnitRows.apply(float(eps), xs)
    return _UnitRows.apply(float(eps), *xs)


class _ModalityQuadratic(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, weights):
        flat = z.reshape(z.shape[0], -1)
        ctx.save_for_backward(flat, weights)
        ctx.shape = z.shape
        return torch.vdot(flat.reshape(-1), (weights @ flat).reshape(-1))

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward()
        flat, weights = ctx.saved_tensors
        grad = (grad_out * (weights + weights.T)) @ flat
        return grad.view(ctx.shape), None


def modality_quadratic(z: Tensor, weights: Sequence[Sequence[float]] | Tensor) -> Tensor:
    """sum_{m, n} W_mn sum_i <z_i^m, z_i^n> for z: (M, B, d) and an (M, M) weight matrix W.

    One (M, M) x (M, B d) GEMM and one dot forward, one GEMM backward (the gradient is
    (W + W^T) z), whatever the number of pairs. Sums of pair dot products (W = pair adjacency) and
    of squared pair distances (W = the pair graph's Laplacian, since |u - v|^2 = |u|^2 + |v|^2 -
    2 <u, v>) are both this form.
    """
    if not isinstance(weights, Tensor):
        weights = host_values(weights, z.dtype, z.device)
    weights = weights.to(dtype=z.dtype, device=z.device)
    if torch.compiler.is_compiling():
        flat = z.reshape(z.shape[0], -1)
        return (flat * (weights @ flat)).sum()
    return _ModalityQuadratic.apply(z, weights)


def pair_laplacian(n_modalities: int, pairs: Sequence[tuple[int, int]]) -> list[list[float]]:
    """W with sum_{(m, n) in pairs} |z^m - z^n|^2 = modality_quadratic(z, W)."""
    w = [[0.0] * n_modalities for _ in range(n_modalities)]
    for m, n in pairs:
        w[m][m] += 1.0
        w[n][n] += 1.0
        w[m][n] -= 1.0
        w[n][m] -= 1.0
    return w
