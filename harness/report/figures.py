"""Figures (PDF and PNG, matplotlib Agg): ``python -m harness figures ...``.

Each figure's title states the finding computed from the data (never hard-coded):

- ``conflicts_vs_m``: zeta and chi vs M per objective, mean and 95% t band over seeds (central);
- ``divergence_gap_vs_m``: global Hölder divergence and modality gap vs M;
- ``retrieval_vs_m``: mean R@1 vs M;
- ``alignment_uniformity``: the Wang & Isola alignment-uniformity plane, one point per run;
- ``projection_pca``: 2-D PCA of the test embeddings of every modality, InfoNCE beside UniAlign
  (loads the two runs' model.pt through harness.experiment.train.load_run);
- ``generated_samples``: the generate step's samples.png of InfoNCE and UniAlign side by side;
- ``proxy_vs_divergence``: validation divergence and its proxy during training (history.csv).

(``figures/estimator_validation.{png,pdf}`` is drawn by ``python -m harness validate-estimators``.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from harness.report import main_study_rows, read_csv_or_empty
from harness.report.aggregate import (
    history_column,
    load_config,
    metric_column,
    metric_label,
    t_interval,
    variant_label,
)

FIGURES = [
    "conflicts_vs_m",
    "divergence_gap_vs_m",
    "retrieval_vs_m",
    "alignment_uniformity",
    "projection_pca",
    "generated_samples",
    "proxy_vs_divergence",
]
UNITS = {
    "zeta": "zeta (cosine, unitless)",
    "chi": "chi (1 - consensus, unitless)",
    "holder": "Hölder divergence (nats)",
    "gap": "centroid gap (Euclidean, unit sphere)",
    "R1": "R@1 (%)",
    "alignment": "alignment E|z_m - z_n|^2",
    "uniformity": "uniformity log E exp(-2|z_i - z_j|^2)",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 130, "font.size": 9, "axes.titlesize": 9,
                         "svg.hashsalt": "unialign", "pdf.compression": 6})
    return plt


def save(fig, out_dir: Path, name: str) -> None:
    """PDF and PNG, written atomically, without timestamps (reruns give identical bytes)."""
    import io as _io

    from harness.files import atomic_write_bytes

    for ext, meta in (("pdf", {"CreationDate": None, "ModDate": None}), ("png", {"Software": None})):
        buf = _io.BytesIO()
        fig.savefig(buf, format=ext, bbox_inches="tight", metadata=meta)
        atomic_write_bytes(out_dir / f"{name}.{ext}", buf.getvalue())
    _plt().close(fig)


def placeholder(out_dir: Path, name: str, message: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_title(f"{name}: not available")
    save(fig, out_dir, name)


def _order(cfg: dict, variants) -> list[str]:
    listed = ((cfg.get("config", {}).get("studies", {}) or {}).get("main") or {}).get("variants", [])
    rank = {v: i for i, v in enumerate(listed)}
    return sorted(set(variants), key=lambda v: (rank.get(v, len(rank)), v))


def curve(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Per M: mean and 95% t band over seeds."""
    rows = []
    for m, sub in df.groupby("M"):
        mean, _sd, lo, hi, n = t_interval(pd.to_numeric(sub[col], errors="coerce").tolist())
        rows.append({"M": int(m), "mean": mean, "lo": lo if math.isfinite(lo) else mean,
                     "hi": hi if math.isfinite(hi) else mean, "n": n})
    return pd.DataFrame(rows).sort_values("M") if rows else pd.DataFrame(columns=["M", "mean", "lo", "hi", "n"])


# natural ranges: 95% bands of bounded statistics are clipped to them (n = 3 seeds gives t = 4.3)
BOUNDS = {"zeta": (-1.0, 1.0), "chi": (0.0, 1.0), "R1": (0.0, 100.0), "gap": (0.0, 2.0)}
NICE = {"zeta": "zeta", "chi": "chi", "holder": "Hölder divergence", "gap": "modality gap", "R1": "R@1"}


def trend_phrase(name: str, label: str, c: pd.DataFrame) -> str:
    name = NICE.get(name, name)
    if c.empty or c["mean"].isna().all():
        return f"{name}: no data for {label}"
    c = c.dropna(subset=["mean"])
    first, last = c.iloc[0], c.iloc[-1]
    if len(c) < 2:
        return f"{name} under {label}: {first['mean']:.3g} at M={int(first['M'])}"
    steps = c["mean"].diff().dropna()
    if (steps > 0).all():
        verb = "rises with M"
    elif (steps < 0).all():
        verb = "falls with M"
    else:  # endpoints alone would hide a peak or a dip
        peak = c.loc[c["mean"].idxmax()]
        verb = f"is not monotonic in M (peak {peak['mean']:.3g} at M={int(peak['M'])})"
    return (f"{name} {verb} under {label} ({first['mean']:.3g} at M={int(first['M'])} -> "
            f"{last['mean']:.3g} at M={int(last['M'])})")


