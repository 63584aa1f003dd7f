"""UniAlign: alignment and uniformity decoupled, for any number of modalities.

``L = lam_uni * U + lam_align * A [+ lam_ctr * U_ctr(C)] [+ lam_vol * V]`` with

* intra-modality uniformity ``U_s(Z) = log mean_{i != j} k_s(z_i, z_j)``,
  ``k_s(u, v) = exp(-|u - v|^2 / (2 s^2))`` (``include_diagonal=True``: mean over all i, j);
  ``uniformity="each"``: ``sum_m U_s(Z_m)``; ``"anchor"``: ``U_s(Z_a)``; ``"union"`` (the reviewers'
  re-coupled ablation with cross-modal repulsion): ``M * U_s(Z_1 u ... u Z_M)``;
  ``uniformity_reduction="mean"`` divides the ``"each"`` and ``"union"`` sums by M (``"anchor"`` has
  one term and is unchanged). The default ``"sum"`` is the literal form above. Alignment is an average
  (over the M - 1 anchor pairs, the M modalities, or the pairs), so with ``"sum"`` uniformity's share of
  the loss grows linearly in M at fixed ``lam_uni``/``lam_align``; ``"mean"`` keeps that balance
  independent of M, which comparisons across M need;
* alignment ``"anchor"``: ``1/(B (M-1)) sum_i sum_{n != a} |z_i^a - z_i^n|^2``; ``"centroid"``:
  ``1/(B M) sum_i sum_m |z_i^m - c_i|^2`` with ``c_i = mean_m z_i^m``; ``"all_pairs"``:
  ``mean_{m<n} mean_i |z_i^m - z_i^n|^2``;
* tuple-level extension: centroid uniformity ``U_{s_ctr}(C)`` over ``c_i`` (renormalised to the
  sphere with ``renormalize_centroid=True``) and the volume ``mean_i sqrt(det G_i + vol_eps)``,
  ``G_i`` the M x M Gram matrix of sample i's embeddings.

Reference: W. Yin, P. Zhou, Z. Xiao, J. Liu, S. Yu, J.-J. Sonke, E. Gavves, "Towards Uniformity and
Alignment for Multimodal Representation Learning", arXiv 2602.09507 (2026). The paper leaves the
scope of uniformity, the alignment target and every weight and bandwidth open: each is a switch here.

Example:
    >>> import torch, objectives
    >>> loss_fn = objectives.build("unialign", tuple="both", bandwidth=0.5, lam_vol=0.1)
    >>> out = loss_fn([torch.randn(16, 8) for _ in range(4)])
    >>> sorted(out.terms)
    ['alignment', 'centroid_uniformity', 'uniformity', 'volume']
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from objectives._base import (
    Objective,
    Role,
    check_bandwidth,
    check_choice,
    check_chunk,
    check_index,
    check_nonnegative,
    check_positive,
    self_lmk,
    self_lmks,
    union_lmk,
)
from objectives.align_uniform import pairs_sq_dist_sum
from objectives.kernels import log_mean_kernel, median_bandwidth_tensor, modality_quadratic
from objectives.kernels.device import host_float
from objectives.registry import declare, loguniform, uniformity_flops


def volume_sum(z: Tensor, rows: slice, eps: float) -> Tensor:
    """sum over this rank's rows of sqrt(det(G_i) + eps), G_i = Gram of (z_i^1 .. z_i^M).

    The Gram determinant of a PSD matrix can come out slightly negative in floating point; it is
    clamped at 0 before the eps guard so the square root and its gradient stay finite.
    """
    tup = Objective.local(z, rows).transpose(0, 1)  # (B, M, d)
    gram = tup @ tup.transpose(1, 2)
    det = torch.linalg.det(gram.double() if gram.dtype in (torch.float16, torch.bfloat16) else gram)
    return (det.clamp_min(0.0) + eps).sqrt().to(z.dtype).sum()


@declare(label="UniAlign", colour="#D55E00", marker="D",
         search={"bandwidth": loguniform(0.25, 1.5), "lam_uni": loguniform(0.1, 3.0)},
         flops=lambda M, B, d, p: uniformity_flops(M, B, d, p["uniformity"]), roofline_target=0.7)
class UniAlign(Objective):
    """UniAlign (module docstring). ``uniformity_reduction``: ``"sum"`` (default, the paper's literal
    sum over modalities) or ``"mean"`` (divided by M), so that the uniformity/alignment balance set by
    ``lam_uni``/``lam_align`` does not change with M: alignment is always an average over pairs or
    modalities, a summed uniformity weighs M times one modality's term."""

    name = "unialign"
    roles: ClassVar[dict[str, Role]] = {
        "uniformity": "uniformity",
        "alignment": "alignment",
        "centroid_uniformity": "uniformity",
        "volume": "alignment",
    }
    min_batch: ClassVar[int] = 2

    def __init__(
        self,
        anchor: int = 0,
        uniformity: str = "each",
        alignment: str = "anchor",
        tuple: str = "off",
        lam_uni: float = 1.0,
        lam_align: float = 1.0,
        lam_ctr: float = 1.0,
        lam_vol: float = 1.0,
        bandwidth: float | str = "median",
        centroid_bandwidth: float | str = "median",
        renormalize_centroid: bool = True,
        include_diagonal: bool = False,
        vol_eps: float = 1e-6,
        chunk_size: int | None = None,
        normalize: bool = True,
        uniformity_reduction: str = "sum",
    ) -> None:
        super().__init__(normalize=normalize)
        self.anchor = check_index("anchor", anchor)
        self.uniformity = check_choice("uniformity", uniformity, ("each", "anchor", "union"))
        self.alignment = check_choice("alignment", alignment, ("anchor", "centroid", "all_pairs"))
        self.tuple = check_choice("tuple", tuple, ("off", "centroid", "volume", "both"))
        self.lam_uni = check_nonnegative("lam_uni", lam_uni)
        self.lam_align = check_nonnegative("lam_align", lam_align)
        self.lam_ctr = check_nonnegative("lam_ctr", lam_ctr)
        self.lam_vol = check_nonnegative("lam_vol", lam_vol)
        self.bandwidth = check_bandwidth("bandwidth", bandwidth)
        self.centroid_bandwidth = check_bandwidth("centroid_bandwidth", centroid_bandwidth)
        if not isinstance(renormalize_centroid, bool):
            raise TypeError(f"renormalize_centroid must be a bool, got {renormalize_centroid!r}")
        if not isinstance(include_diagonal, bool):
            raise TypeError(f"include_diagonal must be a bool, got {include_diagonal!r}")
        self.renormalize_centroid = renormalize_centroid
        self.include_diagonal = include_diagonal
        self.vol_eps = check_positive("vol_eps", vol_eps)
        self.chunk_size = check_chunk(chunk_size)
        self.uniformity_reduction = check_choice("uniformity_reduction", uniformity_reduction, ("sum", "mean"))

    @property
    def symmetric_in_modalities(self) -> bool:  # type: ignore[override]
        return self.uniformity != "anchor" and self.alignment != "anchor"

    def _width(self, setting: float | str, *xs: Tensor) -> float | Tensor:
        """The bandwidth: a number, or the median heuristic, which stays on the device unless
        reading it is free (a CPU tensor outside torch.compile; see kernels.device)."""
        return host_float(median_bandwidth_tensor(*xs)) if setting == "median" else float(setting)

    def compute(self, z: Tensor, rows: slice) -> dict[str, Tensor]:
        n_mod, total = z.shape[0], z.shape[1]
        a = self.anchor
        exclude = not self.include_diagonal
        width = self._width(self.bandwidth, *z)
        if self.uniformity == "each":
            unif = self_lmks(z, rows, width, exclude, self.chunk_size).sum()
        elif self.uniformity == "anchor":
            # unbind, not select: a select's backward zero-fills the whole (M, B, d)
            unif = self_lmk(z.unbind(0)[a], rows, width, exclude, self.chunk_size)
        else:
            unif = n_mod * union_lmk(z, rows, width, exclude, self.chunk_size)
        if self.uniformity_reduction == "mean" and self.uniformity != "anchor":
            unif = unif / n_mod
        local = self.local(z, rows)
        if self.alignment == "anchor":
            align = pairs_sq_dist_sum(local, [(a, n) for n in range(n_mod) if n != a]) / (n_mod - 1)
        elif self.alignment == "all_pairs":
            pairs = [(m, n) for m in range(n_mod) for n in range(m + 1, n_mod)]
            align = pairs_sq_dist_sum(local, pairs) / len(pairs)
        else:
            # sum_m |z_m - mean_n z_n|^2 = <z, (I - J / M) z>
            w = [[(1.0 if m == n else 0.0) - 1.0 / n_mod for n in range(n_mod)] for m in range(n_mod)]
            align = modality_quadratic(local, w) / n_mod
        terms = {
            "uniformity": self.lam_uni * unif,
            "alignment": self.lam_align * self.mean_over_rows(align, total),
        }
        if self.tuple in ("centroid", "both"):
            centroids = z.mean(dim=0)
            if self.renormalize_centroid:
                centroids = F.normalize(centroids, dim=-1, eps=1e-12)
                ctr_width = self._width(self.centroid_bandwidth, centroids)
                ctr = self_lmk(centroids, rows, ctr_width, exclude, self.chunk_size)
            else:
                # raw centroids are off the sphere: the general squared-distance kernel, computed
                # whole on every rank (identical values; gradients keep the world-size convention)
                ctr_width = self._width(self.centroid_bandwidth, centroids)
                ctr = log_mean_kernel(centroids, centroids, ctr_width, exclude, self.chunk_size)
            terms["centroid_uniformity"] = self.lam_ctr * ctr
        if self.tuple in ("volume", "both"):
            terms["volume"] = self.lam_vol * self.mean_over_rows(volume_sum(z, rows, self.vol_eps), total)
        return terms

    def extra_repr(self) -> str:
        return (f"anchor={self.anchor}, uniformity={self.uniformity!r}, alignment={self.alignment!r}, "
                f"tuple={self.tuple!r}, bandwidth={self.bandwidth!r}")
