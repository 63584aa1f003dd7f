"""The Snakemake workflow: tiny sweep end to end, idempotence, config validation, SLURM dry run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
TINY = ROOT / "config" / "tiny.yaml"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None and not (Path(sys.executable).parent / "snakemake").exists(),
                                reason="snakemake is not installed")

TABLES = ["table1_retrieval", "table2_ablation", "table3_generation", "table5_sensitivity", "table_conflicts",
          "table_divergence_gap", "table_collapse", "paper_reference"]
FIGURES = ["conflicts_vs_m", "divergence_gap_vs_m", "retrieval_vs_m", "alignment_uniformity", "projection_pca",
           "generated_samples", "proxy_vs_divergence", "advantage_vs_m",
           "estimator_validation"]  # the last by validate-estimators
TINY_ROOT = Path(yaml.safe_load(TINY.read_text())["output_root"])
# the fixture adds a user features dataset (written by config/README.md's snippet) to the tiny run
FEATURES_OVERLAY = {
    "datasets": {"mine": {"source": "features", "path": "my_features.npz"}},
    "studies": {"main": {"datasets": ["synthetic", "mine"]}},
    "generation": {"datasets": ["synthetic", "mine"]},
}


def _env(root: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(root), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def _snakemake_exe() -> str:
    exe = Path(sys.executable).parent / "snakemake"
    return str(exe) if exe.exists() else "snakemake"


def snakemake(*args: str, cwd: Path, timeout: float = 600, snakefile: Path = SNAKEFILE) -> subprocess.CompletedProcess:
    """Snakemake with the repository's Snakefile and `cwd` as its working directory."""
    cmd = [_snakemake_exe(), "-s", str(snakefile), "--directory", str(cwd), *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(snakefile.parent), capture_output=True, text=True, timeout=timeout)


def overlay(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def copy_working_tree(dest: Path) -> Path:
    """A copy of the checkout as a user has it: tracked and untracked, not ignored, files."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def tree_digest(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write_features(path: Path) -> None:
    """Run config/README.md's snippet (the documented way to write a features file) in `path`'s folder."""
    text = (ROOT / "config" / "README.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'np.savez("my_features.npz"' in snippet
    subprocess.run([sys.executable, "-c", snippet], cwd=path.parent, check=True)
    assert path.exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The documented small run in a copy of the checkout: `snakemake --cores 2 --configfile
    config/tiny.yaml` (plus a features dataset), run from the copy's root without --directory."""
    import resource

    clone = copy_working_tree(tmp_path_factory.mktemp("clone"))
    before_files = tree_digest(clone)
    write_features(clone / "my_features.npz")
    extra = overlay(tmp_path_factory.mktemp("overlay"), "features", FEATURES_OVERLAY)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([_snakemake_exe(), "--cores", "2", "--configfile", "config/tiny.yaml", str(extra)],
                          cwd=clone, env=_env(clone), capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"tiny sweep: {wall:.0f} s wall, {cpu:.0f} s CPU (all processes), load {os.getloadavg()[0]:.1f}")
    work = clone / TINY_ROOT
    if proc.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((work / "logs").rglob("*.log")))
        pytest.fail(f"tiny sweep failed (rc {proc.returncode}):\n{proc.stderr[-6000:]}\n{logs}")
    return work, (wall, cpu), clone, before_files


@pytest.mark.slow
def test_tiny_run_changes_no_file_of_the_checkout(tiny_run):
    """The small config writes only under its output_root (and Snakemake's own .snakemake/):
    every file of the checkout, committed results and figures included, is byte-identical."""
    work, _, clone, before_files = tiny_run
    after = tree_digest(clone)
    changed = sorted(k for k, v in before_files.items() if after.get(k) != v)
    assert not changed, changed[:20]
    new = sorted(k for k in after if k not in before_files)
    stray = [k for k in new if not (k.startswith(str(TINY_ROOT) + os.sep) or k.startswith(".snakemake" + os.sep)
                                    or "__pycache__" in k or k == "my_features.npz")]
    assert not stray, stray[:20]
    assert (work / "results" / "config.json").exists()
    snapshot = json.loads((work / "results" / "config.json").read_text())
    assert snapshot["output_root"] == str(TINY_ROOT) and snapshot["split_seeds"] == [0, 1]


