"""The claims table and its two documents against hand-made inputs: every column of every row that
``claims.judge`` writes, the defaults of the config's ``report`` section, the order of the rows, the
Markdown of ``render_markdown`` line by line, and ``python -m harness claims`` end to end.

The numbers are built so that each row's value can be worked out on paper: three units (seeds 0, 1, 2,
one data split) at M = 2 and 4, with paired differences that do not depend on M, so a unit's value is
its difference and the interval is a Student t interval over three values (the units' own spread:
nothing is added for the test queries or the estimator's noise, which that spread already holds)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import test_report
from scipy import stats
from test_mutation_gaps import _history_with_change_correlations

from harness import cli
from harness.experiment import keys
from harness.report import claims
from harness.report.aggregate import to_csv_text

SEEDS = (0, 1, 2)
MS = (2, 4)
LABELS = {"infonce": "InfoNCE", "unialign": "UniAlign", "unialign_t": "UniAlign-T"}


def _cfg(datasets=("syn",), **report) -> dict:
    return {"config": {
        "variants": {v: {"label": label} for v, label in LABELS.items()},
        "studies": {"main": {"variants": list(LABELS), "ms": list(MS), "datasets": list(datasets)}},
        "report": {"baseline": "infonce", "method": "unialign", **report},
    }}


# ----------------------------------------------------------------------------- hand-made inputs


def _summary(dataset: str = "syn") -> pd.DataFrame:
    """Baseline and method rows; per unit s the method minus the baseline is, at every M:
    zeta -0.1 (s + 1), chi -0.2 - 0.01 s, |grad cos| (0.1, 0.2, 0.3) - 0.5, Hölder excess -0.2 + 0.01 s
    (null sd 0.04 and 0.03: error 0.05), median Hölder -0.1 (s + 1), gap 0.3 + 0.01 s, R@1 5 + s
    (standard errors 0.4 and 0.3: error 0.5), own-rule R@1 (-1, 0, 2)[s] (error 0.5). The baseline's
    slopes against M: zeta 0.1 (s + 1), chi 0.05 + 0.001 s. One pair at M = 6 lies outside the main study."""
    rows = []
    for s in SEEDS:
        for m in MS + (6,):
            far = 100.0 if m == 6 else 0.0  # would change every number if the study's M were ignored
            base = {
                "dataset": dataset, "variant": "infonce", "M": m, "seed": s,
                keys.ZETA: 0.5 + 0.1 * (s + 1) * m + far, keys.CHI: 0.2 + (0.05 + 0.001 * s) * m + far,
                keys.GRAD_COS: -0.5 + far, keys.HOLDER_FIXED_EXCESS: 0.3 + far, keys.HOLDER_FIXED_NULL_SD: 0.03,
                keys.HOLDER_FIXED: 0.2, keys.HOLDER_FIXED_NULL_MEAN: 0.1, keys.HOLDER_FIXED_H: 0.5,
                keys.HOLDER_MEDIAN: 1.0 + far, keys.GAP: 0.6 + far, keys.R1_MEAN: 50.0 + far, keys.R1_MEAN_SE: 0.3,
                keys.OWN_R1_MEAN: 40.0 + far, keys.OWN_R1_MEAN_SE: 0.3, keys.RETRIEVAL_RULE: "cosine_sum",
            }
            meth = dict(base, variant="unialign")
            meth.update({
                keys.ZETA: base[keys.ZETA] - 0.1 * (s + 1), keys.CHI: base[keys.CHI] - 0.2 - 0.01 * s,
                keys.GRAD_COS: (0.1, -0.2, 0.3)[s] - far, keys.HOLDER_FIXED_EXCESS: 0.1 + 0.01 * s + far,
                keys.HOLDER_FIXED_NULL_SD: 0.04,
                # at or below the null at M = 2 (equal) and at (M = 4, seed 0) (below): 4 of the 12 runs
                keys.HOLDER_FIXED_NULL_MEAN: 0.2 if m == 2 else (0.25 if s == 0 and m == 4 else 0.1),
                keys.HOLDER_MEDIAN: 1.0 - 0.1 * (s + 1) + far, keys.GAP: 0.9 + 0.01 * s + far,
                keys.R1_MEAN: 55.0 + s + far, keys.R1_MEAN_SE: 0.4,
                keys.OWN_R1_MEAN: 40.0 + (-1, 0, 2)[s] + far, keys.OWN_R1_MEAN_SE: 0.4,
                keys.RETRIEVAL_RULE: "unialign_tuple" if (s, m) != (2, 4) else np.nan,
            })
            rows += [base, meth]
    return pd.DataFrame(rows)  # no split_seed column: one split (0)


def _generation(dataset: str = "syn") -> pd.DataFrame:
    """Generation rows at M = 3; the cross-modal columns are the from<k> ones (the anchor's own and the
    interpolated ones are other conditions): per unit s the method's cross-modal Fréchet distance is
    lower by (2, 3, 4)[s] and its accuracy higher by (0.1, 0.15, 0.2)[s]."""
    rows = []
    for s in SEEDS:
        for variant in ("infonce", "unialign"):
            u = variant == "unialign"
            fd, acc = (-(2, 3, 4)[s], (0.1, 0.15, 0.2)[s]) if u else (0.0, 0.0)
            rows.append({"dataset": dataset, "variant": variant, "M": 3, "seed": s,
                         "gen/from1/fd": 10.0 + fd, "gen/from2/fd": 12.0 + fd, "gen/anchor/fd": 100.0 * u,
                         "gen/interp1+2/fd": 50.0 * u, "gen/from1/acc": 0.5 + acc, "gen/from2/acc": 0.6 + acc,
                         "gen/anchor/acc": 0.9 * u})
    return pd.DataFrame(rows)


CHANGE_RS = (0.95, 0.2, 0.9, 0.99)


def _history(dataset: str = "syn") -> pd.DataFrame:
    """The method's runs with change correlations CHANGE_RS (seeds 0-3, M = 3), a second run of seed 0
    at M = 4 with the same curves, a run of seed 5 with 3 points (too few), and baseline runs (not used)."""
    main = _history_with_change_correlations(CHANGE_RS)
    again = main[main["seed"] == 0].assign(M=4)
    short = main[main["seed"] == 1].head(3).assign(seed=5)
    base = _history_with_change_correlations((-0.9, -0.9, 0.3, -0.5)).assign(variant="infonce")
    return pd.concat([main, again, short, base], ignore_index=True).assign(dataset=dataset)


def _t(values, e: float = 0.0, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(estimate, low, high, two-sided p) of the mean of ``values`` (one value per unit, one split) with
    a shared measurement error ``e``: standard error sqrt(sd^2 / n + e^2), n - 1 degrees of freedom."""
    v = np.asarray(values, dtype=float)
    n = v.size
    se = math.sqrt(v.var(ddof=1) / n + e * e)
    q = stats.t.ppf(0.5 + confidence / 2, n - 1)
    return float(v.mean()), float(v.mean() - q * se), float(v.mean() + q * se), float(2 * stats.t.sf(abs(v.mean()) / se, n - 1))


