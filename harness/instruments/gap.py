"""Modality-gap and representation-quality metrics for M >= 2 modalities of paired embeddings.

All metrics take ``zs``: M tensors of shape (B_m, d) or one (M, B, d) tensor. By default rows are
L2-normalised first (``normalize=True``), as in the papers the metrics come from. Metrics that need
pairs (mean paired distance, true-pair cosine, alignment) require equal B across modalities.
For M > 2 a pairwise metric is reported twice: averaged over all unordered pairs m < n (``*_pairs``)
and averaged over the pairs (a, n), n != a, with the anchor a (``*_anchor``).

Definitions (c_m = mean_i z_i^m, the centroid of modality m):

* **centroid distance** ``|c_m - c_n|`` (Liang, Zhang, Kwon, Yeung, Zou, "Mind the Gap", NeurIPS 2022,
  who call ``c_m - c_n`` the gap vector).
* **mean paired distance** ``mean_i |z_i^m - z_i^n|``.
* **relative modality gap** (this project's definition): centroid distance divided by the mean
  within-modality spread, ``|c_m - c_n| / ((r_m + r_n)/2)``, ``r_m = sqrt(mean_i |z_i^m - c_m|^2)`` (RMS
  distance to the own centroid). 0 for identical distributions; above 1 the centroids are further apart
  than a typical sample is from its own centroid. Scale-free; unlike the centroid distance it does not
  shrink when both modalities merely spread out.
* **linear separability**: held-out accuracy of an L2-regularised multinomial logistic regression
  (scikit-learn, lbfgs, C=1, deterministic) predicting the modality index from an embedding. The split
  is by *sample index* when B is equal across modalities (all M embeddings of a held-out tuple are in the
  test set, so paired partners never leak), with a fixed seed. Chance level is 1/M; identical modalities
  give exactly 1/M.
* **true-pair cosine** ``mean_i cos(z_i^m, z_i^n)``.
* **alignment** (Wang & Isola, ICML 2020, alpha = 2): ``mean_i |z_i^m - z_i^n|^2``.
* **uniformity** (Wang & Isola, t = 2): ``log mean_{i != j} exp(-2 |z_i - z_j|^2)`` per modality, i.e.
  ``LMK_s`` with ``s = 1/2`` and the diagonal excluded (``objectives.kernels.log_mean_kernel``).
* **effective rank** (Roy & Vetterli, EUSIPCO 2007): ``exp(H(p))``, ``p_k = sigma_k / sum_k sigma_k``
  over the singular values of the (uncentred, as in RankMe) B x d embedding matrix; between 1 and
  min(B, d); equals k for k equal non-zero singular values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.instruments._inputs import checked_modalities, modality_pairs
from objectives.kernels import log_mean_kernel

__all__ = [
    "alignment",
    "centroid_distance",
    "effective_rank",
    "linear_separability",
    "mean_paired_distance",
    "modality_gap",
    "relative_gap",
    "true_pair_cosine",
    "uniformity",
    "within_cosine",
]


def _prepare(zs: Any, normalize: bool, paired: bool = False) -> list[Tensor]:
    return [z.cpu() for z in checked_modalities(zs, "zs", paired=paired, normalize=normalize)]


def _prepare_one(z: Any, normalize: bool) -> Tensor:
    """One modality's (B, d) embeddings, checked like ``_prepare``."""
    if isinstance(z, Tensor) and z.dim() != 2:
        raise ValueError(f"z must have shape (B, d), got {tuple(z.shape)}")
    return _prepare([z, z], normalize)[0]


def _pair_mean(zs: list[Tensor], anchor: int | None, fn) -> float:
    return float(np.mean([fn(zs[m], zs[n]) for m, n in modality_pairs(len(zs), anchor)]))


def centroid_distance(
    zs: Sequence[Tensor] | Tensor, anchor: int | None = None, normalize: bool = True
) -> float:
    """Mean over pairs (all pairs if ``anchor`` is None, else (anchor, n)) of ``|c_m - c_n|``."""
    z = _prepare(zs, normalize)
    return _pair_mean(z, anchor, lambda x, y: float((x.mean(0) - y.mean(0)).norm()))


