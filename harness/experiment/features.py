"""User-supplied features: the ``.npz`` format read by ``python -m harness data --dataset features``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from harness.experiment.dataset import MIN_SPLIT_ROWS, FeatureFormatError


def _splits_from_column(split: np.ndarray, name: str) -> dict[str, np.ndarray]:
    split = np.asarray(split)
    if split.ndim != 1:
        raise FeatureFormatError(f"{name}: 'split' must be 1-D, got shape {split.shape}")
    if split.dtype.kind in "iu":
        mapping = {0: "train", 1: "val", 2: "test"}
        bad = sorted(set(np.unique(split).tolist()) - set(mapping))
        if bad:
            raise FeatureFormatError(f"{name}: 'split' integer values must be 0/1/2 (train/val/test), got {bad}")
        labels = np.array([mapping[int(v)] for v in split])
    elif split.dtype.kind in "US":
        labels = split.astype(str)
        bad = sorted(set(np.unique(labels).tolist()) - {"train", "val", "test"})
        if bad:
            raise FeatureFormatError(f"{name}: 'split' values must be train/val/test, got {bad}")
    else:
        raise FeatureFormatError(f"{name}: 'split' must hold strings or ints, got dtype {split.dtype}")
    out = {k: np.flatnonzero(labels == k).astype(np.int64) for k in ("train", "val", "test")}
    for k, what in (("train", "training"), ("val", "validation"), ("test", "test")):
        if len(out[k]) < MIN_SPLIT_ROWS:
            raise FeatureFormatError(
                f"{name}: 'split' marks {len(out[k])} {what} rows; at least {MIN_SPLIT_ROWS} are needed"
            )
    return out


def _array(npz, key: str, path: Path) -> np.ndarray:
    """One array of the file; object arrays (which would need pickle) are refused by name."""
    try:
        return npz[key]
    except ValueError as exc:
        raise FeatureFormatError(
            f"{path}: array {key!r} holds Python objects (dtype object); save it as a numeric or string array"
        ) from exc



def read_features(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a user features file (format in the module docs / README).

    ``modality_0 .. modality_{M-1}``: (n, d_m) numeric arrays, rows paired across modalities;
    optional ``labels`` (n,) int; ``split`` (n,) train/val/test or 0/1/2; ``names`` (M,) str;
    ``target`` (n, ...) numeric: the anchor's raw observation for generation (default modality_0).
    """
    path = Path(path)
    if not path.exists():
        raise FeatureFormatError(f"features file {path} does not exist")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise FeatureFormatError(f"{path} is not a readable .npz file: {type(exc).__name__}: {exc}") from exc
    with npz:
        keys = set(npz.files)
        mod_keys = sorted((k for k in keys if k.startswith("modality_")), key=lambda k: (len(k), k))
        idx = []
        for k in mod_keys:
            suffix = k[len("modality_") :]
            if not suffix.isdigit():
                raise FeatureFormatError(f"{path}: array {k!r} does not follow modality_<int> naming")
            idx.append(int(suffix))
        if sorted(idx) != list(range(len(idx))):
            raise FeatureFormatError(
                f"{path}: modality arrays must be numbered modality_0 .. modality_{{M-1}} without gaps, "
                f"got {mod_keys}"
            )
        if len(mod_keys) < 2:
            raise FeatureFormatError(
                f"{path}: found {len(mod_keys)} modality array(s) named modality_<m> among its arrays "
                f"{sorted(keys)}; at least two (modality_0, modality_1, ...) are needed: save each view under "
                "modality_<m> (np.savez(path, modality_0=img, modality_1=txt); optional: labels, split, names, "
                "target)"
            )
        unknown = keys - set(mod_keys) - {"labels", "split", "names", "target"}
        if unknown:
            raise FeatureFormatError(
                f"{path}: unknown arrays {sorted(unknown)}; allowed: modality_<m>, labels, split, names, target"
            )
        views = []
        n0 = None
        for m in range(len(mod_keys)):
            key = f"modality_{m}"
            x = _array(npz, key, path)
            if x.dtype.kind not in "fiub" or x.dtype.kind == "b":
                raise FeatureFormatError(f"{path}: {key} has dtype {x.dtype}; a float (or int) array is required")
            if x.ndim != 2:
                raise FeatureFormatError(f"{path}: {key} must be 2-D (n, d), got shape {x.shape}")
            if x.shape[1] < 1:
                raise FeatureFormatError(f"{path}: {key} has no feature columns (shape {x.shape})")
            if n0 is None:
                n0 = x.shape[0]
            elif x.shape[0] != n0:
                raise FeatureFormatError(
                    f"{path}: {key} has {x.shape[0]} rows but modality_0 has {n0}; rows must be paired"
                )
            x = x.astype(np.float64)
            n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
            if n_nan or n_inf:
                raise FeatureFormatError(f"{path}: {key} contains {n_nan} NaN and {n_inf} inf values")
            if n0 < 2 * MIN_SPLIT_ROWS + 2:
                raise FeatureFormatError(
                    f"{path}: {key} has {n0} rows; at least {2 * MIN_SPLIT_ROWS + 2} are needed "
                    f"({MIN_SPLIT_ROWS} per split, 2 for training)"
                )
            if float(np.max(np.ptp(x, axis=0))) == 0.0:
                raise FeatureFormatError(f"{path}: {key} is constant (zero variance in every column)")
            views.append(x.astype(np.float32))
        labels = None
        if "labels" in keys:
            labels = _array(npz, "labels", path)
            if labels.ndim != 1 or labels.shape[0] != n0:
                raise FeatureFormatError(f"{path}: labels must have shape ({n0},), got {labels.shape}")
            if labels.dtype.kind not in "iu":
                if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
                    labels = labels.astype(np.int64)
                else:
                    raise FeatureFormatError(f"{path}: labels must be integers, got dtype {labels.dtype}")
            labels = labels.astype(np.int64)
        splits = None
        if "split" in keys:
            split = _array(npz, "split", path)
            if split.shape != (n0,):
                raise FeatureFormatError(f"{path}: split must have shape ({n0},), got {split.shape}")
            splits = _splits_from_column(split, str(path))
        names = [f"modality_{m}" for m in range(len(views))]
        if "names" in keys:
            arr = _array(npz, "names", path)
            if arr.shape != (len(views),) or arr.dtype.kind not in "US":
                raise FeatureFormatError(
                    f"{path}: names must be {len(views)} strings, got shape {arr.shape} dtype {arr.dtype}"
                )
            names = [str(s) for s in arr]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise FeatureFormatError(f"{path}: names must be unique, {dup} occur more than once")
        target = views[0]
        target_shape = None
        if "target" in keys:
            t = _array(npz, "target", path)
            if t.shape[0] != n0 or t.dtype.kind not in "fiu":
                raise FeatureFormatError(f"{path}: target must be numeric with {n0} rows, got {t.shape} {t.dtype}")
            if not np.all(np.isfinite(t)):
                raise FeatureFormatError(f"{path}: target contains NaN or inf values")
            target_shape = list(t.shape[1:]) if t.ndim > 2 else None
            target = t.reshape(n0, -1).astype(np.float32)
    return {"views": views, "labels": labels, "splits": splits, "names": names, "target": target,
            "target_shape": target_shape}
