"""Select each tuned variant's trial on the validation split (the workflow's select_trials rule).

    python -m workflow.scripts.select_trials --metric retrieval/R1/mean \\
        --cells synthetic:infonce synthetic:unialign --metrics DIR DIR \\
        --out-json tuning/selected.json --out-csv results/tuning.csv --out-md results/tables/tuning.md

``--cells`` and ``--metrics`` are paired: the i-th metrics folder holds ``trial{T}.json`` files
written by ``python -m harness evaluate --split val`` for the i-th ``dataset:variant``.  Every
trial file must have been evaluated on the validation split (``meta/split == "val"``) and every
variant must have the same number of trials per dataset (equal budget); otherwise the script
fails naming the file, and writes nothing.  The selected trial is the one with the highest
``--metric`` (ties: the lowest trial number; a non-finite value never wins).

Outputs: ``--out-json`` {dataset: {variant: {trial, params, metric, value}}}, the file the final
runs read their parameters from; ``--out-csv`` one row per trial (dataset, variant, objective,
trial, params, split, metric, value, selected); ``--out-md`` the same as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from harness.files import atomic_write_text, write_json

_TRIAL = re.compile(r"^trial(?P<trial>\d+)\.json$")


class SelectionError(ValueError):
    """The trial files are inconsistent (split, trial count, metric)."""


def read_trials(cell: str, folder: str | Path, metric: str) -> list[dict]:
    dataset, _, variant = cell.partition(":")
    if not dataset or not variant:
        raise SelectionError(f"--cells entry {cell!r} is not DATASET:VARIANT")
    rows = []
    for path in sorted(Path(folder).glob("trial*.json"), key=lambda p: (len(p.name), p.name)):
        match = _TRIAL.match(path.name)
        if not match:
            continue
        obj = json.loads(path.read_text())
        split = obj.get("meta/split")
        if split != "val":
            raise SelectionError(f"{path}: meta/split is {split!r}; tuning trials must be evaluated on 'val'")
        if metric not in obj:
            raise SelectionError(f"{path}: no metric {metric!r} (the tuning.metric setting)")
        value = float(obj[metric])
        rows.append({
            "dataset": dataset,
            "variant": variant,
            "objective": obj.get("meta/objective", ""),
            "trial": int(match["trial"]),
            "params": json.dumps(json.loads(obj.get("meta/params", "{}")), sort_keys=True),
            "split": split,
            "metric": metric,
            "value": value,
            "selected": False,
        })
    if not rows:
        raise SelectionError(f"{folder}: no trial*.json files for {cell}")
    return rows


def select(rows: list[dict]) -> dict:
    """The selected row: highest finite value, ties to the lowest trial number."""
    finite = [r for r in rows if math.isfinite(r["value"])]
    if not finite:
        raise SelectionError(f"{rows[0]['dataset']}:{rows[0]['variant']}: every trial's {rows[0]['metric']} is non-finite")
    return max(finite, key=lambda r: (r["value"], -r["trial"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metric", default="retrieval/R1/mean")
    p.add_argument("--cells", nargs="*", default=[])
    p.add_argument("--metrics", nargs="*", default=[])
    p.add_argument("--out-json", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    args = p.parse_args(argv)
    try:
        if len(args.cells) != len(args.metrics):
            raise SelectionError(f"{len(args.cells)} --cells but {len(args.metrics)} --metrics folders")
        all_rows, selected = [], {}
        counts: dict[str, dict[str, int]] = {}
        for cell, folder in zip(args.cells, args.metrics):
            rows = read_trials(cell, folder, args.metric)
            best = select(rows)
            best["selected"] = True
            counts.setdefault(best["dataset"], {})[best["variant"]] = len(rows)
            selected.setdefault(best["dataset"], {})[best["variant"]] = {
                "trial": best["trial"], "params": json.loads(best["params"]),
                "metric": args.metric, "value": best["value"],
            }
            all_rows += rows
        for dataset, per_variant in counts.items():
            if len(set(per_variant.values())) > 1:
                raise SelectionError(f"unequal trial counts on {dataset}: {per_variant} (equal budget required)")
    except (SelectionError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    all_rows.sort(key=lambda r: (r["dataset"], r["variant"], r["trial"]))
    cols = ["dataset", "variant", "objective", "trial", "params", "split", "metric", "value", "selected"]

    def cell(value) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    def csv_field(text: str) -> str:
        return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text

    csv = ",".join(cols) + "\n" + "".join(",".join(csv_field(cell(r[c])) for c in cols) + "\n" for r in all_rows)
    md_cols = ["dataset", "variant", "trial", "params", "value", "selected"]
    md = [f"Equal-budget tuning: {args.metric} on the validation split; the selected trial is marked.", "",
          "| " + " | ".join(md_cols) + " |", "|" + "---|" * len(md_cols)]
    for r in all_rows:
        values = [cell(r[c]) if c != "selected" else ("**yes**" if r[c] else "") for c in md_cols]
        md.append("| " + " | ".join(v.replace("|", "\\|") for v in values) + " |")
    write_json(args.out_json, selected)
    atomic_write_text(args.out_csv, csv)
    atomic_write_text(args.out_md, "\n".join(md) + "\n")
    print(f"selected {sum(len(v) for v in selected.values())} variants from {len(all_rows)} trials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
