"""A dataset folder and its container: format, errors, splits, standardisation, writing, reading.

Every source (``harness.experiment.synthetic``, ``.uci``, ``.features``) is written by
``python -m harness data`` into one folder holding

- ``dataset.npz``: ``view_0 .. view_{M-1}`` (n, d_m) float32, *raw* (not standardised);
  ``target`` (n, t) float32, the anchor's raw observation (the generation target);
  ``labels`` (n,) int64 (absent when the source has none); ``train_idx``, ``val_idx``,
  ``test_idx`` (int64 row indices, sorted, disjoint, covering all rows);
  ``mean_m`` / ``std_m`` (d_m,) float32 standardisation statistics of view m, fitted on the
  training rows only (a column with std < 1e-8 gets std 1).
- ``dataset.json``: meta (dataset, modality_names, modality_dims, n, n_classes, split_sizes, seed,
  target_shape, target_range, generator parameters, ``sha256`` of dataset.npz, format version).

:func:`load_dataset` checks the stored sha256 before reading (a truncated or edited file is refused).

Modality 0 is always the anchor.
"""


from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.files import ContentError, atomic_write_bytes, check_seal, seal, sha256_file, write_json

# 2: dataset.json carries the sha256 of its own fields (``content_sha256``), so an edited field is refused
FORMAT_VERSION = 2
META_SEAL = "content_sha256"
# rows every split must hold: retrieval, probes and validation need pairs
MIN_SPLIT_ROWS = 2

# ----------------------------------------------------------------------------- errors


class DataError(ValueError):
    """A dataset cannot be built, read or used; the message names the file, array and problem."""


class FeatureFormatError(DataError):
    """A user features file does not follow the documented format."""


class DatasetIntegrityError(DataError):
    """A stored dataset does not match its recorded sha256 (truncated, edited or corrupted)."""


# ----------------------------------------------------------------------------- container


@dataclass
class Dataset:
    views: list[np.ndarray]  # raw views, (n, d_m) float32
    target: np.ndarray  # (n, t) float32: anchor's raw observation
    labels: np.ndarray | None  # (n,) int64
    splits: dict[str, np.ndarray]  # train/val/test -> int64 indices
    means: list[np.ndarray]
    stds: list[np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_modalities(self) -> int:
        return len(self.views)

    @property
    def n(self) -> int:
        return int(self.views[0].shape[0])

    @property
    def dims(self) -> list[int]:
        return [int(v.shape[1]) for v in self.views]

    @property
    def names(self) -> list[str]:
        return list(self.meta.get("modality_names", [f"m{m}" for m in range(self.n_modalities)]))

    def standardized(self, m: int, rows: np.ndarray | None = None) -> np.ndarray:
        """View m standardised with the training statistics (rows optional), float32."""
        x = self.views[m] if rows is None else self.views[m][rows]
        # float64 arithmetic: a float32 difference of two values near 3e38 overflows
        return ((x.astype(np.float64) - self.means[m]) / self.stds[m]).astype(np.float32)

    @property
    def split_sha256(self) -> str:
        return split_sha256(self.splits)

    def split(self, name: str) -> np.ndarray:
        if name not in self.splits:
            raise DataError(f"unknown split {name!r}; available: {sorted(self.splits)}")
        return self.splits[name]


# ----------------------------------------------------------------------------- helpers


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int(seed)))


