"""A run folder and what it holds: the objective a run was built with, its checkpoints, its final weights.

``train``, ``evaluate``, ``generate`` and the report all read runs through this module; it imports
none of them.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from harness.experiment.data import Dataset, load_dataset
from harness.experiment.models import MultiEncoder
from harness.files import atomic_save_torch

CHECKPOINT_FORMAT = "harness-checkpoint-v1"
# config keys that may change between a checkpoint and a resumed command
RESUMABLE_CHANGES = {"epochs", "quiet", "out", "eval_every", "threads"}



class TrainError(RuntimeError):
    """A training run cannot start or resume; the message says why."""


class CheckpointError(TrainError):
    """A checkpoint is truncated, corrupted or from another configuration."""



def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict with values parsed by ``yaml.safe_load``."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise TrainError(f"--param {item!r} must look like key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise TrainError(f"--param {item!r} has an empty key")
        out[key] = yaml.safe_load(value) if value.strip() else None
    return out


def build_objective(name: str, params: dict[str, Any]):
    try:
        import objectives
    except ImportError as exc:  # pragma: no cover
        raise TrainError(f"the objectives package cannot be imported: {exc}") from exc
    names = list(objectives.available())
    if name not in names:
        raise TrainError(f"unknown objective {name!r}; available: {', '.join(names)}")
    try:
        return objectives.build(name, **params)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"objective {name!r} rejected its parameters {params}: {exc}") from exc


def objective_temperature(loss_fn, default: float = float("nan")) -> float:
    temp = getattr(loss_fn, "temperature", None)
    if temp is not None and hasattr(temp, "value"):
        try:
            return float(temp.value())
        except Exception:  # noqa: BLE001
            pass
    return default



def save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    atomic_save_torch(path, {"format": CHECKPOINT_FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
                             "payload": payload})


def load_checkpoint(path: Path) -> dict:
    try:
        outer = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or corrupted: {type(exc).__name__}: {exc}); "
            "delete it to restart the run from scratch"
        ) from exc
    if not isinstance(outer, dict) or outer.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a {CHECKPOINT_FORMAT} file; delete it to restart")
    payload = outer.get("payload")
    digest = hashlib.sha256(payload).hexdigest() if isinstance(payload, (bytes, bytearray)) else None
    if digest != outer.get("sha256"):
        raise CheckpointError(
            f"checkpoint {path} is corrupted: payload sha256 {digest} != recorded {outer.get('sha256')}; "
            "delete it to restart the run from scratch"
        )
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)



def config_diff(a: dict, b: dict) -> list[str]:
    keys = (set(a) | set(b)) - RESUMABLE_CHANGES
    return sorted(k for k in keys if a.get(k) != b.get(k))


def check_dataset_for_run(ds: Dataset, n_modalities: int, batch_size: int, world_size: int = 1) -> None:
    if n_modalities < 2 or n_modalities > ds.n_modalities:
        raise TrainError(
            f"--n-modalities {n_modalities} is not possible: the dataset {ds.meta.get('dataset')} has "
            f"{ds.n_modalities} modalities ({', '.join(ds.names)}); M must be in 2..{ds.n_modalities}"
        )
    n_train = len(ds.split("train"))
    if batch_size > n_train:
        raise TrainError(
            f"--batch-size {batch_size} is larger than the {n_train} training rows of the dataset "
            f"({ds.meta.get('dataset')}); use a batch size <= {n_train}"
        )
    if batch_size < 2:
        raise TrainError(f"--batch-size {batch_size} must be at least 2")
    if batch_size % world_size:
        raise TrainError(f"--batch-size {batch_size} must be divisible by the {world_size} ranks")



def load_run(run_dir: str | os.PathLike, device: str = "cpu"):
    """(config, model in eval mode, objective, dataset) of a finished run."""
    run = Path(run_dir)
    path = run / "model.pt"
    if not path.exists():
        raise TrainError(f"{path} does not exist; train first with `python -m harness train --out {run}`")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise TrainError(f"{path} is unreadable (truncated or corrupted): {exc}") from exc
    cfg = state["config"]
    ds = load_dataset(cfg["data"])
    model = MultiEncoder(state["in_dims"], cfg["dim"], cfg["hidden"], cfg["depth"])
    model.load_state_dict(state["model"])
    model.eval()
    loss_fn = build_objective(cfg["objective"], cfg["params"])
    loss_fn.load_state_dict(state["objective"])
    return cfg, model, loss_fn, ds


def embed_split(model, ds: Dataset, rows: np.ndarray, M: int) -> list[torch.Tensor]:
    """Embeddings of the given rows of the first M modalities (standardised with training statistics)."""
    xs = [torch.from_numpy(ds.standardized(m, rows)) for m in range(M)]
    return model.embed(xs)