def _level_rs(hist: pd.DataFrame) -> list[float]:
    """Pearson r of the levels for the method's runs of seeds 0-3 at M = 3 (numpy, not scipy)."""
    out = []
    for s in range(4):
        run = hist[(hist["variant"] == "unialign") & (hist["seed"] == s) & (hist["M"] == 3)].sort_values("step")
        out.append(float(np.corrcoef(run[keys.VAL_HOLDER], run[keys.VAL_PROXY])[0, 1]))
    return out


def _fisher(rs, confidence: float = 0.95) -> tuple[float, float, float, float]:
    est, lo, hi, p = _t(np.arctanh(rs), 0.0, confidence)
    return math.tanh(est), math.tanh(lo), math.tanh(hi), p


# ----------------------------------------------------------------------------- judge: the whole table by hand


PAIRED = "mean paired difference over units (M = 2, 4)"
CONTAINS_0 = "inconclusive: the interval contains 0 (n = {} units)"


def _expected_rows(confidence: float = 0.95) -> list[dict]:
    """Every row of the table for _summary(), _history() and _generation() with _cfg()."""
    t = lambda v, e=0.0: _t(v, e, confidence)
    z1a, z1b = t([0.1, 0.2, 0.3]), t([0.05, 0.051, 0.052])
    d2a, d2b, d2c = t([-0.1, -0.2, -0.3]), t([-0.2, -0.21, -0.22]), t([-0.4, -0.3, -0.2])
    d3, d3m, d4 = t([-0.2, -0.19, -0.18]), t([-0.1, -0.2, -0.3]), t([0.3, 0.31, 0.32])
    d5, d5own = t([5.0, 6.0, 7.0]), t([-1.0, 0.0, 2.0])
    d6a, d6b = t([-2.0, -3.0, -4.0]), t([0.1, 0.15, 0.2])
    r7, r7l = _fisher(list(CHANGE_RS), confidence), _fisher(_level_rs(_history()), confidence)
    comp = "UniAlign − InfoNCE"
    lab = keys.metric_label
    control = "control: the method's own slope (chi is 0 at M = 2 by definition)"
    rows = [
        # claim 1: one slope per unit; Holm over 1a and 1b (1b has the smaller p)
        ("1", "1a", "primary", "InfoNCE", lab("zeta"), keys.ZETA, "", "mean over units of the per-unit slope vs M",
         "increase", z1a, 3, 3, max(2 * z1b[3], z1a[3]), "per modality"),
        ("1", "1b", "primary", "InfoNCE", lab("chi"), keys.CHI, "", "mean over units of the per-unit slope vs M",
         "increase", z1b, 3, 3, 2 * z1b[3], "per modality"),
        # controls: the method's own slopes (here equal to the baseline's), a Holm family of their own
        ("1", "1a", "control", "UniAlign", lab("zeta"), keys.ZETA, "", "mean over units of the per-unit slope vs M",
         "increase", z1a, 3, 3, max(2 * z1b[3], z1a[3]), control),
        ("1", "1b", "control", "UniAlign", lab("chi"), keys.CHI, "", "mean over units of the per-unit slope vs M",
         "increase", z1b, 3, 3, 2 * z1b[3], control),
        ("2", "2a", "primary", comp, lab("zeta"), keys.ZETA, "", PAIRED, "decrease", d2a, 3, 6,
         max(2 * d2b[3], d2a[3]), ""),
        ("2", "2b", "primary", comp, lab("chi"), keys.CHI, "", PAIRED, "decrease", d2b, 3, 6, 2 * d2b[3], ""),
        ("2", "2c", "sanity", comp, "|" + lab("grad_cos") + "|", keys.GRAD_COS, "", PAIRED, "decrease", d2c, 3, 6,
         d2c[3], "sanity check, not evidence: UniAlign decouples its own terms by construction"),
        ("3", "3", "primary", comp, lab("holder_excess"), keys.HOLDER_FIXED_EXCESS, "", PAIRED, "decrease", d3, 3, 6,
         d3[3], "fixed KDE bandwidth h = 0.5; null sd median 0.035 nats; 4 of 12 runs at or below their null mean "
                "(no detectable divergence); clipped at 0 (the null) before differencing; " + claims.ESTIMATOR_NOTE),
        ("3", "3-median", "secondary", comp, lab("holder"), keys.HOLDER_MEDIAN, "", PAIRED, "decrease", d3m, 3, 6,
         d3m[3], "median bandwidth: the bandwidth differs between the runs compared"),
        ("4", "4", "primary", comp, lab("gap"), keys.GAP, "", PAIRED, "decrease", d4, 3, 6, d4[3], ""),
        ("5", "5", "primary", comp, lab("R1"), keys.R1_MEAN, "pairwise_cosine", PAIRED, "increase", d5, 3, 6, d5[3],
         ""),
        ("5", "5-own", "secondary", comp, lab("R1_own"), keys.OWN_R1_MEAN,
         "own rules infonce: cosine_sum; unialign: unialign_tuple", PAIRED, "increase", d5own, 3, 6, d5own[3],
         ""),
        ("6", "6a", "primary", comp, "cross-modal Fréchet distance", keys.GEN_CROSS_FD, "",
         "mean paired difference over units (M = 3)", "decrease", d6a, 3, 3, 2 * min(d6a[3], d6b[3]),
         "generation runs at these M only"),
        ("6", "6b", "primary", comp, "cross-modal classifier accuracy", keys.GEN_CROSS_ACC, "",
         "mean paired difference over units (M = 3)", "increase", d6b, 3, 3, 2 * min(d6a[3], d6b[3]),
         "generation runs at these M only"),
        ("7", "7", "primary", "UniAlign", "Pearson r of changes between consecutive evaluations",
         f"{keys.VAL_HOLDER} ~ {keys.VAL_PROXY}", "", "mean Fisher z over units, back-transformed", "increase", r7,
         4, 5, r7[3], "5 runs with >= 8 evaluation points (most in any run: 9); " + claims.ESTIMATOR_NOTE),
        ("7", "7-levels", "secondary", "UniAlign", "Pearson r of levels (confounded by training time)",
         f"{keys.VAL_HOLDER} ~ {keys.VAL_PROXY}", "", "mean Fisher z over units, back-transformed", "increase",
         r7l, 4, 5, r7l[3], "5 runs with >= 8 evaluation points (most in any run: 9); " + claims.ESTIMATOR_NOTE),
    ]
    out = []
    for (claim, cid, role, comparison, measured, column, rule, statistic, direction, (est, lo, hi, p), n, n_cells,
         p_holm, note) in rows:
        out.append({"claim": claim, "id": cid, "role": role, "statement": claims.CLAIMS[claim], "dataset": "syn",
                    "comparison": comparison, "measured": measured, "column": column, "rule": rule,
                    "statistic": statistic, "direction": direction, "estimate": est, "ci_low": lo, "ci_high": hi,
                    "n": n, "n_cells": n_cells, "p": p, "p_holm": min(1.0, p_holm), "note": note})
    return out


