"""Deliberately naive reference implementations of every objective in ``objectives/``.

These are the independent proof the test-suite compares the library against. They are written
from the formulas in ``docs/method.md`` / ``docs/interfaces.md`` only and share no code with
``objectives/``:

* explicit Python loops over modality pairs and over samples ``i`` and ``j``;
* the only vectorisation is inside a single dot product / squared distance of two d-vectors;
* every log-sum-exp is the textbook ``max + log(sum(exp(x - max)))`` over a Python list;
* determinants by Gaussian elimination with partial pivoting on a list of lists.

Everything is differentiable through torch autograd (the scalars are 0-d tensors), so the
references also give reference gradients. Use float64 inputs.

Each ``ref_*`` function takes a list of M tensors of shape (B, d) (or one (M, B, d) tensor),
normalises the rows (unless ``normalize=False``), and returns ``{"loss": tensor, "terms": dict}``
where the terms are the *weighted* contributions, with ``loss == sum(terms)``.
"""

from __future__ import annotations

import itertools
import math

import torch

__all__ = [
    "REFERENCES",
    "ROLES",
    "as_rows",
    "det",
    "dot",
    "lse",
    "make_zs",
    "median_candidates",
    "pair_list",
    "ref_align_uniform",
    "ref_cs_aligner",
    "ref_dcl",
    "ref_gram",
    "ref_infonce",
    "ref_infonce_anchor",
    "ref_infonce_reweighted",
    "ref_symile",
    "ref_unialign",
    "sqdist",
    "unit",
]

# role of each named term (the spec's table)
ROLES = {
    "alignment": "alignment",
    "uniformity": "uniformity",
    "centroid_uniformity": "uniformity",
    "volume": "alignment",
    "cs_self": "uniformity",
    "cs_cross": "alignment",
}


# ----------------------------------------------------------------------------- scalar helpers
def dot(u, v):
    return (u * v).sum()


def sqdist(u, v):
    diff = u - v
    return (diff * diff).sum()


def mean(values):
    values = list(values)
    if not values:
        raise ValueError("mean of an empty list")
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total / len(values)


def lse(values):
    """log(sum(exp(v))) over a Python list of 0-d tensors, max-shifted (float64 needs it)."""
    values = list(values)
    if not values:
        raise ValueError("log-sum-exp of an empty list")
    top = max(float(v.detach()) for v in values)
    total = torch.exp(values[0] - top)
    for v in values[1:]:
        total = total + torch.exp(v - top)
    return top + torch.log(total)


def log_mean_exp(values):
    values = list(values)
    return lse(values) - math.log(len(values))


def det(matrix):
    """Determinant of a square list-of-lists of 0-d tensors (Gaussian elimination, pivoting)."""
    a = [list(row) for row in matrix]
    n = len(a)
    result = None
    sign = 1.0
    for k in range(n):
        p = max(range(k, n), key=lambda r: abs(float(a[r][k].detach())))
        if float(a[p][k].detach()) == 0.0:
            return a[k][k] * 0.0
        if p != k:
            a[k], a[p] = a[p], a[k]
            sign = -sign
        result = a[k][k] if result is None else result * a[k][k]
        for r in range(k + 1, n):
            f = a[r][k] / a[k][k]
            for c in range(k + 1, n):
                a[r][c] = a[r][c] - f * a[k][c]
    return sign * result


def as_rows(zs, normalize=True):
    """list over modalities of list over samples of 1-D row tensors (rows normalised naively)."""
    if isinstance(zs, torch.Tensor):
        zs = [zs[m] for m in range(zs.shape[0])]
    out = []
    for z in zs:
        rows = []
        for i in range(z.shape[0]):
            row = z[i]
            if normalize:
                row = row / torch.sqrt((row * row).sum())
            rows.append(row)
        out.append(rows)
    return out


def pair_list(M, pairs, anchor=0):
    if pairs == "all":
        return [(m, n) for m in range(M) for n in range(m + 1, M)]
    if pairs == "anchor":
        return [(anchor, n) for n in range(M) if n != anchor]
    raise ValueError(f"pairs={pairs!r}")


def _result(terms):
    loss = None
    for v in terms.values():
        loss = v if loss is None else loss + v
    return {"loss": loss, "terms": terms}