@pytest.mark.slow
def test_tiny_sweep_produces_every_table_and_figure(tiny_run):
    work, (wall, cpu), _, _ = tiny_run
    for table in TABLES:
        for ext in ("csv", "md", "tex"):
            path = work / "results" / "tables" / f"{table}.{ext}"
            assert path.exists() and path.stat().st_size > 0, path
    for figure in FIGURES:
        for ext in ("pdf", "png"):
            path = work / "figures" / f"{figure}.{ext}"
            assert path.exists() and path.stat().st_size > 0, path
    for name in ("summary.csv", "history.csv", "generation.csv", "benchmarks.csv", "claims.md", "claims.csv",
                 "tuning.csv"):
        assert (work / "results" / name).stat().st_size > 0, name
    import pandas as pd

    summary = pd.read_csv(work / "results" / "summary.csv")
    tiny = yaml.safe_load(TINY.read_text())
    units = len(tiny["seeds"]) * len(tiny["split_seeds"])
    extra = len(tiny["seeds"]) * len(tiny["report"]["verdict_split_seeds"])
    # synthetic: main 3 variants x 2 M, ablation adds 1 variant at M=3, sensitivity 1; mine: main only;
    # the verdicts' two variants (baseline, method) at 2 M also at the extra split seed
    assert len(summary[summary["dataset"] == "synthetic"]) == (3 * 2 + 1 + 1) * units + 2 * 2 * extra
    assert len(summary[summary["dataset"] == "mine"]) == 3 * 2 * units + 2 * 2 * extra
    assert summary[["dataset", "variant", "M", "seed", "split_seed"]].duplicated().sum() == 0
    assert set(summary["split_seed"]) == set(tiny["split_seeds"]) | set(tiny["report"]["verdict_split_seeds"])
    extra_split = summary[summary["split_seed"].isin(tiny["report"]["verdict_split_seeds"])]
    assert set(extra_split["variant"]) == {tiny["report"]["baseline"], tiny["report"]["method"]}
    # the tables keep one set of units for every variant: the extra split seed is not in them
    table1 = pd.read_csv(work / "results" / "tables" / "table1_retrieval.csv")
    assert set(table1["n"].dropna().astype(int)) == {units}
    bench = pd.read_csv(work / "results" / "benchmarks.csv")
    assert {"train", "evaluate", "data", "tune"} <= set(bench["stage"])
    claims_md = (work / "results" / "claims.md").read_text()
    assert "Verdict rule" in claims_md
    # the features dataset reaches the tables and the generation stage like the built-in ones
    assert "mine" in (work / "results" / "tables" / "table1_retrieval.csv").read_text()
    assert "mine" in set(pd.read_csv(work / "results" / "generation.csv")["dataset"])
    # its wall and CPU time are printed (pytest -s); speed is measured by benchmarks, never asserted here


@pytest.mark.slow
def test_steps_budget_and_validation_points(tiny_run):
    work, _, _, _ = tiny_run
    tiny = yaml.safe_load(TINY.read_text())["training"]
    trains = sorted((work / "runs").rglob("train.json"))
    assert trains
    for path in trains:
        cfg = json.loads(path.read_text())["config"]
        assert cfg["steps"] == tiny["steps"] and cfg["select"] == tiny["select"], path
    import pandas as pd

    hist = pd.read_csv(trains[0].parent / "history.csv")
    assert len(hist) == tiny["steps"] // tiny["eval_every_steps"]  # one row per validation point


