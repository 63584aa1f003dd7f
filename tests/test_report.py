"""Aggregation, tables, figures and claim verdicts on small metric frames built here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.experiment import keys
from harness.report import FIGURES, TABLES, aggregate, claims, figures, stats, tables

CFG = {
    "config": {
        "variants": {
            "infonce": {"objective": "infonce", "label": "InfoNCE", "params": {"temperature": 0.1}},
            "unialign": {"objective": "unialign", "label": "UniAlign", "params": {"tuple": "off"}},
            "unialign_bw": {"objective": "unialign", "params": {"tuple": "off", "bandwidth": 0.25}},
        },
        "studies": {
            "main": {"variants": ["infonce", "unialign"], "ms": [2, 3, 4, 5, 6], "datasets": ["syn"]},
            "ablation": {"variants": ["unialign", "unialign_bw"], "ms": [3], "datasets": ["syn"], "base": "unialign"},
            "sensitivity": {"variants": ["unialign", "unialign_bw"], "ms": [3], "datasets": ["syn"], "base": "unialign"},
        },
        "report": {"baseline": "infonce", "method": "unialign", "confidence": 0.95},
    },
    "seeds": [0, 1, 2, 3, 4],
    "cells": [],
}
MS = [2, 3, 4, 5, 6]
SEEDS = [0, 1, 2, 3, 4]


def frame(effect: float = 1.0, noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """Planted effects scaled by ``effect`` (+1: the paper's claims hold, -1: reversed, 0: none)."""
    rng = np.random.default_rng(seed)
    rows = []
    for variant in ("infonce", "unialign", "unialign_bw"):
        for m in MS if variant != "unialign_bw" else [3]:
            for s in SEEDS:
                u = variant != "infonce"
                excess = 0.05 - effect * (0.04 if u else 0.0) + noise * rng.normal()
                rows.append({
                    "dataset": "syn", "variant": variant, "label": variant, "objective": variant.split("_")[0],
                    "M": m, "seed": s, "split_seed": 0, "params": "{}", "retrieval_rule": "cosine_sum", "n_eval": 300,
                    keys.ZETA: 0.5 + effect * (0.05 * m - (0.3 if u else 0.0)) + noise * rng.normal(),
                    keys.CHI: 0.3 + effect * (0.04 * m - (0.2 if u else 0.0)) + noise * rng.normal(),
                    keys.GRAD_COS: -0.8 + effect * (0.7 if u else 0.0) + noise * rng.normal(),
                    keys.HOLDER_MEDIAN: 1.0 - effect * (0.4 if u else 0.0) + noise * rng.normal(),
                    keys.HOLDER_FIXED: excess + 0.001, keys.HOLDER_FIXED_NULL_MEAN: 0.001,
                    keys.HOLDER_FIXED_NULL_SD: noise / 10, keys.HOLDER_FIXED_EXCESS: excess, keys.HOLDER_FIXED_H: 1.0,
                    keys.PROXY_BOUND: 2.0 + noise * rng.normal(), keys.CS_PAIRWISE: 0.1,
                    keys.GAP: 0.6 - effect * (0.3 if u else 0.0) + noise * rng.normal(), keys.GAP_REL: 0.5,
                    keys.ALIGNMENT: 0.5 + noise * rng.normal(), keys.UNIFORMITY: -2 + noise * rng.normal(),
                    keys.EFFECTIVE_RANK: 20.0 + m, keys.WITHIN_COSINE: 0.1,
                    keys.R1_MEAN: 50 + effect * (5 if u else 0) + 100 * noise * rng.normal(),
                    keys.R1_MEAN_SE: 100 * noise / 10, keys.R5_MEAN: 70.0, keys.R10_MEAN: 80.0, keys.MEDR_MEAN: 2.0,
                    keys.R1_A2O: 50.0, keys.R1_O2A: 49.0,
                    keys.OWN_R1_MEAN: 55 + effect * (5 if u else 0) + 100 * noise * rng.normal(),
                    keys.OWN_R1_MEAN_SE: 100 * noise / 10, keys.OWN_R1_A2T: 56.0, keys.OWN_R1_T2A: 54.0,
                    keys.OWN_R1_REST: 53.0,
                    keys.PROBE: 0.9,
                })
    return pd.DataFrame(rows)


def history(effect: float = 1.0, noise: float = 0.01, seed: int = 0, points: int = 10) -> pd.DataFrame:
    """Validation curves: the divergence falls linearly with noise; the proxy follows its changes
    (``effect`` = 1), their reverse (-1) or falls on its own (0: level-correlated, change-independent)."""
    rng = np.random.default_rng(seed)
    rows = []
    for variant in ("infonce", "unialign"):
        for m in (2, 3):
            for s in SEEDS:
                for k in range(1, points + 1):
                    h = 1.0 - 0.08 * k + 0.05 * rng.normal()
                    own = 1.0 - 0.08 * k + 0.05 * rng.normal()
                    proxy = 3 + (2 * effect * h if effect else 2 * own) + noise * rng.normal()
                    rows.append({"dataset": "syn", "variant": variant, "label": variant, "objective": variant,
                                 "M": m, "seed": s, "split_seed": 0, "epoch": k, "step": 10 * k,
                                 keys.VAL_HOLDER: h, keys.VAL_PROXY: proxy})
    return pd.DataFrame(rows)


def generation(effect: float = 1.0, noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for variant in ("infonce", "unialign"):
        for s in SEEDS:
            u = variant == "unialign"
            row = {"dataset": "syn", "variant": variant, "label": variant, "objective": variant, "M": 3, "seed": s}
            for cond in ("anchor", "from1", "from2", "interp1+2"):
                row[f"gen/{cond}/fd"] = 10 - effect * (2 if u else 0) + noise * 10 * rng.normal()
                row[f"gen/{cond}/mse"] = 1.0 + noise * rng.normal()
                row[f"gen/{cond}/acc"] = 0.5 + effect * (0.1 if u else 0) + noise * rng.normal()
            rows.append(row)
    return pd.DataFrame(rows)


def judged(effect: float, noise: float, seed: int = 0) -> pd.DataFrame:
    return claims.judge(frame(effect, noise, seed), history(effect, noise, seed), generation(effect, noise, seed), CFG)


# ----------------------------------------------------------------------------- verdict logic


def test_verdict_rule():
    assert claims.verdict(0.3, 0.01, +1, 5) == "supported"
    assert claims.verdict(-0.3, 0.01, +1, 5) == "contradicted"
    assert claims.verdict(0.3, 0.2, +1, 5) == "inconclusive"
    assert claims.verdict(-0.3, 0.01, -1, 5) == "supported"
    assert claims.verdict(0.3, 0.01, -1, 5) == "contradicted"
    assert claims.verdict(0.3, 0.049, +1, 5, confidence=0.95) == "supported"
    assert claims.verdict(0.3, 0.049, +1, 5, confidence=0.99) == "inconclusive"
    assert claims.verdict(math.nan, math.nan, +1, 5) == "inconclusive"
    assert claims.verdict(0.3, 0.001, +1, 1) == "inconclusive"
    assert claims.overall(["supported", "inconclusive"]) == "supported"
    assert claims.overall(["supported", "contradicted"]) == "mixed"
    assert claims.overall(["contradicted", "inconclusive"]) == "contradicted"
    assert claims.overall([]) == "inconclusive"
    assert claims.RULE is stats.RULE and "Holm" in claims.RULE


def _primary(table):
    return table[table["role"] == "primary"]


def test_planted_effect_is_supported():
    table = judged(effect=1.0, noise=0.01)
    assert set(table["claim"]) == set(claims.CLAIMS) - claims.OPTIONAL_CLAIMS  # claim 8: only when asked
    prim = _primary(table)
    assert set(prim["claim"]) == set(claims.CLAIMS) - claims.OPTIONAL_CLAIMS
    assert (prim["verdict"] == "supported").all(), prim[["id", "verdict", "estimate", "ci_low", "ci_high", "note"]]
    # one unit per seed (one split): never the 25 (M, seed) cells
    assert set(prim[prim["claim"].isin(["2", "3", "4", "5"])]["n"]) == {len(SEEDS)}
    assert set(prim[prim["claim"].isin(["2", "3", "4", "5"])]["n_cells"]) == {len(SEEDS) * len(MS)}


def test_reversed_effect_is_contradicted():
    prim = _primary(judged(effect=-1.0, noise=0.01))
    assert (prim["verdict"] == "contradicted").all(), prim[["id", "verdict", "estimate", "ci_low", "ci_high"]]


def test_noise_is_inconclusive():
    prim = _primary(judged(effect=0.0, noise=1.0, seed=3))
    assert (prim["verdict"] == "inconclusive").all(), prim[["id", "verdict", "estimate", "ci_low", "ci_high"]]
    assert prim["note"].str.contains("inconclusive: ").all()


def test_claim2c_is_a_sanity_check_outside_the_verdict():
    df = frame(effect=-1.0, noise=0.01)
    df[keys.GRAD_COS] = np.where(df["variant"] == "infonce", -0.8, -0.1) + 0.01 * np.arange(len(df)) % 0.03
    table = claims.judge(df, pd.DataFrame(), pd.DataFrame(), CFG)
    c2 = table[table["id"] == "2c"]
    assert set(c2["role"]) == {"sanity"} and "sanity check" in c2["note"].iloc[0]
    assert (c2["verdict"] == "supported").all()  # supported, yet claim 2 overall is contradicted
    assert claims.overall(list(_primary(table[table["claim"] == "2"])["verdict"])) == "contradicted"


def test_claim7_judges_changes_not_levels():
    # effect 0: both fall with training (levels correlate) but their changes are independent
    table = claims.judge(frame(1.0, 0.01), history(effect=0.0, noise=0.01, seed=4), pd.DataFrame(), CFG)
    c7 = table[table["claim"] == "7"].set_index("id")
    assert c7.loc["7-levels", "estimate"] > 0.8 and c7.loc["7-levels", "role"] == "secondary"
    assert c7.loc["7", "verdict"] == "inconclusive" and abs(c7.loc["7", "estimate"]) < 0.5


def test_claim7_needs_enough_evaluation_points():
    table = claims.judge(frame(1.0, 0.01), history(effect=1.0, points=3), pd.DataFrame(), CFG)
    row = table[table["id"] == "7"].iloc[0]
    assert row["n"] == 0 and row["verdict"] == "inconclusive"
    assert "most in any run: 3" in row["note"] and "needs >= 2" in row["note"]


def _two_dataset_summary(diffs: dict[str, list[float]]) -> pd.DataFrame:
    """R@1 rows for two variants on each dataset; unit s of dataset ds differs by diffs[ds][s]."""
    base = frame(0.0, 0.0)
    base = base[base["variant"].isin(["infonce", "unialign"]) & (base["M"] == 3)]
    out = []
    for ds, d in diffs.items():
        f = base.copy()
        f["dataset"] = ds
        f[keys.R1_MEAN_SE] = 0.0
        f.loc[f["variant"] == "infonce", keys.R1_MEAN] = 50.0
        uni = f["variant"] == "unialign"
        f.loc[uni, keys.R1_MEAN] = 50.0 + np.asarray(d)[f.loc[uni, "seed"].to_numpy()]
        out.append(f)
    return pd.concat(out, ignore_index=True)


def _diffs_with_p(p: float, n: int = 5) -> list[float]:
    """n unit differences whose one-sample t test has two-sided p value ``p`` (positive mean)."""
    from scipy import stats

    z = np.arange(n) - (n - 1) / 2
    z = z / z.std(ddof=1)
    t = stats.t.isf(p / 2, n - 1)
    return list(1.0 + z * math.sqrt(n) / t)


def test_holm_drops_and_keeps_planted_effects():
    cfg = json.loads(json.dumps(CFG))
    cfg["config"]["studies"]["main"]["datasets"] = ["a", "b"]
    cfg["config"]["studies"]["main"]["ms"] = [3]
    # both at p = 0.03: significant alone, not after Holm over the two datasets (0.06, 0.06)
    table = claims.judge(_two_dataset_summary({"a": _diffs_with_p(0.03), "b": _diffs_with_p(0.03)}),
                         pd.DataFrame(), pd.DataFrame(), cfg)
    r5 = table[table["id"] == "5"]
    assert np.allclose(r5["p"], 0.03) and np.allclose(r5["p_holm"], 0.06)
    assert (r5["verdict"] == "inconclusive").all() and r5["note"].str.contains("before Holm").all()
    # p = 0.001 and 0.03: Holm gives 0.002 and 0.03, both kept
    table = claims.judge(_two_dataset_summary({"a": _diffs_with_p(0.001), "b": _diffs_with_p(0.03)}),
                         pd.DataFrame(), pd.DataFrame(), cfg)
    r5 = table[table["id"] == "5"].set_index("dataset")
    assert r5.loc["a", "p_holm"] == pytest.approx(0.002) and r5.loc["b", "p_holm"] == pytest.approx(0.03)
    assert (r5["verdict"] == "supported").all()


def test_paired_by_key_with_shuffled_rows_and_missing_cells():
    df = frame(1.0, 0.01)
    expected = claims.judge(df, pd.DataFrame(), pd.DataFrame(), CFG)
    shuffled = df.sample(frac=1.0, random_state=1).reset_index(drop=True)
    got = claims.judge(shuffled, pd.DataFrame(), pd.DataFrame(), CFG)
    pd.testing.assert_frame_equal(expected, got)
    # a missing baseline cell drops that pair only; the unit keeps its other M
    drop = df[(df["variant"] == "infonce") & (df["M"] == 4) & (df["seed"] == 2)].index
    cells = stats.paired_cells(df.drop(index=drop), keys.GAP, "unialign", "infonce")
    assert len(cells) == len(MS) * len(SEEDS) - 1
    assert not ((cells["M"] == 4) & (cells["seed"] == 2)).any()


def test_claim3_values_are_clipped_at_the_estimator_null():
    df = frame(1.0, 0.0)
    uni = df["variant"] != "infonce"
    df[keys.HOLDER_FIXED_NULL_SD] = 0.01
    # the method below its null (no detectable divergence), the baseline above it: a real decrease
    df[keys.HOLDER_FIXED_EXCESS] = np.where(uni, -0.003, 0.02) + 1e-4 * (df["seed"] - 2)
    row = claims.judge(df, pd.DataFrame(), pd.DataFrame(), CFG).set_index("id").loc["3"]
    assert row["verdict"] == "supported" and row["estimate"] == pytest.approx(-0.02, abs=1e-3)
    assert "null sd median 0.01" in row["note"] and "clipped at 0" in row["note"]
    # both at or below their null: more negative than the null is not "less divergence"
    df[keys.HOLDER_FIXED_EXCESS] = np.where(uni, -0.003, -0.001) - 1e-4 * df["seed"]
    row = claims.judge(df, pd.DataFrame(), pd.DataFrame(), CFG).set_index("id").loc["3"]
    assert row["estimate"] == 0.0 and row["verdict"] != "supported"
    # the estimator's null spread is not added on top of the units' spread
    df[keys.HOLDER_FIXED_EXCESS] = np.where(uni, 0.01, 0.02) + 1e-4 * (df["seed"] - 2)
    tight = claims.judge(df, pd.DataFrame(), pd.DataFrame(), CFG).set_index("id").loc["3"]
    df[keys.HOLDER_FIXED_NULL_SD] = 1.0
    same = claims.judge(df, pd.DataFrame(), pd.DataFrame(), CFG).set_index("id").loc["3"]
    assert (tight["ci_low"], tight["ci_high"]) == (same["ci_low"], same["ci_high"])


def test_claims_missing_column_is_an_error_naming_it():
    df = frame().drop(columns=[keys.ZETA])
    with pytest.raises(keys.MissingColumnError, match="conflict/zeta/mean"):
        claims.judge(df, pd.DataFrame(), pd.DataFrame(), CFG)


def test_claims_markdown_states_rule_design_and_every_claim():
    table = judged(1.0, 0.01)
    text = claims.render_markdown(table)
    assert "Verdict rule" in text and "Holm" in text and "sanity check" in text
    for key, claim in claims.CLAIMS.items():
        assert (claim in text) == (key not in claims.OPTIONAL_CLAIMS), key  # claim 8 only when judged


# ----------------------------------------------------------------------------- aggregation


def _write_run(root: Path, dataset: str, variant: str, m: int, seed: int, value: float) -> None:
    mdir = root / "metrics" / dataset / "job" / variant
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / f"M{m}_seed{seed}.json").write_text(json.dumps({
        "retrieval/R1/mean": value, "conflict/zeta/mean": value / 100, "meta/objective": "infonce",
        "meta/params": "{}", "meta/seed": seed, "flag": True,
    }))
    rdir = root / "runs" / dataset / "job" / variant / f"M{m}" / f"seed{seed}"
    rdir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "val/holder": [0.3, 0.2],
                  "val/proxy/bound": [1.0, 0.8]}).to_csv(rdir / "history.csv", index=False)