def lines_vs_m(summary, cfg, out_dir, name, metrics: Sequence[str], headline_metric: str) -> None:
    main = main_study_rows(summary, cfg)
    cols = {m: metric_column(main.columns, m) for m in metrics}
    cols = {m: c for m, c in cols.items() if c is not None}
    if main.empty or not cols:
        placeholder(out_dir, name, f"no runs with {', '.join(metrics)} in results/summary.csv")
        return
    plt = _plt()
    datasets = sorted(main["dataset"].unique())
    fig, axes = plt.subplots(len(datasets), len(cols), figsize=(4.2 * len(cols), 3.2 * len(datasets)),
                             squeeze=False)
    report = cfg.get("config", {}).get("report", {}) or {}
    baseline, method = report.get("baseline", "infonce"), report.get("method", "unialign")
    phrases = []
    finals = {}
    cmap = plt.get_cmap("tab10")
    variants = _order(cfg, main["variant"])
    for i, dataset in enumerate(datasets):
        sub = main[main["dataset"] == dataset]
        for j, (metric, col) in enumerate(cols.items()):
            ax = axes[i][j]
            for k, variant in enumerate(variants):
                c = curve(sub[sub["variant"] == variant], col)
                if c.empty:
                    continue
                style = dict(lw=2.2) if variant in (baseline, method) else dict(lw=1.0, alpha=0.8)
                ax.plot(c["M"], c["mean"], marker="o", ms=3, color=cmap(k % 10), label=variant_label(cfg, variant), **style)
                lo_b, hi_b = BOUNDS.get(metric, (-np.inf, np.inf))
                ax.fill_between(c["M"], c["lo"].clip(lo_b, hi_b), c["hi"].clip(lo_b, hi_b), color=cmap(k % 10),
                                alpha=0.15, lw=0)
                if metric == headline_metric and variant in (baseline, method):
                    phrases.append(f"{dataset}: " + trend_phrase(metric, variant_label(cfg, variant), c))
                    finals[(dataset, variant)] = c.dropna(subset=["mean"]).iloc[-1] if c["mean"].notna().any() else None
            ax.set_xlabel("number of modalities M")
            ax.set_ylabel(UNITS.get(metric, metric_label(metric)))
            ax.set_title(f"{dataset}: {metric_label(metric)}")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
    for dataset in datasets:
        b, m = finals.get((dataset, baseline)), finals.get((dataset, method))
        if b is not None and m is not None and int(b["M"]) == int(m["M"]):
            rel = "lower" if m["mean"] < b["mean"] else "higher"
            phrases.append(f"{dataset}, M={int(m['M'])}: {NICE.get(headline_metric, headline_metric)} {rel} under "
                           f"{variant_label(cfg, method)} than {variant_label(cfg, baseline)} "
                           f"({m['mean']:.3g} vs {b['mean']:.3g})")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(labels) / 4)))
    fig.suptitle("\n".join(phrases[:6]) + "\n(mean over seeds, band: 95% t interval, clipped to the statistic's range)")
    fig.tight_layout()
    save(fig, out_dir, name)


