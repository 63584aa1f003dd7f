"""Merge per-run outputs into tidy tables: ``python -m harness aggregate ...``.

Inputs follow the workflow's layout (workflow/rules/common.smk):

- ``--metrics metrics/{dataset}/{job} ...``: ``{variant}/M{M}_seed{S}.json`` inside (``harness evaluate``);
- ``--runs runs/{dataset}/{job} ...``: ``{variant}/M{M}/seed{S}/history.csv`` inside (``harness train``);
- ``--generation generation/{dataset}/{job} ...``: ``{variant}/M{M}_seed{S}/generation.json`` inside;

(a job is one variant, or a pack of a study's small variants: the variant is the sub-folder);
- ``--benchmarks benchmarks/{stage}/....tsv``: Snakemake ``benchmark:`` files;
- ``--config results/config.json``: the resolved configuration (variant -> objective, label, params).

Outputs (CSV, rows sorted, floats written with ``%.6g``, so two runs with the same seeds give
byte-identical files when the harness itself is deterministic):

- summary: one row per run: ``dataset, variant, label, objective, M, seed, params`` then every
  numeric metric of metrics.json in sorted column order (``meta/*`` keys dropped: they repeat
  the identifying columns);
- history: one row per (run, epoch) with the same identifying columns and history.csv's columns;
- generation: one row per generation run, ``gen/*`` metrics;
- benchmarks: one row per job: ``stage, job`` and Snakemake's benchmark columns (wall seconds
  ``s``, ``max_rss`` MB, ``cpu_time`` ...) — timings, so not byte-stable.

The module also holds the helpers the tables, figures and claims share: :data:`METRICS` (canonical
short names -> column names, with fallbacks), :func:`metric_column`, :func:`load_config`,
:func:`group_stats` (mean, sd, t-interval over seeds) and the CSV writer.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from harness.files import atomic_write_text

ID_COLUMNS = ["dataset", "variant", "label", "objective", "M", "seed"]
FLOAT_FORMAT = "%.6g"
_RUN_FILE = re.compile(r"^M(?P<M>\d+)_seed(?P<seed>\d+)(?:\.json)?$")

# canonical name -> candidate columns (first present wins), then a regex fallback
METRICS: dict[str, dict[str, Any]] = {
    "R1": {"cols": ["retrieval/R1/mean"], "label": "R@1 (%), mean over ordered pairs"},
    "R5": {"cols": ["retrieval/R5/mean"], "label": "R@5 (%)"},
    "R10": {"cols": ["retrieval/R10/mean"], "label": "R@10 (%)"},
    "MedR": {"cols": ["retrieval/MedR/mean"], "label": "median rank"},
    "R1_a2o": {"cols": ["retrieval/R1/anchor->others"], "label": "R@1 anchor->others (%)"},
    "R1_o2a": {"cols": ["retrieval/R1/others->anchor"], "label": "R@1 others->anchor (%)"},
    "probe": {"cols": ["probe/acc/mean"], "label": "linear-probe accuracy"},
    "zeta": {
        "cols": ["conflict/zeta/mean", "conflict/zeta_a/mean", "conflict/zeta"],
        "regex": r"^conflict/zeta[^/]*/mean$",
        "label": "zeta = cos(V_a, Phi_a)",
    },
    "chi": {
        "cols": ["conflict/chi/mean", "conflict/chi_a/mean", "conflict/chi"],
        "regex": r"^conflict/chi[^/]*/mean$",
        "label": "chi = 1 - |mean pull|",
    },
    "holder": {
        "cols": ["divergence/holder", "divergence/holder/value", "divergence/holder/divergence"],
        "regex": r"^divergence/holder(/[^/]*)?$",
        "label": "global Hölder divergence (nats)",
    },
    "proxy": {
        "cols": ["divergence/proxy/bound", "divergence/proxy"],
        "regex": r"^divergence/proxy(/[^/]*)?$",
        "label": "proxy bound (nats)",
    },
    "cs": {"cols": ["divergence/cs_pairwise_mean"], "label": "mean pairwise CS divergence"},
    "gap": {
        "cols": ["gap/centroid_distance_pairs", "gap/centroid_distance", "gap/centroid_distance_anchor"],
        "regex": r"^gap/.*centroid.*$",
        "label": "modality gap (centroid distance)",
    },
    "gap_rel": {"cols": ["gap/relative_gap_pairs", "gap/relative_gap"], "regex": r"^gap/.*relative.*$", "label": "relative gap"},
    "alignment": {
        "cols": ["gap/alignment_pairs", "gap/alignment"],
        "regex": r"^gap/.*align.*$",
        "label": "alignment |z_m - z_n|^2 (Wang & Isola)",
    },
    "uniformity": {
        "cols": ["gap/uniformity_mean", "gap/uniformity"],
        "regex": r"^gap/uniformity.*$",
        "label": "uniformity log E exp(-2|z_i - z_j|^2)",
    },
    "grad_cos": {
        "cols": ["conflict/grad/cos_align_unif/mean", "conflict/grad/cos_align_unif"],
        "regex": r"^conflict/grad/.*(cos|cosine).*(unif|uniformity).*$",
        "label": "cos(grad alignment, grad uniformity)",
    },
}

HISTORY_METRICS = {
    # the global Hölder divergence (resubstitution, median bandwidth) and the UniAlign proxy bound
    # (M-1) log B + (M-1)/(2h^2) L_align + (1/M) sum_m U (harness.instruments.divergence.proxy_bound)
    "holder": ["val/holder", "val/proxy/divergence"],
    "proxy": ["val/proxy/bound", "val/proxy"],
}


# ----------------------------------------------------------------------------- shared helpers


def metric_column(columns: Iterable[str], name: str) -> str | None:
    """The column holding canonical metric ``name`` (see :data:`METRICS`), or None."""
    columns = list(columns)
    spec = METRICS.get(name)
    if spec is None:
        return name if name in columns else None
    for col in spec["cols"]:
        if col in columns:
            return col
    pattern = spec.get("regex")
    if pattern:
        hits = sorted(c for c in columns if re.match(pattern, c))
        if hits:
            return hits[0]
    return None


def history_column(columns: Iterable[str], name: str) -> str | None:
    columns = list(columns)
    for col in HISTORY_METRICS.get(name, [name]):
        if col in columns:
            return col
    hits = sorted(c for c in columns if c.startswith(f"val/{name}"))
    return hits[0] if hits else None


def metric_label(name: str) -> str:
    return METRICS.get(name, {}).get("label", name)


def load_config(path: str | Path | None) -> dict:
    """The resolved configuration written by the workflow (``results/config.json``)."""
    if not path:
        return {"config": {"variants": {}, "studies": {}}, "seeds": [], "cells": []}
    return json.loads(Path(path).read_text())


def variant_info(cfg: dict, variant: str) -> dict:
    return (cfg.get("config", {}).get("variants", {}) or {}).get(variant, {})


def variant_label(cfg: dict, variant: str) -> str:
    return variant_info(cfg, variant).get("label", variant)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float, int]:
    """(mean, sd, low, high, n) with a Student t interval; NaN bounds when n < 2."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return (math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return (mean, math.nan, math.nan, math.nan, n)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return (mean, sd, mean - half, mean + half, n)


