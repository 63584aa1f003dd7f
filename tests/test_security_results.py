"""Nothing slips past unnoticed: results bound to the plan and to their content hashes.

A missing, duplicate, stray, edited or truncated run file makes ``harness aggregate`` fail with one
line naming it (instead of judging 31 of 32 runs); a truncated or edited summary makes the tables
and claims fail; an edited ``dataset.json`` is refused. Each case first checks that the untouched
folder aggregates, so the refusal is caused by the change alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main as cli_main
from harness.experiment import data as hd
from harness.experiment import keys
from harness.experiment.dataset import DatasetIntegrityError, load_dataset
from harness.files import sha256_file, write_json_sealed
from harness.report import MANIFEST, read_csv_or_empty

SEEDS, VARIANTS, MS = [0, 1], ["infonce", "unialign"], [2, 3]


def write_config(root: Path) -> Path:
    cfg = {"config": {"variants": {"infonce": {"objective": "infonce", "label": "InfoNCE"},
                                   "unialign": {"objective": "unialign", "label": "UniAlign"}}},
           "seeds": SEEDS, "split_seeds": [0], "tuned": [],
           "cells": [{"dataset": "syn", "variant": v, "job": "job", "ms": MS, "generation_ms": []}
                     for v in VARIANTS]}
    path = root / "results" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    return path


def write_sweep(root: Path) -> None:
    """Every planned run: a sealed metrics file and a history.csv whose sha256 train.json records."""
    for v in VARIANTS:
        for m in MS:
            for s in SEEDS:
                name = f"M{m}_seed{s}_split0"
                write_json_sealed(root / "metrics" / "syn" / "job" / v / f"{name}.json",
                                  {keys.R1_MEAN: 10.0 * m + s, keys.META_OBJECTIVE: v})
                run = root / "runs" / "syn" / "job" / v / f"M{m}" / f"seed{s}_split0"
                run.mkdir(parents=True)
                pd.DataFrame({"epoch": [1, 2], "step": [5, 10], "loss": [1.0, 0.5]}).to_csv(run / "history.csv",
                                                                                          index=False)
                (run / "train.json").write_text(json.dumps({"history_sha256": sha256_file(run / "history.csv")}))


def aggregate(root: Path) -> int:
    return cli_main(["aggregate", "--config", str(root / "results" / "config.json"),
                     "--metrics", str(root / "metrics" / "syn" / "job"),
                     "--runs", str(root / "runs" / "syn" / "job"),
                     "--out-summary", str(root / "results" / "summary.csv"),
                     "--out-history", str(root / "results" / "history.csv"),
                     "--out-generation", str(root / "results" / "generation.csv"),
                     "--out-benchmarks", str(root / "results" / "benchmarks.csv")])


@pytest.fixture
def sweep(tmp_path):
    write_config(tmp_path)
    write_sweep(tmp_path)
    return tmp_path


def refused(root: Path, capsys) -> str:
    (root / "results" / "summary.csv").unlink(missing_ok=True)
    capsys.readouterr()
    assert aggregate(root) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert not (root / "results" / "summary.csv").exists()  # nothing written
    return err


def test_the_untouched_sweep_aggregates_with_its_manifest(sweep, capsys):
    assert aggregate(sweep) == 0
    summary = pd.read_csv(sweep / "results" / "summary.csv")
    assert len(summary) == 8 and "aggregate: 8 runs" in capsys.readouterr().out
    manifest = json.loads((sweep / "results" / MANIFEST).read_text())["tables"]
    assert manifest["summary.csv"] == {"sha256": sha256_file(sweep / "results" / "summary.csv"), "rows": 8}
    assert manifest["history.csv"]["rows"] == 16


def test_a_missing_run_file_is_named(sweep, capsys):
    (sweep / "metrics" / "syn" / "job" / "unialign" / "M3_seed1_split0.json").unlink()
    err = refused(sweep, capsys)
    assert "the metrics of dataset syn, variant unialign, M=3, seed 1, split seed 0 is missing" in err
    assert "(1 of the 8 planned runs have none)" in err


def test_a_missing_history_is_named(sweep, capsys):
    (sweep / "runs" / "syn" / "job" / "infonce" / "M2" / "seed0_split0" / "history.csv").unlink()
    assert "the history of dataset syn, variant infonce, M=2, seed 0, split seed 0 is missing" in refused(
        sweep, capsys)


def test_a_duplicate_or_stray_run_file_is_named(sweep, capsys):
    folder = sweep / "metrics" / "syn" / "job" / "infonce"
    shutil.copy(folder / "M2_seed0_split0.json", folder / "M2_seed0.json")  # split seed 0 from its meta
    err = refused(sweep, capsys)
    assert f"{folder / 'M2_seed0_split0.json'} and {folder / 'M2_seed0.json'}" in err or \
           f"{folder / 'M2_seed0.json'} and {folder / 'M2_seed0_split0.json'}" in err
    (folder / "M2_seed0.json").unlink()
    shutil.copy(folder / "M2_seed0_split0.json", folder / "M2_seed0_copy.json")
    assert "M2_seed0_copy.json is not a metrics file the plan asks for" in refused(sweep, capsys)
    (folder / "M2_seed0_copy.json").unlink()
    shutil.copy(folder / "M2_seed0_split0.json", folder / "M4_seed0_split0.json")
    assert "variant infonce, M=4, seed 0, split seed 0, which the plan does not ask for" in refused(sweep, capsys)


def test_a_flipped_value_in_a_metrics_file_is_refused(sweep, capsys):
    path = sweep / "metrics" / "syn" / "job" / "infonce" / "M2_seed1_split0.json"
    path.write_text(path.read_text().replace("21.0", "61.0"))
    err = refused(sweep, capsys)
    assert f"{path} changed after it was written: content sha256" in err
    path.write_text(path.read_text()[:-9])  # truncated
    assert f"{path} is unreadable (truncated or corrupted?)" in refused(sweep, capsys)


def test_a_metrics_file_without_its_hash_is_refused_in_a_planned_sweep(sweep, capsys):
    path = sweep / "metrics" / "syn" / "job" / "infonce" / "M2_seed1_split0.json"
    obj = json.loads(path.read_text())
    obj.pop("meta/content_sha256")
    path.write_text(json.dumps(obj))
    assert "records no meta/content_sha256" in refused(sweep, capsys)


def test_a_truncated_or_edited_history_is_refused(sweep, capsys):
    path = sweep / "runs" / "syn" / "job" / "unialign" / "M3" / "seed0_split0" / "history.csv"
    text = path.read_text()
    path.write_text(text[:-4])
    assert f"{path} changed after training: sha256" in refused(sweep, capsys)
    (path.parent / "train.json").unlink()
    assert f"{path} has no sha256 recorded in {path.parent / 'train.json'}" in refused(sweep, capsys)


def test_truncated_or_edited_summaries_stop_the_report(sweep, capsys):
    assert aggregate(sweep) == 0
    summary = sweep / "results" / "summary.csv"
    text = summary.read_text()
    # a cut row: an error with the manifest (hash) and without it (field count)
    summary.write_text(text[: text.rindex(",")] + "\n")
    with pytest.raises(ValueError, match="changed after aggregation"):
        read_csv_or_empty(str(summary))
    (sweep / "results" / MANIFEST).unlink()
    with pytest.raises(ValueError, match=r"line 9 has \d+ fields, the header \d+"):
        read_csv_or_empty(str(summary))
    summary.write_text(text[:-3])
    with pytest.raises(ValueError, match="is truncated: its last line has no line end"):
        read_csv_or_empty(str(summary))
    # the command-line report stages fail on one line
    capsys.readouterr()
    assert cli_main(["claims", "--config", str(sweep / "results" / "config.json"), "--summary", str(summary),
                     "--out-md", str(sweep / "results" / "claims.md"),
                     "--out-csv", str(sweep / "results" / "claims.csv")]) == 1
    assert "is truncated" in capsys.readouterr().err
    assert not (sweep / "results" / "claims.md").exists()


def test_an_edited_dataset_record_is_refused(tmp_path):
    hd.build_synthetic(tmp_path / "d", hd.SyntheticConfig(n_modalities=3, n_samples=60, n_classes=3, latent_dim=3,
                                                          dims=[4, 4, 4], seed=0))
    load_dataset(tmp_path / "d")
    meta_path = tmp_path / "d" / "dataset.json"
    meta = json.loads(meta_path.read_text())
    edited = {**meta, "n_modalities": 2}
    meta_path.write_text(json.dumps(edited))
    with pytest.raises(DatasetIntegrityError, match="changed after it was written: content sha256"):
        load_dataset(tmp_path / "d")
    # an older record without a seal: its fields are checked against the hashed arrays
    legacy = {k: v for k, v in edited.items() if k != "content_sha256"}
    legacy["format_version"] = 1
    meta_path.write_text(json.dumps(legacy))
    with pytest.raises(DatasetIntegrityError, match=r"records n_modalities=2 but its dataset.npz holds 3"):
        load_dataset(tmp_path / "d")
    legacy["n_modalities"] = 3
    meta_path.write_text(json.dumps(legacy))
    assert load_dataset(tmp_path / "d").n_modalities == 3
    assert np.isfinite(load_dataset(tmp_path / "d").views[0]).all()
