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
#   data/{dataset}/split{K}/dataset.npz, dataset.json          (one per split seed K)
#   tuning/{dataset}/{variant}/runs|metrics/trial{T}...           (tune: validation split only)
#   tuning/selected.json                                          (select_trials checkpoint)
#   runs/{dataset}/{job}/{variant}/M{M}/seed{S}_split{K}/   model.pt, history.csv, train.json
#   metrics/{dataset}/{job}/{variant}/M{M}_seed{S}_split{K}.json              (evaluate: test)
#   generation/{dataset}/{job}/{variant}/M{M}_seed{S}_split{K}/   generation.json, samples.png
#   results/ tables, summary.csv, tuning.csv, claims;  figures/;  logs/;  benchmarks/
#
# Every path above lies under `output_root` (default "."): config/tiny.yaml and config/paper.yaml
# write under work/tiny and work/paper, so they never touch the committed default results.

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
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in [BASEDIR, os.environ.get("PYTHONPATH", "")] if p))


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
SPLIT_SEEDS = sorted(int(s) for s in config.get("split_seeds", [0]))
OUTPUT_ROOT = os.path.normpath(str(config.get("output_root", ".")))
if os.path.isabs(OUTPUT_ROOT) or OUTPUT_ROOT.split(os.sep)[0] == "..":
    raise WorkflowError(
        f"invalid configuration: output_root={OUTPUT_ROOT!r} must be a relative path inside the "
        "working directory"
    )
TUNING = config.get("tuning", {}) or {}
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


def out(path):
    """`path` (relative to the output root) as the working-directory path Snakemake sees."""
    return path if OUTPUT_ROOT == "." else f"{OUTPUT_ROOT}/{path}"


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
for _name, _spec in DATASETS.items():
    if _spec["source"] == "features" and not _spec.get("path"):
        _fail(f"datasets.{_name}: source features needs `path` (the .npz file)")
    if _spec["source"] != "features" and "path" in _spec:
        _fail(f"datasets.{_name}.path is only read for source features (source is {_spec['source']!r})")
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
for _d, _v in GEN_CELLS:
    GEN_JOBS.setdefault((_d, JOB_OF[(_d, _v)]), []).append(_v)
GEN_JOBS = {k: sorted(v) for k, v in sorted(GEN_JOBS.items())}


def features_path(dataset):
    """A `source: features` dataset's file; relative paths are relative to the working directory."""
    return os.path.normpath(DATASETS[dataset]["path"])


