"""A file planted in a run folder cannot run code: every path that reads weights or checkpoints.

The planted object pickles to "call ``open(marker, 'w')``"; torch's full unpickler would run that
call (checked below, so the plant is known to work), the weights_only unpickler refuses it. Each
loading path -- ``train`` resuming from ``checkpoint.pt``, ``evaluate``, ``generate`` and the
``projection_pca`` figure reading ``model.pt`` -- must fail with a one-line error and leave no marker.
The attacker is assumed to be able to rewrite ``train.json`` and the checkpoint header too, so the
hashes are made to match the planted bytes.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from harness.cli import main as cli_main
from harness.experiment import data as hd
from harness.experiment.runs import CHECKPOINT_MAGIC
from harness.files import sha256_bytes


class Plant:
    """Unpickling this calls open(path, "w"): a file appears if the loader runs code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def planted_bytes(marker: Path, wrap=None) -> bytes:
    obj = Plant(marker) if wrap is None else wrap(Plant(marker))
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def cli(argv) -> int:
    try:
        return cli_main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code)


TRAIN = ["--objective", "infonce", "--n-modalities", "3", "--batch-size", "16", "--dim", "4", "--hidden", "8",
         "--depth", "1", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("trained")
    hd.build_synthetic(base / "data", hd.SyntheticConfig(n_modalities=3, n_samples=120, n_classes=4,
                                                         latent_dim=4, dims=[8, 6, 5], seed=0))
    assert cli(["train", "--data", base / "data", "--out", base / "run", "--epochs", 1, *TRAIN]) == 0
    return base


@pytest.fixture
def work(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "w")
    return tmp_path / "w"


def test_the_plant_runs_code_under_the_full_unpickler(tmp_path):
    # the control: without weights_only the planted bytes do create the file
    marker = tmp_path / "pwned"
    torch.load(io.BytesIO(planted_bytes(marker)), weights_only=False)
    assert marker.exists()


def plant_model(run: Path, marker: Path, *, record_hash: bool) -> None:
    """Replace model.pt by a planted pickle (inside a dict shaped like real weights)."""
    payload = planted_bytes(marker, wrap=lambda p: {"model": p, "objective": {}, "config": {}, "in_dims": []})
    (run / "model.pt").write_bytes(payload)
    info = json.loads((run / "train.json").read_text())
    if record_hash:
        info["model_sha256"] = sha256_bytes(payload)
    else:
        info.pop("model_sha256")
    (run / "train.json").write_text(json.dumps(info))


@pytest.mark.parametrize("record_hash", [True, False], ids=["hash-forged", "no-hash"])
@pytest.mark.parametrize("command", ["evaluate", "generate", "figures"])
def test_planted_weights_run_no_code(work, tmp_path, capsys, command, record_hash):
    marker = tmp_path / "pwned"
    plant_model(work / "run", marker, record_hash=record_hash)
    argv = {
        "evaluate": ["evaluate", "--run", work / "run", "--out", tmp_path / "metrics.json"],
        "generate": ["generate", "--run", work / "run", "--out", tmp_path / "gen", "--decoder-epochs", 1],
        "figures": ["figures", "--only", "projection_pca", "--projection", f"infonce={work / 'run'}",
                    "--out-dir", tmp_path / "fig"],
    }[command]
    capsys.readouterr()
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert not marker.exists()
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    if record_hash:
        assert "is unreadable (truncated, corrupted or not a weights file): UnpicklingError: Weights only load " \
               "failed" in err
    else:
        assert "has no recorded sha256" in err and "so it is not loaded" in err


def test_a_planted_checkpoint_runs_no_code_on_resume(work, tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = work / "run"
    (run / "model.pt").unlink()  # an interrupted run: train resumes from checkpoint.pt
    (run / "train.json").unlink()
    payload = planted_bytes(marker, wrap=lambda p: {"config": p})
    # a forged header whose hash matches: the payload is still read with weights_only
    (run / "checkpoint.pt").write_bytes(CHECKPOINT_MAGIC + sha256_bytes(payload).encode() + b"\n" + payload)
    argv = ["train", "--data", work / "data", "--out", run, "--epochs", 2, *TRAIN]
    capsys.readouterr()
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert not marker.exists()
    assert "holds an unreadable payload (UnpicklingError: Weights only load failed" in err
    assert "delete it to restart the run from scratch" in err
    # a planted file in the older layout (a pickle holding the payload) is not unpickled at all
    (run / "checkpoint.pt").write_bytes(payload)
    assert cli(argv) == 1
    assert not marker.exists()
    assert "is not a harness-checkpoint-v2 file" in capsys.readouterr().err