def test_aggregate_is_sorted_and_byte_identical(tmp_path):
    for variant in ("unialign", "infonce"):
        for m in (3, 2):
            for seed in (1, 0):
                _write_run(tmp_path, "syn", variant, m, seed, 10.0 * m + seed + 1 / 3)
    dirs = [tmp_path / "metrics" / "syn" / "job"]
    runs = [tmp_path / "runs" / "syn" / "job"]
    outs = []
    for i in range(2):
        path = tmp_path / f"summary{i}.csv"
        aggregate.write_csv(aggregate.collect_metrics(dirs, CFG), path)
        outs.append(path.read_bytes())
    assert outs[0] == outs[1]
    df = pd.read_csv(tmp_path / "summary0.csv")
    assert list(df.columns[:7]) == aggregate.ID_COLUMNS
    assert not any(c.startswith("meta/") for c in df.columns)
    assert list(zip(df["variant"], df["M"], df["seed"]))[:4] == [("infonce", 2, 0), ("infonce", 2, 1),
                                                                  ("infonce", 3, 0), ("infonce", 3, 1)]
    assert df.loc[0, "label"] == "InfoNCE"
    assert "0.333333" in outs[0].decode() or "20.3333" in outs[0].decode()
    hist = aggregate.collect_history(runs, CFG)
    assert len(hist) == 16 and list(hist.columns[:8]) == aggregate.ID_COLUMNS + ["epoch"]


