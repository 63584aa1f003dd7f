"""``python -m harness validate-estimators``: the divergence estimators against Gaussian closed forms.

For isotropic Gaussians ``p_m = N(mu_m, s^2 I)`` the global Hölder divergence with gamma = M is
``D_H = gamma / (2 M s^2) sum_m |mu_m - mean(mu)|^2`` (``harness.instruments.divergence.gaussian_holder_closed_form``).
The means are placed in random directions and scaled so that the true D_H is the same (``--target``)
in every dimension d; the sample size per modality is fixed. This answers the reviewers'
curse-of-dimensionality question: how the KDE estimates degrade with d at fixed B.

Two scales (``--scale``):

* ``unit`` (presets ``quick`` and ``default``): s = 1, bandwidths ``h = factor * s`` and the
  ``"median"`` rule (``h = median pairwise distance / sqrt(2)``).
* ``embedding`` (preset ``sweep``, the default of the sweep): s = 1/sqrt(d), so that E|x|^2 is about 1
  like the sweep's unit-norm embeddings, with the sweep's own bandwidths: the absolute
  ``h = FIXED_BANDWIDTH`` (rule ``"fixed"``, claim 3) and the median rule (claim 7), at the sweep's
  test-split size and M. Rule names in ``--factors``: numbers (times s), ``fixed``, ``median``.

Targets: the exact (plug-in KDE) estimator converges to the closed form with ``s^2 + h^2``
("widened"), the resubstitution estimator to the unwidened value as h -> 0. Both are recorded.

The k-nearest-neighbour estimator (``holder(..., estimator="knn")``) runs on the same samples in the
``default`` and ``sweep`` presets (not in ``quick``; ``--knn`` / ``--no-knn`` override): rows with
``estimator="knn"``, ``bandwidth_rule`` :data:`KNN_RULE`, ``h = nan`` (no bandwidth; no widened truth)
and the neighbour order in ``k``. ``k = max(5, 2 M)`` (:func:`knn_k`): the entropy term needs
``k > gamma - 1`` and has finite variance only for ``k > 2 (gamma - 1)``, gamma = M.

Outputs: a tidy CSV (one row per estimate) and a figure (PNG and PDF) of estimate / true value
against d, one panel per estimator: geometric means over draws with 95% t intervals on the log ratio.
:func:`calibration` reads the CSV back into one machine-readable statement for the claims report.
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path
from typing import Any

import torch

from harness.files import atomic_write_text
from harness.instruments.divergence import FIXED_BANDWIDTH, gaussian_holder_closed_form, holder, kde_bandwidth

QUICK = dict(dims=[1, 4, 16], factors=["0.5", "median"], modalities=[2], n_samples=200, n_exact3=40, draws=1,
             scale="unit", target=0.5)
DEFAULT = dict(dims=[1, 2, 4, 8, 16, 32, 64], factors=["0.25", "0.5", "1.0", "median"], modalities=[2, 3],
               n_samples=500, n_exact3=60, draws=2, scale="unit", target=0.5)
# Where the sweep's runs live: d = 32 (training.dim) among 4..64, the test split's 300 rows per
# modality, M = 2, 4, 6, claim 3's absolute h and claim 7's median rule. Target: the median
# divergence/holder_fixed/estimate of the sweep's runs whose estimate clears its null q95 is about
# 0.03 and the upper quartile about 0.7; 0.1 lies between. The exact estimator runs at M = 2 only
# (n_exact3 = 0): for M > 2 it costs O(B^M).
SWEEP = dict(dims=[4, 8, 16, 32, 64], factors=["fixed", "median"], modalities=[2, 4, 6], n_samples=300,
             n_exact3=0, draws=10, scale="embedding", target=0.1)
PRESETS: dict[str, dict] = {"quick": QUICK, "default": DEFAULT, "sweep": SWEEP}
#: presets that also run the kNN estimator (kept out of the preset dicts, whose grids tests copy)
KNN_PRESETS = {"quick": False, "default": True, "sweep": True}
#: the ``bandwidth_rule`` of the kNN rows
KNN_RULE = "kNN k=max(5,2M)"
SCALES = ("unit", "embedding")

#: the calibration band of :func:`calibration`: an estimator is called calibrated where the 95%
#: interval of estimate / true lies within a factor of 2 of the truth (a loose band: the question is
#: whether the numbers are divergences in nats at all, not whether they are precise)
CALIBRATION_BAND = (0.5, 2.0)


def knn_k(n_mod: int) -> int:
    """The neighbour order of the kNN rows at gamma = M: ``max(5, 2 M)`` (finite-variance entropy term)."""
    return max(5, 2 * int(n_mod))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-csv", type=Path, default=Path("results/estimator_validation.csv"),
                        help="tidy CSV, one row per estimate (default: %(default)s)")
    parser.add_argument("--out-fig", type=Path, default=Path("figures/estimator_validation.png"),
                        help="figure path; PNG and PDF are written with this stem (default: %(default)s)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="grid: quick (tests), default (unit scale, d = 1..64) or sweep (embedding "
                             "scale, the sweep's B, M and bandwidths); default: default, or quick with "
                             "--quick")
    parser.add_argument("--quick", action="store_true", help="the quick preset (< 20 s on 2 cores)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed (default: %(default)s)")
    parser.add_argument("--target", type=float, default=None,
                        help="true D_H in every configuration (default: the preset's, 0.5 or sweep 0.1)")
    parser.add_argument("--dims", type=int, nargs="+", default=None,
                        help="dimensions d (overrides the preset)")
    parser.add_argument("--include-dim", type=int, default=None,
                        help="a dimension added to the grid's dims when missing (the sweep's training.dim)")
    parser.add_argument("--modalities", type=int, nargs="+", default=None,
                        help="numbers of modalities M >= 2 (overrides the preset)")
    parser.add_argument("--factors", nargs="+", default=None,
                        help="bandwidth rules: numbers (h = factor * s), 'fixed' (h = FIXED_BANDWIDTH, "
                             "absolute) and/or 'median' (overrides the preset)")
    parser.add_argument("--scale", choices=SCALES, default=None,
                        help="per-coordinate sd: unit (s = 1) or embedding (s = 1/sqrt(d)); "
                             "overrides the preset")
    parser.add_argument("--draws", type=int, default=None,
                        help="independent samples per configuration (overrides the preset)")
    parser.add_argument("--knn", action=argparse.BooleanOptionalAction, default=None,
                        help=f"also run the kNN estimator (rule {KNN_RULE!r}); default: on for the default "
                             "and sweep presets, off for quick")
    parser.add_argument("--n-samples", type=int, default=None,
                        help="samples per modality (resubstitution, and exact for M = 2; "
                             "overrides the preset)")


def _sd(scale: str, d: int) -> float:
    return 1.0 if scale == "unit" else 1.0 / math.sqrt(d)


def _means(n_mod: int, d: int, target: float, gen: torch.Generator, s2: float = 1.0) -> torch.Tensor:
    mu = torch.randn(n_mod, d, generator=gen, dtype=torch.float64)
    mu = mu - mu.mean(0)
    if n_mod > 1 and d == 1 and float(mu.abs().sum()) == 0:
        mu[0, 0] = 1.0
    return mu * math.sqrt(target / gaussian_holder_closed_form(mu, s2, float(n_mod)))


def _rule_label(rule: str) -> str:
    if rule == "median":
        return "median"
    if rule == "fixed":
        return f"fixed h={FIXED_BANDWIDTH:g}"
    return f"h={float(rule):g}s"


def run_grid(cfg: dict, seed: int, target: float, log=print) -> list[dict]:
    """All estimates of the grid as a list of tidy rows."""
    scale = cfg.get("scale", "unit")
    rows: list[dict] = []
    for n_mod in cfg["modalities"]:
        for d in cfg["dims"]:
            s = _sd(scale, d)
            for draw in range(cfg["draws"]):
                gen = torch.Generator().manual_seed(seed * 1_000_003 + 1009 * d + 97 * n_mod + draw)
                mu = _means(n_mod, d, target, gen, s * s)
                big = [mu[m] + s * torch.randn(cfg["n_samples"], d, generator=gen, dtype=torch.float64)
                       for m in range(n_mod)]
                for rule in cfg["factors"]:
                    for estimator in ("exact", "resubstitution"):
                        full = estimator == "resubstitution" or n_mod == 2
                        if not full and cfg["n_exact3"] < 2:
                            continue  # exact for M > 2 is O(B^M): off in this grid
                        xs = big if full else [x[: cfg["n_exact3"]] for x in big]
                        bw = ("median" if rule == "median" else FIXED_BANDWIDTH if rule == "fixed"
                              else float(rule) * s)
                        h = kde_bandwidth(bw, *xs)
                        t0 = time.perf_counter()
                        with torch.no_grad():
                            value = float(holder(xs, gamma=float(n_mod), bandwidth=h, estimator=estimator))
                        seconds = time.perf_counter() - t0
                        truth = gaussian_holder_closed_form(mu, s * s, n_mod)
                        widened = gaussian_holder_closed_form(mu, s * s + h * h, n_mod)
                        rows.append(dict(
                            estimator=estimator, M=n_mod, gamma=float(n_mod), d=d, B=xs[0].shape[0],
                            draw=draw, h=h, s=s, bandwidth_rule=_rule_label(rule),
                            estimate=value, truth=truth, truth_widened=widened,
                            ratio=value / truth, ratio_widened=value / widened,
                            rel_error=value / truth - 1.0, rel_error_widened=value / widened - 1.0,
                            seconds=seconds, scale=scale, grid=cfg.get("name", "custom"),
                        ))
                if cfg.get("knn", False):
                    k = knn_k(n_mod)
                    t0 = time.perf_counter()
                    value = float(holder(big, gamma=float(n_mod), estimator="knn", k=k))
                    seconds = time.perf_counter() - t0
                    truth = gaussian_holder_closed_form(mu, s * s, n_mod)
                    rows.append(dict(
                        estimator="knn", M=n_mod, gamma=float(n_mod), d=d, B=big[0].shape[0],
                        draw=draw, h=math.nan, s=s, bandwidth_rule=KNN_RULE,
                        estimate=value, truth=truth, truth_widened=math.nan,
                        ratio=value / truth, ratio_widened=math.nan,
                        rel_error=value / truth - 1.0, rel_error_widened=math.nan,
                        seconds=seconds, scale=scale, grid=cfg.get("name", "custom"), k=k,
                    ))
            log(f"  M={n_mod} d={d}: done")
    return rows


def log_ratio_interval(ratios) -> dict[str, Any]:
    """Geometric mean of ``ratios`` with a 95% t interval over them on the log scale.

    A non-positive ratio (the resubstitution plug-in can fall below 0 near the null) has no log: the
    interval is then over the positive ones only, and ``nonpositive`` counts the others.
    """
    from harness.intervals import t_interval

    vals = [float(r) for r in ratios if r is not None and math.isfinite(float(r))]
    pos = [v for v in vals if v > 0]
    mean, _sd, lo, hi, n = t_interval([math.log(v) for v in pos])
    ex = (lambda x: math.exp(x) if math.isfinite(x) else math.nan)
    return {"ratio": ex(mean), "lo": ex(lo), "hi": ex(hi), "n": n, "nonpositive": len(vals) - len(pos)}


def summarise(df):
    """One row per (estimator, M, d, bandwidth rule): geometric-mean ratio and its 95% interval."""
    import pandas as pd

    out = []
    for (est, n_mod, d, rule), grp in df.groupby(["estimator", "M", "d", "bandwidth_rule"]):
        st = log_ratio_interval(grp["ratio"])
        wid = log_ratio_interval(grp["ratio_widened"])
        out.append(dict(estimator=est, M=int(n_mod), d=int(d), bandwidth_rule=rule, B=int(grp.B.iloc[0]),
                        h=float(grp.h.mean()), ratio=st["ratio"], lo=st["lo"], hi=st["hi"], draws=st["n"],
                        nonpositive=st["nonpositive"], ratio_widened=wid["ratio"],
                        widened_over_true=float((grp.truth_widened / grp.truth).mean())))
    return pd.DataFrame(out)


def _finding(df) -> str:
    """What the grid shows, computed from it (two lines for the figure title / the log)."""
    dmin, dmax = int(df["d"].min()), int(df["d"].max())
    parts = []
    for rule, rows in df[df.estimator == "resubstitution"].groupby("bandwidth_rule"):
        g_lo = log_ratio_interval(rows[rows.d == dmin].ratio)["ratio"]
        g_hi = log_ratio_interval(rows[rows.d == dmax].ratio)["ratio"]
        parts.append(f"{rule}: x{g_lo:.2g} at d={dmin} -> x{g_hi:.2g} at d={dmax}")
    line1 = (f"B={int(df.B.max())} per modality, scale {df['scale'].iloc[0] if 'scale' in df else 'unit'}, "
             f"true D_H={df['truth'].iloc[0]:.2g}: resubstitution estimate / true "
             "(geometric mean over M, draws)")
    knn = []
    for rule, rows in df[df.estimator == "knn"].groupby("bandwidth_rule"):
        st_lo = log_ratio_interval(rows[rows.d == dmin].ratio)
        st_hi = log_ratio_interval(rows[rows.d == dmax].ratio)
        knn.append(f"{rule}: x{st_lo['ratio']:.2g} at d={dmin} ({st_lo['nonpositive']} <= 0) -> "
                   f"x{st_hi['ratio']:.2g} at d={dmax} ({st_hi['nonpositive']} <= 0 left out)")
    out = line1 + "\n" + "; ".join(parts)
    return out + ("\nknn estimator: " + "; ".join(knn) if knn else "")


def plot(df, out_fig: Path) -> list[Path]:
    """estimate / true against d per estimator: geometric mean over draws, 95% t interval on log ratio."""
    from harness import style

    plt = style.pyplot()
    summ = summarise(df)
    estimators = [e for e in ("exact", "resubstitution", "knn") if e in set(summ.estimator)]
    fig, axes = plt.subplots(1, len(estimators), figsize=(5.6 * len(estimators), 4.8), sharey=True,
                             layout="constrained", squeeze=False)
    axes = axes[0]
    rules = sorted(summ.bandwidth_rule.unique(), key=lambda r: (r == "median", r))
    palette = plt.get_cmap("Dark2").colors
    colors = {rule: palette[i % len(palette)] for i, rule in enumerate(rules)}
    ms = sorted(summ.M.unique())
    markers = dict(zip(ms, "osD^v<>"))
    styles = dict(zip(ms, ["-", "--", "-.", ":"] * 3))
    draws = int((summ.draws + summ.nonpositive).min())  # estimates per point, <= 0 ones included
    # offset the series a little along d so that their error bars do not hide each other (on the
    # embedding scale the median h is close to the fixed one, so the two rules nearly coincide)
    series = [(r, m) for r in rules for m in ms]
    offset = {key: 2 ** (0.05 * (i - (len(series) - 1) / 2)) for i, key in enumerate(series)}
    for ax, est in zip(axes, estimators):
        sub = summ[summ.estimator == est]
        for (rule, n_mod), grp in sub.groupby(["bandwidth_rule", "M"]):
            grp = grp.sort_values("d")
            xs = grp.d.to_numpy() * offset[(rule, n_mod)]
            y = grp.ratio.clip(lower=1e-4).to_numpy()
            label = f"{rule}, M={n_mod}" + (" (estimates > 0 only)" if est == "knn" else "")
            kw = dict(color=colors[rule], ls=styles[n_mod], marker=markers[n_mod], ms=4, label=label)
            if draws > 1:
                lo = (grp.ratio - grp.lo).fillna(0.0).clip(lower=0.0).to_numpy()
                hi = (grp.hi - grp.ratio).fillna(0.0).clip(lower=0.0).to_numpy()
                ax.errorbar(xs, y, yerr=[lo, hi], capsize=3, **kw)
            else:
                ax.plot(xs, y, **kw)
            if est == "knn":  # how many of the draws at each point had no log (estimate <= 0)
                for x, row in zip(xs, grp.itertuples()):
                    if row.nonpositive:
                        y_at = row.ratio if math.isfinite(row.ratio) and row.ratio > 0 else 1e-2
                        ax.annotate(f"{row.nonpositive}/{row.draws + row.nonpositive}≤0", (x, y_at),
                                    textcoords="offset points", xytext=(3, -9), fontsize=6,
                                    color=colors[rule], alpha=0.9)
            if est != "knn":  # the kNN estimator has no bandwidth, hence no widened target
                ax.plot(grp.d, grp.widened_over_true, color=colors[rule], ls=":", lw=1.2, alpha=0.7)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.axhspan(*CALIBRATION_BAND, color="grey", alpha=0.12, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("dimension d (fixed samples per modality)")
        note = "\n(dotted: widened target $s^2/(s^2+h^2)$, the KDEs' own value)"
        if est == "knn":
            bad, total = int(sub.nonpositive.sum()), int((sub.draws + sub.nonpositive).sum())
            note = f"\n({bad} of {total} estimates <= 0 left out of the log; missing: all <= 0)"
        shown = sorted(sub.M.unique())
        ax.set_title(f"{est} estimator, M={', '.join(str(m) for m in shown)}{note}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("estimate / true $D_H$ (log scale; 1 = correct,\nshaded: within x2)")
    spread = (f"geometric mean and 95% t interval over {draws} draws" if draws > 1
              else "one draw per point (no error bars; --draws N for intervals)")
    handles, labels = axes[0].get_legend_handles_labels()
    if len(axes) > 1:  # the right panels may hold Ms (and rules) the left lacks
        kde = [a for a, e in zip(axes, estimators) if e != "knn"]
        handles, labels = kde[-1].get_legend_handles_labels() if kde else ([], [])
        for ax, est in zip(axes, estimators):
            if est == "knn":
                h2, l2 = ax.get_legend_handles_labels()
                handles, labels = [*handles, *h2], [*labels, *l2]
    style.legend_below(fig, handles, labels)
    scale = df["scale"].iloc[0] if "scale" in df else "unit"
    scale_txt = ("s = 1/sqrt(d), E|x|² ≈ 1 (embedding scale)" if scale == "embedding"
                 else "s = 1 (unit scale)")
    fig.suptitle(f"Divergence estimators against the closed form: B={int(df.B.max())} per modality, "
                 f"{scale_txt}, true $D_H$={df['truth'].iloc[0]:.2g}\n{spread}", fontsize=11)
    return style.save(fig, out_fig)


def calibration(csv_path_or_df, d: int, bandwidth: str) -> dict | None:
    """How far an estimator is from the truth at dimension ``d``.

    ``bandwidth``: ``"fixed"`` (the resubstitution KDE estimator at h = FIXED_BANDWIDTH, claim 3),
    ``"median"`` (the same at the median rule, claim 7) or ``"knn"`` (the kNN estimator's rows; ``h``
    is nan and there is no widened ratio). Reads the
    validation CSV (or its DataFrame); embedding-scale rows are used where there are any. The nearest
    d of the grid stands in for a missing one (``d_used``). Returns ``None`` for a missing or empty
    file or when no row matches, else ``ratio`` (geometric mean of estimate / true over all draws and
    Ms), ``lo``, ``hi`` (95% t interval on the log ratio), ``draws`` (per M), ``n`` (estimates pooled),
    ``B``, ``M`` (list), ``h``, ``by_M`` (the same per M), ``ratio_widened`` (geometric mean of
    estimate / the closed form at ``s^2 + h^2``, the h-smoothed value the KDE tracks), ``calibrated``
    (the pooled and every per-M interval inside ``CALIBRATION_BAND``) and ``note`` (one sentence).
    """
    import pandas as pd

    if bandwidth not in ("fixed", "median", "knn"):
        raise ValueError(f"bandwidth must be 'fixed', 'median' or 'knn', got {bandwidth!r}")
    estimator = "knn" if bandwidth == "knn" else "resubstitution"
    if isinstance(csv_path_or_df, pd.DataFrame):
        df = csv_path_or_df
    else:
        path = Path(csv_path_or_df)
        if not path.is_file():
            return None
        try:
            df = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError):
            return None
    need = {"estimator", "d", "M", "B", "bandwidth_rule", "ratio"}
    if df.empty or not need <= set(df.columns):
        return None
    df = df[df.estimator == estimator]
    if "scale" in df.columns and (df.scale == "embedding").any():
        df = df[df.scale == "embedding"]
    rules = df.bandwidth_rule.astype(str)
    if bandwidth != "knn":
        df = df[rules == "median"] if bandwidth == "median" else df[rules.str.startswith("fixed")]
    if df.empty:
        return None
    dims = sorted({int(v) for v in df.d})
    d_used = min(dims, key=lambda v: (abs(v - int(d)), v))
    df = df[df.d == d_used]
    pooled = log_ratio_interval(df.ratio)
    by_m = {}
    for n_mod, grp in df.groupby("M"):
        by_m[int(n_mod)] = log_ratio_interval(grp.ratio)
    lo_band, hi_band = CALIBRATION_BAND

    def inside(st: dict) -> bool:
        return (st["nonpositive"] == 0 and math.isfinite(st["lo"]) and math.isfinite(st["hi"])
                and lo_band <= st["lo"] and st["hi"] <= hi_band)

    calibrated = inside(pooled) and all(inside(st) for st in by_m.values())
    draws = int(df.groupby("M").size().min())
    b = int(df.B.max())
    if bandwidth == "knn":
        h = math.nan
    else:
        h = float(df.h.mean()) if "h" in df.columns else (FIXED_BANDWIDTH if bandwidth == "fixed" else math.nan)
    ms = sorted(by_m)
    at = f"d = {d_used}" + (f" (nearest to {int(d)})" if d_used != int(d) else "")
    if bandwidth == "knn":
        ks = sorted({int(v) for v in df.k}) if "k" in df.columns else []
        rule_txt = "k = " + ", ".join(str(v) for v in ks) if ks else str(df.bandwidth_rule.iloc[0])
    else:
        rule_txt = f"h = {h:.2g} (fixed)" if bandwidth == "fixed" else f"the median rule (h ~ {h:.2g})"
    verdict = ("calibrated within x2" if calibrated else
               "not calibrated: a comparison at one ruler, not a divergence in nats")
    name = "kNN estimator" if estimator == "knn" else "KDE estimator"
    note = (f"{name} at {at}, B = {b} ({draws} draws x M = {', '.join(str(m) for m in ms)}): "
            f"estimate/true x{pooled['ratio']:.2g} [{pooled['lo']:.2g}, {pooled['hi']:.2g}] at {rule_txt}; "
            f"{verdict}")
    # what the estimate does track: the closed form of the h-smoothed Gaussians (s^2 + h^2)
    widened = (log_ratio_interval(df.ratio_widened)["ratio"]
               if "ratio_widened" in df.columns and estimator != "knn" else math.nan)
    if math.isfinite(widened):
        note += f" (x{widened:.2g} of the h-smoothed closed form)"
    if pooled["nonpositive"]:
        note += f" ({pooled['nonpositive']} estimates <= 0 left out of the log)"
    if estimator == "knn":  # the kNN values scatter around 0 and below: the arithmetic mean says so
        note += f" (arithmetic mean estimate/true {float(df.ratio.mean()):.2g})"
    return {
        "estimator": estimator, "bandwidth": bandwidth, "d": int(d), "d_used": d_used,
        "ratio": pooled["ratio"], "lo": pooled["lo"], "hi": pooled["hi"], "n": pooled["n"],
        "nonpositive": pooled["nonpositive"], "ratio_widened": widened, "draws": draws, "B": b, "M": ms,
        "h": h,
        "by_M": {m: {k: st[k] for k in ("ratio", "lo", "hi", "n", "nonpositive")} for m, st in by_m.items()},
        "band": CALIBRATION_BAND, "calibrated": bool(calibrated), "note": note + ".",
    }


def _positive_ints(name: str, values, minimum: int) -> list[int]:
    bad = [v for v in values if v < minimum]
    if bad or not values:
        raise SystemExit(f"{name}: expected integers >= {minimum}, got {list(values)}")
    return sorted(set(int(v) for v in values))


def resolve_config(args: argparse.Namespace) -> dict:
    """The grid of ``args``: the preset, overridden by the explicit options (each one checked)."""
    preset = args.preset or ("quick" if args.quick else "default")
    cfg = dict(PRESETS[preset], name=preset)
    cfg["knn"] = KNN_PRESETS.get(preset, False) if getattr(args, "knn", None) is None else bool(args.knn)
    # the config key each option comes from in the sweep (workflow/rules/validation.smk)
    if args.dims:
        cfg["dims"] = _positive_ints("--dims (validation.dims)", args.dims, 1)
    if getattr(args, "include_dim", None) is not None:
        cfg["dims"] = _positive_ints("--include-dim (training.dim)", [*cfg["dims"], args.include_dim], 1)
    if args.modalities:
        cfg["modalities"] = _positive_ints("--modalities (validation.modalities)", args.modalities, 2)
    if args.factors:
        for f in args.factors:
            if f not in ("median", "fixed"):
                try:
                    ok = math.isfinite(float(f)) and float(f) > 0
                except ValueError:
                    ok = False
                if not ok:
                    raise SystemExit(f"--factors (validation.factors): expected positive numbers, 'fixed' or "
                                     f"'median', got {f!r}")
        cfg["factors"] = list(dict.fromkeys(args.factors))
    if args.scale:
        cfg["scale"] = args.scale
    if args.draws is not None:
        if args.draws < 1:
            raise SystemExit(f"--draws (validation.draws) must be >= 1, got {args.draws}")
        cfg["draws"] = args.draws
    if args.n_samples is not None:
        if args.n_samples < 2:
            raise SystemExit(f"--n-samples (validation.n_samples) must be >= 2, got {args.n_samples}")
        cfg["n_samples"] = args.n_samples
    if args.target is not None:
        if not (math.isfinite(args.target) and args.target > 0):
            raise SystemExit(f"--target (validation.target) must be a positive number, got {args.target}")
        cfg["target"] = args.target
    return cfg


def main(args: argparse.Namespace) -> int:
    import pandas as pd

    cfg = resolve_config(args)
    t0 = time.perf_counter()
    exact_txt = f"exact M>2: B={cfg['n_exact3']}" if cfg["n_exact3"] >= 2 else "exact at M=2 only"
    print(f"validate-estimators ({cfg['name']}): M={cfg['modalities']} d={cfg['dims']} "
          f"rules={cfg['factors']} scale={cfg['scale']} B={cfg['n_samples']} ({exact_txt}) "
          f"draws={cfg['draws']} target={cfg['target']:g}"
          + (f" + knn ({KNN_RULE})" if cfg.get("knn") else ""))
    rows = run_grid(cfg, args.seed, cfg["target"])
    df = pd.DataFrame(rows)
    buffer = io.StringIO()
    df.to_csv(buffer, index=False)
    atomic_write_text(args.out_csv, buffer.getvalue())
    figs = plot(df, args.out_fig)
    print(_finding(df))
    print(f"wrote {args.out_csv} ({len(df)} rows), {', '.join(str(f) for f in figs)} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0