def _check_table(table: pd.DataFrame, expected: list[dict]) -> None:
    assert list(table.columns) == claims.COLUMNS
    assert list(table.index) == list(range(len(expected)))
    got = table.to_dict("records")
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    for g, e in zip(got, expected):
        for k in ("estimate", "ci_low", "ci_high", "p", "p_holm"):
            assert g[k] == pytest.approx(e[k], rel=1e-6, abs=1e-12), (e["id"], k)
        for k in ("claim", "id", "role", "statement", "dataset", "comparison", "measured", "column", "rule",
                  "statistic", "direction", "n", "n_cells"):
            assert g[k] == e[k], (e["id"], k)
        assert type(g["n"]) is int and type(g["n_cells"]) is int, e["id"]
    # numbers stay numbers: claims.csv writes float columns with six significant digits
    for k in ("estimate", "ci_low", "ci_high", "p", "p_holm"):
        assert table[k].dtype == np.float64, k


def _with_verdicts(expected: list[dict], verdicts: dict[str, str], reasons: dict[str, str]) -> list[dict]:
    out = []
    for e in expected:
        note = "; ".join(x for x in (e["note"], reasons.get(e["id"], "")) if x)
        out.append({**e, "verdict": verdicts[e["id"]], "note": note})
    return out


def test_every_column_of_every_row_by_hand():
    table = claims.judge(_summary(), _history(), _generation(), _cfg())
    expected = _expected_rows()
    # the p values the verdicts below rest on, worked out once more
    p = {e["id"]: e["p"] for e in expected}
    assert p["1a"] == pytest.approx(0.0742, abs=1e-4) and p["2c"] == pytest.approx(0.0351, abs=1e-4)
    assert p["3"] == pytest.approx(0.000922, abs=1e-6) and p["5"] == pytest.approx(0.00913, abs=1e-5)
    assert p["6a"] == pytest.approx(0.0351, abs=1e-4) and p["6b"] == pytest.approx(0.0351, abs=1e-4)
    holm6 = next(e["p_holm"] for e in expected if e["id"] == "6a")
    verdicts = {"1a": "inconclusive", "1b": "supported", "2a": "inconclusive", "2b": "supported", "2c": "supported",
                "3": "supported", "3-median": "inconclusive", "4": "contradicted", "5": "supported",
                "5-own": "inconclusive", "6a": "inconclusive", "6b": "inconclusive", "7": "inconclusive",
                "7-levels": "inconclusive"}
    reasons = {cid: CONTAINS_0.format(3) for cid in ("1a", "2a", "3-median", "5-own")}
    reasons["7"] = reasons["7-levels"] = CONTAINS_0.format(4)
    for cid in ("6a", "6b"):  # significant alone, not after Holm's correction over 6a and 6b
        reasons[cid] = f"inconclusive: p = {p[cid]:.3g} < 0.05 before Holm's correction, {holm6:.3g} after"
    assert reasons["6a"] == "inconclusive: p = 0.0351 < 0.05 before Holm's correction, 0.0702 after"
    expected = _with_verdicts(expected, verdicts, reasons)
    _check_table(table, expected)
    assert list(table["verdict"]) == [e["verdict"] for e in expected]
    assert list(table["note"]) == [e["note"] for e in expected]
    # levels and changes are different correlations of the same runs
    c7 = table.set_index("id")
    assert c7.loc["7-levels", "estimate"] != pytest.approx(c7.loc["7", "estimate"], abs=1e-3)


def test_confidence_reaches_every_interval_and_verdict():
    table = claims.judge(_summary(), _history(), _generation(), _cfg(), confidence=0.9)
    expected = [e for e in _expected_rows(confidence=0.9) if e["role"] != "control"]
    got = table[table["role"] != "control"].set_index("id")
    for e in expected:
        assert got.loc[e["id"], "ci_low"] == pytest.approx(e["ci_low"], rel=1e-6), e["id"]
        assert got.loc[e["id"], "ci_high"] == pytest.approx(e["ci_high"], rel=1e-6), e["id"]
    # p = 0.074 (1a) is below 1 - 0.9 after Holm: supported at 90 %, inconclusive at 95 %
    assert got.loc["1a", "verdict"] == "supported" and got.loc["2a", "verdict"] == "supported"
    # 6a and 6b: 0.0702 after Holm < 0.1
    assert got.loc["6a", "verdict"] == "supported" and got.loc["6a", "note"] == "generation runs at these M only"
    assert got.loc["3", "verdict"] == "supported" and got.loc["3-median", "verdict"] == "supported"
    assert got.loc["5-own", "note"] == CONTAINS_0.format(3)
    # the default confidence is 95 %
    pd.testing.assert_frame_equal(claims.judge(_summary(), _history(), _generation(), _cfg()),
                                  claims.judge(_summary(), _history(), _generation(), _cfg(), confidence=0.95))


# ----------------------------------------------------------------------------- the report section's defaults


