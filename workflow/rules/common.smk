# Configuration checks and the job plan shared by every rule.
#
# Job granularity: torch takes ~2.5 s to import on the reference 2-core machine, so one job per
# run would spend most of the sweep starting Python.  Each train / evaluate / generate job
# therefore covers one (dataset, variant) cell: every M the studies ask of that variant and every
# seed, run one after the other in a single process by workflow/scripts/harness_batch.py, which
# calls harness.cli.main with exactly the argv of `python -m harness ...` (set `in_process: false`
# to start one process per command instead).  Each job writes one directory:
#
#   data/{dataset}/dataset.npz, dataset.json
#   runs/{dataset}/{variant}/M{M}/seed{S}/      model.pt, history.csv, train.json   (train)
#   metrics/{dataset}/{variant}/M{M}_seed{S}.json                                 (evaluate)
#   generation/{dataset}/{variant}/M{M}_seed{S}/ generation.json, samples.png       (generate)
#   results/ tables, summary.csv, claims;  figures/ PDF and PNG;  logs/;  benchmarks/

import json
import shlex
import sys
from collections import defaultdict

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

validate(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))

BASEDIR = os.path.abspath(workflow.basedir)
# `python -m harness` must import the repository's packages from any working directory
# (--directory, cluster nodes); the Snakefile is re-read in every remote job, so this travels.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in [BASEDIR, os.environ.get("PYTHONPATH", "")] if p
)
PYTHON = config.get("python", "python")
RUNNER = os.path.join(BASEDIR, "workflow", "scripts", "harness_batch.py")
UCI_MODALITIES = 6

SEEDS = sorted(int(s) for s in config["seeds"])
DATASETS = config["datasets"]
VARIANTS = config["variants"]
STUDIES = config["studies"]
GENERATION = config.get("generation", {}) or {}
VALIDATION = config.get("validation", {}) or {}
THROUGHPUT = config.get("throughput", {}) or {}
REPORT = config.get("report", {}) or {}
RESOURCES = config.get("resources", {}) or {}


def _fail(message):
    raise WorkflowError(f"invalid configuration: {message}")


# ----------------------------------------------------------------------------- cross-checks
for _study, _spec in STUDIES.items():
    for _v in _spec["variants"]:
        if _v not in VARIANTS:
            _fail(f"studies.{_study}.variants names {_v!r}, which is not defined under variants")
    for _d in _spec["datasets"]:
        if _d not in DATASETS:
            _fail(f"studies.{_study}.datasets names {_d!r}, which is not defined under datasets")
    for _d in _spec.get("ms_by_dataset", {}):
        if _d not in _spec["datasets"]:
            _fail(f"studies.{_study}.ms_by_dataset names {_d!r}, which is not among the study's datasets")
    if "base" in _spec and _spec["base"] not in VARIANTS:
        _fail(f"studies.{_study}.base names {_spec['base']!r}, which is not defined under variants")
if GENERATION.get("enabled", True):
    for _v in GENERATION.get("variants", []):
        if _v not in VARIANTS:
            _fail(f"generation.variants names {_v!r}, which is not defined under variants")
    for _d in GENERATION.get("datasets", []):
        if _d not in DATASETS:
            _fail(f"generation.datasets names {_d!r}, which is not defined under datasets")
for _key in ("baseline", "method", "method_tuple"):
    if _key in REPORT and REPORT[_key] not in VARIANTS:
        _fail(f"report.{_key} names {REPORT[_key]!r}, which is not defined under variants")


# ----------------------------------------------------------------------------- the plan
def _plan():
    """(dataset, variant) -> sorted list of M to train; generation cells likewise."""
    cells = defaultdict(set)
    for spec in STUDIES.values():
        for d in spec["datasets"]:
            ms = spec.get("ms_by_dataset", {}).get(d, spec["ms"])
            for v in spec["variants"]:
                cells[(d, v)].update(int(m) for m in ms)
    gen = defaultdict(set)
    if GENERATION.get("enabled", True):
        for d in GENERATION.get("datasets", []):
            for v in GENERATION.get("variants", []):
                gen[(d, v)].update(int(m) for m in GENERATION.get("ms", []))
                cells[(d, v)].update(int(m) for m in GENERATION.get("ms", []))
    return (
        {k: sorted(v) for k, v in sorted(cells.items())},
        {k: sorted(v) for k, v in sorted(gen.items()) if v},
    )


CELLS, GEN_CELLS = _plan()
USED_DATASETS = sorted({d for d, _ in CELLS})


def dataset_modalities(dataset):
    spec = DATASETS[dataset]
    needed = max(m for (d, _), ms in CELLS.items() if d == dataset for m in ms)
    if spec["source"] == "uci":
        if needed > UCI_MODALITIES:
            _fail(f"dataset {dataset!r} (uci) has {UCI_MODALITIES} views but a study asks for M={needed}")
        return spec.get("n_modalities", UCI_MODALITIES)
    n = spec.get("n_modalities", needed)
    if n < needed:
        _fail(f"datasets.{dataset}.n_modalities={n} but a study asks for M={needed}")
    return n


