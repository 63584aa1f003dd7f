"""Run records (harness.experiment.runs), function by function, against hand-written expectations.

Config parsing and validation name the option and the value; checkpoints round-trip every state
(model tensors and the torch, numpy and Python generators) and refuse a damaged or foreign file; a
run binds its dataset and weights by sha256 and refuses either when it changed; budgets are checked
against finished runs and checkpoints; a run folder stores relative paths, so it moves with its
dataset; one writer holds a run folder. Small dicts, byte strings and a synthetic dataset: no
training.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import objectives
from harness.experiment import data as hd
from harness.experiment import runs
from harness.experiment.dataset import Dataset
from harness.experiment.models import MultiEncoder
from harness.experiment.runs import CheckpointError, IntegrityError, TrainError
from harness.files import FolderLock, LockedError
from harness.provenance import provenance

FORMAT = "harness-checkpoint-v2"
MAGIC = (FORMAT + "\n").encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def message(exc_type, fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert type(info.value) is exc_type
    return str(info.value)


def toy_dataset(sizes=(6, 2, 2), n_modalities=3, name="toy", names=("a", "b", "c")) -> Dataset:
    """An in-memory dataset: rows 0.. in order, ``sizes`` rows per split (train, val, test)."""
    n = sum(sizes)
    rng = np.random.default_rng(0)
    views = [rng.normal(size=(n, 2 + m)).astype(np.float32) for m in range(n_modalities)]
    idx = np.arange(n, dtype=np.int64)
    splits = {"train": idx[: sizes[0]], "val": idx[sizes[0]: sizes[0] + sizes[1]], "test": idx[sizes[0] + sizes[1]:]}
    meta = {"dataset": name, "modality_names": list(names[:n_modalities]), "sha256": "f" * 64}
    return Dataset(views=views, target=views[0].copy(), labels=None, splits=splits,
                   means=[np.zeros(v.shape[1], np.float32) for v in views],
                   stds=[np.ones(v.shape[1], np.float32) for v in views], meta=meta)


# ----------------------------------------------------------------------------- --param parsing


def test_parse_params_values_keys_and_empty_values():
    assert runs.parse_params(None) == {}
    assert runs.parse_params([]) == {}
    # the first "=" splits key from value; the value keeps later ones; keys are stripped
    assert runs.parse_params([" lam =0.5", "expr=a=b", "flag=true", "n=3", "empty=", "blank=  ", "tab=\t", "s= x "]) == {
        "lam": 0.5, "expr": "a=b", "flag": True, "n": 3, "empty": None, "blank": None, "tab": None, "s": "x"}


def test_parse_params_refuses_items_without_a_key():
    assert message(TrainError, runs.parse_params, ["oops"]) == "--param 'oops' must look like key=value"
    assert message(TrainError, runs.parse_params, ["a=1", " =3"]) == "--param ' =3' has an empty key"
    assert message(TrainError, runs.parse_params, ["=3"]) == "--param '=3' has an empty key"


# ----------------------------------------------------------------------------- objectives


def test_build_objective_builds_with_the_given_parameters():
    loss_fn = runs.build_objective("infonce", {"temperature": 0.3})
    assert type(loss_fn) is objectives.InfoNCE
    assert loss_fn.temperature.value() == pytest.approx(0.3)
    assert type(runs.build_objective("symile", {})) is objectives.Symile


def test_build_objective_errors_name_the_objective_and_parameters():
    assert message(TrainError, runs.build_objective, "nope", {}) == (
        f"unknown objective 'nope'; available: {', '.join(objectives.available())}")
    with pytest.raises(ValueError) as inner:
        objectives.build("infonce", temperature=-1.0)
    with pytest.raises(TrainError) as info:
        runs.build_objective("infonce", {"temperature": -1.0})
    assert str(info.value) == f"objective 'infonce' rejected its parameters {{'temperature': -1.0}}: {inner.value}"
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(TrainError) as info:
        runs.build_objective("infonce", {"bogus": 1})
    assert str(info.value).startswith(
        "objective 'infonce' rejected its parameters {'bogus': 1}: infonce got unknown parameter(s) ['bogus']")
    assert isinstance(info.value.__cause__, TypeError)


def test_build_objective_without_the_objectives_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "objectives", None)  # makes `import objectives` raise ImportError
    with pytest.raises(ImportError) as raw:
        import objectives  # noqa: F401
    assert message(TrainError, runs.build_objective, "infonce", {}) == (
        f"the objectives package cannot be imported: {raw.value}")


class _Temp:
    def __init__(self, fn):
        self.value = fn


class _Loss:
    def __init__(self, temperature):
        self.temperature = temperature


def test_objective_temperature_reads_the_value_without_a_graph():
    fixed = objectives.build("infonce", temperature=0.25)
    assert runs.objective_temperature(fixed) == pytest.approx(0.25)
    learnable = objectives.build("infonce", temperature=0.5, learnable_temperature=True)
    with torch.no_grad():
        learnable.temperature.log_scale.fill_(math.log(1 / 0.125))
    assert runs.objective_temperature(learnable) == pytest.approx(0.125)
    # the value is read with autograd off: 1.0 under no_grad, 2.0 otherwise
    assert runs.objective_temperature(_Loss(_Temp(lambda: 2.0 - (not torch.is_grad_enabled())))) == 1.0


def test_objective_temperature_default_when_there_is_no_readable_temperature():
    assert math.isnan(runs.objective_temperature(objectives.build("align_uniform")))
    assert math.isnan(runs.objective_temperature(object()))
    assert runs.objective_temperature(object(), default=1.5) == 1.5
    assert runs.objective_temperature(_Loss(None), default=2.5) == 2.5
    assert runs.objective_temperature(_Loss(0.3), default=3.5) == 3.5  # no value()

    def broken():
        raise RuntimeError("no value")

    assert runs.objective_temperature(_Loss(_Temp(broken)), default=4.5) == 4.5


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_restores_tensors_and_every_generator(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    shuffle = np.random.default_rng(8)
    weights = torch.randn(3, 2, dtype=torch.float64)
    state = {"step": 7, "model": {"w": weights}, "torch_rng": torch.get_rng_state(),
             "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
             "shuffle_rng": shuffle.bit_generator.state,
             "config": {"data": str(tmp_path / "data"), "out": str(run), "lr": 0.1}}
    before = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], shuffle.random(4))
    runs.save_checkpoint(run / "checkpoint.pt", state)
    # the caller's dict keeps its absolute paths; the file holds paths relative to the run folder
    assert state["config"]["data"] == str(tmp_path / "data")
    torch.rand(9), np.random.rand(9), random.random()  # the process moves on
    back = runs.load_checkpoint(run / "checkpoint.pt")
    assert back["config"] == {"data": "../data", "out": ".", "lr": 0.1}
    assert back["step"] == 7 and torch.equal(back["model"]["w"], weights) and back["model"]["w"].dtype == torch.float64
    torch.set_rng_state(back["torch_rng"])
    np.random.set_state(back["numpy_rng"])
    random.setstate(back["python_rng"])
    shuffle2 = np.random.default_rng()
    shuffle2.bit_generator.state = back["shuffle_rng"]
    after = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], shuffle2.random(4))
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1]) and before[2] == after[2] and np.array_equal(before[3], after[3])


def split_checkpoint(raw: bytes) -> tuple[str, bytes]:
    """(recorded sha256, payload) of a checkpoint file: a format line, a hash line, the payload."""
    assert raw.startswith(MAGIC) and raw[len(MAGIC) + 64:len(MAGIC) + 65] == b"\n"
    return raw[len(MAGIC):len(MAGIC) + 64].decode(), raw[len(MAGIC) + 65:]


def first_line_of_torch_error(payload: bytes) -> str:
    with pytest.raises(Exception) as raw:
        torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    return f"{type(raw.value).__name__}: {str(raw.value).strip().splitlines()[0].strip()}"


def test_checkpoint_file_is_the_format_the_hash_and_the_payload(tmp_path):
    path = tmp_path / "c.pt"
    runs.save_checkpoint(path, {"x": torch.arange(3), "config": None, "v": np.float32(0.5)})
    digest, payload = split_checkpoint(path.read_bytes())
    assert digest == sha(payload)
    # the payload holds tensors and plain python values only: torch's weights_only unpickler reads it
    inner = torch.load(io.BytesIO(payload), weights_only=True)
    assert torch.equal(inner["x"], torch.arange(3)) and inner["config"] is None
    back = runs.load_checkpoint(path)
    assert back["v"] == np.float32(0.5) and type(back["v"]) is np.float32
    # a config that is not a dict is stored as it is
    runs.save_checkpoint(path, {"step": 1})
    assert runs.load_checkpoint(path) == {"step": 1}


def test_load_checkpoint_refuses_unreadable_foreign_and_damaged_files(tmp_path):
    path = tmp_path / "c.pt"
    restart = "delete it to restart the run from scratch"
    foreign = (f"checkpoint {path} is not a {FORMAT} file (a foreign file, or one written by an older version); "
               f"{restart}")
    path.write_bytes(b"not a checkpoint")
    assert message(CheckpointError, runs.load_checkpoint, path) == foreign
    # a torch file is foreign too: an older checkpoint layout, or one that holds tensors (a model.pt, say)
    for obj in ([1, 2], {"format": "harness-checkpoint-v1", "payload": b"", "sha256": sha(b"")},
                {"model": {"w": torch.arange(3)}}):
        torch.save(obj, path)
        assert message(CheckpointError, runs.load_checkpoint, path) == foreign
    assert message(CheckpointError, runs.load_checkpoint, tmp_path / "gone.pt").startswith(
        f"checkpoint {tmp_path / 'gone.pt'} is unreadable (FileNotFoundError: ")
    # the payload changed after the hash was recorded
    runs.save_checkpoint(path, {"x": torch.arange(3)})
    recorded, payload = split_checkpoint(path.read_bytes())
    damaged = payload[:-1] + bytes([payload[-1] ^ 1])
    path.write_bytes(MAGIC + recorded.encode() + b"\n" + damaged)
    assert message(CheckpointError, runs.load_checkpoint, path) == (
        f"checkpoint {path} is corrupted: payload sha256 {sha(damaged)} != recorded {recorded}; {restart}")
    # cut inside the header: no complete hash
    path.write_bytes(MAGIC + recorded[:10].encode())
    assert message(CheckpointError, runs.load_checkpoint, path) == (
        f"checkpoint {path} is truncated: its header has no complete sha256; {restart}")
    # cut inside the payload: the hash no longer matches
    path.write_bytes(MAGIC + recorded.encode() + b"\n" + payload[:-7])
    assert f"is corrupted: payload sha256 {sha(payload[:-7])} != recorded {recorded}" in message(
        CheckpointError, runs.load_checkpoint, path)
    # a payload whose hash matches but that torch cannot read: torch's reason, on one line
    path.write_bytes(MAGIC + sha(b"junk").encode() + b"\n" + b"junk")
    assert message(CheckpointError, runs.load_checkpoint, path) == (
        f"checkpoint {path} holds an unreadable payload ({first_line_of_torch_error(b'junk')}); {restart}")


def test_load_checkpoint_names_missing_keys(tmp_path):
    path = tmp_path / "c.pt"
    runs.save_checkpoint(path, {"step": 1, "model": {}})
    assert runs.load_checkpoint(path, required=("step", "model"))["step"] == 1
    assert message(CheckpointError, runs.load_checkpoint, path, required=("step", "optimizer", "torch_rng")) == (
        f"{path} lacks the key(s) 'optimizer', 'torch_rng' (written by another version, or edited); "
        "delete it and rerun train")
    buf = io.BytesIO()
    torch.save([1, 2], buf)
    path.write_bytes(MAGIC + sha(buf.getvalue()).encode() + b"\n" + buf.getvalue())
    assert message(CheckpointError, runs.load_checkpoint, path, required=("step",)) == (
        f"{path} holds a list, not a dict of saved state; it is not a harness file")


# ----------------------------------------------------------------------------- configurations


RESUMABLE_AND_BOUND = ["epochs", "steps", "quiet", "out", "eval_every", "eval_every_steps", "val_instruments",
                       "select", "threads", "data", "data_sha256", "split_sha256", "dist_timeout_s"]


def test_config_diff_ignores_budget_cadence_selection_paths_and_hashes():
    for key in RESUMABLE_AND_BOUND:
        assert runs.config_diff({key: 1, "lr": 0.1}, {key: 2, "lr": 0.1}) == [], key


def test_config_diff_lists_changed_added_and_removed_keys_sorted():
    a = {"lr": 0.1, "seed": 0, "dim": 8, "objective": "infonce", "gone": 1, "unset": None, "epochs": 1}
    b = {"seed": 0, "lr": 0.2, "objective": "infonce", "head": "linear", "dim": 16, "epochs": 5}
    assert runs.config_diff(a, b) == ["dim", "gone", "head", "lr"]
    assert runs.config_diff(b, a) == ["dim", "gone", "head", "lr"]
    assert runs.config_diff(a, dict(a)) == []
    assert runs.config_diff({}, {}) == []


@pytest.mark.parametrize("key,value,text", [
    ("steps", 0, "--steps 0 must be a positive integer"),
    ("epochs", 0, "--epochs 0 must be a positive integer"),
    ("batch_size", 1, "--batch-size 1 must be an integer >= 2"),
    ("dim", 0, "--dim 0 must be a positive integer"),
    ("hidden", 0, "--hidden 0 must be a positive integer"),
    ("depth", -1, "--depth -1 must be an integer >= 0"),
    ("lr", 0.0, "--lr 0.0 must be a positive number"),
    ("lr", float("nan"), "--lr nan must be a positive number"),
    ("lr", float("inf"), "--lr inf must be a positive number"),
    ("weight_decay", -0.5, "--weight-decay -0.5 must be a number >= 0"),
    ("weight_decay", float("inf"), "--weight-decay inf must be a number >= 0"),
    ("eval_every", 0, "--eval-every 0 must be a positive integer"),
    ("eval_every_steps", 0, "--eval-every-steps 0 must be a positive integer"),
    ("threads", -1, "--threads -1 must be an integer >= 0"),
    ("seed", -1, "--seed -1 must be an integer >= 0"),
    ("dist_timeout_s", 0, "--dist-timeout-s 0 must be a positive number of seconds"),
    ("dist_timeout_s", float("nan"), "--dist-timeout-s nan must be a positive number of seconds"),
])
def test_validate_config_names_the_option_and_value(key, value, text):
    assert message(TrainError, runs.validate_config, {"lr": 0.1, key: value}) == text


def test_validate_config_accepts_boundaries_and_unset_values():
    runs.validate_config({"steps": 1, "epochs": 1, "batch_size": 2, "dim": 1, "hidden": 1, "depth": 0,
                          "lr": 1e-12, "weight_decay": 0.0, "eval_every": 1, "eval_every_steps": 1, "threads": 0,
                          "seed": 0, "dist_timeout_s": 0.5, "unchecked": -5})
    runs.validate_config({key: None for key in ("steps", "epochs", "batch_size", "lr", "seed")})
    runs.validate_config({})


# ----------------------------------------------------------------------------- data binding


def test_bind_dataset_records_both_hashes_in_place():
    ds = toy_dataset()
    cfg = {"data": "x", "data_sha256": "old", "lr": 0.1}
    assert runs.bind_dataset(cfg, ds) is cfg
    split = hashlib.sha256()
    for k in ("train", "val", "test"):
        arr = ds.splits[k].astype(np.int64)
        split.update(f"{k}:{len(arr)}:".encode() + arr.tobytes())
    assert cfg == {"data": "x", "data_sha256": "f" * 64, "split_sha256": split.hexdigest(), "lr": 0.1}


def test_check_data_refuses_a_changed_hash_naming_both_and_the_paths(tmp_path):
    where = tmp_path / "run" / "checkpoint.pt"
    cfg = {"data": "/d/new", "data_sha256": "d1", "split_sha256": "s1"}
    assert message(IntegrityError, runs._check_data, {"data_sha256": "d0", "split_sha256": "s1"}, cfg, where) == (
        f"{where} was made from data with dataset sha256 d0, but /d/new now holds d1; the dataset was "
        "regenerated or edited: use the original dataset or another --out")
    assert message(IntegrityError, runs._check_data, {"data_sha256": "d1", "split_sha256": "s0"}, cfg, where) == (
        f"{where} was made from data with split sha256 s0, but /d/new now holds s1; the dataset was "
        "regenerated or edited: use the original dataset or another --out")
    # the dataset hash is checked first
    assert "dataset sha256 d0" in message(IntegrityError, runs._check_data, {"data_sha256": "d0", "split_sha256": "s0"},
                                          cfg, where)
    # equal hashes, or a hash missing on either side (older runs), pass
    runs._check_data({"data_sha256": "d1", "split_sha256": "s1"}, cfg, where)
    runs._check_data({}, cfg, where)
    runs._check_data({"data_sha256": "d0", "split_sha256": "s0"}, {"data": "/d/new"}, where)
    runs._check_data({"data_sha256": None, "split_sha256": None}, cfg, where)


# ----------------------------------------------------------------------------- finished runs and resumes


def finished_run(out: Path, config: dict | None, steps: int, data_sha256: str | None, weights: bytes = b"weights-1",
                 recorded_weights: bytes | None = None) -> Path:
    """A finished run's two files, written by hand: ``model.pt`` bytes and ``train.json``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.pt").write_bytes(weights)
    info = {"steps": steps, "data_sha256": data_sha256, "model_sha256": sha(recorded_weights or weights)}
    if config is not None:
        info["config"] = config
    (out / "train.json").write_text(json.dumps(info))
    return out