def _features_info(dataset):
    """(number of modality arrays, has a `split` array) of a features file, read at plan time."""
    import numpy as np

    path = features_path(dataset)
    if not os.path.exists(path):
        _fail(f"datasets.{dataset}.path={path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one configuration error
        _fail(f"datasets.{dataset}.path={path!r} is not a readable .npz file ({type(exc).__name__}: {exc})")
    n = sum(1 for k in files if k.startswith("modality_"))
    return n, "split" in files


def dataset_modalities(dataset):
    spec = DATASETS[dataset]
    needed = max(m for (d, _), ms in CELLS.items() if d == dataset for m in ms)
    if TUNING.get("enabled", True) and any(
        VARIANTS[v].get("tune", False) for (d, v) in CELLS if d == dataset
    ):
        needed = max(needed, int(TUNING.get("m", 3)))  # the tuning trials' M
    if spec["source"] == "uci":
        if needed > UCI_MODALITIES:
            _fail(
                f"dataset {dataset!r} (uci) has {UCI_MODALITIES} views but the studies or tuning.m ask for M={needed}"
            )
        return spec.get("n_modalities", UCI_MODALITIES)
    if spec["source"] == "features":
        available, has_split = _features_info(dataset)
        if needed > available:
            _fail(
                f"dataset {dataset!r} ({features_path(dataset)}) has {available} modalities but the studies or tuning.m ask for M={needed}"
            )
        if has_split and len(SPLIT_SEEDS) > 1:
            _fail(
                f"dataset {dataset!r} ({features_path(dataset)}) fixes its split (a `split` array), so "
                f"split_seeds={SPLIT_SEEDS} would repeat one split; use split_seeds: [0]"
            )
        return spec.get("n_modalities", available)
    n = spec.get("n_modalities", needed)
    if n < needed:
        _fail(f"datasets.{dataset}.n_modalities={n} but the studies or tuning.m ask for M={needed}")
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


# optional training settings -> train flags (absent: the harness default)
_OPTIONAL_TRAIN_FLAGS = {
    "head": "--head",
    "weight_decay_groups": "--weight-decay-groups",
    "val_instruments": "--val-instruments",
}


def _train_argv(dataset, objective, params, m, seed, split, t, out_dir, val_instruments=None):
    """One `harness train` command line: a budget of optimizer steps, validation every K steps."""
    device = "cuda" if rule_resource("train", "gpu", 0) else "cpu"
    argv = ["train", "--data", data_dir(dataset, split), "--objective", objective]
    argv += _param_args(params)
    argv += [
        "--n-modalities",
        m,
        "--seed",
        seed,
        "--steps",
        t["steps"],
        "--eval-every-steps",
        t["eval_every_steps"],
        "--select",
        t.get("select", "last"),
        "--batch-size",
        t["batch_size"],
        "--dim",
        t["dim"],
        "--hidden",
        t["hidden"],
        "--depth",
        t["depth"],
        "--lr",
        t["lr"],
        "--weight-decay",
        t["weight_decay"],
    ]
    if val_instruments:
        t = dict(t, val_instruments=val_instruments)
    for key, flag in _OPTIONAL_TRAIN_FLAGS.items():
        if key in t:
            argv += [flag, t[key]]
    if device != "cpu":
        argv += ["--device", device]
    # no --quiet: the progress lines (every few steps, with validation R@1) stay in the job's log
    argv += ["--out", out_dir]
    return [str(a) for a in argv]


def data_dir(dataset, split):
    return out(f"data/{dataset}/split{split}")


def run_name(m, seed, split):
    return f"M{m}_seed{seed}_split{split}"


def run_dir(dataset, variant, m, seed, split):
    return out(f"runs/{dataset}/{JOB_OF[(dataset, variant)]}/{variant}/M{m}/seed{seed}_split{split}")


def _units():
    return [(seed, split) for split in SPLIT_SEEDS for seed in SEEDS]


def train_commands(dataset, job):
    cmds = []
    for variant in JOBS[(dataset, job)]:
        spec = VARIANTS[variant]
        params = variant_params(dataset, variant)
        t = training_settings(dataset, variant)
        for m in CELLS[(dataset, variant)]:
            for seed, split in _units():
                cmds.append(
                    _train_argv(
                        dataset,
                        spec["objective"],
                        params,
                        m,
                        seed,
                        split,
                        t,
                        run_dir(dataset, variant, m, seed, split),
                    )
                )
    return cmds


def evaluate_commands(dataset, job):
    return [
        [
            "evaluate",
            "--run",
            run_dir(dataset, variant, m, seed, split),
            "--split",
            "test",
            "--out",
            out(f"metrics/{dataset}/{job}/{variant}/{run_name(m, seed, split)}.json"),
        ]
        for variant in JOBS[(dataset, job)]
        for m in CELLS[(dataset, variant)]
        for seed, split in _units()
    ]


def generate_commands(dataset, job):
    extra = []
    if "decoder_epochs" in GENERATION:
        extra = ["--decoder-epochs", str(GENERATION["decoder_epochs"])]
    return [
        [
            "generate",
            "--run",
            run_dir(dataset, variant, m, seed, split),
            "--out",
            out(f"generation/{dataset}/{job}/{variant}/{run_name(m, seed, split)}"),
            *extra,
        ]
        for variant in GEN_JOBS[(dataset, job)]
        for m in GEN_CELLS[(dataset, variant)]
        for seed, split in _units()
    ]


# ----------------------------------------------------------------------------- tuning
# Equal-budget random search on the validation split (workflow/rules/tuning.smk): every variant
# marked `tune: true` gets `tuning.trials` trials per dataset, drawn from `tuning.search[objective]`
# (the same draws on every dataset), trained at M = tuning.m with the final runs' budget and
# evaluated with `--split val`; the select_trials checkpoint keeps the best validation metric.
TUNED = sorted(v for v, spec in VARIANTS.items() if spec.get("tune", False))
TUNING_ENABLED = bool(TUNING.get("enabled", True)) and bool(TUNED)


def _tuned_cells():
    return sorted({(d, v) for (d, v) in CELLS if v in TUNED})


def _check_tuning():
    if not TUNED:
        return
    import yaml

    with open(os.path.join(BASEDIR, "workflow", "schemas", "config.schema.yaml")) as fh:
        defs = yaml.safe_load(fh)["$defs"]
    search = TUNING.get("search", {})
    for v in sorted({v for (_, v) in _tuned_cells()}):
        objective = VARIANTS[v]["objective"]
        if objective not in search:
            _fail(f"variants.{v} has tune: true but tuning.search has no entry for objective {objective!r}")
    if int(TUNING.get("split_seed", SPLIT_SEEDS[0])) not in SPLIT_SEEDS:
        _fail(f"tuning.split_seed={TUNING['split_seed']} is not one of split_seeds={SPLIT_SEEDS}")
    for objective, space in search.items():
        known = defs[f"params_{objective}"]["properties"]
        for key, dist in space.items():
            if isinstance(dist, dict) and not (
                dist["low"] < dist["high"] and (dist["low"] > 0 or not dist.get("log"))
            ):
                _fail(
                    f"tuning.search.{objective}.{key}: needs low < high (and low > 0 with log: true), got {dist}"
                )
            if key not in known:
                _fail(
                    f"tuning.search.{objective}.{key} is not a parameter of {objective} ({', '.join(sorted(known))})"
                )


def _round(value):
    return float(f"{value:.3g}")


def trial_params(variant):
    """The `tuning.trials` parameter sets of a tuned variant: its own params updated by the draws.

    Deterministic: numpy's PCG64 seeded by (tuning.seed, crc32 of the variant name); a list is a
    uniform choice, {low, high, log} a (log-)uniform draw rounded to 3 significant digits.
    """
    import zlib

    import numpy as np

    space = TUNING["search"][VARIANTS[variant]["objective"]]
    rng = np.random.default_rng([int(TUNING.get("seed", 0)), zlib.crc32(variant.encode())])
    trials = []
    for _ in range(int(TUNING.get("trials", 4))):
        params = dict(VARIANTS[variant].get("params", {}) or {})
        for key in sorted(space):
            dist = space[key]
            if isinstance(dist, list):
                params[key] = dist[int(rng.integers(len(dist)))]
            elif dist.get("log", False):
                params[key] = _round(float(np.exp(rng.uniform(np.log(dist["low"]), np.log(dist["high"])))))
            else:
                params[key] = _round(float(rng.uniform(dist["low"], dist["high"])))
        trials.append(params)
    return trials


def tuning_dir(dataset, variant):
    return out(f"tuning/{dataset}/{variant}")


def tune_commands(dataset, variant):
    m, seed, split = (
        int(TUNING.get("m", 3)),
        int(TUNING.get("seed", 0)),
        int(TUNING.get("split_seed", SPLIT_SEEDS[0])),
    )
    t = training_settings(dataset, variant)
    cmds = []
    for i, params in enumerate(trial_params(variant)):
        run = f"{tuning_dir(dataset, variant)}/runs/trial{i}"
        # the trials train exactly like the final runs; only R@1 (what selection reads) and the
        # cheap core instruments are computed at the validation points
        cmds.append(
            _train_argv(
                dataset,
                VARIANTS[variant]["objective"],
                params,
                m,
                seed,
                split,
                t,
                run,
                val_instruments="core",
            )
        )
        cmds.append(
            [
                "evaluate",
                "--run",
                run,
                "--split",
                "val",
                "--out",
                f"{tuning_dir(dataset, variant)}/metrics/trial{i}.json",
            ]
        )
    return cmds


SELECTION = out("tuning/selected.json")


def selection_input(wildcards):
    """The selection file, for jobs that hold a tuned variant (waits for the checkpoint)."""
    if not TUNING_ENABLED or not any(v in TUNED for v in JOBS[(wildcards.dataset, wildcards.job)]):
        return []
    return [checkpoints.select_trials.get().output.selected]


def variant_params(dataset, variant):
    """A variant's objective params; a tuned variant's come from the selection file."""
    params = dict(VARIANTS[variant].get("params", {}) or {})
    if TUNING_ENABLED and variant in TUNED:
        path = checkpoints.select_trials.get().output.selected
        with open(path) as fh:
            params = json.load(fh)[dataset][variant]["params"]
    return params


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
        return sum(len(GEN_CELLS[(key[0], v)]) for v in GEN_JOBS[key]) * len(_units())
    return sum(len(CELLS[(key[0], v)]) for v in JOBS[key]) * len(_units())


def scaled_runtime(rule_name, per_run_minutes):
    def _runtime(wildcards, attempt):
        base = rule_resource(rule_name, "runtime", None)
        if base is not None:
            return base * attempt
        return max(5, int(per_run_minutes * n_runs(wildcards, rule_name) + 2)) * attempt

    return _runtime


def final_targets():
    targets = [
        out(p)
        for p in ("results/summary.csv", "results/benchmarks.csv", "results/claims.md", "results/claims.csv")
    ]
    targets += expand(out("results/tables/{table}.{ext}"), table=TABLES, ext=("csv", "md", "tex"))
    targets += expand(out("figures/{figure}.{ext}"), figure=FIGURES, ext=("pdf", "png"))
    if TUNING_ENABLED:
        targets += [out("results/tuning.csv"), out("results/tables/tuning.md")]
    if VALIDATION.get("enabled", True):
        targets += [
            out("results/estimator_validation.csv"),
            out("figures/estimator_validation.png"),
            out("figures/estimator_validation.pdf"),
        ]
    if THROUGHPUT.get("enabled", False):
        targets += [
            out("results/throughput.csv"),
            out("figures/throughput.png"),
            out("figures/throughput.pdf"),
        ]
    return targets


def paper_reference():
    path = config.get("paper_reference", os.path.join("config", "paper_reference.csv"))
    path = path if os.path.isabs(path) else os.path.join(BASEDIR, path)
    return [os.path.normpath(path)] if os.path.exists(path) else []


# the one list of tables and figures (harness/report/__init__.py; pandas-free import)
sys.path.insert(0, BASEDIR)
from harness.report import FIGURES, TABLES  # noqa: E402


def data_args(wildcards):
    """`harness data` for one (dataset, split seed K): data seed = datasets.<name>.seed + K.

    For uci and features K draws the train/val/test split; for synthetic it also draws a fresh
    sample from the generator (one seed drives both), so split seeds are data replicates.
    """
    spec = DATASETS[wildcards.dataset]
    split = int(wildcards.split)
    argv = [
        "data",
        "--dataset",
        spec["source"],
        "--out",
        data_dir(wildcards.dataset, split),
        "--seed",
        int(spec.get("seed", 0)) + split,
        "--n-modalities",
        dataset_modalities(wildcards.dataset),
    ]
    if spec["source"] == "synthetic":
        for key, flag in (
            ("n_samples", "--n-samples"),
            ("n_classes", "--n-classes"),
            ("latent_dim", "--latent-dim"),
            ("noise", "--noise"),
            ("imbalance", "--imbalance"),
        ):
            if key in spec:
                argv += [flag, spec[key]]
    elif spec["source"] == "features":
        argv += ["--features", features_path(wildcards.dataset)]
    else:
        argv += ["--cache-dir", spec.get("cache_dir", "resources")]
    return [[str(a) for a in argv]]


def data_inputs(wildcards):
    spec = DATASETS[wildcards.dataset]
    return [features_path(wildcards.dataset)] if spec["source"] == "features" else []


def dataset_files(wildcards):
    return [
        f"{data_dir(wildcards.dataset, k)}/{name}"
        for k in SPLIT_SEEDS
        for name in ("dataset.npz", "dataset.json")
    ]


def _cell_dirs(prefix, jobs):
    return [out(f"{prefix}/{d}/{job}") for (d, job) in jobs]


def _upstream_benchmarks():
    outs = [f"benchmarks/data/{d}/split{k}.tsv" for d in USED_DATASETS for k in SPLIT_SEEDS]
    outs += [f"benchmarks/{stage}/{d}/{job}.tsv" for stage in ("train", "evaluate") for (d, job) in JOBS]
    outs += [f"benchmarks/generate/{d}/{job}.tsv" for (d, job) in GEN_JOBS]
    if TUNING_ENABLED:
        outs += [f"benchmarks/tune/{d}/{v}.tsv" for (d, v) in _tuned_cells()]
    if VALIDATION.get("enabled", True):
        outs.append("benchmarks/validate_estimators.tsv")
    return [out(p) for p in outs]


def _projection_inputs(wildcards):
    proj = REPORT.get("projection", {})
    d = proj.get("dataset")
    outs = []
    for key in ("baseline", "method"):
        v = REPORT.get(key)
        if d and v and (d, v) in CELLS:
            outs.append(out(f"runs/{d}/{JOB_OF[(d, v)]}"))
    outs = sorted(set(outs))
    if d in USED_DATASETS:
        outs += [f"{data_dir(d, k)}/dataset.npz" for k in SPLIT_SEEDS]
    return outs


def _figure_runs(kind):
    """--projection / --samples arguments of the figures rule: VARIANT=FOLDER of the compared runs."""
    pair = [REPORT.get(k) for k in ("baseline", "method") if REPORT.get(k)]
    if kind == "projection":
        proj = REPORT.get("projection", {})
        d = proj.get("dataset")
        m, seed, split = proj.get("m"), proj.get("seed", SEEDS[0]), proj.get("split_seed", SPLIT_SEEDS[0])
        return [f"{v}={run_dir(d, v, m, seed, split)}" for v in pair if (d, v) in CELLS]
    return [
        f"{v}={out(f'generation/{d}/{JOB_OF[(d, v)]}/{v}/{run_name(ms[0], SEEDS[0], SPLIT_SEEDS[0])}')}"
        for (d, v), ms in sorted(GEN_CELLS.items())
        if v in pair and ms
    ]


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_.-]*",
    job="[A-Za-z0-9][A-Za-z0-9_.-]*",
    variant="[A-Za-z0-9][A-Za-z0-9_.-]*",
    split="[0-9]+",