def test_aggregate_reads_split_seeds_from_run_names(tmp_path):
    mdir = tmp_path / "metrics" / "syn" / "job" / "infonce"
    mdir.mkdir(parents=True)
    for split in (0, 2):
        (mdir / f"M3_seed1_split{split}.json").write_text(json.dumps({
            keys.R1_MEAN: 10.0 + split, keys.META_OBJECTIVE: "gram", keys.META_RETRIEVAL_RULE: "gram_volume",
            keys.META_N_EVAL: 300}))
    (mdir / "M3_seed4.json").write_text(json.dumps({keys.R1_MEAN: 1.0, keys.META_SPLIT_SEED: 5}))
    df = aggregate.collect_metrics([tmp_path / "metrics" / "syn" / "job"], CFG)
    assert list(zip(df["seed"], df["split_seed"], df[keys.R1_MEAN])) == [(1, 0, 10.0), (1, 2, 12.0), (4, 5, 1.0)]
    assert list(df[keys.RETRIEVAL_RULE][:2]) == ["gram_volume", "gram_volume"] and df[keys.N_EVAL].iloc[0] == 300
    rdir = tmp_path / "runs" / "syn" / "job" / "infonce" / "M3" / "seed1_split2"
    rdir.mkdir(parents=True)
    pd.DataFrame({"epoch": [1], "step": [5], keys.VAL_HOLDER: [0.1]}).to_csv(rdir / "history.csv", index=False)
    hist = aggregate.collect_history([tmp_path / "runs" / "syn" / "job"], CFG)
    assert list(zip(hist["seed"], hist["split_seed"])) == [(1, 2)]


