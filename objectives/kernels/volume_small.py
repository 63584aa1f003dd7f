"""GRAM's volumes for small batches: the adjugate in closed form and plain autograd.

Below a few hundred rows a loss call costs its operator dispatches, not its arithmetic, and the fused
kernel of :mod:`objectives.kernels.volume` (per-tuple eigen-frames, recomputed positives, gradients
formed in the forward pass) runs several hundred small operators. For up to four modalities
(K = M - 1 <= 3 tuple rows) the same factorisation is cheaper written out: with c_ijk = a_i . x_jk
(one GEMM of the anchors against every tuple row) and the entries of C_j = X_j X_j^T,

    det G(a_i, X_j) = det(C_j) |a_i|^2 - sum_kl adj(C_j)_kl c_ijk c_ijl,

with the adjugate's cofactors in closed form (a polynomial in C_j, so collinear tuples need no special
case), about 25 elementwise operations on the (B, B) block and autograd for the gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: most tuple columns B (M - 1) the small path takes: its elementwise work grows with K^2 B^2, the
#: fused kernel's with K B^2. The GRAM objective on one CPU thread (AMD EPYC, 2026-11-29,
#: ``pytest tests/benchmarks/test_bench_gram.py -k small_path_vs_fused --benchmark-only``): the small
#: path 1.07-1.56x faster at M = 2..4 up to this size, 1.35x slower at M = 2, B = 512
SMALL_VOLUME_MAX_COLUMNS = 256
#: most modalities the small path takes (K = M - 1 <= 3 tuple rows: closed-form cofactors)
SMALL_VOLUME_MAX_MODALITIES = 4


def small_volume_fits(z: Tensor, chunk_size: int | None = None) -> bool:
    """Whether :func:`small_volume_lse` suits ``z`` (M, B, d): 2 <= M <= 4, B (M - 1) <=
    SMALL_VOLUME_MAX_COLUMNS, float32 or float64, no chunking asked for, and not inside torch.compile
    (which traces the direct formulation instead)."""
    return (chunk_size is None and not torch.compiler.is_compiling() and z.dim() == 3
            and 2 <= z.shape[0] <= SMALL_VOLUME_MAX_MODALITIES
            and 1 <= z.shape[1] * (z.shape[0] - 1) <= SMALL_VOLUME_MAX_COLUMNS
            and z.dtype in (torch.float32, torch.float64))


def _quadratic_form(tuples: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """det C_j (B,) and sum_kl adj(C_j)_kl c_ijk c_ijl (B, B) for tuples (K, B, d), c (B, K, B)."""
    k = tuples.shape[0]
    # entries of the symmetric C_j, (B,) each: the upper triangle only
    g = {(m, n): (tuples[m] * tuples[n]).sum(-1) for m in range(k) for n in range(m, k)}
    if k == 1:
        return g[0, 0], c[:, 0].square()
    c1, c2 = c[:, 0], c[:, 1]
    if k == 2:
        p, q, r = g[0, 0], g[0, 1], g[1, 1]
        return p * r - q * q, r * c1.square() - 2.0 * q * c1 * c2 + p * c2.square()
    a, b, e3, d, e, f = g[0, 0], g[0, 1], g[0, 2], g[1, 1], g[1, 2], g[2, 2]
    # C = [[a, b, e3], [b, d, e], [e3, e, f]]
    c3 = c[:, 2]
    a11, a22, a33 = d * f - e * e, a * f - e3 * e3, a * d - b * b
    a12, a13, a23 = e3 * e - b * f, b * e - e3 * d, b * e3 - a * e
    det = a * a11 + b * a12 + e3 * a13
    quad = (a11 * c1.square() + a22 * c2.square() + a33 * c3.square()
            + 2.0 * (a12 * c1 * c2 + a13 * c1 * c3 + a23 * c2 * c3))
    return det, quad


def small_volume_lse(z: Tensor, anchor: int, scale: float | Tensor, w_row: float, w_col: float,
                     w_mean: float = 0.0, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """The two sums of :func:`objectives.kernels.volume_lse` over every row and column, for small
    batches (:func:`small_volume_fits`): ``(sum_i V_ii, w_row sum_i lse_j L_ij + w_col sum_j lse_i
    L_ij + w_mean sum_ij L_ij)`` with ``V_ij = sqrt(max(det Gram(a_i, tuple j), 0) + eps)`` and
    ``L = -scale V``; ``scale`` may be a learnable 0-dim tensor. Plain autograd operations.

        >>> import torch
        >>> z = torch.nn.functional.normalize(torch.randn(3, 8, 4, dtype=torch.float64), dim=-1)
        >>> from objectives.kernels import volume_lse
        >>> fused = volume_lse(z, 0, 10.0, 0.5, 0.5)
        >>> small = small_volume_lse(z, 0, 10.0, 0.5, 0.5)
        >>> all(torch.allclose(f, s) for f, s in zip(fused, small))
        True
    """
    n_mod, batch, dim = z.shape
    a = z[anchor]
    tuples = torch.cat([z[:anchor], z[anchor + 1 :]])  # (K, B, d)
    c = torch.mm(a, tuples.reshape(-1, dim).t()).view(batch, n_mod - 1, batch)  # c[i, k, j] = a_i . x_jk
    det, quad = _quadratic_form(tuples, c)
    d = (a * a).sum(-1).unsqueeze(1) * det.unsqueeze(0) - quad
    v = d.clamp_min(0.0).add(eps).sqrt()
    logits = v * -scale
    total = w_row * torch.logsumexp(logits, dim=1).sum()
    if w_col != 0.0:
        total = total + w_col * torch.logsumexp(logits, dim=0).sum()
    if w_mean != 0.0:
        total = total + w_mean * logits.sum()
    return v.diagonal().sum(), total
