"""Plain tensor formulations of the fused log-sum-exp kernels, used while ``torch.compile`` traces.

The fused Functions of :mod:`objectives.kernels.lse` choose how to keep ``exp`` in range by reading
values on the host and write their blocks into reusable scratch memory; a compiled graph can do
neither. While tracing, the objectives call these instead: the same sums (up to rounding), written
as ``logsumexp`` over whole blocks with no data-dependent branch, which the compiler fuses itself.
``chunk_size`` does not apply here (autograd keeps every block for the backward anyway). Scales may
be Python numbers or 0-dim tensors (a learnable temperature, a median bandwidth). The direct Gram
determinants (:func:`gram_volumes`) live here too: :mod:`objectives.kernels.volume` imports this
module, never the other way round.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _work(t: Tensor) -> Tensor:
    """Half-precision blocks are reduced in float32, as in the fused kernels."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _positives(rows: int, cols: int, offset: int, device: torch.device) -> Tensor:
    """(rows, cols) mask of the entries (i, i + offset)."""
    r = torch.arange(rows, device=device).unsqueeze(1)
    c = torch.arange(cols, device=device).unsqueeze(0)
    return c == r + offset


def pair_lse(a: Tensor, k: Tensor, w_row: float, w_col: float, exclude_positive: bool = False,
             offset: int = 0) -> Tensor:
    """w_row * sum_i lse_j S_ij + w_col * sum_j lse_i S_ij for S = a @ k^T (scale folded into ``a``);
    with ``exclude_positive`` the entries (i, i + offset) leave every log-sum-exp."""
    s = _work(a @ k.T)
    if exclude_positive:
        s = s.masked_fill(_positives(s.shape[0], s.shape[1], offset, s.device), float("-inf"))
    total = w_row * torch.logsumexp(s, dim=1).sum()
    if w_col != 0.0:
        total = total + w_col * torch.logsumexp(s, dim=0).sum()
    return total.to(a.dtype)


def total_lse(x: Tensor, y: Tensor | None, scale: float | Tensor, exclude_diagonal: bool = False,
              offset: int = 0) -> Tensor:
    """log sum_ij exp(scale * x_i . y_j) (``y=None``: against ``x`` itself), optionally without the
    entries (i, i + offset)."""
    s = _work(x @ (x if y is None else y).T) * scale
    if exclude_diagonal:
        s = s.masked_fill(_positives(s.shape[0], s.shape[1], offset, s.device), float("-inf"))
    return torch.logsumexp(s.reshape(-1), dim=0).to(x.dtype)


def volume_lse(a: Tensor, others: Tensor, scale: float | Tensor, w_row: float, w_col: float,
               w_mean: float = 0.0, eps: float = 1e-6, offset: int = 0) -> tuple[Tensor, Tensor]:
    """The two sums of :func:`objectives.kernels.volume_lse` from the direct Gram determinants
    (:func:`gram_volumes`): ``sum_i V[i, i + offset]`` and
    ``w_row sum_i lse_j L_ij + w_col sum_j lse_i L_ij + w_mean sum_ij L_ij`` with ``L = -scale V``."""
    v = gram_volumes(a, others, eps)
    logits = _work(v) * -scale
    lse = w_row * torch.logsumexp(logits, dim=1).sum()
    if w_col != 0.0:
        lse = lse + w_col * torch.logsumexp(logits, dim=0).sum()
    if w_mean != 0.0:
        lse = lse + w_mean * logits.sum()
    return v.diagonal(offset).sum().to(a.dtype), lse.to(a.dtype)


def gram_volumes(anchor_rows: Tensor, others: Tensor, eps: float, chunk_size: int | None = None) -> Tensor:
    """The direct formulation: V[i, j] = sqrt(max(det Gram(anchor_rows[i], others[:, j]), 0) + eps).

    Builds the (R, N, M, M) Gram blocks and takes R N determinants with plain autograd
    (half precision in float64). The reference the fused :func:`volume_lse` is tested and timed
    against; it is O(R N M^2 (d + M)) and slow.
    """
    n_other, n, _ = others.shape
    m = n_other + 1
    inner = torch.einsum("knd,lnd->nkl", others, others)  # (N, M-1, M-1)
    step = anchor_rows.shape[0] if chunk_size is None else chunk_size
    out = []
    for s0 in range(0, anchor_rows.shape[0], step):
        a = anchor_rows[s0 : s0 + step]
        r = a.shape[0]
        cross = torch.einsum("rd,knd->rnk", a, others)  # (R, N, M-1)
        gram = a.new_empty((r, n, m, m))
        gram[:, :, 0, 0] = (a * a).sum(-1, keepdim=True)
        gram[:, :, 0, 1:] = cross
        gram[:, :, 1:, 0] = cross
        gram[:, :, 1:, 1:] = inner.unsqueeze(0)
        low = gram.dtype in (torch.float16, torch.bfloat16)
        det = torch.linalg.det(gram.double() if low else gram).to(gram.dtype)
        out.append((det.clamp_min(0.0) + eps).sqrt())
    return torch.cat(out, dim=0)
