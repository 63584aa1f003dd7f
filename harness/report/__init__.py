"""Aggregation, tables, figures and claim verdicts of the workflow."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_csv_or_empty(path: str | None) -> pd.DataFrame:
    """A CSV as a frame; an absent, empty or header-less file gives an empty frame (optional inputs)."""
    if not path or not Path(path).exists() or Path(path).stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def main_study_rows(summary: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Rows of the summary that belong to the main study (its variants, datasets and M)."""
    spec = (cfg.get("config", {}).get("studies", {}) or {}).get("main") or {}
    if summary.empty or not spec:
        return summary
    rows = summary[summary["variant"].isin(spec.get("variants", [])) & summary["dataset"].isin(spec.get("datasets", []))]
    by_ds = spec.get("ms_by_dataset", {}) or {}
    if rows.empty:
        return rows
    return rows[[int(m) in by_ds.get(d, spec.get("ms", [])) for d, m in zip(rows["dataset"], rows["M"])]]