for (_d, _v), _ms in CELLS.items():
    dataset_modalities(_d)
    _anchor = VARIANTS[_v].get("params", {}).get("anchor")
    if _anchor is not None and _anchor >= min(_ms):
        _fail(
            f"variants.{_v}.params.anchor={_anchor} is not a modality index for M={min(_ms)} "
            f"(dataset {_d}); anchors must be < M"
        )
_proj = REPORT.get("projection", {})
if _proj:
    for _key in ("baseline", "method"):
        _v = REPORT.get(_key)
        if _v and (_proj.get("dataset"), _v) in CELLS and _proj.get("m") not in CELLS[(_proj["dataset"], _v)]:
            _fail(f"report.projection.m={_proj.get('m')} is not trained for {_v} on {_proj['dataset']}")


def training_settings(dataset, variant):
    out = dict(config["training"])
    out.update(DATASETS[dataset].get("training", {}))
    out.update(VARIANTS[variant].get("training", {}))
    return out


def _param_args(params):
    # values are written as JSON, which the harness parses with yaml.safe_load: strings stay
    # strings ("off", "median"), booleans and null keep their type.
    args = []
    for key in sorted(params):
        args += ["--param", f"{key}={json.dumps(params[key])}"]
    return args


def run_dir(dataset, variant, m, seed):
    return f"runs/{dataset}/{variant}/M{m}/seed{seed}"


def train_commands(dataset, variant):
    spec = VARIANTS[variant]
    t = training_settings(dataset, variant)
    device = "cuda" if rule_resource("train", "gpu", 0) else "cpu"
    cmds = []
    for m in CELLS[(dataset, variant)]:
        for seed in SEEDS:
            argv = ["train", "--data", f"data/{dataset}", "--objective", spec["objective"]]
            argv += _param_args(spec.get("params", {}) or {})
            argv += ["--n-modalities", m, "--seed", seed, "--epochs", t["epochs"],
                     "--batch-size", t["batch_size"], "--dim", t["dim"], "--hidden", t["hidden"],
                     "--depth", t["depth"], "--lr", t["lr"], "--weight-decay", t["weight_decay"]]
            if "eval_every" in t:
                argv += ["--eval-every", t["eval_every"]]
            if device != "cpu":
                argv += ["--device", device]
            argv += ["--out", run_dir(dataset, variant, m, seed), "--quiet"]
            cmds.append([str(a) for a in argv])
    return cmds


def evaluate_commands(dataset, variant):
    return [
        ["evaluate", "--run", run_dir(dataset, variant, m, seed),
         "--out", f"metrics/{dataset}/{variant}/M{m}_seed{seed}.json"]
        for m in CELLS[(dataset, variant)] for seed in SEEDS
    ]


def generate_commands(dataset, variant):
    return [
        ["generate", "--run", run_dir(dataset, variant, m, seed),
         "--out", f"generation/{dataset}/{variant}/M{m}_seed{seed}"]
        for m in GEN_CELLS[(dataset, variant)] for seed in SEEDS
    ]


def batch_shell(commands):
    """The shell line of one job: its harness commands, each one quoted argument."""
    mode = [] if config.get("in_process", True) else ["--subprocess"]
    parts = [PYTHON, RUNNER, *mode, "--python", PYTHON, "--"]
    parts += [shlex.join(c) for c in commands]
    return shlex.join(parts)


def rule_resource(rule_name, key, default):
    return RESOURCES.get(rule_name, {}).get(key, default)


def n_runs(wildcards, rule_name="train"):
    cells = GEN_CELLS if rule_name == "generate" else CELLS
    return len(cells[(wildcards.dataset, wildcards.variant)]) * len(SEEDS)


def scaled_runtime(rule_name, per_run_minutes):
    def _runtime(wildcards, attempt):
        base = rule_resource(rule_name, "runtime", None)
        if base is not None:
            return base * attempt
        return max(5, int(per_run_minutes * n_runs(wildcards, rule_name) + 2)) * attempt

    return _runtime


def final_targets():
    targets = ["results/summary.csv", "results/benchmarks.csv", "results/claims.md", "results/claims.csv"]
    targets += expand("results/tables/{table}.{ext}", table=TABLES, ext=("csv", "md", "tex"))
    targets += expand("figures/{figure}.{ext}", figure=FIGURES, ext=("pdf", "png"))
    if THROUGHPUT.get("enabled", False):
        targets += ["results/throughput.csv", "figures/throughput.png"]
    return targets


def paper_reference():
    path = config.get("paper_reference", os.path.join(BASEDIR, "..", "shared", "paper_reference.csv"))
    path = path if os.path.isabs(path) else os.path.join(BASEDIR, path)
    return [os.path.normpath(path)] if os.path.exists(path) else []


TABLES = [
    "table1_retrieval",
    "table2_ablation",
    "table3_generation",
    "table5_sensitivity",
    "table_conflicts",
    "table_divergence_gap",
    "paper_reference",
]
FIGURES = [
    "conflicts_vs_m",
    "divergence_gap_vs_m",
    "retrieval_vs_m",
    "alignment_uniformity",
    "projection_pca",
    "generated_samples",
    "proxy_vs_divergence",
    "estimator_validation",
]


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_.-]*",
    variant="[A-Za-z0-9][A-Za-z0-9_.-]*",
