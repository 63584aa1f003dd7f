"""Is the tuning saturated? ``python -m harness tuning-saturation ...``.

    python -m harness tuning-saturation --tuning results/tuning.csv \\
        --doubled trials_x2=robustness/trials_x2/results/tuning.csv --delta 1.0 \\
        --out-csv results/tuning_saturation.csv --out-fig figures/tuning_saturation.png

For each tuned (dataset, variant) of ``--tuning`` (the select_trials table: one row per trial, its
validation score) the best validation score so far after each trial, and, where a ``--doubled``
sweep tuned the same cell with more trials, the selected score at both budgets. The trials are
one seeded quasi-random sequence generated in order (:func:`harness.plan.draw_trials`), so the first T trials of a
2T-trial search are the T trials of this one: its best-so-far curve continues this sweep's, and the
difference of the two selected scores is exactly what doubling the trials buys. A cell is
**saturated** when that difference is at most ``--delta`` (``tuning.saturation_delta``, in the
metric's unit). The same prefix property checks every cell inside this sweep, doubled search or
not: the best of its first half of trials against the best of all of them (``gain_half``,
``saturated_half``) is what the last doubling bought. Searched parameters: the keys whose value
differs between a cell's trials (the effort of an equal trial count is not equal across search
spaces of different dimension).

Outputs: a CSV (one row per cell: trials, searched, best at each budget, gain, saturated) and a figure
(best so far against the trial number, one panel per dataset).
"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import pandas as pd

from harness.files import atomic_write_text
from harness.report import named_values, read_csv_or_empty

COLUMNS = ["dataset", "variant", "metric", "searched", "trials", "best", "best_so_far", "trials_half", "best_half",
           "gain_half", "saturated_half", "doubled_by", "trials_doubled", "best_doubled", "gain", "delta", "saturated",
           "prefix_matches"]
_NEEDED = {"dataset", "variant", "trial", "params", "value", "metric"}


class SaturationInputError(ValueError):
    """A tuning table lacks what the saturation needs."""


def _check(df: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = _NEEDED - set(df.columns)
    if df.empty or missing:
        raise SaturationInputError(f"{source}: no tuning table (missing columns: {', '.join(sorted(missing)) or 'rows'})")
    return df.sort_values(["dataset", "variant", "trial"]).reset_index(drop=True)


def best_so_far(values: list[float]) -> list[float]:
    """The running maximum; a non-finite score never counts as the best (select_trials' rule)."""
    out, best = [], -math.inf
    for v in values:
        if math.isfinite(v) and v > best:
            best = v
        out.append(best if math.isfinite(best) else math.nan)
    return out


def searched(params: list[str]) -> list[str]:
    """The parameter names whose values differ between trials."""
    dicts = [json.loads(p) for p in params]
    keys = sorted(set().union(*dicts)) if dicts else []
    return [k for k in keys if len({json.dumps(d.get(k), sort_keys=True) for d in dicts}) > 1]


def _within(gain: float, delta: float) -> bool | str:
    return bool(abs(gain) <= delta) if math.isfinite(gain) else "not checked"


def saturation(tuning: pd.DataFrame, doubled: dict[str, pd.DataFrame], delta: float) -> pd.DataFrame:
    """One row per tuned cell of ``tuning``; ``doubled``: name -> a tuning table with more trials."""
    tuning = _check(tuning, "--tuning")
    doubled = {n: _check(df, f"--doubled {n}") for n, df in doubled.items()}
    rows = []
    for (dataset, variant), cell in tuning.groupby(["dataset", "variant"], sort=True):
        values = cell["value"].astype(float).tolist()
        curve = best_so_far(values)
        # the first half of this search is the search with half the trials (one sequence, in order)
        half = len(values) // 2
        best_half = curve[half - 1] if half else math.nan
        row = dict(dataset=dataset, variant=variant, metric=str(cell["metric"].iloc[0]),
                   searched=" ".join(searched(cell["params"].astype(str).tolist())), trials=len(values),
                   best=curve[-1], best_so_far=" ".join(f"{v:.4g}" for v in curve), trials_half=half,
                   best_half=best_half, gain_half=curve[-1] - best_half,
                   saturated_half=_within(curve[-1] - best_half, delta), doubled_by="",
                   trials_doubled=0, best_doubled=math.nan, gain=math.nan, delta=float(delta),
                   saturated="not checked", prefix_matches="")
        for name, other in doubled.items():
            more = other[(other["dataset"] == dataset) & (other["variant"] == variant)]
            if len(more) <= len(values):
                continue
            big = best_so_far(more["value"].astype(float).tolist())
            # the larger search starts with this one's trials: same parameters, same scores
            head = more.head(len(values))
            same = (head["params"].astype(str).tolist() == cell["params"].astype(str).tolist()
                    and all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
                            for a, b in zip(head["value"].astype(float), values)))
            row.update(doubled_by=name, trials_doubled=len(more), best_doubled=big[-1], gain=big[-1] - curve[-1],
                       best_so_far=" ".join(f"{v:.4g}" for v in big), prefix_matches=same)
            row["saturated"] = _within(row["gain"], delta)
            break
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def note(table: pd.DataFrame, dataset: str, variants: tuple[str, ...]) -> str:
    """A claims row's note on its variants' tuning on ``dataset``: which doubling moved the selection.

    The doubled search decides where there is one; elsewhere the last doubling inside this search
    (its first half of trials against all of them)."""
    if table is None or table.empty:
        return ""
    sub = table[(table["dataset"] == dataset) & table["variant"].isin(variants)]
    open_ = []
    for r in sub.to_dict("records"):
        checked = str(r["saturated"]) in ("True", "False")  # a bool, or its string read from CSV
        if checked and str(r["saturated"]) == "False":
            open_.append(f"{r['variant']} +{r['gain']:.3g} with {r['trials_doubled']} trials "
                         f"(searched: {r['searched'] or 'none'})")
        elif not checked and str(r.get("saturated_half")) == "False":
            open_.append(f"{r['variant']} +{r['gain_half']:.3g} from {r['trials_half']} to {r['trials']} trials "
                         f"(searched: {r['searched'] or 'none'})")
    return ("tuning not saturated: " + "; ".join(open_)) if open_ else ""


