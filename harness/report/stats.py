"""The statistics behind the claim verdicts and the tables' intervals.

Design
------
* **Unit.** One (training seed, data-split seed) pair of a dataset (:data:`harness.experiment.keys.UNIT_KEYS`).
  Runs at different M of one unit share their data split and test rows, so they are not independent:
  a unit contributes one number, the mean over the M at which it was measured (or, for a trend in
  M, its own least-squares slope).
* **Pairing.** A method's run is paired with the baseline's run of the same (dataset, M, seed,
  split seed) (:data:`~harness.experiment.keys.PAIR_KEYS`), by key, never by row position; cells
  present for one side only are dropped.
* **Interval.** Student t over units with ``n - 1`` degrees of freedom, standard error
  ``sqrt(s^2 / n + sum_k (n_k / n)^2 e_k^2)``: ``s`` the sd of the unit values (training seed and
  split-to-split variation) and ``e_k`` the measurement error of split k shared by its ``n_k`` units
  (the test rows, or the estimator's noise floor), where a metric has one: ``e`` of one paired
  difference is ``sqrt(se_method^2 + se_baseline^2)`` (an upper bound when the two share test rows,
  since their errors then correlate positively), ``e`` of a unit the mean over its M and ``e_k`` the
  mean over the split's units (upper bounds on the sd of a mean of correlated errors, by Minkowski's
  inequality). So the interval covers the test-set sampling error of one shared split instead of
  ignoring it, conservatively.
* **Measurement error.** Each unit has its own data split, so the unit-to-unit spread already holds
  the test-query sampling error of retrieval and the divergence estimator's noise; the claims add
  nothing on top of it (``e`` stays NaN there). :func:`unit_interval` keeps the shared-error term for
  a caller whose units share one test split.
* **Power and equivalence.** A row with a declared smallest effect of interest ``delta`` reports the
  power of its t test at ``delta`` and the minimal detectable effect at 80 % power (:func:`power_at`,
  :func:`minimal_detectable_effect`, at the Bonferroni level of its family, Holm's strictest step),
  and the two one-sided tests of ``|effect| < delta`` (:func:`tost`): a row whose Holm-adjusted TOST
  p is below ``1 - confidence`` concludes *no effect of interest*.
* **Test and multiplicity.** The two-sided p value of the same t statistic; within the rows behind one
  verdict (the declared primary comparison of a claim over its datasets and sub-claims), Holm's
  step-down adjustment (:func:`holm`).
* **Verdict** (:func:`verdict`, the one implementation of :data:`RULE`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.experiment import keys
from harness.intervals import t_interval  # noqa: F401 - part of this module's interface

#: at least this many units for a verdict (a t interval needs a standard deviation)
MIN_UNITS = 2

RULE = (
    "Verdict rule (harness.report.stats.verdict): a row is supported when its Holm-adjusted p value "
    "(two-sided t test over units) is below 1 - confidence and the estimate lies on the claimed side, "
    "contradicted when it is below and the estimate lies on the opposite side, otherwise inconclusive "
    "(also with fewer than 2 units or an undefined interval); a row that is neither, has a declared "
    "smallest effect of interest and whose Holm-adjusted equivalence p (two one-sided t tests of "
    "|effect| < that effect) is below 1 - confidence concludes no effect of interest. A claim's overall "
    "verdict uses its primary rows only: supported if >= 1 is supported and none contradicted; "
    "contradicted if >= 1 is contradicted and none supported; mixed if both; no effect of interest if "
    "every primary row says so; else inconclusive. Secondary rows, controls and sanity checks are "
    "reported beside it and do not enter it."
)


# ----------------------------------------------------------------------------- elementary


def t_test(estimate: float, se: float, df: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """(low, high, two-sided p) of ``estimate`` with standard error ``se`` and ``df`` degrees of freedom."""
    from scipy import stats

    if df < 1 or not (math.isfinite(estimate) and math.isfinite(se)):
        return (math.nan, math.nan, math.nan)
    if se == 0:
        return (estimate, estimate, 1.0 if estimate == 0 else 0.0)
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(estimate) / se, df))
    return (estimate - half, estimate + half, p)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p values (NaN stays NaN and does not count towards the family size):
    sorted ascending, ``p_(i) * (k - i)`` (i from 0), made non-decreasing, capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    k = ok.size
    if k == 0:
        return out
    order = ok[np.argsort(p[ok], kind="mergesort")]
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (k - np.arange(k))))
    out[order] = adj
    return out


#: the verdict of a row whose equivalence test excludes every effect of interest
NO_EFFECT = "no effect of interest"


def verdict(estimate: float, p_adjusted: float, direction: int, n: int, confidence: float = 0.95,
            p_tost_adjusted: float = math.nan) -> str:
    """The verdict rule (:data:`RULE`); ``direction`` is +1 (claimed increase) or -1 (claimed decrease);
    ``p_tost_adjusted``: the row's Holm-adjusted equivalence p (NaN: no declared effect of interest)."""
    if n < MIN_UNITS or not math.isfinite(estimate):
        return "inconclusive"
    if math.isfinite(p_adjusted) and p_adjusted < 1.0 - confidence and estimate != 0:
        return "supported" if estimate * direction > 0 else "contradicted"
    if math.isfinite(p_tost_adjusted) and p_tost_adjusted < 1.0 - confidence:
        return NO_EFFECT
    return "inconclusive"


