"""Judge each claim of the paper from the sweep's numbers: ``python -m harness claims ...``.

Writes ``results/claims.md`` and ``results/claims.csv``, entirely from data (never by hand).

Claims (``method`` = the configured UniAlign variant, ``baseline`` = the configured InfoNCE variant;
``report:`` in the config; rows are also produced for ``method_tuple`` when it differs):

1. conflicts grow with M under InfoNCE: slope of zeta (1a) and of chi (1b) against M over every
   baseline run of the ``main`` study (``scipy.stats.linregress``; 95% interval
   ``slope ± t_{n-2} · stderr``); claimed direction: positive.
2. UniAlign removes them: paired difference method − baseline of zeta (2a), chi (2b) and of the
   magnitude |cos| between the objective's own alignment and uniformity gradients (2c: decoupled
   gradients have cosine near 0); claimed direction: negative.
3. UniAlign lowers the global Hölder divergence: paired difference, claimed negative.
4. UniAlign lowers the modality gap: paired difference, claimed negative.
5. retrieval improves: paired difference of mean R@1, claimed positive.
6. generation improves: paired difference of the cross-modal Fréchet distance (6a, claimed
   negative) and of the cross-modal classifier accuracy (6b, claimed positive).
7. the proxy moves with the divergence during training: per method run, Pearson r between the
   validation Hölder divergence and the proxy across evaluation epochs (runs with >= 3 evaluation
   epochs); mean over runs in Fisher-z space with a t interval, back-transformed; claimed positive.

Paired differences: one difference per (M, seed) cell in which both variants were trained (same
data split and seed, so the pair shares everything but the objective), over every M of the
``main`` study (generation: every generated M); 95% Student t interval over the cells.

Verdict rule (per row): the 95% interval excludes 0 on the claimed side -> **supported**; it
excludes 0 on the opposite side -> **contradicted**; otherwise (or fewer than 2 units, or an
undefined interval) -> **inconclusive**.  Overall verdict of a claim over its rows (datasets,
method variants, sub-claims): supported if at least one row is supported and none contradicted;
contradicted if at least one is contradicted and none supported; mixed if both occur; else
inconclusive.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from harness.files import atomic_write_text
from harness.report import main_study_rows, read_csv_or_empty
from harness.report.aggregate import (
    history_column,
    load_config,
    metric_column,
    metric_label,
    t_interval,
    to_csv_text,
    variant_label,
)

RULE = (
    "Verdict rule: the 95% interval excludes 0 on the claimed side -> supported; it excludes 0 on the "
    "opposite side -> contradicted; otherwise (fewer than 2 units or undefined interval included) -> "
    "inconclusive. Overall: supported if >= 1 row is supported and none contradicted; contradicted if "
    ">= 1 contradicted and none supported; mixed if both; else inconclusive."
)
CLAIMS = {
    "1": "Conflicts (zeta, chi) grow with M under InfoNCE",
    "2": "UniAlign removes the conflicts",
    "3": "UniAlign lowers the global Hölder divergence vs InfoNCE",
    "4": "UniAlign lowers the modality gap vs InfoNCE",
    "5": "UniAlign improves retrieval vs InfoNCE",
    "6": "UniAlign improves generation vs InfoNCE",
    "7": "The proxy moves with the global Hölder divergence during training",
}
COLUMNS = ["claim", "id", "statement", "dataset", "comparison", "measured", "statistic", "unit", "direction",
           "estimate", "ci_low", "ci_high", "n", "verdict"]


def verdict(lo: float, hi: float, direction: int, n: int) -> str:
    """The documented rule; ``direction`` is +1 (claimed increase) or -1 (claimed decrease)."""
    if n < 2 or lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if direction > 0:
        return "supported" if lo > 0 else ("contradicted" if hi < 0 else "inconclusive")
    return "supported" if hi < 0 else ("contradicted" if lo > 0 else "inconclusive")


def overall(verdicts: Sequence[str]) -> str:
    s = sum(v == "supported" for v in verdicts)
    c = sum(v == "contradicted" for v in verdicts)
    if s and c:
        return "mixed"
    if s:
        return "supported"
    if c:
        return "contradicted"
    return "inconclusive"


def slope_ci(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """Least-squares slope of y on x with a t interval (NaN bounds with < 3 points or one x)."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < 3 or np.unique(x).size < 2:
        return (math.nan, math.nan, math.nan, n)
    res = stats.linregress(x, y)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 2)) * float(res.stderr)
    return (float(res.slope), float(res.slope) - half, float(res.slope) + half, n)