def fit_standardization(x: np.ndarray, modality: int | str = "?") -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of the training rows of one view, computed in float64 (float32 squares
    overflow to inf for finite values above ~1.8e19) and checked: every statistic finite, and at least
    one column not constant, else a DataError naming the modality and its column count."""
    x64 = np.asarray(x, dtype=np.float64)
    cols = x64.shape[1] if x64.ndim == 2 else 0
    with np.errstate(over="ignore", invalid="ignore"):
        mean = x64.mean(axis=0)
        std = x64.std(axis=0)
    bad = int(np.count_nonzero(~(np.isfinite(mean) & np.isfinite(std))))
    if bad:
        raise DataError(f"modality {modality} ({cols} columns): standardisation statistics of {bad} column(s) "
                        "are not finite; the features hold inf/NaN or values beyond float64 range")
    if cols and not np.any(std >= 1e-8):
        raise DataError(f"modality {modality} ({cols} columns): every column is constant on the training "
                        "rows, so the standardised view is all zeros; check the features file")
    std = np.where(std < 1e-8, 1.0, std)
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
    if not (np.isfinite(mean32).all() and np.isfinite(std32).all()):
        raise DataError(f"modality {modality} ({cols} columns): standardisation statistics exceed float32 "
                        "range (|value| > 3.4e38); rescale the features")
    return mean32, std32


def make_splits(
    n: int,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    labels: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Random split fixed by ``seed``; stratified by class when labels are given."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "with a sum below 1"
        )
    rng = _rng(seed + 7919)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    out: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for g in groups:
        g = rng.permutation(g)
        n_test = int(round(test_fraction * len(g)))
        n_val = int(round(val_fraction * len(g)))
        out["test"].append(g[:n_test])
        out["val"].append(g[n_test : n_test + n_val])
        out["train"].append(g[n_test + n_val :])
    return {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in out.items()}



# ----------------------------------------------------------------------------- writing / reading


def check_splits(splits: dict[str, np.ndarray], dataset: str | None = None) -> None:
    """Refuse splits with fewer than MIN_SPLIT_ROWS rows (e.g. too few samples for the fractions)."""
    sizes = {k: len(splits.get(k, ())) for k in ("train", "val", "test")}
    small = [k for k, v in sizes.items() if v < MIN_SPLIT_ROWS]
    if small:
        raise DataError(
            f"dataset {dataset or ''}: split sizes {sizes} leave {', '.join(small)} with fewer than "
            f"{MIN_SPLIT_ROWS} rows; use more samples or larger --val-fraction/--test-fraction"
        )


def split_sha256(splits: dict[str, np.ndarray]) -> str:
    """Identity of a train/val/test split: sha256 over the three index arrays (int64, in order)."""
    h = hashlib.sha256()
    for k in ("train", "val", "test"):
        arr = np.ascontiguousarray(np.asarray(splits[k], dtype=np.int64))
        h.update(k.encode() + b":" + str(arr.shape[0]).encode() + b":")
        h.update(arr.tobytes())
    return h.hexdigest()


def write_dataset(
    out_dir: str | os.PathLike,
    views: list[np.ndarray],
    target: np.ndarray,
    labels: np.ndarray | None,
    splits: dict[str, np.ndarray],
    meta: dict[str, Any],
) -> dict[str, Any]:
    out = Path(out_dir)
    rows = [int(v.shape[0]) for v in views]
    if not rows or len(set(rows)) != 1 or int(np.shape(target)[0]) != rows[0]:
        raise DataError(f"dataset {meta.get('dataset') or ''}: views and target must have one row per sample, "
                        f"got view rows {rows} and target rows {int(np.shape(target)[0])}")
    check_splits(splits, meta.get("dataset"))
    arrays: dict[str, np.ndarray] = {}
    for m, x in enumerate(views):
        arrays[f"view_{m}"] = np.ascontiguousarray(x, dtype=np.float32)
        arrays[f"mean_{m}"], arrays[f"std_{m}"] = fit_standardization(x[splits["train"]], m)
    arrays["target"] = np.ascontiguousarray(target, dtype=np.float32)
    if labels is not None:
        arrays["labels"] = labels.astype(np.int64)
    for k in ("train", "val", "test"):
        arrays[f"{k}_idx"] = np.asarray(splits[k], dtype=np.int64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    atomic_write_bytes(out / "dataset.npz", data)
    meta = dict(meta)
    meta.update(
        format_version=FORMAT_VERSION,
        n=int(views[0].shape[0]),
        n_modalities=len(views),
        modality_dims=[int(v.shape[1]) for v in views],
        n_classes=None if labels is None else len(np.unique(labels)),
        split_sizes={k: len(splits[k]) for k in ("train", "val", "test")},
        target_dim=int(target.shape[1]),
        target_range=[float(target[splits["train"]].min()), float(target[splits["train"]].max())],
        sha256=hashlib.sha256(data).hexdigest(),
        split_sha256=split_sha256(splits),
    )
    meta = seal(meta, META_SEAL)
    write_json(out / "dataset.json", meta)
    return meta


def _check_meta_against_arrays(meta: dict, arrays: dict, meta_path: Path) -> None:
    """The record's shape fields must be those of the hashed arrays (a hand-edited record is refused)."""
    views = sorted(k for k in arrays if k.startswith("view_"))
    derived = {
        "n_modalities": len(views),
        "modality_dims": [int(arrays[f"view_{m}"].shape[1]) for m in range(len(views)) if f"view_{m}" in arrays],
        "split_sizes": {k: int(len(arrays[f"{k}_idx"])) for k in ("train", "val", "test") if f"{k}_idx" in arrays},
    }
    if "view_0" in arrays:
        derived["n"] = int(arrays["view_0"].shape[0])
    for key, value in derived.items():
        if key in meta and meta[key] != value:
            raise DatasetIntegrityError(f"{meta_path} records {key}={meta[key]!r} but its dataset.npz holds {value!r}: "
                                        "the record was edited; regenerate it with `python -m harness data`")
    for key in ("n_modalities", "n"):
        if key not in meta:
            raise DatasetIntegrityError(f"{meta_path} lacks the field {key!r}; regenerate it with `python -m harness data`")


def load_dataset(data_dir: str | os.PathLike, verify: bool = True) -> Dataset:
    """Read a folder written by ``python -m harness data``; refuse it if the sha256 does not match."""
    d = Path(data_dir)
    meta_path, npz_path = d / "dataset.json", d / "dataset.npz"
    for p in (meta_path, npz_path):
        if not p.exists():
            raise DataError(f"{p} does not exist; create the dataset with `python -m harness data --out {d}`")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetIntegrityError(f"{meta_path} is not valid JSON (truncated or corrupted?): {exc}") from exc
    if not isinstance(meta, dict):
        raise DatasetIntegrityError(f"{meta_path} holds a JSON {type(meta).__name__}, not the dataset's record")
    if verify:
        try:  # format 1 wrote no seal; its fields are checked against the arrays below
            check_seal(meta, meta_path, META_SEAL, required=int(meta.get("format_version", 1)) >= 2)
        except ContentError as exc:
            raise DatasetIntegrityError(f"{exc} (`python -m harness data`)") from None
        digest = sha256_file(npz_path)
        if digest != meta.get("sha256"):
            raise DatasetIntegrityError(
                f"{npz_path} is corrupted or truncated: sha256 {digest} does not match the "
                f"{meta.get('sha256')} recorded in {meta_path}; regenerate it with `python -m harness data`"
            )
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise DatasetIntegrityError(f"{npz_path} cannot be read: {type(exc).__name__}: {exc}") from exc
    _check_meta_against_arrays(meta, arrays, meta_path)
    m_count = int(meta["n_modalities"])
    return Dataset(
        views=[arrays[f"view_{m}"] for m in range(m_count)],
        target=arrays["target"],
        labels=arrays.get("labels"),
        splits={k: arrays[f"{k}_idx"] for k in ("train", "val", "test")},
        means=[arrays[f"mean_{m}"] for m in range(m_count)],
        stds=[arrays[f"std_{m}"] for m in range(m_count)],
        meta=meta,
    )
