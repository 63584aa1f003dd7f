"""A loss defined outside the repository, installed as a package, through the whole tiny sweep.

``examples/temperature_free`` is pip-installed (editable, no dependencies, no build isolation: no
network) into the test environment; its entry point makes ``temperature_free`` an objective, and one
overlay (examples/temperature_free/tiny.yaml) puts it into the tiny sweep's main study, tuning and
claims. The package is uninstalled afterwards.
"""

from __future__ import annotations

import csv
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from test_workflow import _env, _snakemake_exe, copy_working_tree, overlay

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "temperature_free"
DIST = "unialign-tfree"
LABEL = "Temperature-free InfoNCE (tuned pairing)"

pytestmark = pytest.mark.skipif(not (Path(sys.executable).parent / "snakemake").exists(),
                                reason="snakemake is not installed")


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed():
    """The example installed into this environment for the module's tests, then removed."""
    from objectives import registry

    already = _pip("show", DIST).returncode == 0
    if not already:
        proc = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "-e", str(EXAMPLE))
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    finders = list(sys.meta_path)
    site.addsitedir(sysconfig.get_paths()["purelib"])  # this process reads the new .pth (a new one would)
    registry.refresh()
    yield
    if not already:
        _pip("uninstall", "-y", DIST)
    sys.meta_path[:] = [f for f in sys.meta_path if f in finders]
    for name in [m for m in sys.modules if m.split(".")[0] == "unialign_tfree"]:
        del sys.modules[name]
    registry.refresh()


def test_the_entry_point_registers_the_loss(installed):
    import torch
    import torch.nn.functional as F

    import objectives
    from objectives import registry

    assert "temperature_free" in objectives.available()
    entry = registry.get("temperature_free")
    assert entry.source == f"entry point of {DIST}" and entry.search == {"pairs": ["all", "anchor"]}
    # a naive reference: CLIP's cross-entropy both ways on atanh(cos) logits, averaged over the pairs
    zs = [torch.randn(16, 8, dtype=torch.float64) for _ in range(3)]
    zn = [F.normalize(z, dim=-1) for z in zs]
    labels = torch.arange(16)
    ref = []
    for m, n in ((0, 1), (0, 2), (1, 2)):
        logits = torch.atanh((zn[m] @ zn[n].T).clamp(-1 + 1e-4, 1 - 1e-4))
        ref.append(0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)))
    assert float(objectives.build("temperature_free")(zs).loss) == pytest.approx(float(sum(ref) / 3), rel=1e-12)


def test_tiny_sweep_judges_the_outside_loss_beside_unialign(installed, tmp_path):
    """One overlay: its rows in the tables, its tuning at the same budget, its own claim verdicts."""
    clone = copy_working_tree(tmp_path / "clone")
    # the module line works as well as the entry point: a second variant uses it
    extra = overlay(tmp_path, "module", {
        "variants": {"tfree_module": {"module": "unialign_tfree.losses:TemperatureFreeInfoNCE",
                                      "params": {"pairs": "anchor"}}},
        "studies": {"main": {"variants": ["infonce", "unialign", "temperature_free", "tfree_module"]}},
        "generation": {"variants": ["infonce", "unialign"]},
    })
    proc = subprocess.run([_snakemake_exe(), "--cores", "2", "--configfile", "config/tiny.yaml",
                           "examples/temperature_free/tiny.yaml", str(extra)],
                          cwd=clone, env=_env(clone), capture_output=True, text=True, timeout=900)
    work = clone / "work" / "tiny"
    if proc.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in sorted((work / "logs").rglob("*.log")))
        pytest.fail(f"sweep failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}\n{logs}")
    summary = list(csv.DictReader((work / "results" / "summary.csv").open()))
    mine = [r for r in summary if r["variant"] == "temperature_free"]
    assert mine and {r["objective"] for r in mine} == {"temperature_free"}
    assert {r["objective"] for r in summary if r["variant"] == "tfree_module"} == {
        "unialign_tfree.losses:TemperatureFreeInfoNCE"}
    assert len(mine) == len([r for r in summary if r["variant"] == "infonce"])  # every M and unit
    # tuning: the same number of trials as every other tuned variant, drawn from its declared space
    tuning = list(csv.DictReader((work / "results" / "tuning.csv").open()))
    trials = {v: sum(r["variant"] == v for r in tuning) for v in {r["variant"] for r in tuning}}
    assert trials["temperature_free"] == trials["infonce"] == trials["unialign"]
    assert {r["params"] for r in tuning if r["variant"] == "temperature_free"} <= {
        '{"pairs": "all"}', '{"pairs": "anchor"}'}
    # tables and the verdict: its rows beside UniAlign's, against InfoNCE
    assert LABEL in (work / "results" / "tables" / "table1_retrieval.md").read_text()
    claims = (work / "results" / "claims.md").read_text()
    assert f"## Overall: {LABEL} (challenger rows, against the same baseline)" in claims
    rows = list(csv.DictReader((work / "results" / "claims.csv").open()))
    ours = [r for r in rows if r["role"] == "challenger"]
    assert ours and all(r["comparison"].startswith(LABEL) for r in ours)
    assert {r["claim"] for r in ours} >= {"2", "3", "4", "5"}
    assert any(r["role"] == "primary" and r["comparison"].startswith("UniAlign") for r in rows)
    assert (work / "figures" / "retrieval_vs_m.png").exists()