def paired_differences(df: pd.DataFrame, col: str, method: str, baseline: str, transform=None) -> np.ndarray:
    """method − baseline per (M, seed) cell present for both."""
    if df.empty or col is None or col not in df:
        return np.array([])
    a = df[df["variant"] == method].set_index(["M", "seed"])[col]
    b = df[df["variant"] == baseline].set_index(["M", "seed"])[col]
    a, b = a.align(b, join="inner")
    a, b = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
    if transform is not None:
        a, b = transform(a), transform(b)
    d = (a - b).to_numpy(dtype=float)
    return d[np.isfinite(d)]


def fisher_mean_ci(rs: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    rs = np.clip(np.asarray([r for r in rs if np.isfinite(r)], dtype=float), -0.999999, 0.999999)
    mean, _sd, lo, hi, n = t_interval(np.arctanh(rs).tolist(), confidence)
    return (float(np.tanh(mean)) if n else math.nan, float(np.tanh(lo)) if math.isfinite(lo) else math.nan,
            float(np.tanh(hi)) if math.isfinite(hi) else math.nan, n)


def _row(claim, cid, dataset, comparison, measured, statistic, unit, direction, est, lo, hi, n):
    return {
        "claim": claim, "id": cid, "statement": CLAIMS[claim], "dataset": dataset, "comparison": comparison,
        "measured": measured, "statistic": statistic, "unit": unit, "direction": "increase" if direction > 0 else "decrease",
        "estimate": est, "ci_low": lo, "ci_high": hi, "n": int(n), "verdict": verdict(lo, hi, direction, n),
    }


def judge(summary: pd.DataFrame, history: pd.DataFrame, generation: pd.DataFrame, cfg: dict,
          confidence: float = 0.95) -> pd.DataFrame:
    report = cfg.get("config", {}).get("report", {}) or {}
    baseline = report.get("baseline", "infonce")
    methods = [report.get("method", "unialign")]
    if report.get("method_tuple") and report["method_tuple"] not in methods:
        methods.append(report["method_tuple"])
    main = main_study_rows(summary, cfg)
    rows: list[dict] = []
    datasets = sorted(main["dataset"].unique()) if not main.empty else []
    base_label = variant_label(cfg, baseline)
    pct = f"{int(round(confidence * 100))}%"

    for dataset in datasets:
        sub = main[main["dataset"] == dataset]
        # ---- 1: growth with M under the baseline
        b = sub[sub["variant"] == baseline]
        for cid, name in (("1a", "zeta"), ("1b", "chi")):
            col = metric_column(sub.columns, name)
            if col is None:
                rows.append(_row("1", cid, dataset, base_label, metric_label(name), "slope vs M (linregress)",
                                 "per modality", +1, math.nan, math.nan, math.nan, 0))
                continue
            est, lo, hi, n = slope_ci(b["M"], pd.to_numeric(b[col], errors="coerce"), confidence)
            rows.append(_row("1", cid, dataset, base_label, f"{metric_label(name)} [{col}]",
                             f"slope vs M over runs, {pct} t interval", "per modality", +1, est, lo, hi, n))
        # ---- 2-5: paired differences
        paired = [
            ("2", "2a", "zeta", -1, None),
            ("2", "2b", "chi", -1, None),
            ("2", "2c", "grad_cos", -1, np.abs),
            ("3", "3", "holder", -1, None),
            ("4", "4", "gap", -1, None),
            ("5", "5", "R1", +1, None),
        ]
        for method in methods:
            comp = f"{variant_label(cfg, method)} − {base_label}"
            for claim, cid, name, direction, transform in paired:
                col = metric_column(sub.columns, name)
                d = paired_differences(sub, col, method, baseline, transform)
                mean, _sd, lo, hi, n = t_interval(d.tolist(), confidence)
                measured = ("|" + metric_label(name) + "|" if transform is not None else metric_label(name))
                rows.append(_row(claim, cid, dataset, comp, f"{measured} [{col}]" if col else measured,
                                 f"mean paired difference over (M, seed) cells, {pct} t interval", "metric units",
                                 direction, mean, lo, hi, n))

    # ---- 6: generation
    if generation is not None and not generation.empty:
        from harness.report.tables import generation_conditions

        per_run = generation_conditions(generation)
        for dataset in sorted(per_run["dataset"].unique()):
            sub = per_run[per_run["dataset"] == dataset]
            for method in methods:
                comp = f"{variant_label(cfg, method)} − {base_label}"
                for cid, col, direction, label in (("6a", "cross-modal/fd", -1, "cross-modal Fréchet distance"),
                                                   ("6b", "cross-modal/acc", +1, "cross-modal classifier accuracy")):
                    if col not in sub:
                        continue
                    d = paired_differences(sub, col, method, baseline)
                    mean, _sd, lo, hi, n = t_interval(d.tolist(), confidence)
                    rows.append(_row("6", cid, dataset, comp, label,
                                     f"mean paired difference over (M, seed) cells, {pct} t interval",
                                     "metric units", direction, mean, lo, hi, n))

    # ---- 7: proxy vs divergence during training
    if history is not None and not history.empty:
        hcol, pcol = history_column(history.columns, "holder"), history_column(history.columns, "proxy")
        for dataset in sorted(history["dataset"].unique()):
            for method in methods:
                rs = []
                if hcol and pcol:
                    sub = history[(history["dataset"] == dataset) & (history["variant"] == method)]
                    for _key, run in sub.groupby(["M", "seed"]):
                        run = run[[hcol, pcol]].apply(pd.to_numeric, errors="coerce").dropna()
                        if len(run) >= 3 and run[hcol].std() > 0 and run[pcol].std() > 0:
                            rs.append(float(np.corrcoef(run[hcol], run[pcol])[0, 1]))
                est, lo, hi, n = fisher_mean_ci(rs, confidence)
                rows.append(_row("7", "7", dataset, variant_label(cfg, method),
                                 f"Pearson r(val divergence [{hcol}], proxy [{pcol}]) across epochs",
                                 f"mean r over runs (Fisher z), {pct} t interval", "correlation", +1, est, lo, hi, n))

    out = pd.DataFrame(rows, columns=COLUMNS)
    return out.sort_values(["claim", "id", "dataset", "comparison"], kind="mergesort").reset_index(drop=True)


def _num(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3g}"


def render_markdown(table: pd.DataFrame, confidence: float = 0.95) -> str:
    lines = ["# Claims of the paper, judged from this sweep", "",
             "Written by `python -m harness claims` (harness/report/claims.py) from results/summary.csv, "
             "results/history.csv and results/generation.csv; nothing here is edited by hand.", "",
             RULE, "",
             "Paired differences use one unit per (M, seed) cell in which both variants were trained (same data "
             "split and seed); slopes use every baseline run of the main study; claim 7 averages per-run "
             "correlations in Fisher-z space.", ""]
    lines += ["## Overall", "", "| claim | statement | verdict | rows (supported / contradicted / inconclusive) |",
              "|---|---|---|---|"]
    for claim, statement in CLAIMS.items():
        sub = table[table["claim"] == claim]
        v = list(sub["verdict"])
        counts = f"{v.count('supported')} / {v.count('contradicted')} / {v.count('inconclusive')}"
        lines.append(f"| {claim} | {statement} | **{overall(v) if v else 'inconclusive (no data)'}** | {counts} |")
    for claim, statement in CLAIMS.items():
        sub = table[table["claim"] == claim]
        lines += ["", f"## Claim {claim}: {statement}", ""]
        if sub.empty:
            lines.append("No data: the sweep did not produce the runs this claim needs.")
            continue
        lines += ["| id | dataset | comparison | measured | statistic | estimate | 95% CI | n | verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sub.to_dict("records"):
            ci = f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
            lines.append(f"| {r['id']} | {r['dataset']} | {r['comparison']} | {r['measured']} "
                         f"(claimed {r['direction']}) | {r['statistic']} | {_num(r['estimate'])} | {ci} | {r['n']} | "
                         f"{r['verdict']} |")
    return "\n".join(lines).replace("95% CI", f"{int(round(confidence * 100))}% CI") + "\n"


def add_arguments(p) -> None:
    p.add_argument("--config", default=None, help="results/config.json")
    p.add_argument("--summary", required=True, help="results/summary.csv")
    p.add_argument("--history", default=None, help="results/history.csv")
    p.add_argument("--generation", default=None, help="results/generation.csv")
    p.add_argument("--out-md", default="results/claims.md")
    p.add_argument("--out-csv", default="results/claims.csv")
    p.add_argument("--confidence", type=float, default=None)


def main(args) -> int:
    cfg = load_config(args.config)
    confidence = args.confidence or cfg.get("config", {}).get("report", {}).get("confidence", 0.95)
    table = judge(read_csv_or_empty(args.summary), read_csv_or_empty(args.history), read_csv_or_empty(args.generation), cfg, confidence)
    atomic_write_text(args.out_csv, to_csv_text(table))
    atomic_write_text(args.out_md, render_markdown(table, confidence))
    for claim in CLAIMS:
        print(f"claim {claim}: {overall(list(table[table['claim'] == claim]['verdict']))}")
    return 0
