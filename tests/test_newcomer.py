"""A newcomer's own data, exactly as config/README.md documents it.

The features example (the Python snippet, the `my.yaml` overlay and the command in its first line)
is read from the document's text and run as written: a dry run of the whole sweep, then its
smallest real part (the data rule and the tuning of one variant at the tuned M). `harness compare`
runs on the same features, as a .npz and as a dataset folder. If the document's example breaks,
these tests fail.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "config" / "README.md"

needs_snakemake = pytest.mark.skipif(
    shutil.which("snakemake") is None and not (Path(sys.executable).parent / "snakemake").exists(),
    reason="snakemake is not installed")


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT),
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def doc_example() -> tuple[str, str, list[str]]:
    """(python snippet, my.yaml text, the snakemake command of its first line) from the README."""
    text = README.read_text()
    assert "```python\n" in text, "config/README.md lost its features snippet"
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    mine = [b for b in blocks if b.startswith("# my.yaml")]
    assert len(mine) == 1, "config/README.md must hold one ```yaml block starting with '# my.yaml'"
    first = mine[0].splitlines()[0]
    assert ":" in first and "snakemake" in first, f"the my.yaml block's first line names no command: {first!r}"
    command = shlex.split(first.split(":", 1)[1])
    return snippet, mine[0], command


@pytest.fixture
def newcomer(tmp_path):
    """A folder holding what the README has the user write: my_features.npz and my.yaml."""
    snippet, yaml_text, command = doc_example()
    subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, check=True, timeout=60)
    assert (tmp_path / "my_features.npz").exists(), "the README snippet wrote no my_features.npz"
    (tmp_path / "my.yaml").write_text(yaml_text)
    return tmp_path, command


def _snakemake(command: list[str], extra: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    assert command[0] == "snakemake", command
    exe = Path(sys.executable).parent / "snakemake"
    # the user runs it from the repository's root; the test from its own folder, so -s names the Snakefile
    argv = [str(exe) if exe.exists() else "snakemake", "-s", str(ROOT / "Snakefile"), *extra, *command[1:]]
    if "all" in argv:  # `--cores all`: the tests share 2 cores
        argv[argv.index("all")] = "2"
    return subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def test_the_doc_example_has_three_modalities_and_names_its_overlay():
    snippet, yaml_text, command = doc_example()
    assert 'np.savez("my_features.npz"' in snippet and "modality_2=" in snippet and "modality_3=" not in snippet
    assert command[:1] == ["snakemake"] and "--configfile" in command and "my.yaml" in command


@needs_snakemake
def test_the_doc_example_plans_as_written(newcomer):
    folder, command = newcomer
    proc = _snakemake(command, ["-n"], folder, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for path in ("work/mine/data/mine/split0/dataset.npz", "work/mine/data/mine/split2/dataset.npz",
                 "work/mine/tuning/mine/infonce/metrics", "work/mine/results/summary.csv",
                 "work/mine/figures/projection_pca.png"):
        assert path in out, f"the README's features sweep plans no {path}:\n{out[-3000:]}"


@needs_snakemake
def test_the_doc_example_runs_its_first_jobs(newcomer):
    """The smallest real part of the sweep: the data rule and the tuning trials of one variant, at
    the tuned M of a 3-modality file."""
    folder, command = newcomer
    target = "work/mine/tuning/mine/infonce/metrics"
    proc = _snakemake(command, [target], folder, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    trials = sorted((folder / target).glob("trial*.json"))
    assert trials, f"no trial metrics in {target}"
    metrics = json.loads(trials[0].read_text())
    assert metrics["meta/split"] == "val" and metrics["meta/n_modalities"] == 3
    assert metrics["meta/modality_names"] == "image,text,audio"
    assert 0 <= metrics["retrieval/R1/mean"] <= 100
    assert (folder / "work/mine/data/mine/split0/dataset.json").exists()


def _compare(folder: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "harness", "compare", "--epochs", "1", "--decoder-epochs", "2", *args]
    return subprocess.run(argv, cwd=folder, env=_env(), capture_output=True, text=True, timeout=240)


def test_compare_runs_on_the_users_features_file_and_dataset_folder(newcomer):
    folder, _ = newcomer
    proc = _compare(folder, "--features", "my_features.npz", "--out", "cmp_npz")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dataset features (M=3)" in proc.stdout and "unialign" in proc.stdout and "infonce" in proc.stdout
    assert "synthetic" not in proc.stdout  # --features alone compares only the user's data
    results = json.loads((folder / "cmp_npz" / "compare.json").read_text())
    assert set(results) == {"features"} and set(results["features"]) == {"unialign", "infonce"}
    assert results["features"]["infonce"]["meta/dataset"] == "features"
    # 90 test rows: below the declared minimum, said on stderr and in the metrics
    assert "the test split has 90 rows (< 200)" in proc.stderr, proc.stderr[-2000:]
    assert results["features"]["infonce"]["meta/n_eval_below_min"] is True
    assert results["features"]["infonce"]["meta/n_eval"] == 90

    # a dataset folder written by `harness data` is used in place
    data = folder / "ds"
    subprocess.run([sys.executable, "-m", "harness", "data", "--dataset", "features", "--features",
                    "my_features.npz", "--n-modalities", "2", "--out", str(data)],
                   cwd=folder, env=_env(), check=True, capture_output=True, timeout=120)
    proc = _compare(folder, "--features", str(data), "--out", "cmp_dir")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dataset features (M=2)" in proc.stdout, proc.stdout
    results = json.loads((folder / "cmp_dir" / "compare.json").read_text())
    assert results["features"]["unialign"]["meta/n_modalities"] == 2


@pytest.mark.parametrize("args, needle", [
    (["--features", "nowhere.npz"], "--features nowhere.npz: no such file or folder"),
    (["--datasets", "features"], "--datasets features needs --features PATH"),
    (["--datasets", "mine"], "--datasets: unknown ['mine']"),
])
def test_compare_refuses_a_missing_features_input_in_one_line(tmp_path, args, needle):
    proc = _compare(tmp_path, *args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_every_results_table_names_its_test_rows(tmp_path):
    """From the committed summary: a `test rows` column in each results table's Markdown, n_eval in its CSV."""
    import pandas as pd

    from harness.report import TABLES
    from harness.report.aggregate import load_config
    from harness.report.tables import TEST_ROWS, write_tables

    results = ROOT / "results"
    summary = pd.read_csv(results / "summary.csv")
    write_tables(summary, pd.read_csv(results / "generation.csv"), load_config(str(results / "config.json")),
                 None, tmp_path)
    expected = {str(n) for n in summary["n_eval"].unique()}
    for name in (t for t in TABLES if t != "paper_reference"):
        md = (tmp_path / f"{name}.md").read_text()
        header = [line for line in md.splitlines() if line.startswith("| dataset")]
        assert header and all(line.rstrip(" |").endswith(TEST_ROWS) for line in header), (name, header)
        body = [line.rsplit("|", 2)[-2].strip() for line in md.splitlines()
                if line.startswith("| ") and not line.startswith("| dataset")]
        assert body and set(body) <= expected, (name, set(body))
        csv = pd.read_csv(tmp_path / f"{name}.csv")
        assert "n_eval" in csv and TEST_ROWS not in csv, name
        assert set(csv["n_eval"].dropna().astype(int).astype(str)) <= expected, name
