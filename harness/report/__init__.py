"""Aggregation, tables, figures and claim verdicts of the workflow.

:data:`TABLES` and :data:`FIGURES` are the one list of report artifacts: ``harness tables`` writes
``results/tables/{name}.{csv,md,tex}`` for each table, ``harness figures`` draws
``figures/{name}.{pdf,png}`` for each figure, and the workflow (``workflow/rules/common.smk``)
requests exactly these files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where used: the workflow imports the artifact lists at parse time
    import pandas as pd

#: results/tables/{name}.{csv,md,tex}
TABLES = [
    "table1_retrieval",
    "table2_ablation",
    "table3_generation",
    "table5_sensitivity",
    "table_conflicts",
    "table_divergence_gap",
    "paper_reference",
]
#: figures/{name}.{pdf,png}
FIGURES = [
    "conflicts_vs_m",
    "divergence_gap_vs_m",
    "retrieval_vs_m",
    "alignment_uniformity",
    "projection_pca",
    "generated_samples",
    "proxy_vs_divergence",
]


def read_csv_or_empty(path: str | None) -> pd.DataFrame:
    """A CSV as a frame; an absent, empty or header-less file gives an empty frame (optional inputs)."""
    import pandas as pd

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