def mean_paired_distance(
    zs: Sequence[Tensor] | Tensor, anchor: int | None = None, normalize: bool = True
) -> float:
    """Mean over pairs of ``mean_i |z_i^m - z_i^n|`` (paired samples)."""
    z = _prepare(zs, normalize, paired=True)
    return _pair_mean(z, anchor, lambda x, y: float((x - y).norm(dim=-1).mean()))


def _spread(x: Tensor) -> float:
    return float((x - x.mean(0)).pow(2).sum(-1).mean().sqrt())


def relative_gap(zs: Sequence[Tensor] | Tensor, anchor: int | None = None, normalize: bool = True) -> float:
    """Mean over pairs of ``|c_m - c_n| / ((r_m + r_n) / 2)``, r_m the RMS distance to the own centroid."""
    z = _prepare(zs, normalize)

    def rel(x: Tensor, y: Tensor) -> float:
        spread = 0.5 * (_spread(x) + _spread(y))
        return float((x.mean(0) - y.mean(0)).norm()) / max(spread, 1e-12)

    return _pair_mean(z, anchor, rel)


def linear_separability(
    zs: Sequence[Tensor] | Tensor,
    test_fraction: float = 0.3,
    seed: int = 0,
    normalize: bool = True,
    max_iter: int = 1000,
) -> float:
    """Held-out accuracy of a logistic regression predicting the modality from the embedding.

    Split by sample index (tuples kept whole) when B is equal across modalities, otherwise per
    modality; ``test_fraction`` of the indices, chosen by ``numpy.random.default_rng(seed)``.
    Chance level 1/M.
    """
    from sklearn.linear_model import LogisticRegression

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    z = _prepare(zs, normalize)
    rng = np.random.default_rng(seed)
    sizes = [x.shape[0] for x in z]
    if len(set(sizes)) == 1:
        perm = rng.permutation(sizes[0])
        n_test = max(1, int(round(test_fraction * sizes[0])))
        test_sets = [perm[:n_test]] * len(z)
    else:
        test_sets = [rng.permutation(b)[: max(1, int(round(test_fraction * b)))] for b in sizes]
    xtr, ytr, xte, yte = [], [], [], []
    for m, x in enumerate(z):
        arr = x.numpy().astype(np.float64)
        mask = np.zeros(arr.shape[0], dtype=bool)
        mask[test_sets[m]] = True
        if mask.all():
            raise ValueError(f"test_fraction={test_fraction} leaves no training sample in zs[{m}]")
        xtr.append(arr[~mask])
        xte.append(arr[mask])
        ytr.append(np.full((~mask).sum(), m))
        yte.append(np.full(mask.sum(), m))
    clf = LogisticRegression(C=1.0, max_iter=max_iter)
    clf.fit(np.concatenate(xtr), np.concatenate(ytr))
    return float((clf.predict(np.concatenate(xte)) == np.concatenate(yte)).mean())


def true_pair_cosine(zs: Sequence[Tensor] | Tensor, anchor: int | None = None) -> float:
    """Mean over pairs of ``mean_i cos(z_i^m, z_i^n)`` (rows normalised for the cosine)."""
    z = _prepare(zs, True, paired=True)
    return _pair_mean(z, anchor, lambda x, y: float((x * y).sum(-1).mean()))


def alignment(zs: Sequence[Tensor] | Tensor, anchor: int | None = None, normalize: bool = True) -> float:
    """Wang & Isola alignment (alpha = 2), mean over pairs of ``mean_i |z_i^m - z_i^n|^2``."""
    z = _prepare(zs, normalize, paired=True)
    return _pair_mean(z, anchor, lambda x, y: float((x - y).pow(2).sum(-1).mean()))


def _check_block(block: int | None) -> int | None:
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise ValueError(f"block must be a positive int or None, got {block!r}")
    return block


