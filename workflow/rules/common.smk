# Configuration checks and the job plan shared by every rule.
#
# Job granularity: importing torch and the harness takes ~3-5 s per process on the reference
# 2-core machine, so one job per run would spend most of the sweep starting Python.  Each train /
# evaluate / generate job therefore covers one (dataset, job) cell -- a job is one variant of the
# main study, or a pack of the small variants of a packed study -- with every M and every seed,
# run one after the other in a single process by workflow/scripts/harness_batch.py, which
# calls harness.cli.main with exactly the argv of `python -m harness ...` (set `in_process: false`
# to start one process per command instead).  Each job writes one directory:
#
#   data/{dataset}/dataset.npz, dataset.json
#   runs/{dataset}/{job}/{variant}/M{M}/seed{S}/        model.pt, history.csv, train.json (train)
#   metrics/{dataset}/{job}/{variant}/M{M}_seed{S}.json                             (evaluate)
#   generation/{dataset}/{job}/{variant}/M{M}_seed{S}/  generation.json, samples.png (generate)
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
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in [BASEDIR, os.environ.get("PYTHONPATH", "")] if p)
)


def _default_python():
    # the interpreter running Snakemake (e.g. the project's .venv), unless rules run in their
    # conda environment (--use-conda / --sdm conda), where `python` is that environment's
    try:
        methods = {str(m).lower() for m in workflow.deployment_settings.deployment_method}
    except AttributeError:
        methods = set()
    return "python" if any("conda" in m for m in methods) else sys.executable


PYTHON = config.get("python") or _default_python()
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

# Jobs: a variant of the `main` study is one job per dataset; the variants a packed study
# (`pack_studies`, default ablation and sensitivity: M=3 only, a few seconds of work each) adds
# are trained together in one job per (dataset, study) named "<study>-pack", so that the
# per-process start-up (~3-5 s of imports) is not paid for every small variant.
PACK_STUDIES = list(config.get("pack_studies", ["ablation", "sensitivity"]))
STUDY_ORDER = ["main", "ablation", "sensitivity"]


def _jobs():
    job_of = {}
    for study_name in STUDY_ORDER:
        spec = STUDIES.get(study_name)
        if not spec:
            continue
        for d in spec["datasets"]:
            for v in spec["variants"]:
                if (d, v) not in job_of:
                    job_of[(d, v)] = f"{study_name}-pack" if study_name in PACK_STUDIES else v
    for key in CELLS:
        job_of.setdefault(key, key[1])
    jobs = defaultdict(list)
    for (d, v), job in job_of.items():
        jobs[(d, job)].append(v)
    for (d, job), vs in jobs.items():
        if job.endswith("-pack") and job in VARIANTS:
            _fail(f"variant name {job!r} collides with the name of a packed job; rename the variant")
    return job_of, {k: sorted(v) for k, v in sorted(jobs.items())}


JOB_OF, JOBS = _jobs()
GEN_JOBS = {}
for (_d, _v) in GEN_CELLS:
    GEN_JOBS.setdefault((_d, JOB_OF[(_d, _v)]), []).append(_v)
GEN_JOBS = {k: sorted(v) for k, v in sorted(GEN_JOBS.items())}


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
    return f"runs/{dataset}/{JOB_OF[(dataset, variant)]}/{variant}/M{m}/seed{seed}"


def train_commands(dataset, job):
    device = "cuda" if rule_resource("train", "gpu", 0) else "cpu"
    cmds = []
    for variant in JOBS[(dataset, job)]:
        spec = VARIANTS[variant]
        t = training_settings(dataset, variant)
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


def evaluate_commands(dataset, job):
    return [
        ["evaluate", "--run", run_dir(dataset, variant, m, seed),
         "--out", f"metrics/{dataset}/{job}/{variant}/M{m}_seed{seed}.json"]
        for variant in JOBS[(dataset, job)] for m in CELLS[(dataset, variant)] for seed in SEEDS
    ]


def generate_commands(dataset, job):
    extra = []
    if "decoder_epochs" in GENERATION:
        extra = ["--decoder-epochs", str(GENERATION["decoder_epochs"])]
    return [
        ["generate", "--run", run_dir(dataset, variant, m, seed),
         "--out", f"generation/{dataset}/{job}/{variant}/M{m}_seed{seed}", *extra]
        for variant in GEN_JOBS[(dataset, job)] for m in GEN_CELLS[(dataset, variant)] for seed in SEEDS
    ]


def batch_shell(commands):
    """The shell line of one job: its harness commands, each one quoted argument.

    The runner is started as a module (the repository is on PYTHONPATH), so no absolute path enters
    the command line, which is a rerun trigger (params): moving the checkout reruns nothing.
    """
    mode = [] if config.get("in_process", True) else ["--subprocess"]
    parts = [PYTHON, "-m", "workflow.scripts.harness_batch", *mode, "--"]
    parts += [shlex.join(c) for c in commands]
    return shlex.join(parts)


def rule_resource(rule_name, key, default):
    return RESOURCES.get(rule_name, {}).get(key, default)


def n_runs(wildcards, rule_name="train"):
    key = (wildcards.dataset, wildcards.job)
    if rule_name == "generate":
        return sum(len(GEN_CELLS[(key[0], v)]) for v in GEN_JOBS[key]) * len(SEEDS)
    return sum(len(CELLS[(key[0], v)]) for v in JOBS[key]) * len(SEEDS)


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
    if VALIDATION.get("enabled", True):
        targets += ["results/estimator_validation.csv", "figures/estimator_validation.png",
                    "figures/estimator_validation.pdf"]
    if THROUGHPUT.get("enabled", False):
        targets += ["results/throughput.csv", "figures/throughput.png", "figures/throughput.pdf"]
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
]


def data_args(wildcards):
    spec = DATASETS[wildcards.dataset]
    argv = ["data", "--dataset", spec["source"], "--out", f"data/{wildcards.dataset}",
            "--seed", spec.get("seed", 0), "--n-modalities", dataset_modalities(wildcards.dataset)]
    if spec["source"] == "synthetic":
        for key, flag in (("n_samples", "--n-samples"), ("n_classes", "--n-classes"),
                          ("latent_dim", "--latent-dim"), ("noise", "--noise"),
                          ("imbalance", "--imbalance")):
            if key in spec:
                argv += [flag, spec[key]]
    else:
        argv += ["--cache-dir", spec.get("cache_dir", "resources")]
    return [[str(a) for a in argv]]


def _cell_dirs(prefix, jobs):
    return [f"{prefix}/{d}/{job}" for (d, job) in jobs]


def _upstream_benchmarks():
    out = [f"benchmarks/data/{d}.tsv" for d in USED_DATASETS]
    out += [f"benchmarks/{stage}/{d}/{job}.tsv" for stage in ("train", "evaluate") for (d, job) in JOBS]
    out += [f"benchmarks/generate/{d}/{job}.tsv" for (d, job) in GEN_JOBS]
    if VALIDATION.get("enabled", True):
        out.append("benchmarks/validate_estimators.tsv")
    return out


def _projection_inputs(wildcards):
    proj = REPORT.get("projection", {})
    d = proj.get("dataset")
    out = []
    for key in ("baseline", "method"):
        v = REPORT.get(key)
        if d and v and (d, v) in CELLS:
            out.append(f"runs/{d}/{JOB_OF[(d, v)]}")
    out = sorted(set(out))
    if d in USED_DATASETS:
        out.append(f"data/{d}/dataset.npz")
    return out


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_.-]*",
    job="[A-Za-z0-9][A-Za-z0-9_.-]*",
