"""Run integrity under swapped data, flipped weights, budget changes, a second writer, SIGTERM, a move.

Each test works on a copy of one tiny trained run (``base/run``) with its dataset beside it
(``base/data``); the run stores the dataset path relative to itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cli import main as cli_main
from harness.experiment import data as hd
from harness.experiment.runs import IntegrityError, load_checkpoint, load_run
from harness.files import FolderLock, sha256_file
from harness.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]


def data_cfg(seed: int) -> hd.SyntheticConfig:
    return hd.SyntheticConfig(n_modalities=3, n_samples=120, n_classes=4, latent_dim=4, dims=[8, 6, 5], seed=seed)


def train_argv(base: Path, epochs: int = 1, **kw) -> list[str]:
    args = {"--data": base / "data", "--objective": "infonce", "--n-modalities": 3, "--epochs": epochs,
            "--batch-size": 16, "--dim": 4, "--hidden": 8, "--depth": 1, "--out": base / "run"}
    args.update(kw)
    argv = ["train", "--quiet"]
    for k, v in args.items():
        argv += [k, str(v)]
    return argv


def cli(argv) -> int:
    try:
        return cli_main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        return int(exc.code)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("base")
    hd.build_synthetic(base / "data", data_cfg(0))
    assert cli(train_argv(base)) == 0
    return base


@pytest.fixture
def work(trained, tmp_path):
    dest = tmp_path / "w"
    shutil.copytree(trained, dest)
    return dest


def flip_bytes(path: Path, n: int = 64) -> None:
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    for i in range(n):
        raw[mid + i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_run_records_hashes_provenance_and_relative_paths(work):
    info = json.loads((work / "run" / "train.json").read_text())
    ds = hd.load_dataset(work / "data")
    assert info["config"]["data"] == "../data" and info["config"]["out"] == "."
    assert info["config"]["data_sha256"] == info["data_sha256"] == ds.meta["sha256"]
    assert info["split_sha256"] == ds.split_sha256 == ds.meta["split_sha256"]
    from harness.files import sha256_file

    assert info["model_sha256"] == sha256_file(work / "run" / "model.pt")
    for key in ("git_commit", "git_dirty", "torch_version", "numpy_version", "snakemake_version", "device",
                "threads", "date_utc"):
        assert key in info["provenance"], key
    assert info["provenance"]["torch_version"] == torch.__version__
    assert torch.load(work / "run" / "model.pt", weights_only=True)["config"]["data"] == "../data"
    assert load_checkpoint(work / "run" / "checkpoint.pt")["config"]["data"] == "../data"


def test_provenance_outside_git(monkeypatch):
    import harness.provenance as prov

    monkeypatch.setattr(prov, "_git", lambda *a: None)
    p = prov.provenance("cpu")
    assert p["git_commit"] is None and p["git_dirty"] is None and p["device"] == "cpu"
    assert provenance()["threads"] == torch.get_num_threads()


def test_data_swap_is_refused_by_evaluate_and_train(work, capsys):
    before = json.loads((work / "run" / "train.json").read_text())
    old = before["data_sha256"]
    hd.build_synthetic(work / "data", data_cfg(1))  # same folder, another seed: other split
    new = hd.load_dataset(work / "data").meta["sha256"]
    assert new != old
    assert cli(["evaluate", "--run", work / "run", "--out", work / "m.json"]) == 1
    err = capsys.readouterr().err
    assert old in err and new in err and str(work / "data") in err and err.count("\n") == 1
    assert not (work / "m.json").exists()
    # rerun and resume: both refused, train.json keeps its hash
    assert cli(train_argv(work)) == 1
    assert old in capsys.readouterr().err
    for name in ("model.pt", "train.json"):
        (work / "run" / name).unlink()
    assert cli(train_argv(work, epochs=2)) == 1
    assert "checkpoint.pt was made from data" in capsys.readouterr().err
    assert not (work / "run" / "train.json").exists()


def test_flipped_weights_are_refused(work, capsys):
    model = work / "run" / "model.pt"
    flip_bytes(model)
    assert cli(["evaluate", "--run", work / "run", "--out", work / "m.json"]) == 1
    err = capsys.readouterr().err
    recorded = json.loads((work / "run" / "train.json").read_text())["model_sha256"]
    assert recorded in err and str(model) in err and "changed after training" in err
    assert not (work / "m.json").exists()
    assert cli(["generate", "--run", work / "run", "--out", work / "gen", "--decoder-epochs", 1]) == 1
    assert "changed after training" in capsys.readouterr().err and not (work / "gen").exists()
    assert cli(train_argv(work)) == 1  # no "nothing to do" over damaged weights
    assert "changed after training" in capsys.readouterr().err


def test_smaller_budget_and_new_budget_of_a_finished_run_are_refused(work, capsys):
    run = work / "run"
    assert cli(train_argv(work, epochs=2)) == 1  # finished run of 1 epoch
    assert "would replace the model" in capsys.readouterr().err
    for name in ("model.pt", "train.json"):
        (run / name).unlink()
    assert cli(train_argv(work, epochs=2)) == 0  # unfinished: a larger budget continues it
    for name in ("model.pt", "train.json"):
        (run / name).unlink()
    ckpt = (run / "checkpoint.pt").read_bytes()
    assert cli(train_argv(work, epochs=1)) == 1
    assert "has trained 10 steps, more than --epochs 1 (5 steps)" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == ckpt and not (run / "model.pt").exists()


def test_second_writer_fails_at_once_naming_the_holder(work, capsys):
    run = work / "run"
    for name in ("model.pt", "train.json"):
        (run / name).unlink()
    with FolderLock(run):
        assert cli(train_argv(work, epochs=2)) == 1
        err = capsys.readouterr().err
        assert f"pid {os.getpid()} on host" in err and "being written by another process" in err
        assert not (run / "model.pt").exists()
    assert cli(train_argv(work, epochs=2)) == 0


def test_stale_tmp_files_are_removed_by_the_next_writer(work):
    stale = [work / "run" / ".model.pt.abc123.tmp", work / "run" / ".checkpoint.pt.x.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    assert cli(train_argv(work)) == 0  # nothing to do, but under the lock the leftovers go
    assert not any(p.exists() for p in stale)


def test_sigterm_during_a_write_removes_the_temporary_file(tmp_path):
    out = tmp_path / "d"
    code = (
        "import os, signal, sys\n"
        "real = os.fsync\n"
        "def fsync(fd):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    real(fd)\n"
        "os.fsync = fsync\n"
        "from harness.cli import main\n"
        f"sys.exit(main(['data', '--dataset', 'synthetic', '--n-samples', '60', '--n-classes', '2', '--out', {str(out)!r}]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + 15, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: interrupted by SIGTERM; partial files removed, rerun the command to resume"]
    assert list(out.iterdir()) == []  # no dataset.npz and no .dataset.npz.*.tmp


def test_moved_run_and_dataset_still_evaluate(work, tmp_path, capsys):
    moved = tmp_path / "elsewhere" / "sweep"
    moved.parent.mkdir()
    shutil.move(str(work), str(moved))
    assert cli(["evaluate", "--run", moved / "run", "--out", moved / "m.json"]) == 0
    metrics = json.loads((moved / "m.json").read_text())
    info = json.loads((moved / "run" / "train.json").read_text())
    assert metrics["meta/model_sha256"] == info["model_sha256"]
    assert metrics["meta/data_sha256"] == info["data_sha256"]
    assert metrics["meta/provenance/torch_version"] == torch.__version__
    # the moved run can also be rerun (nothing to do) from its new place
    capsys.readouterr()
    assert cli(train_argv(moved)) == 0


def test_old_run_with_absolute_paths_loads_where_the_path_exists(work):
    run = work / "run"
    state = torch.load(run / "model.pt", weights_only=True)
    state["config"]["data"] = str((work / "data").resolve())
    state["config"]["out"] = str(run.resolve())
    for key in ("data_sha256", "split_sha256"):
        state["config"].pop(key)
    torch.save(state, run / "model.pt")
    info = json.loads((run / "train.json").read_text())
    info["model_sha256"] = sha256_file(run / "model.pt")
    (run / "train.json").write_text(json.dumps(info))
    cfg, _model, _loss, ds = load_run(run)
    assert cfg["data"] == str((work / "data").resolve())
    # the data hash recorded in train.json is still checked
    hd.build_synthetic(work / "data", data_cfg(1))
    with pytest.raises(IntegrityError, match="dataset sha256"):
        load_run(run)


def test_generation_records_the_weight_hash(work):
    assert cli(["generate", "--run", work / "run", "--out", work / "gen", "--decoder-epochs", 1]) == 0
    gen = json.loads((work / "gen" / "generation.json").read_text())
    info = json.loads((work / "run" / "train.json").read_text())
    assert gen["meta/model_sha256"] == info["model_sha256"]
    assert "meta/provenance/git_commit" in gen
