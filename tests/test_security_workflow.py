"""Config values cannot reach the shell: schema patterns, quoted placeholders, inert plan commands."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.test_workflow import ROOT, SCHEMA, TINY, overlay, snakemake

RULES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
# params built already quoted (shlex.join / shlex.quote in Python) or numbers: a second quote would break them
# built with shlex.quote / shlex.join in the rule
PREQUOTED = {"params.cmd", "params.reference", "params.projection", "params.samples", "params.perturbed",
             "params.saturation", "params.validation", "params.doubled", "threads"}


def _merged_config() -> dict:
    from snakemake.utils import validate

    def merge(a, b):
        out = copy.deepcopy(a)
        for key, value in b.items():
            both = isinstance(value, dict) and isinstance(out.get(key), dict)
            out[key] = merge(out[key], value) if both else copy.deepcopy(value)
        return out

    config = merge(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), yaml.safe_load(TINY.read_text()))
    validate(config, str(SCHEMA))
    return config


def test_output_root_with_shell_metacharacters_is_refused(tmp_path):
    bad = f"work/a;touch {tmp_path}/x #"
    proc = snakemake("-n", "--configfile", str(TINY), str(overlay(tmp_path, "bad", {"output_root": bad})), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "output_root" in out and "does not match" in out, out[-3000:]
    assert not (tmp_path / "x").exists()


def test_every_shell_placeholder_is_quoted():
    unquoted, blocks = [], 0
    for path in RULES:
        assert path.read_text().count("shell:") == len(re.findall(r"^\s+shell:\n((?:\s+\".*\"\n?)+)", path.read_text(), flags=re.M)), path
        for block in re.findall(r"^\s+shell:\n((?:\s+\".*\"\n?)+)", path.read_text(), flags=re.M):
            for field in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", block):
                blocks += 1
                name, _, spec = field.partition(":")
                if name not in PREQUOTED and not spec.endswith("q"):
                    unquoted.append(f"{path.name}: {{{field}}}")
    assert not unquoted, unquoted
    assert blocks > 20  # the pattern did find the shell blocks' placeholders


@pytest.mark.parametrize("key,value", [("variants", {"a;touch x": {"objective": "infonce"}}),
                                       ("datasets", {"d$(id)": {"source": "synthetic"}}),
                                       ("python", "python;id"), ("paper_reference", "a b.csv")])
def test_metacharacters_in_names_and_paths_fail_the_schema(key, value):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = _merged_config()
    config[key] = dict(config[key], **value) if isinstance(value, dict) else value
    with pytest.raises(WorkflowError):
        validate(config, str(SCHEMA))


def test_plan_command_lines_round_trip_through_the_shell():
    from harness.plan import Plan

    python = "/opt/my env/py;thon $(id)"
    plan = Plan(_merged_config(), str(ROOT), python)
    hostile = [["train", "--out", "a b;touch x #", "--label", "`id` $HOME 'q\""]]
    batches = [hostile] + [plan.evaluate_commands(d, j) for (d, j) in plan.jobs]
    batches += [plan.generate_commands(d, j) for (d, j) in plan.gen_jobs]
    batches += [plan.tune_commands(d, v) for (d, v) in plan.tuned_cells()]
    batches += [plan.train_commands(d, j, lambda d, v: {}) for (d, j) in plan.jobs]
    for commands in batches:
        words = shlex.split(plan.batch_shell(commands))
        assert words[0] == python and words[words.index("--") + 1:] == [shlex.join(c) for c in commands]
        assert [shlex.split(w) for w in words[words.index("--") + 1:]] == commands
