"""CS-Aligner: InfoNCE plus a Cauchy-Schwarz divergence between modality distributions.

``L = InfoNCE(pairs) + lam * mean_{(m,n) in pairs} D_CS(Z_m, Z_n)`` with the kernel estimate
``D_CS(X, Y) = LMK_s(X, X) + LMK_s(Y, Y) - 2 LMK_s(X, Y)`` (diagonal included, so D_CS >= 0).
Terms: InfoNCE's ``alignment`` and ``uniformity``; ``cs_self = lam * mean (LMK(X,X) + LMK(Y,Y))``
(role uniformity: it falls as each modality spreads) and ``cs_cross = -2 lam * mean LMK(X, Y)``
(role alignment: it falls as the distributions overlap).

Reference: W. Yin et al., "Distributional Vision-Language Alignment by Cauchy-Schwarz Divergence",
arXiv 2502.17028 (2025) (lam = 1 there, two modalities); generalised to M through anchor pairs
(``pairs="anchor"``, default) or all pairs.

Temperature parameters as for ``infonce`` (``temperature_clamp``: see ``objectives.Temperature``);
a call may pass ``logit_scale=`` (1 / temperature) instead. ``bandwidth="median"`` is computed on
the device (no host-device synchronisation on an accelerator).

Example:
    >>> import torch, objectives
    >>> out = objectives.build("cs_aligner", bandwidth=0.5)([torch.randn(8, 4) for _ in range(3)])
    >>> sorted(out.terms)
    ['alignment', 'cs_cross', 'cs_self', 'uniformity']
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from objectives._base import (
    Objective,
    Role,
    Temperature,
    check_bandwidth,
    check_choice,
    check_chunk,
    check_index,
    check_nonnegative,
    cross_lmk,
    self_lmks,
)
from objectives._contrastive import contrastive_parts, pair_list
from objectives.kernels import median_bandwidth_tensor
from objectives.kernels.device import host_float, host_values
from objectives.registry import declare, gemm, loguniform, pair_count


# the InfoNCE part 3 P GEMMs, the Cauchy-Schwarz self (2 M) and cross (3 P) blocks
@declare(label="CS-Aligner", colour="#7B4F9E", marker="X",
         search={"temperature": loguniform(0.03, 0.3), "lam": loguniform(0.1, 3.0)},
         flops=lambda M, B, d, p: gemm(B, d) * (6 * pair_count(M, p["pairs"]) + 2 * M), roofline_target=0.7)
class CSAligner(Objective):
    name = "cs_aligner"
    roles: ClassVar[dict[str, Role]] = {
        "alignment": "alignment",
        "uniformity": "uniformity",
        "cs_self": "uniformity",
        "cs_cross": "alignment",
    }

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = False,
                 min_temperature: float = 0.01, lam: float = 1.0, bandwidth: float | str = "median",
                 pairs: str = "anchor", anchor: int = 0, chunk_size: int | None = None,
                 normalize: bool = True, temperature_clamp: str = "forward") -> None:
        super().__init__(normalize=normalize)
        self.temperature = Temperature(temperature, learnable_temperature, min_temperature, temperature_clamp)
        self.lam = check_nonnegative("lam", lam)
        self.bandwidth = check_bandwidth("bandwidth", bandwidth)
        self.pairs = check_choice("pairs", pairs, ("anchor", "all"))
        self.anchor = check_index("anchor", anchor)
        self.chunk_size = check_chunk(chunk_size)

    @property
    def symmetric_in_modalities(self) -> bool:  # type: ignore[override]
        return self.pairs == "all"

    def compute(self, z: Tensor, rows: slice) -> dict[str, Tensor]:
        pairs = pair_list(z.shape[0], self.pairs, self.anchor)
        scale = self.temperature.scale(z.dtype, z.device)
        align, unif = contrastive_parts(z, rows, pairs, scale, False, self.chunk_size)
        # the median stays on the device unless reading it is free (see kernels.device)
        if self.bandwidth == "median":
            width = host_float(median_bandwidth_tensor(*z))
        else:
            width = float(self.bandwidth)
        zs = z.unbind(0)  # one backward node (a select per use would zero-fill (M, B, d) each)
        lmk = self_lmks(z, rows, width, False, self.chunk_size)  # (M,) every modality is in a pair
        degree = [sum(m in pair for pair in pairs) for m in range(z.shape[0])]
        # mean over pairs of U_m + U_n
        cs_self = (lmk * host_values(degree, lmk.dtype, lmk.device)).sum() / len(pairs)
        cs_cross = torch.stack([cross_lmk(zs[m], zs[n], rows, width, self.chunk_size) for m, n in pairs]).mean()
        return {
            "alignment": align,
            "uniformity": unif,
            "cs_self": self.lam * cs_self,
            "cs_cross": -2.0 * self.lam * cs_cross,
        }
