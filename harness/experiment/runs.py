"""A run folder and what it holds: the objective a run was built with, its checkpoints, its final weights.

``train``, ``evaluate``, ``generate`` and the report all read runs through this module; it imports
none of them.

Integrity: a run is bound to what made it. Its config records the dataset's sha256 and split
identity (``data_sha256``, ``split_sha256``); ``train.json`` records ``model_sha256`` of
``model.pt``. Resuming, rerunning, evaluating and generating verify both and refuse a mismatch
(:class:`IntegrityError`, naming both hashes and the path). A checkpoint that has trained more
steps than the budget asked for, or a new budget over a finished run, is refused.

Safe loading: ``model.pt`` and checkpoints are read with torch's weights_only unpickler (tensors and
plain python types only), after their sha256 is checked against the recorded one; a ``model.pt``
whose ``train.json`` records no hash is refused unread, so a file planted in a run folder cannot run
code on ``train`` (resume), ``evaluate``, ``generate`` or the figures.

One writer per run folder: :func:`run_writer` validates the configuration, then holds an exclusive
lock on ``RUN/.lock`` (naming the holder's PID and host to a second writer) and removes temporary
files a killed writer left.

Relocatable: ``train.json``, ``model.pt`` and ``checkpoint.pt`` store the dataset path relative to
the run folder (``config.data``) and ``config.out`` as ``"."``, so a run and its dataset can move
together; absolute paths of older runs still load where they exist.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from harness.experiment.data import DataError, Dataset, load_dataset
from harness.experiment.models import MultiEncoder
from harness.files import (
    FolderLock,
    atomic_write_bytes,
    relative_path,
    resolve_recorded_path,
    sha256_bytes,
    sha256_file,
    write_json,
)
from harness.provenance import flat_provenance, provenance

CHECKPOINT_FORMAT = "harness-checkpoint-v2"
# config keys that may change between a checkpoint and a resumed command
# (the budget, the validation cadence and instruments, and the selection do not change the training
# trajectory: a checkpoint continues under new values)
RESUMABLE_CHANGES = {"epochs", "steps", "quiet", "out", "eval_every", "eval_every_steps", "val_instruments",
                     "select", "threads"}
# keys checked on their own (paths may move; hashes are compared with a message naming both)
BOUND_KEYS = {"data", "out", "data_sha256", "split_sha256", "dist_timeout_s"}



class TrainError(RuntimeError):
    """A training run cannot start or resume; the message says why."""


class CheckpointError(TrainError):
    """A checkpoint is truncated, corrupted or from another configuration."""


class UnreadableError(ValueError):
    """torch could not (or, with weights_only, would not) read a payload; the message is one line."""


class IntegrityError(TrainError):
    """A run's weights or data differ from those it recorded."""



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
    """The objective ``name`` (registered, or ``package.module:Class``) built with ``params``; every
    failure is a TrainError naming the objective."""
    try:
        from objectives import registry
    except ImportError as exc:  # pragma: no cover
        raise TrainError(f"the objectives package cannot be imported: {exc}") from exc
    try:
        entry = registry.get(name)
    except registry.ObjectiveError as exc:
        raise TrainError(str(exc)) from exc
    try:
        return entry.build(**params)
    except registry.ObjectiveError as exc:
        raise TrainError(str(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise TrainError(f"objective {name!r} rejected its parameters {params}: {exc}") from exc


def objective_temperature(loss_fn, default: float = float("nan")) -> float:
    temp = getattr(loss_fn, "temperature", None)
    if temp is not None and hasattr(temp, "value"):
        try:
            with torch.no_grad():  # a learnable temperature: read its value, no graph
                return float(temp.value())
        except Exception:  # noqa: BLE001
            pass
    return default



# A checkpoint is a short text header -- the format name and the payload's sha256 -- followed by the
# payload that torch.save wrote. The hash is read as text and checked before a byte of the payload is
# deserialised, and the payload is read with torch's weights_only unpickler (tensors and plain python
# types only), so a planted file can neither run code nor pass as a checkpoint.
CHECKPOINT_MAGIC = (CHECKPOINT_FORMAT + "\n").encode("ascii")
_DIGEST_LEN = 64
# numpy values (the legacy numpy RNG state is an ndarray; history rows may hold numpy scalars) are
# stored tagged as tensors and python scalars, which the weights_only unpickler accepts
_NDARRAY, _NPSCALAR = "__harness_ndarray__", "__harness_npscalar__"


def _to_plain(obj):
    if isinstance(obj, np.ndarray):
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(obj)).clone(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return {_NPSCALAR: obj.item(), "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_plain(v) for v in obj)
    return obj


def _from_plain(obj):
    if isinstance(obj, dict):
        if _NDARRAY in obj:
            return obj[_NDARRAY].numpy().astype(obj["dtype"], copy=True)
        if _NPSCALAR in obj:
            return np.dtype(obj["dtype"]).type(obj[_NPSCALAR])
        return {k: _from_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_from_plain(v) for v in obj)
    return obj


def safe_torch_load(payload: bytes, map_location: str = "cpu") -> Any:
    """``torch.load`` of bytes with the weights_only unpickler; its error cut to one line.

    torch explains a refused global over many lines; the first names what was refused.
    """
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is reported as one
        first = (str(exc).strip().splitlines() or [""])[0].strip()
        raise UnreadableError(f"{type(exc).__name__}: {first}") from exc


def require_keys(state: Any, keys, path: Path | str) -> None:
    """Refuse a loaded ``model.pt`` or checkpoint that lacks any of ``keys``, naming the key and the file."""
    if not isinstance(state, dict):
        raise TrainError(f"{path} holds a {type(state).__name__}, not a dict of saved state; it is not a harness file")
    missing = [k for k in keys if k not in state]
    if missing:
        raise TrainError(f"{path} lacks the key(s) {', '.join(map(repr, missing))} (written by another version, "
                         "or edited); delete it and rerun train")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint atomically; its ``config`` is stored with paths relative to the run folder."""
    if isinstance(state.get("config"), dict):
        state = {**state, "config": portable_config(state["config"], Path(path).parent)}
    buf = io.BytesIO()
    torch.save(_to_plain(state), buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, CHECKPOINT_MAGIC + sha256_bytes(payload).encode("ascii") + b"\n" + payload)


def load_checkpoint(path: Path, required=()) -> dict:
    """The state a checkpoint holds, after its payload hash is checked; ``required`` keys must be in it."""
    restart = "delete it to restart the run from scratch"
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); {restart}") from exc
    if not raw.startswith(CHECKPOINT_MAGIC):
        raise CheckpointError(f"checkpoint {path} is not a {CHECKPOINT_FORMAT} file (a foreign file, or one "
                              f"written by an older version); {restart}")
    head = len(CHECKPOINT_MAGIC)
    recorded = raw[head:head + _DIGEST_LEN].decode("ascii", "replace")
    payload = raw[head + _DIGEST_LEN + 1:]
    if raw[head + _DIGEST_LEN:head + _DIGEST_LEN + 1] != b"\n":
        raise CheckpointError(f"checkpoint {path} is truncated: its header has no complete sha256; {restart}")
    digest = sha256_bytes(payload)
    if digest != recorded:
        raise CheckpointError(f"checkpoint {path} is corrupted: payload sha256 {digest} != recorded {recorded}; "
                              f"{restart}")
    try:
        state = _from_plain(safe_torch_load(payload))
    except UnreadableError as exc:  # a payload whose hash matches but that torch cannot (or may not) read
        raise CheckpointError(f"checkpoint {path} holds an unreadable payload ({exc}); {restart}") from exc
    if required:
        try:
            require_keys(state, required, path)
        except TrainError as exc:
            raise CheckpointError(str(exc)) from None
    return state



def config_diff(a: dict, b: dict) -> list[str]:
    keys = (set(a) | set(b)) - RESUMABLE_CHANGES - BOUND_KEYS
    return sorted(k for k in keys if a.get(k) != b.get(k))


# ----------------------------------------------------------------------------- configuration checks

# key -> (test, what it must be); a key absent or None in a config is not checked
_CONFIG_RULES = {
    "steps": (lambda v: v >= 1, "a positive integer"),
    "epochs": (lambda v: v >= 1, "a positive integer"),
    "batch_size": (lambda v: v >= 2, "an integer >= 2"),
    "dim": (lambda v: v >= 1, "a positive integer"),
    "hidden": (lambda v: v >= 1, "a positive integer"),
    "depth": (lambda v: v >= 0, "an integer >= 0"),
    "lr": (lambda v: math.isfinite(v) and v > 0, "a positive number"),
    "weight_decay": (lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    "eval_every": (lambda v: v >= 1, "a positive integer"),
    "eval_every_steps": (lambda v: v >= 1, "a positive integer"),
    "threads": (lambda v: v >= 0, "an integer >= 0"),
    "seed": (lambda v: v >= 0, "an integer >= 0"),
    "dist_timeout_s": (lambda v: math.isfinite(v) and v > 0, "a positive number of seconds"),
}


def validate_config(cfg: dict[str, Any]) -> None:
    """Refuse sizes, budgets and rates out of range before any work, naming the option and value."""
    for key, (test, what) in _CONFIG_RULES.items():
        value = cfg.get(key)
        if value is not None and not test(value):
            raise TrainError(f"--{key.replace('_', '-')} {value} must be {what}")


def bind_dataset(cfg: dict[str, Any], ds: Dataset) -> dict[str, Any]:
    """Record the dataset's sha256 and split identity in ``cfg`` (in place; returns it)."""
    cfg["data_sha256"] = ds.meta.get("sha256")
    cfg["split_sha256"] = ds.split_sha256
    return cfg


def _check_data(recorded: dict[str, Any], cfg: dict[str, Any], where: Path) -> None:
    """Refuse when the data hash (or split) recorded in ``recorded`` differs from ``cfg``'s."""
    for key, what in (("data_sha256", "dataset sha256"), ("split_sha256", "split sha256")):
        old, new = recorded.get(key), cfg.get(key)
        if old is not None and new is not None and old != new:
            raise IntegrityError(
                f"{where} was made from data with {what} {old}, but {cfg['data']} now holds {new}; "
                "the dataset was regenerated or edited: use the original dataset or another --out"
            )


def _budget(cfg: dict[str, Any]) -> str:
    return f"--steps {cfg['steps']}" if cfg.get("steps") is not None else f"--epochs {cfg.get('epochs')}"


def check_finished_run(out: Path, cfg: dict[str, Any], total_steps: int) -> None:
    """Before a rerun over a finished run: its data, its weights and its budget must match ``cfg``.

    A finished run with the same configuration but another budget is refused: continuing it would
    replace the model its metrics describe.
    """
    done, model = out / "train.json", out / "model.pt"
    if not (done.exists() and model.exists()):
        return
    prev = read_train_json(out)
    _check_data({**prev.get("config", {}), "data_sha256": prev.get("data_sha256")}, cfg, done)
    verify_weights(out, prev)
    if not config_diff(prev.get("config", {}), cfg) and prev.get("cap_steps", prev.get("steps")) != total_steps:
        raise TrainError(
            f"{out} holds a finished run of {prev.get('steps')} steps; {_budget(cfg)} ({total_steps} steps) "
            f"would replace the model its results describe; train into another --out, or delete "
            f"{model.name} and {done.name} there to continue it from its checkpoint"
        )


def check_resume(ckpt_path: Path, state: dict[str, Any], cfg: dict[str, Any], total_steps: int) -> None:
    """A checkpoint may continue only on the same data and up to a budget at least as large."""
    _check_data(state.get("config", {}), cfg, ckpt_path)
    done = int(state.get("step", 0))
    if done > total_steps:
        raise CheckpointError(
            f"{ckpt_path} has trained {done} steps, more than {_budget(cfg)} ({total_steps} steps); "
            "a smaller budget cannot be resumed: use another --out or delete the checkpoint"
        )


# ----------------------------------------------------------------------------- relocatable paths


def portable_config(cfg: dict[str, Any], run_dir: str | os.PathLike) -> dict[str, Any]:
    """``cfg`` as stored in a run folder: ``data`` relative to it, ``out`` as ``"."``."""
    out = dict(cfg)
    if out.get("data") is not None:
        out["data"] = relative_path(out["data"], run_dir)
    if "out" in out:
        out["out"] = "."
    return out


def resolve_data(cfg: dict[str, Any], run_dir: str | os.PathLike) -> Path:
    """The dataset folder of a stored run config (relative to the run, or absolute in older runs)."""
    return resolve_recorded_path(cfg["data"], run_dir)


# ----------------------------------------------------------------------------- the run folder


@contextlib.contextmanager
def run_writer(cfg: dict[str, Any], is_main: bool = True) -> Iterator[FolderLock | None]:
    """Validate ``cfg``, then hold the run folder's writer lock (main rank only) for the block."""
    validate_config(cfg)
    if not is_main:
        yield None
        return
    with FolderLock(cfg["out"]) as lock:
        yield lock


def read_train_json(run: Path) -> dict[str, Any]:
    path = run / "train.json"
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path} is not valid JSON (truncated or corrupted?): {exc}") from exc


def verify_weights(run: Path, record: dict[str, Any] | None, data: bytes | None = None) -> str:
    """sha256 of ``model.pt``; refused when it differs from ``record['model_sha256']``."""
    path = run / "model.pt"
    if data is None:
        data = path.read_bytes()
    digest = sha256_bytes(data)
    expected = (record or {}).get("model_sha256")
    if expected is not None and digest != expected:
        raise IntegrityError(
            f"{path} has sha256 {digest}, but {run / 'train.json'} records {expected}: the weights changed "
            "after training (corrupted or replaced); delete model.pt and train.json and rerun train"
        )
    return digest


def write_run(out: Path, weights: dict[str, Any], result: dict[str, Any], device: str | None = None) -> dict:
    """Write ``model.pt`` then ``train.json``; the latter records the sha256 of the weights and of
    ``history.csv`` / ``steps.csv`` (when present), and provenance.

    Both store the config with relocatable paths; returns the dict written to ``train.json``.
    """
    import torch

    weights = dict(weights)
    if isinstance(weights.get("config"), dict):
        weights["config"] = portable_config(weights["config"], out)
    buf = io.BytesIO()
    torch.save(weights, buf)
    payload = buf.getvalue()
    atomic_write_bytes(out / "model.pt", payload)
    result = dict(result)
    result["config"] = portable_config(result["config"], out)
    result["model_sha256"] = sha256_bytes(payload)
    result["split_sha256"] = result["config"].get("split_sha256")
    result["provenance"] = provenance(device)
    # the per-evaluation tables the report reads are bound to the run like the weights
    for name in ("history", "steps"):
        if (out / f"{name}.csv").exists():
            result[f"{name}_sha256"] = sha256_file(out / f"{name}.csv")
    write_json(out / "train.json", result)
    return result


def run_meta(cfg: dict[str, Any]) -> dict[str, Any]:
    """Flat ``meta/`` keys naming what a result came from: weight and data hashes, provenance."""
    return {
        "meta/model_sha256": cfg.get("model_sha256"),
        "meta/data_sha256": cfg.get("data_sha256"),
        "meta/split_sha256": cfg.get("split_sha256"),
        **flat_provenance(),
    }


def check_dataset_for_run(ds: Dataset, n_modalities: int, batch_size: int, world_size: int = 1,
                          params: dict[str, Any] | None = None) -> None:
    if n_modalities < 2 or n_modalities > ds.n_modalities:
        raise TrainError(
            f"--n-modalities {n_modalities} is not possible: the dataset {ds.meta.get('dataset')} has "
            f"{ds.n_modalities} modalities ({', '.join(ds.names)}); M must be in 2..{ds.n_modalities}"
        )
    sizes = {k: len(ds.split(k)) for k in ("train", "val", "test")}
    small = [k for k, v in sizes.items() if v < 2]
    if small:
        raise TrainError(
            f"the dataset {ds.meta.get('dataset')} has split sizes {sizes}: {', '.join(small)} need at "
            "least 2 rows; rebuild it with more samples"
        )
    anchor = (params or {}).get("anchor")
    if isinstance(anchor, int) and not isinstance(anchor, bool) and not 0 <= anchor < n_modalities:
        raise TrainError(f"--param anchor={anchor} is out of range: M = {n_modalities} modalities are "
                         f"0..{n_modalities - 1}")
    n_train = sizes["train"]
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
    """(config, model in eval mode, objective, dataset) of a finished run, after verifying it.

    ``model.pt`` must match the ``model_sha256`` its ``train.json`` records and the dataset the
    sha256 the run recorded. The returned config holds the absolute dataset path and
    ``model_sha256`` (see :func:`run_meta`).
    """
    run = Path(run_dir)
    path = run / "model.pt"
    if not path.exists():
        if (run / "checkpoint.pt").exists():
            raise TrainError(f"{path} does not exist but {run / 'checkpoint.pt'} does: training was interrupted; "
                             "rerun the same `python -m harness train` command to resume it")
        raise TrainError(f"{path} does not exist; train first with `python -m harness train --out {run}`")
    record = read_train_json(run) if (run / "train.json").exists() else None
    if not (record or {}).get("model_sha256"):
        # without a recorded hash nothing vouches for the bytes: refuse before reading them
        raise IntegrityError(
            f"{path} has no recorded sha256 ({run / 'train.json'} is missing or lacks model_sha256), so it is not "
            f"loaded; retrain with `python -m harness train --out {run} ...`, or restore the run's train.json")
    payload = path.read_bytes()
    digest = verify_weights(run, record, payload)
    try:
        state = safe_torch_load(payload, map_location=device)
    except UnreadableError as exc:
        raise TrainError(f"{path} is unreadable (truncated, corrupted or not a weights file): {exc}") from exc
    require_keys(state, ("config", "in_dims", "model", "objective"), path)
    require_keys(state["config"], ("data", "dim", "hidden", "depth", "objective", "params"),
                 f"the config stored in {path}")
    cfg = dict(state["config"])
    if record is not None:
        cfg.setdefault("data_sha256", record.get("data_sha256"))
    data = resolve_data(cfg, run)
    try:
        ds = load_dataset(data)
    except DataError as exc:
        raise TrainError(f"the dataset of run {run} cannot be loaded: {exc}") from exc
    cfg["data"] = str(data)
    read = bind_dataset({"data": str(data)}, ds)
    _check_data(cfg, read, run)
    cfg["model_sha256"] = digest
    # the recorded hashes equal these (checked just above); a run that recorded none names what it read
    cfg.update(data_sha256=read["data_sha256"], split_sha256=read["split_sha256"])
    model = MultiEncoder(state["in_dims"], cfg["dim"], cfg["hidden"], cfg["depth"], head=cfg.get("head", "linear"))
    model.load_state_dict(state["model"])
    model.eval()
    loss_fn = build_objective(cfg["objective"], cfg["params"])
    loss_fn.load_state_dict(state["objective"])
    return cfg, model, loss_fn, ds


def embed_split(model, ds: Dataset, rows: np.ndarray, M: int) -> list[torch.Tensor]:
    """Embeddings of the given rows of the first M modalities (standardised with training statistics)."""
    xs = [torch.from_numpy(ds.standardized(m, rows)) for m in range(M)]
    return model.embed(xs)
