"""Paper-analogue tables (CSV, Markdown, LaTeX): ``python -m harness tables ...``.

Every table is written three times under ``--out-dir``: ``NAME.csv`` (tidy, one row per group
with ``<metric>_mean, _sd, _lo, _hi`` (Student t interval over seeds) and ``n``), ``NAME.md`` and
``NAME.tex`` (human-readable: ``mean ± sd`` over seeds).  Where the paper reports comparable
numbers (``--reference``, config/paper_reference.csv) the Markdown and LaTeX outputs carry them
in a separate, clearly labelled section: they come from other data and backbones, so they are not
directly comparable with this benchmark's numbers.

- ``table1_retrieval``: retrieval per objective and M (Table 1 analogue; study ``main``);
- ``table2_ablation``: each UniAlign term alone, tuple terms, re-coupling, InfoNCE variants,
  anchor choice (Table 2 analogue; study ``ablation``), with the paired R@1 change vs the base;
- ``table3_generation``: generation, cross-modal / upper bound / interpolation (Tables 3-4);
- ``table5_sensitivity``: one weight or bandwidth changed at a time (Table 5; study ``sensitivity``);
- ``table_conflicts``: zeta and chi vs M; ``table_divergence_gap``: divergence and gap vs M;
  ``table_collapse``: effective rank and within-modality cosine vs M;
- ``paper_reference``: the paper's reported numbers with the analogue table they correspond to.

Every results table carries the test rows its numbers rest on: a ``test rows`` column in the
Markdown / LaTeX (one count, or ``min-max`` when split seeds differ) and ``n_eval`` (the smallest
over the group's runs, summary ``n_eval``) in the CSV; ``harness evaluate`` warns below
``MIN_TEST_ROWS``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from harness.experiment import keys
from harness.experiment.evaluate import MIN_TEST_ROWS
from harness.experiment.keys import metric_label
from harness.files import atomic_write_text
from harness.report import TABLES, read_csv_or_empty
from harness.report import stats as st
from harness.report.aggregate import group_stats, load_config, to_csv_text, variant_label
from harness.report.stats import t_interval

NOT_COMPARABLE = (
    "Reported by the paper on other data (VAST-150K / MSR-VTT / DiDeMo / ActivityNet / MSCOCO / "
    "VGGSound) with large pretrained backbones: shown for orientation only, not directly comparable "
    "with this benchmark's numbers."
)
REFERENCE_ANALOGUE = {  # (paper table, task keyword) -> our table
    "retrieval": "table1_retrieval",
    "generation": "table3_generation",
}
GEN_CONDITIONS = {
    "cross-modal": r"^gen/from\d+/",
    "upper bound": r"^gen/anchor/",
    "interpolation": r"^gen/interp[^/]*/",
}
GEN_METRICS = {"mse": "MSE (raw units)", "fd": "Fréchet distance", "acc": "classifier accuracy"}
TEST_ROWS = "test rows"
TEST_ROWS_NOTE = (f"`{TEST_ROWS}`: rows of the test split each number is scored on (a range when split seeds "
                  f"differ); below {MIN_TEST_ROWS} rows a retrieval percentage moves in steps of "
                  f"more than 0.5 points and `harness evaluate` warns.")


# ----------------------------------------------------------------------------- formatting


def _decimals(x: float) -> int:
    a = abs(x)
    return 0 if a >= 1000 else 1 if a >= 10 else 2 if a >= 1 else 3


def fmt(x: float, sd: float | None = None) -> str:
    """``mean ± sd`` with decimals chosen by the mean's magnitude (same decimals for both)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    d = _decimals(x)
    text = f"{x:.{d}f}"
    if sd is not None and isinstance(sd, float) and math.isfinite(sd):
        text += f" ± {sd:.{d}f}"
    return text


def to_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(no rows)_\n"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


_TEX_ESCAPE = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
               "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def tex_escape(text: str) -> str:
    out = "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$").replace("–", "--").replace("→", r"$\to$").replace("ζ", r"$\zeta$")


