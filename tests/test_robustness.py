"""Robustness of the verdicts: the plan of one perturbation's sweep, the claims beside each
perturbation's, and the workflow's robustness jobs (dry run)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from harness.plan import Plan, PlanError
from harness.report import claims
from tests.test_claims_table import _cfg, _generation, _history, _summary
from tests.test_security_workflow import _merged_config
from tests.test_workflow import ROOT, SCHEMA, overlay, snakemake

PERTURBATIONS = {"steps_x2": {"training": {"steps": 32}}, "splits": {"split_seeds": [5, 6]},
                 "anchor_1": {"variants": {"unialign": {"params": {"anchor": 1}}}}}


def _config(enabled: bool = True) -> dict:
    config = _merged_config()
    config["robustness"] = {"enabled": enabled, "perturbations": copy.deepcopy(PERTURBATIONS)}
    return config


def test_a_perturbation_sweeps_the_baseline_and_the_method_only():
    from snakemake.utils import validate

    plan = Plan(_config(), str(ROOT))
    assert plan.robustness_names() == ["anchor_1", "splits", "steps_x2"]
    assert plan.robustness_claims()[0] == "work/tiny/robustness/anchor_1/results/claims.csv"
    cfg = plan.robustness_config("steps_x2")
    validate(copy.deepcopy(cfg), str(SCHEMA))  # a configuration the nested workflow accepts
    assert cfg["training"]["steps"] == 32 and cfg["training"]["batch_size"] == plan.config["training"]["batch_size"]
    assert cfg["output_root"] == "work/tiny/robustness/steps_x2"
    assert cfg["robustness"]["enabled"] is False  # no sweep inside a sweep
    assert cfg["validation"]["enabled"] is False and cfg["throughput"]["enabled"] is False
    nested = Plan(cfg, str(ROOT))
    assert {v for _, v in nested.cells} == {"infonce", "unialign"}
    assert {v for _, v in nested.gen_cells} <= {"infonce", "unialign"}
    # the main plan is untouched, and the other perturbations change only what they declare
    assert plan.config["training"]["steps"] == 16 and "robustness" not in plan.config["studies"]
    assert plan.robustness_config("splits")["split_seeds"] == [5, 6]
    anchored = plan.robustness_config("anchor_1")["variants"]["unialign"]["params"]
    assert anchored == {**plan.config["variants"]["unialign"]["params"], "anchor": 1}
    with pytest.raises(PlanError, match="robustness.perturbations has no 'nope'"):
        plan.robustness_config("nope")


def test_disabled_robustness_adds_no_job_and_no_argument():
    plan = Plan(_config(enabled=False), str(ROOT))
    assert plan.robustness_names() == [] and plan.robustness_args() == ""
    assert not any("robustness" in t for t in plan.final_targets([], []))
    on = Plan(_config(), str(ROOT))
    assert on.out("results/robustness.csv") in on.final_targets([], [])
    assert on.robustness_args().split()[:2] == ["--perturbed", "anchor_1=work/tiny/robustness/anchor_1/results/claims.csv"]


def _tables():
    table = claims.judge(_summary(), _history(), _generation(), _cfg())
    same = table.copy()
    flipped = table.copy()
    i = flipped.index[(flipped["id"] == "5") & (flipped["role"] == "primary")]
    flipped.loc[i, "verdict"] = "inconclusive"
    return table, {"same": same, "flipped": flipped}


def test_robustness_table_marks_a_verdict_that_moves():
    table, perturbed = _tables()
    rob = claims.robustness(table, perturbed).set_index("id")
    assert list(rob.columns) == ["claim", "dataset", "verdict", "same", "flipped", "robust"]
    assert rob.loc["5", "verdict"] == "supported" and rob.loc["5", "flipped"] == "inconclusive"
    assert not rob.loc["5", "robust"] and rob.drop(index="5")["robust"].all()
    # a perturbed sweep that lacks a row shows "–" and the row is not robust
    short = {"short": table[table["id"] != "4"]}
    assert claims.robustness(table, short).set_index("id").loc["4", "short"] == "–"


def test_claims_markdown_shows_every_verdict_under_every_perturbation():
    table, perturbed = _tables()
    text = claims.render_markdown(table, 0.95, perturbed)
    head = next(line for line in text.splitlines() if line.startswith("| claim | statement"))
    assert head.endswith("| same | flipped | robust |")
    row5 = next(line for line in text.splitlines() if line.startswith("| 5 | "))
    assert row5.endswith("| supported | inconclusive | **no** |")
    assert "## Robustness: each primary row under each perturbation" in text
    assert claims.render_markdown(table) == claims.render_markdown(table, 0.95, {})  # no perturbation: as before


def test_claims_cli_reads_the_perturbed_tables(tmp_path):
    from harness.report.aggregate import to_csv_text

    table, perturbed = _tables()
    paths = []
    for name, t in perturbed.items():
        (tmp_path / f"{name}.csv").write_text(to_csv_text(t))
        paths += ["--perturbed", f"{name}={tmp_path / f'{name}.csv'}"]
    _summary().to_csv(tmp_path / "summary.csv", index=False)
    cfg = tmp_path / "config.json"
    import json

    cfg.write_text(json.dumps(_cfg()))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness", "claims", "--config", str(cfg), "--summary",
                           str(tmp_path / "summary.csv"), "--out-md", str(out / "claims.md"), "--out-csv",
                           str(out / "claims.csv"), "--out-robustness", str(out / "robustness.csv"), *paths],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rob = pd.read_csv(out / "robustness.csv")
    assert set(rob.columns) >= {"same", "flipped", "robust"}
    bad = subprocess.run([sys.executable, "-m", "harness", "claims", "--config", str(cfg), "--summary",
                          str(tmp_path / "summary.csv"), "--out-md", str(out / "c.md"), "--out-csv",
                          str(out / "c.csv"), "--perturbed", "nameonly"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--perturbed takes NAME=CLAIMS.CSV, got 'nameonly'" in bad.stderr


def test_workflow_plans_one_nested_sweep_per_perturbation(tmp_path):
    extra = overlay(tmp_path, "robust", {"robustness": {"enabled": True, "perturbations": PERTURBATIONS}})
    proc = snakemake("-n", "--cores", "2", "--configfile", str(ROOT / "config" / "tiny.yaml"), str(extra),
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = proc.stdout + proc.stderr
    # the default config declares four, the overlay adds one (mappings merge): five nested sweeps
    assert any(line.split()[:2] == ["robustness_sweep", "5"] for line in stats.splitlines()), stats[-3000:]
    assert any(line.split()[:2] == ["robustness_config", "5"] for line in stats.splitlines())


def test_every_perturbation_of_the_default_config_is_a_valid_sweep():
    """Each declared perturbation's configuration passes the schema and the plan's checks (a disjoint
    set of split seeds must move tuning.split_seed with it, for example)."""
    from snakemake.utils import validate

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(config, str(SCHEMA))
    plan = Plan(config, str(ROOT))
    assert plan.robustness_names() == ["anchor_1", "split_seeds_3_5", "steps_x2", "trials_x2"]
    for name in plan.robustness_names():
        cfg = plan.robustness_config(name)
        validate(copy.deepcopy(cfg), str(SCHEMA))
        Plan(cfg, str(ROOT))


def test_a_dry_run_needs_no_core_count(tmp_path):
    proc = snakemake("-n", "--configfile", str(ROOT / "config" / "tiny.yaml"),
                     str(overlay(tmp_path, "robust", {"robustness": {"enabled": True}})), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