def group_stats(df: pd.DataFrame, by: Sequence[str], metrics: dict[str, str], confidence: float = 0.95) -> pd.DataFrame:
    """One row per group: ``<name>_mean, <name>_sd, <name>_lo, <name>_hi`` and ``n`` (seeds)."""
    rows = []
    if df.empty:
        return pd.DataFrame(columns=list(by) + ["n"])
    for key, sub in df.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["n"] = int(len(sub))
        for name, col in metrics.items():
            if col is None or col not in sub:
                continue
            mean, sd, lo, hi, _ = t_interval(pd.to_numeric(sub[col], errors="coerce").tolist(), confidence)
            row[f"{name}_mean"], row[f"{name}_sd"], row[f"{name}_lo"], row[f"{name}_hi"] = mean, sd, lo, hi
        rows.append(row)
    return pd.DataFrame(rows)


def to_csv_text(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    return buf.getvalue()


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    atomic_write_text(path, to_csv_text(df))


def parse_run_name(name: str) -> tuple[int, int] | None:
    match = _RUN_FILE.match(name)
    return (int(match["M"]), int(match["seed"])) if match else None


def _dataset(path: str | Path) -> str:
    parts = Path(path).parts
    if len(parts) < 2:
        raise ValueError(f"{path}: expected .../<dataset>/<job>")
    return parts[-2]


def _ids(cfg: dict, dataset: str, variant: str, m: int, seed: int, fallback_objective: str = "") -> dict:
    info = variant_info(cfg, variant)
    return {
        "dataset": dataset,
        "variant": variant,
        "label": info.get("label", variant),
        "objective": info.get("objective", fallback_objective),
        "M": int(m),
        "seed": int(seed),
    }


def _numeric_items(obj: dict) -> dict[str, float]:
    out = {}
    for key, value in obj.items():
        if key.startswith("meta/"):
            continue
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def _finish(rows: list[dict], sort_extra: Sequence[str] = ()) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=ID_COLUMNS)
    df = pd.DataFrame(rows)
    first = [c for c in ID_COLUMNS + ["params"] + list(sort_extra) if c in df.columns]
    rest = sorted(c for c in df.columns if c not in first)
    df = df[first + rest]
    return df.sort_values(["dataset", "variant", "M", "seed", *sort_extra], kind="mergesort").reset_index(drop=True)


