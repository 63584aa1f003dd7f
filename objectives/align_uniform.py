"""Alignment and uniformity on the hypersphere (Wang & Isola, ICML 2020), for M modalities.

``alignment = lam_align * mean_{m<n} mean_i |z_i^m - z_i^n|^alpha``
``uniformity = lam_unif * mean_m log mean_{i != j} exp(-t |z_i^m - z_j^m|^2)``

Reference: T. Wang and P. Isola, "Understanding Contrastive Representation Learning through
Alignment and Uniformity on the Hypersphere", ICML 2020.

Example:
    >>> import torch, objectives
    >>> out = objectives.build("align_uniform")([torch.randn(8, 4) for _ in range(3)])
    >>> round(float(out.loss - out.terms["alignment"] - out.terms["uniformity"]), 6)
    0.0
"""

from __future__ import annotations

import math
from typing import ClassVar

from torch import Tensor

from objectives._base import Objective, Role, check_chunk, check_nonnegative, check_positive, self_lmks
from objectives.kernels import modality_quadratic, pair_laplacian
from objectives.registry import declare, gemm, loguniform


def pairs_sq_dist_sum(z: Tensor, pairs: list[tuple[int, int]], alpha: float = 2.0) -> Tensor:
    """sum over pairs (m, n) and rows i of |z_i^m - z_i^n|^alpha for z: (M, R, d) local rows.

    alpha = 2 is one quadratic form over modalities (no per-pair tensors); other alphas go pair
    by pair with an eps guard on the root.
    """
    if alpha == 2.0:
        return modality_quadratic(z, pair_laplacian(z.shape[0], pairs))
    zs = z.unbind(0)
    return sum(((zs[m] - zs[n]).pow(2).sum(-1) + 1e-12).pow(alpha / 2.0).sum() for m, n in pairs)


@declare(label="Align+Uniform (Wang & Isola)", colour="#009E73", marker="s",
         search={"t": loguniform(0.5, 5.0)}, flops=lambda M, B, d, p: 2 * gemm(B, d) * M,
         roofline_target=0.7)
class AlignUniform(Objective):
    name = "align_uniform"
    roles: ClassVar[dict[str, Role]] = {"alignment": "alignment", "uniformity": "uniformity"}
    min_batch: ClassVar[int] = 2
    symmetric_in_modalities = True

    def __init__(self, alpha: float = 2.0, t: float = 2.0, lam_align: float = 1.0, lam_unif: float = 1.0,
                 chunk_size: int | None = None, normalize: bool = True) -> None:
        super().__init__(normalize=normalize)
        self.alpha = check_positive("alpha", alpha)
        self.t = check_positive("t", t)
        self.lam_align = check_nonnegative("lam_align", lam_align)
        self.lam_unif = check_nonnegative("lam_unif", lam_unif)
        self.chunk_size = check_chunk(chunk_size)

    def compute(self, z: Tensor, rows: slice) -> dict[str, Tensor]:
        n_mod, total = z.shape[0], z.shape[1]
        pairs = [(m, n) for m in range(n_mod) for n in range(m + 1, n_mod)]
        align = self.mean_over_rows(pairs_sq_dist_sum(self.local(z, rows), pairs, self.alpha), total) / len(pairs)
        # exp(-t d^2) is the Gaussian kernel of width s = 1 / sqrt(2 t)
        width = 1.0 / math.sqrt(2.0 * self.t)
        unif = self_lmks(z, rows, width, True, self.chunk_size).mean()
        return {"alignment": self.lam_align * align, "uniformity": self.lam_unif * unif}