def plot(table: pd.DataFrame, out_fig: Path) -> list[Path]:
    """Best validation score so far against the trial number; the dashed part is the doubled search."""
    from harness import style

    plt = style.pyplot()
    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.6 * len(datasets), 4.4), squeeze=False,
                             layout="constrained")
    palette = plt.get_cmap("tab10").colors
    variants = list(dict.fromkeys(table["variant"]))
    colors = {v: palette[i % len(palette)] for i, v in enumerate(variants)}
    for ax, dataset in zip(axes[0], datasets):
        for r in table[table["dataset"] == dataset].itertuples():
            curve = [float(x) for x in str(r.best_so_far).split()]
            xs = list(range(1, len(curve) + 1))
            t = int(r.trials)
            label = f"{r.variant} ({r.searched or 'no'} searched)"
            ax.plot(xs[:t], curve[:t], color=colors[r.variant], marker="o", ms=4, label=label)
            if len(curve) > t:
                ax.plot(xs[t - 1:], curve[t - 1:], color=colors[r.variant], ls="--", marker="o", ms=3,
                        mfc="white")
        trials = int(table[table["dataset"] == dataset]["trials"].max())
        ax.axvline(trials, color="grey", lw=0.8, ls=":")
        if trials >= 2:
            ax.axvline(trials // 2, color="grey", lw=0.6, ls=":", alpha=0.6)
        ax.set_title(f"{dataset}: dotted = half and all of this sweep's trials;\n"
                     f"dashed = the doubled search (the same first {trials} trials)", fontsize=10)
        ax.set_xlabel("trial")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"best validation {table['metric'].iloc[0]} so far")
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    style.legend_below(fig, handles, labels)
    gains = table[table["saturated"].astype(str).isin(["True", "False"])]
    unsat = int((gains["saturated"].astype(str) == "False").sum())
    halves = table[table["saturated_half"].astype(str).isin(["True", "False"])]
    unsat_half = int((halves["saturated_half"].astype(str) == "False").sum())
    fig.suptitle(f"Tuning saturation (declared delta {table['delta'].iloc[0]:g}): {unsat_half} of {len(halves)} cells "
                 f"gained more in their second half of trials; {unsat} of {len(gains)} searched again with "
                 "twice the trials gained more")
    return style.save(fig, out_fig)


def add_arguments(p) -> None:
    p.add_argument("--tuning", required=True, help="results/tuning.csv (select_trials)")
    p.add_argument("--doubled", action="append", default=[], metavar="NAME=TUNING.CSV",
                   help="the tuning.csv of a sweep with more trials (repeatable)")
    p.add_argument("--delta", type=float, default=1.0,
                   help="largest gain of the doubled search still called saturated (default: %(default)s)")
    p.add_argument("--out-csv", default="results/tuning_saturation.csv")
    p.add_argument("--out-fig", default="figures/tuning_saturation.png",
                   help="PNG and PDF are written with this stem (default: %(default)s)")


def main(args) -> int:
    if not (math.isfinite(args.delta) and args.delta >= 0):
        print(f"error: --delta must be a finite number >= 0, got {args.delta}", file=sys.stderr)
        return 2
    try:
        doubled = {name: read_csv_or_empty(path)
                   for name, path in named_values(args.doubled, "--doubled", "TUNING.CSV").items()}
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        table = saturation(read_csv_or_empty(args.tuning), doubled, args.delta)
    except SaturationInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    atomic_write_text(args.out_csv, buffer.getvalue())
    figs = plot(table, Path(args.out_fig))
    print(f"tuning-saturation: {len(table)} cells; wrote {args.out_csv}, {', '.join(map(str, figs))}")
    return 0