_check_tuning()


# ----------------------------------------------------------------------------- config snapshot
def _resolved_config():
    return (
        json.dumps(
            {
                "config": config,
                "seeds": SEEDS,
                "split_seeds": SPLIT_SEEDS,
                "output_root": OUTPUT_ROOT,
                "tuned": TUNED if TUNING_ENABLED else [],
                "cells": [
                    {
                        "dataset": d,
                        "variant": v,
                        "job": JOB_OF[(d, v)],
                        "ms": ms,
                        "generation_ms": GEN_CELLS.get((d, v), []),
                        "runs": out(f"runs/{d}/{JOB_OF[(d, v)]}/{v}"),
                        "generation": out(f"generation/{d}/{JOB_OF[(d, v)]}/{v}"),
                    }
                    for (d, v), ms in CELLS.items()
                ],
            },
            sort_keys=True,
            indent=1,
        )
        + "\n"
    )


# A params change reruns a rule only where Snakemake has metadata for its output, which a fresh
# clone of committed results lacks: a snapshot whose content is not the configuration in force is
# rewritten here (atomically, also in a dry run), and every report stage reads the newer file.
_SNAPSHOT = out("results/config.json")
if os.path.exists(_SNAPSHOT):
    with open(_SNAPSHOT, encoding="utf-8") as _handle:
        _stale = _handle.read() != _resolved_config()
    if _stale:
        from harness.files import atomic_write_text

        atomic_write_text(_SNAPSHOT, _resolved_config())
