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
    "table_collapse",
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
    "advantage_vs_m",
]


#: written by ``harness aggregate`` beside the tables: each table's sha256 and row count
MANIFEST = "aggregate.json"


def read_csv_checked(path: str | Path, manifest: bool = True) -> pd.DataFrame:
    """A CSV the harness wrote, refused when cut, short of a field, or unlike its manifest entry.

    With ``manifest``, a table listed in the ``aggregate.json`` beside it must have the sha256
    recorded there (a truncated or edited summary is an error, not a row of NaNs).
    """
    import io
    import json

    import pandas as pd

    from harness.files import ContentError, check_csv_complete, sha256_bytes

    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContentError(f"{path} is unreadable: {type(exc).__name__}: {exc}") from exc
    entry = None
    if manifest and (path.parent / MANIFEST).exists():
        try:
            entry = json.loads((path.parent / MANIFEST).read_text()).get("tables", {}).get(path.name)
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ContentError(f"{path.parent / MANIFEST} is unreadable (truncated or corrupted?): {exc}") from exc
    if entry is not None and sha256_bytes(raw) != entry.get("sha256"):
        raise ContentError(f"{path} changed after aggregation: sha256 {sha256_bytes(raw)} != {entry.get('sha256')} "
                           f"recorded in {path.parent / MANIFEST}; rerun the workflow (or `harness aggregate`)")
    check_csv_complete(path, text)
    return pd.read_csv(io.StringIO(text)) if text.strip() else pd.DataFrame()


def named_values(items: list[str] | None, option: str, value: str) -> dict[str, str]:
    """Repeated ``NAME=VALUE`` arguments as ``{name: value}``; anything else is a ValueError naming
    the option and the item (``value`` names what follows the ``=`` in the message)."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not sep or not name or not text:
            raise ValueError(f"{option} takes NAME={value}, got {item!r}")
        out[name] = text
    return out


def read_csv_or_empty(path: str | None) -> pd.DataFrame:
    """A checked CSV (:func:`read_csv_checked`); an absent or empty file gives an empty frame (optional inputs)."""
    import pandas as pd

    if not path or not Path(path).exists() or Path(path).stat().st_size == 0:
        return pd.DataFrame()
    return read_csv_checked(path)


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
