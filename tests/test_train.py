"""Training: outputs, determinism, argument errors, resume after SIGKILL, corrupted checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.cli import main as cli_main
from harness.experiment.runs import CheckpointError, load_checkpoint, parse_params, save_checkpoint

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def train_args(data, out, **kw):
    args = {"--data": data, "--objective": "infonce", "--n-modalities": 3, "--seed": 0, "--epochs": 2,
            "--batch-size": 32, "--dim": 8, "--hidden": 16, "--depth": 1, "--lr": 3e-3,
            "--weight-decay": 1e-4, "--out": out}
    args.update(kw)
    argv = ["train", "--quiet"]
    for k, v in args.items():
        if v is None:  # a flag left out
            continue
        if isinstance(v, list):
            for item in v:
                argv += [k, str(item)]
        else:
            argv += [k, str(v)]
    return argv


def test_parse_params_uses_yaml():
    p = parse_params(["bandwidth=median", "lam_vol=0.1", "tuple=both", "learnable_temperature=true",
                      "anchor=0", "xs=[1, 2]"])
    assert p == {"bandwidth": "median", "lam_vol": 0.1, "tuple": "both", "learnable_temperature": True,
                 "anchor": 0, "xs": [1, 2]}


def test_train_outputs_and_determinism(tiny_data, tmp_path):
    for name in ("a", "b"):
        assert cli_main(train_args(tiny_data, tmp_path / name, **{"--param": ["temperature=0.1"]})) == 0
    a, b = tmp_path / "a", tmp_path / "b"
    for f in ("history.csv", "steps.csv", "checkpoint.pt", "model.pt", "train.json"):
        assert (a / f).exists(), f
    assert (a / "history.csv").read_text() == (b / "history.csv").read_text()
    import pandas as pd

    h = pd.read_csv(a / "history.csv")
    # 2 epochs of 210 // 32 = 6 steps; default cadence ceil(12 / 10) = 2 steps
    assert h["step"].tolist() == [2, 4, 6, 8, 10, 12]
    assert h["epoch"].tolist() == pytest.approx([s / 6 for s in (2, 4, 6, 8, 10, 12)], abs=1e-6)
    assert {"loss", "val/R1_mean"} <= set(h.columns)
    assert any(c.startswith("term/") for c in h.columns)
    info = json.loads((a / "train.json").read_text())
    assert info["config"]["params"] == {"temperature": 0.1} and info["steps"] == 12
    assert info["data_sha256"] == json.loads((tiny_data / "dataset.json").read_text())["sha256"]
    assert info["samples_per_second"] > 0 and info["final"]["loss"] == pytest.approx(h["loss"].iloc[-1])
    # running the same command again is a no-op
    mtime = (a / "model.pt").stat().st_mtime_ns
    assert cli_main(train_args(tiny_data, a, **{"--param": ["temperature=0.1"]})) == 0
    assert (a / "model.pt").stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "extra, pattern",
    [
        ({"--objective": "nope"}, r"unknown objective 'nope'; available: .*infonce"),
        ({"--n-modalities": 5}, r"--n-modalities 5 is not possible: .* has 3 modalities"),
        ({"--n-modalities": 1}, r"--n-modalities 1 is not possible"),
        ({"--batch-size": 1000}, r"--batch-size 1000 is larger than the 210 training rows"),
        ({"--param": ["temperature=-1"]}, r"objective 'infonce' rejected its parameters"),
        ({"--param": ["oops"]}, r"must look like key=value"),
    ],
)
def test_train_argument_errors(tiny_data, tmp_path, capsys, extra, pattern):
    assert cli_main(train_args(tiny_data, tmp_path / "r", **extra)) == 1
    import re

    assert re.search(pattern, capsys.readouterr().err)


def test_config_change_against_checkpoint_is_refused(tiny_data, tmp_path, capsys):
    assert cli_main(train_args(tiny_data, tmp_path / "r", **{"--epochs": 1})) == 0
    assert cli_main(train_args(tiny_data, tmp_path / "r", **{"--epochs": 2, "--lr": 0.1})) == 1
    assert "differs in: lr" in capsys.readouterr().err
    # a new budget over the finished run is refused (it would replace the model its results describe);
    # with model.pt and train.json removed, more epochs continue from the checkpoint
    assert cli_main(train_args(tiny_data, tmp_path / "r", **{"--epochs": 2})) == 1
    assert "would replace the model" in capsys.readouterr().err
    for name in ("model.pt", "train.json"):
        (tmp_path / "r" / name).unlink()
    assert cli_main(train_args(tiny_data, tmp_path / "r", **{"--epochs": 2})) == 0
    assert json.loads((tmp_path / "r" / "train.json").read_text())["resumed_from_epoch"] == 1


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_checkpoint_is_detected(tiny_data, tmp_path, capsys, damage):
    run = tmp_path / "r"
    assert cli_main(train_args(tiny_data, run, **{"--epochs": 1})) == 0
    for name in ("model.pt", "train.json"):  # an unfinished run: only its checkpoint
        (run / name).unlink()
    path = run / "checkpoint.pt"
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) - 100]
    else:
        raw[len(raw) // 2] ^= 0x55
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"checkpoint .* (unreadable|corrupted)"):
        load_checkpoint(path)
    assert cli_main(train_args(tiny_data, run, **{"--epochs": 2})) == 1
    assert "delete it to restart" in capsys.readouterr().err


def test_checkpoint_roundtrip_and_payload_hash(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"x": torch.arange(3)})
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["x"], torch.arange(3))
    raw = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # a bit of the payload flips
    with pytest.raises(CheckpointError, match="payload sha256"):
        load_checkpoint(tmp_path / "c.pt")


def _final_state(run: Path) -> tuple[str, dict, dict]:
    saved = torch.load(run / "model.pt", weights_only=True)
    info = json.loads((run / "train.json").read_text())
    final = {k: info[k] for k in ("final", "selected_step", "selected", "still_improving")}
    return (run / "history.csv").read_text(), {**saved["model"], **saved["objective"]}, final


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {"--select": "best_val", "--weight-decay-groups": "clip",
                                       "--head": "layernorm", "--param": ["temperature=0.2",
                                                                          "learnable_temperature=true"]}])
def test_resume_after_sigkill_gives_identical_results(tiny_data, tmp_path, extra):
    total = 104  # 8 epochs of 13 steps; checkpoints every 10 steps land inside epochs
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "harness"] + train_args(
        tiny_data, tmp_path / "killed", **{"--epochs": None, "--steps": total, "--batch-size": 16,
                                           "--eval-every-steps": 10, **extra})
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 90
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), proc.stderr.read().decode()
    assert not (tmp_path / "killed" / "train.json").exists(), "the run finished before it could be killed"
    killed_at = load_checkpoint(ckpt)["step"]
    assert 10 <= killed_at < total
    rc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    assert json.loads((tmp_path / "killed" / "train.json").read_text())["resumed_from_step"] >= killed_at
    # uninterrupted reference, same command in a fresh folder
    ref = [a if a != str(tmp_path / "killed") else str(tmp_path / "ref") for a in argv]
    rc = subprocess.run(ref, cwd=ROOT, env=env, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    hist_k, model_k, final_k = _final_state(tmp_path / "killed")
    hist_r, model_r, final_r = _final_state(tmp_path / "ref")
    assert hist_k == hist_r
    assert final_k == final_r
    for k in model_r:
        assert torch.equal(model_k[k], model_r[k]), k