def median_candidates(rows):
    """Possible values of "median of pairwise distances |x_i - x_j|, i < j" of a pooled list of
    row tensors: (lower median, upper median, their mean) -- conventions differ for even counts."""
    d = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            d.append(math.sqrt(float(sqdist(rows[i].detach(), rows[j].detach()))))
    d.sort()
    n = len(d)
    if n % 2 == 1:
        return [d[n // 2]]
    lo, hi = d[n // 2 - 1], d[n // 2]
    return [lo, hi, 0.5 * (lo + hi)]


# ----------------------------------------------------------------------------- InfoNCE family
def _clip_parts(X, Y, tau, exclude_positive=False):
    """(alignment part, uniformity part) of the symmetric CLIP loss of rows X, Y."""
    B = len(X)
    S = [[dot(X[i], Y[j]) / tau for j in range(B)] for i in range(B)]
    align = -mean(S[i][i] for i in range(B))
    u_rows = mean(lse(S[i][j] for j in range(B) if not (exclude_positive and j == i)) for i in range(B))
    u_cols = mean(lse(S[i][j] for i in range(B) if not (exclude_positive and i == j)) for j in range(B))
    return align, 0.5 * (u_rows + u_cols)


def _infonce_over_pairs(Z, tau, pairs, anchor, exclude_positive=False):
    plist = pair_list(len(Z), pairs, anchor)
    parts = [_clip_parts(Z[m], Z[n], tau, exclude_positive) for (m, n) in plist]
    return mean(p[0] for p in parts), mean(p[1] for p in parts)


def _check_M_anchor(Z, anchor):
    if len(Z) < 2:
        raise ValueError("M < 2")
    if not 0 <= anchor < len(Z):
        raise ValueError("anchor out of range")


def ref_infonce(zs, temperature=0.07, normalize=True):
    Z = as_rows(zs, normalize)
    _check_M_anchor(Z, 0)
    a, u = _infonce_over_pairs(Z, temperature, "all", 0)
    return _result({"alignment": a, "uniformity": u})


def ref_infonce_anchor(zs, temperature=0.07, anchor=0, normalize=True):
    Z = as_rows(zs, normalize)
    _check_M_anchor(Z, anchor)
    a, u = _infonce_over_pairs(Z, temperature, "anchor", anchor)
    return _result({"alignment": a, "uniformity": u})


def ref_infonce_reweighted(zs, temperature=0.07, uniformity_weight=1.0, pairs="all", anchor=0,
                           normalize=True):
    Z = as_rows(zs, normalize)
    _check_M_anchor(Z, anchor)
    a, u = _infonce_over_pairs(Z, temperature, pairs, anchor)
    return _result({"alignment": a, "uniformity": uniformity_weight * u})


def ref_dcl(zs, temperature=0.07, pairs="all", anchor=0, normalize=True):
    Z = as_rows(zs, normalize)
    _check_M_anchor(Z, anchor)
    if len(Z[0]) < 2:
        raise ValueError("dcl needs B >= 2")
    a, u = _infonce_over_pairs(Z, temperature, pairs, anchor, exclude_positive=True)
    return _result({"alignment": a, "uniformity": u})


# ----------------------------------------------------------------------------- Wang & Isola
def ref_align_uniform(zs, alpha=2.0, t=2.0, lam_align=1.0, lam_unif=1.0, normalize=True):
    Z = as_rows(zs, normalize)
    _check_M_anchor(Z, 0)
    M, B = len(Z), len(Z[0])
    if B < 2:
        raise ValueError("uniformity needs B >= 2")
    align = mean(
        mean(sqdist(Z[m][i], Z[n][i]) ** (alpha / 2.0) for i in range(B))
        for (m, n) in pair_list(M, "all")
    )
    unif = mean(
        log_mean_exp(-t * sqdist(Z[m][i], Z[m][j]) for i in range(B) for j in range(B) if i != j)
        for m in range(M)
    )
    return _result({"alignment": lam_align * align, "uniformity": lam_unif * unif})


# ----------------------------------------------------------------------------- kernels
def _U(rows, s, include_diagonal):
    """U_s(X) = log mean_{i != j} k_s(x_i, x_j) (or over all i, j with include_diagonal)."""
    n = len(rows)
    vals = [
        -sqdist(rows[i], rows[j]) / (2.0 * s * s)
        for i in range(n)
        for j in range(n)
        if include_diagonal or i != j
    ]
    if not vals:
        raise ValueError("uniformity needs at least two rows")
    return log_mean_exp(vals)


def _LMK(X, Y, s):
    """log mean_{i,j} k_s(x_i, y_j), diagonal included."""
    return log_mean_exp(-sqdist(x, y) / (2.0 * s * s) for x in X for y in Y)


def _gram_sqrt_det(vectors, eps):
    G = [[dot(u, v) for v in vectors] for u in vectors]
    return torch.sqrt(det(G) + eps)


# ----------------------------------------------------------------------------- UniAlign
def ref_unialign(zs, anchor=0, uniformity="each", alignment="anchor", tuple="off", lam_uni=1.0,
                 lam_align=1.0, lam_ctr=1.0, lam_vol=1.0, bandwidth=0.5, centroid_bandwidth=0.5,
                 renormalize_centroid=True, include_diagonal=False, vol_eps=1e-6, normalize=True,
                 uniformity_reduction="sum"):
    Z = as_rows(zs, normalize)
    _check_M_anchor(Z, anchor)
    M, B = len(Z), len(Z[0])
    s = float(bandwidth)
    terms = {}

    if uniformity == "each":
        terms["uniformity"] = lam_uni * sum_(_U(Z[m], s, include_diagonal) for m in range(M))
    elif uniformity == "anchor":
        terms["uniformity"] = lam_uni * _U(Z[anchor], s, include_diagonal)
    elif uniformity == "union":
        pooled = [row for m in range(M) for row in Z[m]]
        terms["uniformity"] = lam_uni * M * _U(pooled, s, include_diagonal)
    else:
        raise ValueError(uniformity)
    if uniformity_reduction == "mean":
        # the mean over the modalities whose uniformity is counted: M of them for each/union, one for anchor
        terms["uniformity"] = terms["uniformity"] / (1 if uniformity == "anchor" else M)
    elif uniformity_reduction != "sum":
        raise ValueError(uniformity_reduction)

    centroids = []
    for i in range(B):
        c = Z[0][i]
        for m in range(1, M):
            c = c + Z[m][i]
        centroids.append(c / M)

    if alignment == "anchor":
        total = sum_(sqdist(Z[anchor][i], Z[n][i]) for i in range(B) for n in range(M) if n != anchor)
        terms["alignment"] = lam_align * total / (B * (M - 1))
    elif alignment == "centroid":
        total = sum_(sqdist(Z[m][i], centroids[i]) for i in range(B) for m in range(M))
        terms["alignment"] = lam_align * total / (B * M)
    elif alignment == "all_pairs":
        terms["alignment"] = lam_align * mean(
            mean(sqdist(Z[m][i], Z[n][i]) for i in range(B)) for (m, n) in pair_list(M, "all")
        )
    else:
        raise ValueError(alignment)

    if tuple in ("centroid", "both"):
        C = centroids
        if renormalize_centroid:
            C = [c / torch.sqrt((c * c).sum()) for c in C]
        terms["centroid_uniformity"] = lam_ctr * _U(C, float(centroid_bandwidth), include_diagonal)
    if tuple in ("volume", "both"):
        terms["volume"] = lam_vol * mean(
            _gram_sqrt_det([Z[m][i] for m in range(M)], vol_eps) for i in range(B)
        )
    if tuple not in ("off", "centroid", "volume", "both"):
        raise ValueError(tuple)
    return _result(terms)


def sum_(values):
    values = list(values)
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


# ----------------------------------------------------------------------------- CS-Aligner
def ref_cs_aligner(zs, temperature=0.07, lam=1.0, bandwidth=0.5, pairs="anchor", anchor=0,
                   normalize=True):
    Z = as_rows(zs, normalize)
    _check_M_anchor(Z, anchor)
    plist = pair_list(len(Z), pairs, anchor)
    a, u = _infonce_over_pairs(Z, temperature, pairs, anchor)
    s = float(bandwidth)
    cs_self = mean(_LMK(Z[m], Z[m], s) + _LMK(Z[n], Z[n], s) for (m, n) in plist)
    cs_cross = mean(-2.0 * _LMK(Z[m], Z[n], s) for (m, n) in plist)
    return _result({"alignment": a, "uniformity": u, "cs_self": lam * cs_self,
                    "cs_cross": lam * cs_cross})


# ----------------------------------------------------------------------------- GRAM
def ref_gram(zs, temperature=0.07, anchor=0, vol_eps=1e-6, normalize=True, label_smoothing=0.0):
    """Cross-entropy of L_ij = -V_ij / tau both ways against the smoothed targets
    q_ij = (1 - ls) [i == j] + ls / B; alignment = (1 - ls) mean_i V_ii / tau, uniformity the rest."""
    Z = as_rows(zs, normalize)
    _check_M_anchor(Z, anchor)
    M, B = len(Z), len(Z[0])
    others = [n for n in range(M) if n != anchor]
    V = [[_gram_sqrt_det([Z[anchor][i]] + [Z[n][j] for n in others], vol_eps) for j in range(B)]
         for i in range(B)]
    L = [[-V[i][j] / temperature for j in range(B)] for i in range(B)]
    ls = label_smoothing

    def q(i, j):
        return (1.0 - ls) * (1.0 if i == j else 0.0) + ls / B

    rows = mean(sum_(-q(i, j) * (L[i][j] - lse(L[i][k] for k in range(B))) for j in range(B)) for i in range(B))
    cols = mean(sum_(-q(i, j) * (L[i][j] - lse(L[k][j] for k in range(B))) for i in range(B)) for j in range(B))
    loss = 0.5 * (rows + cols)
    align = (1.0 - ls) * mean(V[i][i] / temperature for i in range(B))
    return _result({"alignment": align, "uniformity": loss - align})


# ----------------------------------------------------------------------------- Symile
def _mip(vectors):
    p = vectors[0]
    for v in vectors[1:]:
        p = p * v
    return p.sum()


def ref_symile(zs, temperature=0.07, negatives="n_squared", normalize=True):
    """Symile: mean over anchors m of cross-entropy of row i of Z[m] against
    * "n_squared": every tuple (j_n)_{n != m} of rows of the other modalities (B^(M-1) columns);
    * "n": column j != i is the tuple (perm_n[j])_n, perms drawn from torch's global RNG, one
      torch.randperm(B) per non-anchor modality (increasing n) per anchor (increasing m); column
      i is the positive tuple.
    Logits are MIP / temperature. Terms: alignment = -mean positive logit, uniformity = mean lse."""
    Z = as_rows(zs, normalize)
    _check_M_anchor(Z, 0)
    M, B = len(Z), len(Z[0])
    align_m, unif_m = [], []
    for m in range(M):
        others = [n for n in range(M) if n != m]
        if negatives == "n_squared":
            row_lse = []
            for i in range(B):
                logits = [
                    _mip([Z[m][i]] + [Z[n][j] for n, j in zip(others, combo)]) / temperature
                    for combo in itertools.product(range(B), repeat=M - 1)
                ]
                row_lse.append(lse(logits))
        elif negatives == "n":
            perms = [torch.randperm(B) for _ in others]
            row_lse = []
            for i in range(B):
                logits = []
                for j in range(B):
                    if j == i:
                        vecs = [Z[m][i]] + [Z[n][i] for n in others]
                    else:
                        vecs = [Z[m][i]] + [Z[n][int(p[j])] for n, p in zip(others, perms)]
                    logits.append(_mip(vecs) / temperature)
                row_lse.append(lse(logits))
        else:
            raise ValueError(negatives)
        pos = [_mip([Z[m][i]] + [Z[n][i] for n in others]) / temperature for i in range(B)]
        align_m.append(-mean(pos))
        unif_m.append(mean(row_lse))
    return _result({"alignment": mean(align_m), "uniformity": mean(unif_m)})


def make_zs(M, B, d, dtype=torch.float64, seed=0, requires_grad=False):
    """M raw (non-normalised) input tensors of shape (B, d) with rows of varied norms."""
    g = torch.Generator().manual_seed(seed)
    zs = []
    for _ in range(M):
        z = torch.randn(B, d, generator=g, dtype=torch.float64)
        z = z * (0.5 + 2.0 * torch.rand(B, 1, generator=g, dtype=torch.float64))
        zs.append(z.to(dtype).requires_grad_(requires_grad))
    return zs


def unit(zs):
    """Row-normalised copies (plain torch, for inputs to normalize=False paths)."""
    return [z / z.norm(dim=1, keepdim=True) for z in zs]


REFERENCES = {
    "infonce": ref_infonce,
    "infonce_anchor": ref_infonce_anchor,
    "infonce_reweighted": ref_infonce_reweighted,
    "dcl": ref_dcl,
    "align_uniform": ref_align_uniform,
    "unialign": ref_unialign,
    "cs_aligner": ref_cs_aligner,
    "gram": ref_gram,
    "symile": ref_symile,
}