def _renamed(df: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    return df.assign(variant=df["variant"].map(lambda v: names.get(v, v)))


def test_report_section_names_the_compared_variants():
    names = {"infonce": "nce", "unialign": "ua"}
    cfg = {"config": {"report": {"baseline": "nce", "method": "ua"}}}
    study = _cfg()
    main = _summary()
    main = main[main["M"].isin(MS)]  # no study in cfg: its filter is done here
    table = claims.judge(_renamed(main, names), _renamed(_history(), names), _renamed(_generation(), names), cfg)
    ref = claims.judge(main, _history(), _generation(), study)
    cols = ["id", "role", "estimate", "ci_low", "ci_high", "n", "n_cells", "p", "p_holm", "verdict"]
    pd.testing.assert_frame_equal(table[cols], ref[cols])
    # without labels the variants' names are shown
    assert set(table[table["claim"].isin(["2", "3", "4", "5", "6"])]["comparison"]) == {"ua − nce"}
    assert set(table[(table["claim"] == "1") & (table["role"] == "primary")]["comparison"]) == {"nce"}
    assert set(table[table["role"] == "control"]["comparison"]) == {"ua"}
    assert set(table[table["claim"] == "7"]["comparison"]) == {"ua"}
    r5own = table[table["role"] != "control"].set_index("id").loc["5-own"]
    assert r5own["rule"] == "own rules nce: cosine_sum; ua: unialign_tuple"
    assert "measurement error" not in r5own["note"]


@pytest.mark.parametrize("cfg", [{}, {"config": {}}, {"config": {"report": None}}, {"config": {"report": {}}},
                                 {"config": {"report": {"method_tuple": None}}},
                                 {"config": {"report": {"method_tuple": "unialign"}}}])
def test_report_defaults_are_infonce_and_unialign_without_a_tuple_variant(cfg):
    main = _summary()
    main = main[main["M"].isin(MS)]
    explicit = {"config": {"report": {"baseline": "infonce", "method": "unialign"}}}
    table = claims.judge(main, _history(), _generation(), cfg)
    pd.testing.assert_frame_equal(table, claims.judge(main, _history(), _generation(), explicit))
    assert len(table) == 16 and set(table["comparison"]) == {"infonce", "unialign − infonce", "unialign"}
    assert set(table["role"]) == {"primary", "secondary", "control", "sanity"}
    assert (table["n"] >= 3).all()


# ----------------------------------------------------------------------------- the tuple variant and the order of rows


def _tuple_inputs():
    """Datasets b and a (in that order) with a third variant, unialign_t: the method's values shifted
    by a fixed amount for zeta, chi and R@1 and its own rule; its history repeats the method's."""
    summ, gens, hists = [], [], []
    for ds in ("b", "a"):
        s = _summary(ds)
        t = s[s["variant"] == "unialign"].copy()
        t["variant"] = "unialign_t"
        t[keys.ZETA] -= 0.05 * (t["seed"] + 1)
        t[keys.RETRIEVAL_RULE] = "tuple_rule"
        t[keys.HOLDER_FIXED_NULL_MEAN] = 0.2  # every run of the tuple variant at its null
        summ += [s, t]
        g = _generation(ds)
        gens += [g, g[g["variant"] == "unialign"].assign(variant="unialign_t")]
        h = _history(ds)
        hists += [h, h[h["variant"] == "unialign"].assign(variant="unialign_t")]
    return (pd.concat(summ, ignore_index=True), pd.concat(hists, ignore_index=True),
            pd.concat(gens, ignore_index=True))


def test_tuple_variant_rows_are_secondary_and_rows_are_ordered():
    summary, history, generation = _tuple_inputs()
    table = claims.judge(summary, history, generation, _cfg(("a", "b"), method_tuple="unialign_t"))
    key = list(zip(table["claim"], table["role"], table["id"], table["dataset"], table["comparison"]))
    m, t = "UniAlign − InfoNCE", "UniAlign-T − InfoNCE"
    claim2 = [("2", "primary", "2a", "a", m), ("2", "primary", "2a", "b", m), ("2", "primary", "2b", "a", m),
              ("2", "primary", "2b", "b", m), ("2", "secondary", "2a", "a", t), ("2", "secondary", "2a", "b", t),
              ("2", "secondary", "2b", "a", t), ("2", "secondary", "2b", "b", t), ("2", "secondary", "2c", "a", t),
              ("2", "secondary", "2c", "b", t), ("2", "sanity", "2c", "a", m), ("2", "sanity", "2c", "b", m)]
    assert [k for k in key if k[0] == "2"] == claim2
    claim7 = [("7", "primary", "7", "a", "UniAlign"), ("7", "primary", "7", "b", "UniAlign"),
              ("7", "secondary", "7", "a", "UniAlign-T"), ("7", "secondary", "7", "b", "UniAlign-T"),
              ("7", "secondary", "7-levels", "a", "UniAlign"), ("7", "secondary", "7-levels", "a", "UniAlign-T"),
              ("7", "secondary", "7-levels", "b", "UniAlign"), ("7", "secondary", "7-levels", "b", "UniAlign-T")]
    assert [k for k in key if k[0] == "7"] == claim7
    assert [k[:3] for k in key if k[0] == "6"] == [("6", "primary", "6a")] * 2 + [("6", "primary", "6b")] * 2 + \
        [("6", "secondary", "6a")] * 2 + [("6", "secondary", "6b")] * 2
    assert [k[0] for k in key] == sorted(k[0] for k in key)
    assert len(table) == 2 * (2 + 2 + 2 * 8 + 2 * 2 + 2 * 2) == 56
    # the tuple variant's rows: its own differences, Holm within claim 2's secondary rows
    sec2 = table[(table["claim"] == "2") & (table["role"] == "secondary")].set_index(["id", "dataset"])
    ps = sec2["p"].to_numpy()
    order = np.argsort(ps)
    holm = np.maximum.accumulate(ps[order] * (len(ps) - np.arange(len(ps))))
    expected_holm = np.empty_like(ps)
    expected_holm[order] = np.minimum(holm, 1.0)
    assert sec2["p_holm"].to_numpy() == pytest.approx(expected_holm)
    assert sec2.loc[("2a", "a"), "estimate"] == pytest.approx(-0.3)  # -0.1 (s + 1) - 0.05 (s + 1), mean over s
    prim2 = table[(table["claim"] == "2") & (table["role"] == "primary")].set_index(["id", "dataset"])
    assert prim2.loc[("2a", "a"), "estimate"] == pytest.approx(-0.2)
    rules = table[table["id"] == "5-own"].set_index(["comparison", "dataset"])["rule"]
    assert rules[(m, "a")] == "own rules infonce: cosine_sum; unialign: unialign_tuple"
    assert rules[(t, "a")] == "own rules infonce: cosine_sum; unialign_t: tuple_rule"
    assert table[table["id"] == "3"].set_index("comparison").loc[t, "note"].iloc[0].startswith(
        "fixed KDE bandwidth h = 0.5; null sd median 0.035 nats; 6 of 12 runs")


# ----------------------------------------------------------------------------- empty and partial inputs


def test_no_inputs_give_an_empty_table_with_every_column():
    for hist, gen in ((pd.DataFrame(), pd.DataFrame()), (None, None)):
        table = claims.judge(pd.DataFrame(), hist, gen, _cfg())
        assert table.empty and list(table.columns) == claims.COLUMNS


def test_generation_or_history_alone():
    gen_only = claims.judge(pd.DataFrame(), None, _generation(), _cfg())
    assert list(gen_only["id"]) == ["6a", "6b"]
    hist_only = claims.judge(pd.DataFrame(), _history(), pd.DataFrame(), _cfg())
    assert list(hist_only["id"]) == ["7", "7-levels"]
    assert list(hist_only["n_cells"]) == [5, 5] and list(hist_only["n"]) == [4, 4]
    # summary rows outside the main study leave no dataset to judge
    outside = _summary()
    outside = outside[outside["M"] == 6]
    assert claims.judge(outside, None, _generation(), _cfg())["claim"].tolist() == ["6", "6"]


def test_generation_needs_its_cross_modal_columns():
    gen = _generation().drop(columns=["gen/from1/acc", "gen/from2/acc"])
    with pytest.raises(keys.MissingColumnError) as err:
        claims.judge(pd.DataFrame(), None, gen, _cfg())
    assert str(err.value).startswith(
        "generation.csv (per-run condition means) has no column 'cross-modal/acc'; it is written by")


def test_a_dataset_without_the_compared_variants():
    # dataset c holds another variant only: every row has 0 units, claim 3 has no null note and the
    # own-rule row no rule
    other = _summary("c")
    other = other[other["variant"] == "unialign"].assign(variant="other")
    table = claims.judge(other, None, None, {"config": {"report": {}}})
    table = table[table["role"] != "control"].set_index("id")
    assert len(table) == 10 and (table["n"] == 0).all() and (table["n_cells"] == 0).all()
    assert (table["verdict"] == "inconclusive").all()
    assert table.loc["3", "note"] == ("clipped at 0 (the null) before differencing; " + claims.ESTIMATOR_NOTE
                                      + "; inconclusive: 0 unit(s), a verdict needs >= 2")
    assert table.loc["5-own", "rule"] == "" and table.loc["4", "note"] == "inconclusive: 0 unit(s), a verdict needs >= 2"
    assert table.loc["2a", "statistic"] == "mean paired difference over units (M = –)"
    assert math.isnan(table.loc["1a", "estimate"]) and math.isnan(table.loc["2a", "p_holm"])


# ----------------------------------------------------------------------------- notes, reasons and number formatting


def test_null_note_counts_runs_and_tolerates_unreadable_values():
    sub = pd.DataFrame({
        "variant": ["unialign", "infonce", "infonce", "unialign", "other"],
        keys.HOLDER_FIXED: [0.2, 0.1, "n/a", 0.4, 0.0],
        keys.HOLDER_FIXED_NULL_MEAN: [0.2, 0.3, 0.1, "n/a", 1.0],
        keys.HOLDER_FIXED_NULL_SD: [0.01, "n/a", 0.03, 0.05, 9.0],
        keys.HOLDER_FIXED_H: [0.5, "n/a", 0.5, 0.5, 9.0],
    })
    # rows 0 (equal) and 1 (below) are at or below their null; row 2 has no estimate, row 3 no null
    assert claims._null_note(sub, ("unialign", "infonce")) == (
        "fixed KDE bandwidth h = 0.5; null sd median 0.03 nats; 2 of 4 runs at or below their null mean "
        "(no detectable divergence)")
    assert claims._null_note(sub, ("x", "y")) == ""


def test_retrieval_rule_note_lists_the_compared_variants_rules():
    sub = pd.DataFrame({"variant": ["unialign", "infonce", "unialign", "other", "infonce"],
                        keys.RETRIEVAL_RULE: ["tuple", "cosine", np.nan, "other_rule", "cosine"]})
    assert claims._retrieval_rule_note(sub, ("unialign", "infonce")) == "own rules infonce: cosine; unialign: tuple"
    assert claims._retrieval_rule_note(sub, ("x", "y")) == ""
    assert claims._retrieval_rule_note(sub.drop(columns=[keys.RETRIEVAL_RULE]), ("unialign", "infonce")) == ""


def test_run_correlations_keep_key_order_file_order_of_ties_and_skip_a_constant_proxy():
    """Several evaluations share an epoch and no step is recorded: the epoch orders the points and
    ties keep the order of the file (a stable sort); runs come out in key order whatever the row
    order; a run whose proxy does not move has no correlation."""
    t = np.arange(20, dtype=float)
    h, p = np.sin(t) + 0.1 * t, np.cos(1.7 * t) + 0.2 * t
    rows = []
    for seed, proxy in ((1, p), (0, p), (2, np.full(20, 3.0))):
        # written epoch by epoch from the last (two evaluations per epoch, in evaluation order)
        for k in range(19, -1, -2):
            for i in (k - 1, k):
                rows.append({"dataset": "syn", "seed": seed, "split_seed": 0, "M": 3, keys.EPOCH: i // 2 + 1,
                             keys.VAL_HOLDER: h[i], keys.VAL_PROXY: proxy[i]})
    rs, most = claims._run_correlations(pd.DataFrame(rows), keys.VAL_HOLDER, keys.VAL_PROXY, True)
    assert most == 20 and rs["seed"].tolist() == [0, 1]
    assert rs["r"].tolist() == pytest.approx([np.corrcoef(np.diff(h), np.diff(p))[0, 1]] * 2, abs=1e-12)


def _r(**kw) -> dict:
    return {"note": "", "verdict": "inconclusive", "n": 3, "p": 0.5, "p_holm": 0.5, **kw}


def test_reason_for_each_kind_of_inconclusive_row():
    assert claims._reason(_r(n=1, note="x"), 0.95) == "x; inconclusive: 1 unit(s), a verdict needs >= 2"
    assert claims._reason(_r(n=2, p=math.nan), 0.95) == "inconclusive: undefined interval"
    assert claims._reason(_r(n=2, p=0.07, p_holm=0.14), 0.9) == \
        "inconclusive: p = 0.07 < 0.1 before Holm's correction, 0.14 after"
    # exactly 1 - confidence is not below it
    assert claims._reason(_r(p=1.0 - 0.95), 0.95) == CONTAINS_0.format(3)
    assert claims._reason(_r(p=0.07, note="a note"), 0.95) == "a note; " + CONTAINS_0.format(3)
    # decided rows keep their note as it is
    assert claims._reason(_r(verdict="supported", note="kept"), 0.95) == "kept"
    assert claims._reason(_r(verdict="contradicted", note=""), 0.95) == ""
    assert claims._reason(_r(verdict="supported", note=None), 0.95) == ""


def test_num_formats_three_significant_digits_or_a_dash():
    assert claims._num(0.123456) == "0.123" and claims._num(-1234.5) == "-1.23e+03" and claims._num(3) == "3"
    for x in (None, "text", math.nan, math.inf, -math.inf):
        assert claims._num(x) == "–"


# ----------------------------------------------------------------------------- render_markdown


def _md_table() -> pd.DataFrame:
    base = {"statement": "s", "dataset": "syn", "comparison": "A − B", "column": "col", "statistic": "stat",
            "n_cells": 6}
    rows = [
        dict(base, claim="1", id="1a", role="primary", measured="m|x", rule="", direction="increase",
             estimate=0.123456, ci_low=math.nan, ci_high=2.5, n=3, p=0.012345, p_holm=0.02469, verdict="supported",
             note="a | b"),
        dict(base, claim="1", id="1c", role="primary", measured="m", rule="r", direction="decrease",
             estimate=-0.5, ci_low=-1.0, ci_high=0.25, n=4, p=0.5, p_holm=1.0, verdict="inconclusive", note="n",
             effect=0.25, effect_unit="u", power=0.5, mde=0.7, units_80=12.0, p_tost=0.3, p_tost_holm=0.6),
        dict(base, claim="1", id="1b", role="secondary", measured="m", rule=math.nan, direction="decrease",
             estimate=-1234.5, ci_low=-2000.0, ci_high=-1000.0, n=5, p=0.001, p_holm=0.001,
             verdict="contradicted", note=math.nan),
        dict(base, claim="3", id="3", role="primary", measured="m", rule="own", direction="decrease",
             estimate=1e-5, ci_low=1e-6, ci_high=2e-5, n=2, p=math.nan, p_holm=math.nan, verdict="contradicted",
             note=""),
        dict(base, claim="3", id="3b", role="primary", measured="m", rule="", direction="decrease",
             estimate=-1.0, ci_low=-2.0, ci_high=-0.5, n=2, p=0.01, p_holm=0.02, verdict="supported", note=""),
        dict(base, claim="5", id="5-own", role="secondary", measured="m", rule="", direction="increase",
             estimate=0.0, ci_low=-1.0, ci_high=1.0, n=3, p=1.0, p_holm=1.0, verdict="inconclusive", note=""),
    ]
    return pd.DataFrame(rows, columns=claims.COLUMNS)


def _md_expected(pct: str, rows: dict[str, list[str]], overall: dict[str, tuple[str, str]]) -> str:
    # the optional claim 8 is listed only when judged (none of these tables holds its rows)
    c = {k: v for k, v in claims.CLAIMS.items() if k not in claims.OPTIONAL_CLAIMS or k in rows}
    lines = ["# Claims of the paper, judged from this sweep", "",
             ("Written by `python -m harness claims` (harness/report/claims.py) from results/summary.csv, "
              "results/history.csv and results/generation.csv; nothing here is edited by hand."), "",
             claims.RULE, "", claims.DESIGN, "", "## Overall (primary rows)", "",
             "| claim | statement | verdict | primary rows (supported / contradicted / no effect / inconclusive) |",
             "|---|---|---|---|"]
    for k, statement in c.items():
        v, counts = overall.get(k, ("inconclusive (no data)", "0 / 0 / 0 / 0"))
        lines.append(f"| {k} | {statement} | **{v}** | {counts} |")
    # the power analysis lists the primary rows with a declared effect (here: row 1c)
    lines += [] if "1" not in rows else ["", "## Power of the primary rows", "", claims.power_section(_md_table())[3], "",
              "| claim | id | dataset | effect of interest | units | power | MDE | units for 80% |",
              "|---|---|---|---|---|---|---|---|", "| 1 | 1c | syn | ±0.25 u | 4 | 0.5 | 0.7 | 12 |", "",
              "0 of 1 primary rows have at least 80% power at their declared effect."]
    header = [(f"| id | role | dataset | comparison | measured | rule | statistic | estimate | {pct} CI | n units "
               "| p (Holm) | effect of interest | power | MDE | units for 80% | TOST p (Holm) | verdict | note |"),
              "|" + "---|" * 18]
    for k, statement in c.items():
        lines += ["", f"## Claim {k}: {statement}", ""]
        lines += header + rows[k] if k in rows else ["No data: the sweep did not produce the runs this claim needs."]
    return "\n".join(lines) + "\n"


MD_OVERALL = {"1": ("supported", "1 / 0 / 0 / 1"), "3": ("mixed", "1 / 1 / 0 / 0")}
MD_ROWS = {
    "1": [("| 1a | primary | syn | A − B | m\\|x [col] (claimed increase) | – | stat | 0.123 | [–, 2.5] | 3 "
           "| 0.0123 (0.0247) | – | – | – | – | – | supported | a \\| b |"),
          ("| 1c | primary | syn | A − B | m [col] (claimed decrease) | r | stat | -0.5 | [-1, 0.25] | 4 | 0.5 (1) "
           "| ±0.25 u | 0.5 | 0.7 | 12 | 0.3 (0.6) | inconclusive | n |"),
          ("| 1b | secondary | syn | A − B | m [col] (claimed decrease) | – | stat | -1.23e+03 | [-2e+03, -1e+03] | 5 "
           "| 0.001 (0.001) | – | – | – | – | – | contradicted |  |")],
    "3": [("| 3 | primary | syn | A − B | m [col] (claimed decrease) | own | stat | 1e-05 | [1e-06, 2e-05] | 2 "
           "| – (–) | – | – | – | – | – | contradicted |  |"),
          ("| 3b | primary | syn | A − B | m [col] (claimed decrease) | – | stat | -1 | [-2, -0.5] | 2 | 0.01 (0.02) "
           "| – | – | – | – | – | supported |  |")],
    "5": [("| 5-own | secondary | syn | A − B | m [col] (claimed increase) | – | stat | 0 | [-1, 1] | 3 | 1 (1) "
           "| – | – | – | – | – | inconclusive |  |")],
}


def test_render_markdown_line_by_line():
    text = claims.render_markdown(_md_table(), 0.9)
    expected = _md_expected("90%", MD_ROWS, MD_OVERALL)
    assert text.splitlines() == expected.splitlines()
    assert text == expected
    # the default confidence is 95 %; 0.999 rounds to 100 %
    assert claims.render_markdown(_md_table()) == _md_expected("95%", MD_ROWS, MD_OVERALL)
    assert "| 100% CI |" in claims.render_markdown(_md_table(), 0.999)
    assert "| 29% CI |" in claims.render_markdown(_md_table(), 0.29)  # 0.29 * 100 = 28.999...


def test_render_markdown_of_an_empty_table():
    expected = _md_expected("95%", {}, {})
    assert claims.render_markdown(pd.DataFrame()) == expected
    assert claims.render_markdown(claims.judge(pd.DataFrame(), None, None, _cfg())) == expected


# ----------------------------------------------------------------------------- the command line


def _write_inputs(tmp_path, cfg) -> dict[str, str]:
    paths = {"config": tmp_path / "config.json", "summary": tmp_path / "summary.csv",
             "history": tmp_path / "history.csv", "generation": tmp_path / "generation.csv"}
    paths["config"].write_text(json.dumps(cfg))
    test_report.frame(1.0, 0.01).to_csv(paths["summary"], index=False)
    test_report.history(1.0, 0.01).to_csv(paths["history"], index=False)
    test_report.generation(1.0, 0.01).to_csv(paths["generation"], index=False)
    return {k: str(v) for k, v in paths.items()}


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(["claims", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_command_line_writes_both_documents_from_judge(tmp_path, capsys):
    cfg = json.loads(json.dumps(test_report.CFG))
    cfg["config"]["report"]["confidence"] = 0.8
    p = _write_inputs(tmp_path, cfg)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    md, csv = out_dir / "claims.md", out_dir / "claims.csv"
    args = ["--config", p["config"], "--summary", p["summary"], "--history", p["history"],
            "--generation", p["generation"], "--out-md", md, "--out-csv", csv]
    rc, out, err = _run(capsys, *args)
    assert rc == 0 and err == ""
    frames = [pd.read_csv(p[k]) for k in ("summary", "history", "generation")]
    table = claims.judge(*frames, cfg, 0.8)  # the config's confidence
    assert csv.read_text() == to_csv_text(table)
    assert csv.read_text().splitlines()[0] == ",".join(claims.COLUMNS)
    assert md.read_text() == claims.render_markdown(table, 0.8) and "| 80% CI |" in md.read_text()
    assert out.splitlines() == [f"claim {k}: supported" for k in claims.CLAIMS if k not in claims.OPTIONAL_CLAIMS]
    first = pd.read_csv(csv, dtype=str, keep_default_na=False).iloc[0]
    assert first["p_holm"] == f"{table.loc[0, 'p_holm']:.6g}" and first["estimate"] == f"{table.loc[0, 'estimate']:.6g}"
    assert sorted(f.name for f in out_dir.iterdir()) == ["claims.csv", "claims.md"]  # no temporary file left
    # --confidence wins over the config
    rc, out, err = _run(capsys, *args, "--confidence", "0.9")
    assert rc == 0 and csv.read_text() == to_csv_text(claims.judge(*frames, cfg, 0.9))
    assert "| 90% CI |" in md.read_text()


def test_command_line_defaults_without_config_history_or_generation(tmp_path, capsys, monkeypatch):
    p = _write_inputs(tmp_path, {})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    rc, out, err = _run(capsys, "--summary", p["summary"])
    assert rc == 0 and err == ""
    # no config: infonce against unialign (every variant of the summary is read), 95 %
    table = claims.judge(pd.read_csv(p["summary"]), pd.DataFrame(), pd.DataFrame(), {}, 0.95)
    assert (tmp_path / "results" / "claims.csv").read_text() == to_csv_text(table)
    assert (tmp_path / "results" / "claims.md").read_text() == claims.render_markdown(table, 0.95)
    assert out.splitlines() == [f"claim {k}: supported" for k in "12345"] + \
        ["claim 6: inconclusive (no data)", "claim 7: inconclusive (no data)"]
    # a config file without a report section: the same defaults
    rc, _, _ = _run(capsys, "--summary", p["summary"], "--config", p["config"], "--out-csv", "x.csv",
                    "--out-md", "x.md")
    assert rc == 0 and (tmp_path / "x.csv").read_text() == to_csv_text(table)


def test_command_line_with_no_rows_and_with_a_missing_column(tmp_path, capsys):
    md, csv = tmp_path / "c.md", tmp_path / "c.csv"
    rc, out, err = _run(capsys, "--summary", tmp_path / "absent.csv", "--out-md", md, "--out-csv", csv)
    assert rc == 0 and out.splitlines() == [f"claim {k}: inconclusive (no data)" for k in claims.CLAIMS
                                            if k not in claims.OPTIONAL_CLAIMS]
    assert csv.read_text() == ",".join(claims.COLUMNS) + "\n"
    assert md.read_text() == claims.render_markdown(pd.DataFrame())
    md.unlink()
    csv.unlink()
    summary = tmp_path / "s.csv"
    test_report.frame().drop(columns=[keys.ZETA]).to_csv(summary, index=False)
    rc, out, err = _run(capsys, "--summary", summary, "--out-md", md, "--out-csv", csv)
    assert rc == 1 and out == ""
    assert err.startswith("error: summary.csv has no column 'conflict/zeta/mean' (metric 'zeta')")
    assert err.count("\n") == 1
    assert not md.exists() and not csv.exists()


def test_command_line_options_and_help(capsys, monkeypatch):
    parser, module = cli.command_parser("claims")
    assert module is claims
    args = parser.parse_args(["--summary", "s.csv"])
    assert (args.config, args.summary, args.history, args.generation, args.out_md, args.out_csv,
            args.confidence) == (None, "s.csv", None, None, "results/claims.md", "results/claims.csv", None)
    args = parser.parse_args(["--summary", "s.csv", "--config", "c.json", "--history", "h.csv",
                              "--generation", "g.csv", "--out-md", "m.md", "--out-csv", "c.csv", "--confidence", "0.9"])
    assert (args.config, args.history, args.generation, args.out_md, args.out_csv, args.confidence) == \
        ("c.json", "h.csv", "g.csv", "m.md", "c.csv", 0.9)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([])
    assert exc.value.code == 2 and "the following arguments are required: --summary" in capsys.readouterr().err
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        cli.main(["claims", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--config CONFIG results/config.json --summary",
                   "--summary SUMMARY results/summary.csv --history",
                   "--history HISTORY results/history.csv --generation",
                   "--generation GENERATION results/generation.csv --out-md",
                   "--out-md OUT_MD the claims table as markdown (default: results/claims.md)",
                   "--out-csv OUT_CSV the claims table as CSV (default: results/claims.csv)",
                   "--confidence CONFIDENCE interval level, strictly between 0 and 1; when absent, "
                   "the config's "
                   "report.confidence, else 0.95 --log-level"):
        assert option in text
    assert "None" not in text  # an option without a default says what its absence means instead
    assert "[--config CONFIG] --summary SUMMARY [--history HISTORY]" in text


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.5", "nan", "abc"])
def test_command_line_refuses_a_confidence_outside_zero_one(tmp_path, capsys, value):
    md, csv = tmp_path / "c.md", tmp_path / "c.csv"
    with pytest.raises(SystemExit) as exc:
        cli.main(["claims", "--summary", str(tmp_path / "s.csv"), "--out-md", str(md), "--out-csv", str(csv),
                  "--confidence", value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"--confidence: must be a number strictly between 0 and 1, got '{value}'" in err
    assert not md.exists() and not csv.exists()


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.5, True, "0.9"])
def test_command_line_refuses_a_config_confidence_outside_zero_one(tmp_path, capsys, value):
    cfg = json.loads(json.dumps(test_report.CFG))
    cfg["config"]["report"]["confidence"] = value
    p = _write_inputs(tmp_path, cfg)
    md, csv = tmp_path / "c.md", tmp_path / "c.csv"
    rc, out, err = _run(capsys, "--config", p["config"], "--summary", p["summary"], "--out-md", md, "--out-csv", csv)
    assert rc == 1 and out == ""
    assert err == f"error: config report.confidence must be a number strictly between 0 and 1, got {value!r}\n"
    assert not md.exists() and not csv.exists()


def test_declared_effects_give_power_detectable_effect_and_equivalence():
    # 2b: the paired chi differences -0.2, -0.21, -0.22 (sd 0.01); 4: gap +0.3, +0.31, +0.32
    effects = {"2b": {"value": 0.5, "unit": "chi"}, "4": {"value": 0.05, "unit": "gap"}, 5: {"value": 20.0}}
    table = claims.judge(_summary(), _history(), _generation(), _cfg(effects=effects))
    rows = table[table["role"] == "primary"].set_index("id")
    se, df = 0.01 / math.sqrt(3), 2
    # the 2a/2b family holds two rows: power and MDE at the Bonferroni level 0.05 / 2
    assert rows.loc["2b", "power"] == pytest.approx(st_power(0.5, se, df, 0.025), rel=1e-9)
    assert rows.loc["2b", "mde"] == pytest.approx(st_mde(se, df, 0.025), rel=1e-9)
    assert rows.loc["2b", "effect_unit"] == "chi" and rows.loc["2b", "verdict"] == "supported"
    assert "declared effect of interest 0.5 chi" in rows.loc["2b", "note"]
    assert "the whole interval lies within the effect of interest" in rows.loc["2b", "note"]
    # gap: significant (contradicted) and outside +-0.05: no equivalence
    assert rows.loc["4", "verdict"] == "contradicted" and rows.loc["4", "p_tost"] > 0.5
    # R@1 +5..+7 with a declared 20 points (an int key, as YAML writes `5:`): supported, inside
    assert rows.loc["5", "effect"] == 20.0 and rows.loc["5", "p_tost"] < 0.05
    # an undeclared row has none of it
    assert math.isnan(rows.loc["2a", "power"]) and math.isnan(rows.loc["2a", "p_tost"])


def test_an_equivalent_row_concludes_no_effect_of_interest():
    summary = _summary()
    # own-rule R@1 differences -1, 0, 2 (inconclusive); declared effect 30 points: equivalent
    table = claims.judge(summary, _history(), _generation(), _cfg(effects={"5-own": {"value": 30.0}}))
    row = table[table["role"] != "control"].set_index("id").loc["5-own"]
    assert row["verdict"] == "no effect of interest" and row["p_tost_holm"] < 0.05


def test_control_rows_enter_no_verdict():
    summary = _summary()
    ctrl = summary[summary["variant"] == "unialign"].assign(variant="infonce_half")
    cfg = _cfg(controls=["infonce_half"])
    cfg["config"]["variants"]["infonce_half"] = {"label": "Half"}
    table = claims.judge(pd.concat([summary, ctrl], ignore_index=True), _history(), _generation(), cfg)
    ctl = table[(table["role"] == "control") & (table["comparison"] == "Half − InfoNCE")]
    assert sorted(ctl["id"]) == ["2a", "2b", "4"] and (ctl["n"] == 3).all()
    # the same numbers as the method's rows (the control copies it), its own Holm family
    prim = table[table["role"] == "primary"].set_index("id")
    assert ctl.set_index("id").loc["4", "estimate"] == pytest.approx(prim.loc["4", "estimate"])
    plain = claims.judge(summary, _history(), _generation(), _cfg())
    pd.testing.assert_frame_equal(plain[plain["role"] == "primary"].reset_index(drop=True),
                                  table[table["role"] == "primary"].reset_index(drop=True))


def st_power(effect, se, df, alpha):
    from harness.report import stats as st

    return st.power_at(effect, se, df, alpha)


def st_mde(se, df, alpha):
    from harness.report import stats as st

    return st.minimal_detectable_effect(se, df, alpha, claims.MDE_POWER)
