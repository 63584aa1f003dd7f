"""Aggregation, tables, figures and claim verdicts on small metric frames built here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness.report import aggregate, claims, figures, tables

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
                rows.append({
                    "dataset": "syn", "variant": variant, "label": variant, "objective": variant.split("_")[0],
                    "M": m, "seed": s, "params": "{}",
                    "conflict/zeta/mean": 0.5 + effect * (0.05 * m - (0.3 if u else 0.0)) + noise * rng.normal(),
                    "conflict/chi/mean": 0.3 + effect * (0.04 * m - (0.2 if u else 0.0)) + noise * rng.normal(),
                    "conflict/grad/cos_align_unif/mean": -0.8 + effect * (0.7 if u else 0.0) + noise * rng.normal(),
                    "divergence/holder": 1.0 - effect * (0.4 if u else 0.0) + noise * rng.normal(),
                    "divergence/proxy/bound": 2.0 + noise * rng.normal(),
                    "gap/centroid_distance_pairs": 0.6 - effect * (0.3 if u else 0.0) + noise * rng.normal(),
                    "gap/alignment_pairs": 0.5 + noise * rng.normal(), "gap/uniformity_mean": -2 + noise * rng.normal(),
                    "retrieval/R1/mean": 50 + effect * (5 if u else 0) + 100 * noise * rng.normal(),
                    "retrieval/R1/anchor->others": 50.0, "retrieval/R1/others->anchor": 49.0,
                    "probe/acc/mean": 0.9,
                })
    return pd.DataFrame(rows)


def history(effect: float = 1.0, noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for variant in ("infonce", "unialign"):
        for m in (2, 3):
            for s in SEEDS:
                for epoch in range(1, 7):
                    h = 1.0 / epoch + noise * rng.normal()
                    rows.append({"dataset": "syn", "variant": variant, "label": variant, "objective": variant,
                                 "M": m, "seed": s, "epoch": epoch, "val/holder": h,
                                 "val/proxy/bound": 3 + effect * 2 * h + noise * rng.normal()})
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
    assert claims.verdict(0.1, 0.5, +1, 5) == "supported"
    assert claims.verdict(-0.5, -0.1, +1, 5) == "contradicted"
    assert claims.verdict(-0.1, 0.5, +1, 5) == "inconclusive"
    assert claims.verdict(-0.5, -0.1, -1, 5) == "supported"
    assert claims.verdict(0.1, 0.5, -1, 5) == "contradicted"
    assert claims.verdict(math.nan, math.nan, +1, 5) == "inconclusive"
    assert claims.verdict(0.1, 0.5, +1, 1) == "inconclusive"
    assert claims.overall(["supported", "inconclusive"]) == "supported"
    assert claims.overall(["supported", "contradicted"]) == "mixed"
    assert claims.overall(["contradicted", "inconclusive"]) == "contradicted"
    assert claims.overall([]) == "inconclusive"


def test_planted_effect_is_supported():
    table = judged(effect=1.0, noise=0.01)
    assert set(table["claim"]) == set(claims.CLAIMS)
    assert (table["verdict"] == "supported").all(), table[["id", "verdict", "estimate", "ci_low", "ci_high"]]


def test_reversed_effect_is_contradicted():
    table = judged(effect=-1.0, noise=0.01)
    assert (table["verdict"] == "contradicted").all(), table[["id", "verdict", "estimate", "ci_low", "ci_high"]]


def test_noise_is_inconclusive():
    table = judged(effect=0.0, noise=1.0, seed=3)
    # claim 7 with no coupling: proxy independent of the divergence
    assert (table["verdict"] == "inconclusive").all(), table[["id", "verdict", "estimate", "ci_low", "ci_high"]]


def test_slope_interval_matches_linregress():
    x = np.repeat(np.arange(2, 7), 3).astype(float)
    y = 0.1 * x + np.random.default_rng(0).normal(0, 0.01, x.size)
    est, lo, hi, n = claims.slope_ci(x, y)
    from scipy import stats

    res = stats.linregress(x, y)
    half = stats.t.ppf(0.975, 13) * res.stderr
    assert n == 15 and abs(est - res.slope) < 1e-12 and abs(lo - (res.slope - half)) < 1e-12
    assert abs(hi - (res.slope + half)) < 1e-12 and abs(est - 0.1) < 0.01
    assert math.isnan(claims.slope_ci([2, 2, 2], [1, 2, 3])[0])


def test_paired_differences_align_on_m_and_seed():
    df = frame()
    d = claims.paired_differences(df, "divergence/holder", "unialign", "infonce")
    assert d.size == len(MS) * len(SEEDS)
    assert abs(d.mean() + 0.4) < 0.02


def test_claims_markdown_states_rule_and_every_claim(tmp_path):
    table = judged(1.0, 0.01)
    text = claims.render_markdown(table)
    assert "Verdict rule" in text
    for claim in claims.CLAIMS.values():
        assert claim in text


def test_claims_with_missing_metrics_are_inconclusive():
    df = frame().drop(columns=["conflict/zeta/mean"])
    table = claims.judge(df, pd.DataFrame(), pd.DataFrame(), CFG)
    assert set(table[table["id"] == "1a"]["verdict"]) == {"inconclusive"}
    assert set(table[table["id"] == "2a"]["verdict"]) == {"inconclusive"}


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
    assert list(df.columns[:6]) == aggregate.ID_COLUMNS
    assert not any(c.startswith("meta/") for c in df.columns)
    assert list(zip(df["variant"], df["M"], df["seed"]))[:4] == [("infonce", 2, 0), ("infonce", 2, 1),
                                                                  ("infonce", 3, 0), ("infonce", 3, 1)]
    assert df.loc[0, "label"] == "InfoNCE"
    assert "0.333333" in outs[0].decode() or "20.3333" in outs[0].decode()
    hist = aggregate.collect_history(runs, CFG)
    assert len(hist) == 16 and list(hist.columns[:7]) == aggregate.ID_COLUMNS + ["epoch"]


def test_benchmarks_merge(tmp_path):
    bench = tmp_path / "benchmarks" / "train" / "syn"
    bench.mkdir(parents=True)
    (bench / "infonce.tsv").write_text("s\th:m:s\tmax_rss\n1.5\t0:00:01\t100\n")
    df = aggregate.collect_benchmarks([bench / "infonce.tsv", tmp_path / "missing.tsv"])
    assert df.loc[0, "stage"] == "train" and df.loc[0, "job"] == "syn/infonce" and df.loc[0, "s"] == 1.5


def test_metric_column_fallbacks():
    cols = ["conflict/zeta_a/mean", "divergence/holder/value", "gap/centroid_distance_anchor"]
    assert aggregate.metric_column(cols, "zeta") == "conflict/zeta_a/mean"
    assert aggregate.metric_column(cols, "holder") == "divergence/holder/value"
    assert aggregate.metric_column(cols, "gap") == "gap/centroid_distance_anchor"
    assert aggregate.metric_column(cols, "chi") is None


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
    assert names == {"table1_retrieval", "table2_ablation", "table3_generation", "table5_sensitivity",
                     "table_conflicts", "table_divergence_gap", "paper_reference"}
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
    args = p.parse_args(["--config", "config.json", "--summary", "summary.csv", "--history", "history.csv",
                         "--generation", "generation.csv", "--out-dir", "figs"])
    assert figures.main(args) == 0
    for name in figures.FIGURES:
        for ext in ("pdf", "png"):
            assert (tmp_path / "figs" / f"{name}.{ext}").stat().st_size > 0
    c = figures.curve(frame()[frame()["variant"] == "infonce"], "conflict/zeta/mean")
    assert "rises" in figures.trend_phrase("zeta", "InfoNCE", c)
