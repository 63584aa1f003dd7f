"""Every bad input: one ``error:`` line, a non-zero exit code, nothing written; ``--help`` of every command.

In-process CLI calls. ``{data}`` is a tiny dataset, ``{run}`` a tiny trained run, ``{file}`` a
plain file, ``{dir}`` an empty folder, ``{new}`` a path that does not exist and ``{f:NAME}`` a
features file built by ``FEATURES[NAME]``; the whole scratch tree must be unchanged after a case.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from harness.cli import COMMANDS
from harness.cli import main as cli_main
from harness.experiment import data as hd


def cli(argv) -> int:
    try:
        return cli_main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        return int(exc.code)


def _paired(n: int = 40, d: int = 3) -> dict:
    rng = np.random.default_rng(0)
    return {"modality_0": rng.normal(size=(n, d)), "modality_1": rng.normal(size=(n, d))}


FEATURES = {
    "object": lambda: {**_paired(), "modality_1": np.array([[1.0, "a"]] * 40, dtype=object)},
    "empty": lambda: {"modality_0": np.zeros((0, 3)), "modality_1": np.zeros((0, 3))},
    "dupnames": lambda: {**_paired(), "names": np.array(["a", "a"])},
    "noval": lambda: {**_paired(), "split": np.array(["train"] * 36 + ["test"] * 4)},
}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    base = tmp_path_factory.mktemp("inputs")
    hd.build_synthetic(base / "data", hd.SyntheticConfig(n_modalities=3, n_samples=120, n_classes=4, latent_dim=4,
                                                         dims=[8, 6, 5], seed=0))
    assert cli(["train", "--quiet", "--data", base / "data", "--objective", "infonce", "--n-modalities", 3,
                "--epochs", 1, "--batch-size", 16, "--dim", 4, "--hidden", 8, "--depth", 1, "--out", base / "run"]) == 0
    (base / "file").write_text("not a folder\n")
    (base / "dir").mkdir()
    for name, make in FEATURES.items():
        np.savez(base / f"{name}.npz", **make())
    return base


def tree(base: Path) -> dict:
    return {str(p.relative_to(base)): (p.is_dir(), None if p.is_dir() else p.stat().st_mtime_ns)
            for p in sorted(base.rglob("*"))}


def expand(argv, base: Path) -> list[str]:
    out = []
    for a in argv:
        a = str(a)
        if a.startswith("{f:"):
            a = str(base / f"{a[3:-1]}.npz")
        else:
            a = a.format(data=base / "data", run=base / "run", file=base / "file", dir=base / "dir",
                         new=base / "new" / "x")
        out.append(a)
    return out


TRAIN = ["train", "--quiet", "--data", "{data}", "--objective", "infonce", "--n-modalities", "3",
         "--batch-size", "16", "--dim", "4", "--hidden", "8", "--depth", "1"]
TRAIN_NEW = TRAIN + ["--out", "{new}"]
FEAT = ["data", "--dataset", "features", "--out", "{new}", "--features"]

CASES = [
    # (id, argv, exit code, fragment of the one error line)
    ("train-epochs-0", TRAIN_NEW + ["--epochs", "0"], 1, "--epochs 0 must be a positive integer"),
    ("train-no-budget", TRAIN_NEW, 1, "give exactly one training budget"),
    ("train-lr-negative", TRAIN_NEW + ["--epochs", "1", "--lr", "-1"], 1, "--lr -1.0 must be a positive number"),
    ("train-lr-nan", TRAIN_NEW + ["--epochs", "1", "--lr", "nan"], 1, "--lr nan must be a positive number"),
    ("train-dim-0", TRAIN_NEW + ["--epochs", "1", "--dim", "0"], 1, "--dim 0 must be a positive integer"),
    ("train-hidden-0", TRAIN_NEW + ["--epochs", "1", "--hidden", "0"], 1, "--hidden 0 must be a positive integer"),
    ("train-depth-negative", TRAIN_NEW + ["--epochs", "1", "--depth", "-1"], 1, "--depth -1 must be an integer >= 0"),
    ("train-weight-decay", TRAIN_NEW + ["--epochs", "1", "--weight-decay", "-0.1"], 1, "--weight-decay -0.1"),
    ("train-threads-negative", TRAIN_NEW + ["--epochs", "1", "--threads", "-1"], 2,
     "argument --threads: must be an integer >= 0, got -1"),
    ("train-threads-text", TRAIN_NEW + ["--epochs", "1", "--threads", "many"], 2, "'many' is not an integer"),
    ("train-batch-1", TRAIN_NEW + ["--epochs", "1", "--batch-size", "1"], 1, "--batch-size 1 must be an integer >= 2"),
    ("train-dist-timeout-0", TRAIN_NEW + ["--epochs", "1", "--dist-timeout-s", "0"], 1, "--dist-timeout-s 0.0"),
    ("train-anchor-range", TRAIN_NEW + ["--epochs", "1", "--param", "anchor=5"], 1,
     "--param anchor=5 is out of range: M = 3 modalities are 0..2"),
    ("train-out-is-file", TRAIN + ["--epochs", "1", "--out", "{file}"], 1, "is a file; a folder is expected"),
    ("train-out-under-file", TRAIN + ["--epochs", "1", "--out", "{file}/run"], 1, "so the folder cannot be created"),
    ("train-missing-data", ["train", "--data", "{new}", "--objective", "infonce", "--n-modalities", "3",
                            "--epochs", "1", "--out", "{dir}/r"], 1, "dataset.json does not exist"),
    ("data-6-rows", ["data", "--dataset", "synthetic", "--n-samples", "6", "--n-classes", "2", "--out", "{new}"], 1,
     "leave val, test with fewer than 2 rows"),
    ("data-n-samples-0", ["data", "--dataset", "synthetic", "--n-samples", "0", "--out", "{new}"], 2,
     "--n-samples: must be a positive integer, got 0"),
    ("data-fraction", ["data", "--dataset", "synthetic", "--val-fraction", "1.5", "--out", "{new}"], 2,
     "--val-fraction: must be in [0, 1), got 1.5"),
    ("data-noise", ["data", "--dataset", "synthetic", "--noise", "-1", "--out", "{new}"], 2, "--noise: must be"),
    ("data-dims", ["data", "--dataset", "synthetic", "--dims", "4,0,3", "--out", "{new}"], 1,
     "every dimension must be a positive integer"),
    ("data-out-is-file", ["data", "--dataset", "synthetic", "--out", "{file}"], 1, "is a file; a folder is expected"),
    ("data-unknown-dataset", ["data", "--dataset", "nope", "--out", "{new}"], 2, "invalid choice: 'nope'"),
    ("features-object", FEAT + ["{f:object}"], 1, "array 'modality_1' holds Python objects"),
    ("features-0-rows", FEAT + ["{f:empty}"], 1, "modality_0 has 0 rows; at least 6 are needed"),
    ("features-duplicate-names", FEAT + ["{f:dupnames}"], 1, "names must be unique, ['a'] occur more than once"),
    ("features-empty-val", FEAT + ["{f:noval}"], 1, "'split' marks 0 validation rows"),
    ("features-missing", FEAT + ["{new}.npz"], 1, "does not exist"),
    ("evaluate-out-is-dir", ["evaluate", "--run", "{run}", "--out", "{dir}"], 1, "is a folder; a file is expected"),
    ("evaluate-missing-run", ["evaluate", "--run", "{new}", "--out", "{dir}/m.json"], 1, "model.pt does not exist"),
    ("evaluate-max-rows-0", ["evaluate", "--run", "{run}", "--out", "{new}", "--max-rows", "0"], 2, "--max-rows"),
    ("evaluate-temperature", ["evaluate", "--run", "{run}", "--out", "{new}", "--temperature", "0"], 2,
     "--temperature: must be a positive number"),
    ("generate-decoder-epochs-0", ["generate", "--run", "{run}", "--out", "{new}", "--decoder-epochs", "0"], 2,
     "--decoder-epochs: must be a positive integer, got 0"),
    ("generate-out-is-file", ["generate", "--run", "{run}", "--out", "{file}"], 1, "is a file; a folder is expected"),
    ("compare-threads", ["compare", "--threads", "-2"], 2, "--threads: must be an integer >= 0"),
    ("unknown-command", ["nope"], 2, "invalid choice: 'nope'"),
]


@pytest.mark.parametrize("argv, code, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_one_line_nonzero_nothing_written(scratch, capsys, argv, code, fragment):
    before = tree(scratch)
    assert cli(expand(argv, scratch)) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0] and fragment in lines[0], lines[0]
    assert tree(scratch) == before


def test_disk_full_is_one_line_naming_the_path(scratch, tmp_path, capsys, monkeypatch):
    from harness import files

    def full(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    out = tmp_path / "d"
    assert cli(["data", "--dataset", "synthetic", "--n-samples", "60", "--n-classes", "2", "--out", out]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: cannot write {out / 'dataset.npz'}: No space left on device"]
    assert list(out.iterdir()) == []  # the temporary file was removed


def test_read_only_output_is_refused_before_work(scratch, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
    assert cli(["evaluate", "--run", scratch / "run", "--out", ro / "m.json"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: cannot write {ro}: the folder is not writable"]
    assert cli(TRAIN[:3] + [scratch / "data"] + TRAIN[4:] + ["--epochs", "1", "--out", ro / "run"]) == 1
    assert f"{ro} is not writable" in capsys.readouterr().err
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_of_every_command(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main([name, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m harness {name}")
    if any(tok in text for tok in ("--threads", "--seed", "--out")):
        assert "(default:" in text


def test_threads_declared_once():
    root = Path(__file__).resolve().parents[1] / "harness"
    hits = [p for p in [root / "cli.py", *(root / "experiment").rglob("*.py")] if '"--threads"' in p.read_text()]
    assert hits == [root / "cli.py"]