# ----------------------------------------------------------------------------- collectors


def collect_metrics(dirs: Sequence[str | Path], cfg: dict) -> pd.DataFrame:
    rows = []
    for d in dirs:
        dataset = _dataset(d)
        for path in sorted(Path(d).glob("*/M*_seed*.json")):
            variant = path.parent.name
            parsed = parse_run_name(path.name)
            if parsed is None:
                continue
            obj = json.loads(path.read_text())
            row = _ids(cfg, dataset, variant, *parsed, fallback_objective=str(obj.get("meta/objective", "")))
            params = variant_info(cfg, variant).get("params")
            row["params"] = json.dumps(params if params is not None else json.loads(obj.get("meta/params", "{}")),
                                       sort_keys=True)
            row.update(_numeric_items(obj))
            rows.append(row)
    return _finish(rows)


def collect_history(dirs: Sequence[str | Path], cfg: dict) -> pd.DataFrame:
    frames = []
    for d in dirs:
        dataset = _dataset(d)
        for path in sorted(Path(d).glob("*/M*/seed*/history.csv")):
            variant = path.parent.parent.parent.name
            m = int(path.parent.parent.name[1:])
            seed = int(path.parent.name[4:])
            hist = pd.read_csv(path)
            ids = _ids(cfg, dataset, variant, m, seed)
            for key, value in reversed(list(ids.items())):
                hist.insert(0, key, value)
            frames.append(hist)
    if not frames:
        return pd.DataFrame(columns=ID_COLUMNS + ["epoch"])
    df = pd.concat(frames, ignore_index=True, sort=False)
    first = ID_COLUMNS + [c for c in ("epoch", "step") if c in df.columns]
    df = df[first + sorted(c for c in df.columns if c not in first)]
    return df.sort_values(["dataset", "variant", "M", "seed", "epoch"], kind="mergesort").reset_index(drop=True)


def collect_generation(dirs: Sequence[str | Path], cfg: dict) -> pd.DataFrame:
    rows = []
    for d in dirs:
        dataset = _dataset(d)
        for path in sorted(Path(d).glob("*/M*_seed*/generation.json")):
            variant = path.parent.parent.name
            parsed = parse_run_name(path.parent.name)
            if parsed is None:
                continue
            obj = json.loads(path.read_text())
            row = _ids(cfg, dataset, variant, *parsed, fallback_objective=str(obj.get("meta/objective", "")))
            row.update(_numeric_items(obj))
            rows.append(row)
    return _finish(rows)


def collect_benchmarks(files: Sequence[str | Path]) -> pd.DataFrame:
    rows = []
    for f in files:
        path = Path(f)
        if not path.exists() or path.stat().st_size == 0:
            continue
        bench = pd.read_csv(path, sep="\t")
        parts = path.with_suffix("").parts
        try:
            start = parts.index("benchmarks") + 1
        except ValueError:
            start = max(len(parts) - 3, 0)
        stage = parts[start] if len(parts) - start > 1 else path.stem
        job = "/".join(parts[start + 1:]) if len(parts) - start > 1 else path.stem
        for i, rec in enumerate(bench.to_dict("records")):
            rows.append({"stage": stage, "job": job, "repeat": i, **rec})
    if not rows:
        return pd.DataFrame(columns=["stage", "job", "repeat", "s"])
    return pd.DataFrame(rows).sort_values(["stage", "job", "repeat"], kind="mergesort").reset_index(drop=True)


# ----------------------------------------------------------------------------- CLI


def add_arguments(p) -> None:
    p.add_argument("--config", default=None, help="resolved configuration (results/config.json)")
    p.add_argument("--metrics", nargs="*", default=[], help="metrics/{dataset}/{job} folders")
    p.add_argument("--runs", nargs="*", default=[], help="runs/{dataset}/{job} folders")
    p.add_argument("--generation", nargs="*", default=[], help="generation/{dataset}/{job} folders")
    p.add_argument("--benchmarks", nargs="*", default=[], help="Snakemake benchmark TSV files")
    p.add_argument("--out-summary", default="results/summary.csv")
    p.add_argument("--out-history", default="results/history.csv")
    p.add_argument("--out-generation", default="results/generation.csv")
    p.add_argument("--out-benchmarks", default="results/benchmarks.csv")


def main(args) -> int:
    cfg = load_config(args.config)
    summary = collect_metrics(args.metrics, cfg)
    write_csv(summary, args.out_summary)
    write_csv(collect_history(args.runs, cfg), args.out_history)
    write_csv(collect_generation(args.generation, cfg), args.out_generation)
    write_csv(collect_benchmarks(args.benchmarks), args.out_benchmarks)
    print(f"aggregate: {len(summary)} runs -> {args.out_summary}")
    return 0
