"""Divergences between the M modality distributions, estimated from embeddings with Gaussian KDEs.

Bandwidth convention (the project's one convention, ``docs/interfaces.md``)
---------------------------------------------------------------------------
Every ``bandwidth`` argument in this module is the **KDE bandwidth h**:
``p_hat(x) = 1/B sum_i N(x; x_i, h^2 I)``. A cross term of two such KDEs is
``int p_hat q_hat = 1/(B_x B_y) sum_ij N(x_i - y_j; 0, 2 h^2 I)``, i.e. a log-mean-kernel
``LMK_s`` (``objectives.kernels.log_mean_kernel``) of kernel width ``s = sqrt(2) h``.
``bandwidth="median"`` means ``h = median_pairwise_distance / sqrt(2)`` over the pooled modalities,
so that the LMK width is ``s = median distance``, the same ``s`` that ``bandwidth="median"`` gives
inside the objectives (UniAlign's uniformity). Kernel normalising constants are never formed: every
divergence here is projective (invariant to rescaling each density), so they cancel exactly.

Divergences (formulas from ``docs/method.md``)
------------------------------------------------
* Cauchy-Schwarz: ``D_CS(p, q) = -log((int pq)^2 / (int p^2 int q^2))``;
  KDE (plug-in, diagonal included) estimate ``LMK_s(X,X) + LMK_s(Y,Y) - 2 LMK_s(X,Y)``, ``s = sqrt(2) h``
  (Principe, *Information Theoretic Learning*, 2010; Yin et al., CS-Aligner, arXiv 2502.17028).
* Pairwise Hölder (Nielsen, Sun & Marchand-Maillet, *Entropy* 19(3):122, 2017), conjugate
  ``1/alpha + 1/beta = 1``:
  ``D(p:q) = -log int p^(gamma/alpha) q^(gamma/beta) + (1/alpha) log int p^gamma + (1/beta) log int q^gamma``;
  ``alpha = beta = gamma = 2`` gives ``D_CS / 2``.
* Global Hölder divergence over M distributions (generalised Hölder inequality, symmetric exponents):
  ``D_H(p_1..p_M) = -log int prod_m p_m^(gamma/M) + (1/M) sum_m log int p_m^gamma``; >= 0, zero iff all
  p_m are equal; with ``gamma = M`` it is the generalised Cauchy-Schwarz divergence
  (Lu, Li, Yu, Jenssen, Chen 2024).
* Gaussian closed form (validation target): for ``p_m = N(mu_m, s^2 I)``,
  ``D_H = gamma / (2 M s^2) * sum_m |mu_m - mean(mu)|^2``.

Estimators of D_H
-----------------
``estimator="exact"`` (gamma = M only): D_H of the KDEs themselves, in closed form. The integral of a
product of M equal-width Gaussians is
``int prod_m N(x; a_m, h^2 I) dx = K * exp(-S / (2 h^2))``, ``S = sum_m |a_m - abar|^2
= (1/M) sum_{m<n} |a_m - a_n|^2``, ``K = (2 pi h^2)^(-(M-1)d/2) M^(-d/2)``, so
``int prod_m p_hat_m = K * mean over all M-tuples (one sample per modality) of exp(-S/(2h^2))`` and
``int p_hat_m^M = K * mean over M-tuples drawn from modality m (repeats included) of exp(-S/(2h^2))``;
K cancels. Cost O(prod_m B_m + sum_m B_m^M): refused above ``max_tuples`` (default 2e8); blocks of
~4M tuples keep memory small without gradients (with inputs that require grad, autograd keeps every
block, O(tuples) memory). For M = 2
it is exactly ``D_CS / 2`` of the KDEs (computed with ``log_mean_kernel``, cost O(B^2)).
For Gaussians the exact estimator converges to the closed form with ``s^2 + h^2`` in place of ``s^2``.

``estimator="resubstitution"`` (any gamma > 1, cost O(M^2 B^2), row-chunked): densities are
leave-one-out KDEs evaluated at the samples, ``p_hat_{n}(x)`` for a sample x of modality n leaves x out.
* ``int p_m^gamma = E_{p_m}[p_m^(gamma-1)]`` estimated by ``mean_i p_hat_m(x_i^m)^(gamma-1)``.
* ``int prod_n p_n^(gamma/M) = E_q[prod_n p_n^(gamma/M) / q]`` with the equal-weight mixture
  ``q = (1/M) sum_m p_m`` as importance distribution; ``E_q[f] = (1/M) sum_m E_{p_m}[f]`` is estimated
  by ``(1/M) sum_m mean_i f(x_i^m)``, with ``q`` itself replaced by ``(1/M) sum_n p_hat_n``.
Everything is in the log domain (logsumexp). The estimator is consistent (h -> 0, B h^d -> inf) and for
Gaussians approaches the unwidened closed form as h shrinks; at fixed B it becomes noisy when h is
small compared with the nearest-neighbour distance, which grows with d (see
``python -m harness validate-estimators``).

``estimator="knn"`` (any gamma > 1, cost O(M^2 B^2) distances, row-chunked; ``bandwidth`` is ignored):
k-nearest-neighbour densities ``p_hat_n(x) = k / (N_n V_d r_{k,n}(x)^d)`` with ``r_{k,n}(x)`` the distance
from x to its k-th nearest sample of modality n, ``V_d = pi^(d/2) / Gamma(d/2 + 1)``, ``N_n = B_n - 1``
when x is itself a sample of modality n (x left out) and ``N_n = B_n`` otherwise. Write
``u_n(x) = N_n V_d r_{k,n}(x)^d``. Asymptotically ``u_n(x) p_n(x) ~ Gamma(k, 1)``, so
``E[u_n^(-a)] ~ p_n^a Gamma(k - a) / Gamma(k)`` for ``a < k`` and ``u_n^(-a) Gamma(k) / Gamma(k - a)``
is an asymptotically unbiased estimate of ``p_n(x)^a`` (Leonenko, Pronzato & Savani, *Ann. Statist.*
36(5), 2008; the same factor as in their ``C_k = [Gamma(k)/Gamma(k+1-q)]^(1/(1-q))``).
* ``int p_m^gamma = E_{p_m}[p_m^(gamma-1)]``: ``mean_i u_m(x_i^m)^(1-gamma) Gamma(k) / Gamma(k+1-gamma)``
  (LPS; needs ``k > gamma - 1``; its variance is finite only for ``k > 2 (gamma - 1)``).
* ``int prod_n p_n^(gamma/M) = E_{p_m}[p_m^(gamma/M - 1) prod_{n != m} p_n^(gamma/M)]`` for every m
  (importance sampling with each modality's own density as proposal), averaged over m:
  ``(1/M) sum_m mean_i prod_n u_n(x_i^m)^(-a_{mn}) Gamma(k) / Gamma(k - a_{mn})``,
  ``a_{mm} = gamma/M - 1``, ``a_{mn} = gamma/M`` (n != m); needs ``k > gamma/M``. This is the
  per-factor correction of Poczos & Schneider (AISTATS 2011), whose
  ``B_{k,alpha} = Gamma(k)^2 / (Gamma(k - alpha + 1) Gamma(k + alpha - 1))`` is the product of the two
  factors for exponents ``alpha - 1`` and ``1 - alpha``. The mixture ``q`` of the KDE estimator is not
  used here: ``1/q`` is a sum of densities, which has no such multiplicative correction.
Approximations: (i) the Gamma law of ``u_n p_n`` is the large-B limit (density locally constant on the
k-NN ball); at fixed B it fails as d grows, and the corrections are then not unbiasing; (ii) the M
factors at one point are treated as independent: they are distances to M disjoint samples, so they are
independent given x, but the ``u`` for the own modality and its Gamma limit are only asymptotic;
(iii) the log of a mean of corrected terms is not the mean of logs, so ``-log`` of an unbiased
integral estimate is still biased (Jensen) at finite B. Squared distances are clamped below at
``_KNN_MIN_SQ_DIST`` (1e-12, i.e. r >= 1e-6), so duplicated points give large but finite values.
Everything is in the log domain (logsumexp). Not differentiable beyond what ``torch.topk`` gives.

Noise floor: :func:`holder_null`
--------------------------------
D_H >= 0, but the resubstitution plug-in is neither unbiased nor non-negative: on M disjoint samples of
one distribution (true value 0) it scatters around a small bias (of either sign) with a spread that
grows as the per-sample size shrinks and the bandwidth narrows. :func:`holder_null` measures that
spread at a given bandwidth and sample size; a difference between two settings is an effect only
where it clears the null of both, and an estimate at or below its null mean is "no detectable
divergence", never a (negative) divergence.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from harness.instruments._inputs import check_anchor, checked_modalities
from objectives.kernels import log_kernel_matrix, log_mean_kernel, resolve_bandwidth, sq_dists

__all__ = [
    "DEFAULT_MAX_TUPLES",
    "FIXED_BANDWIDTH",
    "cauchy_schwarz",
    "exact_tuple_count",
    "gaussian_holder_closed_form",
    "holder",
    "holder_null",
    "holder_pair",
    "kde_bandwidth",
    "proxy_bound",
]

SQRT2 = math.sqrt(2.0)
DEFAULT_MAX_TUPLES = 200_000_000
#: the fixed KDE bandwidth h at which runs are compared (``harness evaluate``: ``divergence/holder_fixed/*``).
#: The median heuristic adapts h to each run's embeddings, so two runs' median-bandwidth estimates
#: measure different smoothings; on unit-norm embeddings the median pairwise distance is close to
#: sqrt(2), i.e. median h close to 1, hence h = 1 (LMK width sqrt(2)).
FIXED_BANDWIDTH = 1.0
#: elements of one block in the exact tuple sums and in the row-chunked kernel matrices
_BLOCK_ELEMS = 1 << 22
_ROW_BLOCK_ELEMS = 1 << 23
#: lower clamp of squared k-NN distances in ``estimator="knn"`` (r >= 1e-6: duplicated points stay finite)
_KNN_MIN_SQ_DIST = 1e-12
#: rows that enter the median heuristic (split evenly over the modalities)

Embeddings = Sequence[Tensor] | Tensor


# ----------------------------------------------------------------------------- argument checks


def _prepare(xs: Any, name: str = "xs", min_modalities: int = 2) -> list[Tensor]:
    """Sequence of (B_m, d) tensors (or one (M, B, d) tensor) -> list of finite float tensors."""
    return checked_modalities(xs, name, min_modalities=min_modalities, detach=False)


def _check_gamma(gamma: Any, name: str = "gamma") -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) \
            or gamma <= 1:
        raise ValueError(f"{name} must be a finite number > 1, got {gamma!r}")
    return float(gamma)


def kde_bandwidth(bandwidth: float | str, *xs: Tensor) -> float:
    """The KDE bandwidth ``h`` for ``bandwidth`` (a positive number, or ``"median"``).

    ``"median"``: ``h = median_bandwidth(*xs) / sqrt(2)`` so that the LMK width of the cross terms,
    ``s = sqrt(2) h``, is the median pairwise distance (the objectives' ``"median"`` width; the
    heuristic samples the same number of rows from every modality).
    """
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float, str)):
        raise ValueError(f"bandwidth must be a positive number or 'median', got {bandwidth!r}")
    h = resolve_bandwidth(bandwidth, *xs)  # "median" -> the median distance s
    if isinstance(bandwidth, str):
        return h / SQRT2
    if not math.isfinite(h) or h <= 0:
        raise ValueError(f"bandwidth must be a finite positive number (the KDE's h), got {bandwidth!r}")
    return h


def _row_chunk(n_cols: int) -> int:
    return max(1, _ROW_BLOCK_ELEMS // max(1, n_cols))


# ----------------------------------------------------------------------------- Cauchy-Schwarz


def cauchy_schwarz(x: Tensor, y: Tensor, bandwidth: float | str = "median") -> Tensor:
    """KDE estimate of the Cauchy-Schwarz divergence ``D_CS(p, q) = -log((int pq)^2 / (int p^2 int q^2))``.

    ``D_CS = LMK_s(X, X) + LMK_s(Y, Y) - 2 LMK_s(X, Y)`` with ``s = sqrt(2) h`` (plug-in, diagonal
    included, log domain). ``bandwidth`` is the KDE's ``h`` (``"median"``: ``h = median distance /
    sqrt(2)``). Returns a differentiable 0-dim tensor; >= 0 up to rounding.
    Source: Principe (2010), *Information Theoretic Learning*, ch. 2; ``docs/method.md``.
    """
    x, y = _prepare([x, y], name="(x, y)")
    h = kde_bandwidth(bandwidth, x, y)
    s = SQRT2 * h
    chunk = _row_chunk(max(x.shape[0], y.shape[0]))
    lxx = log_mean_kernel(x, x, s, chunk_size=chunk)
    lyy = log_mean_kernel(y, y, s, chunk_size=chunk)
    lxy = log_mean_kernel(x, y, s, chunk_size=chunk)
    return lxx + lyy - 2.0 * lxy


# ----------------------------------------------------------------------------- exact (closed-form KDE) pieces


def exact_tuple_count(sizes: Sequence[int]) -> int:
    """Number of M-tuples the exact estimator sums over: ``prod_m B_m + sum_m B_m^M``."""
    m = len(sizes)
    return math.prod(int(b) for b in sizes) + sum(int(b) ** m for b in sizes)


def _log_mean_tuple_kernel(xs: list[Tensor], h: float, block_elems: int = _BLOCK_ELEMS) -> Tensor:
    """log mean over all M-tuples (one row of each ``xs[m]``) of ``exp(-S / (2 h^2))``,
    ``S = (1/M) sum_{m<n} |a_m - a_n|^2``. Blocked so that at most ~``block_elems`` values are alive.
    """
    n_mod = len(xs)
    sizes = [x.shape[0] for x in xs]
    coef = 1.0 / (2.0 * n_mod * h * h)
    logk = {(m, n): -coef * sq_dists(xs[m], xs[n]) for m in range(n_mod) for n in range(m + 1, n_mod)}
    # axes k.. are taken whole, axis k-1 in blocks, axes < k-1 one index at a time
    k = n_mod - 1
    while k > 1 and math.prod(sizes[k - 1 :]) <= block_elems:
        k -= 1
    blocked = k - 1
    tail = math.prod(sizes[k:])
    step = max(1, block_elems // tail)
    free = list(range(blocked, n_mod))
    pieces: list[Tensor] = []
    for fixed in itertools.product(*[range(sizes[m]) for m in range(blocked)]):
        base = xs[0].new_zeros(())
        for m in range(blocked):
            for n in range(m + 1, blocked):
                base = base + logk[(m, n)][fixed[m], fixed[n]]
        for start in range(0, sizes[blocked], step):
            sl = {blocked: slice(start, min(start + step, sizes[blocked]))}
            shape = [sl[blocked].stop - start] + sizes[k:]
            total = base.expand(shape)
            for m in range(n_mod):
                for n in range(m + 1, n_mod):
                    if n < blocked:
                        continue
                    mat = logk[(m, n)]
                    if m < blocked:  # m fixed, n free: a vector along n's axis
                        vec = mat[fixed[m], sl.get(n, slice(None))]
                        view = [1] * len(free)
                        view[n - blocked] = vec.shape[0]
                        total = total + vec.reshape(view)
                    else:  # both free
                        sub = mat[sl.get(m, slice(None)), :][:, sl.get(n, slice(None))]
                        view = [1] * len(free)
                        view[m - blocked], view[n - blocked] = sub.shape
                        total = total + sub.reshape(view)
            pieces.append(torch.logsumexp(total.reshape(-1), dim=0))
    return torch.logsumexp(torch.stack(pieces), dim=0) - sum(math.log(b) for b in sizes)


def _holder_exact(xs: list[Tensor], h: float, max_tuples: int) -> Tensor:
    n_mod = len(xs)
    sizes = [x.shape[0] for x in xs]
    if n_mod == 2:
        # O(B^2): exp(-S/(2h^2)) with S = |a1-a2|^2/2 is k_s with s = sqrt(2) h
        s = SQRT2 * h
        chunk = _row_chunk(max(sizes))
        l01 = log_mean_kernel(xs[0], xs[1], s, chunk_size=chunk)
        l00 = log_mean_kernel(xs[0], xs[0], s, chunk_size=chunk)
        l11 = log_mean_kernel(xs[1], xs[1], s, chunk_size=chunk)
        return -l01 + 0.5 * (l00 + l11)
    total = exact_tuple_count(sizes)
    if total > max_tuples:
        itemsize = xs[0].element_size()
        raise ValueError(
            f"estimator='exact' needs {total:.3g} M-tuples for M={n_mod} modalities with B={sizes} samples "
            f"(cost O(B^M)); as one tensor that is {total * itemsize / 2**30:.3g} GiB "
            f"({xs[0].dtype}), and it exceeds max_tuples={max_tuples:.3g}. Use estimator='resubstitution' "
            "(O(M^2 B^2)), fewer samples, or a larger max_tuples."
        )
    cross = _log_mean_tuple_kernel(xs, h)
    within = torch.stack([_log_mean_tuple_kernel([x] * n_mod, h) for x in xs])
    return -cross + within.mean()


# ----------------------------------------------------------------------------- resubstitution pieces


def _log_kde_at(points: Tensor, centers: Tensor, h: float, leave_one_out: bool) -> Tensor:
    """``log mean_j exp(-|p_i - c_j|^2 / (2 h^2))`` for every point (no normalising constant).

    ``leave_one_out``: ``points`` are ``centers`` and the j == i term is dropped (mean over B - 1).
    """
    n, b = points.shape[0], centers.shape[0]
    if leave_one_out and n != b:
        raise ValueError(f"leave-one-out needs points == centers, got {n} points and {b} centers")
    step = _row_chunk(b)
    out = []
    for start in range(0, n, step):
        block = log_kernel_matrix(points[start : start + step], centers, h)
        if leave_one_out:
            rows = torch.arange(block.shape[0], device=block.device)
            block = block.index_put((rows, rows + start), block.new_tensor(float("-inf")))
        out.append(torch.logsumexp(block, dim=1))
    return torch.cat(out) - math.log(b - 1 if leave_one_out else b)


def _holder_importance(
    points: list[Tensor],
    centers: list[Tensor],
    h: float,
    overlap_exponents: Sequence[float],
    entropy_weights: Sequence[float],
    gamma: float,
    leave_one_out: bool,
) -> Tensor:
    """Importance / resubstitution estimate of
    ``-log int prod_n p_n^(w_n) + sum_m c_m log int p_m^gamma`` (``sum w_n = gamma``, ``sum c_m = 1``)
    where ``p_n`` is the KDE on ``centers[n]`` and ``points[m]`` is a sample of ``p_m``.

    ``leave_one_out=True`` with ``points is centers`` is the resubstitution estimator of ``holder``;
    with fresh ``points`` drawn from the KDEs and ``leave_one_out=False`` it is a Monte-Carlo
    estimate of the KDEs' own divergence (used to check the exact estimator).
    """
    n_mod = len(centers)
    w = torch.tensor(list(overlap_exponents), dtype=centers[0].dtype, device=centers[0].device)[:, None]
    overlap, entropy = [], []
    for m in range(n_mod):
        ell = torch.stack(
            [_log_kde_at(points[m], centers[n], h, leave_one_out and n == m) for n in range(n_mod)]
        )  # (M, N_m): log p_n at the points of modality m
        log_q = torch.logsumexp(ell, dim=0) - math.log(n_mod)
        n_pts = points[m].shape[0]
        overlap.append(torch.logsumexp((w * ell).sum(0) - log_q, dim=0) - math.log(n_pts))
        entropy.append(torch.logsumexp((gamma - 1.0) * ell[m], dim=0) - math.log(n_pts))
    log_overlap = torch.logsumexp(torch.stack(overlap), dim=0) - math.log(n_mod)
    c = torch.tensor(list(entropy_weights), dtype=w.dtype, device=w.device)
    return -log_overlap + (c * torch.stack(entropy)).sum()


# ----------------------------------------------------------------------------- k-nearest-neighbour pieces


def _check_k(k: Any, sizes: Sequence[int], gamma: float, n_mod: int) -> int:
    smallest = min(int(b) for b in sizes)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got k={k!r}")
    if k >= smallest:
        raise ValueError(f"k must be smaller than the smallest sample size ({smallest}, the own sample "
                         f"is used leave-one-out), got k={k!r}")
    if k <= gamma - 1.0:
        raise ValueError(f"k must be > gamma - 1 = {gamma - 1.0:g} for the kNN estimate of int p^gamma "
                         f"(Gamma(k + 1 - gamma) must be finite), got k={k!r}")
    if k <= gamma / n_mod:
        raise ValueError(f"k must be > gamma / M = {gamma / n_mod:g} for the kNN cross term, got k={k!r}")
    return k


def _log_knn_volume(points: Tensor, centers: Tensor, k: int, leave_one_out: bool) -> Tensor:
    """``log u(x) = log(N V_d r_k(x)^d)`` for every row x of ``points``: r_k the distance to the k-th
    nearest row of ``centers``; ``leave_one_out`` (``points`` are ``centers``): x itself is excluded and
    ``N = B - 1``, else ``N = B``. Row-chunked (memory ~``_ROW_BLOCK_ELEMS``); squared distances are
    clamped at ``_KNN_MIN_SQ_DIST``.
    """
    n, b = points.shape[0], centers.shape[0]
    d = points.shape[1]
    if leave_one_out and n != b:
        raise ValueError(f"leave-one-out needs points == centers, got {n} points and {b} centers")
    step = _row_chunk(b)
    out = []
    for start in range(0, n, step):
        block = sq_dists(points[start : start + step], centers)
        if leave_one_out:
            rows = torch.arange(block.shape[0], device=block.device)
            block = block.index_put((rows, rows + start), block.new_tensor(float("inf")))
        kth = torch.topk(block, k, dim=1, largest=False, sorted=True).values[:, k - 1]
        out.append(kth.clamp_min(_KNN_MIN_SQ_DIST))
    r2 = torch.cat(out)
    log_vd = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1.0)
    n_eff = b - 1 if leave_one_out else b
    return math.log(n_eff) + log_vd + 0.5 * d * torch.log(r2)


def _log_power_correction(k: int, a: float) -> float:
    """``log(Gamma(k) / Gamma(k - a))``: ``u^(-a) Gamma(k)/Gamma(k-a)`` estimates ``p^a`` (needs a < k)."""
    return math.lgamma(k) - math.lgamma(k - a)


def _holder_knn(xs: list[Tensor], gamma: float, k: int, corrected: bool = True) -> Tensor:
    """The ``estimator="knn"`` value of :func:`holder` (module docstring); ``corrected=False`` drops the
    Gamma-function factors (the plain plug-in ``p_hat^a``, ``p_hat = k / u``; used by the tests)."""
    n_mod = len(xs)
    w = gamma / n_mod
    overlap, entropy = [], []
    for m in range(n_mod):
        lu = [_log_knn_volume(xs[m], xs[n], k, n == m) for n in range(n_mod)]
        n_pts = xs[m].shape[0]
        expo = [w - 1.0 if n == m else w for n in range(n_mod)]
        if corrected:
            c_over = sum(_log_power_correction(k, a) for a in expo)
            c_ent = _log_power_correction(k, gamma - 1.0)
        else:  # p_hat^a = (k / u)^a
            c_over = sum(a * math.log(k) for a in expo)
            c_ent = (gamma - 1.0) * math.log(k)
        terms = sum(-a * lu[n] for n, a in enumerate(expo) if a != 0.0)
        if not torch.is_tensor(terms):  # every exponent 0 (cannot happen for M >= 2, kept for safety)
            terms = lu[m].new_zeros(n_pts)
        overlap.append(torch.logsumexp(terms, dim=0) - math.log(n_pts) + c_over)
        entropy.append(torch.logsumexp((1.0 - gamma) * lu[m], dim=0) - math.log(n_pts) + c_ent)
    log_overlap = torch.logsumexp(torch.stack(overlap), dim=0) - math.log(n_mod)
    return -log_overlap + torch.stack(entropy).mean()


# ----------------------------------------------------------------------------- public estimators


def holder(
    xs: Embeddings,
    gamma: float | None = None,
    bandwidth: float | str = "median",
    estimator: str = "resubstitution",
    *,
    max_tuples: int = DEFAULT_MAX_TUPLES,
    k: int = 5,
) -> Tensor:
    """Global Hölder divergence of M distributions (gamma > 1, default gamma = M):

    ``D_H(p_1..p_M) = -log int prod_m p_m^(gamma/M) + (1/M) sum_m log int p_m^gamma``.

    Args:
        xs: M >= 2 tensors of shape (B_m, d) (sample counts may differ) or one (M, B, d) tensor.
        gamma: power, > 1; defaults to M (the generalised Cauchy-Schwarz divergence).
        bandwidth: the KDE bandwidth ``h`` (LMK width of cross terms ``s = sqrt(2) h``), or
            ``"median"`` (``h = median pairwise distance / sqrt(2)``).
        estimator: ``"exact"`` (closed-form D_H of the Gaussian KDEs, gamma = M only, cost
            O(prod B_m + sum B_m^M), refused above ``max_tuples``) or ``"resubstitution"``
            (leave-one-out KDE plug-in for ``int p^gamma = E_p[p^(gamma-1)]`` and mixture importance
            sampling for ``int prod p^(gamma/M) = E_q[prod p^(gamma/M) / q]``, ``q = mean_m p_m``;
            any gamma > 1, cost O(M^2 B^2), row-chunked), or ``"knn"`` (k-nearest-neighbour
            densities with the Leonenko-Pronzato-Savani / Poczos-Schneider bias corrections;
            ``bandwidth`` is ignored). See the module docstring for all three.
        k: the neighbour order of ``estimator="knn"`` (ignored otherwise): an int >= 1, smaller
            than the smallest B_m, > gamma - 1 and > gamma / M (default 5; its variance is finite only
            for k > 2 (gamma - 1)).

    Returns a differentiable 0-dim tensor on the inputs' device (``"knn"``: differentiable only
    through ``torch.topk``). Source: Nielsen, Sun & Marchand-Maillet, *Entropy* 2017 (Hölder
    divergences); ``docs/method.md`` (global form).
    """
    zs = _prepare(xs)
    n_mod = len(zs)
    g = float(n_mod) if gamma is None else _check_gamma(gamma)
    if estimator == "knn":
        kk = _check_k(k, [z.shape[0] for z in zs], g, n_mod)
        return _holder_knn(zs, g, kk)
    if estimator not in ("exact", "resubstitution"):
        raise ValueError(f"estimator must be 'exact', 'resubstitution' or 'knn', got {estimator!r}")
    h = kde_bandwidth(bandwidth, *zs)
    if estimator == "exact":
        if abs(g - n_mod) > 1e-12:
            raise ValueError(f"estimator='exact' needs gamma == M={n_mod}, got gamma={gamma!r}")
        return _holder_exact(zs, h, int(max_tuples))
    return _holder_importance(zs, zs, h, [g / n_mod] * n_mod, [1.0 / n_mod] * n_mod, g, True)


def holder_pair(
    x: Tensor,
    y: Tensor,
    alpha: float = 2.0,
    gamma: float = 2.0,
    bandwidth: float | str = "median",
    estimator: str = "auto",
) -> Tensor:
    """Pairwise Hölder divergence (Nielsen, Sun & Marchand-Maillet, *Entropy* 2017), 1/alpha + 1/beta = 1:

    ``D(p:q) = -log int p^(gamma/alpha) q^(gamma/beta)
    + (1/alpha) log int p^gamma + (1/beta) log int q^gamma``.

    ``alpha = beta = gamma = 2`` gives ``D_CS(p, q) / 2``. ``bandwidth`` is the KDE's ``h`` (LMK
    width ``sqrt(2) h``; ``"median"``: ``h = median distance / sqrt(2)``). ``estimator``:
    ``"exact"`` (only alpha = gamma = 2: ``-LMK_s(X,Y) + (LMK_s(X,X) + LMK_s(Y,Y))/2``, the KDEs'
    own value), ``"resubstitution"`` (the estimator of :func:`holder` with overlap exponents
    ``(gamma/alpha, gamma/beta)`` and entropy weights ``(1/alpha, 1/beta)``), or ``"auto"`` (exact
    when possible). Gaussian closed form with equal variance s^2:
    ``gamma/(alpha beta) |mu_p - mu_q|^2/(2 s^2)``.
    """
    x, y = _prepare([x, y], name="(x, y)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) \
            or alpha <= 1:
        raise ValueError(f"alpha must be a finite number > 1 (beta = alpha/(alpha-1)), got {alpha!r}")
    g = _check_gamma(gamma)
    if estimator not in ("auto", "exact", "resubstitution"):
        raise ValueError(f"estimator must be 'auto', 'exact' or 'resubstitution', got {estimator!r}")
    cs_case = float(alpha) == 2.0 and g == 2.0
    if estimator == "exact" and not cs_case:
        raise ValueError(f"estimator='exact' needs alpha == gamma == 2, got alpha={alpha!r}, gamma={gamma!r}")
    h = kde_bandwidth(bandwidth, x, y)
    if cs_case and estimator in ("auto", "exact"):
        return _holder_exact([x, y], h, DEFAULT_MAX_TUPLES)
    a = float(alpha)
    b = a / (a - 1.0)
    return _holder_importance([x, y], [x, y], h, [g / a, g / b], [1.0 / a, 1.0 / b], g, True)


def gaussian_holder_closed_form(mus: Any, sigma2: float, gamma: float) -> float:
    """Closed form for isotropic Gaussians ``p_m = N(mu_m, s^2 I)`` (``sigma2 = s^2``):

    ``D_H = gamma / (2 M s^2) * sum_m |mu_m - mean(mu)|^2``.

    Derivation: ``int N(mu, s^2)^gamma`` and ``int prod_m N(mu_m, s^2)^(gamma/M)`` are Gaussian
    integrals; with ``sum_m |x - mu_m|^2 = M |x - mubar|^2 + sum_m |mu_m - mubar|^2`` all factors
    except ``exp(-gamma/(2 M s^2) sum_m |mu_m - mubar|^2)`` cancel. For a Gaussian-KDE plug-in
    with bandwidth h pass ``sigma2 = s^2 + h^2``.
    """
    mu = torch.as_tensor(mus, dtype=torch.float64)
    if mu.dim() != 2 or mu.shape[0] < 2:
        raise ValueError(f"mus must have shape (M >= 2, d), got {tuple(mu.shape)}")
    if not torch.isfinite(mu).all():
        raise ValueError("mus contains non-finite values")
    if isinstance(sigma2, bool) or not math.isfinite(float(sigma2)) or float(sigma2) <= 0:
        raise ValueError(f"sigma2 must be a finite positive number, got {sigma2!r}")
    if isinstance(gamma, bool) or not math.isfinite(float(gamma)) or float(gamma) <= 0:
        raise ValueError(f"gamma must be a finite positive number, got {gamma!r}")
    n_mod = mu.shape[0]
    spread = float((mu - mu.mean(0)).pow(2).sum())
    return float(gamma) / (2.0 * n_mod * float(sigma2)) * spread


def proxy_bound(
    xs: Embeddings,
    bandwidth: float | str,
    anchor: int = 0,
    *,
    estimator: str = "auto",
    max_tuples: int = DEFAULT_MAX_TUPLES,
) -> dict[str, Any]:
    """The UniAlign proxy as an upper bound on the KDE global Hölder divergence (gamma = M).

    Statement. For paired samples ``Z[m] = (z_1^m .. z_B^m)`` (equal B) and Gaussian KDEs of bandwidth h,

        D_H(p_hat_1..p_hat_M) <= (M-1) log B + (M-1)/(2 h^2) * L_align_anchor
                                 + (1/M) sum_m U_{sqrt(2) h}(Z[m])

    with ``L_align_anchor = 1/(B (M-1)) sum_i sum_{n != a} |z_i^a - z_i^n|^2`` and
    ``U_s(Z) = LMK_s(Z, Z)`` *diagonal included* (``exp U_incl = ((B-1)/B) exp U_offdiag + 1/B``).
    So the constant is ``(M-1) log B``.

    Derivation (gamma = M, so every exponent gamma/M is 1). With ``K = (2 pi h^2)^(-(M-1)d/2) M^(-d/2)``
    and ``S(a_1..a_M) = sum_m |a_m - abar|^2``:

    1. ``int prod_m p_hat_m = K B^-M sum_{tuples} exp(-S/(2h^2)) >= K B^-M sum_i exp(-S_i/(2h^2))``
       keeping only the B paired tuples ``(z_i^1..z_i^M)`` (all terms are positive).
    2. Jensen: ``log mean_i exp(-S_i/(2h^2)) >= -mean_i S_i / (2h^2)``.
    3. The mean minimises the sum of squared distances, so ``S_i <= sum_m |z_i^m - z_i^a|^2``, hence
       ``mean_i S_i <= (M-1) L_align_anchor``. Together:
       ``-log int prod p_hat_m <= -log K + (M-1) log B + (M-1)/(2h^2) L_align_anchor``.
    4. Within a modality, ``S(a_1..a_M) >= |a_1 - a_2|^2 / 2`` (drop all but two terms; the best
       common centre of two points is their midpoint), so
       ``int p_hat_m^M <= K B^-M B^(M-2) sum_ij exp(-|z_i - z_j|^2/(4h^2)) = K exp(U_{sqrt(2) h}(Z[m]))``.
    5. Adding ``(1/M) sum_m log int p_hat_m^M <= log K + (1/M) sum_m U`` cancels K.

    The bound is guaranteed for the exact KDE divergence. ``estimator="auto"`` uses it when the
    tuple count is at most ``max_tuples`` and otherwise the resubstitution estimate, for which the
    inequality is not guaranteed (``"guaranteed": False`` in the result).

    Args:
        xs: M >= 2 tensors (B, d), paired (equal B).
        bandwidth: the KDE's h (``"median"``: median distance / sqrt(2)); the uniformity uses
            LMK width ``s = sqrt(2) h``.
        anchor: the anchor modality a of ``L_align_anchor``.

    Returns floats ``divergence, constant, alignment (the (M-1)/(2h^2) L_align_anchor part),
    uniformity (the (1/M) sum_m U part), bound, slack (bound - divergence), L_align_anchor, h``,
    ints ``M, B``, ``estimator`` (str) and ``guaranteed`` (bool).
    """
    zs = _prepare(xs)
    n_mod = len(zs)
    sizes = {x.shape[0] for x in zs}
    if len(sizes) != 1:
        raise ValueError(f"proxy_bound needs paired samples (equal B), got B={[x.shape[0] for x in zs]}")
    check_anchor(anchor, n_mod)
    if estimator not in ("auto", "exact", "resubstitution"):
        raise ValueError(f"estimator must be 'auto', 'exact' or 'resubstitution', got {estimator!r}")
    n = zs[0].shape[0]
    h = kde_bandwidth(bandwidth, *zs)
    with torch.no_grad():
        if estimator == "auto":
            small = n_mod == 2 or exact_tuple_count([n] * n_mod) <= max_tuples
            estimator = "exact" if small else "resubstitution"
        div = holder(zs, float(n_mod), h, estimator, max_tuples=max_tuples)
        l_align = sum(float((zs[anchor] - zs[m]).pow(2).sum(-1).mean()) for m in range(n_mod) if m != anchor)
        l_align /= n_mod - 1
        s = SQRT2 * h
        unif = sum(float(log_mean_kernel(z, z, s, chunk_size=_row_chunk(n))) for z in zs) / n_mod
    constant = (n_mod - 1) * math.log(n)
    align_part = (n_mod - 1) / (2.0 * h * h) * l_align
    bound = constant + align_part + unif
    return {
        "divergence": float(div),
        "constant": constant,
        "alignment": align_part,
        "uniformity": unif,
        "bound": bound,
        "slack": bound - float(div),
        "L_align_anchor": l_align,
        "h": h,
        "M": n_mod,
        "B": n,
        "estimator": estimator,
        "guaranteed": estimator == "exact",
    }


def holder_null(
    pools: Sequence[Tensor],
    n_mod: int,
    size: int,
    bandwidth: float,
    *,
    draws: int = 8,
    seed: int = 0,
    gamma: float | None = None,
) -> dict[str, Any]:
    """The same-distribution null of :func:`holder` (resubstitution): its values when the true
    divergence is 0.

    Draw ``t`` (``t = 0 .. draws - 1``) takes pool ``t mod len(pools)`` (the rows of one modality),
    splits a random permutation of it into ``n_mod`` disjoint samples of ``size`` rows and estimates
    ``holder`` on them at the fixed KDE bandwidth ``bandwidth`` (a number: the h of the estimate the
    null is compared with), power ``gamma`` (default ``n_mod``). ``size`` is reduced to
    ``len(pool) // n_mod`` where a pool is too small (returned as ``size``).

    Returns ``values`` (list), ``mean``, ``sd`` (ddof 1), ``q95``, ``n`` (draws) and ``size``.
    """
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not math.isfinite(bandwidth) \
            or bandwidth <= 0:
        raise ValueError(f"bandwidth must be a fixed positive number (the KDE's h), got {bandwidth!r}")
    if isinstance(n_mod, bool) or not isinstance(n_mod, int) or n_mod < 2:
        raise ValueError(f"n_mod must be an int >= 2, got {n_mod!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
        raise ValueError(f"draws must be an int >= 2, got {draws!r}")
    pools = _prepare(list(pools), name="pools", min_modalities=1)
    smallest = min(p.shape[0] for p in pools) // n_mod
    size = min(int(size), smallest)
    if size < 2:
        raise ValueError(f"the null needs {n_mod} disjoint samples of >= 2 rows, but the smallest pool has "
                         f"{min(p.shape[0] for p in pools)} rows")
    gen = torch.Generator().manual_seed(int(seed))
    values = []
    with torch.no_grad():
        for t in range(draws):
            pool = pools[t % len(pools)]
            perm = torch.randperm(pool.shape[0], generator=gen)[: n_mod * size].to(pool.device)
            parts = list(pool[perm].reshape(n_mod, size, -1))
            values.append(float(holder(parts, gamma, float(bandwidth), "resubstitution")))
    v = torch.tensor(values, dtype=torch.float64)
    return {"values": values, "mean": float(v.mean()), "sd": float(v.std(unbiased=True)),
            "q95": float(torch.quantile(v, 0.95)), "n": draws, "size": size}
