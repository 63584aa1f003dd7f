"""The report's statistics against hand computations and scipy: Holm, the unit interval with a shared
measurement error, per-unit slopes, and the Fisher-z interval of claim 7."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.experiment import keys
from harness.report import stats as st


def test_holm_by_hand():
    # sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.5 (x1 = 0.5); NaN ignored
    got = st.holm([0.03, 0.5, float("nan"), 0.01, 0.02])
    assert np.allclose(got[[0, 1, 3, 4]], [0.06, 0.5, 0.04, 0.06]) and math.isnan(got[2])
    # monotone step-down: a later raw product below an earlier one is raised to it
    assert np.allclose(st.holm([0.001, 0.0011, 0.9]), [0.003, 0.003, 0.9])
    assert np.allclose(st.holm([0.6, 0.9]), [1.0, 1.0])
    assert st.holm([]).size == 0


def test_t_test_matches_scipy_one_sample():
    x = np.array([0.3, 0.1, 0.5, 0.2, 0.45])
    lo, hi, p = st.t_test(x.mean(), x.std(ddof=1) / math.sqrt(x.size), x.size - 1)
    res = stats.ttest_1samp(x, 0.0)
    ci = res.confidence_interval(0.95)
    assert p == pytest.approx(res.pvalue) and lo == pytest.approx(ci.low) and hi == pytest.approx(ci.high)


def _units(values, errors, splits):
    return pd.DataFrame({"dataset": "d", "seed": range(len(values)), "split_seed": splits,
                         "value": values, "e": errors, "n_m": 1})


def test_unit_interval_without_measurement_error_is_a_t_interval():
    v = [1.0, 2.0, 4.0]
    res = st.unit_interval(_units(v, [np.nan] * 3, [0, 0, 0]))
    mean, _sd, lo, hi, n = st.t_interval(v)
    assert (res["estimate"], res["n"], res["df"]) == (mean, 3, 2)
    assert res["low"] == pytest.approx(lo) and res["high"] == pytest.approx(hi)


def test_unit_interval_adds_the_shared_error_of_each_split():
    v = np.array([1.0, 2.0, 4.0, 3.0])
    e = np.array([0.5, 0.7, 0.2, 0.4])
    splits = [0, 0, 1, 1]
    res = st.unit_interval(_units(v, e, splits))
    # by hand: s^2/n + sum_k (n_k/n)^2 e_k^2, e_k = mean error of split k's units
    var = v.var(ddof=1) / 4 + (2 / 4) ** 2 * 0.6**2 + (2 / 4) ** 2 * 0.3**2
    half = stats.t.ppf(0.975, 3) * math.sqrt(var)
    assert res["se"] == pytest.approx(math.sqrt(var))
    assert res["low"] == pytest.approx(v.mean() - half) and res["high"] == pytest.approx(v.mean() + half)
    assert res["p"] == pytest.approx(2 * stats.t.sf(v.mean() / math.sqrt(var), 3))
    # one unit: no interval
    one = st.unit_interval(_units([1.0], [0.1], [0]))
    assert one["n"] == 1 and math.isnan(one["low"]) and math.isnan(one["p"])


def test_paired_cells_combine_measurement_errors_and_average_units_over_m():
    rows = []
    for variant, shift, se in (("a", 1.0, 3.0), ("b", 0.0, 4.0)):
        for m in (2, 3):
            for seed in (0, 1):
                rows.append({"dataset": "d", "variant": variant, "M": m, "seed": seed, "split_seed": 0,
                             "x": shift + m + 10 * seed + (0.5 if variant == "a" and m == 3 else 0.0), "x_se": se})
    cells = st.paired_cells(pd.DataFrame(rows), "x", "a", "b", "x_se")
    assert list(cells["d"]) == [1.0, 1.0, 1.5, 1.5] and np.allclose(cells["e"], 5.0)
    units = st.unit_values(cells)
    assert list(units["value"]) == [1.25, 1.25] and list(units["n_m"]) == [2, 2]
    dup = pd.DataFrame(rows + [rows[0]])
    with pytest.raises(ValueError, match="more than one run"):
        st.paired_cells(dup, "x", "a", "b")


def test_slope_units_one_slope_per_unit():
    rows = [{"dataset": "d", "seed": s, "split_seed": 0, "M": m, "y": (s + 1) * m + 0.1 * (m % 2)}
            for s in (0, 1, 2) for m in (2, 3, 4, 5)]
    units = st.slope_units(pd.DataFrame(rows), "y")
    for s, slope in zip(units["seed"], units["value"]):
        x = np.array([2, 3, 4, 5.0])
        assert slope == pytest.approx(stats.linregress(x, (s + 1) * x + 0.1 * (x % 2)).slope)
    with pytest.raises(keys.MissingColumnError, match="'z'"):
        st.slope_units(pd.DataFrame(rows), "z")


def test_fisher_interval_is_computed_on_z_not_on_r():
    r = np.array([0.99, 0.5, 0.0, 0.9])
    runs = pd.DataFrame({"dataset": "d", "seed": range(4), "split_seed": 0, "M": 3, "r": r})
    res = st.fisher_interval(st.fisher_units(runs))
    z = np.arctanh(r)
    half = stats.t.ppf(0.975, 3) * z.std(ddof=1) / 2
    assert res["estimate"] == pytest.approx(np.tanh(z.mean()))
    assert res["low"] == pytest.approx(np.tanh(z.mean() - half)) and res["high"] == pytest.approx(np.tanh(z.mean() + half))
    # the raw-correlation interval differs clearly: this test fails if the mean is taken on r
    raw_half = stats.t.ppf(0.975, 3) * r.std(ddof=1) / 2
    assert abs(res["estimate"] - r.mean()) > 0.05 and abs(res["low"] - (r.mean() - raw_half)) > 0.05
    # runs of one unit at several M are averaged in z first: one unit
    two_m = pd.DataFrame({"dataset": "d", "seed": 0, "split_seed": 0, "M": [2, 3], "r": [0.9, 0.99]})
    u = st.fisher_units(two_m)
    assert len(u) == 1 and u["value"].iloc[0] == pytest.approx(np.arctanh([0.9, 0.99]).mean())


# ----------------------------------------------------------------------------- power, detectable effect, equivalence


def test_power_matches_a_simulation_of_the_t_test():
    """power_at against the rejection rate of scipy's one-sample t test on simulated units."""
    from scipy import stats as sps

    from harness.report import stats as st

    rng = np.random.default_rng(0)
    n, sd, effect, alpha = 4, 1.0, 1.5, 0.05
    draws = rng.normal(effect, sd, size=(40000, n))
    rate = float((sps.ttest_1samp(draws, 0.0, axis=1).pvalue < alpha).mean())
    assert st.power_at(effect, sd / np.sqrt(n), n - 1, alpha) == pytest.approx(rate, abs=0.01)
    # at no effect the power is the level; it rises with the effect and with the units
    assert st.power_at(0.0, 0.5, 3, alpha) == pytest.approx(alpha, abs=1e-9)
    assert st.power_at(1.0, 0.5, 3, alpha) < st.power_at(2.0, 0.5, 3, alpha) < st.power_at(2.0, 0.25, 15, alpha)