def at_least_zero(values: pd.Series) -> pd.Series:
    """Estimates clipped at 0, the estimator's null: below it is no detectable divergence, not a
    negative one (the Hölder excess of claims 3 and 8, and its figure)."""
    return values.clip(lower=0.0)


def tost(estimate: float, se: float, df: int, delta: float) -> float:
    """p value of the two one-sided t tests of ``-delta < effect < delta`` (the larger of the two)."""
    from scipy import stats

    if df < 1 or not (math.isfinite(estimate) and math.isfinite(se) and delta > 0):
        return math.nan
    if se == 0:
        return 0.0 if abs(estimate) < delta else 1.0
    lower = float(stats.t.sf((estimate + delta) / se, df))   # H0: effect <= -delta
    upper = float(stats.t.cdf((estimate - delta) / se, df))  # H0: effect >= +delta
    return max(lower, upper)


def power_at(effect: float, se: float, df: int, alpha: float) -> float:
    """Power of the two-sided t test at level ``alpha`` (``df`` degrees of freedom, standard error
    ``se``) when the true effect is ``effect``: noncentral t with noncentrality ``effect / se``."""
    from scipy import stats

    if df < 1 or not (math.isfinite(effect) and math.isfinite(se)) or se <= 0:
        return math.nan
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    ncp = abs(effect) / se
    # the far tail is negligible and scipy's noncentral t can return NaN for it at few df
    far = float(stats.nct.cdf(-crit, df, ncp))
    return float(stats.nct.sf(crit, df, ncp)) + (far if math.isfinite(far) else 0.0)


def minimal_detectable_effect(se: float, df: int, alpha: float, power: float = 0.8) -> float:
    """The smallest true effect the two-sided t test detects with probability ``power``."""
    from scipy.optimize import brentq

    if df < 1 or not math.isfinite(se) or se <= 0:
        return math.nan
    hi = 1.0
    while power_at(hi, 1.0, df, alpha) < power:  # bracket the root: power rises with the noncentrality
        hi *= 2.0
        if hi > 1e6:
            return math.nan
    ncp = brentq(lambda x: power_at(x, 1.0, df, alpha) - power, 0.0, hi)
    return float(ncp * se)