def alignment_uniformity(summary, cfg, out_dir) -> None:
    main = main_study_rows(summary, cfg)
    ac, uc = metric_column(main.columns, "alignment"), metric_column(main.columns, "uniformity")
    if main.empty or ac is None or uc is None:
        placeholder(out_dir, "alignment_uniformity", "no alignment/uniformity metrics in results/summary.csv")
        return
    plt = _plt()
    datasets = sorted(main["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    cmap = plt.get_cmap("tab10")
    best = []
    for i, dataset in enumerate(datasets):
        ax = axes[0][i]
        sub = main[main["dataset"] == dataset]
        for k, variant in enumerate(_order(cfg, sub["variant"])):
            v = sub[sub["variant"] == variant]
            ax.scatter(v[ac], v[uc], s=8 + 6 * v["M"], color=cmap(k % 10), alpha=0.7, label=variant_label(cfg, variant))
        means = sub.groupby("variant")[[ac, uc]].mean()
        score = (means[ac] - means[ac].min()) / (np.ptp(means[ac]) or 1) + (means[uc] - means[uc].min()) / (np.ptp(means[uc]) or 1)
        best.append(f"{dataset}: {variant_label(cfg, score.idxmin())} closest to the lower left")
        ax.set_xlabel(UNITS["alignment"] + " (lower = better aligned)")
        ax.set_ylabel(UNITS["uniformity"] + " (lower = more uniform)")
        ax.set_title(f"{dataset} (marker size grows with M)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle("Alignment-uniformity plane, one point per run: " + "; ".join(best))
    fig.tight_layout()
    save(fig, out_dir, "alignment_uniformity")


def _embeddings(run_dir: Path):
    from harness.experiment.runs import embed_split, load_run

    cfg, model, _loss, ds = load_run(run_dir)
    rows = ds.split("test")
    zs = embed_split(model, ds, rows, cfg["n_modalities"])
    return [z.detach().numpy() for z in zs], ds.names[: cfg["n_modalities"]]


def projection(cfg, out_dir) -> None:
    report = cfg.get("config", {}).get("report", {}) or {}
    proj = report.get("projection") or {}
    variants = [report.get("baseline", "infonce"), report.get("method", "unialign")]
    jobs = {(c["dataset"], c["variant"]): c.get("job", c["variant"]) for c in cfg.get("cells", [])}
    runs = [Path(f"runs/{proj.get('dataset')}/{jobs.get((proj.get('dataset'), v), v)}/{v}/M{proj.get('m')}/"
                 f"seed{proj.get('seed', 0)}") for v in variants]
    if not proj or not all((r / "model.pt").exists() for r in runs):
        placeholder(out_dir, "projection_pca", f"runs {', '.join(map(str, runs))} not found")
        return
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    gaps = []
    cmap = plt.get_cmap("tab10")
    for ax, variant, run in zip(axes, variants, runs):
        zs, names = _embeddings(run)
        pooled = np.concatenate(zs)
        centre = pooled.mean(0)
        _u, _s, vt = np.linalg.svd(pooled - centre, full_matrices=False)
        centroids = np.stack([z.mean(0) for z in zs])
        gap = float(np.mean([np.linalg.norm(centroids[i] - centroids[j])
                             for i in range(len(zs)) for j in range(i + 1, len(zs))]))
        gaps.append(gap)
        for m, z in enumerate(zs):
            p = (z - centre) @ vt[:2].T
            ax.scatter(p[:, 0], p[:, 1], s=4, alpha=0.5, color=cmap(m % 10), label=f"modality {m} ({names[m]})")
        ax.set_title(f"{variant_label(cfg, variant)}: mean centroid distance {gap:.3f}")
        ax.set_xlabel("PC 1 (of the pooled test embeddings)")
        ax.set_ylabel("PC 2")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, markerscale=3)
    lower = variant_label(cfg, variants[int(np.argmin(gaps))])
    fig.suptitle(f"Modality distributions overlap more under {lower} (centroid distance {min(gaps):.3f} vs "
                 f"{max(gaps):.3f}); {proj.get('dataset')}, M={proj.get('m')}, seed {proj.get('seed', 0)}")
    fig.tight_layout()
    save(fig, out_dir, "projection_pca")


def generated_samples(cfg, generation: pd.DataFrame, out_dir) -> None:
    report = cfg.get("config", {}).get("report", {}) or {}
    variants = [report.get("baseline", "infonce"), report.get("method", "unialign")]
    cells = cfg.get("cells", [])
    panels = []
    for cell in cells:
        if cell["variant"] in variants and cell.get("generation_ms"):
            m = cell["generation_ms"][0]
            seed = (cfg.get("seeds") or [0])[0]
            job = cell.get("job", cell["variant"])
            path = Path(f"generation/{cell['dataset']}/{job}/{cell['variant']}/M{m}_seed{seed}/samples.png")
            if path.exists():
                panels.append((cell["dataset"], cell["variant"], m, seed, path))
    if not panels:
        placeholder(out_dir, "generated_samples", "no samples.png from the generate step")
        return
    plt = _plt()
    panels.sort(key=lambda p: (p[0], variants.index(p[1])))
    ncols = 2
    nrows = math.ceil(len(panels) / ncols)
    h, w = plt.imread(panels[0][4]).shape[:2]
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, (6 * h / w + 0.5) * nrows + 0.6), squeeze=False)
    phrases = []
    for ax, (dataset, variant, m, seed, path) in zip(axes.flat, panels):
        ax.imshow(plt.imread(path))
        ax.axis("off")
        fd = ""
        if not generation.empty:
            from harness.report.tables import generation_conditions

            per = generation_conditions(generation)
            sub = per[(per["dataset"] == dataset) & (per["variant"] == variant) & (per["M"] == m)]
            if "cross-modal/fd" in sub and len(sub):
                fd = f", cross-modal FD {sub['cross-modal/fd'].mean():.3g}"
        ax.set_title(f"{dataset}: {variant_label(cfg, variant)} (M={m}, seed {seed}{fd})")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if not generation.empty:
        from harness.report.tables import generation_conditions

        per = generation_conditions(generation)
        if "cross-modal/fd" in per:
            for dataset in sorted(per["dataset"].unique()):
                means = per[per["dataset"] == dataset].groupby("variant")["cross-modal/fd"].mean()
                means = means[[v for v in variants if v in means.index]]
                if len(means):
                    phrases.append(f"{dataset}: lowest cross-modal Fréchet distance with "
                                   f"{variant_label(cfg, means.idxmin())} ({means.min():.3g})")
    fig.suptitle("Generated samples (rows: conditions; columns: test items). " + "; ".join(phrases))
    fig.tight_layout()
    save(fig, out_dir, "generated_samples")


