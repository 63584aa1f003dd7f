"""``python -m harness validate-estimators``: the divergence estimators against Gaussian closed forms.

For isotropic Gaussians ``p_m = N(mu_m, s^2 I)`` (s = 1) the global Hölder divergence with gamma = M is
``D_H = gamma / (2 M s^2) sum_m |mu_m - mean(mu)|^2`` (``harness.instruments.divergence.gaussian_holder_closed_form``).
The means are placed in random directions and scaled so that the true D_H is the same (``--target``)
in every dimension d; the sample size per modality is fixed. This answers the reviewers'
curse-of-dimensionality question: how the KDE estimates degrade with d at fixed B, for KDE bandwidths
``h = factor * s`` and for the ``"median"`` rule (``h = median pairwise distance / sqrt(2)``).

Targets: the exact (plug-in KDE) estimator converges to the closed form with ``s^2 + h^2``
("widened"), the resubstitution estimator to the unwidened value as h -> 0. Both are recorded.

Outputs: a tidy CSV (one row per estimate) and a figure (PNG and PDF) of estimate / true value
against d, one panel per estimator.
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path

import torch

from harness.files import atomic_write_text
from harness.instruments.divergence import gaussian_holder_closed_form, holder, kde_bandwidth

QUICK = dict(dims=[1, 4, 16], factors=["0.5", "median"], modalities=[2], n_samples=200, n_exact3=40, draws=1)
DEFAULT = dict(dims=[1, 2, 4, 8, 16, 32, 64], factors=["0.25", "0.5", "1.0", "median"], modalities=[2, 3],
               n_samples=500, n_exact3=60, draws=2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-csv", type=Path, default=Path("results/estimator_validation.csv"),
                        help="tidy CSV, one row per estimate (default: %(default)s)")
    parser.add_argument("--out-fig", type=Path, default=Path("figures/estimator_validation.png"),
                        help="figure path; PNG and PDF are written with this stem (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="small grid for tests (< 20 s on 2 cores)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed (default: %(default)s)")
    parser.add_argument("--target", type=float, default=0.5,
                        help="true D_H in every configuration (default: 0.5)")
    parser.add_argument("--dims", type=int, nargs="+", default=None,
                        help="dimensions d (overrides the preset)")
    parser.add_argument("--factors", nargs="+", default=None,
                        help="bandwidth rules: numbers (h = factor * s) and/or 'median' "
                             "(overrides the preset)")
    parser.add_argument("--draws", type=int, default=None,
                        help="independent samples per configuration (overrides the preset)")
    parser.add_argument("--n-samples", type=int, default=None,
                        help="samples per modality (resubstitution, and exact for M = 2; "
                             "overrides the preset)")


def _means(n_mod: int, d: int, target: float, gen: torch.Generator) -> torch.Tensor:
    mu = torch.randn(n_mod, d, generator=gen, dtype=torch.float64)
    mu = mu - mu.mean(0)
    if n_mod > 1 and d == 1 and float(mu.abs().sum()) == 0:
        mu[0, 0] = 1.0
    return mu * math.sqrt(target / gaussian_holder_closed_form(mu, 1.0, float(n_mod)))


def run_grid(cfg: dict, seed: int, target: float, log=print) -> list[dict]:
    """All estimates of the grid as a list of tidy rows."""
    rows: list[dict] = []
    for n_mod in cfg["modalities"]:
        for d in cfg["dims"]:
            for draw in range(cfg["draws"]):
                gen = torch.Generator().manual_seed(seed * 1_000_003 + 1009 * d + 97 * n_mod + draw)
                mu = _means(n_mod, d, target, gen)
                big = [mu[m] + torch.randn(cfg["n_samples"], d, generator=gen, dtype=torch.float64)
                       for m in range(n_mod)]
                for rule in cfg["factors"]:
                    for estimator in ("exact", "resubstitution"):
                        full = estimator == "resubstitution" or n_mod == 2
                        xs = big if full else [x[: cfg["n_exact3"]] for x in big]
                        bw = "median" if rule == "median" else float(rule)
                        h = kde_bandwidth(bw, *xs)
                        t0 = time.perf_counter()
                        value = float(holder(xs, gamma=float(n_mod), bandwidth=h, estimator=estimator))
                        seconds = time.perf_counter() - t0
                        truth = gaussian_holder_closed_form(mu, 1.0, n_mod)
                        widened = gaussian_holder_closed_form(mu, 1.0 + h * h, n_mod)
                        rows.append(dict(
                            estimator=estimator, M=n_mod, gamma=float(n_mod), d=d, B=xs[0].shape[0],
                            draw=draw, h=h, s=1.0,
                            bandwidth_rule=("median" if rule == "median" else f"h={float(rule):g}s"),
                            estimate=value, truth=truth, truth_widened=widened,
                            ratio=value / truth, ratio_widened=value / widened,
                            rel_error=value / truth - 1.0, rel_error_widened=value / widened - 1.0,
                            seconds=seconds,
                        ))
            log(f"  M={n_mod} d={d}: done")
    return rows


def _finding(df) -> str:
    """What the grid shows, computed from it (two lines for the figure title)."""
    import numpy as np

    dmin, dmax = int(df["d"].min()), int(df["d"].max())
    fixed = df[df.bandwidth_rule != "median"]

    def gmean(sub, col, d):
        vals = sub[sub.d == d][col].to_numpy()
        vals = vals[vals > 0]
        return float(np.exp(np.log(vals).mean())) if vals.size else float("nan")

    parts = []
    for est, col, label in (("exact", "ratio_widened", "exact / widened target"),
                            ("resubstitution", "ratio", "resubstitution / true")):
        sub = fixed[fixed.estimator == est]
        if not sub.empty:
            lo, hi = gmean(sub, col, dmin), gmean(sub, col, dmax)
            parts.append(f"{label} x{lo:.2g} at d={dmin} -> x{hi:.3g} at d={dmax}")
    sizes = sorted({int(b) for b in df.B})
    size_txt = f"B={sizes[-1]}" + (f" (exact, M>2: B={sizes[0]})" if len(sizes) > 1 else "")
    line1 = (f"Fixed {size_txt} per modality, true D_H={df['truth'].iloc[0]:.2g}: "
             "with h fixed (in units of s) the KDE estimates inflate with d")
    line2 = "; ".join(parts)
    med = df[df.bandwidth_rule == "median"]
    if not med.empty:
        shrink = gmean(med, "ratio", dmax)
        line2 += f"; the median rule shrinks them (estimate / true x{shrink:.2g} at d={dmax})"
    return line1 + "\n" + line2


def plot(df, out_fig: Path) -> list[Path]:
    """estimate / true against d per estimator; error bars: 95% t interval over draws (when > 1 draw)."""
    from harness import style
    from harness.intervals import t_interval

    plt = style.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True, layout="constrained")
    rules = sorted(df.bandwidth_rule.unique(), key=lambda r: (r == "median", r))
    palette = plt.get_cmap("Dark2").colors
    colors = {rule: palette[i % len(palette)] for i, rule in enumerate(rules)}
    styles = {2: "-", 3: "--", 4: ":"}
    draws = int(df.groupby(["estimator", "M", "d", "bandwidth_rule"]).size().min())
    for ax, est in zip(axes, ("exact", "resubstitution")):
        sub = df[df.estimator == est]
        for (rule, n_mod), grp in sub.groupby(["bandwidth_rule", "M"]):
            stats = [(d, *t_interval(g["ratio"].tolist())) for d, g in grp.groupby("d")]
            xs = [s[0] for s in stats]
            y = [max(s[1], 1e-3) for s in stats]
            label = f"{rule}, M={n_mod}"
            if draws > 1:
                lo = [max(s[1] - s[3], 0.0) if math.isfinite(s[3]) else 0.0 for s in stats]
                hi = [s[4] - s[1] if math.isfinite(s[4]) else 0.0 for s in stats]
                ax.errorbar(xs, y, yerr=[lo, hi], color=colors[rule], ls=styles.get(n_mod, "-."), marker="o",
                            capsize=3, label=label)
            else:
                ax.plot(xs, y, color=colors[rule], ls=styles.get(n_mod, "-."), marker="o", label=label)
            if est == "exact":
                wid = (grp.truth_widened / grp.truth).groupby(grp.d).mean()
                ax.plot(wid.index, wid.values, color=colors[rule], ls=":", lw=1.2, alpha=0.7)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("dimension d (fixed samples per modality)")
        note = "\n(dotted: widened target $s^2/(s^2+h^2)$)" if est == "exact" else ""
        ax.set_title(f"{est} estimator{note}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(r"estimate / true $D_H$ (log scale; 1 = correct)")
    spread = (f"error bars: 95% t interval over {draws} draws" if draws > 1
              else "one draw per point (no error bars; --draws N for intervals)")
    handles, labels = axes[0].get_legend_handles_labels()
    style.legend_below(fig, handles, labels)
    sizes = sorted({int(b) for b in df.B})
    fig.suptitle(f"Divergence estimators against the closed form, B={sizes[-1]} per modality, true "
                 f"$D_H$={df['truth'].iloc[0]:.2g}; {spread}")
    return style.save(fig, out_fig)


def main(args: argparse.Namespace) -> int:
    import pandas as pd

    cfg = dict(QUICK if args.quick else DEFAULT)
    if args.dims:
        cfg["dims"] = list(args.dims)
    if args.factors:
        for f in args.factors:
            if f != "median":
                try:
                    ok = float(f) > 0
                except ValueError:
                    ok = False
                if not ok:
                    raise SystemExit(f"--factors: expected positive numbers or 'median', got {f!r}")
        cfg["factors"] = list(args.factors)
    if args.draws is not None:
        if args.draws < 1:
            raise SystemExit(f"--draws must be >= 1, got {args.draws}")
        cfg["draws"] = args.draws
    if args.n_samples is not None:
        if args.n_samples < 2:
            raise SystemExit(f"--n-samples must be >= 2, got {args.n_samples}")
        cfg["n_samples"] = args.n_samples
    if not (math.isfinite(args.target) and args.target > 0):
        raise SystemExit(f"--target must be a positive number, got {args.target}")
    t0 = time.perf_counter()
    print(f"validate-estimators: M={cfg['modalities']} d={cfg['dims']} rules={cfg['factors']} "
          f"B={cfg['n_samples']} (exact M=3: {cfg['n_exact3']}) draws={cfg['draws']}")
    rows = run_grid(cfg, args.seed, args.target)
    df = pd.DataFrame(rows)
    buffer = io.StringIO()
    df.to_csv(buffer, index=False)
    atomic_write_text(args.out_csv, buffer.getvalue())
    figs = plot(df, args.out_fig)
    print(_finding(df))
    print(f"wrote {args.out_csv} ({len(df)} rows), {', '.join(str(f) for f in figs)} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0
