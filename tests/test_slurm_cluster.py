"""The tiny sweep through profiles/slurm on a live SLURM cluster, byte-identical to a local run.

Needs a cluster (tools/slurm/cluster.sh brings up a single-node one on localhost) and
UNIALIGN_SLURM=1; otherwise every test here is skipped, so the default run stays fast:

    tools/slurm/cluster.sh start                 # or: start --accounting (slurmdbd + MariaDB)
    eval "$(tools/slurm/cluster.sh env)"
    UNIALIGN_SLURM=1 python -m pytest -m slurm -s tests/test_slurm_cluster.py
    tools/slurm/cluster.sh stop

The repository is copied once (sources only, no outputs) and the copy copied again per run, so
both runs see the same tree however the checkout changes meanwhile: one copy runs
`snakemake --cores 2 --configfile config/tiny.yaml`, the other
`python tools/slurm/snakemake_slurm.py --configfile config/tiny.yaml` (snakemake --profile
profiles/slurm under the watchdog). Wall times are printed (pytest -s); docs/slurm.md records them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# top-level entries that are outputs, caches or environments, never copied
SKIP_TOP = {".git", ".venv", ".snakemake", "results", "figures", "data", "runs", "metrics", "generation", "logs",
            "benchmarks", "resources", "tuning", "work", "tmp", "report.html", ".pytest_cache", ".hypothesis",
            ".benchmarks"}
SKIP_ANY = shutil.ignore_patterns("__pycache__", "*.egg-info", ".snakemake")

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.environ.get("UNIALIGN_SLURM") != "1",
                       reason="needs a SLURM cluster and UNIALIGN_SLURM=1 (tools/slurm/cluster.sh, docs/slurm.md)"),
]


def slurm_config() -> dict[str, str]:
    proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        pytest.fail("UNIALIGN_SLURM=1 but the SLURM controller does not answer `scontrol show config` "
                    f"(start one with tools/slurm/cluster.sh start; eval \"$(tools/slurm/cluster.sh env)\"):\n"
                    f"{proc.stderr[-2000:]}")
    config = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def env_for(copy: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(copy), PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(extra)
    return env


def copy_tree(src: Path, dst: Path) -> Path:
    def ignore(folder, names):
        skipped = set(SKIP_ANY(folder, names))
        if Path(folder) == src:
            skipped |= SKIP_TOP & set(names)
        return skipped

    shutil.copytree(src, dst, ignore=ignore, symlinks=True)
    return dst


def summary_of(copy: Path) -> Path:
    """results/summary.csv wherever the workflow's output root puts it (a results/ folder at any depth)."""
    found = sorted(p for p in copy.rglob("summary.csv")
                   if "results" in p.relative_to(copy).parts and ".snakemake" not in p.parts)
    assert len(found) == 1, f"expected one results/**/summary.csv under {copy}, found {found}"
    return found[0]


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float, log: Path) -> tuple[int, float, str]:
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                              check=False)
    wall = time.perf_counter() - start
    return proc.returncode, wall, log.read_text()


@pytest.fixture(scope="module")
def cluster():
    config = slurm_config()
    accounting = config.get("AccountingStorageType") == "accounting_storage/slurmdbd"
    print(f"\nSLURM {config.get('SLURM_VERSION', '?')}, cluster {config.get('ClusterName', '?')}, "
          f"AccountingStorageType={config.get('AccountingStorageType')}, MinJobAge={config.get('MinJobAge')}")
    return {"accounting": accounting, "config": config}


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    return copy_tree(ROOT, tmp_path_factory.mktemp("slurm") / "snapshot")


@pytest.fixture(scope="module")
def local_run(snapshot):
    copy = copy_tree(snapshot, snapshot.parent / "local")
    rc, wall, log = run([str(VENV_BIN / "snakemake"), "--cores", "2", "--configfile", "config/tiny.yaml"], copy,
                        env_for(copy), 1200, copy.parent / "local.log")
    print(f"local --cores 2: {wall:.0f} s wall (load {os.getloadavg()[0]:.1f})")
    assert rc == 0, log[-6000:]
    return copy, wall