def to_latex(df: pd.DataFrame, caption: str) -> str:
    if df.empty:
        return f"% {tex_escape(caption)}: no rows\n"
    cols = list(df.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * min(2, len(cols)) + "r" * max(0, len(cols) - 2) + "}", r"\toprule",
             " & ".join(tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(tex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{tex_escape(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


class TableWriter:
    """Collects the Markdown / LaTeX sections of one table and writes the three files."""

    def __init__(self, out_dir: Path, name: str, title: str):
        self.out_dir, self.name, self.title = Path(out_dir), name, title
        self.md = [f"# {title}\n"]
        self.tex = [f"% {tex_escape(title)} (written by harness/report/tables.py)\n"]
        self.rows_noted = False

    def section(self, heading: str, df: pd.DataFrame, note: str = "") -> None:
        if TEST_ROWS in df.columns and not self.rows_noted:  # said once, before the first such section
            self.rows_noted = True
            self.note(TEST_ROWS_NOTE)
        self.md.append(f"\n## {heading}\n")
        if note:
            self.md.append(f"\n{note}\n")
        self.md.append("\n" + to_markdown(df))
        self.tex.append(to_latex(df, f"{self.title}: {heading}" + (f". {note}" if note else "")))

    def note(self, text: str) -> None:
        self.md.append(f"\n{text}\n")
        self.tex.append("% " + tex_escape(text) + "\n")

    def write(self, csv: pd.DataFrame) -> None:
        csv = csv.drop(columns=[TEST_ROWS], errors="ignore")  # the CSV keeps the numeric n_eval
        atomic_write_text(self.out_dir / f"{self.name}.csv", to_csv_text(csv))
        atomic_write_text(self.out_dir / f"{self.name}.md", "".join(self.md))
        atomic_write_text(self.out_dir / f"{self.name}.tex", "\n".join(self.tex))


# ----------------------------------------------------------------------------- helpers


def study(cfg: dict, name: str) -> dict:
    return (cfg.get("config", {}).get("studies", {}) or {}).get(name) or {}


def study_rows(summary: pd.DataFrame, cfg: dict, name: str) -> pd.DataFrame:
    spec = study(cfg, name)
    if not spec or summary.empty:
        return summary.iloc[0:0]
    keep = summary["variant"].isin(spec.get("variants", [])) & summary["dataset"].isin(spec.get("datasets", []))
    if "split_seed" in summary.columns and cfg.get("split_seeds"):
        # the same units for every variant of a table: the verdicts' extra split seeds are left out
        keep &= summary["split_seed"].isin([int(k) for k in cfg["split_seeds"]])
    rows = summary[keep]
    by_ds = spec.get("ms_by_dataset", {}) or {}
    ms_ok = rows.apply(lambda r: int(r["M"]) in by_ds.get(r["dataset"], spec.get("ms", [])), axis=1) if len(rows) else []
    return rows[ms_ok] if len(rows) else rows


def order_variants(cfg: dict, names: Sequence[str], study_name: str | None = None) -> list[str]:
    listed = study(cfg, study_name).get("variants", []) if study_name else []
    rank = {v: i for i, v in enumerate(listed)}
    return sorted(set(names), key=lambda v: (rank.get(v, len(rank)), v))


def columns_for(summary: pd.DataFrame, names: Sequence[str]) -> dict[str, str]:
    """Short metric name -> summary column (harness.experiment.keys); a missing column is an error
    naming it (an empty frame has no columns to check and gives {})."""
    if summary.empty:
        return {}
    return {name: keys.column(summary.columns, name) for name in names}


def test_rows(rows: pd.DataFrame) -> dict[tuple, list[int]]:
    """(dataset, variant, M) -> the sorted distinct test-row counts (summary ``n_eval``) of its runs."""
    if rows.empty or keys.N_EVAL not in rows:
        return {}
    return {(d, v, int(m)): sorted({int(x) for x in sub[keys.N_EVAL].dropna()})
            for (d, v, m), sub in rows.groupby(["dataset", "variant", "M"])}


def rows_text(counts: Sequence[int]) -> str:
    counts = sorted(set(counts))
    if not counts:
        return "–"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def with_test_rows(stats: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``stats`` plus ``n_eval`` (the smallest test split of each group's runs) and the display text."""
    if stats.empty:
        return stats
    counts = test_rows(rows)
    stats = stats.copy()
    found = [counts.get((d, v, int(m)), []) for d, v, m in zip(stats["dataset"], stats["variant"], stats["M"])]
    stats[keys.N_EVAL] = [c[0] if c else float("nan") for c in found]
    stats[TEST_ROWS] = [rows_text(c) for c in found]
    return stats


def rules_of(rows: pd.DataFrame) -> dict[str, str]:
    """variant -> the own retrieval rule its runs recorded (``meta/retrieval_rule``)."""
    if rows.empty or keys.RETRIEVAL_RULE not in rows:
        return {}
    out: dict[str, str] = {}
    for variant, sub in rows.groupby("variant"):
        found = sorted({str(r) for r in sub[keys.RETRIEVAL_RULE].dropna()})
        out[variant] = ", ".join(found)
    return out


def pivot_by_m(stats: pd.DataFrame, cfg: dict, metric: str, study_name: str,
               rules: dict[str, str] | None = None) -> pd.DataFrame:
    """Rows: dataset, objective label (and the scoring rule when ``rules`` is given); columns: M=...,
    cells mean ± sd."""
    if stats.empty or f"{metric}_mean" not in stats:
        return pd.DataFrame()
    ms = sorted(stats["M"].unique())
    rows = []
    for dataset in sorted(stats["dataset"].unique()):
        sub = stats[stats["dataset"] == dataset]
        for variant in order_variants(cfg, sub["variant"], study_name):
            vrow = sub[sub["variant"] == variant]
            row = {"dataset": dataset, "objective": variant_label(cfg, variant)}
            if rules is not None:
                row["rule"] = rules.get(variant, "–")
            for m in ms:
                cell = vrow[vrow["M"] == m]
                row[f"M={m}"] = fmt(cell[f"{metric}_mean"].iloc[0], cell[f"{metric}_sd"].iloc[0]) if len(cell) else "–"
            if TEST_ROWS in vrow:
                row[TEST_ROWS] = _joined(vrow[TEST_ROWS])
            rows.append(row)
    return pd.DataFrame(rows)


def _joined(texts) -> str:
    """One display text for several groups' test-row texts (counts and ranges)."""
    counts = [int(x) for t in texts if t != "–" for x in str(t).split("-")]
    return rows_text(counts)


def metrics_table(stats: pd.DataFrame, cfg: dict, metrics: Sequence[str], study_name: str,
                  extra: dict[tuple, dict] | None = None) -> pd.DataFrame:
    """Rows: dataset, M, objective; columns: one per metric, mean ± sd."""
    rows = []
    if stats.empty:
        return pd.DataFrame()
    for dataset in sorted(stats["dataset"].unique()):
        for m in sorted(stats[stats["dataset"] == dataset]["M"].unique()):
            sub = stats[(stats["dataset"] == dataset) & (stats["M"] == m)]
            for variant in order_variants(cfg, sub["variant"], study_name):
                r = sub[sub["variant"] == variant].iloc[0]
                row = {"dataset": dataset, "M": int(m), "variant": variant_label(cfg, variant)}
                for name in metrics:
                    if f"{name}_mean" in r:
                        row[metric_label(name)] = fmt(r[f"{name}_mean"], r[f"{name}_sd"])
                if extra:
                    row.update(extra.get((dataset, int(m), variant), {}))
                if TEST_ROWS in r:
                    row[TEST_ROWS] = r[TEST_ROWS]
                rows.append(row)
    return pd.DataFrame(rows)


def reference_rows(reference: pd.DataFrame | None, analogue: str) -> pd.DataFrame:
    if reference is None or reference.empty:
        return pd.DataFrame()
    mask = reference["task"].astype(str).apply(
        lambda t: any(k in t for k, v in REFERENCE_ANALOGUE.items() if v == analogue))
    return reference[mask].reset_index(drop=True)


def add_reference(writer: TableWriter, reference: pd.DataFrame | None, analogue: str) -> None:
    rows = reference_rows(reference, analogue)
    heading = "Paper's reported numbers (different data: not directly comparable)"
    if rows.empty:
        writer.note(f"{heading}: none available for this table.")
    else:
        cols = [c for c in ("paper", "table", "task", "dataset", "metric", "method", "value", "source") if c in rows]
        writer.section(heading, rows[cols], NOT_COMPARABLE)


def paired_delta(df: pd.DataFrame, col: str, base: str, confidence: float) -> dict[tuple, dict]:
    """(dataset, M, variant) -> {'Δ R@1 vs base': 'mean [lo, hi]'}: paired with the base's run of the
    same (seed, split seed) (harness.report.stats.paired_cells), t interval over those pairs."""
    out: dict[tuple, dict] = {}
    if df.empty or col not in df:
        return out
    for (dataset, m), sub in df.groupby(["dataset", "M"]):
        if not (sub["variant"] == base).any():
            continue
        for variant in sorted(sub["variant"].unique()):
            if variant == base:
                continue
            d = st.paired_cells(sub, col, variant, base)["d"]
            mean, _sd, lo, hi, n = t_interval(d.tolist(), confidence)
            text = fmt(mean) + (f" [{fmt(lo)}, {fmt(hi)}]" if math.isfinite(lo) else "")
            out[(dataset, int(m), variant)] = {"Δ R@1 vs base [95% CI]": text}
    return out


def param_diff(cfg: dict, variant: str, base: str) -> str:
    variants = cfg.get("config", {}).get("variants", {})
    p = dict(variants.get(variant, {}).get("params", {}) or {})
    q = dict(variants.get(base, {}).get("params", {}) or {})
    changed = [f"{k}={p.get(k, 'default')}" for k in sorted(set(p) | set(q)) if p.get(k) != q.get(k)]
    if variants.get(variant, {}).get("objective") != variants.get(base, {}).get("objective"):
        changed.insert(0, f"objective={variants.get(variant, {}).get('objective')}")
    return ", ".join(changed) if changed else "(base)"


# ----------------------------------------------------------------------------- tables


def table1(summary, cfg, reference, out_dir, confidence):
    names = ["R1", "R1_a2o", "R1_o2a", "R5", "R10", "MedR", "R1_own", "R1_own_a2t", "R1_own_t2a", "R1_own_rest",
             "probe"]
    rows = study_rows(summary, cfg, "main")
    stats = with_test_rows(group_stats(rows, ["dataset", "variant", "M"], columns_for(rows, names), confidence), rows)
    rules = rules_of(rows)
    w = TableWriter(out_dir, "table1_retrieval", "Table 1 analogue: retrieval per objective and number of modalities M")
    w.note("Test split; mean ± sd over runs (seeds and split seeds); R@1 in percent. Pairwise sections score "
           "every objective by the cosine between two modalities (rule pairwise_cosine). Own-rule sections score "
           "each objective on tuple tasks by its own rule (column `rule`): "
           + "; ".join(f"{k} = {v}" for k, v in keys.RULE_DESCRIPTIONS.items() if k != "pairwise_cosine")
           + ". Tuple tasks: anchor -> tuple of the other modalities, tuple -> anchor, and the tuple of "
           "the others -> each non-anchor modality.")
    w.section("R@1 (pairwise cosine, mean over ordered pairs) vs M", pivot_by_m(stats, cfg, "R1", "main"))
    w.section("R@1, anchor to others (pairwise cosine; text-to-video analogue) vs M",
              pivot_by_m(stats, cfg, "R1_a2o", "main"))
    w.section("R@1, others to anchor (pairwise cosine; video-to-text analogue) vs M",
              pivot_by_m(stats, cfg, "R1_o2a", "main"))
    w.section("R@1, own rule, mean over tuple tasks vs M", pivot_by_m(stats, cfg, "R1_own", "main", rules))
    w.section("R@1, own rule, anchor to tuple vs M", pivot_by_m(stats, cfg, "R1_own_a2t", "main", rules))
    w.section("R@1, own rule, tuple to anchor vs M", pivot_by_m(stats, cfg, "R1_own_t2a", "main", rules))
    w.section("Linear-probe accuracy vs M", pivot_by_m(stats, cfg, "probe", "main"))
    add_reference(w, reference, "table1_retrieval")
    w.write(_label(stats, cfg))


def table2(summary, cfg, reference, out_dir, confidence):
    names = ["R1", "R1_a2o", "R1_o2a", "probe", "zeta", "chi", "holder", "gap"]
    rows = study_rows(summary, cfg, "ablation")
    cols = columns_for(rows, names)
    stats = with_test_rows(group_stats(rows, ["dataset", "variant", "M"], cols, confidence), rows)
    base = study(cfg, "ablation").get("base")
    extra = paired_delta(rows, cols.get("R1", ""), base, confidence) if base else {}
    w = TableWriter(out_dir, "table2_ablation", "Table 2 analogue: ablation of UniAlign's terms and of InfoNCE")
    w.note(f"Base variant: {variant_label(cfg, base) if base else '(none)'}; Δ is paired over seeds "
           "(same data split and initial seed), with a 95% t interval.")
    w.section("Ablation", metrics_table(stats, cfg, names, "ablation", extra))
    add_reference(w, reference, "table2_ablation")
    w.write(_label(stats, cfg))


def generation_conditions(gen: pd.DataFrame) -> pd.DataFrame:
    """Per run: <condition>/<metric> averaged over the matching generation columns."""
    if gen.empty:
        return gen
    out = gen[[c for c in keys.ID_COLUMNS if c in gen]].copy()
    for cond, pattern in GEN_CONDITIONS.items():
        for metric in GEN_METRICS:
            cols = [c for c in gen.columns if re.match(pattern, c) and c.endswith(f"/{metric}")]
            if cols:
                out[f"{cond}/{metric}"] = gen[cols].mean(axis=1)
    return out


def table3(generation, cfg, reference, out_dir, confidence, summary=None):
    per_run = generation_conditions(generation)
    cols = {c: c for c in per_run.columns if "/" in c}
    stats = group_stats(per_run, ["dataset", "variant", "M"], cols, confidence) if not per_run.empty else pd.DataFrame()
    # generation decodes the test split of the runs the summary evaluated: their n_eval
    stats = with_test_rows(stats, summary if summary is not None else pd.DataFrame())
    w = TableWriter(out_dir, "table3_generation",
                    "Tables 3-4 analogue: UnCLIP-style generation of the anchor modality")
    w.note("cross-modal: decoded from another modality's embedding (text/audio-to-image analogue), mean over "
           "source modalities; upper bound: decoded from the anchor's own embedding (the paper's * rows); "
           "interpolation: from normalize(z_m + z_n), mean over pairs. Fréchet distance in a fixed PCA space "
           "(FID analogue; lower is better); MSE lower is better; classifier accuracy higher is better.")
    rows = []
    if not stats.empty:
        for r in stats.sort_values(["dataset", "M", "variant"]).to_dict("records"):
            row = {"dataset": r["dataset"], "M": int(r["M"]), "variant": variant_label(cfg, r["variant"])}
            for cond in GEN_CONDITIONS:
                for metric in GEN_METRICS:
                    key = f"{cond}/{metric}"
                    if f"{key}_mean" in r:
                        row[f"{cond} {metric}"] = fmt(r[f"{key}_mean"], r[f"{key}_sd"])
            row[TEST_ROWS] = r.get(TEST_ROWS, "–")
            rows.append(row)
    w.section("Generation", pd.DataFrame(rows))
    add_reference(w, reference, "table3_generation")
    w.write(_label(stats, cfg))


def table5(summary, cfg, reference, out_dir, confidence):
    names = ["R1", "probe", "holder", "gap", "zeta", "chi"]
    rows = study_rows(summary, cfg, "sensitivity")
    cols = columns_for(rows, names)
    stats = with_test_rows(group_stats(rows, ["dataset", "variant", "M"], cols, confidence), rows)
    base = study(cfg, "sensitivity").get("base")
    out_rows = []
    if not stats.empty:
        stats = stats.copy()
        stats["changed"] = [param_diff(cfg, v, base) if base else "" for v in stats["variant"]]
        for r in stats.sort_values(["dataset", "M", "changed"]).to_dict("records"):
            row = {"dataset": r["dataset"], "M": int(r["M"]), "setting (vs base)": r["changed"]}
            for name in names:
                if f"{name}_mean" in r:
                    row[metric_label(name)] = fmt(r[f"{name}_mean"], r[f"{name}_sd"])
            row[TEST_ROWS] = r.get(TEST_ROWS, "–")
            out_rows.append(row)
    w = TableWriter(out_dir, "table5_sensitivity", "Table 5 analogue: sensitivity to bandwidths and weights")
    w.note(f"One setting changed at a time from the base variant {variant_label(cfg, base) if base else '(none)'}; "
           "bandwidths are kernel widths s of k_s (docs/interfaces.md), 'median' = median-distance heuristic.")
    w.section("Sensitivity", pd.DataFrame(out_rows))
    add_reference(w, reference, "table5_sensitivity")
    w.write(_label(stats, cfg))


def table_conflicts(summary, cfg, reference, out_dir, confidence):
    names = ["zeta", "chi", "grad_cos"]
    rows = study_rows(summary, cfg, "main")
    cols = columns_for(rows, names)
    quant = {c: c for c in rows.columns if re.match(r"^conflict/(zeta|chi)[^/]*/(q|p)\d+", c)} if len(rows) else {}
    stats = with_test_rows(group_stats(rows, ["dataset", "variant", "M"], {**cols, **quant}, confidence), rows)
    w = TableWriter(out_dir, "table_conflicts", "Conflict statistics vs M")
    w.note("zeta = cos(alignment force, uniformity force) of the anchor's InfoNCE gradient, chi = 1 - |mean unit "
           "pull| (intra-alignment conflict), both evaluated on the test embeddings (docs/conflicts; "
           "harness.instruments.conflicts); grad_cos: cosine between the trained objective's alignment and uniformity "
           "gradients. Mean ± sd over seeds.")
    for name in names:
        if name in cols:
            w.section(f"{metric_label(name)} vs M", pivot_by_m(stats, cfg, name, "main"))
    w.write(_label(stats, cfg))


def table_divergence_gap(summary, cfg, reference, out_dir, confidence):
    names = ["holder_excess", "holder_fixed", "holder_null", "holder", "proxy", "cs", "gap", "gap_rel", "alignment",
             "uniformity"]
    rows = study_rows(summary, cfg, "main")
    cols = columns_for(rows, names)
    stats = with_test_rows(group_stats(rows, ["dataset", "variant", "M"], cols, confidence), rows)
    w = TableWriter(out_dir, "table_divergence_gap", "Global Hölder divergence and modality gap vs M")
    w.note("Test embeddings; divergences in nats (resubstitution estimator); mean ± sd over runs. The first "
           "section is the divergence at one fixed KDE bandwidth for every run minus the same estimator's "
           "mean on M disjoint samples of one modality at that bandwidth (true divergence 0): a value at or "
           "below 0 is no detectable divergence, not a negative divergence. The plug-in estimates themselves "
           "(fixed and median bandwidth; the median bandwidth differs between runs) follow for reference.")
    for name in names:
        if name in cols:
            w.section(f"{metric_label(name)} vs M", pivot_by_m(stats, cfg, name, "main"))
    w.write(_label(stats, cfg))


def table_collapse(summary, cfg, reference, out_dir, confidence):
    names = ["effective_rank", "within_cosine", "uniformity"]
    rows = study_rows(summary, cfg, "main")
    cols = columns_for(rows, names)
    stats = with_test_rows(group_stats(rows, ["dataset", "variant", "M"], cols, confidence), rows)
    w = TableWriter(out_dir, "table_collapse", "Collapse statistics of the test embeddings vs M")
    w.note(f"Per modality, then averaged over modalities; mean ± sd over runs. Effective rank (Roy & Vetterli "
           f"2007) of one modality's unit-normalised test embeddings: at most the embedding dimension, low when "
           f"they span few directions (dimensional collapse). Within-modality cosine: mean cosine between two "
           f"distinct test embeddings of one modality, 1 when they all collapsed onto one direction, about 0 "
           f"when they spread over the sphere. Uniformity as in the divergence table.")
    for name in names:
        if name in cols:
            w.section(f"{metric_label(name)} vs M", pivot_by_m(stats, cfg, name, "main"))
    w.write(_label(stats, cfg))


def table_reference(reference, out_dir):
    w = TableWriter(out_dir, "paper_reference", "Numbers reported by the paper and its peers")
    if reference is None or reference.empty:
        w.note("No paper_reference.csv was given.")
        w.write(pd.DataFrame(columns=["analogue"]))
        return
    ref = reference.copy()
    ref.insert(0, "analogue", [next((v for k, v in REFERENCE_ANALOGUE.items() if k in str(t)), "")
                               for t in ref["task"]])
    w.section("Reported numbers (different data: not directly comparable)", ref, NOT_COMPARABLE)
    w.write(ref)


def _label(stats: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    if stats.empty or "variant" not in stats:
        return stats
    stats = stats.copy()
    stats.insert(stats.columns.get_loc("variant") + 1, "label", [variant_label(cfg, v) for v in stats["variant"]])
    return stats.sort_values(["dataset", "variant", "M"], kind="mergesort").reset_index(drop=True)


def write_tables(summary: pd.DataFrame, generation: pd.DataFrame, cfg: dict, reference: pd.DataFrame | None,
                 out_dir: str | Path, confidence: float = 0.95) -> list[str]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    builders = {
        "table1_retrieval": lambda: table1(summary, cfg, reference, out_dir, confidence),
        "table2_ablation": lambda: table2(summary, cfg, reference, out_dir, confidence),
        "table3_generation": lambda: table3(generation, cfg, reference, out_dir, confidence, summary),
        "table5_sensitivity": lambda: table5(summary, cfg, reference, out_dir, confidence),
        "table_conflicts": lambda: table_conflicts(summary, cfg, reference, out_dir, confidence),
        "table_divergence_gap": lambda: table_divergence_gap(summary, cfg, reference, out_dir, confidence),
        "table_collapse": lambda: table_collapse(summary, cfg, reference, out_dir, confidence),
        "paper_reference": lambda: table_reference(reference, out_dir),
    }
    if list(builders) != TABLES:
        raise AssertionError(f"tables built {list(builders)} differ from harness.report.TABLES {TABLES}")
    for build in builders.values():
        build()
    return sorted(str(out_dir / f"{name}.csv") for name in TABLES)


def add_arguments(p) -> None:
    p.add_argument("--config", default=None, help="results/config.json")
    p.add_argument("--summary", required=True, help="results/summary.csv")
    p.add_argument("--generation", default=None, help="results/generation.csv")
    p.add_argument("--reference", default=None, help="paper_reference.csv")
    p.add_argument("--out-dir", default="results/tables")
    p.add_argument("--confidence", type=float, default=None, help="interval level (default: config or 0.95)")


def main(args) -> int:
    cfg = load_config(args.config)
    confidence = args.confidence or cfg.get("config", {}).get("report", {}).get("confidence", 0.95)
    reference = read_csv_or_empty(args.reference) if args.reference else None
    files = write_tables(read_csv_or_empty(args.summary), read_csv_or_empty(args.generation), cfg, reference, args.out_dir, confidence)
    print(f"tables: wrote {len(files)} tables to {args.out_dir}")
    return 0
