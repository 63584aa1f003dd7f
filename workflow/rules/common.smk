# The configuration checks and the job plan shared by every rule: harness/plan.py computes them
# (tested as plain Python, tests/test_plan.py); this file binds the plan to the names the rules read.
# Each train / evaluate / generate job covers one (dataset, job) cell -- one variant of the main
# study, or the pack of small variants a packed study adds -- with every M and every seed, run in a
# single process by workflow/scripts/harness_batch.py.  Every path lies under `output_root`.

import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

BASEDIR = os.path.abspath(workflow.basedir)
# `python -m harness` must import the repository's packages from any working directory
# (--directory, cluster nodes); the Snakefile is re-read in every remote job, so this travels.
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in [BASEDIR, os.environ.get("PYTHONPATH", "")] if p))
sys.path.insert(0, BASEDIR)

from harness.plan import Plan, PlanError, schema_error_message  # noqa: E402
from harness.report import FIGURES, TABLES  # noqa: E402  the one list of tables and figures

try:
    validate(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))
except Exception as exc:  # Snakemake's WorkflowError (of its interface package) holding the cause
    # one paragraph naming the key and the allowed keys, not the schema dump
    cause = next((c for c in (exc.__cause__, exc.__context__, *exc.args) if hasattr(c, "validator")), None)
    if cause is None:
        raise
    raise WorkflowError(schema_error_message(cause)) from None


def _default_python():
    # the interpreter running Snakemake (e.g. the project's .venv), unless rules run in their
    # conda environment (--use-conda / --sdm conda), where `python` is that environment's
    try:
        methods = {str(m).lower() for m in workflow.deployment_settings.deployment_method}
    except AttributeError:
        methods = set()
    return "python" if any("conda" in m for m in methods) else sys.executable


PYTHON = config.get("python") or _default_python()
try:
    PLAN = Plan(config, BASEDIR, PYTHON)
except PlanError as exc:
    raise WorkflowError(str(exc)) from None

# ----------------------------------------------------------------------------- names the rules read
out = PLAN.out
JOBS, GEN_JOBS, TUNING = PLAN.jobs, PLAN.gen_jobs, PLAN.tuning
VALIDATION, THROUGHPUT = PLAN.validation, PLAN.throughput
rule_resource = PLAN.rule_resource
scaled_runtime = PLAN.scaled_runtime
batch_shell = PLAN.batch_shell
evaluate_commands = PLAN.evaluate_commands
generate_commands = PLAN.generate_commands
tune_commands = PLAN.tune_commands
_tuned_cells = PLAN.tuned_cells
paper_reference = PLAN.paper_reference
_cell_dirs = PLAN.cell_dirs
_upstream_benchmarks = PLAN.upstream_benchmarks
_figure_runs = PLAN.figure_runs
_resolved_config = PLAN.resolved_config
_SNAPSHOT = PLAN.snapshot


def final_targets():
    return PLAN.final_targets(TABLES, FIGURES)


def data_args(wildcards):
    return PLAN.data_args(wildcards.dataset, wildcards.split)


def data_inputs(wildcards):
    return PLAN.data_inputs(wildcards.dataset)


def dataset_files(wildcards):
    return PLAN.dataset_files(wildcards.dataset)


def _projection_inputs(wildcards):
    return PLAN.projection_inputs()


# ----------------------------------------------------------------------------- tuning checkpoint
def _selection():
    return checkpoints.select_trials.get().output.selected


def selection_input(wildcards):
    """The selection file, for jobs that hold a tuned variant (waits for the checkpoint)."""
    return [_selection()] if PLAN.holds_tuned(wildcards.dataset, wildcards.job) else []


def train_commands(dataset, job):
    return PLAN.train_commands(dataset, job, lambda d, v: PLAN.variant_params(d, v, _selection))


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_.-]*",
    job="[A-Za-z0-9][A-Za-z0-9_.-]*",
    variant="[A-Za-z0-9][A-Za-z0-9_.-]*",
    split="[0-9]+",


# a stale results/config.json is rewritten here (also in a dry run): see Plan.refresh_snapshot
PLAN.refresh_snapshot()