CFG = {"data": "/d/data", "objective": "infonce", "lr": 0.1, "epochs": 2, "steps": None, "data_sha256": "d1",
       "split_sha256": "s1"}


def test_check_finished_run_ignores_an_unfinished_folder(tmp_path):
    runs.check_finished_run(tmp_path / "absent", CFG, 10)
    only_json = tmp_path / "a"
    only_json.mkdir()
    (only_json / "train.json").write_text("{truncated")
    runs.check_finished_run(only_json, CFG, 10)
    only_model = tmp_path / "b"
    only_model.mkdir()
    (only_model / "model.pt").write_bytes(b"w")
    runs.check_finished_run(only_model, CFG, 10)


def test_check_finished_run_same_budget_or_other_config_passes(tmp_path):
    out = finished_run(tmp_path / "r", dict(CFG), 10, "d1")
    assert runs.check_finished_run(out, dict(CFG), 10) is None
    runs.check_finished_run(out, {**CFG, "lr": 0.2}, 20)  # another configuration: not this run's model
    runs.check_finished_run(out, {**CFG, "data": "/moved/data"}, 10)
    bare = finished_run(tmp_path / "bare", None, 10, None)  # no config recorded: nothing to compare
    runs.check_finished_run(bare, dict(CFG), 20)


def test_check_finished_run_refuses_a_new_budget_naming_it(tmp_path):
    out = finished_run(tmp_path / "r", dict(CFG), 10, "d1")
    assert message(TrainError, runs.check_finished_run, out, {**CFG, "epochs": 4}, 20) == (
        f"{out} holds a finished run of 10 steps; --epochs 4 (20 steps) would replace the model its results "
        "describe; train into another --out, or delete model.pt and train.json there to continue it from its "
        "checkpoint")
    assert message(TrainError, runs.check_finished_run, out, {**CFG, "steps": 6}, 6).startswith(
        f"{out} holds a finished run of 10 steps; --steps 6 (6 steps) would replace")


