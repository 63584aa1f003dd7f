"""GRAM: contrastive learning over Gram-matrix volumes of modality tuples.

For anchor embedding ``z_i^a`` and the other modalities of tuple j, the volume of the
parallelotope they span is ``V_ij = sqrt(det G(z_i^a, z_j^n for n != a) + vol_eps)``; smaller is
more aligned. Logits ``L_ij = -V_ij / tau``, cross-entropy both ways with label smoothing ``ls``
(targets ``(1 - ls) 1[i = j] + ls / B``; ``ls = 0`` is the plain cross-entropy):
``loss = 1/2 [mean_i CE_ls(L_i., i) + mean_j CE_ls(L_.j, j)]``.
Terms: ``alignment = (1 - ls) mean_i V_ii / tau`` (the positive part of the targets) and
``uniformity``: the log-sum-exp parts together with the ``ls / B`` share of the targets spread over
every pair, ``1/2 [mean_i lse_j L_ij + mean_j lse_i L_ij] - ls mean_ij L_ij`` (its gradient
w.r.t. each row of logits, softmax - ls / B, sums to 1 - ls, balancing the alignment's).
``vol_eps`` keeps the square root differentiable at collinear tuples (det = 0).

The volumes come from the fused kernel :func:`objectives.kernels.volume_lse` (base volume x
squared height of the anchor over the tuple's span: one GEMM of the anchors against every tuple,
the work of anchor-based InfoNCE), never from B^2 determinants; small batches of up to four
modalities take :func:`objectives.kernels.small_volume_lse` (the same factorisation with the
adjugate in closed form and plain autograd: fewer operator calls).

Reference: G. Cicchetti, E. Grassucci, L. Sigillo, D. Comminiello, "Gramian Multimodal
Representation Learning and Alignment", ICLR 2025 (arXiv 2412.11959); the original trains with
``label_smoothing=0.1`` in both directions. The data-anchor matching loss of that paper is not
part of this objective.

Example:
    >>> import torch, objectives
    >>> out = objectives.build("gram", temperature=0.1)([torch.randn(8, 4) for _ in range(3)])
    >>> sorted(out.terms)
    ['alignment', 'uniformity']
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from objectives._base import (
    UNIT_ROW_NORM_BOUND,
    Objective,
    Role,
    Temperature,
    check_chunk,
    check_index,
    check_positive,
)
from objectives.kernels import small_volume_fits, small_volume_lse, volume_lse
from objectives.registry import declare, gemm, loguniform


@declare(label="GRAM", colour="#7F7F7F", marker="*", retrieval_rule="gram_volume",
         search={"temperature": loguniform(0.03, 0.3)}, flops=lambda M, B, d, p: 3 * gemm(B, d) * (M - 1))
class GRAM(Objective):
    name = "gram"
    symmetric_in_modalities = False
    roles: ClassVar[dict[str, Role]] = {"alignment": "alignment", "uniformity": "uniformity"}

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = False,
                 min_temperature: float = 0.01, anchor: int = 0, vol_eps: float = 1e-6,
                 chunk_size: int | None = None, normalize: bool = True, label_smoothing: float = 0.0,
                 temperature_clamp: str = "forward") -> None:
        super().__init__(normalize=normalize)
        self.temperature = Temperature(temperature, learnable_temperature, min_temperature, temperature_clamp)
        self.anchor = check_index("anchor", anchor)
        self.vol_eps = check_positive("vol_eps", vol_eps)
        self.chunk_size = check_chunk(chunk_size)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def compute(self, z: Tensor, rows: slice) -> dict[str, Tensor]:
        total = z.shape[1]
        scale = self.temperature.scale(z.dtype, z.device)
        a = self.anchor
        ls = self.label_smoothing
        # rows are unit vectors up to Objective.prepare's tolerance
        common = {"eps": self.vol_eps, "chunk_size": self.chunk_size, "row_norm": UNIT_ROW_NORM_BOUND}
        if not self.is_distributed() and small_volume_fits(z, self.chunk_size):
            pos, lse = small_volume_lse(z, a, scale, 0.5, 0.5, -ls / total, self.vol_eps)
        elif not self.is_distributed():
            pos, lse = volume_lse(z, a, scale, 0.5, 0.5, -ls / total, **common)
        else:
            # anchors of this rank against every tuple, and every anchor against this rank's tuples
            pos, lse = volume_lse(z, a, scale, 0.5, 0.0, -0.5 * ls / total, rows=rows, **common)
            lse = lse + volume_lse(z, a, scale, 0.0, 0.5, -0.5 * ls / total, cols=rows, positives=False,
                                   **common)[1]
        weight = (1.0 - ls) * scale
        return {
            "alignment": self.mean_over_rows(pos, total, weight),
            "uniformity": self.mean_over_rows(lse, total),
        }

    def extra_repr(self) -> str:
        return f"anchor={self.anchor}, vol_eps={self.vol_eps:g}, label_smoothing={self.label_smoothing:g}"