def uniformity(z: Tensor, t: float = 2.0, normalize: bool = True, block: int | None = None) -> float:
    """Wang & Isola uniformity ``log mean_{i != j} exp(-t |z_i - z_j|^2)`` of one modality (B, d).

    ``exp(-t d^2) = k_s(d)`` with ``s = 1/sqrt(2 t)``; computed by ``log_mean_kernel`` (log domain),
    ``block`` rows at a time when given (peak memory O(block x B) instead of O(B^2)).
    """
    if not t > 0:
        raise ValueError(f"t must be > 0, got {t!r}")
    x = _prepare_one(z, normalize)
    return float(log_mean_kernel(x, x, 1.0 / math.sqrt(2.0 * t), exclude_diagonal=True,
                                 chunk_size=_check_block(block)))


def effective_rank(z: Tensor, normalize: bool = True, center: bool = False) -> float:
    """Roy & Vetterli (2007) effective rank ``exp(-sum_k p_k log p_k)``, ``p_k = sigma_k / sum sigma``."""
    x = _prepare_one(z, normalize)
    if center:
        x = x - x.mean(0)
    sv = torch.linalg.svdvals(x.double())
    total = float(sv.sum())
    if total <= 0:
        return 0.0
    p = sv / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def within_cosine(z: Tensor) -> float:
    """Mean cosine between distinct embeddings of one modality: 1 when every row collapsed onto one
    direction, about 0 for a uniform spread. ``(|sum_i x_i|^2 - sum_i |x_i|^2) / (B (B - 1))`` on the
    unit-normalised rows (a cosine always normalises): linear in B, no B x B matrix."""
    x = _prepare_one(z, True).double()  # checks B >= 2
    n = x.shape[0]
    total = x.sum(0)
    return float((total @ total - (x * x).sum()) / (n * (n - 1)))


def modality_gap(
    zs: Sequence[Tensor] | Tensor,
    anchor: int = 0,
    normalize: bool = True,
    seed: int = 0,
    block: int | None = None,
) -> dict[str, float]:
    """Every metric of this module in one flat dict of floats; ``block`` bounds the uniformity's live
    kernel block to ``block x B`` entries (the only quadratic metric; every other one is linear in B).

    Keys: ``centroid_distance_pairs, centroid_distance_anchor, mean_paired_distance_pairs,
    mean_paired_distance_anchor, relative_gap_pairs, relative_gap_anchor, linear_separability,
    separability_chance, true_pair_cosine_pairs, true_pair_cosine_anchor, alignment_pairs,
    alignment_anchor, uniformity_m{m}, uniformity_mean, effective_rank_m{m}, effective_rank_mean,
    within_cosine_m{m}, within_cosine_mean``.
    Paired metrics are NaN when sample counts differ.
    """
    z = _prepare(zs, normalize)
    n_mod = len(z)
    modality_pairs(n_mod, anchor)  # validates anchor
    _check_block(block)
    paired = len({x.shape[0] for x in z}) == 1
    out: dict[str, float] = {}
    for tag, a in (("pairs", None), ("anchor", anchor)):
        out[f"centroid_distance_{tag}"] = centroid_distance(z, a, normalize=False)
        out[f"relative_gap_{tag}"] = relative_gap(z, a, normalize=False)
        if paired:
            out[f"mean_paired_distance_{tag}"] = mean_paired_distance(z, a, normalize=False)
            out[f"true_pair_cosine_{tag}"] = true_pair_cosine(z, a)
            out[f"alignment_{tag}"] = alignment(z, a, normalize=False)
        else:
            for key in ("mean_paired_distance", "true_pair_cosine", "alignment"):
                out[f"{key}_{tag}"] = float("nan")
    out["linear_separability"] = linear_separability(z, seed=seed, normalize=False)
    out["separability_chance"] = 1.0 / n_mod
    unif = [uniformity(x, normalize=False, block=block) for x in z]
    ranks = [effective_rank(x, normalize=False) for x in z]
    within = [within_cosine(x) for x in z]
    for m in range(n_mod):
        out[f"uniformity_m{m}"] = unif[m]
        out[f"effective_rank_m{m}"] = ranks[m]
        out[f"within_cosine_m{m}"] = within[m]
    out["uniformity_mean"] = float(np.mean(unif))
    out["effective_rank_mean"] = float(np.mean(ranks))
    out["within_cosine_mean"] = float(np.mean(within))
    return out
