"""Bugs that change a published number while every older test still passed, each pinned here by an
independent expectation (a hand computation, a closed form, or an uninterrupted reference run).

Each test names the one-line bug it was written against (docs/mutation.md lists them with the mutation
scores of the modules they live in):

* claim 7's interval computed on raw correlations instead of Fisher z;
* method and baseline rows paired by row position instead of by (dataset, M, seed, split seed);
* the proxy bound's uniformity term computed with the wrong kernel width;
* retrieval query and gallery swapped;
* ``chi_net`` averaged over the wrong axis;
* the gap metrics' ``*_anchor`` keys ignoring the anchor;
* torch's global generator not restored on resume (symile with ``negatives="n"`` draws from it);
* the data split ignoring its seed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from harness.experiment import metrics as hm
from harness.instruments import conflicts, gap
from harness.instruments.divergence import proxy_bound
from harness.report import stats as st

F64 = torch.float64
SQ2 = math.sqrt(2.0)


def basis(d: int, *idx: int) -> torch.Tensor:
    """Rows e_idx[0], e_idx[1], ... of the standard basis of R^d (float64)."""
    return torch.eye(d, dtype=F64)[list(idx)]


def at_angles(*degrees: float) -> torch.Tensor:
    """Unit vectors of R^2 at the given angles (float64)."""
    r = torch.deg2rad(torch.tensor(degrees, dtype=F64))
    return torch.stack([r.cos(), r.sin()], dim=1)


# ----------------------------------------------------------------------------- gap: every key, non-trivial anchor


# Three modalities of B = 4 orthonormal basis rows. True-pair cosines per row (1 where the rows agree):
#   (0, 1): 1 1 0 0 -> 1/2     (0, 2): 0 1 1 1 -> 3/4     (1, 2): 0 1 0 0 -> 1/4
# so every pair statistic differs between all pairs, anchor 0 and anchor 1.
Z_GAP = [basis(8, 0, 1, 2, 3), basis(8, 0, 1, 4, 5), basis(8, 6, 1, 2, 3)]
COS = {(0, 1): 0.5, (0, 2): 0.75, (1, 2): 0.25}
# mean_i |z_i^m - z_i^n| with |z - z'| = sqrt(2) for orthogonal rows, 0 for equal ones
DIST = {(0, 1): SQ2 / 2, (0, 2): SQ2 / 4, (1, 2): 3 * SQ2 / 4}
# centroids c_m = (sum of the four rows) / 4: |c0 - c1| = |e2 + e3 - e4 - e5| / 4, etc.
CENT = {(0, 1): 0.5, (0, 2): SQ2 / 4, (1, 2): math.sqrt(6) / 4}
# every modality: |c|^2 = 1/4, mean |z_i - c|^2 = 1 - 2/4 + 1/4 = 3/4, so r = sqrt(3)/2
SPREAD = math.sqrt(3) / 2


def _pairs_and_anchor(table: dict, anchor: int) -> tuple[float, float]:
    pairs = float(np.mean(list(table.values())))
    with_anchor = float(np.mean([v for (m, n), v in table.items() if anchor in (m, n)]))
    return pairs, with_anchor


@pytest.mark.parametrize("anchor", [1, 2])
def test_gap_pair_metrics_by_hand_with_a_non_zero_anchor(anchor):
    out = gap.modality_gap(Z_GAP, anchor=anchor)
    expected = {
        "true_pair_cosine": COS,
        "alignment": {k: 2.0 - 2.0 * c for k, c in COS.items()},  # |a - b|^2 = 2 - 2 cos for unit rows
        "mean_paired_distance": DIST,
        "centroid_distance": CENT,
        "relative_gap": {k: v / SPREAD for k, v in CENT.items()},
    }
    for name, table in expected.items():
        pairs, with_anchor = _pairs_and_anchor(table, anchor)
        assert out[f"{name}_pairs"] == pytest.approx(pairs, abs=1e-12), name
        assert out[f"{name}_anchor"] == pytest.approx(with_anchor, abs=1e-12), name
        # the case is built so that the anchor's value differs from the all-pairs and anchor-0 values
        _, with_zero = _pairs_and_anchor(table, 0)
        assert abs(with_anchor - pairs) > 0.05 or abs(with_anchor - with_zero) > 0.05, name
        # the single metric functions agree with the dict
        fn = getattr(gap, name)
        assert fn(Z_GAP, anchor=anchor) == pytest.approx(with_anchor, abs=1e-12), name
        assert fn(Z_GAP) == pytest.approx(pairs, abs=1e-12), name


def test_gap_anchor_keys_differ_from_pair_keys_for_anchor_1():
    out = gap.modality_gap(Z_GAP, anchor=1)
    # anchor 1: pairs (1, 0), (1, 2); cosine (1/2 + 1/4)/2 = 3/8 against 1/2 over all pairs and 5/8 for anchor 0
    assert out["true_pair_cosine_anchor"] == pytest.approx(0.375)
    assert out["true_pair_cosine_pairs"] == pytest.approx(0.5)
    assert out["alignment_anchor"] == pytest.approx(1.25)
    assert out["mean_paired_distance_anchor"] == pytest.approx(5 * SQ2 / 8)
    assert out["centroid_distance_anchor"] == pytest.approx((0.5 + math.sqrt(6) / 4) / 2)


# Per-modality statistics in closed form (t = 2, so the kernel of the uniformity is exp(-2 |zi - zj|^2)
# and orthogonal rows contribute exp(-4), equal rows exp(0)):
#   [e0 e1 e2 e3]: singular values 1, 1, 1, 1 -> effective rank 4; uniformity log exp(-4) = -4
#   [e0 e0 e1 e1]: singular values sqrt2, sqrt2 -> rank 2; 4 of 12 ordered pairs equal -> log((1 + 2e^-4)/3)
#   [e0 e0 e0 e1]: singular values sqrt3, 1 -> rank exp(H(p)), p = (sqrt3, 1)/(sqrt3 + 1);
#                  6 of 12 ordered pairs equal -> log((1 + e^-4)/2)
Z_RANK = [basis(4, 0, 1, 2, 3), basis(4, 0, 0, 1, 1), basis(4, 0, 0, 0, 1)]


def _entropy_rank(sv):
    p = np.asarray(sv, dtype=float) / np.sum(sv)
    return float(np.exp(-(p * np.log(p)).sum()))


def test_gap_per_modality_uniformity_and_effective_rank_in_closed_form():
    e4 = math.exp(-4.0)
    unif = [-4.0, math.log((1 + 2 * e4) / 3), math.log((1 + e4) / 2)]
    rank = [4.0, 2.0, _entropy_rank([math.sqrt(3), 1.0])]
    out = gap.modality_gap(Z_RANK, anchor=2)
    for m in range(3):
        assert out[f"uniformity_m{m}"] == pytest.approx(unif[m], abs=1e-9), m
        assert out[f"effective_rank_m{m}"] == pytest.approx(rank[m], abs=1e-9), m
        assert gap.uniformity(Z_RANK[m]) == pytest.approx(unif[m], abs=1e-9)
        assert gap.effective_rank(Z_RANK[m]) == pytest.approx(rank[m], abs=1e-9)
    assert out["uniformity_mean"] == pytest.approx(np.mean(unif), abs=1e-9)
    assert out["effective_rank_mean"] == pytest.approx(np.mean(rank), abs=1e-9)
    assert out["separability_chance"] == pytest.approx(1 / 3)
    # uniformity with another t: orthonormal rows give -2t
    assert gap.uniformity(Z_RANK[0], t=0.5) == pytest.approx(-1.0, abs=1e-9)
    # centred effective rank: [e0 e1 e2 e3] minus its centroid has 3 equal singular values
    assert gap.effective_rank(basis(6, 0, 1, 2, 3), center=True) == pytest.approx(3.0, abs=1e-9)


def test_gap_linear_separability_at_its_two_ends():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(60, 6, generator=gen, dtype=F64)
    # identical modalities: every held-out row is predicted as one modality for all M copies -> 1/M
    same = gap.modality_gap([base, base.clone(), base.clone()], anchor=1)
    assert same["linear_separability"] == pytest.approx(1 / 3)
    # modalities in disjoint cones around orthogonal directions: perfectly separable
    far = [F.normalize(basis(6, m).expand(60, 6) * 5.0 + 0.3 * torch.randn(60, 6, generator=gen, dtype=F64), dim=-1)
           for m in range(3)]
    assert gap.modality_gap(far, anchor=2)["linear_separability"] == pytest.approx(1.0)


def test_gap_reports_every_documented_key():
    out = gap.modality_gap(Z_GAP, anchor=1)
    pair = ["centroid_distance", "mean_paired_distance", "relative_gap", "true_pair_cosine", "alignment"]
    expected = {f"{k}_{t}" for k in pair for t in ("pairs", "anchor")}
    expected |= {"linear_separability", "separability_chance", "uniformity_mean", "effective_rank_mean",
                 "within_cosine_mean"}
    expected |= {f"{k}_m{m}" for k in ("uniformity", "effective_rank", "within_cosine") for m in range(3)}
    assert set(out) == expected


def test_within_cosine_is_the_mean_off_diagonal_cosine():
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(37, 5, generator=gen, dtype=F64) * torch.linspace(0.5, 3.0, 37, dtype=F64)[:, None]
    unit = F.normalize(z, dim=-1)
    naive = sum(float(unit[i] @ unit[j]) for i in range(37) for j in range(37) if i != j) / (37 * 36)
    assert gap.within_cosine(z) == pytest.approx(naive, abs=1e-12)  # rows are normalised first
    assert gap.within_cosine(torch.ones(8, 4, dtype=F64)) == pytest.approx(1.0)  # full collapse
    pm = torch.cat([torch.eye(3, dtype=F64), -torch.eye(3, dtype=F64)])  # +-e_k: mean cosine -1/5
    assert gap.within_cosine(pm) == pytest.approx(-1 / 5)
    out = gap.modality_gap([z, torch.randn(37, 5, generator=gen, dtype=F64)])
    assert out["within_cosine_mean"] == pytest.approx((out["within_cosine_m0"] + out["within_cosine_m1"]) / 2)
    with pytest.raises(ValueError, match="at least 2 samples"):
        gap.within_cosine(z[:1])


def test_gap_unpaired_modalities_give_nan_pair_metrics_and_finite_centroid_metrics():
    zs = [basis(8, 0, 1, 2), basis(8, 0, 1, 4, 5)]
    out = gap.modality_gap(zs, anchor=1)
    for k in ("mean_paired_distance", "true_pair_cosine", "alignment"):
        assert math.isnan(out[f"{k}_pairs"]) and math.isnan(out[f"{k}_anchor"])
    # c0 = (e0 + e1 + e2)/3, c1 = (e0 + e1 + e4 + e5)/4
    c0 = (basis(8, 0) + basis(8, 1) + basis(8, 2)) / 3
    c1 = (basis(8, 0) + basis(8, 1) + basis(8, 4) + basis(8, 5)) / 4
    assert out["centroid_distance_anchor"] == pytest.approx(float((c0 - c1).norm()), abs=1e-12)


def _ref_gap(zs: list[np.ndarray], anchor: int | None, t: float = 2.0) -> dict[str, float]:
    """numpy float64 reference of every modality_gap key but the separability, on the rows as given."""
    M = len(zs)
    pairs = [(m, n) for m in range(M) for n in range(m + 1, M)] if anchor is None else \
        [(anchor, n) for n in range(M) if n != anchor]
    c = [z.mean(0) for z in zs]
    r = [math.sqrt(((z - z.mean(0)) ** 2).sum(1).mean()) for z in zs]
    cos = lambda x, y: float(((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)).mean())
    fns = {
        "centroid_distance": lambda m, n: float(np.linalg.norm(c[m] - c[n])),
        "relative_gap": lambda m, n: float(np.linalg.norm(c[m] - c[n])) / ((r[m] + r[n]) / 2),
        "mean_paired_distance": lambda m, n: float(np.linalg.norm(zs[m] - zs[n], axis=1).mean()),
        "true_pair_cosine": lambda m, n: cos(zs[m], zs[n]),
        "alignment": lambda m, n: float(((zs[m] - zs[n]) ** 2).sum(1).mean()),
    }
    return {k: float(np.mean([f(m, n) for m, n in pairs])) for k, f in fns.items()}


def _ref_uniformity(z: np.ndarray, t: float = 2.0) -> float:
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    off = ~np.eye(len(z), dtype=bool)
    return float(np.log(np.exp(-t * d2[off]).mean()))


def _ref_rank(z: np.ndarray) -> float:
    return _entropy_rank(np.linalg.svd(z, compute_uv=False))


def _rows_of_unequal_norm(seed=4, M=3, B=6, d=5):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, d, generator=gen, dtype=F64) * torch.linspace(0.3, 3.0, B, dtype=F64)[:, None]
            for _ in range(M)]


@pytest.mark.parametrize("normalize", [True, False])
def test_gap_normalisation_switch_on_rows_of_unequal_norm(normalize):
    zs = _rows_of_unequal_norm()
    seen = [F.normalize(z, dim=-1) if normalize else z for z in zs]
    arrays = [z.numpy() for z in seen]
    out = gap.modality_gap(zs, anchor=2, normalize=normalize)
    for tag, a in (("pairs", None), ("anchor", 2)):
        for k, v in _ref_gap(arrays, a).items():
            assert out[f"{k}_{tag}"] == pytest.approx(v, rel=1e-9), (k, tag)
    for m in range(3):
        assert out[f"uniformity_m{m}"] == pytest.approx(_ref_uniformity(arrays[m]), rel=1e-9)
        assert out[f"effective_rank_m{m}"] == pytest.approx(_ref_rank(arrays[m]), rel=1e-9)
    # the single functions: their default is normalize=True
    for name in ("centroid_distance", "mean_paired_distance", "relative_gap", "alignment"):
        fn = getattr(gap, name)
        ref = _ref_gap(arrays, 1)[name]
        assert fn(zs, anchor=1, normalize=normalize) == pytest.approx(ref, rel=1e-9), name
        if normalize:
            assert fn(zs, anchor=1) == pytest.approx(ref, rel=1e-9), name
    assert gap.true_pair_cosine(zs, anchor=1) == pytest.approx(_ref_gap(arrays, 1)["true_pair_cosine"], rel=1e-9)
    assert gap.uniformity(zs[0], normalize=normalize) == pytest.approx(_ref_uniformity(arrays[0]), rel=1e-9)
    assert gap.uniformity(zs[0], t=0.7, normalize=normalize) == pytest.approx(_ref_uniformity(arrays[0], 0.7),
                                                                               rel=1e-9)
    assert gap.effective_rank(zs[0], normalize=normalize) == pytest.approx(_ref_rank(arrays[0]), rel=1e-9)
    if normalize:
        assert gap.uniformity(zs[0]) == pytest.approx(_ref_uniformity(arrays[0]), rel=1e-9)
        assert gap.effective_rank(zs[0]) == pytest.approx(_ref_rank(arrays[0]), rel=1e-9)
        assert gap.modality_gap(zs, anchor=2) == pytest.approx(out, rel=1e-12)


def test_gap_default_anchor_is_zero_and_bad_anchors_are_refused():
    out = gap.modality_gap(Z_GAP)
    assert out["true_pair_cosine_anchor"] == pytest.approx(0.625)  # (1/2 + 3/4) / 2
    for bad in (3, -1):
        with pytest.raises(ValueError, match="anchor must be an int"):
            gap.modality_gap(Z_GAP, anchor=bad)


def test_gap_paired_metrics_refuse_unequal_batch_sizes():
    zs = [basis(8, 0, 1, 2), basis(8, 0, 1, 4, 5)]
    for fn in (gap.mean_paired_distance, gap.true_pair_cosine, gap.alignment):
        with pytest.raises(ValueError, match="paired metrics need equal B"):
            fn(zs)


def test_gap_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"t must be > 0, got 0"):
        gap.uniformity(Z_RANK[0], t=0.0)
    with pytest.raises(ValueError, match=r"z must have shape \(B, d\), got \(1, 4, 4\)"):
        gap.uniformity(Z_RANK[0][None])
    with pytest.raises(ValueError, match=r"z must have shape \(B, d\), got \(1, 4, 4\)"):
        gap.effective_rank(Z_RANK[0][None])
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got"):
            gap.linear_separability(Z_GAP, test_fraction=bad)
    with pytest.raises(ValueError, match=r"test_fraction=0.9 leaves no training sample in zs\[0\]"):
        gap.linear_separability([basis(4, 0, 1), basis(4, 2, 3)], test_fraction=0.9)


def test_effective_rank_of_zero_and_of_small_rows():
    zero = torch.zeros(3, 4, dtype=F64)
    assert gap.effective_rank(zero) == 0.0 and gap.effective_rank(zero, normalize=False) == 0.0
    # singular values 0.1, 0.1 (sum 0.2 < 1): still rank 2
    assert gap.effective_rank(0.1 * basis(4, 0, 1), normalize=False) == pytest.approx(2.0)
    # centring a 4 x 6 matrix of four basis rows leaves three equal singular values
    assert gap.effective_rank(basis(6, 0, 1, 2, 3), center=True) == pytest.approx(3.0, abs=1e-9)


def _spy_logistic(monkeypatch):
    import sklearn.linear_model as sk

    real = sk.LogisticRegression
    calls = []

    def factory(**kw):
        clf = real(**kw)
        rec = {"kw": kw}
        fit, predict = clf.fit, clf.predict

        def spy_fit(x, y):
            rec["train"] = (np.array(x), np.array(y))
            return fit(x, y)

        def spy_predict(x):
            rec["test"] = np.array(x)
            return predict(x)

        clf.fit, clf.predict = spy_fit, spy_predict
        calls.append(rec)
        return clf

    monkeypatch.setattr(sk, "LogisticRegression", factory)
    return calls


def test_linear_separability_protocol(monkeypatch):
    calls = _spy_logistic(monkeypatch)
    gen = torch.Generator().manual_seed(8)
    zs = [F.normalize(torch.randn(20, 4, generator=gen, dtype=F64), dim=-1) for _ in range(3)]
    gap.linear_separability(zs, seed=5)
    (rec,) = calls
    assert rec["kw"].get("C", 1.0) == 1.0 and rec["kw"]["max_iter"] == 1000
    # paired: the same 30 % of sample indices (6 of 20) are held out in every modality
    perm = np.random.default_rng(5).permutation(20)
    test, keep = np.sort(perm[:6]), np.sort(perm[6:])
    assert np.allclose(rec["test"], np.concatenate([z.numpy()[test] for z in zs]))
    assert np.allclose(rec["train"][0], np.concatenate([z.numpy()[keep] for z in zs]))
    assert rec["train"][1].tolist() == [0] * 14 + [1] * 14 + [2] * 14
    # the default seed is 0; too small a fraction still holds out one tuple
    calls.clear()
    gap.linear_separability(zs, test_fraction=0.01, max_iter=50)
    (rec,) = calls
    assert rec["kw"]["max_iter"] == 50
    first = np.random.default_rng(0).permutation(20)[:1]
    assert np.allclose(rec["test"], np.concatenate([z.numpy()[first] for z in zs]))
    # unpaired: each modality draws its own held-out rows, in modality order, from one generator
    calls.clear()
    gap.linear_separability([zs[0][:10], zs[1]], seed=2)
    (rec,) = calls
    rng = np.random.default_rng(2)
    t0, t1 = np.sort(rng.permutation(10)[:3]), np.sort(rng.permutation(20)[:6])
    assert np.allclose(rec["test"], np.concatenate([zs[0].numpy()[t0], zs[1].numpy()[t1]]))
    # a fraction that rounds to zero rows still holds out one row per modality
    calls.clear()
    gap.linear_separability([zs[0][:4], zs[1][:6]], test_fraction=0.05, seed=2)
    assert calls[0]["test"].shape[0] == 2


def test_modality_gap_separability_uses_its_seed():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(40, 5, generator=gen, dtype=F64)
    zs = [base + 0.8 * torch.randn(40, 5, generator=gen, dtype=F64) + 0.3 * m for m in range(3)]
    acc = [gap.linear_separability(zs, seed=s) for s in range(3)]
    assert len(set(acc)) == 3  # the split matters for these data
    assert gap.linear_separability(zs) == acc[0]
    assert gap.modality_gap(zs)["linear_separability"] == acc[0]
    assert gap.modality_gap(zs, seed=2)["linear_separability"] == acc[2]
    assert gap.modality_gap(zs, normalize=False, seed=1)["linear_separability"] == \
        gap.linear_separability(zs, seed=1, normalize=False)


# ----------------------------------------------------------------------------- conflicts: chi_net per sample


def _chi_net_reference(zs: list[np.ndarray], a: int, tau: float) -> np.ndarray:
    """1 - |mean_{n != a} u_n| per sample, u_n = normalise(z_i^n - sum_j softmax_j(<z_i^a, z_j^n>/tau) z_j^n)."""
    units = []
    for n in range(len(zs)):
        if n == a:
            continue
        logits = zs[a] @ zs[n].T / tau
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        net = zs[n] - p @ zs[n]
        units.append(net / np.linalg.norm(net, axis=1, keepdims=True))
    return 1.0 - np.linalg.norm(np.mean(units, axis=0), axis=1)


@pytest.mark.parametrize("anchor", [0, 2, None])
def test_chi_net_is_one_value_per_sample_averaged_over_modalities(anchor):
    gen = torch.Generator().manual_seed(11)
    M, B, d, tau = 4, 7, 5, 0.3
    zs = [F.normalize(torch.randn(B, d, generator=gen, dtype=F64), dim=-1) for _ in range(M)]
    out = conflicts.infonce_conflicts(zs, temperature=tau, anchor=anchor)
    arrays = [z.numpy() for z in zs]
    if anchor is None:
        ref = np.stack([_chi_net_reference(arrays, a, tau) for a in range(M)])
    else:
        ref = _chi_net_reference(arrays, anchor, tau)
    assert tuple(out["chi_net"].shape) == ref.shape
    assert np.allclose(out["chi_net"].numpy(), ref, atol=1e-10)
    assert out["summary"]["chi_net"]["mean"] == pytest.approx(float(ref.mean()), abs=1e-10)
    assert out["summary"]["chi_net"]["n"] == ref.size


def test_chi_and_chi_net_for_two_modalities_are_zero_per_sample():
    # M = 2: one pull has no competitor, so both are exactly 0 for every sample (B != M - 1 on purpose)
    gen = torch.Generator().manual_seed(2)
    zs = [F.normalize(torch.randn(5, 3, generator=gen, dtype=F64), dim=-1) for _ in range(2)]
    out = conflicts.infonce_conflicts(zs, temperature=0.5, anchor=1)
    for k in ("chi", "chi_net"):
        assert tuple(out[k].shape) == (5,)
        assert torch.allclose(out[k], torch.zeros(5, dtype=F64), atol=1e-12)


class _PairObjective(torch.nn.Module):
    """A hand-made objective with closed-form gradients: alignment ``sum_{n != 0} |z^0 - z^n|^2`` (summed
    over rows), uniformity ``<w, sum_i z_i^0>`` (uses modality 0 only, so the other gradients are unused)."""

    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, zs):
        from types import SimpleNamespace

        align = sum(((zs[0] - z) ** 2).sum() for z in zs[1:])
        unif = (zs[0] @ self.w).sum()
        return SimpleNamespace(loss=align + unif, terms={"align": align, "unif": unif},
                               roles={"align": "alignment", "unif": "uniformity"})


def _cos_np(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_gradient_conflicts_in_closed_form_without_tangent_projection():
    gen = torch.Generator().manual_seed(6)
    M, B, d = 3, 4, 5
    zs = [torch.randn(B, d, generator=gen, dtype=F64) * 2.0 for _ in range(M)]  # rows of any norm
    w = torch.randn(d, dtype=F64, generator=gen)
    obj = _PairObjective(w)
    z = [x.numpy() for x in zs]
    ga = np.stack([2 * (z[0] - z[1]) + 2 * (z[0] - z[2]), -2 * (z[0] - z[1]), -2 * (z[0] - z[2])])
    gu = np.stack([np.broadcast_to(w.numpy(), (B, d)), np.zeros((B, d)), np.zeros((B, d))])
    rg = conflicts.role_gradients(obj, zs, tangent=False)
    assert np.allclose(np.stack([g.numpy() for g in rg["alignment"]]), ga)
    assert np.allclose(np.stack([g.numpy() for g in rg["uniformity"]]), gu)

    r = conflicts.gradient_conflicts(obj, zs, anchor=0, tangent=False)
    assert r["anchor"] == 0 and r["M"] == M and r["B"] == B and r["missing_roles"] == []
    assert np.allclose(r["grad_norm_alignment"].numpy(), np.linalg.norm(ga, axis=-1))
    assert np.allclose(r["grad_norm_uniformity"].numpy(), np.linalg.norm(gu, axis=-1))
    cos0 = _cos_np(ga[0], gu[0])
    assert np.allclose(r["cos_align_unif"][0].numpy(), cos0)
    assert torch.isnan(r["cos_align_unif"][1:]).all()  # zero uniformity gradient: undefined
    assert np.allclose(r["angle_align_unif_deg"][0].numpy(), np.degrees(np.arccos(cos0)))
    # pulls: replacing z^n by z^0 removes exactly the pair's term, pull_n = 2 (z^0 - z^n)
    pulls = np.stack([2 * (z[0] - z[1]), 2 * (z[0] - z[2])])
    assert r["pull_modalities"] == [1, 2] and r["pull_pairs"] == [(1, 2)]
    assert np.allclose(r["pulls"].numpy(), pulls)
    pc = _cos_np(pulls[0], pulls[1])
    assert np.allclose(r["pull_cos"].numpy(), pc[None])
    assert np.allclose(r["pull_angle_deg"].numpy(), np.degrees(np.arccos(pc))[None])
    units = pulls / np.linalg.norm(pulls, axis=-1, keepdims=True)
    assert np.allclose(r["chi_grad"].numpy(), 1 - np.linalg.norm(units.mean(0), axis=-1))
    assert np.allclose(r["pull_additivity_residual"].numpy(), 0.0, atol=1e-12)
    summ = r["summary"]
    assert set(summ) == {"cos_align_unif_anchor", "angle_align_unif_deg_anchor", "cos_align_unif_all",
                         "pull_cos", "chi_grad", "pull_additivity_residual"}
    assert summ["cos_align_unif_anchor"]["mean"] == pytest.approx(cos0.mean())
    assert summ["angle_align_unif_deg_anchor"]["mean"] == pytest.approx(np.degrees(np.arccos(cos0)).mean())
    assert summ["cos_align_unif_all"]["n"] == B  # the NaN of modalities 1, 2 are dropped
    assert summ["pull_cos"]["mean"] == pytest.approx(pc.mean())
    assert summ["chi_grad"]["mean"] == pytest.approx(float(r["chi_grad"].mean()))
    assert summ["pull_additivity_residual"]["mean"] == pytest.approx(0.0, abs=1e-12)
    # anchor 2: one alignment term holds it, the other does not: pull of 1 is zero, of 0 is 2 (z^2 - z^0)
    r2 = conflicts.gradient_conflicts(obj, zs, anchor=2, tangent=False)
    assert r2["anchor"] == 2 and r2["pull_modalities"] == [0, 1]
    assert np.allclose(r2["pulls"][0].numpy(), -2 * (z[0] - z[2]))
    assert np.allclose(r2["pulls"][1].numpy(), 0.0)


class _TripleObjective(torch.nn.Module):
    """Coupled alignment ``sum_i <z_i^0, z_i^1 * z_i^2>`` (no uniformity term): not pairwise additive."""

    def forward(self, zs):
        from types import SimpleNamespace

        align = (zs[0] * zs[1] * zs[2]).sum()
        return SimpleNamespace(loss=align, terms={"align": align}, roles={"align": "alignment"})


def test_gradient_conflicts_additivity_residual_of_a_coupled_term_in_closed_form():
    gen = torch.Generator().manual_seed(14)
    z0, z1, z2 = [torch.randn(4, 3, generator=gen, dtype=F64) for _ in range(3)]
    r = conflicts.gradient_conflicts(_TripleObjective(), [z0, z1, z2], tangent=False)
    assert r["missing_roles"] == ["uniformity"]
    # gradient on z^0: z^1 z^2; with z^1 := z^0 it is z^0 z^2, with z^2 := z^0 it is z^1 z^0
    total = z1 * z2
    pulls = torch.stack([total - z0 * z2, total - z1 * z0])
    assert torch.allclose(r["pulls"], pulls)
    residual = (total - pulls.sum(0)).norm(dim=-1) / total.norm(dim=-1)
    assert torch.allclose(r["pull_additivity_residual"], residual)
    assert float(residual.min()) > 0.1
    assert r["summary"]["pull_additivity_residual"]["mean"] == pytest.approx(float(residual.mean()))


def test_gradient_conflicts_tangent_projection_is_the_default():
    gen = torch.Generator().manual_seed(7)
    zs = [F.normalize(torch.randn(4, 3, generator=gen, dtype=F64), dim=-1) for _ in range(3)]
    obj = _PairObjective(torch.tensor([1.0, -2.0, 0.5], dtype=F64))
    z = [x.numpy() for x in zs]

    def tangent(g, x):
        return g - (g * x).sum(-1, keepdims=True) * x

    rg = conflicts.role_gradients(obj, zs)
    ga0 = 2 * (z[0] - z[1]) + 2 * (z[0] - z[2])
    assert np.allclose(rg["alignment"][0].numpy(), tangent(ga0, z[0]))
    r = conflicts.gradient_conflicts(obj, zs)
    assert r["anchor"] == 0
    # with tangent projection the pull of n is the projected gradient difference
    pulls = [tangent(2 * (z[0] - z[n]), z[0]) for n in (1, 2)]
    assert np.allclose(r["pulls"].numpy(), np.stack(pulls))
    gu = np.broadcast_to(np.array([1.0, -2.0, 0.5]), (4, 3))
    assert np.allclose(r["grad_norm_uniformity"][0].numpy(), np.linalg.norm(tangent(gu, z[0]), axis=-1))
    assert np.allclose(r["grad_norm_alignment"][0].numpy(), np.linalg.norm(tangent(ga0, z[0]), axis=-1))


def test_gradient_conflicts_parameter_cosine_by_hand():
    gen = torch.Generator().manual_seed(9)
    B, d = 5, 3
    xs = [torch.randn(B, d, generator=gen, dtype=F64) for _ in range(3)]
    weight = torch.nn.Parameter(torch.eye(d, dtype=F64) + 0.1 * torch.randn(d, d, generator=gen, dtype=F64))
    w = torch.randn(d, generator=gen, dtype=F64)
    zs = [x @ weight for x in xs]
    obj = _PairObjective(w)
    r = conflicts.gradient_conflicts(obj, zs, params=[weight])
    # independent autograd on the two parts
    out = obj([x @ weight for x in xs])
    ga = torch.autograd.grad(out.terms["align"], weight, retain_graph=True)[0].reshape(-1)
    gu = torch.autograd.grad(out.terms["unif"], weight)[0].reshape(-1)
    cos = float((ga @ gu) / (ga.norm() * gu.norm()))
    assert r["param_cos_align_unif"] == pytest.approx(cos)
    assert r["param_angle_align_unif_deg"] == pytest.approx(math.degrees(math.acos(cos)))
    assert r["param_grad_norm_alignment"] == pytest.approx(float(ga.norm()))
    assert r["param_grad_norm_uniformity"] == pytest.approx(float(gu.norm()))
    with pytest.raises(ValueError, match="^params is empty$"):
        conflicts.gradient_conflicts(obj, zs, params=[])


def test_conflict_inputs_are_checked():
    gen = torch.Generator().manual_seed(1)
    zs = [F.normalize(torch.randn(4, 3, generator=gen, dtype=F64), dim=-1) for _ in range(3)]
    obj = _PairObjective(torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="anchor must be an int"):
        conflicts.gradient_conflicts(obj, zs, anchor=None)
    with pytest.raises(ValueError, match="paired metrics need equal B"):
        conflicts.infonce_conflicts([zs[0], zs[1][:3]], temperature=0.1)
    with pytest.raises(ValueError, match="paired metrics need equal B"):
        conflicts.gradient_conflicts(obj, [zs[0], zs[1][:3], zs[2]])
    # one sample is enough
    one = conflicts.infonce_conflicts([z[:1] for z in zs], temperature=0.1)
    assert one["B"] == 1 and one["M"] == 3 and tuple(one["zeta"].shape) == (1,)


def test_infonce_conflicts_normalise_rows_first_unless_told_not_to():
    gen = torch.Generator().manual_seed(12)
    raw = [torch.randn(5, 4, generator=gen, dtype=F64) * torch.linspace(0.5, 3, 5, dtype=F64)[:, None]
           for _ in range(3)]
    unit = [F.normalize(z, dim=-1) for z in raw]
    a = conflicts.infonce_conflicts(raw, temperature=0.2, anchor=1)
    b = conflicts.infonce_conflicts(unit, temperature=0.2, anchor=1, normalize=False)
    c = conflicts.infonce_conflicts(raw, temperature=0.2, anchor=1, normalize=False)
    for k in ("zeta", "projection_ratio", "chi", "chi_net"):
        assert torch.allclose(a[k], b[k]), k
    assert not torch.allclose(a["projection_ratio"], c["projection_ratio"])
    assert a["anchor"] == 1 and a["temperature"] == 0.2 and a["M"] == 3 and a["B"] == 5
    # role gradients and gradient conflicts never normalise: the objective sees the rows as given
    obj = _PairObjective(torch.ones(4, dtype=F64))
    rg = conflicts.role_gradients(obj, raw, tangent=False)
    assert torch.allclose(rg["alignment"][1], -2 * (raw[0] - raw[1]))
    r = conflicts.gradient_conflicts(obj, raw, tangent=False)
    assert torch.allclose(r["pulls"][0], 2 * (raw[0] - raw[1]))


def test_infonce_conflicts_row_chunks_give_the_same_values(monkeypatch):
    gen = torch.Generator().manual_seed(13)
    zs = [F.normalize(torch.randn(9, 3, generator=gen, dtype=F64), dim=-1) for _ in range(3)]
    whole = conflicts.infonce_conflicts(zs, temperature=0.3, anchor=None)
    monkeypatch.setattr(conflicts, "_ROW_BLOCK_ELEMS", 18)  # 2 rows per chunk, B = 9 > d = 3
    chunked = conflicts.infonce_conflicts(zs, temperature=0.3, anchor=None)
    for k in ("zeta", "projection_ratio", "chi", "chi_net"):
        assert chunked[k].shape == (3, 9) and torch.allclose(chunked[k], whole[k]), k


def test_summarize_keys_single_values_and_missing_values():
    s1 = conflicts.summarize([3.0])
    assert s1 == {"mean": 3.0, "std": 0.0, "median": 3.0, "q05": 3.0, "q25": 3.0, "q75": 3.0, "q95": 3.0, "n": 1}
    s2 = conflicts.summarize([1.0, 3.0])
    assert s2["std"] == pytest.approx(SQ2) and s2["n"] == 2
    s3 = conflicts.summarize([1.0, None, 3.0, float("inf")])
    assert s3["n"] == 2 and s3["mean"] == 2.0
    q = conflicts.summarize(np.arange(101.0))
    assert (q["q05"], q["q25"], q["median"], q["q75"], q["q95"]) == (5.0, 25.0, 50.0, 75.0, 95.0)
    empty = conflicts.summarize([float("nan")])
    assert empty["n"] == 0 and set(empty) == set(s1) and all(math.isnan(empty[k]) for k in s1 if k != "n")


def test_cosine_helper_clamps_and_marks_zero_rows_undefined():
    u = torch.tensor([[0.7589, -1.2934, 0.4212, 2.0, 0.3]], dtype=F64)
    for k in range(2000):  # a row whose cosine with a multiple of itself rounds above 1
        u = torch.randn(1, 5, generator=torch.Generator().manual_seed(k), dtype=F64) * 10
        raw = float((u * 3 * u).sum() / (u.norm() * (3 * u).norm()))
        if raw > 1.0:
            break
    assert raw > 1.0
    assert float(conflicts._cos(u, 3 * u)) == 1.0 and float(conflicts._cos(u, -3 * u)) == -1.0
    assert not torch.isnan(conflicts._deg(conflicts._cos(u, 3 * u))).any()
    tiny = torch.tensor([[1e-12, 0.0]], dtype=F64)
    one = torch.tensor([[1.0, 0.0]], dtype=F64)
    assert torch.isnan(conflicts._cos(tiny, one)).all() and torch.isnan(conflicts._cos(one, tiny)).all()
    assert torch.isnan(conflicts._cos(torch.zeros(1, 2, dtype=F64), one)).all()


# ----------------------------------------------------------------------------- proxy bound: every reported term


def test_proxy_bound_terms_in_closed_form_for_orthonormal_rows():
    # M = 3 modalities of B = 4 orthonormal rows; modality 1 equals modality 0, modality 2 is orthogonal
    # to both row by row, so |z_i^0 - z_i^1|^2 = 0 and |z_i^0 - z_i^2|^2 = 2.
    # L_align(anchor 0) = (0 + 2)/2 = 1; L_align(anchor 2) = (2 + 2)/2 = 2.
    # Uniformity with LMK width s = sqrt(2) h (diagonal included): kernel exp(-|zi - zj|^2 / (2 s^2))
    # = exp(-|zi - zj|^2 / (4 h^2)), for orthonormal rows mean_ij = (1 + 3 exp(-1/(2 h^2))) / 4.
    z0 = basis(8, 0, 1, 2, 3)
    xs = [z0, z0.clone(), basis(8, 4, 5, 6, 7)]
    M, B = 3, 4
    for h in (0.5, 1.0):
        u = math.log((1 + 3 * math.exp(-1 / (2 * h * h))) / 4)
        for anchor, l_align in ((0, 1.0), (2, 2.0)):
            r = proxy_bound(xs, h, anchor=anchor, estimator="exact")
            assert r["h"] == h and r["M"] == M and r["B"] == B
            assert r["estimator"] == "exact" and r["guaranteed"] is True
            assert r["constant"] == pytest.approx(2 * math.log(4), abs=1e-12)
            assert r["L_align_anchor"] == pytest.approx(l_align, abs=1e-12)
            assert r["alignment"] == pytest.approx((M - 1) / (2 * h * h) * l_align, abs=1e-12)
            assert r["uniformity"] == pytest.approx(u, abs=1e-12)
            assert r["bound"] == pytest.approx(r["constant"] + r["alignment"] + u, abs=1e-12)
            assert r["slack"] == pytest.approx(r["bound"] - r["divergence"], abs=1e-12)
            assert r["divergence"] <= r["bound"] + 1e-12
    # width h instead of sqrt(2) h would give log((1 + 3 exp(-1/h^2)) / 4): a different number
    assert abs(math.log((1 + 3 * math.exp(-1.0)) / 4) - math.log((1 + 3 * math.exp(-0.5)) / 4)) > 0.1


def test_proxy_bound_median_bandwidth_is_median_distance_over_sqrt2():
    # orthonormal rows of all modalities pooled: distances 0 (equal rows) and sqrt(2); with most pairs at
    # sqrt(2) the median distance is sqrt(2), so h = 1
    z0 = basis(8, 0, 1, 2, 3)
    r = proxy_bound([z0, basis(8, 4, 5, 6, 7)], "median", estimator="exact")
    assert r["h"] == pytest.approx(1.0, abs=1e-12)
    assert r["uniformity"] == pytest.approx(math.log((1 + 3 * math.exp(-0.5)) / 4), abs=1e-12)
    assert r["estimator"] == "exact"


# ----------------------------------------------------------------------------- retrieval: direction matters


# Queries at 0, 12, 180 degrees, gallery at 5, 82, 180 degrees (cosine scores). Query 1's partner (82)
# loses to gallery item 0 (5 degrees): ranks query -> gallery 1, 2, 1. Every gallery item's own query is
# its best: ranks gallery -> query 1, 1, 1.
Q = at_angles(0.0, 12.0, 180.0)
G = at_angles(5.0, 82.0, 180.0)


def test_retrieval_ranks_are_asymmetric_by_hand():
    assert hm.retrieval_ranks(Q, G).tolist() == [1, 2, 1]
    assert hm.retrieval_ranks(G, Q).tolist() == [1, 1, 1]
    # scores[i, j]: query i against gallery item j
    s = torch.tensor([[3.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 5.0, 4.0]])
    assert hm.ranks_from_scores(s).tolist() == [1, 2, 2]
    assert hm.ranks_from_scores(s.T).tolist() == [1, 2, 1]
    # ties count in favour of the true match
    assert hm.ranks_from_scores(torch.tensor([[1.0, 1.0], [2.0, 2.0]])).tolist() == [1, 1]


def test_retrieval_metrics_keep_query_and_gallery_apart():
    out = hm.retrieval_metrics([Q, G], ks=(1, 2), anchor=0)
    assert out["R1/0->1"] == pytest.approx(200 / 3)
    assert out["R1/1->0"] == pytest.approx(100.0)
    assert out["R2/0->1"] == pytest.approx(100.0)
    assert out["MedR/0->1"] == 1.0 and out["MedR/1->0"] == 1.0
    assert out["R1/anchor->others"] == pytest.approx(200 / 3)
    assert out["R1/others->anchor"] == pytest.approx(100.0)
    assert out["R1/mean"] == pytest.approx((200 / 3 + 100) / 2)
    # anchor 1 swaps the two directional keys
    out1 = hm.retrieval_metrics([Q, G], ks=(1,), anchor=1)
    assert out1["R1/anchor->others"] == pytest.approx(100.0)
    assert out1["R1/others->anchor"] == pytest.approx(200 / 3)


def test_retrieval_median_rank_is_the_lower_median():
    # ranks 1, 2 (two queries): lower median 1
    q, g = at_angles(0.0, 12.0), at_angles(5.0, 82.0)
    assert hm.retrieval_ranks(q, g).tolist() == [1, 2]
    assert hm.recall_stats(torch.tensor([1, 2]), ks=(1,)) == {"R1": 50.0, "MedR": 1.0}
    assert hm.recall_stats(torch.tensor([3, 1, 2, 7]), ks=(2,)) == {"R2": 50.0, "MedR": 2.0}


@pytest.mark.skipif(not hasattr(hm, "own_retrieval_metrics"), reason="own-rule retrieval not present")
def test_own_rule_retrieval_keeps_query_and_gallery_apart():
    # M = 2 with rule cosine_sum: the tuple of the other modality is the other row itself
    out = hm.own_retrieval_metrics([Q, G], "cosine_sum", ks=(1,), anchor=0)
    assert out["R1/anchor->tuple"] == pytest.approx(200 / 3)
    assert out["R1/tuple->anchor"] == pytest.approx(100.0)
    assert out["R1/rest->1"] == pytest.approx(200 / 3)


# ----------------------------------------------------------------------------- pairing by key, not by position


def _summary_rows():
    # method and baseline values per (M, seed); the method's rows are written in another order, the
    # baseline lacks (M=4, seed=1) and the method lacks (M=2, seed=2)
    base = {(2, 0): 10.0, (2, 1): 20.0, (2, 2): 30.0, (4, 0): 40.0}
    meth = {(4, 1): 99.0, (4, 0): 41.0, (2, 1): 23.0, (2, 0): 15.0}
    rows = [{"dataset": "syn", "variant": "infonce", "M": m, "seed": s, "split_seed": 0, "x": v}
            for (m, s), v in base.items()]
    rows += [{"dataset": "syn", "variant": "unialign", "M": m, "seed": s, "split_seed": 0, "x": v}
             for (m, s), v in meth.items()]
    return pd.DataFrame(rows)


def test_paired_cells_match_by_key_with_shuffled_and_missing_cells():
    cells = st.paired_cells(_summary_rows(), "x", "unialign", "infonce")
    got = {(int(r.M), int(r.seed)): float(r.d) for r in cells.itertuples()}
    # only the cells present on both sides: (2,0): 15 - 10, (2,1): 23 - 20, (4,0): 41 - 40
    assert got == {(2, 0): 5.0, (2, 1): 3.0, (4, 0): 1.0}


def test_paired_effect_by_hand_with_shuffled_and_missing_cells():
    df = _summary_rows().sample(frac=1.0, random_state=7).reset_index(drop=True)
    res = st.paired_effect(df, "x", "unialign", "infonce")
    # units: seed 0 -> mean(5, 1) = 3, seed 1 -> 3; estimate 3, sd 0
    assert res["n_cells"] == 3 and res["ms"] == [2, 4]
    assert res["n"] == 2 and res["estimate"] == pytest.approx(3.0)
    # a different split seed is a different cell: no pairing across split seeds
    df2 = _summary_rows()
    df2.loc[df2["variant"] == "unialign", "split_seed"] = 1
    assert st.paired_cells(df2, "x", "unialign", "infonce").empty


# ----------------------------------------------------------------------------- claim 7: Fisher z


def test_fisher_interval_by_hand_and_verdict_differs_from_raw_r():
    # one run per unit with r = 0.95, 0.2, 0.9, 0.99 (hand-made); the interval is the t interval of the
    # mean Fisher z over units, mapped back with tanh
    r = np.array([0.95, 0.2, 0.9, 0.99])
    rs = pd.DataFrame({"dataset": "syn", "seed": range(4), "split_seed": 0, "M": 3, "r": r})
    units = st.fisher_units(rs)
    assert np.allclose(np.sort(units["value"].to_numpy()), np.sort(np.arctanh(r)))
    res = st.fisher_interval(units)
    from scipy import stats

    z = np.arctanh(r)
    half = stats.t.ppf(0.975, 3) * z.std(ddof=1) / 2
    assert res["estimate"] == pytest.approx(math.tanh(z.mean()))
    assert res["low"] == pytest.approx(math.tanh(z.mean() - half))
    assert res["high"] == pytest.approx(math.tanh(z.mean() + half))
    p_z = 2 * stats.t.sf(abs(z.mean()) / (z.std(ddof=1) / 2), 3)
    assert res["p"] == pytest.approx(p_z)
    assert p_z == pytest.approx(0.0565, abs=1e-3)
    # on Fisher z the effect is not significant at 5 %: inconclusive; the same test on raw r would give
    # p = 0.027 and call it supported
    p_r = 2 * stats.t.sf(abs(r.mean()) / (r.std(ddof=1) / 2), 3)
    assert p_r < 0.05
    assert st.verdict(res["estimate"], res["p"], +1, res["n"]) == "inconclusive"


def _history_with_change_correlations(rs, n_points=9):
    """history.csv rows, one run per unit (seed), whose divergence and proxy *changes* between
    consecutive evaluations have exactly the Pearson correlation ``rs[seed]``."""
    from harness.experiment import keys

    k = n_points - 1
    # two orthonormal zero-mean directions of R^k
    u = np.cos(2 * np.pi * np.arange(k) / k)
    v = np.sin(2 * np.pi * np.arange(k) / k)
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    rows = []
    for seed, r in enumerate(rs):
        dx, dy = u, r * u + math.sqrt(1 - r * r) * v
        x, y = np.concatenate([[1.0], 1.0 + np.cumsum(dx)]), np.concatenate([[5.0], 5.0 + np.cumsum(dy)])
        for t in range(n_points):
            rows.append({"dataset": "syn", "variant": "unialign", "seed": seed, "split_seed": 0, "M": 3,
                         keys.STEP: 10 * (t + 1), keys.EPOCH: t + 1, keys.VAL_HOLDER: x[t], keys.VAL_PROXY: y[t]})
    return pd.DataFrame(rows)


def test_claim7_verdict_uses_fisher_z_end_to_end():
    from scipy import stats

    from harness.report import claims

    r = np.array([0.95, 0.2, 0.9, 0.99])
    hist = _history_with_change_correlations(r)
    # rows in another order than written: the run's points are ordered by step
    hist = hist.sample(frac=1.0, random_state=3).reset_index(drop=True)
    cfg = {"config": {"report": {"method": "unialign", "baseline": "infonce"}}}
    table = claims.judge(pd.DataFrame(), hist, None, cfg)
    row = table[table["id"] == "7"].iloc[0]
    z = np.arctanh(r)
    half = stats.t.ppf(0.975, 3) * z.std(ddof=1) / 2
    assert row["n"] == 4
    assert row["estimate"] == pytest.approx(math.tanh(z.mean()), abs=1e-9)
    assert row["ci_low"] == pytest.approx(math.tanh(z.mean() - half), abs=1e-9)
    assert row["ci_high"] == pytest.approx(math.tanh(z.mean() + half), abs=1e-9)
    assert row["p"] == pytest.approx(0.0565, abs=1e-3)
    # inconclusive on Fisher z; raw r (p = 0.027) would have called it supported
    assert row["verdict"] == "inconclusive"


# ----------------------------------------------------------------------------- data split seed


def _make_splits():
    try:
        from harness.experiment.dataset import make_splits
    except ImportError:  # pragma: no cover - older layout
        from harness.experiment.data import make_splits
    return make_splits


def test_split_depends_on_its_seed():
    make_splits = _make_splits()
    labels = np.repeat(np.arange(3), 40)
    for lab in (None, labels):
        a = make_splits(120, 0, 0.2, 0.25, lab)
        again = make_splits(120, 0, 0.2, 0.25, lab)
        b = make_splits(120, 1, 0.2, 0.25, lab)
        for k in ("train", "val", "test"):
            assert np.array_equal(a[k], again[k]), k
        assert not np.array_equal(a["test"], b["test"])
        assert not np.array_equal(a["val"], b["val"])
        # sizes by hand: 25 % and 20 % of 120 (per class of 40: 10 and 8)
        assert [len(a[k]) for k in ("train", "val", "test")] == [66, 24, 30]
        assert np.array_equal(np.sort(np.concatenate([a[k] for k in a])), np.arange(120))
    # stratified: each class keeps its share in every split
    s = make_splits(120, 5, 0.2, 0.25, labels)
    assert [int((labels[s["test"]] == c).sum()) for c in range(3)] == [10, 10, 10]
    assert [int((labels[s["val"]] == c).sum()) for c in range(3)] == [8, 8, 8]


def test_synthetic_dataset_split_follows_the_dataset_seed(tmp_path):
    from harness.experiment import data as hd

    splits = []
    for seed in (0, 1):
        cfg = hd.SyntheticConfig(n_modalities=2, n_samples=200, n_classes=4, latent_dim=3, dims=[5, 4], seed=seed)
        info = hd.build_synthetic(tmp_path / f"s{seed}", cfg)
        ds = hd.load_dataset(tmp_path / f"s{seed}") if hasattr(hd, "load_dataset") else None
        if ds is None:  # pragma: no cover
            from harness.experiment.dataset import load_dataset

            ds = load_dataset(tmp_path / f"s{seed}")
        splits.append(ds.split("test"))
        assert info is not None
    assert not np.array_equal(splits[0], splits[1])


# ----------------------------------------------------------------------------- resume: torch's global generator


class _Stop(BaseException):
    """Raised from the checkpoint writer to end a run mid-way, as a kill would (not an Exception)."""


def _train_argv(data, out, objective, params):
    argv = ["train", "--quiet", "--data", str(data), "--objective", objective, "--n-modalities", "3",
            "--seed", "0", "--steps", "24", "--batch-size", "16", "--eval-every-steps", "8", "--dim", "8",
            "--hidden", "16", "--depth", "1", "--lr", "3e-3", "--weight-decay", "1e-4", "--out", str(out)]
    for p in params:
        argv += ["--param", p]
    return argv


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory):
    from harness.experiment import data as hd

    out = tmp_path_factory.mktemp("resume_data")
    cfg = hd.SyntheticConfig(n_modalities=3, n_samples=240, n_classes=4, latent_dim=4, dims=[10, 8, 6], seed=0)
    hd.build_synthetic(out, cfg)
    return out


# every objective configuration that draws from torch's global generator during training
RANDOM_OBJECTIVES = [("symile", ["negatives=n", "temperature=0.2"])]


@pytest.mark.slow
@pytest.mark.parametrize("objective,params", RANDOM_OBJECTIVES)
def test_resume_restores_torch_global_generator(resume_data, tmp_path, monkeypatch, objective, params):
    from harness.cli import main as cli_main
    from harness.experiment import train as ht

    torch.set_num_threads(1)
    real_save = ht.save_checkpoint
    calls = {"n": 0}

    def stop_after_second(path, state):
        real_save(path, state)
        calls["n"] += 1
        if calls["n"] == 2:
            raise _Stop

    monkeypatch.setattr(ht, "save_checkpoint", stop_after_second)
    with pytest.raises(_Stop):
        cli_main(_train_argv(resume_data, tmp_path / "killed", objective, params))
    assert not (tmp_path / "killed" / "train.json").exists()
    # the process's global generator has moved on since; a resume must not depend on that
    torch.rand(17)
    monkeypatch.setattr(ht, "save_checkpoint", real_save)
    assert cli_main(_train_argv(resume_data, tmp_path / "killed", objective, params)) == 0
    info = json.loads((tmp_path / "killed" / "train.json").read_text())
    assert info["resumed_from_step"] == 16
    assert cli_main(_train_argv(resume_data, tmp_path / "ref", objective, params)) == 0
    assert (tmp_path / "killed" / "history.csv").read_text() == (tmp_path / "ref" / "history.csv").read_text()
    a = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)
    for part in ("model", "objective"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


# ----------------------------------------------------------------------------- the verdict rule and its statistics


@pytest.mark.parametrize("estimate,p,direction,n,expected", [
    (0.5, 0.01, +1, 5, "supported"),
    (-0.5, 0.01, +1, 5, "contradicted"),
    (-0.5, 0.01, -1, 5, "supported"),
    (0.5, 0.01, -1, 5, "contradicted"),
    (0.5, 1.0 - 0.95, +1, 5, "inconclusive"),  # p equal to 1 - confidence is not below it
    (0.5, 0.0499, +1, 5, "supported"),
    (0.5, 0.01, +1, 1, "inconclusive"),       # fewer than 2 units
    (0.5, 0.01, +1, 2, "supported"),          # exactly 2 units suffice
    (0.0, 0.01, +1, 5, "inconclusive"),       # no direction
    (1.0, 0.01, +1, 5, "supported"),
    (0.5, 0.2, -1, 5, "inconclusive"),
    (float("nan"), 0.01, +1, 5, "inconclusive"),
    (0.5, float("nan"), +1, 5, "inconclusive"),
    (0.3, 0.01, +1, 5, "supported"),          # an estimate below 1 still has a side
])
def test_verdict_rule_table(estimate, p, direction, n, expected):
    assert st.verdict(estimate, p, direction, n) == expected


def test_verdict_confidence_level():
    assert st.verdict(0.5, 0.02, +1, 5, confidence=0.99) == "inconclusive"
    assert st.verdict(0.5, 0.005, +1, 5, confidence=0.99) == "supported"


@pytest.mark.parametrize("verdicts,expected", [
    (["supported", "inconclusive"], "supported"),
    (["contradicted", "inconclusive"], "contradicted"),
    (["supported", "contradicted"], "mixed"),
    (["inconclusive", "inconclusive"], "inconclusive"),
    ([], "inconclusive"),
    (["supported"], "supported"),
    (["contradicted"], "contradicted"),
])
def test_overall_verdict_table(verdicts, expected):
    assert st.overall(verdicts) == expected


def test_t_interval_by_hand():
    from scipy import stats

    x = [1.0, 2.0, 4.0, float("nan"), None]
    mean, sd, lo, hi, n = st.t_interval(x)
    half = stats.t.ppf(0.975, 2) * np.std([1, 2, 4], ddof=1) / math.sqrt(3)
    assert (mean, n) == (pytest.approx(7 / 3), 3) and sd == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert lo == pytest.approx(7 / 3 - half) and hi == pytest.approx(7 / 3 + half)
    one = st.t_interval([2.0])
    assert one[0] == 2.0 and one[4] == 1 and all(math.isnan(v) for v in one[1:4])
    two = st.t_interval([2.0, 4.0], confidence=0.9)
    assert two[4] == 2 and two[2] == pytest.approx(3 - stats.t.ppf(0.95, 1) * SQ2 / SQ2)
    none = st.t_interval([])
    assert none[4] == 0 and all(math.isnan(v) for v in none[:4])


def test_t_test_edge_cases():
    assert st.t_test(1.0, 0.0, 3) == (1.0, 1.0, 0.0)
    assert st.t_test(0.0, 0.0, 3) == (0.0, 0.0, 1.0)
    assert all(math.isnan(v) for v in st.t_test(1.0, 0.5, 0))
    assert all(math.isnan(v) for v in st.t_test(float("nan"), 0.5, 3))
    assert all(math.isnan(v) for v in st.t_test(1.0, float("inf"), 3))
    from scipy import stats

    lo, hi, p = st.t_test(1.0, 0.5, 1)  # one degree of freedom is enough
    assert p == pytest.approx(2 * stats.t.sf(2.0, 1)) and hi - lo == pytest.approx(2 * stats.t.ppf(0.975, 1) * 0.5)


def test_holm_ties_keep_their_order_and_single_values():
    got = st.holm([0.04, 0.01, 0.04, 0.01])
    # sorted 0.01, 0.01, 0.04, 0.04 -> x4, x3, x2, x1 = 0.04, 0.03 -> 0.04, 0.08, 0.04 -> 0.08
    assert np.allclose(got, [0.08, 0.04, 0.08, 0.04])
    assert np.allclose(st.holm([0.03]), [0.03])
    assert np.allclose(st.holm([1, 0]), [1.0, 0.0])  # integers are p values too
    assert np.isnan(st.holm([float("nan")])).all()


def test_with_split_seed():
    df = pd.DataFrame({"x": [1, 2, 3], "split_seed": ["4", None, "bad"]})
    out = st.with_split_seed(df)
    assert out["split_seed"].tolist() == [4, 0, 0] and str(out["split_seed"].dtype).startswith("int")
    assert df["split_seed"].iloc[0] == "4" and df["split_seed"].iloc[2] == "bad"  # the input is not changed
    assert st.with_split_seed(pd.DataFrame({"x": [1]}))["split_seed"].tolist() == [0]


def _cells(rows):
    return pd.DataFrame(rows, columns=["dataset", "M", "seed", "split_seed", "d", "e"])


def test_unit_values_average_each_unit_over_m():
    cells = _cells([("b", 2, 0, 0, 1.0, 0.2), ("a", 4, 1, 0, 3.0, np.nan), ("a", 2, 1, 0, 5.0, 0.4),
                    ("a", 2, 0, 0, 2.0, 0.1)])
    u = st.unit_values(cells)
    assert list(u.columns) == ["dataset", "seed", "split_seed", "value", "e", "n_m"]
    # sorted by unit: (a, 0), (a, 1), (b, 0)
    assert u[["dataset", "seed"]].values.tolist() == [["a", 0], ["a", 1], ["b", 0]]
    assert u["value"].tolist() == [2.0, 4.0, 1.0] and u["n_m"].tolist() == [1, 2, 1]
    assert u["e"].tolist() == pytest.approx([0.1, 0.4, 0.2])
    assert u_no_se(cells)["e"].isna().all()
    empty = st.unit_values(_cells([]))
    assert empty.empty and list(empty.columns) == ["dataset", "seed", "split_seed", "value", "e", "n_m"]


def u_no_se(cells):
    return st.unit_values(cells, se=None)


def test_unit_interval_by_hand_with_shared_split_error():
    from scipy import stats

    units = pd.DataFrame({"dataset": "d", "seed": [0, 1, 2, 3], "split_seed": [0, 0, 1, 1],
                          "value": [1.0, 2.0, 4.0, 5.0], "e": [0.2, 0.4, np.nan, 0.6]})
    res = st.unit_interval(units)
    v = np.array([1.0, 2.0, 4.0, 5.0])
    # split 0: two units, mean error 0.3; split 1: two units, mean error (0 + 0.6)/2 = 0.3 (NaN counts 0)
    var = v.var(ddof=1) / 4 + (2 / 4) ** 2 * 0.3 ** 2 + (2 / 4) ** 2 * 0.3 ** 2
    se = math.sqrt(var)
    assert res["estimate"] == 3.0 and res["n"] == 4 and res["df"] == 3
    assert res["se"] == pytest.approx(se)
    half = stats.t.ppf(0.975, 3) * se
    assert res["low"] == pytest.approx(3 - half) and res["high"] == pytest.approx(3 + half)
    assert res["p"] == pytest.approx(2 * stats.t.sf(3 / se, 3))
    narrow = st.unit_interval(units, confidence=0.8)
    assert narrow["high"] - narrow["low"] == pytest.approx(2 * stats.t.ppf(0.9, 3) * se)
    one = st.unit_interval(units.iloc[:1])
    assert one["estimate"] == 1.0 and one["n"] == 1 and math.isnan(one["low"]) and math.isnan(one["se"])
    assert set(one) == {"estimate", "low", "high", "p", "se", "n", "df"}
    none = st.unit_interval(units.iloc[:0])
    assert none["n"] == 0 and math.isnan(none["estimate"])
    nan_rows = units.assign(value=[1.0, np.nan, 4.0, np.nan])
    assert st.unit_interval(nan_rows)["n"] == 2


def test_paired_cells_transform_errors_and_duplicates():
    df = pd.DataFrame([
        {"dataset": "a", "variant": "m", "M": 2, "seed": 0, "x": -3.0, "se": 0.3},
        {"dataset": "a", "variant": "b", "M": 2, "seed": 0, "x": 1.0, "se": 0.4},
        {"dataset": "a", "variant": "m", "M": 3, "seed": 0, "x": "oops", "se": "n/a"},
        {"dataset": "a", "variant": "b", "M": 3, "seed": 0, "x": 2.0, "se": 0.1},
    ])
    cells = st.paired_cells(df, "x", "m", "b", se_col="se", transform=np.abs)
    assert cells[["M", "d", "e"]].values.tolist() == [[2, 2.0, 0.5]]  # |-3| - |1|; sqrt(.3^2 + .4^2)
    assert list(cells.columns) == ["dataset", "M", "seed", "split_seed", "d", "e"]
    assert cells.index.tolist() == [0]
    plain = st.paired_cells(df, "x", "m", "b")
    assert plain["d"].tolist() == [-4.0] and plain["e"].isna().all()
    res = st.paired_effect(df, "x", "m", "b", se_col="se", transform=np.abs)
    assert res["n_cells"] == 1 and res["ms"] == [2] and res["estimate"] == 2.0
    dup = pd.concat([df, df.iloc[[0]].assign(x=9.0)], ignore_index=True)
    with pytest.raises(ValueError, match=r"variant 'm' has more than one run for .*'M'"):
        st.paired_cells(dup, "x", "m", "b")
    # a repeat in one of several keys only is no duplicate
    other = pd.concat([df, df.iloc[[0]].assign(seed=1)], ignore_index=True)
    assert len(st.paired_cells(other, "x", "m", "b")) == 1
    empty = st.paired_cells(df.iloc[:0], "x", "m", "b")
    assert empty.empty and list(empty.columns) == ["dataset", "M", "seed", "split_seed", "d", "e"]
    assert st.paired_effect(df.iloc[:0], "x", "m", "b")["ms"] == []


def test_paired_cells_sorted_by_key():
    rows = [{"dataset": "a", "variant": v, "M": m, "seed": s, "x": float(m * 10 + s + (v == "m"))}
            for v in ("m", "b") for m in (4, 2) for s in (1, 0)]
    cells = st.paired_cells(pd.DataFrame(rows), "x", "m", "b")
    assert cells[["M", "seed"]].values.tolist() == [[2, 0], [2, 1], [4, 0], [4, 1]]
    assert cells.index.tolist() == [0, 1, 2, 3]


def test_slope_units_by_hand():
    df = pd.DataFrame({"dataset": "a", "seed": [1, 1, 1, 0, 0, 2, 3, 3],
                       "M": [2, 3, 4, 2, 4, 2, 2, "x"], "y": [1.0, 3.0, 5.0, 0.0, 1.0, 7.0, 1.0, 2.0]})
    out = st.slope_units(df, "y")
    assert list(out.columns) == ["dataset", "seed", "split_seed", "value", "e", "n_m"]
    # units with two distinct M only; seed 2 (one M) and seed 3 (one valid M) are dropped; sorted by seed
    assert out["seed"].tolist() == [0, 1]
    assert out["value"].tolist() == pytest.approx([0.5, 2.0])
    assert out["n_m"].tolist() == [2, 3] and out["e"].isna().all()
    nan_y = df.assign(y=[1.0, np.nan, 5.0, 0.0, 1.0, 7.0, 1.0, 2.0])
    assert st.slope_units(nan_y, "y")["value"].tolist() == pytest.approx([0.5, 2.0])
    assert st.slope_units(df[df["seed"] == 2], "y").empty


def test_fisher_units_clip_and_average_per_unit():
    rs = pd.DataFrame({"dataset": "a", "seed": [0, 0, 1], "split_seed": 0, "M": [2, 3, 2], "r": [1.0, -1.0, 0.5]})
    u = st.fisher_units(rs)
    clip = np.arctanh(0.999999)
    assert u["value"].tolist() == pytest.approx([0.0, np.arctanh(0.5)])
    assert u["n_m"].tolist() == [2, 1] and u["e"].isna().all()
    assert st.fisher_units(rs.iloc[[0]])["value"].tolist() == pytest.approx([clip])
    assert st.fisher_units(rs.iloc[[1]])["value"].tolist() == pytest.approx([-clip])
    res = st.fisher_interval(st.fisher_units(rs.iloc[[2]]))
    assert res["estimate"] == pytest.approx(0.5) and math.isnan(res["low"]) and math.isnan(res["high"])
    wide = st.fisher_interval(st.fisher_units(pd.DataFrame(
        {"dataset": "a", "seed": [0, 1, 2], "split_seed": 0, "M": 2, "r": [0.1, 0.5, 0.3]})), confidence=0.5)
    z = np.arctanh([0.1, 0.5, 0.3])
    from scipy import stats

    half = stats.t.ppf(0.75, 2) * z.std(ddof=1) / math.sqrt(3)
    assert wide["low"] == pytest.approx(math.tanh(z.mean() - half))


# ----------------------------------------------------------------------------- instrument inputs: exact messages


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_instrument_input_errors_word_for_word():
    from harness.instruments._inputs import check_anchor, checked_modalities, modality_list, modality_pairs

    x = torch.zeros(3, 2)
    assert _message(modality_list, torch.zeros(2, 3), "xs") == "xs as one tensor must have shape (M, B, d), got (2, 3)"
    assert _message(modality_list, "abc", "ys") == \
        "ys must be a sequence of (B, d) tensors or one (M, B, d) tensor, got str"
    assert _message(modality_list, [x], "zs") == "zs must hold at least M=2 modalities, got M=1"
    assert _message(modality_list, [x, x], "zs", 3) == "zs must hold at least M=3 modalities, got M=2"
    assert len(modality_list([x, x, x], "zs", 3)) == 3
    assert len(modality_list(torch.zeros(2, 3, 2))) == 2
    assert modality_list(([[1.0, 2.0]], [[3.0, 4.0]]))[1].tolist() == [[3.0, 4.0]]  # array-likes, tuples
    assert _message(checked_modalities, [x, torch.zeros(3)], "zs") == "zs[1] must have shape (B, d), got (3,)"
    assert _message(checked_modalities, [x, torch.zeros(1, 2)], "zs") == "zs[1] needs at least 2 samples, got B=1"
    assert len(checked_modalities([x[:1], x[:1]], min_rows=1)) == 2
    assert _message(checked_modalities, [x, torch.zeros(3, 4)], "q") == "q[1] has dimension d=4 but q[0] has d=2"
    assert _message(checked_modalities, [x, torch.zeros(2, 2)], "zs", paired=True) == \
        "paired metrics need equal B across modalities, got B=[3, 2]"
    bad = x.clone()
    bad[0, 0], bad[1, 1] = float("nan"), float("inf")
    assert _message(checked_modalities, [x, bad], "zs") == "zs[1] contains 2 non-finite value(s) (NaN or inf)"
    assert _message(check_anchor, 3, 3) == "anchor must be an int in [0, 2], got 3"
    assert _message(check_anchor, None, 3) == "anchor must be an int in [0, 2], got None"
    assert _message(check_anchor, True, 3, allow_none=True) == "anchor must be an int in [0, 2] or None, got True"
    assert _message(check_anchor, 1.0, 3) == "anchor must be an int in [0, 2], got 1.0"
    assert _message(check_anchor, -1, 3) == "anchor must be an int in [0, 2], got -1"
    check_anchor(None, 3, allow_none=True)
    check_anchor(0, 3)
    check_anchor(2, 3)
    # the default name is "zs"; the name reaches the sequence check too
    assert _message(checked_modalities, [x, torch.zeros(3)]) == "zs[1] must have shape (B, d), got (3,)"
    assert _message(checked_modalities, torch.zeros(2, 3), "q") == "q as one tensor must have shape (M, B, d), got (2, 3)"
    assert _message(modality_list, 5) == "zs must be a sequence of (B, d) tensors or one (M, B, d) tensor, got int"
    assert _message(checked_modalities, [x, torch.zeros(3, 2, device="meta")], "zs") == \
        "zs[1] is on meta but zs[0] is on cpu"
    assert _message(checked_modalities, [x, x, torch.zeros(3, 4)], "q") == "q[2] has dimension d=4 but q[0] has d=2"
    assert _message(checked_modalities, [x, torch.zeros(1, 7)], "zs", min_rows=3) == \
        "zs[1] needs at least 3 samples, got B=1"
    assert modality_pairs(3) == [(0, 1), (0, 2), (1, 2)]
    assert modality_pairs(4, 2) == [(2, 0), (2, 1), (2, 3)]
    assert _message(modality_pairs, 3, 5) == "anchor must be an int in [0, 2] or None, got 5"


def test_instrument_inputs_dtypes_normalisation_and_graph():
    from harness.instruments._inputs import checked_modalities

    ints = checked_modalities([torch.ones(2, 2, dtype=torch.int64), torch.ones(2, 2, dtype=torch.int64)])
    assert all(z.dtype == torch.float32 for z in ints)
    half = checked_modalities([torch.ones(2, 2, dtype=torch.float16), torch.ones(2, 2, dtype=torch.bfloat16)])
    assert all(z.dtype == torch.float32 for z in half)
    mixed = checked_modalities([torch.ones(2, 2, dtype=torch.float32), torch.ones(2, 2, dtype=F64)])
    assert all(z.dtype == F64 for z in mixed)
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]], requires_grad=True)
    plain = checked_modalities([x, x])
    assert torch.equal(plain[0], x.detach()) and not plain[0].requires_grad
    unit = checked_modalities([x, x], normalize=True)
    assert torch.allclose(unit[0], torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    kept = checked_modalities([x, x], detach=False, normalize=True)
    assert kept[0].requires_grad
    kept[0].sum().backward()
    assert x.grad is not None
    zero = checked_modalities([torch.zeros(2, 2), torch.ones(2, 2)], normalize=True, eps=0.5)
    assert torch.equal(zero[0], torch.zeros(2, 2))
    tiny = checked_modalities([torch.full((2, 2), 0.1), torch.ones(2, 2)], normalize=True, eps=1.0)
    assert torch.allclose(tiny[0], torch.full((2, 2), 0.1))  # the norm (0.14) is below eps: divided by eps


# ----------------------------------------------------------------------------- retrieval and validation metrics


def test_retrieval_summary_standard_error_and_default_keys():
    from scipy import stats

    out = hm.retrieval_metrics([Q, G])
    assert {"R1/0->1", "R5/0->1", "R10/0->1", "MedR/0->1", "R1/mean", "R5/mean", "R10/mean", "MedR/mean",
            "R1/mean_se", "R1/anchor->others", "R1/others->anchor", "MedR/others->anchor",
            "true_pair_cosine/mean"} <= set(out)
    assert "R1/mean_se/anchor->others" not in out and "R1_se/mean" not in out
    # per query, hits averaged over the two tasks: 100, 50, 100 (percent)
    assert out["R1/mean_se"] == pytest.approx(float(stats.sem([100.0, 50.0, 100.0])))
    assert out["R1/anchor->others"] == pytest.approx(200 / 3)  # default anchor 0
    assert out["MedR/mean"] == 1.0
    cosines = [math.cos(math.radians(a)) for a in (5.0, 70.0, 0.0)]
    assert out["true_pair_cosine/mean"] == pytest.approx(np.mean(cosines))
    # M = 3: the mean over the three unordered pairs, anchor keys over the anchor's two partners
    T = at_angles(90.0, 100.0, 270.0)
    out3 = hm.retrieval_metrics([Q, G, T], ks=(1,), anchor=2)
    pairs = [(Q, G), (Q, T), (G, T)]
    cos3 = [float((F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(1).mean()) for a, b in pairs]
    assert out3["true_pair_cosine/mean"] == pytest.approx(np.mean(cos3))
    r1 = {f"{m}->{n}": 100.0 * float((hm.retrieval_ranks(z[m], z[n]) <= 1).double().mean())
          for z in [[Q, G, T]] for m in range(3) for n in range(3) if m != n}
    assert out3["R1/anchor->others"] == pytest.approx((r1["2->0"] + r1["2->1"]) / 2)
    assert out3["R1/others->anchor"] == pytest.approx((r1["0->2"] + r1["1->2"]) / 2)
    assert out3["R1/mean"] == pytest.approx(np.mean(list(r1.values())))
    # R1/mean_se: the standard error over queries of each query's hit rate averaged over the six tasks
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(8, 3, generator=gen, dtype=F64)
    z = [base + 0.9 * torch.randn(8, 3, generator=gen, dtype=F64) for _ in range(3)]
    per_query = np.mean([100.0 * (hm.retrieval_ranks(z[m], z[n]) <= 1).double().numpy()
                         for m in range(3) for n in range(3) if m != n], axis=0)
    assert hm.retrieval_metrics(z, ks=(1,))["R1/mean_se"] == pytest.approx(float(stats.sem(per_query)))
    assert float(stats.sem(per_query)) == pytest.approx(12.19875, abs=1e-4)  # not the sd over tasks (6.97)
    assert math.isnan(hm.retrieval_metrics([Q[:1], G[:1]], ks=(1,))["R1/mean_se"])
    one = hm.retrieval_metrics([Q[:1].expand(2, 2).clone(), G[:1].expand(2, 2).clone()], ks=(1,))
    assert one["R1/mean"] == 100.0  # ties count in favour of the true match


def test_retrieval_shape_errors():
    with pytest.raises(ValueError, match=r"^scores must be a square \(queries x gallery\) matrix, got \(2, 3\)$"):
        hm.ranks_from_scores(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"scores must be a square"):
        hm.ranks_from_scores(torch.zeros(3))
    with pytest.raises(ValueError, match=r"^query \(3, 2\) and gallery \(2, 2\) must be paired$"):
        hm.retrieval_ranks(Q, G[:2])


@pytest.mark.skipif(not hasattr(hm, "tuple_scores"), reason="own-rule retrieval not present")
def test_tuple_scores_by_hand():
    e = basis(3, 0, 1, 2)
    z0 = torch.stack([e[0], e[1]])
    z1 = torch.stack([e[1], e[0]])
    z2 = torch.stack([e[2], e[0] * 2.0])  # row norms differ: rows are normalised first
    zs = [z0, z1, z2]
    # cosine_sum: S[i, j] = cos(z0_i, z1_j) + cos(z0_i, z2_j)
    assert hm.tuple_scores(zs, 0, "cosine_sum").tolist() == [[0.0, 2.0], [1.0, 0.0]]
    # symile_mip: sum_k z0_ik z1_jk z2_jk; only j = 1 has z1_j * z2_j = e0 -> row 0 scores 1
    assert hm.tuple_scores(zs, 0, "symile_mip").tolist() == [[0.0, 1.0], [0.0, 0.0]]
    # gram_volume: (e0, e1, e2) (i = 0, j = 0) has volume 1; every other choice repeats a vector: 0
    vol = hm.tuple_scores(zs, 0, "gram_volume")
    assert torch.allclose(vol, torch.tensor([[-1.0, 0.0], [0.0, 0.0]], dtype=F64), atol=1e-6)
    # candidate modality 2: S[i, j] scores z2_i against (z0_j, z1_j)
    assert hm.tuple_scores(zs, 2, "cosine_sum").tolist() == [[0.0, 0.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="retrieval rule must be one of gram_volume, symile_mip, cosine_sum; got 'x'"):
        hm.tuple_scores(zs, 0, "x")
    with pytest.raises(ValueError, match="^tuple retrieval needs at least 2 modalities$"):
        hm.tuple_scores([z0], 0, "cosine_sum")


@pytest.mark.skipif(not hasattr(hm, "own_retrieval_metrics"), reason="own-rule retrieval not present")
def test_own_rule_retrieval_tasks_for_three_modalities():
    T = at_angles(90.0, 100.0, 270.0)
    zs = [Q, G, T]
    out = hm.own_retrieval_metrics(zs, "cosine_sum", ks=(1,), anchor=1)
    s1 = hm.tuple_scores(zs, 1, "cosine_sum")
    r = lambda s: 100.0 * float((hm.ranks_from_scores(s) <= 1).double().mean())
    tasks = {"anchor->tuple": r(s1), "tuple->anchor": r(s1.T), "rest->0": r(hm.tuple_scores(zs, 0, "cosine_sum").T),
             "rest->2": r(hm.tuple_scores(zs, 2, "cosine_sum").T)}
    for k, v in tasks.items():
        assert out[f"R1/{k}"] == pytest.approx(v), k
    assert "R1/rest->1" not in out
    assert out["R1/rest->one"] == pytest.approx(np.mean([tasks["tuple->anchor"], tasks["rest->0"], tasks["rest->2"]]))
    assert out["R1/mean"] == pytest.approx(np.mean(list(tasks.values())))
    assert "R1/mean_se" in out and "MedR/rest->one" in out and "R1/mean_se/rest->one" not in out
    default = hm.own_retrieval_metrics(zs, "cosine_sum")
    assert {"R1/anchor->tuple", "R5/anchor->tuple", "R10/anchor->tuple", "MedR/anchor->tuple", "R5/rest->one"} \
        <= set(default)
    assert default["R1/anchor->tuple"] == pytest.approx(r(hm.tuple_scores(zs, 0, "cosine_sum")))


def test_linear_probe_accuracy():
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    y = np.array([0, 0, 1, 1])
    # predictions 0, 1, 1 against labels 0, 1, 0
    assert hm.linear_probe(x, y, np.array([[-1.0], [12.0], [11.5]]), np.array([0, 1, 0])) == pytest.approx(2 / 3)
    assert hm.linear_probe(x, y, x, y, seed=3) == 1.0


def test_linear_probe_settings(monkeypatch):
    calls = _spy_logistic(monkeypatch)
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    y = np.array([0, 0, 1, 1])
    hm.linear_probe(x, y, x, y)
    hm.linear_probe(x, y, x, y, seed=4)
    assert [c["kw"] for c in calls] == [{"max_iter": 2000, "random_state": 0}, {"max_iter": 2000, "random_state": 4}]


def test_flatten_metrics_rules():
    value = {"a": 1, "b": {"c": torch.tensor([1.0, 3.0]), "d": torch.tensor(2.5), "e": torch.zeros(0)},
             "f": np.array([2.0, 4.0]), "g": np.array(7), "h": np.array(["x", "y"]), "i": True, "j": "text",
             "k": np.float32(0.5), "l": np.int64(3), "m": None, "n": np.array([], dtype=float), "o": np.bool_(False)}
    out = hm.flatten_metrics("p", value)
    assert out == {"p/a": 1.0, "p/b/c/mean": 2.0, "p/b/d": 2.5, "p/f/mean": 3.0, "p/g": 7.0, "p/i": 1.0,
                   "p/k": 0.5, "p/l": 3.0, "p/o": 0.0}
    assert hm.flatten_metrics("", {"x": 1.5}) == {"x": 1.5}
    assert hm.flatten_metrics("", {"x": {"y": 2}}) == {"x/y": 2.0}
    assert hm.flatten_metrics("q", torch.tensor([[1.0, 2.0]], requires_grad=True)) == {"q/mean": 1.5}
    assert hm.flatten_metrics("q", np.array([1, 2, 6])) == {"q/mean": 3.0}
    assert hm.flatten_metrics("q", np.array([7.0])) == {"q": 7.0}
    assert hm.flatten_metrics("q", torch.tensor([2.5])) == {"q": 2.5}


def test_conflict_summaries_and_safe(caplog):
    res = {"summary": {"zeta": {"mean": 0.5, "std": 0.1, "n": 3}, "chi": {"mean": 0.2, "n": 3}}}
    assert hm.conflict_summaries("c", res) == {"c/zeta/mean": 0.5, "c/zeta/std": 0.1, "c/zeta/n": 3.0,
                                               "c/chi/mean": 0.2, "c/chi/n": 3.0}
    assert hm.conflict_summaries("c", res, ("mean",)) == {"c/zeta/mean": 0.5, "c/chi/mean": 0.2}
    assert hm.conflict_summaries("c", {}) == {}

    def boom(x, y=0):
        raise RuntimeError(f"bad {x} {y}")

    import logging

    with caplog.at_level(logging.WARNING, logger=hm.log.name):
        assert hm._safe("run7", "inst", boom, 1, y=2) is None
        assert hm._safe("", "other", boom, 3) is None
    assert [r.getMessage() for r in caplog.records] == [
        "run7: instrument inst failed and is left empty: RuntimeError: bad 1 2",
        "run: instrument other failed and is left empty: RuntimeError: bad 3 0"]
    assert hm._safe("r", "i", lambda a, b=1: a + b, 1, b=5) == 6


def test_validation_metrics_against_the_instruments(monkeypatch, caplog):
    import objectives
    from harness.instruments import divergence

    gen = torch.Generator().manual_seed(5)
    zs = [F.normalize(torch.randn(12, 4, generator=gen, dtype=F64), dim=-1) for _ in range(3)]
    loss_fn = objectives.build("infonce", temperature=0.1)
    out = hm.validation_metrics(zs, loss_fn, anchor=1, run="r")
    assert out["val/R1_mean"] == pytest.approx(hm.retrieval_metrics(zs, ks=(1,))["R1/mean"])
    assert out["val/holder"] == pytest.approx(float(divergence.holder(zs, bandwidth="median")))
    p = divergence.proxy_bound(zs, bandwidth="median", anchor=1, estimator="resubstitution")
    for k in ("bound", "alignment", "uniformity", "constant", "L_align_anchor", "h"):
        assert out[f"val/proxy/{k}"] == pytest.approx(p[k]), k
    assert out["val/gap/centroid_distance_pairs"] == pytest.approx(gap.centroid_distance(zs))
    assert out["val/gap/mean_paired_distance_pairs"] == pytest.approx(gap.mean_paired_distance(zs))
    assert out["val/gap/relative_gap_pairs"] == pytest.approx(gap.relative_gap(zs))
    assert out["val/gap/true_pair_cosine_anchor"] == pytest.approx(gap.true_pair_cosine(zs, 1))
    assert out["val/gap/uniformity_mean"] == pytest.approx(np.mean([gap.uniformity(z) for z in zs]))
    c = conflicts.infonce_conflicts(zs, hm.CONFLICT_TEMPERATURE, 1)
    for k in ("zeta", "projection_ratio", "chi", "chi_net"):
        assert out[f"val/conflict/{k}/mean"] == pytest.approx(c["summary"][k]["mean"]), k
    assert "val/conflict/zeta/std" not in out and "val/grad/chi_grad/std" not in out
    gc = conflicts.gradient_conflicts(loss_fn, zs, anchor=1)
    assert out["val/grad/chi_grad/mean"] == pytest.approx(gc["summary"]["chi_grad"]["mean"])
    assert out["val/grad/cos_align_unif_anchor/mean"] == pytest.approx(gc["summary"]["cos_align_unif_anchor"]["mean"])
    lean = hm.validation_metrics(zs, loss_fn, gap_keys=False, conflict_keys=False)
    assert not any(k.startswith(("val/gap/", "val/conflict/", "val/grad/")) for k in lean)
    assert lean["val/proxy/bound"] == pytest.approx(
        divergence.proxy_bound(zs, bandwidth="median", anchor=0, estimator="resubstitution")["bound"])

    def boom(*a, **k):
        raise RuntimeError("no")

    monkeypatch.setattr(divergence, "holder", boom)
    monkeypatch.setattr(divergence, "proxy_bound", boom)
    monkeypatch.setattr(gap, "relative_gap", boom)
    monkeypatch.setattr(conflicts, "gradient_conflicts", boom)
    monkeypatch.setattr(conflicts, "infonce_conflicts", boom)
    with caplog.at_level("WARNING"):
        broken = hm.validation_metrics(zs, loss_fn, run="r9")
    for inst in ("divergence.holder", "divergence.proxy_bound", "gap.relative_gap_pairs",
                 "conflicts.infonce_conflicts", "conflicts.gradient_conflicts"):
        assert f"r9: instrument {inst} failed and is left empty: RuntimeError: no" in \
            [r.getMessage() for r in caplog.records], inst
    assert not any(k.startswith("val/conflict/") for k in broken)
    with caplog.at_level("WARNING"):
        hm.validation_metrics(zs, loss_fn, gap_keys=False, conflict_keys=False)
    assert "run: instrument divergence.holder failed and is left empty: RuntimeError: no" in \
        [r.getMessage() for r in caplog.records]
    assert "val/holder" not in broken and not any(k.startswith(("val/proxy/", "val/grad/")) for k in broken)
    assert "val/gap/relative_gap_pairs" not in broken and "val/gap/centroid_distance_pairs" in broken
    assert "r9: instrument divergence.holder failed" in caplog.text
    assert "r9: instrument gap.relative_gap_pairs failed" in caplog.text


# ----------------------------------------------------------------------------- the dataset container


def _dataset_module():
    from harness.experiment import dataset as hds

    return hds


def test_make_splits_by_hand_and_argument_errors():
    hds = _dataset_module()
    s = hds.make_splits(10, 3, 0.2, 0.3)
    perm = np.random.Generator(np.random.PCG64(3 + 7919)).permutation(np.arange(10))
    assert s["test"].tolist() == sorted(perm[:3].tolist())
    assert s["val"].tolist() == sorted(perm[3:5].tolist())
    assert s["train"].tolist() == sorted(perm[5:].tolist())
    assert all(v.dtype == np.int64 for v in s.values())
    z = hds.make_splits(10, 3, 0.0, 0.0)
    assert z["train"].tolist() == list(range(10)) and z["val"].size == 0 and z["test"].size == 0
    for val, test in ((1.0, 0.0), (0.0, 1.0), (-0.1, 0.2), (0.2, -0.1), (0.5, 0.5), (0.6, 0.5)):
        with pytest.raises(hds.DataError, match=r"must be in \[0, 1\) with a sum below 1"):
            hds.make_splits(10, 0, val, test)
    assert sum(len(v) for v in hds.make_splits(10, 0, 0.49, 0.5).values()) == 10


def test_check_splits_and_split_identity():
    hds = _dataset_module()
    ok = {"train": np.arange(2), "val": np.arange(2, 4), "test": np.arange(4, 6)}
    hds.check_splits(ok)
    with pytest.raises(hds.DataError, match=r"dataset toy: split sizes \{'train': 2, 'val': 1, 'test': 2\} "
                                            r"leave val with fewer than 2 rows"):
        hds.check_splits({**ok, "val": np.arange(1)}, "toy")
    with pytest.raises(hds.DataError, match=r"leave train, test with fewer than 2 rows"):
        hds.check_splits({"val": ok["val"], "train": np.arange(0), "test": np.arange(1)})
    digest = hds.split_sha256(ok)
    h = __import__("hashlib").sha256()
    for k in ("train", "val", "test"):
        h.update(k.encode() + b":" + str(len(ok[k])).encode() + b":")
        h.update(np.asarray(ok[k], dtype=np.int64).tobytes())
    assert digest == h.hexdigest()
    swapped = {"train": ok["val"], "val": ok["train"], "test": ok["test"]}
    assert hds.split_sha256(swapped) != digest
    assert hds.split_sha256({k: v.astype(np.int32) for k, v in ok.items()}) == digest


def test_fit_standardization_by_hand():
    hds = _dataset_module()
    x = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 2.0 + 1e-9]])
    mean, std = hds.fit_standardization(x)
    assert mean.tolist() == pytest.approx([2.0, 5.0, 2.0]) and mean.dtype == np.float32
    assert std.tolist() == pytest.approx([1.0, 1.0, 1.0]) and std.dtype == np.float32  # constant columns: 1
    mean2, std2 = hds.fit_standardization(np.array([[0.0], [4.0]]))
    assert std2.tolist() == [2.0]


def test_write_and_load_dataset_round_trip(tmp_path):
    hds = _dataset_module()
    rng = np.random.default_rng(0)
    views = [rng.normal(size=(12, 3)) * 2 + 1, rng.normal(size=(12, 2))]
    target = views[0][:, :2].copy()
    labels = np.arange(12) % 3
    splits = hds.make_splits(12, 1, 0.25, 0.25)
    meta = hds.write_dataset(tmp_path, views, target, labels, splits, {"dataset": "toy", "modality_names": ["a", "b"]})
    tr = splits["train"]
    assert meta["format_version"] == hds.FORMAT_VERSION and meta["n"] == 12 and meta["n_modalities"] == 2
    assert meta["modality_dims"] == [3, 2] and meta["n_classes"] == 3 and meta["target_dim"] == 2
    assert meta["split_sizes"] == {k: len(splits[k]) for k in ("train", "val", "test")}
    assert meta["target_range"] == pytest.approx([target[tr].min(), target[tr].max()])
    assert meta["split_sha256"] == hds.split_sha256(splits)
    assert meta["sha256"] == __import__("hashlib").sha256((tmp_path / "dataset.npz").read_bytes()).hexdigest()
    ds = hds.load_dataset(tmp_path)
    assert ds.n == 12 and ds.n_modalities == 2 and ds.dims == [3, 2] and ds.names == ["a", "b"]
    assert ds.labels.tolist() == labels.tolist() and ds.labels.dtype == np.int64
    assert ds.split_sha256 == hds.split_sha256(splits)
    for k in ("train", "val", "test"):
        assert ds.split(k).tolist() == splits[k].tolist()
    with pytest.raises(hds.DataError, match=r"unknown split 'dev'; available: \['test', 'train', 'val'\]"):
        ds.split("dev")
    # standardised with the training rows' statistics only
    mean, std = views[0][tr].mean(0), views[0][tr].std(0)
    assert np.allclose(ds.standardized(0), (views[0] - mean) / std, atol=1e-5)
    assert np.allclose(ds.standardized(0, np.array([3, 1])), ((views[0] - mean) / std)[[3, 1]], atol=1e-5)
    assert ds.standardized(1).dtype == np.float32
    assert np.allclose(ds.standardized(1)[tr].mean(0), 0.0, atol=1e-5)
    # no labels, default names
    meta2 = hds.write_dataset(tmp_path / "nl", views, target, None, splits, {"dataset": "toy"})
    assert meta2["n_classes"] is None
    ds2 = hds.load_dataset(tmp_path / "nl")
    assert ds2.labels is None and ds2.names == ["m0", "m1"]
    with pytest.raises(hds.DataError, match="leave"):
        hds.write_dataset(tmp_path / "bad", views, target, None, {**splits, "val": splits["val"][:1]}, {"dataset": "x"})


def test_load_dataset_refuses_missing_edited_and_unreadable_files(tmp_path):
    hds = _dataset_module()
    views = [np.arange(24.0).reshape(12, 2), np.arange(24.0).reshape(12, 2)[::-1].copy()]
    splits = hds.make_splits(12, 0, 0.25, 0.25)
    hds.write_dataset(tmp_path, views, views[0], None, splits, {"dataset": "toy"})
    with pytest.raises(hds.DataError, match=r"dataset.json does not exist; create the dataset with "
                                            r"`python -m harness data --out "):
        hds.load_dataset(tmp_path / "nowhere")
    npz = tmp_path / "dataset.npz"
    good = npz.read_bytes()
    npz.write_bytes(good[:-10])
    with pytest.raises(hds.DatasetIntegrityError, match=r"dataset.npz is corrupted or truncated: sha256 [0-9a-f]+ "
                                                        r"does not match the [0-9a-f]+ recorded in"):
        hds.load_dataset(tmp_path)
    with pytest.raises(hds.DatasetIntegrityError, match="cannot be read"):
        hds.load_dataset(tmp_path, verify=False)
    npz.write_bytes(good)
    assert hds.load_dataset(tmp_path).n == 12
    (tmp_path / "dataset.json").write_text("{")
    with pytest.raises(hds.DatasetIntegrityError, match="is not valid JSON"):
        hds.load_dataset(tmp_path)


# ----------------------------------------------------------------------------- divergence estimators by brute force


def _lse(a, axis=None):
    a = np.asarray(a, dtype=float)
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.exp(a - m).sum(axis=axis)) if axis is not None else \
        float(m.ravel()[0] + np.log(np.exp(a - m).sum()))


def _ref_log_mean_tuple_kernel(xs, h):
    """log mean over every M-tuple of exp(-S/(2h^2)), S = (1/M) sum_{m<n} |a_m - a_n|^2 (itertools)."""
    import itertools

    M = len(xs)
    vals = []
    for idx in itertools.product(*[range(len(x)) for x in xs]):
        a = [xs[m][i] for m, i in enumerate(idx)]
        s = sum(((a[m] - a[n]) ** 2).sum() for m in range(M) for n in range(m + 1, M)) / M
        vals.append(-s / (2 * h * h))
    return _lse(vals) - math.log(len(vals))


def _ref_holder_exact(xs, h):
    M = len(xs)
    return -_ref_log_mean_tuple_kernel(xs, h) + np.mean([_ref_log_mean_tuple_kernel([x] * M, h) for x in xs])


def _ref_holder_resub(xs, h, gamma):
    M = len(xs)
    w, c = gamma / M, 1.0 / M

    def log_kde(points, centers, loo):
        d2 = ((points[:, None] - centers[None]) ** 2).sum(-1) / (2 * h * h)
        out = []
        for i in range(len(points)):
            terms = [-d2[i, j] for j in range(len(centers)) if not (loo and j == i)]
            out.append(_lse(terms) - math.log(len(terms)))
        return np.array(out)

    overlap, entropy = [], []
    for m in range(M):
        ell = np.stack([log_kde(xs[m], xs[n], n == m) for n in range(M)])
        log_q = _lse(ell, axis=0) - math.log(M)
        overlap.append(_lse(w * ell.sum(0) - log_q) - math.log(len(xs[m])))
        entropy.append(_lse((gamma - 1) * ell[m]) - math.log(len(xs[m])))
    return -(_lse(overlap) - math.log(M)) + c * sum(entropy)


def _small_samples(sizes, d=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=gen, dtype=F64) for b in sizes]


@pytest.mark.parametrize("sizes", [(3, 4, 2), (2, 3, 2, 3)])
def test_exact_tuple_kernel_and_holder_against_brute_force(sizes):
    from harness.instruments import divergence as dv

    xs = _small_samples(sizes, seed=len(sizes))
    arrays = [x.numpy() for x in xs]
    h = 0.8
    ref = _ref_log_mean_tuple_kernel(arrays, h)
    for block in (1, 2, 3, 5, 7, 12, 1 << 22):
        assert float(dv._log_mean_tuple_kernel(xs, h, block_elems=block)) == pytest.approx(ref, abs=1e-10), block
    got = dv.holder(xs, bandwidth=h, estimator="exact")
    assert float(got) == pytest.approx(_ref_holder_exact(arrays, h), abs=1e-10)
    count = math.prod(sizes) + sum(b ** len(sizes) for b in sizes)
    assert dv.exact_tuple_count(list(sizes)) == count
    with pytest.raises(ValueError, match=rf"estimator='exact' needs {count:.3g} M-tuples for M={len(sizes)} "
                                         rf"modalities with B=\[{', '.join(map(str, sizes))}\] samples"):
        dv.holder(xs, bandwidth=h, estimator="exact", max_tuples=count - 1)
    assert float(dv.holder(xs, bandwidth=h, estimator="exact", max_tuples=count)) == pytest.approx(float(got))


def test_exact_holder_for_two_modalities_and_the_pair_form():
    from harness.instruments import divergence as dv

    xs = _small_samples((4, 3), seed=2)
    arrays = [x.numpy() for x in xs]
    for h in (0.5, 1.3):
        ref = _ref_holder_exact(arrays, h)
        assert float(dv.holder(xs, bandwidth=h, estimator="exact")) == pytest.approx(ref, abs=1e-10)
        assert float(dv.holder_pair(xs[0], xs[1], bandwidth=h)) == pytest.approx(ref, abs=1e-10)
        assert float(dv.holder_pair(xs[0], xs[1], bandwidth=h, estimator="exact")) == pytest.approx(ref, abs=1e-10)
        # D_CS = 2 x the alpha = gamma = 2 pair divergence
        assert float(dv.cauchy_schwarz(xs[0], xs[1], bandwidth=h)) == pytest.approx(2 * ref, abs=1e-10)


@pytest.mark.parametrize("gamma", [None, 2.5])
def test_resubstitution_holder_against_brute_force(gamma):
    from harness.instruments import divergence as dv

    xs = _small_samples((5, 4, 6), d=3, seed=9)
    arrays = [x.numpy() for x in xs]
    h = 0.9
    g = 3.0 if gamma is None else gamma
    got = float(dv.holder(xs, gamma, bandwidth=h))
    assert got == pytest.approx(_ref_holder_resub(arrays, h, g), abs=1e-10)
    assert float(dv.holder(xs, gamma, bandwidth=h, estimator="resubstitution")) == got


def test_pair_holder_resubstitution_by_brute_force():
    from harness.instruments import divergence as dv

    x, y = _small_samples((5, 4), d=2, seed=3)
    h, alpha, gamma = 0.7, 3.0, 2.5
    a, b = alpha, alpha / (alpha - 1)
    # the holder estimator with overlap exponents (gamma/alpha, gamma/beta), entropy weights (1/alpha, 1/beta)
    xs = [x.numpy(), y.numpy()]

    def log_kde(points, centers, loo):
        d2 = ((points[:, None] - centers[None]) ** 2).sum(-1) / (2 * h * h)
        return np.array([_lse([-d2[i, j] for j in range(len(centers)) if not (loo and j == i)])
                         - math.log(len(centers) - (1 if loo else 0)) for i in range(len(points))])

    w, c = np.array([gamma / a, gamma / b]), np.array([1 / a, 1 / b])
    overlap, entropy = [], []
    for m in range(2):
        ell = np.stack([log_kde(xs[m], xs[n], n == m) for n in range(2)])
        log_q = _lse(ell, axis=0) - math.log(2)
        overlap.append(_lse((w[:, None] * ell).sum(0) - log_q) - math.log(len(xs[m])))
        entropy.append(_lse((gamma - 1) * ell[m]) - math.log(len(xs[m])))
    ref = -(_lse(overlap) - math.log(2)) + (c * np.array(entropy)).sum()
    got = dv.holder_pair(x, y, alpha=alpha, gamma=gamma, bandwidth=h)
    assert float(got) == pytest.approx(ref, abs=1e-10)
    assert float(dv.holder_pair(x, y, alpha=alpha, gamma=gamma, bandwidth=h, estimator="resubstitution")) == \
        pytest.approx(ref, abs=1e-10)
    # alpha = gamma = 2 with the resubstitution estimator differs from the exact one
    assert float(dv.holder_pair(x, y, bandwidth=h, estimator="resubstitution")) != \
        pytest.approx(float(dv.holder_pair(x, y, bandwidth=h)), abs=1e-6)


def test_divergence_argument_errors_word_for_word():
    from harness.instruments import divergence as dv

    x, y = _small_samples((4, 4), seed=1)
    assert _message(dv.holder, [x, y], 1.0) == "gamma must be a finite number > 1, got 1.0"
    assert _message(dv.holder, [x, y], True) == "gamma must be a finite number > 1, got True"
    assert _message(dv.holder, [x, y], "3") == "gamma must be a finite number > 1, got '3'"
    assert _message(dv.holder, [x, y], float("inf")) == "gamma must be a finite number > 1, got inf"
    assert math.isfinite(float(dv.holder([x, y], 1.01, bandwidth=1.0)))
    assert _message(dv.holder, [x, y], estimator="x") == "estimator must be 'exact', 'resubstitution' or 'knn', got 'x'"
    assert _message(dv.holder, [x, y], 3, bandwidth=1.0, estimator="exact") == \
        "estimator='exact' needs gamma == M=2, got gamma=3"
    assert float(dv.holder([x, y], 2, bandwidth=1.0, estimator="exact")) == \
        pytest.approx(float(dv.holder([x, y], bandwidth=1.0, estimator="exact")))
    assert _message(dv.holder_pair, x, y, alpha=1.0) == \
        "alpha must be a finite number > 1 (beta = alpha/(alpha-1)), got 1.0"
    assert _message(dv.holder_pair, x, y, alpha=True) == \
        "alpha must be a finite number > 1 (beta = alpha/(alpha-1)), got True"
    assert _message(dv.holder_pair, x, y, alpha=float("nan")).startswith("alpha must be a finite number > 1")
    assert _message(dv.holder_pair, x, y, gamma=0.5) == "gamma must be a finite number > 1, got 0.5"
    assert _message(dv.holder_pair, x, y, estimator="y") == \
        "estimator must be 'auto', 'exact' or 'resubstitution', got 'y'"
    assert _message(dv.holder_pair, x, y, alpha=3.0, estimator="exact") == \
        "estimator='exact' needs alpha == gamma == 2, got alpha=3.0, gamma=2.0"
    assert _message(dv.holder_pair, x, y, gamma=3.0, estimator="exact") == \
        "estimator='exact' needs alpha == gamma == 2, got alpha=2.0, gamma=3.0"
    for bad in (True, None, [1.0]):
        assert _message(dv.kde_bandwidth, bad, x) == f"bandwidth must be a positive number or 'median', got {bad!r}"
    assert dv.kde_bandwidth(0.3, x) == 0.3 and dv.kde_bandwidth(2, x) == 2.0
    from objectives.kernels import resolve_bandwidth

    assert dv.kde_bandwidth("median", x, y) == pytest.approx(resolve_bandwidth("median", x, y) / SQ2)
    with pytest.raises(ValueError):
        dv.kde_bandwidth(0.0, x)
    with pytest.raises(ValueError):
        dv.kde_bandwidth(-1.0, x)
    with pytest.raises(ValueError, match="leave-one-out needs points == centers, got 3 points and 4 centers"):
        dv._log_kde_at(x[:3], x, 1.0, True)
    assert _message(dv.cauchy_schwarz, x, torch.zeros(4, 3, dtype=F64)) == \
        "(x, y)[1] has dimension d=3 but (x, y)[0] has d=2"
    assert _message(dv.holder, [x, y[:, :1]]) == "xs[1] has dimension d=1 but xs[0] has d=2"


def test_log_kde_at_by_hand_and_in_row_chunks(monkeypatch):
    from harness.instruments import divergence as dv

    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=F64)
    c = torch.tensor([[0.0], [2.0]], dtype=F64)
    h = 1.0
    ref = [math.log((1 + math.exp(-2)) / 2), math.log((math.exp(-0.5) + math.exp(-0.5)) / 2),
           math.log((math.exp(-4.5) + math.exp(-0.5)) / 2)]
    assert dv._log_kde_at(x, c, h, False).tolist() == pytest.approx(ref)
    loo = [math.log((math.exp(-0.5) + math.exp(-4.5)) / 2), math.log((math.exp(-0.5) + math.exp(-2)) / 2),
           math.log((math.exp(-4.5) + math.exp(-2)) / 2)]
    assert dv._log_kde_at(x, x, h, True).tolist() == pytest.approx(loo)
    monkeypatch.setattr(dv, "_ROW_BLOCK_ELEMS", 3)  # one row per chunk
    assert dv._row_chunk(3) == 1 and dv._row_chunk(0) == 3 and dv._row_chunk(2) == 1
    assert dv._log_kde_at(x, x, h, True).tolist() == pytest.approx(loo)
    assert dv._log_kde_at(x, c, h, False).tolist() == pytest.approx(ref)
    monkeypatch.setattr(dv, "_ROW_BLOCK_ELEMS", 4)
    assert dv._row_chunk(2) == 2 and dv._row_chunk(3) == 1 and dv._row_chunk(5) == 1


def test_holder_null_arguments_and_size(monkeypatch):
    from harness.instruments import divergence as dv

    gen = torch.Generator().manual_seed(4)
    pool = torch.randn(20, 2, generator=gen, dtype=F64)
    assert _message(dv.holder_null, [pool], 2, 5, True) == \
        "bandwidth must be a fixed positive number (the KDE's h), got True"
    assert _message(dv.holder_null, [pool], 2, 5, 0.0).startswith("bandwidth must be a fixed positive number")
    assert _message(dv.holder_null, [pool], 2, 5, float("inf")).startswith("bandwidth must be a fixed positive")
    assert _message(dv.holder_null, [pool], 1, 5, 1.0) == "n_mod must be an int >= 2, got 1"
    assert _message(dv.holder_null, [pool], True, 5, 1.0) == "n_mod must be an int >= 2, got True"
    assert _message(dv.holder_null, [pool], 2, 5, 1.0, draws=1) == "draws must be an int >= 2, got 1"
    assert _message(dv.holder_null, [pool], 2, 5, 1.0, draws=True) == "draws must be an int >= 2, got True"
    assert _message(dv.holder_null, [pool[:5]], 3, 5, 1.0) == \
        "the null needs 3 disjoint samples of >= 2 rows, but the smallest pool has 5 rows"
    seen = []
    real = dv.holder

    def spy(parts, gamma, bw, estimator):
        seen.append((len(parts), parts[0].shape[0], gamma, bw))
        return real(parts, gamma, bw, estimator)

    monkeypatch.setattr(dv, "holder", spy)
    r = dv.holder_null([pool, pool[:9]], 2, 7, 1.0, draws=3, seed=1, gamma=2.5)
    assert r["size"] == 4 and r["n"] == 3 and len(r["values"]) == 3  # 9 // 2 = 4 rows per sample
    assert seen == [(2, 4, 2.5, 1.0)] * 3
    v = np.array(r["values"])
    assert r["mean"] == pytest.approx(v.mean()) and r["sd"] == pytest.approx(v.std(ddof=1))
    assert r["q95"] == pytest.approx(np.quantile(v, 0.95))
    # draw t uses pool t mod 2, rows drawn by a generator seeded with the seed
    g = torch.Generator().manual_seed(1)
    first = torch.randperm(20, generator=g)[:8]
    assert r["values"][0] == pytest.approx(float(real(list(pool[first].reshape(2, 4, -1)), 2.5, 1.0, "resubstitution")))
    dflt = dv.holder_null([pool], 2, 3, 1.0)
    assert dflt["n"] == 8 and dflt["size"] == 3
    assert dflt["values"] == dv.holder_null([pool], 2, 3, 1.0, seed=0)["values"]


def test_proxy_bound_estimator_choice_and_errors():
    x, y, w = _small_samples((4, 4, 4), seed=5)
    assert proxy_bound([x, y], 1.0)["estimator"] == "exact"  # M = 2: always exact
    assert proxy_bound([x, y, w], 1.0, max_tuples=4 ** 3 + 3 * 4 ** 3)["estimator"] == "exact"
    r = proxy_bound([x, y, w], 1.0, max_tuples=4 ** 3 + 3 * 4 ** 3 - 1)
    assert r["estimator"] == "resubstitution" and r["guaranteed"] is False
    assert r["divergence"] == pytest.approx(float(dv_holder([x, y, w], 3.0, 1.0, "resubstitution")))
    rr = proxy_bound([x, y, w], 1.0, estimator="resubstitution")
    assert rr["estimator"] == "resubstitution" and rr["bound"] == pytest.approx(r["bound"])
    with pytest.raises(ValueError, match=r"proxy_bound needs paired samples \(equal B\), got B=\[4, 3\]"):
        proxy_bound([x, y[:3]], 1.0)
    with pytest.raises(ValueError, match="estimator must be 'auto', 'exact' or 'resubstitution', got 'z'"):
        proxy_bound([x, y], 1.0, estimator="z")
    with pytest.raises(ValueError, match="anchor must be an int"):
        proxy_bound([x, y], 1.0, anchor=2)


def dv_holder(*args):
    from harness.instruments import divergence as dv

    return dv.holder(*args)


def test_paired_effect_interval_uses_the_measurement_error_by_hand():
    from scipy import stats

    rows = []
    for seed, (dm, se) in enumerate([(1.0, 0.3), (2.0, 0.4), (4.0, 0.0)]):
        rows.append({"dataset": "a", "variant": "b", "M": 2, "seed": seed, "x": 0.0, "se": se})
        rows.append({"dataset": "a", "variant": "m", "M": 2, "seed": seed, "x": dm, "se": 0.0})
    df = pd.DataFrame(rows)
    res = st.paired_effect(df, "x", "m", "b", se_col="se")
    d = np.array([1.0, 2.0, 4.0])
    # one split (split_seed 0) shared by 3 units with mean error (0.3 + 0.4 + 0)/3
    se = math.sqrt(d.var(ddof=1) / 3 + (0.7 / 3) ** 2)
    assert res["se"] == pytest.approx(se)
    half = stats.t.ppf(0.975, 2) * se
    assert res["low"] == pytest.approx(d.mean() - half) and res["high"] == pytest.approx(d.mean() + half)
    plain = st.paired_effect(df, "x", "m", "b")
    assert plain["se"] == pytest.approx(math.sqrt(d.var(ddof=1) / 3))
    two = st.unit_interval(pd.DataFrame({"dataset": "a", "seed": [0, 1], "split_seed": 0, "value": [1.0, 3.0],
                                         "e": np.nan}))
    assert two["n"] == 2 and two["low"] == pytest.approx(2 - stats.t.ppf(0.975, 1) * 1.0)


def test_paired_cells_names_the_first_duplicated_cell():
    rows = [{"dataset": "a", "variant": "m", "M": m, "seed": 0, "x": 1.0} for m in (2, 3, 2, 3)]
    rows.append({"dataset": "a", "variant": "b", "M": 2, "seed": 0, "x": 1.0})
    with pytest.raises(ValueError) as info:
        st.paired_cells(pd.DataFrame(rows), "x", "m", "b")
    assert "'M': 2" in str(info.value).replace("np.int64(2)", "2") and "'M': 3" not in str(info.value)


def test_slope_units_keep_going_after_a_dropped_unit_and_refuse_text():
    df = pd.DataFrame({"dataset": "a", "seed": [0, 1, 1], "M": [2, 2, 4], "y": [5.0, 1.0, 2.0]})
    out = st.slope_units(df, "y")
    assert out["seed"].tolist() == [1] and out["value"].tolist() == pytest.approx([0.5])
    empty = st.slope_units(df[df["seed"] == 0], "y")
    assert empty.empty and list(empty.columns) == ["dataset", "seed", "split_seed", "value", "e", "n_m"]
    text = df.assign(y=["5", "bad", 2.0])
    assert st.slope_units(text, "y").empty  # unreadable values are dropped, not raised


def test_unit_values_without_an_error_column():
    cells = _cells([("a", 2, 0, 0, 1.0, 0.2)]).drop(columns="e")
    assert st.unit_values(cells)["e"].isna().all()


def test_dataset_messages_dtypes_and_pickles(tmp_path):
    import json as _json

    hds = _dataset_module()
    small = {"train": np.arange(2), "val": np.arange(1), "test": np.arange(2)}
    assert _message(hds.check_splits, small).startswith("dataset : split sizes")
    assert _message(hds.write_dataset, tmp_path / "w", [np.ones((5, 2))], np.ones((5, 1)), None, small,
                    {"dataset": "toy"}).startswith("dataset toy: split sizes")
    mean, std = hds.fit_standardization(np.array([[0.0], [1.0]]))
    assert std.tolist() == [0.5]
    views = [np.arange(24.0).reshape(12, 2), np.arange(24.0).reshape(12, 2)[::-1].copy()]
    splits = {k: v.astype(np.int32) for k, v in hds.make_splits(12, 0, 0.25, 0.25).items()}
    hds.write_dataset(tmp_path, views, views[0] * 2, None, splits, {"dataset": "toy"})
    with np.load(tmp_path / "dataset.npz") as z:
        assert z["view_0"].dtype == np.float32 and z["view_1"].dtype == np.float32
        assert z["target"].dtype == np.float32 and z["train_idx"].dtype == np.int64
    # an object array (pickled) is refused even with a matching checksum
    np.savez(tmp_path / "dataset.npz", view_0=np.array([{"a": 1}], dtype=object))
    meta = _json.loads((tmp_path / "dataset.json").read_text())
    meta["sha256"] = __import__("hashlib").sha256((tmp_path / "dataset.npz").read_bytes()).hexdigest()
    from harness.files import seal

    (tmp_path / "dataset.json").write_text(_json.dumps(seal(meta, hds.META_SEAL)))  # a forged but consistent record
    with pytest.raises(hds.DatasetIntegrityError, match=r"dataset.npz cannot be read: ValueError: "):
        hds.load_dataset(tmp_path)


# ----------------------------------------------------------------------------- claim 7: per-run correlations


def _history(runs, order_col="step"):
    """history rows: runs = {(seed, M): (holder values, proxy values)} in evaluation order."""
    from harness.experiment import keys

    rows = []
    for (seed, M), (hs, ps) in runs.items():
        for t, (h, p) in enumerate(zip(hs, ps)):
            rows.append({"dataset": "syn", "variant": "unialign", "seed": seed, "split_seed": 0, "M": M,
                         order_col: t + 1, keys.VAL_HOLDER: h, keys.VAL_PROXY: p})
    return pd.DataFrame(rows)


def test_run_correlations_by_hand():
    from scipy import stats

    from harness.experiment import keys
    from harness.report import claims

    n = claims.MIN_EVAL_POINTS
    t = np.arange(n, dtype=float)
    h = np.sin(t) + t
    p = np.cos(t) + 2 * t
    runs = {(0, 3): (h, p), (1, 3): (h[:n - 1], p[:n - 1]),  # too few points: dropped
            (2, 3): (np.ones(n), p), (3, 3): (h, -p), (4, 4): (h[::-1].copy(), p)}
    hist = _history(runs).sample(frac=1.0, random_state=0)  # evaluation order restored by step
    hc, pc = keys.VAL_HOLDER, keys.VAL_PROXY
    rs, most = claims._run_correlations(hist, hc, pc, True)
    assert most == n and list(rs.columns) == ["dataset", "seed", "split_seed", "M", "r"]
    assert rs[["seed", "M"]].values.tolist() == [[0, 3], [3, 3], [4, 4]]  # constant run 2 and short run 1 dropped
    assert rs["r"].tolist() == pytest.approx([stats.pearsonr(np.diff(h), np.diff(p)).statistic,
                                              stats.pearsonr(np.diff(h), np.diff(-p)).statistic,
                                              stats.pearsonr(np.diff(h[::-1]), np.diff(p)).statistic])
    levels, _ = claims._run_correlations(hist, hc, pc, False)
    assert levels["r"].iloc[0] == pytest.approx(stats.pearsonr(h, p).statistic)
    # without steps the epoch orders the points; unreadable values are dropped, not raised
    by_epoch = _history({(0, 3): (h, p)}, "epoch")
    by_epoch[keys.STEP] = np.nan
    by_epoch = by_epoch.iloc[[3, 0, 6, 1, 7, 2, 5, 4]]  # not a reversal: r would not survive the shuffle
    assert claims._run_correlations(by_epoch, hc, pc, True)[0]["r"].tolist() == pytest.approx(
        [stats.pearsonr(np.diff(h), np.diff(p)).statistic])
    text = _history({(0, 3): (list(h) + ["x"], list(p) + [1.0])})
    r_text, most_text = claims._run_correlations(text, hc, pc, True)
    assert most_text == n and r_text["r"].tolist() == pytest.approx([stats.pearsonr(np.diff(h), np.diff(p)).statistic])
    short = _history({(0, 3): (h[:2], p[:2])})
    r_short, most_short = claims._run_correlations(short, hc, pc, True)
    assert r_short.empty and most_short == 2
    assert claims._run_correlations(short.iloc[:0], hc, pc, True)[1] == 0


def test_paired_statistic_label():
    from harness.report import claims

    assert claims._paired_stat([2, 4]) == "mean paired difference over units (M = 2, 4)"
    assert claims._paired_stat([]) == "mean paired difference over units (M = –)"


def test_gaussian_holder_closed_form_by_hand_and_its_checks():
    from harness.instruments import divergence as dv

    # mus (0, 0), (2, 0), (1, 3): mean (1, 1); spread 2 + 2 + 4 = 8... (1+1) + (1+1) + (0+4) = 8
    assert dv.gaussian_holder_closed_form([[0, 0], [2, 0], [1, 3]], 0.5, 3.0) == pytest.approx(3.0 / (2 * 3 * 0.5) * 8)
    assert dv.gaussian_holder_closed_form(np.array([[1.0], [1.0]]), 2.0, 2.0) == 0.0
    assert dv.gaussian_holder_closed_form([[0.1], [0.3]], 1.0, 2.0) == pytest.approx(2.0 / 4.0 * 0.02, rel=1e-12)
    assert _message(dv.gaussian_holder_closed_form, [1.0, 2.0], 1.0, 2.0) == "mus must have shape (M >= 2, d), got (2,)"
    assert _message(dv.gaussian_holder_closed_form, [[1.0, 2.0]], 1.0, 2.0) == \
        "mus must have shape (M >= 2, d), got (1, 2)"
    assert _message(dv.gaussian_holder_closed_form, [[1.0], [float("nan")]], 1.0, 2.0) == \
        "mus contains non-finite values"
    for bad in (True, 0.0, -1.0, float("inf")):
        assert _message(dv.gaussian_holder_closed_form, [[0.0], [1.0]], bad, 2.0) == \
            f"sigma2 must be a finite positive number, got {bad!r}"
        assert _message(dv.gaussian_holder_closed_form, [[0.0], [1.0]], 1.0, bad) == \
            f"gamma must be a finite positive number, got {bad!r}"


def test_divergence_messages_and_defaults_more():
    from harness.instruments import divergence as dv

    x, y, w = _small_samples((4, 4, 4), seed=11)
    assert _message(dv.holder_pair, x, torch.zeros(4, 3, dtype=F64)) == "(x, y)[1] has dimension d=3 but (x, y)[0] has d=2"
    assert _message(dv.holder_pair, x, y, alpha="3") == \
        "alpha must be a finite number > 1 (beta = alpha/(alpha-1)), got '3'"
    # the default bandwidth is the median heuristic
    assert float(dv.holder_pair(x, y)) == pytest.approx(float(dv.holder_pair(x, y, bandwidth="median")))
    assert float(dv.holder_pair(x, y)) != pytest.approx(float(dv.holder_pair(x, y, bandwidth=3.0)))
    # the refusal of the exact estimator names count, memory, dtype and the limit
    msg = _message(dv.holder, [x, y, w], bandwidth=1.0, estimator="exact", max_tuples=100)
    total = 4 ** 3 + 3 * 4 ** 3
    assert msg == (f"estimator='exact' needs {total:.3g} M-tuples for M=3 modalities with B=[4, 4, 4] samples "
                   f"(cost O(B^M)); as one tensor that is {total * 8 / 2 ** 30:.3g} GiB (torch.float64), and it "
                   f"exceeds max_tuples={100:.3g}. Use estimator='resubstitution' (O(M^2 B^2)), fewer samples, "
                   "or a larger max_tuples.")
    # B differs from d: the count is over rows
    xs5 = _small_samples((5, 5, 5), d=2, seed=1)
    assert "B=[5, 5, 5]" in _message(dv.holder, xs5, bandwidth=1.0, estimator="exact", max_tuples=10)
    # proxy_bound passes max_tuples on to the exact estimator and anchors on modality 0 by default
    with pytest.raises(ValueError, match="exceeds max_tuples=10"):
        proxy_bound([x, y, w], 1.0, estimator="exact", max_tuples=10)
    z = [t.numpy() for t in (x, y, w)]
    l0 = (((z[0] - z[1]) ** 2).sum(1).mean() + ((z[0] - z[2]) ** 2).sum(1).mean()) / 2
    assert proxy_bound([x, y, w], 1.0)["L_align_anchor"] == pytest.approx(l0, rel=1e-12)
    # holder_null: argument types, the smallest accepted sizes and the pools' name
    pool = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert _message(dv.holder_null, [pool], 2.5, 2, 1.0) == "n_mod must be an int >= 2, got 2.5"
    assert _message(dv.holder_null, [pool], 2, 2, 1.0, draws=2.5) == "draws must be an int >= 2, got 2.5"
    r = dv.holder_null([pool[:4]], 2, 2, 1.0, draws=2)
    assert r["size"] == 2 and r["n"] == 2
    assert r["mean"] == float(np.mean(r["values"])) and r["sd"] == float(np.std(r["values"], ddof=1))
    assert _message(dv.holder_null, [pool, pool[:, :1]], 2, 2, 1.0) == "pools[1] has dimension d=1 but pools[0] has d=2"


def test_paired_effect_passes_its_confidence_on():
    from scipy import stats

    rows = [{"dataset": "a", "variant": v, "M": 2, "seed": s, "x": (s + 1.0) * (v == "m")}
            for v in ("m", "b") for s in range(3)]
    res = st.paired_effect(pd.DataFrame(rows), "x", "m", "b", confidence=0.8)
    se = np.std([1.0, 2.0, 3.0], ddof=1) / math.sqrt(3)
    assert res["high"] - res["low"] == pytest.approx(2 * stats.t.ppf(0.9, 2) * se)


def test_divergence_defaults_and_closed_form_centroid():
    from harness.instruments import divergence as dv

    x, y = _small_samples((5, 4), seed=21)
    assert float(dv.cauchy_schwarz(x, y)) == pytest.approx(float(dv.cauchy_schwarz(x, y, "median")), rel=1e-12)
    assert float(dv.holder([x, y])) == pytest.approx(float(dv.holder([x, y], bandwidth="median")), rel=1e-12)
    # the spread is around the mean vector (2, 0), not around the mean of all coordinates
    assert dv.gaussian_holder_closed_form([[0.0, 0.0], [4.0, 0.0]], 1.0, 2.0) == pytest.approx(2.0 / 4.0 * 8.0)
    assert dv.gaussian_holder_closed_form([[0.0], [1.0]], 1.0, 0.5) == pytest.approx(0.5 / 4.0 * 0.5)


def test_standardization_in_float64_names_the_modality():
    hds = _dataset_module()
    big = np.array([[2e19, 1.0], [4e19, 3.0], [3e19, 2.0]])  # float32 squares of these overflow
    mean, std = hds.fit_standardization(big, 2)
    assert np.isfinite(mean).all() and np.isfinite(std).all() and std[0] == pytest.approx(np.std(big[:, 0]), rel=1e-6)
    with pytest.raises(hds.DataError, match=r"^modality 2 \(2 columns\): standardisation statistics of 1 column"):
        hds.fit_standardization(np.array([[np.inf, 1.0], [0.0, 2.0]]), 2)
    with pytest.raises(hds.DataError, match=r"^modality 1 \(3 columns\): every column is constant"):
        hds.fit_standardization(np.ones((4, 3)), 1)