def proxy_vs_divergence(history: pd.DataFrame, cfg, out_dir) -> None:
    hcol = history_column(history.columns, "holder") if not history.empty else None
    pcol = history_column(history.columns, "proxy") if not history.empty else None
    if hcol is None or pcol is None:
        placeholder(out_dir, "proxy_vs_divergence", "history.csv has no validation divergence / proxy columns")
        return
    report = cfg.get("config", {}).get("report", {}) or {}
    variants = [report.get("baseline", "infonce"), report.get("method", "unialign")]
    hist = history[history["variant"].isin(variants)].copy()
    hist[hcol] = pd.to_numeric(hist[hcol], errors="coerce")
    hist[pcol] = pd.to_numeric(hist[pcol], errors="coerce")
    hist = hist.dropna(subset=[hcol, pcol])
    if hist.empty:
        placeholder(out_dir, "proxy_vs_divergence", "no evaluation epochs in history.csv")
        return
    plt = _plt()
    datasets = sorted(hist["dataset"].unique())
    fig, axes = plt.subplots(len(datasets), 2, figsize=(9, 3.2 * len(datasets)), squeeze=False)
    phrases = []
    for i, dataset in enumerate(datasets):
        sub = hist[hist["dataset"] == dataset]
        m = int(sorted(sub["M"].unique())[len(sub["M"].unique()) // 2])
        for j, variant in enumerate(variants):
            ax = axes[i][j]
            v = sub[(sub["variant"] == variant) & (sub["M"] == m)]
            if v.empty:
                ax.axis("off")
                continue
            g = v.groupby("epoch")[[hcol, pcol]].mean()
            ax.plot(g.index, g[hcol], "o-", color="C0", label="global Hölder divergence")
            ax.set_xlabel("epoch")
            ax.set_ylabel("divergence (nats)", color="C0")
            ax2 = ax.twinx()
            ax2.plot(g.index, g[pcol], "s--", color="C3", label="proxy")
            ax2.set_ylabel("proxy (nats)", color="C3")
            rs = []
            for _s, run in v.groupby("seed"):
                if len(run) >= 3 and run[hcol].std() > 0 and run[pcol].std() > 0:
                    rs.append(np.corrcoef(run[hcol], run[pcol])[0, 1])
            r = float(np.mean(rs)) if rs else math.nan
            ax.set_title(f"{dataset}, {variant_label(cfg, variant)}, M={m}: mean r = {r:.2f}")
            if variant == variants[1]:
                phrases.append(f"{dataset}: proxy {'tracks' if r > 0.5 else 'does not clearly track'} the "
                               f"divergence under {variant_label(cfg, variant)} (r = {r:.2f})")
            lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
            ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="best")
            ax.grid(alpha=0.3)
    fig.suptitle("; ".join(phrases) + "\n(validation split, mean over seeds)")
    fig.tight_layout()
    save(fig, out_dir, "proxy_vs_divergence")


def add_arguments(p) -> None:
    p.add_argument("--config", default=None, help="results/config.json")
    p.add_argument("--summary", required=True)
    p.add_argument("--history", default=None)
    p.add_argument("--generation", default=None)
    p.add_argument("--out-dir", default="figures")
    p.add_argument("--only", nargs="*", default=None, choices=FIGURES, help="draw only these figures")


def main(args) -> int:
    cfg = load_config(args.config)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary, history, generation = read_csv_or_empty(args.summary), read_csv_or_empty(args.history), read_csv_or_empty(args.generation)
    todo = set(args.only or FIGURES)
    jobs = {
        "conflicts_vs_m": lambda: lines_vs_m(summary, cfg, out, "conflicts_vs_m", ["zeta", "chi"], "zeta"),
        "divergence_gap_vs_m": lambda: lines_vs_m(summary, cfg, out, "divergence_gap_vs_m", ["holder", "gap"], "holder"),
        "retrieval_vs_m": lambda: lines_vs_m(summary, cfg, out, "retrieval_vs_m", ["R1"], "R1"),
        "alignment_uniformity": lambda: alignment_uniformity(summary, cfg, out),
        "projection_pca": lambda: projection(cfg, out),
        "generated_samples": lambda: generated_samples(cfg, generation, out),
        "proxy_vs_divergence": lambda: proxy_vs_divergence(history, cfg, out),
    }
    for name in FIGURES:
        if name in todo:
            jobs[name]()
    print(f"figures: wrote {len(todo)} figures (PDF and PNG) to {out}")
    return 0