@pytest.fixture(scope="module")
def slurm_run(cluster, snapshot):
    copy = copy_tree(snapshot, snapshot.parent / "cluster")
    cmd = [sys.executable, "tools/slurm/snakemake_slurm.py", "--configfile", "config/tiny.yaml"]
    rc, wall, log = run(cmd, copy, env_for(copy), 1500, copy.parent / "cluster.log")
    print(f"profiles/slurm: {wall:.0f} s wall (load {os.getloadavg()[0]:.1f})")
    assert rc == 0, log[-8000:]
    return copy, wall, log


def test_tiny_sweep_on_slurm_matches_local_run(local_run, slurm_run):
    local, _ = local_run
    cluster_copy, _, log = slurm_run
    assert "has been submitted with SLURM jobid" in log, "no job went through SLURM"
    a, b = summary_of(local), summary_of(cluster_copy)
    assert a.relative_to(local) == b.relative_to(cluster_copy)
    assert a.read_bytes() == b.read_bytes(), "results/summary.csv differs between the local and the SLURM run"


def test_profile_uses_a_status_command_that_works_here(cluster, slurm_run):
    copy, _, log = slurm_run
    # plugin 2.x logs failed status queries at debug level only; this message means it had switched
    assert "Falling back to 'sacct'" not in log
    from snakemake.profiles import ProfileConfigFileParser

    with open(copy / "profiles" / "slurm" / "config.yaml") as f:
        profile = dict(ProfileConfigFileParser().parse(f))
    if not cluster["accounting"]:
        assert profile["slurm-status-command"] == "squeue"
    else:
        assert any(r.startswith("slurm_account=") for r in profile["default-resources"])
        assert "No SLURM account given" not in log  # the plugin's broken guess is never needed


def test_report_builds_after_the_slurm_run(slurm_run):
    copy, _, _ = slurm_run
    rc, _, log = run([str(VENV_BIN / "snakemake"), "--configfile", "config/tiny.yaml", "--report", "report.html"],
                     copy, env_for(copy), 600, copy.parent / "report.log")
    assert rc == 0, log[-4000:]
    html = (copy / "report.html").read_text(errors="replace")
    assert len(html) > 10_000
    assert "Where each verdict comes from" in html  # workflow/report/workflow.rst, the landing page


def test_unconfirmed_job_ends_the_run_with_an_error(cluster, snapshot):
    """sacct on a cluster without accounting: every status query fails and plugin 2.x would wait for
    ever; the watchdog stops the run once SLURM has finished a job Snakemake never confirmed."""
    if cluster["accounting"]:
        pytest.skip("sacct works on this cluster (accounting): nothing to lose track of")
    copy = copy_tree(snapshot, snapshot.parent / "unconfirmed")
    cmd = [sys.executable, "tools/slurm/snakemake_slurm.py", "--confirm-timeout", "20", "--poll", "2",
           "--grace", "20", "--configfile", "config/tiny.yaml"]
    rc, wall, log = run(cmd, copy, env_for(copy, UNIALIGN_SLURM_STATUS_COMMAND="sacct"), 900,
                        copy.parent / "unconfirmed.log")
    print(f"unconfirmed job: stopped after {wall:.0f} s (load {os.getloadavg()[0]:.1f})")
    assert rc == 3, log[-6000:]
    assert "Snakemake has not registered them" in log and "UNIALIGN_SLURM_STATUS_COMMAND" in log, log[-4000:]
    assert "Slurm accounting storage is disabled" in log  # the diagnosis names the cause
    run_id = next(line.split("SLURM run ID:")[1].split()[0] for line in log.splitlines() if "SLURM run ID:" in line)
    time.sleep(2)
    queue = subprocess.run(["squeue", f"--name={run_id}", "--noheader", "--format=%i|%T"], capture_output=True,
                           text=True, timeout=30, check=False).stdout.split()
    assert not [row for row in queue if row.split("|")[1] in ("PENDING", "RUNNING")], queue