def test_minimal_detectable_effect_has_the_asked_power():
    from harness.report import stats as st

    for se, df, alpha in ((0.5, 2, 0.05), (0.01, 9, 0.0125), (3.0, 29, 0.05)):
        mde = st.minimal_detectable_effect(se, df, alpha, 0.8)
        assert st.power_at(mde, se, df, alpha) == pytest.approx(0.8, abs=1e-6)
    # few units at a strict level: the far tail of the noncentral t must not break the search
    assert math.isfinite(st.minimal_detectable_effect(1.0, 2, 0.05 / 4, 0.8))
    assert math.isnan(st.minimal_detectable_effect(math.nan, 2, 0.05))


def test_units_for_power_is_the_first_n_of_a_linear_scan():
    """The bisection against a plain loop over n, and the power on both sides of the answer."""
    def scan(effect, sd, alpha, power=0.8):
        for n in range(2, 1001):
            if st.power_at(effect, sd / math.sqrt(n), n - 1, alpha) >= power:
                return n
        return math.nan

    for effect, sd, alpha in ((1.0, 1.59, 0.025), (0.01, 0.00928, 0.0125), (0.02, 0.0034, 0.025),
                              (1.0, 0.1, 0.05), (0.5, 3.0, 0.05)):
        n = st.units_for_power(effect, sd, alpha)
        assert n == scan(effect, sd, alpha), (effect, sd, alpha)
        if n > 2:
            assert st.power_at(effect, sd / math.sqrt(n - 1), n - 2, alpha) < 0.8
        assert st.power_at(effect, sd / math.sqrt(n), n - 1, alpha) >= 0.8
    # beyond the search, no spread, no effect: undefined
    assert math.isnan(st.units_for_power(0.001, 10.0, 0.05))
    assert math.isnan(st.units_for_power(1.0, 0.0, 0.05))
    assert math.isnan(st.units_for_power(0.0, 1.0, 0.05))
    assert math.isnan(st.units_for_power(1.0, math.nan, 0.05))


def test_tost_by_hand_and_the_no_effect_verdict():
    from scipy import stats as sps

    from harness.report import stats as st

    est, se, df, delta = 0.1, 0.2, 5, 1.0
    by_hand = max(sps.t.sf((est + delta) / se, df), sps.t.cdf((est - delta) / se, df))
    assert st.tost(est, se, df, delta) == pytest.approx(by_hand, rel=1e-12)
    assert st.tost(est, se, df, delta) < 0.05 < st.tost(est, se, df, 0.3)
    # significant -> supported / contradicted; else an equivalence below alpha -> no effect of interest
    assert st.verdict(est, 0.5, +1, 6, 0.95, p_tost_adjusted=0.01) == st.NO_EFFECT
    assert st.verdict(est, 0.5, +1, 6, 0.95, p_tost_adjusted=0.2) == "inconclusive"
    assert st.verdict(est, 0.01, -1, 6, 0.95, p_tost_adjusted=0.01) == "contradicted"
    assert st.verdict(est, 0.5, +1, 1, 0.95, p_tost_adjusted=0.0) == "inconclusive"  # one unit decides nothing
    assert st.overall([st.NO_EFFECT, st.NO_EFFECT]) == st.NO_EFFECT
    assert st.overall([st.NO_EFFECT, "inconclusive"]) == "inconclusive"
    assert st.overall([st.NO_EFFECT, "supported"]) == "supported"