@pytest.mark.slow
def test_tuning_is_equal_budget_and_reads_validation_only(tiny_run):
    import pandas as pd

    work, _, _, _ = tiny_run
    tiny = yaml.safe_load(TINY.read_text())
    tuning = pd.read_csv(work / "results" / "tuning.csv")
    assert {"dataset", "variant", "objective", "trial", "params", "split", "metric", "value", "selected"} <= set(tuning)
    tuned = {"infonce", "unialign"}  # the tiny studies' variants with tune: true
    assert set(tuning["variant"]) == tuned and set(tuning["dataset"]) == {"synthetic", "mine"}
    counts = tuning.groupby(["dataset", "variant"]).size()
    assert (counts == tiny["tuning"]["trials"]).all(), counts
    assert (tuning["split"] == "val").all()
    assert (tuning.groupby(["dataset", "variant"])["selected"].sum() == 1).all()
    selection = json.loads((work / "tuning" / "selected.json").read_text())
    for (dataset, variant), group in tuning.groupby(["dataset", "variant"]):
        best = group.sort_values(["value", "trial"], ascending=[False, True]).iloc[0]
        assert bool(best["selected"]) and selection[dataset][variant]["trial"] == best["trial"]
        # the trial metrics are validation-split evaluations, and their value is what the table says
        trial = json.loads((work / "tuning" / dataset / variant / "metrics" / f"trial{best['trial']}.json").read_text())
        assert trial["meta/split"] == "val"
        assert abs(trial["retrieval/R1/mean"] - best["value"]) < 1e-3
        # the final runs of the tuned variant train with the selected params
        for train_json in (work / "runs" / dataset).rglob(f"{variant}/M*/seed*/train.json"):
            assert json.loads(train_json.read_text())["config"]["params"] == selection[dataset][variant]["params"]
    # the test split is read once, by the final runs: every tuning evaluation is on val, every
    # final evaluation on test, one metrics file per run
    for path in (work / "tuning").rglob("trial*.json"):
        assert json.loads(path.read_text())["meta/split"] == "val", path
    finals = sorted((work / "metrics").rglob("*.json"))
    assert finals and all(json.loads(p.read_text())["meta/split"] == "test" for p in finals)
    assert len(finals) == len(pd.read_csv(work / "results" / "summary.csv"))