def test_check_finished_run_refuses_other_data_and_changed_weights(tmp_path):
    # the dataset hash of a finished run is the top-level one of train.json
    out = finished_run(tmp_path / "r", dict(CFG), 10, "d0")
    assert message(IntegrityError, runs.check_finished_run, out, dict(CFG), 10) == (
        f"{out / 'train.json'} was made from data with dataset sha256 d0, but /d/data now holds d1; the dataset "
        "was regenerated or edited: use the original dataset or another --out")
    # the split hash is the one of its config
    out = finished_run(tmp_path / "s", {**CFG, "split_sha256": "s0"}, 10, "d1")
    assert "with split sha256 s0, but /d/data now holds s1" in message(IntegrityError, runs.check_finished_run, out,
                                                                       dict(CFG), 10)
    out = finished_run(tmp_path / "w", dict(CFG), 10, "d1", weights=b"weights-2", recorded_weights=b"weights-1")
    assert message(IntegrityError, runs.check_finished_run, out, dict(CFG), 10).startswith(
        f"{out / 'model.pt'} has sha256 {sha(b'weights-2')}, but {out / 'train.json'} records {sha(b'weights-1')}")


def test_check_resume_refuses_a_smaller_budget_and_other_data(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    state = {"step": 12, "config": {"data_sha256": "d1", "split_sha256": "s1"}}
    assert message(CheckpointError, runs.check_resume, ckpt, state, {**CFG, "steps": 10}, 10) == (
        f"{ckpt} has trained 12 steps, more than --steps 10 (10 steps); a smaller budget cannot be resumed: "
        "use another --out or delete the checkpoint")
    assert message(CheckpointError, runs.check_resume, ckpt, state, {**CFG, "epochs": 1}, 5) == (
        f"{ckpt} has trained 12 steps, more than --epochs 1 (5 steps); a smaller budget cannot be resumed: "
        "use another --out or delete the checkpoint")
    no_steps = {k: v for k, v in CFG.items() if k != "steps"}
    assert "more than --epochs 2 (5 steps)" in message(CheckpointError, runs.check_resume, ckpt, state, no_steps, 5)
    runs.check_resume(ckpt, state, dict(CFG), 12)  # the same budget continues (nothing left to do)
    runs.check_resume(ckpt, state, dict(CFG), 13)
    runs.check_resume(ckpt, {}, dict(CFG), 0)  # no step recorded: 0
    other = {"step": 1, "config": {"data_sha256": "d0"}}
    assert message(IntegrityError, runs.check_resume, ckpt, other, dict(CFG), 10).startswith(
        f"{ckpt} was made from data with dataset sha256 d0, but /d/data now holds d1")


# ----------------------------------------------------------------------------- relocatable paths


def test_portable_config_stores_data_relative_and_out_as_dot(tmp_path):
    cfg = {"data": str(tmp_path / "sets" / "data"), "out": str(tmp_path / "runs" / "r1"), "lr": 0.1}
    assert runs.portable_config(cfg, tmp_path / "runs" / "r1") == {"data": "../../sets/data", "out": ".", "lr": 0.1}
    assert cfg["data"] == str(tmp_path / "sets" / "data") and cfg["out"] == str(tmp_path / "runs" / "r1")
    # no data (or None) and no out stay as they are
    assert runs.portable_config({"data": None, "lr": 0.1}, tmp_path) == {"data": None, "lr": 0.1}
    assert runs.portable_config({"lr": 0.1}, tmp_path) == {"lr": 0.1}


def test_resolve_data_reads_relative_paths_from_the_run_and_keeps_absolute_ones(tmp_path):
    run = tmp_path / "runs" / "r1"
    assert runs.resolve_data({"data": "../../sets/data"}, run) == (tmp_path / "sets" / "data").resolve()
    assert runs.resolve_data({"data": "/abs/data"}, run) == Path("/abs/data")


# ----------------------------------------------------------------------------- the run folder


def test_run_writer_validates_before_it_locks(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(TrainError, match="--batch-size 1 must be an integer >= 2"), \
            runs.run_writer({"out": str(out), "batch_size": 1}):
        pass
    assert not out.exists()
    with runs.run_writer({"out": str(out), "batch_size": 2}, is_main=False) as lock:
        assert lock is None and not out.exists()  # other ranks hold no lock


def test_run_writer_holds_the_folder_lock_naming_its_holder(tmp_path):
    out = tmp_path / "r"
    with runs.run_writer({"out": str(out)}) as lock:
        assert isinstance(lock, FolderLock) and lock.folder == out
        assert (out / ".lock").read_text() == f"pid {os.getpid()} on host {socket.gethostname()}\n"
        with pytest.raises(LockedError, match=f"held by pid {os.getpid()} on host"):
            FolderLock(out).acquire()
        (out / "model.pt").write_bytes(b"w")
    with FolderLock(out):  # released at the end of the block
        pass


def test_read_train_json_refuses_truncated_and_undecodable_files(tmp_path):
    (tmp_path / "train.json").write_text('{"steps": 3}')
    assert runs.read_train_json(tmp_path) == {"steps": 3}
    (tmp_path / "train.json").write_text('{"steps": ')
    with pytest.raises(json.JSONDecodeError) as raw:
        json.loads('{"steps": ')
    assert message(IntegrityError, runs.read_train_json, tmp_path) == (
        f"{tmp_path / 'train.json'} is not valid JSON (truncated or corrupted?): {raw.value}")
    (tmp_path / "train.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(UnicodeDecodeError) as raw:
        b'{"a": "\xff"}'.decode("utf-8")
    assert message(IntegrityError, runs.read_train_json, tmp_path) == (
        f"{tmp_path / 'train.json'} is not valid JSON (truncated or corrupted?): {raw.value}")


def test_verify_weights_returns_the_hash_and_refuses_a_mismatch(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights-1")
    digest = sha(b"weights-1")
    assert runs.verify_weights(tmp_path, None) == digest
    assert runs.verify_weights(tmp_path, {"steps": 3}) == digest
    assert runs.verify_weights(tmp_path, {"model_sha256": digest}) == digest
    assert message(IntegrityError, runs.verify_weights, tmp_path, {"model_sha256": sha(b"weights-0")}) == (
        f"{tmp_path / 'model.pt'} has sha256 {digest}, but {tmp_path / 'train.json'} records {sha(b'weights-0')}: "
        "the weights changed after training (corrupted or replaced); delete model.pt and train.json and rerun train")
    # bytes already read are hashed instead of the file
    (tmp_path / "model.pt").unlink()
    assert runs.verify_weights(tmp_path, {"model_sha256": sha(b"other")}, b"other") == sha(b"other")
    with pytest.raises(IntegrityError, match="the weights changed after training"):
        runs.verify_weights(tmp_path, {"model_sha256": digest}, b"other")


def test_write_run_writes_weights_then_a_record_of_them(tmp_path):
    out = tmp_path / "runs" / "r"
    cfg = {"data": str(tmp_path / "data"), "out": str(out), "lr": 0.1, "split_sha256": "s1", "data_sha256": "d1"}
    weights = {"model": {"w": torch.arange(4.0)}, "config": cfg, "in_dims": [3, 2]}
    result = {"config": cfg, "steps": 5, "data_sha256": "d1"}
    written = runs.write_run(out, weights, result, device="test-device")
    raw = (out / "model.pt").read_bytes()
    saved = torch.load(io.BytesIO(raw), weights_only=True)
    portable = {"data": "../../data", "out": ".", "lr": 0.1, "split_sha256": "s1", "data_sha256": "d1"}
    assert saved["config"] == portable and saved["in_dims"] == [3, 2]
    assert torch.equal(saved["model"]["w"], torch.arange(4.0))
    info = json.loads((out / "train.json").read_text())
    assert info == written
    assert info["config"] == portable and info["steps"] == 5 and info["data_sha256"] == "d1"
    assert info["model_sha256"] == sha(raw) and info["split_sha256"] == "s1"
    assert info["provenance"]["device"] == "test-device"
    assert set(info["provenance"]) == set(provenance("cpu"))
    assert sorted(info) == ["config", "data_sha256", "model_sha256", "provenance", "split_sha256", "steps"]
    # the caller's dicts are left as they were
    assert cfg["data"] == str(tmp_path / "data") and "model_sha256" not in result and weights["config"] is cfg
    # weights without a config are written as they are; a config without a split hash records None
    info = runs.write_run(out, {"model": {}}, {"config": {"lr": 0.1}})
    assert torch.load(out / "model.pt", weights_only=True) == {"model": {}}
    assert info["split_sha256"] is None and info["config"] == {"lr": 0.1}


def test_run_meta_names_the_hashes_and_provenance():
    meta = runs.run_meta({"model_sha256": "m", "data_sha256": "d", "split_sha256": "s", "lr": 0.1})
    assert {k: meta[k] for k in ("meta/model_sha256", "meta/data_sha256", "meta/split_sha256")} == {
        "meta/model_sha256": "m", "meta/data_sha256": "d", "meta/split_sha256": "s"}
    assert set(meta) == {"meta/model_sha256", "meta/data_sha256", "meta/split_sha256"} | {
        f"meta/provenance/{k}" for k in provenance("cpu")}
    assert meta["meta/provenance/torch_version"] == torch.__version__
    empty = runs.run_meta({})
    assert empty["meta/model_sha256"] is None and empty["meta/data_sha256"] is None
    assert empty["meta/split_sha256"] is None


# ----------------------------------------------------------------------------- dataset checks


def test_check_dataset_for_run_modalities():
    ds = toy_dataset()
    for m in (1, 4):
        assert message(TrainError, runs.check_dataset_for_run, ds, m, 2) == (
            f"--n-modalities {m} is not possible: the dataset toy has 3 modalities (a, b, c); M must be in 2..3")
    runs.check_dataset_for_run(ds, 2, 2)
    runs.check_dataset_for_run(ds, 3, 2)


def test_check_dataset_for_run_split_sizes():
    assert message(TrainError, runs.check_dataset_for_run, toy_dataset((6, 1, 2)), 2, 2) == (
        "the dataset toy has split sizes {'train': 6, 'val': 1, 'test': 2}: val need at least 2 rows; "
        "rebuild it with more samples")
    assert message(TrainError, runs.check_dataset_for_run, toy_dataset((1, 2, 0)), 2, 2) == (
        "the dataset toy has split sizes {'train': 1, 'val': 2, 'test': 0}: train, test need at least 2 rows; "
        "rebuild it with more samples")
    runs.check_dataset_for_run(toy_dataset((2, 2, 2)), 2, 2)


def test_check_dataset_for_run_anchor():
    ds = toy_dataset()
    for anchor, m in ((3, 3), (2, 2), (-1, 3)):
        assert message(TrainError, runs.check_dataset_for_run, ds, m, 2, 1, {"anchor": anchor}) == (
            f"--param anchor={anchor} is out of range: M = {m} modalities are 0..{m - 1}")
    for params in ({"anchor": 0}, {"anchor": 2}, {"anchor": True}, {"anchor": "5"}, {"lam": 1}, {}, None):
        runs.check_dataset_for_run(ds, 3, 2, 1, params)


def test_check_dataset_for_run_batch_size_and_ranks():
    ds = toy_dataset((6, 2, 2))
    assert message(TrainError, runs.check_dataset_for_run, ds, 3, 7) == (
        "--batch-size 7 is larger than the 6 training rows of the dataset (toy); use a batch size <= 6")
    assert message(TrainError, runs.check_dataset_for_run, ds, 3, 1) == "--batch-size 1 must be at least 2"
    assert message(TrainError, runs.check_dataset_for_run, ds, 3, 6, 4) == (
        "--batch-size 6 must be divisible by the 4 ranks")
    runs.check_dataset_for_run(ds, 3, 6)
    runs.check_dataset_for_run(ds, 3, 3)  # one rank by default: any batch size divides
    runs.check_dataset_for_run(ds, 3, 6, 3)


# ----------------------------------------------------------------------------- loading a run


def record_weights_hash(run: Path) -> None:
    """Record the current ``model.pt``'s sha256 in ``train.json`` (as train does), so it is read."""
    info = json.loads((run / "train.json").read_text()) if (run / "train.json").exists() else {}
    info["model_sha256"] = sha((run / "model.pt").read_bytes())
    (run / "train.json").write_text(json.dumps(info))


def write_run_by_hand(run: Path, data: Path, *, objective="infonce", params=None, seed=3, head=None, dim=4,
                      hidden=8, depth=1, n_modalities=3, record=True, hashes=("data", "split"),
                      record_data_sha256=True, extra=None) -> dict:
    """A finished run written without :mod:`runs`: ``model.pt`` (config with the dataset path relative
    to the run) and, with ``record``, ``train.json`` (hashes of the weights and the data).

    The encoder is untrained (seeded by ``seed``); a learnable temperature is set to 0.3 so that
    loading the objective's state is visible. Returns what was saved (absolute paths)."""
    params = {"temperature": 0.5, "learnable_temperature": True} if params is None else params
    ds = hd.load_dataset(data)
    torch.manual_seed(seed)
    model = MultiEncoder(ds.dims[:n_modalities], dim, hidden, depth, head=head or "linear")
    loss_fn = objectives.build(objective, **params)
    if params.get("learnable_temperature"):
        with torch.no_grad():
            loss_fn.temperature.log_scale.fill_(math.log(1 / 0.3))
    cfg = {"data": str(data), "out": str(run), "objective": objective, "params": params,
           "n_modalities": n_modalities, "seed": seed, "dim": dim, "hidden": hidden, "depth": depth,
           "epochs": 1, "steps": None, **(extra or {})}
    if head is not None:
        cfg["head"] = head
    if "data" in hashes:
        cfg["data_sha256"] = ds.meta["sha256"]
    if "split" in hashes:
        cfg["split_sha256"] = ds.split_sha256
    stored = {**cfg, "data": os.path.relpath(Path(data).resolve(), Path(run).resolve()), "out": "."}
    run.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "objective": loss_fn.state_dict(), "config": stored,
                "in_dims": ds.dims[:n_modalities]}, buf)
    (run / "model.pt").write_bytes(buf.getvalue())
    if record:
        info = {"config": stored, "steps": 5, "model_sha256": sha(buf.getvalue())}
        if record_data_sha256:
            info["data_sha256"] = ds.meta["sha256"]
        (run / "train.json").write_text(json.dumps(info))
    return {"config": cfg, "model": model.state_dict(), "objective": loss_fn.state_dict(), "bytes": buf.getvalue()}


def test_load_run_returns_the_verified_run(tiny_data, tmp_path):
    run = tmp_path / "runs" / "r"
    saved = write_run_by_hand(run, tiny_data, head="layernorm")
    cfg, model, loss_fn, ds = runs.load_run(run)
    meta = json.loads((tiny_data / "dataset.json").read_text())
    assert cfg == {**saved["config"], "data": str(tiny_data.resolve()), "out": ".", "model_sha256": sha(saved["bytes"])}
    assert cfg["data_sha256"] == meta["sha256"] and cfg["split_sha256"] == meta["split_sha256"]
    assert isinstance(model, MultiEncoder) and not model.training and model.head == "layernorm"
    assert model.in_dims == [12, 8, 6] and model.dim == 4
    state = model.state_dict()
    assert state.keys() == saved["model"].keys()
    assert all(torch.equal(state[k], saved["model"][k]) for k in state)
    assert type(loss_fn) is objectives.InfoNCE and loss_fn.temperature.value() == pytest.approx(0.3)
    assert ds.n == 300 and ds.meta["sha256"] == meta["sha256"]


def test_load_run_fills_hashes_from_the_record_and_the_dataset(tiny_data, tmp_path):
    # an older run: no hashes in the stored config; train.json has the dataset's, the split comes from the data
    run = tmp_path / "r"
    write_run_by_hand(run, tiny_data, hashes=(), head=None)
    cfg, model, _, ds = runs.load_run(run)
    assert cfg["data_sha256"] == ds.meta["sha256"] and cfg["split_sha256"] == ds.split_sha256
    assert model.head == "linear"  # no head recorded: the linear head
    assert cfg["model_sha256"] == sha((run / "model.pt").read_bytes())
    # no train.json: nothing vouches for the weights, so they are not read at all
    (run / "train.json").unlink()
    assert message(IntegrityError, runs.load_run, run, device="cpu") == (
        f"{run / 'model.pt'} has no recorded sha256 ({run / 'train.json'} is missing or lacks model_sha256), so it "
        f"is not loaded; retrain with `python -m harness train --out {run} ...`, or restore the run's train.json")


def test_load_run_refuses_other_data_naming_both_hashes(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    run = tmp_path / "run"
    write_run_by_hand(run, data)
    old = json.loads((data / "dataset.json").read_text())
    hd.build_synthetic(data, hd.SyntheticConfig(n_modalities=3, n_samples=300, n_classes=5, latent_dim=4,
                                                dims=[12, 8, 6], seed=1))
    new = json.loads((data / "dataset.json").read_text())
    assert message(IntegrityError, runs.load_run, run) == (
        f"{run} was made from data with dataset sha256 {old['sha256']}, but {data.resolve()} now holds "
        f"{new['sha256']}; the dataset was regenerated or edited: use the original dataset or another --out")
    # with the dataset hash recorded only in train.json it is still checked
    write_run_by_hand(run, data, hashes=("split",), record_data_sha256=False)
    json_only = json.loads((run / "train.json").read_text())
    json_only["data_sha256"] = old["sha256"]
    (run / "train.json").write_text(json.dumps(json_only))
    assert f"dataset sha256 {old['sha256']}" in message(IntegrityError, runs.load_run, run)
    # the split hash of the stored config is checked against the dataset's
    write_run_by_hand(run, data, hashes=("data",), extra={"split_sha256": "0" * 64})
    assert f"split sha256 {'0' * 64}, but {data.resolve()} now holds {new['split_sha256']}" in message(
        IntegrityError, runs.load_run, run)


def test_load_run_errors_name_the_file(tiny_data, tmp_path):
    run = tmp_path / "run"
    assert message(TrainError, runs.load_run, run) == (
        f"{run / 'model.pt'} does not exist; train first with `python -m harness train --out {run}`")
    saved = write_run_by_hand(run, tiny_data)
    (run / "model.pt").write_bytes(saved["bytes"][:-1] + bytes([saved["bytes"][-1] ^ 1]))
    assert "the weights changed after training" in message(IntegrityError, runs.load_run, str(run))
    (run / "model.pt").write_bytes(b"not a model")
    record_weights_hash(run)
    assert message(TrainError, runs.load_run, run) == (
        f"{run / 'model.pt'} is unreadable (truncated, corrupted or not a weights file): "
        f"{first_line_of_torch_error(b'not a model')}")
    # a weights file that lacks a key, or whose stored config does
    for drop, where in (("in_dims", run / "model.pt"), ("hidden", f"the config stored in {run / 'model.pt'}")):
        write_run_by_hand(run, tiny_data)
        state = torch.load(run / "model.pt", weights_only=True)
        (state["config"] if drop == "hidden" else state).pop(drop)
        torch.save(state, run / "model.pt")
        record_weights_hash(run)
        assert message(TrainError, runs.load_run, run) == (
            f"{where} lacks the key(s) {drop!r} (written by another version, or edited); delete it and rerun train")
    # an interrupted run: the message says that the same train command resumes it
    (run / "model.pt").unlink()
    (run / "checkpoint.pt").write_bytes(b"")
    assert message(TrainError, runs.load_run, run) == (
        f"{run / 'model.pt'} does not exist but {run / 'checkpoint.pt'} does: training was interrupted; "
        "rerun the same `python -m harness train` command to resume it")
    (run / "checkpoint.pt").unlink()
    missing = tmp_path / "gone"
    write_run_by_hand(run, tiny_data)
    state = torch.load(run / "model.pt", weights_only=True)
    state["config"]["data"] = "../gone"
    torch.save(state, run / "model.pt")
    record_weights_hash(run)
    assert message(TrainError, runs.load_run, run) == (
        f"the dataset of run {run} cannot be loaded: {missing / 'dataset.json'} does not exist; create the "
        f"dataset with `python -m harness data --out {missing}`")


def test_load_run_verifies_the_bytes_it_loads(tiny_data, tmp_path, monkeypatch):
    # model.pt is read once: the bytes hashed are the bytes loaded, even if the file changes meanwhile
    run = tmp_path / "run"
    saved = write_run_by_hand(run, tiny_data)
    real, reads = Path.read_bytes, []

    def read_bytes(self):
        data = real(self)
        if self.name == "model.pt":
            reads.append(self)
            if len(reads) > 1:
                return data[:-1] + bytes([data[-1] ^ 1])
        return data

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    cfg, _, _, _ = runs.load_run(run)
    assert len(reads) == 1 and cfg["model_sha256"] == sha(saved["bytes"])


def test_a_written_run_moves_with_its_dataset(tiny_data, tmp_path):
    base = tmp_path / "a"
    shutil.copytree(tiny_data, base / "data")
    saved = write_run_by_hand(base / "run", base / "data")
    # rewrite it through write_run, as train does
    (base / "run" / "train.json").unlink()
    weights = {"model": saved["model"], "objective": saved["objective"], "config": saved["config"],
               "in_dims": [12, 8, 6]}
    info = runs.write_run(base / "run", weights, {"config": saved["config"], "steps": 5,
                                                  "data_sha256": saved["config"]["data_sha256"]})
    assert info["config"]["data"] == "../data"
    moved = tmp_path / "elsewhere" / "b"
    moved.parent.mkdir()
    shutil.move(str(base), str(moved))
    cfg, model, _, _ = runs.load_run(moved / "run")
    assert cfg["data"] == str((moved / "data").resolve()) and cfg["model_sha256"] == info["model_sha256"]
    assert all(torch.equal(model.state_dict()[k], saved["model"][k]) for k in saved["model"])


def test_embed_split_standardises_with_training_statistics(tiny_data):
    ds = hd.load_dataset(tiny_data)
    torch.manual_seed(0)
    model = MultiEncoder(ds.dims, 4, 8, 1)
    rows = ds.split("val")[:7]
    zs = runs.embed_split(model, ds, rows, 2)
    assert len(zs) == 2
    for m in range(2):
        x = (ds.views[m][rows] - ds.means[m]) / ds.stds[m]
        with torch.no_grad():
            expected = model.encoders[m](torch.from_numpy(x.astype(np.float32)))
        assert zs[m].shape == (7, 4) and torch.allclose(zs[m], expected, atol=1e-6)
