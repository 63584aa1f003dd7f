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


def _config(enabled: bool = True, sweep: bool = True) -> dict:
    config = _merged_config()
    config["robustness"] = {"enabled": enabled, "sweep": sweep, "perturbations": copy.deepcopy(PERTURBATIONS)}
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
    assert on.robustness_args().split()[:2] == ["--perturbed", "anchor_1=work/tiny/robustness/anchor_1/results"]
    # without robustness.sweep a perturbation never swept is named, not read
    unswept = Plan(_config(sweep=False), str(ROOT))
    assert not unswept.robustness_sweeps()
    assert unswept.robustness_args().split("--stale")[1].strip().startswith("'anchor_1=not swept'")


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
    assert list(rob.columns) == ["claim", "dataset", "verdict", "estimate", "ci_low", "ci_high", "same",
                                 "same_estimate", "same_shift", "flipped", "flipped_estimate", "flipped_shift",
                                 "robust"]
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
    assert bad.returncode == 2 and "--perturbed takes NAME=RESULTS_DIR or NAME=CLAIMS.CSV, got 'nameonly'" in bad.stderr


def _dry_run(tmp_path, sweep: bool) -> str:
    """The job stats of a dry run of the tiny sweep with PERTURBATIONS declared."""
    extra = overlay(tmp_path, "robust", {"robustness": {"enabled": True, "sweep": sweep,
                                                        "perturbations": PERTURBATIONS}})
    proc = snakemake("-n", "--cores", "2", "--configfile", str(ROOT / "config" / "tiny.yaml"), str(extra),
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_workflow_plans_one_nested_sweep_per_perturbation(tmp_path):
    stats = _dry_run(tmp_path, sweep=True)
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
    assert plan.robustness_names() == ["anchor_1", "split_seeds_8_15", "steps_x2", "trials_x2"]
    for name in plan.robustness_names():
        cfg = plan.robustness_config(name)
        validate(copy.deepcopy(cfg), str(SCHEMA))
        Plan(cfg, str(ROOT))


def test_a_dry_run_needs_no_core_count(tmp_path):
    proc = snakemake("-n", "--configfile", str(ROOT / "config" / "tiny.yaml"),
                     str(overlay(tmp_path, "robust", {"robustness": {"enabled": True, "sweep": True}})), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_without_sweep_the_default_run_plans_no_nested_sweep(tmp_path):
    stats = _dry_run(tmp_path, sweep=False)
    assert "robustness_sweep" not in stats and "claims" in stats


def _swept(tmp_path, plan: Plan, name: str, cfg: dict | None = None) -> None:
    """Write what a perturbation's nested sweep leaves: its results folder, judged from the fixture."""
    import json

    from harness.report.aggregate import to_csv_text

    folder = tmp_path / plan.robustness_dir(name) / "results"
    folder.mkdir(parents=True, exist_ok=True)
    snapshot = copy.deepcopy(cfg if cfg is not None else plan.robustness_config(name))
    (folder / "config.json").write_text(json.dumps({**_cfg(), "config": {**_cfg()["config"], **snapshot}}))
    _summary().to_csv(folder / "summary.csv", index=False)
    _history().to_csv(folder / "history.csv", index=False)
    _generation().to_csv(folder / "generation.csv", index=False)
    (folder / "claims.csv").write_text(to_csv_text(claims.judge(_summary(), _history(), _generation(), _cfg())))


def test_committed_perturbation_outputs_are_read_only_under_their_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = Plan(_config(sweep=False), str(ROOT))
    assert plan.robustness_status("steps_x2") == "not swept"
    _swept(tmp_path, plan, "steps_x2")
    assert plan.robustness_status("steps_x2") == "current"
    # what cannot change a verdict does not make it stale: a saturation delta, an unused variant
    other = _config(sweep=False)
    other["tuning"]["saturation_delta"] = 3.0
    other["variants"]["never_run"] = {"objective": "infonce"}
    assert Plan(other, str(ROOT)).robustness_status("steps_x2") == "current"
    # a changed training budget does, and the argument names it
    changed = _config(sweep=False)
    changed["training"]["lr"] = 0.5
    status = Plan(changed, str(ROOT)).robustness_status("steps_x2")
    assert status == "swept with another configuration (training)"
    args = Plan(changed, str(ROOT)).robustness_args()
    assert "--stale 'steps_x2=swept with another configuration (training)'" in args
    assert "--perturbed" not in args  # nothing else swept either
    before = plan.robustness_fingerprint()
    (tmp_path / plan.robustness_dir("steps_x2") / "results" / "summary.csv").write_text("x\n1\n")
    assert plan.robustness_fingerprint() != before  # a changed committed output reruns the claims rule


def test_a_perturbation_is_judged_by_this_code_from_its_numbers(tmp_path):
    plan = Plan(_config(), str(ROOT))
    _swept(tmp_path, plan, "steps_x2", cfg={})
    folder = tmp_path / plan.robustness_dir("steps_x2") / "results"
    again = claims.judge_results(folder, 0.95)
    stored = pd.read_csv(folder / "claims.csv")
    assert list(again["verdict"]) == list(stored["verdict"])
    with pytest.raises(ValueError, match="no config.json"):
        claims.judge_results(tmp_path, 0.95)


def test_shift_is_the_move_in_half_intervals():
    table, _ = _tables()
    moved = table.copy()
    i = moved.index[(moved["id"] == "5") & (moved["role"] == "primary")][0]
    row = table.loc[i]
    half = (row["ci_high"] - row["ci_low"]) / 2
    moved.loc[i, "estimate"] = row["estimate"] + 0.75 * half
    rob = claims.robustness(table, {"moved": moved}).set_index("id")
    assert rob.loc["5", "moved_shift"] == pytest.approx(0.75)
    assert rob.drop(index="5")["moved_shift"].abs().max() == pytest.approx(0.0)
    (line,) = claims.shift_summary(rob.reset_index(), ["moved"])
    assert "moves 1 of" in line and "5 " in line and "(+0.75)" in line
    text = claims.render_markdown(table, 0.95, {"moved": moved}, stale={"other": "not swept"})
    assert "Declared perturbations not read (their verdicts are not part of `robust`): other: not swept" in text
    assert "| supported (+0.75) |" in text


def test_sweeping_rewrites_a_perturbation_config_that_is_not_in_force(tmp_path, monkeypatch):
    """A fresh clone has no Snakemake metadata, so only a newer input reruns a nested sweep."""
    monkeypatch.chdir(tmp_path)
    plan = Plan(_config(sweep=True), str(ROOT))
    path = tmp_path / plan.robustness_dir("steps_x2") / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("old: config\n")
    untouched = tmp_path / plan.robustness_dir("anchor_1") / "config.yaml"
    untouched.parent.mkdir(parents=True)
    untouched.write_text(plan.robustness_config_text("anchor_1"))
    before = untouched.stat().st_mtime_ns
    Plan(_config(sweep=False), str(ROOT)).refresh_robustness_configs()  # not sweeping: nothing written
    assert path.read_text() == "old: config\n"
    plan.refresh_robustness_configs()
    assert yaml.safe_load(path.read_text()) == plan.robustness_config("steps_x2")
    assert untouched.stat().st_mtime_ns == before  # a config in force is left alone