@pytest.mark.slow
def test_killed_sweep_restarts_and_gives_identical_summary(tiny_run, tmp_path):
    """SIGKILL a second tiny sweep mid-way: no result file is partial, the restart completes, and its
    results/summary.csv has exactly the uninterrupted run's rows (determinism across runs)."""
    import signal

    import pandas as pd

    work, _, _, _ = tiny_run
    other = tmp_path / "killed"
    other.mkdir()
    root = other / TINY_ROOT
    cmd = [_snakemake_exe(), "-s", str(SNAKEFILE), "--directory", str(other), "--cores", "2", "--configfile", str(TINY)]
    proc = subprocess.Popen(cmd, cwd=other, env=_env(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if any((root / "runs").rglob("train.json")) if (root / "runs").exists() else False:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be killed mid-way"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (root / "results" / "summary.csv").exists()
    for path in other.rglob("*.json"):  # whatever exists after the kill is complete
        if ".snakemake" not in path.parts:
            json.loads(path.read_text())
    unlock = snakemake("--unlock", "--configfile", str(TINY), cwd=other)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    again = snakemake("--cores", "2", "--configfile", str(TINY), cwd=other)
    assert again.returncode == 0, again.stderr[-6000:]
    # provenance/* says which checkout made a run (one is a git clone, the other a plain copy): only
    # the results must agree
    mine = pd.read_csv(root / "results" / "summary.csv", dtype=str, keep_default_na=False)
    full = pd.read_csv(work / "results" / "summary.csv", dtype=str, keep_default_na=False)
    mine, full = (df.loc[:, ~df.columns.str.startswith("provenance/")] for df in (mine, full))
    full = full[full["dataset"] == "synthetic"].reset_index(drop=True)
    # columns only the features dataset fills are empty on the synthetic rows
    assert set(mine.columns) <= set(full.columns)
    assert (full[[c for c in full.columns if c not in mine.columns]] == "").all().all()
    pd.testing.assert_frame_equal(mine, full[list(mine.columns)])


@pytest.mark.slow
def test_second_run_does_nothing(tiny_run):
    _, _, clone, _ = tiny_run
    extra = overlay(clone.parent, "features-again", FEATURES_OVERLAY)
    proc = subprocess.run([_snakemake_exe(), "-n", "--configfile", "config/tiny.yaml", str(extra)], cwd=clone,
                          env=_env(clone), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_stale_config_snapshot_is_rewritten_without_metadata(tiny_run, tmp_path):
    """A committed snapshot has no Snakemake metadata: a stale one must still be replaced, and the
    report stages that read it must run again."""
    import shutil

    _, _, clone, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(clone, copy, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    snapshot = copy / TINY_ROOT / "results" / "config.json"
    current = snapshot.read_text()
    snapshot.write_text('{"config": "stale"}\n')
    extra = overlay(tmp_path, "features-stale", FEATURES_OVERLAY)
    proc = subprocess.run([_snakemake_exe(), "-n", "--configfile", "config/tiny.yaml", str(extra)], cwd=copy,
                          env=_env(copy), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert snapshot.read_text() == current
    assert "aggregate" in proc.stdout and "claims" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.slow
def test_report_is_built(tiny_run):
    work, _, clone, _ = tiny_run
    extra = overlay(clone.parent, "features-report", FEATURES_OVERLAY)
    report = work / "report.html"
    proc = subprocess.run([_snakemake_exe(), "--configfile", "config/tiny.yaml", str(extra), "--report", str(report)],
                          cwd=clone, env=_env(clone), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert report.stat().st_size > 10_000
    # the landing page (Snakefile `report:`, workflow/report/workflow.rst) says what the workflow is
    assert "Where each verdict comes from" in report.read_text(errors="replace")


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"training": {"epoch": 3}}, "epoch"),
        ({"seeds": []}, "seeds"),
        ({"variants": {"infonce": {"objective": "infonse"}}}, "infonse"),
        ({"variants": {"infonce": {"params": {"temprature": 0.1}}}}, "temprature"),
        ({"variants": {"infonce": {"params": {"temperature": -0.1}}}}, "temperature"),
        ({"variants": {"unialign": {"params": {"bandwidth": 0}}}}, "bandwidth"),
        ({"studies": {"main": {"ms": [1, 2]}}}, "ms"),
        ({"studies": {"main": {"variants": ["infonce", "nonexistent"]}}}, "nonexistent"),
        ({"variants": {"unialign": {"params": {"anchor": 2}}}}, "anchor"),
        ({"studies": {"main": {"ms": [2, 7], "datasets": ["synthetic", "uci"]}}}, "M=7"),
        ({"reprot": {}}, "reprot"),
        ({"training": {"steps": 0}}, "steps"),
        ({"training": {"select": "best_test"}}, "best_test"),
        ({"output_root": "/elsewhere"}, "output_root"),
        ({"output_root": "../outside"}, "output_root"),
        ({"split_seeds": [-1]}, "split_seeds"),
        ({"datasets": {"mine": {"source": "features"}}}, "path"),
        ({"datasets": {"mine": {"source": "feature", "path": "x.npz"}}}, "feature"),
        ({"datasets": {"mine": {"source": "features", "path": "missing.npz"}},
          "studies": {"main": {"datasets": ["mine"]}}}, "missing.npz"),
        ({"variants": {"dcl": {"tune": True}}, "studies": {"main": {"variants": ["infonce", "dcl"]}}}, "dcl"),
        ({"tuning": {"search": {"infonce": {"temperature": {"low": "cold"}}}}}, "cold"),
        ({"tuning": {"trial": 3}}, "trial"),
        ({"tuning": {"search": {"infonce": {"temprature": [0.1]}}}}, "temprature"),
        ({"tuning": {"search": {"infonce": {"temperature": {"low": 0.5, "high": 0.1}}}}}, "low < high"),
        ({"tuning": {"split_seed": 7}}, "split_seed=7"),
    ],
)
def test_config_errors_name_the_key(tmp_path, data, needle):
    proc = snakemake("-n", "--configfile", str(TINY), str(overlay(tmp_path, "bad", data)), cwd=tmp_path)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert needle in out, out[-3000:]


@pytest.mark.parametrize("data, where, allowed", [
    ({"training": {"epoch": 3}}, "'epoch' under `training`", "batch_size, depth, dim, eval_every_steps"),
    ({"reprot": {}}, "'reprot' at the top level", "report, resources"),
])
def test_config_typo_is_one_paragraph_with_the_allowed_keys(tmp_path, data, where, allowed):
    proc = snakemake("-n", "--configfile", str(TINY), str(overlay(tmp_path, "bad", data)), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    line = next((x for x in out.splitlines() if x.startswith("invalid configuration: unknown key")), "")
    assert where in line and "allowed keys there:" in line and allowed in line, out[-3000:]
    assert "Failed validating" not in out and "additionalProperties" not in out  # no schema dump
    assert len(out.splitlines()) < 15, out


def test_default_and_paper_configs_plan(tmp_path):
    for extra in ([], ["--configfile", str(ROOT / "config" / "paper.yaml")]):
        proc = snakemake("-n", *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "train" in proc.stdout + proc.stderr


def test_slurm_profile_plans_in_dry_run(tmp_path):
    # the dry run uses Snakemake's own dry-run executor: no sbatch/sinfo is called, but the profile
    # (executor: slurm, default-resources, ...) is parsed and the slurm plugin must be installed
    proc = snakemake("-n", "--profile", str(ROOT / "profiles" / "slurm"), "--configfile", str(TINY), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "profiles/slurm" in out and "Job stats" in out and "train" in out


def test_lint_is_clean(tmp_path):
    proc = snakemake("--lint", "--configfile", str(TINY), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_snakefmt_check_is_clean():
    exe = Path(sys.executable).parent / "snakefmt"
    if not exe.exists() and shutil.which("snakefmt") is None:
        pytest.skip("snakefmt is not installed (pip install -e '.[test]')")
    files = [str(SNAKEFILE), *sorted(str(p) for p in (ROOT / "workflow" / "rules").glob("*.smk"))]
    proc = subprocess.run([str(exe) if exe.exists() else "snakefmt", "--check", *files], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_features_file_with_fixed_split_refuses_several_split_seeds(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "fixed.npz", modality_0=rng.normal(size=(60, 4)), modality_1=rng.normal(size=(60, 3)),
             split=np.array(["train"] * 40 + ["val"] * 10 + ["test"] * 10))
    data = {"split_seeds": [0, 1], "datasets": {"fixed": {"source": "features", "path": "fixed.npz"}},
            "studies": {"main": {"datasets": ["fixed"], "ms": [2]}, "ablation": {"datasets": ["fixed"], "ms": [2]},
                        "sensitivity": {"datasets": ["fixed"], "ms": [2]}},
            "generation": {"enabled": False}, "tuning": {"m": 2},
            "report": {"projection": {"dataset": "fixed", "m": 2}}}
    proc = snakemake("-n", "--configfile", str(TINY), str(overlay(tmp_path, "fixed", data)), cwd=tmp_path)
    assert proc.returncode != 0 and "split_seeds" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    # one split seed, but the verdicts' extra split seeds would still repeat the fixed split
    data["split_seeds"] = [0]
    proc = snakemake("-n", "--configfile", str(TINY), str(overlay(tmp_path, "fixed", data)), cwd=tmp_path)
    assert proc.returncode != 0 and "verdict_split_seeds" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    data["report"]["verdict_split_seeds"] = []
    proc = snakemake("-n", "--configfile", str(TINY), str(overlay(tmp_path, "fixed", data)), cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "work/tiny/data/fixed/split0/dataset.npz" in proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- selection script


def _trial(folder: Path, trial: int, value: float, split: str = "val", params: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"trial{trial}.json").write_text(json.dumps({
        "meta/split": split, "meta/objective": "infonce", "meta/params": json.dumps(params or {"temperature": trial}),
        "retrieval/R1/mean": value}))


def _select(tmp_path: Path, cells: list[str], folders: list[Path]) -> tuple[int, Path]:
    sys.path.insert(0, str(ROOT))
    from workflow.scripts import select_trials

    out = tmp_path / "out"
    rc = select_trials.main(["--cells", *cells, "--metrics", *map(str, folders), "--out-json", str(out / "sel.json"),
                             "--out-csv", str(out / "tuning.csv"), "--out-md", str(out / "tuning.md")])
    return rc, out


def test_select_trials_picks_the_best_validation_value(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for t, v in enumerate([10.0, 30.0, float("nan"), 30.0]):  # tie 30 -> trial 1; NaN never wins
        _trial(a, t, v)
    for t, v in enumerate([5.0, 4.0, 3.0, 2.0]):
        _trial(b, t, v)
    rc, out = _select(tmp_path, ["d:x", "d:y"], [a, b])
    assert rc == 0
    sel = json.loads((out / "sel.json").read_text())
    assert sel["d"]["x"]["trial"] == 1 and sel["d"]["x"]["params"] == {"temperature": 1}
    assert sel["d"]["y"]["trial"] == 0 and sel["d"]["y"]["value"] == 5.0
    import pandas as pd

    table = pd.read_csv(out / "tuning.csv")
    assert len(table) == 8 and table["selected"].sum() == 2
    assert "**yes**" in (out / "tuning.md").read_text()


@pytest.mark.parametrize("problem", ["test split", "unequal", "no metric"])
def test_select_trials_refuses_and_writes_nothing(tmp_path, problem):
    a, b = tmp_path / "a", tmp_path / "b"
    for t in range(3):
        _trial(a, t, float(t), split="test" if problem == "test split" and t == 1 else "val")
        if problem != "unequal" or t < 2:
            _trial(b, t, float(t))
    if problem == "no metric":
        (b / "trial0.json").write_text(json.dumps({"meta/split": "val"}))
    rc, out = _select(tmp_path, ["d:x", "d:y"], [a, b])
    assert rc == 1 and not out.exists()


def test_the_verdicts_variants_train_at_their_extra_split_seeds():
    """report.verdict_split_seeds: the baseline, the method, the full method and the controls train at
    split_seeds and these; every other cell at split_seeds alone; the data stage, the commands, the
    snapshot and the aggregation plan all follow the same units."""
    from harness.plan import Plan
    from harness.report import aggregate
    from tests.test_security_workflow import _merged_config

    config = _merged_config()
    config["report"]["verdict_split_seeds"] = [2, 3]
    plan = Plan(config, str(ROOT))
    verdict = set(plan.verdict_variants())
    assert {"infonce", "unialign"} <= verdict and "unialign_default" not in verdict
    for (d, v), splits in plan.cell_splits.items():
        assert splits == ([0, 1, 2, 3] if v in verdict else [0, 1]), (d, v)
    assert plan.dataset_splits("synthetic") == [0, 1, 2, 3]
    assert {f"{plan.data_dir('synthetic', k)}/dataset.npz" for k in (2, 3)} <= set(plan.dataset_files("synthetic"))
    job = plan.job_of[("synthetic", "infonce")]
    cmds = plan.train_commands("synthetic", job, lambda d, v: {})
    assert len(cmds) == plan.n_runs("synthetic", job)
    per_variant = {v: sum(1 for c in cmds if f"/{v}/M" in c[-1]) for v in plan.jobs[("synthetic", job)]}
    for v, n in per_variant.items():
        assert n == len(plan.cells[("synthetic", v)]) * len(plan.seeds) * (4 if v in verdict else 2), v
    snapshot = json.loads(plan.resolved_config())
    cells = {(c["dataset"], c["variant"]): c for c in snapshot["cells"]}
    assert cells[("synthetic", "unialign")]["split_seeds"] == [0, 1, 2, 3]
    assert cells[("synthetic", "unialign_default")]["split_seeds"] == [0, 1]
    planned = aggregate._planned(snapshot, [cells[("synthetic", "unialign")]["runs"].rsplit("/", 1)[0]], "runs")
    assert {k for (_, v, _, _, k) in planned if v == "unialign"} == {0, 1, 2, 3}
