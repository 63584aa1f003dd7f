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

- summary: one row per run: ``dataset, variant, label, objective, M, seed, split_seed, params,
  retrieval_rule, n_eval`` (the last two from ``meta/retrieval_rule``, ``meta/n_eval``) then every
  numeric metric of metrics.json in sorted column order (``meta/*`` keys dropped: they repeat
  the identifying columns);
- history: one row per (run, epoch) with the same identifying columns and history.csv's columns;
- generation: one row per generation run, ``gen/*`` metrics;
- benchmarks: one row per job: ``stage, job`` and Snakemake's benchmark columns (wall seconds
  ``s``, ``max_rss`` MB, ``cpu_time`` ...) — timings, so not byte-stable.

Run names: ``M{M}_seed{S}_split{K}`` (``_split{K}`` absent: split seed 0); the summary's
``split_seed`` column comes from the name (else ``meta/split_seed``), ``retrieval_rule`` from
``meta/retrieval_rule``.

The module also holds the helpers the tables, figures and claims share: :func:`load_config`,
:func:`group_stats` (mean, sd, t-interval over seeds) and the CSV writer. Metric names and their
columns are defined once, in :mod:`harness.experiment.keys` (re-exported here as :data:`METRICS`,
:func:`metric_column`, :func:`history_column`, :func:`metric_label`).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from harness.experiment import keys
from harness.files import ContentError, atomic_write_text, read_json_sealed, sha256_file, write_json
from harness.report import MANIFEST, read_csv_checked
from harness.report.stats import t_interval

ID_COLUMNS = keys.ID_COLUMNS
FLOAT_FORMAT = "%.6g"
_RUN_NAME = re.compile(r"^M(?P<M>\d+)_seed(?P<seed>\d+)(?:_split(?P<split>\d+))?(?:\.json)?$")
_SEED_DIR = re.compile(r"^seed(?P<seed>\d+)(?:_split(?P<split>\d+))?$")

METRICS = keys.METRICS
metric_column = keys.column
history_column = keys.history_column
metric_label = keys.metric_label


# ----------------------------------------------------------------------------- shared helpers


def load_config(path: str | Path | None) -> dict:
    """The resolved configuration written by the workflow (``results/config.json``)."""
    if not path:
        return {"config": {"variants": {}, "studies": {}}, "seeds": [], "cells": []}
    return json.loads(Path(path).read_text())


def variant_info(cfg: dict, variant: str) -> dict:
    return (cfg.get("config", {}).get("variants", {}) or {}).get(variant, {})


def variant_label(cfg: dict, variant: str) -> str:
    return variant_info(cfg, variant).get("label", variant)


def group_stats(df: pd.DataFrame, by: Sequence[str], metrics: dict[str, str], confidence: float = 0.95) -> pd.DataFrame:
    """One row per group: ``<name>_mean, <name>_sd, <name>_lo, <name>_hi`` and ``n`` (seeds)."""
    rows = []
    if df.empty:
        return pd.DataFrame(columns=list(by) + ["n"])
    for key, sub in df.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["n"] = len(sub)
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


def parse_run_name(name: str) -> tuple[int, int, int] | None:
    """``M{M}_seed{S}[_split{K}][.json]`` -> (M, seed, split seed; 0 when absent), else None."""
    match = _RUN_NAME.match(name)
    return (int(match["M"]), int(match["seed"]), int(match["split"] or 0)) if match else None


def _dataset(path: str | Path) -> str:
    parts = Path(path).parts
    if len(parts) < 2:
        raise ValueError(f"{path}: expected .../<dataset>/<job>")
    return parts[-2]


def _ids(cfg: dict, dataset: str, variant: str, m: int, seed: int, split: int = 0,
         fallback_objective: str = "") -> dict:
    info = variant_info(cfg, variant)
    return {
        "dataset": dataset,
        "variant": variant,
        "label": info.get("label", variant),
        "objective": info.get("objective", fallback_objective),
        "M": int(m),
        "seed": int(seed),
        "split_seed": int(split),
    }


# what produced each run, carried into summary.csv (the run-specific date stays in the metrics JSON,
# so that two identical sweeps still give byte-identical summaries)
PROVENANCE_KEYS = ("git_commit", "git_dirty", "torch_version", "numpy_version", "python_version", "device",
                   "threads", "platform")


def _provenance_items(obj: dict) -> dict[str, object]:
    return {f"provenance/{k}": obj[f"meta/provenance/{k}"] for k in PROVENANCE_KEYS
            if f"meta/provenance/{k}" in obj}


def _numeric_items(obj: dict) -> dict[str, float]:
    out = {}
    for key, value in obj.items():
        if key.startswith("meta/"):
            continue
        if isinstance(value, bool) or isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def _finish(rows: list[dict], sort_extra: Sequence[str] = ()) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=ID_COLUMNS)
    df = pd.DataFrame(rows)
    first = [c for c in ID_COLUMNS + ["params", keys.RETRIEVAL_RULE, keys.N_EVAL] + list(sort_extra)
             if c in df.columns]
    rest = sorted(c for c in df.columns if c not in first)
    df = df[first + rest]
    return df.sort_values(["dataset", "variant", "M", "seed", "split_seed", *sort_extra],
                          kind="mergesort").reset_index(drop=True)


# ----------------------------------------------------------------------------- the plan


class AggregateError(ContentError):
    """The run files found differ from the plan (missing, duplicate, unexpected); one line naming one."""


def _planned(cfg: dict, dirs: Sequence[str | Path], kind: str) -> set[tuple] | None:
    """(dataset, variant, M, seed, split seed) of every run the configuration asks for in ``dirs``.

    None without a plan (``cells`` of results/config.json): a hand-made folder is read as found.
    """
    cells = cfg.get("cells")
    if not cells:
        return None
    wanted = {(_dataset(d), Path(d).name) for d in dirs}
    seeds = [int(s) for s in cfg.get("seeds", [])]
    # a cell's own split seeds (the verdicts' variants run at more); older snapshots have only the global ones
    return {(cell["dataset"], cell["variant"], int(m), seed, int(split))
            for cell in cells if (cell["dataset"], cell["job"]) in wanted
            for m in cell["generation_ms" if kind == "generation" else "ms"]
            for split in cell.get("split_seeds", cfg.get("split_seeds", [0]))
            for seed in seeds}


class _Found:
    """Run files met while scanning, keyed by cell; a second file for one cell is an error."""

    def __init__(self, kind: str, plan: set | None):
        self.kind, self.plan, self.paths = kind, plan, {}

    def unexpected(self, path: Path, why: str) -> None:
        if self.plan is not None:
            raise AggregateError(f"aggregate: {path} is not a {self.kind} file the plan asks for ({why}); "
                                 "move it out of the output folder")

    def add(self, key: tuple, path: Path) -> None:
        if key in self.paths:
            raise AggregateError(f"aggregate: {path} and {self.paths[key]} are both the {self.kind} of {_cell(key)}; "
                                 "remove the stray one")
        if self.plan is not None and key not in self.plan:
            raise AggregateError(f"aggregate: {path} is the {self.kind} of {_cell(key)}, which the plan does not "
                                 "ask for; move it out of the output folder")
        self.paths[key] = path

    def check_complete(self, where: Sequence[str | Path]) -> None:
        if self.plan is None:
            return
        missing = sorted(self.plan - set(self.paths))
        if missing:
            raise AggregateError(
                f"aggregate: the {self.kind} of {_cell(missing[0])} is missing under "
                f"{', '.join(str(w) for w in where)} ({len(missing)} of the {len(self.plan)} planned runs have none); "
                "rerun the workflow to make it")


def _cell(key: tuple) -> str:
    dataset, variant, m, seed, split = key
    return f"dataset {dataset}, variant {variant}, M={m}, seed {seed}, split seed {split}"


# ----------------------------------------------------------------------------- collectors


def collect_metrics(dirs: Sequence[str | Path], cfg: dict) -> pd.DataFrame:
    rows = []
    found = _Found("metrics", _planned(cfg, dirs, "metrics"))
    for d in dirs:
        dataset = _dataset(d)
        for path in sorted(Path(d).glob("*/M*_seed*.json")):
            variant = path.parent.name
            parsed = parse_run_name(path.name)
            if parsed is None:
                found.unexpected(path, "its name is not M{M}_seed{S}_split{K}.json")
                continue
            # the content hash is required of the workflow's files; hand-made folders may lack it
            obj = read_json_sealed(path, required=found.plan is not None)
            m, seed, split = parsed
            if "_split" not in path.name:
                split = int(obj.get(keys.META_SPLIT_SEED, 0))
            found.add((dataset, variant, m, seed, split), path)
            row = _ids(cfg, dataset, variant, m, seed, split, fallback_objective=str(obj.get(keys.META_OBJECTIVE, "")))
            if keys.META_RETRIEVAL_RULE in obj:
                row[keys.RETRIEVAL_RULE] = str(obj[keys.META_RETRIEVAL_RULE])
            if keys.META_N_EVAL in obj:
                row[keys.N_EVAL] = int(obj[keys.META_N_EVAL])
            # the parameters the run was trained with (tuned variants: the selected trial's), else the config's
            params = json.loads(obj["meta/params"]) if "meta/params" in obj else variant_info(cfg, variant).get("params")
            row["params"] = json.dumps(params or {}, sort_keys=True)
            row.update(_provenance_items(obj))
            row.update(_numeric_items(obj))
            rows.append(row)
    found.check_complete(dirs)
    return _finish(rows)


def _checked_history(path: Path, required: bool) -> pd.DataFrame:
    """history.csv, verified against the sha256 its run's train.json records."""
    record = path.parent / "train.json"
    # train.json carries no seal of its own (its hashes bind the files beside it)
    expected = read_json_sealed(record, required=False).get("history_sha256") if record.exists() else None
    if expected is None:
        if required:
            raise ContentError(f"{path} has no sha256 recorded in {record} (the run did not finish, or an older "
                               "version wrote it); rerun its train step")
    elif (actual := sha256_file(path)) != expected:
        raise ContentError(f"{path} changed after training: sha256 {actual} != {expected} recorded in "
                           f"{record}; rerun its train step")
    return read_csv_checked(path, manifest=False)


def collect_history(dirs: Sequence[str | Path], cfg: dict) -> pd.DataFrame:
    frames = []
    found = _Found("history", _planned(cfg, dirs, "history"))
    for d in dirs:
        dataset = _dataset(d)
        for path in sorted(Path(d).glob("*/M*/seed*/history.csv")):
            variant = path.parent.parent.parent.name
            match = _SEED_DIR.match(path.parent.name)
            if match is None or not re.fullmatch(r"M\d+", path.parent.parent.name):
                found.unexpected(path, "its folder is not M{M}/seed{S}_split{K}")
                continue
            m = int(path.parent.parent.name[1:])
            seed, split = int(match["seed"]), int(match["split"] or 0)
            found.add((dataset, variant, m, seed, split), path)
            hist = _checked_history(path, required=found.plan is not None)
            ids = _ids(cfg, dataset, variant, m, seed, split)
            for key, value in reversed(list(ids.items())):
                hist.insert(0, key, value)
            frames.append(hist)
    found.check_complete(dirs)
    if not frames:
        return pd.DataFrame(columns=ID_COLUMNS + ["epoch"])
    df = pd.concat(frames, ignore_index=True, sort=False)
    first = ID_COLUMNS + [c for c in (keys.EPOCH, keys.STEP) if c in df.columns]
    df = df[first + sorted(c for c in df.columns if c not in first)]
    order = [c for c in (keys.EPOCH, keys.STEP) if c in df.columns]
    return df.sort_values(["dataset", "variant", "M", "seed", "split_seed", *order],
                          kind="mergesort").reset_index(drop=True)


def collect_generation(dirs: Sequence[str | Path], cfg: dict) -> pd.DataFrame:
    rows = []
    found = _Found("generation", _planned(cfg, dirs, "generation"))
    for d in dirs:
        dataset = _dataset(d)
        for path in sorted(Path(d).glob("*/M*_seed*/generation.json")):
            variant = path.parent.parent.name
            parsed = parse_run_name(path.parent.name)
            if parsed is None:
                found.unexpected(path, "its folder is not M{M}_seed{S}_split{K}")
                continue
            obj = read_json_sealed(path, required=found.plan is not None)
            found.add((dataset, variant, *parsed), path)
            row = _ids(cfg, dataset, variant, *parsed, fallback_objective=str(obj.get(keys.META_OBJECTIVE, "")))
            row.update(_numeric_items(obj))
            rows.append(row)
    found.check_complete(dirs)
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
    p.add_argument("--out-manifest", default=None,
                   help=f"sha256 and row count of each table written (default: {MANIFEST} beside the summary)")


def write_manifest(path: str | Path, tables: dict[str, tuple[str | Path, pd.DataFrame]]) -> None:
    """``aggregate.json``: each table's file name, sha256 and rows; readers of the tables check it."""
    write_json(path, {"tables": {Path(p).name: {"sha256": sha256_file(p), "rows": len(df)}
                                 for p, df in tables.values()}})


def main(args) -> int:
    cfg = load_config(args.config)
    # a missing, duplicate, unexpected or changed run file raises ContentError: one line, nothing written
    tables = {
        "summary": (args.out_summary, collect_metrics(args.metrics, cfg)),
        "history": (args.out_history, collect_history(args.runs, cfg)),
        "generation": (args.out_generation, collect_generation(args.generation, cfg)),
    }
    for path, df in tables.values():
        write_csv(df, path)
    write_csv(collect_benchmarks(args.benchmarks), args.out_benchmarks)  # timings: not checked by readers
    write_manifest(args.out_manifest or Path(args.out_summary).with_name(MANIFEST), tables)
    print(f"aggregate: {len(tables['summary'][1])} runs -> {args.out_summary}")
    return 0
