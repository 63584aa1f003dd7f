"""What produced a result: code version, library versions, device, threads and date.

:func:`provenance` returns a flat, JSON-ready dict; ``train.json``, evaluation metrics and
``generation.json`` record it, and :func:`flat_provenance` prefixes its keys for flat files.
"""

from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """``git_commit`` (None outside a git checkout or without git) and ``git_dirty`` (None then too)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    # the workflow's committed outputs (results/, figures/) are rewritten by the run itself: a sweep
    # in progress would otherwise always report a dirty tree; "dirty" means changed code or config
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results", ":!figures")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(module)
    except PackageNotFoundError:
        return None


def provenance(device: str | None = None) -> dict[str, Any]:
    """Git commit and dirtiness, torch/numpy/snakemake versions, python, host, device, threads, UTC date."""
    import numpy
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_name = device
    if str(device).startswith("cuda") and torch.cuda.is_available():
        device_name = f"{device} ({torch.cuda.get_device_name()})"
    out = git_state()
    out.update({
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "snakemake_version": _version("snakemake"),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "host": platform.node(),
        "device": device_name,
        "threads": torch.get_num_threads(),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    })
    return out


def flat_provenance(prefix: str = "meta/provenance/", device: str | None = None) -> dict[str, Any]:
    """:func:`provenance` with prefixed keys, for flat JSON result files."""
    return {f"{prefix}{k}": v for k, v in provenance(device).items()}
