"""GRAM: contrastive learning over Gram-matrix volumes of modality tuples.

For anchor embedding ``z_i^a`` and the other modalities of tuple j, the volume of the
parallelotope they span is ``V_ij = sqrt(det G(z_i^a, z_j^n for n != a) + vol_eps)``; smaller is
more aligned. Logits ``L_ij = -V_ij / tau``, cross-entropy both ways:
``loss = 1/2 [mean_i (-L_ii + lse_j L_ij) + mean_j (-L_jj + lse_i L_ij)]``.
Terms: ``alignment = mean_i V_ii / tau`` and ``uniformity`` (the log-sum-exp parts).
``vol_eps`` keeps the square root differentiable at collinear tuples (det = 0).

Reference: G. Cicchetti, E. Grassucci, L. Sigillo, D. Comminiello, "Gramian Multimodal
Representation Learning and Alignment", ICLR 2025 (arXiv 2412.11959). The data-anchor matching loss
of that paper is not part of this objective.

Example:
    >>> import torch, objectives
    >>> out = objectives.build("gram", temperature=0.1)([torch.randn(8, 4) for _ in range(3)])
    >>> sorted(out.terms)
    ['alignment', 'uniformity']
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from objectives._base import Objective, Role, Temperature, check_chunk, check_index, check_positive


def tuple_volumes(anchor_rows: Tensor, others: Tensor, eps: float, chunk_size: int | None = None) -> Tensor:
    """V[i, j] = sqrt(det Gram(anchor_rows[i], others[:, j]) + eps) for all i, j.

    ``anchor_rows``: (R, d); ``others``: (M-1, N, d). Builds the (R, N, M, M) Gram blocks from one
    GEMM per other modality and the per-tuple Gram of ``others``.
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


class GRAM(Objective):
    name = "gram"
    symmetric_in_modalities = False
    roles: ClassVar[dict[str, Role]] = {"alignment": "alignment", "uniformity": "uniformity"}

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = False,
                 min_temperature: float = 0.01, anchor: int = 0, vol_eps: float = 1e-6,
                 chunk_size: int | None = None, normalize: bool = True) -> None:
        super().__init__(normalize=normalize)
        self.temperature = Temperature(temperature, learnable_temperature, min_temperature)
        self.anchor = check_index("anchor", anchor)
        self.vol_eps = check_positive("vol_eps", vol_eps)
        self.chunk_size = check_chunk(chunk_size)

    def compute(self, z: Tensor, rows: slice) -> dict[str, Tensor]:
        total = z.shape[1]
        scale = self.temperature.scale(z.dtype, z.device)
        a = self.anchor
        others = torch.cat([z[:a], z[a + 1 :]], dim=0)
        idx = torch.arange(rows.stop - rows.start, device=z.device)
        if not self.is_distributed():
            logits = -scale * tuple_volumes(z[a], others, self.vol_eps, self.chunk_size)
            pos = logits.diagonal()
            lse = 0.5 * (torch.logsumexp(logits, dim=1).sum() + torch.logsumexp(logits, dim=0).sum())
        else:
            # anchors of this rank against every tuple, and tuples of this rank against every anchor
            rows_logits = -scale * tuple_volumes(z[a, rows], others, self.vol_eps, self.chunk_size)
            cols_logits = -scale * tuple_volumes(z[a], others[:, rows], self.vol_eps, self.chunk_size)
            pos = rows_logits[idx, idx + rows.start]
            lse = 0.5 * (torch.logsumexp(rows_logits, dim=1).sum() + torch.logsumexp(cols_logits, dim=0).sum())
        return {
            "alignment": -self.mean_over_rows(pos.sum(), total),
            "uniformity": self.mean_over_rows(lse, total),
        }