def units_for_power(effect: float, unit_sd: float, alpha: float, power: float = 0.8,
                    max_units: int = 1000) -> float:
    """The fewest units at which the two-sided t test over units (standard error ``unit_sd /
    sqrt(n)``, n - 1 degrees of freedom, level ``alpha``) reaches ``power`` at ``effect``; NaN when
    it is undefined or above ``max_units``. Power rises with n, so a bisection over n finds it."""
    if not (math.isfinite(effect) and math.isfinite(unit_sd)) or unit_sd <= 0 or effect == 0:
        return math.nan  # no spread (e.g. every value clipped to 0): the power is undefined too

    def enough(n: int) -> bool:
        return power_at(effect, unit_sd / math.sqrt(n), n - 1, alpha) >= power

    lo, hi = MIN_UNITS, MIN_UNITS
    while not enough(hi):
        if hi >= max_units:
            return math.nan
        lo, hi = hi, min(2 * hi, max_units)
    if enough(lo):
        return float(lo)
    while hi - lo > 1:  # invariant: not enough(lo), enough(hi)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return float(hi)


def overall(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its primary rows' verdicts (:data:`RULE`)."""
    s = sum(v == "supported" for v in verdicts)
    c = sum(v == "contradicted" for v in verdicts)
    if s and c:
        return "mixed"
    if s:
        return "supported"
    if c:
        return "contradicted"
    if verdicts and all(v == NO_EFFECT for v in verdicts):
        return NO_EFFECT
    return "inconclusive"


# ----------------------------------------------------------------------------- units


def with_split_seed(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``split_seed`` column (0 where a run records none)."""
    if "split_seed" in df.columns:
        df = df.copy()
        df["split_seed"] = pd.to_numeric(df["split_seed"], errors="coerce").fillna(0).astype(int)
        return df
    return df.assign(split_seed=0)


def paired_cells(df: pd.DataFrame, col: str, method: str, baseline: str, se_col: str | None = None,
                 transform=None) -> pd.DataFrame:
    """One row per (dataset, M, seed, split_seed) present for both variants: ``d = method - baseline``
    of ``col`` (after ``transform``) and ``e``, the measurement standard error of ``d`` from ``se_col``
    (NaN without one). Matched by key; a key repeated within one variant is an error."""
    cols = keys.PAIR_KEYS + ["d", "e"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = with_split_seed(df)
    keys.require(df.columns, col)
    if se_col is not None:
        keys.require(df.columns, se_col)

    def side(variant: str) -> pd.DataFrame:
        sub = df[df["variant"] == variant]
        dup = sub.duplicated(keys.PAIR_KEYS, keep=False)
        if dup.any():
            first = sub[dup].iloc[0]
            raise ValueError(f"variant {variant!r} has more than one run for "
                             f"{ {k: first[k] for k in keys.PAIR_KEYS} }")
        v = pd.to_numeric(sub[col], errors="coerce")
        out = sub[keys.PAIR_KEYS].assign(v=transform(v) if transform is not None else v)
        out["se"] = pd.to_numeric(sub[se_col], errors="coerce") if se_col is not None else np.nan
        return out

    m = side(method).merge(side(baseline), on=keys.PAIR_KEYS, suffixes=("_m", "_b"), how="inner")
    m["d"] = m["v_m"] - m["v_b"]
    m["e"] = np.sqrt(m["se_m"] ** 2 + m["se_b"] ** 2)
    m = m[np.isfinite(m["d"])]
    return m[cols].sort_values(keys.PAIR_KEYS, kind="mergesort").reset_index(drop=True)


def unit_values(cells: pd.DataFrame, value: str = "d", se: str | None = "e") -> pd.DataFrame:
    """Per unit (dataset, seed, split_seed): ``value`` averaged over its M, ``e`` the mean of ``se``
    over its M (NaN when none), ``n_m`` the number of M."""
    ukeys = keys.UNIT_KEYS
    if cells.empty:
        return pd.DataFrame(columns=ukeys + ["value", "e", "n_m"])
    g = cells.groupby(ukeys, sort=True)
    out = g[value].mean().rename("value").to_frame()
    out["e"] = g[se].mean() if se is not None and se in cells else np.nan
    out["n_m"] = g[value].size()
    return out.reset_index()


def unit_interval(units: pd.DataFrame, confidence: float = 0.95) -> dict:
    """Mean over units with the module's t interval (training spread plus shared measurement error).

    ``units``: one row per unit with ``value``, ``e`` (NaN: no measurement error known) and
    ``split_seed``. Returns ``estimate, low, high, p, se, n, df``.
    """
    v = units["value"].to_numpy(dtype=float) if len(units) else np.array([])
    ok = np.isfinite(v)
    units, v = units[ok], v[ok]
    n = int(v.size)
    res = {"estimate": float(v.mean()) if n else math.nan, "low": math.nan, "high": math.nan, "p": math.nan,
           "se": math.nan, "n": n, "df": n - 1}
    if n < MIN_UNITS:
        return res
    var = float(v.var(ddof=1)) / n
    e = units["e"].to_numpy(dtype=float)
    if np.isfinite(e).any():
        e = np.where(np.isfinite(e), e, 0.0)
        for _, idx in pd.Series(range(n)).groupby(units["split_seed"].to_numpy()):
            var += (len(idx) / n) ** 2 * float(e[idx.to_numpy()].mean()) ** 2
    se = math.sqrt(var)
    lo, hi, p = t_test(res["estimate"], se, n - 1, confidence)
    res.update(low=lo, high=hi, p=p, se=se)
    return res


def paired_effect(df: pd.DataFrame, col: str, method: str, baseline: str, se_col: str | None = None,
                  transform=None, confidence: float = 0.95) -> dict:
    """Mean paired difference method - baseline over units (:func:`paired_cells`, :func:`unit_values`,
    :func:`unit_interval`); also ``n_cells`` and ``ms`` (the M that entered)."""
    cells = paired_cells(df, col, method, baseline, se_col, transform)
    res = unit_interval(unit_values(cells), confidence)
    res["n_cells"] = len(cells)
    res["ms"] = sorted(int(m) for m in cells["M"].unique()) if len(cells) else []
    return res


def slope_units(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Per unit: the least-squares slope of ``col`` against M over the unit's runs (units with fewer
    than two distinct M are dropped); columns of :func:`unit_values` (``e`` NaN)."""
    from scipy import stats

    df = with_split_seed(df)
    keys.require(df.columns, col)
    rows = []
    for key, sub in df.groupby(keys.UNIT_KEYS, sort=True):
        x = pd.to_numeric(sub["M"], errors="coerce").to_numpy(dtype=float)
        y = pd.to_numeric(sub[col], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        if np.unique(x[ok]).size < 2:
            continue
        rows.append({**dict(zip(keys.UNIT_KEYS, key)), "value": float(stats.linregress(x[ok], y[ok]).slope),
                     "e": np.nan, "n_m": int(ok.sum())})
    return pd.DataFrame(rows, columns=keys.UNIT_KEYS + ["value", "e", "n_m"])


def fisher_units(rs: pd.DataFrame) -> pd.DataFrame:
    """Per-run correlations (column ``r``, with unit keys) -> per-unit mean Fisher z (``value``)."""
    rs = rs.assign(z=np.arctanh(np.clip(rs["r"].to_numpy(dtype=float), -0.999999, 0.999999)))
    return unit_values(rs, value="z", se=None)


def fisher_interval(units: pd.DataFrame, confidence: float = 0.95) -> dict:
    """:func:`unit_interval` on Fisher z values, bounds and estimate mapped back with tanh."""
    res = unit_interval(units, confidence)
    for k in ("estimate", "low", "high"):
        res[k] = float(np.tanh(res[k])) if math.isfinite(res[k]) else math.nan
    return res