def test_benchmarks_merge(tmp_path):
    bench = tmp_path / "benchmarks" / "train" / "syn"
    bench.mkdir(parents=True)
    (bench / "infonce.tsv").write_text("s\th:m:s\tmax_rss\n1.5\t0:00:01\t100\n")
    df = aggregate.collect_benchmarks([bench / "infonce.tsv", tmp_path / "missing.tsv"])
    assert df.loc[0, "stage"] == "train" and df.loc[0, "job"] == "syn/infonce" and df.loc[0, "s"] == 1.5


def test_t_interval():
    mean, sd, lo, hi, n = aggregate.t_interval([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and lo < 2 < hi and abs((hi - lo) / 2 - 4.303 * 1 / math.sqrt(3)) < 1e-3
    assert math.isnan(aggregate.t_interval([1.0])[2])


# ----------------------------------------------------------------------------- tables and figures


def test_tables_written_with_reference_section(tmp_path):
    ref = pd.DataFrame([
        {"paper": "UniAlign", "table": "1", "task": "text-to-video retrieval", "dataset": "MSR-VTT",
         "metric": "R@1", "method": "UniAlign", "value": 58.7, "source": "x"},
        {"paper": "CS-Aligner", "table": "1", "task": "text-to-image generation", "dataset": "MSCOCO-30K",
         "metric": "FID", "method": "CS-Aligner", "value": 12.6, "source": "y"},
    ])
    files = tables.write_tables(frame(), generation(), CFG, ref, tmp_path)
    names = {Path(f).stem for f in files}
    assert names == set(TABLES) == {"table1_retrieval", "table2_ablation", "table3_generation", "table5_sensitivity",
                                    "table_conflicts", "table_divergence_gap", "table_collapse", "paper_reference"}
    for name in names:
        for ext in ("csv", "md", "tex"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    t1 = (tmp_path / "table1_retrieval.md").read_text()
    assert "not directly comparable" in t1 and "58.7" in t1 and "M=6" in t1
    assert "12.6" in (tmp_path / "table3_generation.md").read_text()
    assert "bandwidth=0.25" in (tmp_path / "table5_sensitivity.md").read_text()
    assert "Δ R@1" in (tmp_path / "table2_ablation.md").read_text()
    assert r"\begin{tabular}" in (tmp_path / "table_conflicts.tex").read_text()
    t1csv = pd.read_csv(tmp_path / "table1_retrieval.csv")
    assert {"R1_mean", "R1_lo", "R1_hi", "n"} <= set(t1csv.columns) and (t1csv["n"] == 5).all()


def test_tables_tolerate_empty_inputs(tmp_path):
    tables.write_tables(pd.DataFrame(), pd.DataFrame(), CFG, None, tmp_path)
    assert (tmp_path / "table1_retrieval.md").exists()


def test_figures_from_frames(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frame().to_csv("summary.csv", index=False)
    history().to_csv("history.csv", index=False)
    generation().to_csv("generation.csv", index=False)
    (tmp_path / "config.json").write_text(json.dumps(CFG))
    import argparse

    p = argparse.ArgumentParser()
    figures.add_arguments(p)
    # the figures drawn from the summary and history alone (projection_pca and generated_samples need runs)
    drawn = [f for f in FIGURES if f not in ("projection_pca", "generated_samples")]
    args = p.parse_args(["--config", "config.json", "--summary", "summary.csv", "--history", "history.csv",
                         "--out-dir", "figs", "--only", *drawn])
    assert figures.main(args) == 0
    for name in drawn:
        for ext in ("pdf", "png"):
            assert (tmp_path / "figs" / f"{name}.{ext}").stat().st_size > 0
    assert figures.FIGURES is FIGURES


def test_summary_rows_carry_the_provenance_of_their_run_but_not_its_date(tmp_path):
    mdir = tmp_path / "metrics" / "syn" / "job" / "infonce"
    mdir.mkdir(parents=True)
    for seed, commit in ((0, "abc123"), (1, "def456")):
        (mdir / f"M3_seed{seed}.json").write_text(json.dumps({
            keys.R1_MEAN: 10.0, "meta/provenance/git_commit": commit, "meta/provenance/git_dirty": False,
            "meta/provenance/torch_version": "2.13.0+cpu", "meta/provenance/date_utc": "2026-11-29T10:00:00"}))
    df = aggregate.collect_metrics([tmp_path / "metrics" / "syn" / "job"], CFG)
    assert list(df["provenance/git_commit"]) == ["abc123", "def456"]
    assert list(df["provenance/git_dirty"]) == [False, False]
    assert set(df["provenance/torch_version"]) == {"2.13.0+cpu"}
    assert not any("date" in c for c in df.columns)


def test_claim8_judges_whether_the_advantage_grows_with_m():
    cfg = {**CFG, "config": {**CFG["config"], "report": {**CFG["config"].get("report", {}), "m_slopes": True}}}
    df = frame(effect=1.0, noise=0.01)
    u = df["variant"] != "infonce"
    rows = lambda t: t[(t["claim"] == "8") & (t["role"] == "primary")].set_index("id")  # noqa: E731
    # the planted differences are constant in M: no slope, so no claim-8 row is supported
    flat = rows(claims.judge(df, pd.DataFrame(), pd.DataFrame(), cfg))
    assert list(flat.index) == ["8a", "8b", "8c", "8d", "8e"]
    assert (flat["verdict"] != "supported").all(), flat[["verdict", "estimate"]]
    # a widening advantage: UniAlign's R@1 lead and gap reduction grow by a fixed amount per modality
    grown = df.copy()
    grown.loc[u, keys.R1_MEAN] += 2.0 * grown.loc[u, "M"]
    grown.loc[u, keys.GAP] -= 0.05 * grown.loc[u, "M"]
    judged8 = rows(claims.judge(grown, pd.DataFrame(), pd.DataFrame(), cfg))
    assert judged8.loc["8e", "verdict"] == "supported" and judged8.loc["8e", "estimate"] == pytest.approx(2.0, abs=0.5)
    assert judged8.loc["8d", "verdict"] == "supported" and judged8.loc["8d", "estimate"] == pytest.approx(-0.05, abs=0.01)
    # off unless asked for
    assert "8" not in set(claims.judge(grown, pd.DataFrame(), pd.DataFrame(), CFG)["claim"])
