"""The k-nearest-neighbour estimator of the global Hölder divergence, ``holder(..., estimator="knn")``.

(a) a naive loop reference (python loops over points, ``math.lgamma``) agrees with the vectorised
estimator; (b) isotropic Gaussians against ``gaussian_holder_closed_form``; (c) identical
distributions give ~0; (d) argument errors name ``k``; (e) float32, duplicates, chunking, devices;
and the validation grid's kNN rows.

Tolerances were set from measurements (8 seeds per configuration, B = 2000, mean of 3 draws, true
D_H = 0.5, k = 5): the largest |mean - truth| seen was 0.095 (M = 3, d = 2), 0.086 (M = 2, gamma = 3,
d = 1), 0.054 (M = 2, gamma = 2); hence the stated ``GAUSS_TOL = 0.12``. Without the Gamma-function
corrections the error was >= 0.15 wherever they matter (M = 3; M = 2 with gamma = 3): for M = 2,
gamma = 2 the corrections cancel exactly (tested). On identical distributions (B = 1500, one draw) the
largest |D| seen was 0.054 (M = 2) and 0.145 (M = 3): ``NULL_TOL = 0.16``; the uncorrected estimate is
shifted by the constant -0.288 (M = 3, gamma = 3, k = 5).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from harness.instruments import divergence as dv
from harness.instruments import validation as ev
from harness.instruments.divergence import gaussian_holder_closed_form, holder

F64 = torch.float64
GAUSS_TOL = 0.12
NULL_TOL = 0.16


def _lse(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def naive_knn_holder(xs, gamma, k):
    """Deliberately naive: python loops over points, sorted distance lists, math.lgamma."""
    n_mod = len(xs)
    pts = [x.tolist() for x in xs]
    d = len(pts[0][0])
    log_vd = d / 2 * math.log(math.pi) - math.lgamma(d / 2 + 1)

    def log_u(x, sample, skip):
        dist = sorted(math.dist(x, y) for j, y in enumerate(sample) if j != skip)
        r = max(dist[k - 1], 1e-6)
        n_eff = len(sample) - (0 if skip is None else 1)
        return math.log(n_eff) + log_vd + d * math.log(r)

    def corr(a):
        return math.lgamma(k) - math.lgamma(k - a)

    w = gamma / n_mod
    overlap, entropy = [], []
    for m in range(n_mod):
        over_terms, ent_terms = [], []
        for i, x in enumerate(pts[m]):
            t = 0.0
            for n in range(n_mod):
                a = w - 1 if n == m else w
                t += -a * log_u(x, pts[n], i if n == m else None) + corr(a)
            over_terms.append(t)
            ent_terms.append((1 - gamma) * log_u(x, pts[m], i) + corr(gamma - 1))
        overlap.append(_lse(over_terms) - math.log(len(pts[m])))
        entropy.append(_lse(ent_terms) - math.log(len(pts[m])))
    return -(_lse(overlap) - math.log(n_mod)) + sum(entropy) / n_mod


def _gauss(n_mod, d, gamma, seed, target=0.5):
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(n_mod, d, generator=gen, dtype=F64)
    mu = mu - mu.mean(0)
    mu = mu * math.sqrt(target / gaussian_holder_closed_form(mu, 1.0, gamma))
    return mu, gen


# ----------------------------------------------------------------------------- (a) naive reference


@pytest.mark.parametrize("sizes, gamma, k", [((14, 11), None, 3), ((14, 11), 2.5, 2), ((12, 9, 10), None, 3),
                                             ((12, 9, 10), 4.0, 4)])
def test_vectorised_matches_naive_loops(sizes, gamma, k):
    gen = torch.Generator().manual_seed(len(sizes) * 10 + k)
    xs = [torch.randn(b, 3, generator=gen, dtype=F64) + 0.3 * i for i, b in enumerate(sizes)]
    g = float(len(sizes)) if gamma is None else gamma
    got = float(holder(xs, gamma, estimator="knn", k=k))
    assert got == pytest.approx(naive_knn_holder(xs, g, k), abs=1e-10)


def test_correction_factors_by_hand():
    # E[U^-a] for U ~ Gamma(k, 1) is Gamma(k - a) / Gamma(k): a = 1, k = 5 -> 1/4; a = 2 -> 1/12
    assert math.exp(dv._log_power_correction(5, 1.0)) == pytest.approx(4.0)
    assert math.exp(dv._log_power_correction(5, 2.0)) == pytest.approx(12.0)
    assert dv._log_power_correction(5, 0.0) == 0.0
    # Poczos & Schneider's B_{k,alpha} = Gamma(k)^2 / (Gamma(k-alpha+1) Gamma(k+alpha-1)) is the product of
    # the factors for alpha - 1 and 1 - alpha
    k, alpha = 6, 1.7
    b_ps = math.exp(2 * math.lgamma(k) - math.lgamma(k - alpha + 1) - math.lgamma(k + alpha - 1))
    mine = math.exp(dv._log_power_correction(k, alpha - 1) + dv._log_power_correction(k, 1 - alpha))
    assert mine == pytest.approx(b_ps)


# ----------------------------------------------------------------------------- (b) Gaussians, closed form


@pytest.mark.parametrize("n_mod, gamma, d", [(2, 2.0, 1), (2, 2.0, 2), (2, 3.0, 1), (3, 3.0, 1), (3, 3.0, 2)])
def test_gaussians_match_the_closed_form(n_mod, gamma, d):
    mu, gen = _gauss(n_mod, d, gamma, seed=7 * n_mod + d + int(gamma))
    corrected, plain = [], []
    for _ in range(3):
        xs = [mu[m] + torch.randn(2000, d, generator=gen, dtype=F64) for m in range(n_mod)]
        corrected.append(float(holder(xs, gamma, estimator="knn")))
        plain.append(float(dv._holder_knn(xs, gamma, 5, corrected=False)))
    est, unc = sum(corrected) / 3, sum(plain) / 3
    assert abs(est - 0.5) < GAUSS_TOL, (est, unc)
    if n_mod == 2 and gamma == 2.0:  # the corrections of the two terms cancel exactly
        assert unc == pytest.approx(est, abs=1e-9)
    else:  # a missing correction is visible
        assert abs(unc - 0.5) > GAUSS_TOL and abs(unc - 0.5) > abs(est - 0.5), (est, unc)


# ----------------------------------------------------------------------------- (c) identical distributions


@pytest.mark.parametrize("n_mod", [2, 3])
def test_identical_distributions_give_about_zero(n_mod):
    gen = torch.Generator().manual_seed(40 + n_mod)
    pool = torch.randn(1500 * n_mod, 2, generator=gen, dtype=F64)
    xs = list(pool.reshape(n_mod, 1500, 2))
    est = float(holder(xs, estimator="knn"))
    assert abs(est) < NULL_TOL
    unc = float(dv._holder_knn(xs, float(n_mod), 5, corrected=False))
    # the corrections shift the estimate by a data-independent constant
    k, w, g = 5, 1.0, float(n_mod)
    c_over = sum(dv._log_power_correction(k, w - 1 if n == 0 else w) - (w - 1 if n == 0 else w) * math.log(k)
                 for n in range(n_mod))
    c_ent = dv._log_power_correction(k, g - 1) - (g - 1) * math.log(k)
    assert est - unc == pytest.approx(-c_over + c_ent, abs=1e-9)
    if n_mod == 3:
        assert est - unc == pytest.approx(-0.288, abs=1e-3) and abs(unc) > NULL_TOL


# ----------------------------------------------------------------------------- (d) argument errors


def test_bad_k_and_shapes_raise_naming_k():
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(8, 2, generator=gen, dtype=F64), torch.randn(6, 2, generator=gen, dtype=F64)]
    for bad in (0, -1, True, 2.0, "5", None):
        with pytest.raises(ValueError, match=r"k must be an int >= 1, got k="):
            holder(xs, estimator="knn", k=bad)
    for bad in (6, 7):  # not smaller than the smallest sample (6 rows)
        with pytest.raises(ValueError, match=rf"k must be smaller than the smallest sample size \(6.*k={bad}"):
            holder(xs, estimator="knn", k=bad)
    with pytest.raises(ValueError, match=r"k must be > gamma - 1 = 3.*k=3"):
        holder(xs, 4.0, estimator="knn", k=3)
    assert math.isfinite(float(holder(xs, 4.0, estimator="knn", k=4)))
    with pytest.raises(ValueError):  # mismatched d
        holder([xs[0], torch.randn(6, 3, dtype=F64)], estimator="knn")
    with pytest.raises(ValueError):  # one modality only
        holder([xs[0]], estimator="knn")
    with pytest.raises(ValueError, match="gamma"):
        holder(xs, 1.0, estimator="knn")
    # the old estimator message is unchanged
    with pytest.raises(ValueError, match="estimator must be 'exact', 'resubstitution' or 'knn', got 'kde'"):
        holder(xs, estimator="kde")


# ----------------------------------------------------------------------------- (e) dtype, duplicates, chunks


def test_float32_duplicates_bandwidth_ignored_and_chunking(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(60, 4, generator=gen, dtype=F64) + 0.2 * i for i in range(3)]
    ref = holder(xs, estimator="knn")
    assert ref.dtype == F64 and ref.dim() == 0
    v32 = holder([x.float() for x in xs], estimator="knn")
    assert v32.dtype == torch.float32 and torch.isfinite(v32)
    assert float(v32) == pytest.approx(float(ref), abs=1e-3)
    # the bandwidth is ignored
    assert float(holder(xs, bandwidth=0.01, estimator="knn")) == float(ref)
    # duplicated points (zero k-NN distances) stay finite, in both dtypes
    dup = [torch.cat([x[:10]] * 6) for x in xs]
    for dt in (F64, torch.float32):
        assert torch.isfinite(holder([x.to(dt) for x in dup], estimator="knn"))
    # row-chunked equals unchunked: one row per chunk
    monkeypatch.setattr(dv, "_ROW_BLOCK_ELEMS", 7)
    assert dv._row_chunk(60) == 1
    assert float(holder(xs, estimator="knn")) == pytest.approx(float(ref), abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_inputs_device():
    gen = torch.Generator().manual_seed(5)
    xs = [torch.randn(200, 8, generator=gen, dtype=F64) + 0.1 * i for i in range(3)]
    cpu = holder(xs, estimator="knn")
    for dt in (F64, torch.float32):
        got = holder([x.to("cuda", dt) for x in xs], estimator="knn")
        assert got.device.type == "cuda" and got.dtype == dt
        assert float(got) == pytest.approx(float(cpu), abs=1e-3 if dt == torch.float32 else 1e-9)


# ----------------------------------------------------------------------------- validation grid


def test_validation_grid_knn_rows_calibration_and_plot(tmp_path):
    cfg = dict(ev.SWEEP, dims=[4, 8], modalities=[2, 3], n_samples=40, draws=2, name="t", knn=True)
    df = pd.DataFrame(ev.run_grid(cfg, seed=0, target=0.1, log=lambda *_: None))
    knn = df[df.estimator == "knn"]
    assert len(knn) == 2 * 2 * 2  # every (M, d, draw)
    assert set(knn.bandwidth_rule) == {ev.KNN_RULE} and knn.h.isna().all()
    assert knn.k.tolist() == [ev.knn_k(m) for m in knn.M]
    assert knn.truth.tolist() == pytest.approx([0.1] * len(knn))
    # the KDE rows are those of the grid without kNN
    plain = pd.DataFrame(ev.run_grid(dict(cfg, knn=False), seed=0, target=0.1, log=lambda *_: None))
    kde = df[df.estimator != "knn"].drop(columns=["k", "seconds"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(kde, plain.drop(columns=["seconds"]))
    # calibration: resubstitution rows for the KDE rules, kNN rows on request
    fixed = ev.calibration(df, 8, "fixed")
    assert fixed["estimator"] == "resubstitution" and fixed["n"] + fixed["nonpositive"] == 4
    c = ev.calibration(df, 8, "knn")
    assert c["estimator"] == "knn" and c["n"] + c["nonpositive"] == 4 and math.isnan(c["h"])
    assert c["note"].startswith("kNN estimator at d = 8")
    with pytest.raises(ValueError, match="bandwidth must be 'fixed', 'median' or 'knn'"):
        ev.calibration(df, 8, "exact")
    summ = ev.summarise(df)
    assert set(summ[summ.estimator == "knn"].bandwidth_rule) == {ev.KNN_RULE}
    assert "knn estimator" in ev._finding(df)
    figs = ev.plot(df, tmp_path / "v.png")
    assert all(p.stat().st_size > 0 for p in figs)


def test_presets_switch_knn():
    import argparse

    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    assert ev.resolve_config(parser.parse_args(["--preset", "sweep"]))["knn"] is True
    assert ev.resolve_config(parser.parse_args(["--preset", "quick"]))["knn"] is False
    assert ev.resolve_config(parser.parse_args(["--preset", "sweep", "--no-knn"]))["knn"] is False
