"""The sweep's plan: which runs each Snakemake job holds, and their command lines.

``workflow/rules/common.smk`` builds one :class:`Plan` from the merged configuration and the rules
read it; nothing here imports Snakemake, so the plan is tested as plain Python (tests/test_plan.py).

Job granularity: importing torch and the harness takes ~3-5 s per process on a 2-core machine, so
one job per run would spend most of the sweep starting Python. Each train / evaluate / generate job
therefore covers one (dataset, job) cell -- a job is one variant of the main study, or a pack of the
small variants of a packed study -- with every M and every seed, run one after the other in a single
process by workflow/scripts/harness_batch.py, which calls harness.cli.main with exactly the argv of
``python -m harness ...`` (``in_process: false`` starts one process per command instead). Each job
writes one directory:

    data/{dataset}/split{K}/dataset.npz, dataset.json          (one per split seed K)
    tuning/{dataset}/{variant}/runs|metrics/trial{T}...           (tune: validation split only)
    tuning/selected.json                                          (select_trials checkpoint)
    runs/{dataset}/{job}/{variant}/M{M}/seed{S}_split{K}/   model.pt, history.csv, train.json
    metrics/{dataset}/{job}/{variant}/M{M}_seed{S}_split{K}.json              (evaluate: test)
    generation/{dataset}/{job}/{variant}/M{M}_seed{S}_split{K}/   generation.json, samples.png
    results/ tables, summary.csv, tuning.csv, claims;  figures/;  logs/;  benchmarks/

Every path above lies under ``output_root`` (default "."). A variant names its objective by
``objective:`` (a registered name: objectives.registry) or ``module: package.module:Class`` (a loss
defined outside the repository); both are checked against the registry here, with the variant's
params, so a misspelt objective or parameter fails before any job starts.
"""

from __future__ import annotations

import json
import os
import shlex
import zlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

UCI_MODALITIES = 6
STUDY_ORDER = ["main", "ablation", "sensitivity"]
# optional training settings -> train flags (absent: the harness default)
OPTIONAL_TRAIN_FLAGS = {
    "head": "--head",
    "weight_decay_groups": "--weight-decay-groups",
    "val_instruments": "--val-instruments",
    "patience": "--patience",
    "min_delta": "--min-delta",
}


class PlanError(ValueError):
    """The configuration cannot be planned; the message names the key and the value."""

    def __init__(self, message: str) -> None:
        super().__init__(f"invalid configuration: {message}")


def _fail(message: str):
    raise PlanError(message)


def schema_error_message(error: Exception) -> str:
    """One paragraph for a config schema violation (a jsonschema ``ValidationError``, as Snakemake's
    ``validate`` raises it): the key's dotted path, what is wrong and, for an unknown key, the keys
    allowed there -- instead of the schema dump Snakemake prints."""
    path = ".".join(str(p) for p in getattr(error, "absolute_path", [])) or "(top level)"
    schema = getattr(error, "schema", None) or {}
    instance = getattr(error, "instance", None)
    if getattr(error, "validator", None) == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(str(k) for k in instance if k not in allowed)
        where = "at the top level" if path == "(top level)" else f"under `{path}`"
        return (f"invalid configuration: unknown key(s) {', '.join(repr(k) for k in unknown)} {where}; "
                f"allowed keys there: {', '.join(allowed) or '(none)'} (config/README.md)")
    return f"invalid configuration: `{path}`: {getattr(error, 'message', error)} (config/README.md)"


def _merge_into(base: dict, overlay: dict) -> None:
    """Merge ``overlay`` into ``base`` the way Snakemake merges --configfile overlays: nested
    mappings key by key, every other value (lists included) replaced."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge_into(base[key], value)
        else:
            base[key] = value


def variant_objective(spec: dict) -> str:
    """What ``harness train --objective`` gets for a variant: its registered name or its module path."""
    return str(spec.get("module") or spec["objective"])


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def draw_trials(space: dict, base: dict, trials: int, seed: int, variant: str) -> list[dict]:
    """``trials`` parameter sets: ``base`` updated by quasi-random draws from ``space``.

    A scrambled Sobol sequence (``scipy.stats.qmc.Sobol``, one coordinate per searched parameter in
    sorted order, seeded by (seed, crc32 of the variant name)) instead of independent draws: at equal
    trial counts it covers a 2-D space as evenly as a 1-D one (4 trials put one point in each quarter
    of a 1-D range and in each of 4 balanced cells of a 2-D one; quasi-random search, Bousquet et al.
    2017). The sequence is generated in order, so the first T trials of a 2T-trial search are the
    T-trial search (the saturation check rests on it). A list is a choice by the coordinate's
    quantile, {low, high, log} a (log-)uniform value rounded to 3 significant digits.
    """
    import warnings

    import numpy as np
    from scipy.stats import qmc

    keys = sorted(space)
    if not keys or int(trials) < 1:
        return [dict(base) for _ in range(max(int(trials), 0))]
    rng = np.random.default_rng([int(seed), zlib.crc32(variant.encode())])
    with warnings.catch_warnings():  # balance holds at powers of 2; other counts are still a prefix
        warnings.simplefilter("ignore", UserWarning)
        points = qmc.Sobol(d=len(keys), scramble=True, seed=rng).random(int(trials))
    out = []
    for row in points:
        params = dict(base)
        for key, u in zip(keys, row):
            dist = space[key]
            if isinstance(dist, list):
                params[key] = dist[min(int(u * len(dist)), len(dist) - 1)]
            elif dist.get("log", False):
                lo, hi = np.log(dist["low"]), np.log(dist["high"])
                params[key] = _round(float(np.exp(lo + u * (hi - lo))))
            else:
                params[key] = _round(float(dist["low"] + u * (dist["high"] - dist["low"])))
        out.append(params)
    return out


# keys of a perturbation's configuration that cannot change its verdicts: its own (disabled)
# robustness block, the steps it does not run, what only this sweep's saturation check reads
_INERT = (("robustness",), ("validation",), ("throughput",), ("tuning", "saturation_delta"))


def _verdict_inputs(cfg: dict) -> dict:
    """``cfg`` without the :data:`_INERT` keys and the variants no study, generation or report names."""
    import copy

    cfg = copy.deepcopy(cfg)
    for path in _INERT:
        node = cfg
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    used = {v for spec in (cfg.get("studies") or {}).values() for v in spec.get("variants", [])}
    used |= set((cfg.get("generation") or {}).get("variants", []) or [])
    report = cfg.get("report") or {}
    used |= {report.get(k) for k in ("baseline", "method", "method_tuple") if report.get(k)}
    cfg["variants"] = {v: spec for v, spec in (cfg.get("variants") or {}).items() if v in used}
    return cfg


def param_args(params: dict) -> list[str]:
    """``--param key=value`` pairs; values as JSON, which the harness parses with yaml.safe_load:
    strings stay strings ("off", "median"), booleans and null keep their type."""
    args = []
    for key in sorted(params):
        args += ["--param", f"{key}={json.dumps(params[key])}"]
    return args


class Plan:
    """The plan of one merged configuration (``config``: the dict Snakemake validated)."""

    def __init__(self, config: dict, basedir: str, python: str = "python") -> None:
        self.config = config
        self.basedir = os.path.abspath(basedir)
        self.python = python
        self.seeds = sorted(int(s) for s in config["seeds"])
        self.split_seeds = sorted(int(s) for s in config.get("split_seeds", [0]))
        self.output_root = os.path.normpath(str(config.get("output_root", ".")))
        if os.path.isabs(self.output_root) or self.output_root.split(os.sep)[0] == "..":
            _fail(f"output_root={self.output_root!r} must be a relative path inside the working directory")
        self.tuning = config.get("tuning", {}) or {}
        self.datasets = config["datasets"]
        self.variants = config["variants"]
        self.studies = config["studies"]
        self.generation = config.get("generation", {}) or {}
        self.validation = config.get("validation", {}) or {}
        self.throughput = config.get("throughput", {}) or {}
        self.report = config.get("report", {}) or {}
        self.resources = config.get("resources", {}) or {}
        self._check_names()
        self._check_objectives()
        self.cells, self.gen_cells = self._cells()
        self.cell_splits = self._cell_splits()
        self.used_datasets = sorted({d for d, _ in self.cells})
        self.pack_studies = list(config.get("pack_studies", ["ablation", "sensitivity"]))
        self.job_of, self.jobs = self._jobs()
        gen_jobs: dict[tuple[str, str], list[str]] = {}
        for d, v in self.gen_cells:
            gen_jobs.setdefault((d, self.job_of[(d, v)]), []).append(v)
        self.gen_jobs = {k: sorted(v) for k, v in sorted(gen_jobs.items())}
        self._check_cells()
        self.tuned = sorted(v for v, spec in self.variants.items() if spec.get("tune", False))
        self.tuning_enabled = bool(self.tuning.get("enabled", True)) and bool(self.tuned)
        self._check_tuning()

    # ------------------------------------------------------------------------- paths
    def out(self, path: str) -> str:
        """``path`` (relative to the output root) as the working-directory path Snakemake sees."""
        return path if self.output_root == "." else f"{self.output_root}/{path}"

    def data_dir(self, dataset: str, split: int) -> str:
        return self.out(f"data/{dataset}/split{split}")

    @staticmethod
    def run_name(m: int, seed: int, split: int) -> str:
        return f"M{m}_seed{seed}_split{split}"

    def run_dir(self, dataset: str, variant: str, m: int, seed: int, split: int) -> str:
        return self.out(f"runs/{dataset}/{self.job_of[(dataset, variant)]}/{variant}/M{m}/seed{seed}_split{split}")

    def tuning_dir(self, dataset: str, variant: str) -> str:
        return self.out(f"tuning/{dataset}/{variant}")

    @property
    def selection(self) -> str:
        return self.out("tuning/selected.json")

    @property
    def snapshot(self) -> str:
        return self.out("results/config.json")

    def units(self, dataset: str | None = None, variant: str | None = None) -> list[tuple[int, int]]:
        """(seed, split seed) units: the global ones, or those of one (dataset, variant) cell."""
        splits = self.split_seeds if variant is None else self.cell_splits[(dataset, variant)]
        return [(seed, split) for split in splits for seed in self.seeds]

    def verdict_variants(self) -> list[str]:
        """The variants every verdict reads: the baseline, the method, the full method, the controls,
        and the challengers (a loss judged beside the method gets the method's units)."""
        names = [self.report.get(k) for k in ("baseline", "method", "method_tuple")]
        names += list(self.report.get("controls", []) or []) + list(self.report.get("challengers", []) or [])
        return sorted({v for v in names if v})

    def _cell_splits(self) -> dict[tuple[str, str], list[int]]:
        """Split seeds of each cell: ``split_seeds``, and for the variants the verdicts read also
        ``report.verdict_split_seeds`` (the units a power analysis asks for, which would cost too much
        for every other objective)."""
        extra = sorted(int(k) for k in self.report.get("verdict_split_seeds", []) or [])
        verdict = set(self.verdict_variants())
        return {(d, v): sorted(set(self.split_seeds) | (set(extra) if v in verdict else set()))
                for (d, v) in self.cells}

    # ------------------------------------------------------------------------- checks
    def _check_names(self) -> None:
        variants, datasets = self.variants, self.datasets
        for study, spec in self.studies.items():
            for v in spec["variants"]:
                if v not in variants:
                    _fail(f"studies.{study}.variants names {v!r}, which is not defined under variants")
            for d in spec["datasets"]:
                if d not in datasets:
                    _fail(f"studies.{study}.datasets names {d!r}, which is not defined under datasets")
            for d in spec.get("ms_by_dataset", {}):
                if d not in spec["datasets"]:
                    _fail(f"studies.{study}.ms_by_dataset names {d!r}, which is not among the study's datasets")
            if "base" in spec and spec["base"] not in variants:
                _fail(f"studies.{study}.base names {spec['base']!r}, which is not defined under variants")
        if self.generation.get("enabled", True):
            for v in self.generation.get("variants", []):
                if v not in variants:
                    _fail(f"generation.variants names {v!r}, which is not defined under variants")
            for d in self.generation.get("datasets", []):
                if d not in datasets:
                    _fail(f"generation.datasets names {d!r}, which is not defined under datasets")
        for name, spec in datasets.items():
            if spec["source"] == "features" and not spec.get("path"):
                _fail(f"datasets.{name}: source features needs `path` (the .npz file)")
            if spec["source"] != "features" and "path" in spec:
                _fail(f"datasets.{name}.path is only read for source features (source is {spec['source']!r})")
        for key in ("baseline", "method", "method_tuple"):
            if key in self.report and self.report[key] not in variants:
                _fail(f"report.{key} names {self.report[key]!r}, which is not defined under variants")
        for field in ("challengers", "controls"):
            for v in self.report.get(field, []) or []:
                if v not in variants:
                    _fail(f"report.{field} names {v!r}, which is not defined under variants")

    def entry(self, variant: str):
        """The registry entry of a variant's objective (objectives.registry)."""
        from objectives import registry

        return registry.get(variant_objective(self.variants[variant]))

    def _check_objectives(self) -> None:
        """Every variant's objective is registered (or loads from its module) and accepts its params."""
        from objectives import registry

        for v, spec in self.variants.items():
            key = "module" if "module" in spec else "objective"
            if ("module" in spec) == ("objective" in spec):
                _fail(f"variants.{v} needs exactly one of `objective` (a registered name) or `module` "
                      "(package.module:Class)")
            value = spec[key]
            if key == "module" and not registry.is_module_path(value):
                _fail(f"variants.{v}.module={value!r} must look like package.module:Class")
            try:
                entry = registry.get(value)
            except registry.ObjectiveError as exc:
                if key == "objective" and not registry.is_module_path(value):
                    _fail(f"variants.{v}.objective={value!r} is not a registered objective "
                          f"(available: {', '.join(registry.available())})")
                _fail(f"variants.{v}.{key}={value!r}: {exc}")
            params = spec.get("params", {}) or {}
            known = entry.parameters()
            for p in sorted(params):
                if p not in known:
                    _fail(f"variants.{v}.params.{p} is not a parameter of {entry.name} "
                          f"({', '.join(sorted(known))})")
            try:
                entry.build(**params)
            except Exception as exc:  # noqa: BLE001 - the constructor's message names the parameter
                _fail(f"variants.{v}.params: objective {entry.name!r} rejected {params}: {exc}")

    def _cells(self):
        """(dataset, variant) -> sorted list of M to train; generation cells likewise."""
        cells: dict[tuple[str, str], set[int]] = defaultdict(set)
        for spec in self.studies.values():
            for d in spec["datasets"]:
                ms = spec.get("ms_by_dataset", {}).get(d, spec["ms"])
                for v in spec["variants"]:
                    cells[(d, v)].update(int(m) for m in ms)
        gen: dict[tuple[str, str], set[int]] = defaultdict(set)
        if self.generation.get("enabled", True):
            for d in self.generation.get("datasets", []):
                for v in self.generation.get("variants", []):
                    gen[(d, v)].update(int(m) for m in self.generation.get("ms", []))
                    cells[(d, v)].update(int(m) for m in self.generation.get("ms", []))
        return ({k: sorted(v) for k, v in sorted(cells.items())},
                {k: sorted(v) for k, v in sorted(gen.items()) if v})

    def _jobs(self):
        """Jobs: a variant of the `main` study is one job per dataset; the variants a packed study
        (``pack_studies``) adds are trained together in one job per (dataset, study) named
        "<study>-pack", so that the per-process start-up is not paid for every small variant."""
        job_of: dict[tuple[str, str], str] = {}
        for study_name in STUDY_ORDER:
            spec = self.studies.get(study_name)
            if not spec:
                continue
            for d in spec["datasets"]:
                for v in spec["variants"]:
                    if (d, v) not in job_of:
                        job_of[(d, v)] = f"{study_name}-pack" if study_name in self.pack_studies else v
        for key in self.cells:
            job_of.setdefault(key, key[1])
        jobs: dict[tuple[str, str], list[str]] = defaultdict(list)
        for (d, v), job in job_of.items():
            jobs[(d, job)].append(v)
        for (_, job) in jobs:
            if job.endswith("-pack") and job in self.variants:
                _fail(f"variant name {job!r} collides with the name of a packed job; rename the variant")
        return job_of, {k: sorted(v) for k, v in sorted(jobs.items())}

    def _check_cells(self) -> None:
        for (d, v), ms in self.cells.items():
            self.dataset_modalities(d)
            anchor = (self.variants[v].get("params", {}) or {}).get("anchor")
            if anchor is not None and anchor >= min(ms):
                _fail(f"variants.{v}.params.anchor={anchor} is not a modality index for M={min(ms)} "
                      f"(dataset {d}); anchors must be < M")
        proj = self.report.get("projection", {})
        if proj:
            for key in ("baseline", "method"):
                v = self.report.get(key)
                if v and (proj.get("dataset"), v) in self.cells and proj.get("m") not in self.cells[(proj["dataset"], v)]:
                    _fail(f"report.projection.m={proj.get('m')} is not trained for {v} on {proj['dataset']}")

    # ------------------------------------------------------------------------- datasets
    def features_path(self, dataset: str) -> str:
        """A `source: features` dataset's file; relative paths are relative to the working directory."""
        return os.path.normpath(self.datasets[dataset]["path"])

    def _features_info(self, dataset: str) -> tuple[int, bool]:
        """(number of modality arrays, has a `split` array) of a features file, read at plan time."""
        import numpy as np

        path = self.features_path(dataset)
        if not os.path.exists(path):
            _fail(f"datasets.{dataset}.path={path!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as npz:
                files = set(npz.files)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is one configuration error
            _fail(f"datasets.{dataset}.path={path!r} is not a readable .npz file ({type(exc).__name__}: {exc})")
        return sum(1 for k in files if k.startswith("modality_")), "split" in files

    def dataset_modalities(self, dataset: str) -> int:
        spec = self.datasets[dataset]
        # the tuning trials' M is clipped to the studies' largest M on the dataset (tuning_m), so it
        # never asks a dataset for more modalities than the studies do
        needed = max(m for (d, _), ms in self.cells.items() if d == dataset for m in ms)
        if spec["source"] == "uci":
            if needed > UCI_MODALITIES:
                _fail(f"dataset {dataset!r} (uci) has {UCI_MODALITIES} views but the studies or tuning.m ask "
                      f"for M={needed}")
            return spec.get("n_modalities", UCI_MODALITIES)
        if spec["source"] == "features":
            available, has_split = self._features_info(dataset)
            if needed > available:
                _fail(f"dataset {dataset!r} ({self.features_path(dataset)}) has {available} modalities but the "
                      f"studies or tuning.m ask for M={needed}")
            if has_split and len(self.dataset_splits(dataset)) > 1:
                _fail(f"dataset {dataset!r} ({self.features_path(dataset)}) fixes its split (a `split` array), so "
                      f"split_seeds={self.dataset_splits(dataset)} (with report.verdict_split_seeds) would repeat one "
                      "split; use split_seeds: [0] and no verdict_split_seeds")
            return spec.get("n_modalities", available)
        n = spec.get("n_modalities", needed)
        if n < needed:
            _fail(f"datasets.{dataset}.n_modalities={n} but the studies or tuning.m ask for M={needed}")
        return n

    def data_args(self, dataset: str, split: int) -> list[list[str]]:
        """`harness data` for one (dataset, split seed K): data seed = datasets.<name>.seed + K.

        For uci and features K draws the train/val/test split; for synthetic it also draws a fresh
        sample from the generator (one seed drives both), so split seeds are data replicates.
        """
        spec = self.datasets[dataset]
        split = int(split)
        argv: list[Any] = ["data", "--dataset", spec["source"], "--out", self.data_dir(dataset, split),
                           "--seed", int(spec.get("seed", 0)) + split,
                           "--n-modalities", self.dataset_modalities(dataset)]
        if spec["source"] == "synthetic":
            for key, flag in (("n_samples", "--n-samples"), ("n_classes", "--n-classes"),
                              ("latent_dim", "--latent-dim"), ("noise", "--noise"), ("imbalance", "--imbalance")):
                if key in spec:
                    argv += [flag, spec[key]]
        elif spec["source"] == "features":
            argv += ["--features", self.features_path(dataset)]
        else:
            argv += ["--cache-dir", spec.get("cache_dir", "resources")]
        return [[str(a) for a in argv]]

    def data_inputs(self, dataset: str) -> list[str]:
        return [self.features_path(dataset)] if self.datasets[dataset]["source"] == "features" else []

    def dataset_files(self, dataset: str) -> list[str]:
        return [f"{self.data_dir(dataset, k)}/{name}" for k in self.dataset_splits(dataset)
                for name in ("dataset.npz", "dataset.json")]

    def dataset_splits(self, dataset: str) -> list[int]:
        """The split seeds some cell on ``dataset`` trains on (the data stage prepares each)."""
        return sorted({k for (d, _), ks in self.cell_splits.items() if d == dataset for k in ks})

    # ------------------------------------------------------------------------- commands
    def rule_resource(self, rule_name: str, key: str, default):
        return self.resources.get(rule_name, {}).get(key, default)

    def training_settings(self, dataset: str, variant: str) -> dict:
        out = dict(self.config["training"])
        out.update(self.datasets[dataset].get("training", {}))
        out.update(self.variants[variant].get("training", {}))
        return out

    def train_argv(self, dataset, objective, params, m, seed, split, t, out_dir, val_instruments=None) -> list[str]:
        """One `harness train` command line: a budget of optimizer steps, validation every K steps."""
        device = "cuda" if self.rule_resource("train", "gpu", 0) else "cpu"
        argv: list[Any] = ["train", "--data", self.data_dir(dataset, split), "--objective", objective]
        argv += param_args(params)
        argv += ["--n-modalities", m, "--seed", seed, "--steps", t["steps"],
                 "--eval-every-steps", t["eval_every_steps"], "--select", t.get("select", "last"),
                 "--batch-size", t["batch_size"], "--dim", t["dim"], "--hidden", t["hidden"],
                 "--depth", t["depth"], "--lr", t["lr"], "--weight-decay", t["weight_decay"]]
        if val_instruments:
            t = dict(t, val_instruments=val_instruments)
        for key, flag in OPTIONAL_TRAIN_FLAGS.items():
            if key in t:
                argv += [flag, t[key]]
        if device != "cpu":
            argv += ["--device", device]
        # no --quiet: the progress lines (every few steps, with validation R@1) stay in the job's log
        argv += ["--out", out_dir]
        return [str(a) for a in argv]

    def train_commands(self, dataset: str, job: str, params_of: Callable[[str, str], dict]) -> list[list[str]]:
        """``params_of(dataset, variant)``: a variant's params (a tuned one's from the selection)."""
        cmds = []
        for variant in self.jobs[(dataset, job)]:
            params = params_of(dataset, variant)
            t = self.training_settings(dataset, variant)
            objective = variant_objective(self.variants[variant])
            for m in self.cells[(dataset, variant)]:
                for seed, split in self.units(dataset, variant):
                    cmds.append(self.train_argv(dataset, objective, params, m, seed, split, t,
                                                self.run_dir(dataset, variant, m, seed, split)))
        return cmds

    def evaluate_commands(self, dataset: str, job: str) -> list[list[str]]:
        return [
            ["evaluate", "--run", self.run_dir(dataset, variant, m, seed, split), "--split", "test",
             "--out", self.out(f"metrics/{dataset}/{job}/{variant}/{self.run_name(m, seed, split)}.json")]
            for variant in self.jobs[(dataset, job)]
            for m in self.cells[(dataset, variant)]
            for seed, split in self.units(dataset, variant)
        ]

    def generate_commands(self, dataset: str, job: str) -> list[list[str]]:
        extra = ["--decoder-epochs", str(self.generation["decoder_epochs"])] if "decoder_epochs" in self.generation else []
        return [
            ["generate", "--run", self.run_dir(dataset, variant, m, seed, split),
             "--out", self.out(f"generation/{dataset}/{job}/{variant}/{self.run_name(m, seed, split)}"), *extra]
            for variant in self.gen_jobs[(dataset, job)]
            for m in self.gen_cells[(dataset, variant)]
            for seed, split in self.units(dataset, variant)
        ]

    def batch_shell(self, commands: list[list[str]]) -> str:
        """The shell line of one job: its harness commands, each one quoted argument.

        The runner is started as a module (the repository is on PYTHONPATH), so no absolute path enters
        the command line, which is a rerun trigger (params): moving the checkout reruns nothing.
        """
        mode = [] if self.config.get("in_process", True) else ["--subprocess"]
        parts = [self.python, "-m", "workflow.scripts.harness_batch", *mode, "--"]
        parts += [shlex.join(c) for c in commands]
        return shlex.join(parts)

    def n_runs(self, dataset: str, job: str, rule_name: str = "train") -> int:
        key = (dataset, job)
        if rule_name == "generate":
            return sum(len(self.gen_cells[(dataset, v)]) * len(self.units(dataset, v)) for v in self.gen_jobs[key])
        return sum(len(self.cells[(dataset, v)]) * len(self.units(dataset, v)) for v in self.jobs[key])

    def scaled_runtime(self, rule_name: str, per_run_minutes: float):
        def _runtime(wildcards, attempt):
            base = self.rule_resource(rule_name, "runtime", None)
            if base is not None:
                return base * attempt
            n = self.n_runs(wildcards.dataset, wildcards.job, rule_name)
            return max(5, int(per_run_minutes * n + 2)) * attempt

        return _runtime

    # ------------------------------------------------------------------------- tuning
    # Equal-budget quasi-random search on the validation split (workflow/rules/tuning.smk): every variant
    # marked `tune: true` gets `tuning.trials` trials per dataset, drawn from its objective's search
    # space (declared in objectives.registry; `tuning.search.<objective>` replaces it), trained at
    # M = tuning.m with the final runs' budget and evaluated with `--split val`; the select_trials
    # checkpoint keeps the best validation metric.
    def tuned_cells(self) -> list[tuple[str, str]]:
        return sorted({(d, v) for (d, v) in self.cells if v in self.tuned})

    def search_space(self, variant: str) -> dict:
        """A tuned variant's search space: ``tuning.search[<objective>]``, else the registry's."""
        entry = self.entry(variant)
        search = self.tuning.get("search", {}) or {}
        return dict(search[entry.name]) if entry.name in search else dict(entry.search)

    def _check_tuning(self) -> None:
        from objectives import registry

        if not self.tuned:
            return
        for v in sorted({v for (_, v) in self.tuned_cells()}):
            if not self.search_space(v):
                _fail(f"variants.{v} has tune: true but objective {self.entry(v).name!r} declares no search space "
                      "and tuning.search has no entry for it")
        if int(self.tuning.get("split_seed", self.split_seeds[0])) not in self.split_seeds:
            _fail(f"tuning.split_seed={self.tuning['split_seed']} is not one of split_seeds={self.split_seeds}")
        spaces = dict(self.tuning.get("search", {}) or {})
        for name, space in spaces.items():
            entry = registry.find(name)
            if entry is None:
                _fail(f"tuning.search.{name} names no objective (available: {', '.join(registry.available())})")
            known = entry.parameters()
            for key, dist in space.items():
                if isinstance(dist, dict) and not (dist["low"] < dist["high"] and (dist["low"] > 0 or not dist.get("log"))):
                    _fail(f"tuning.search.{name}.{key}: needs low < high (and low > 0 with log: true), got {dist}")
                if key not in known:
                    _fail(f"tuning.search.{name}.{key} is not a parameter of {name} ({', '.join(sorted(known))})")

    def trial_params(self, variant: str) -> list[dict]:
        """The `tuning.trials` parameter sets of a tuned variant (:func:`draw_trials`)."""
        return draw_trials(self.search_space(variant), dict(self.variants[variant].get("params", {}) or {}),
                           int(self.tuning.get("trials", 4)), int(self.tuning.get("seed", 0)), variant)

    def tuning_m(self, dataset: str) -> int:
        """M of the tuning trials on a dataset: tuning.m clipped to the largest M the studies ask there."""
        return min(int(self.tuning.get("m", 3)), max(m for (d, _), ms in self.cells.items() if d == dataset for m in ms))

    def tune_commands(self, dataset: str, variant: str) -> list[list[str]]:
        m, seed = self.tuning_m(dataset), int(self.tuning.get("seed", 0))
        split = int(self.tuning.get("split_seed", self.split_seeds[0]))
        t = self.training_settings(dataset, variant)
        objective = variant_objective(self.variants[variant])
        cmds = []
        for i, params in enumerate(self.trial_params(variant)):
            run = f"{self.tuning_dir(dataset, variant)}/runs/trial{i}"
            # the trials train exactly like the final runs; only R@1 (what selection reads) and the
            # cheap core instruments are computed at the validation points
            cmds.append(self.train_argv(dataset, objective, params, m, seed, split, t, run, val_instruments="core"))
            cmds.append(["evaluate", "--run", run, "--split", "val",
                         "--out", f"{self.tuning_dir(dataset, variant)}/metrics/trial{i}.json"])
        return cmds

    def holds_tuned(self, dataset: str, job: str) -> bool:
        return self.tuning_enabled and any(v in self.tuned for v in self.jobs[(dataset, job)])

    def variant_params(self, dataset: str, variant: str, selection: Callable[[], str]) -> dict:
        """A variant's objective params; a tuned variant's come from the selection file
        (``selection()`` gives its path, waiting for the checkpoint)."""
        params = dict(self.variants[variant].get("params", {}) or {})
        if self.tuning_enabled and variant in self.tuned:
            with open(selection()) as fh:
                params = json.load(fh)[dataset][variant]["params"]
        return params

    # ------------------------------------------------------------------------- report
    def final_targets(self, tables: list[str], figures: list[str]) -> list[str]:
        targets = [self.out(p) for p in ("results/summary.csv", "results/benchmarks.csv", "results/claims.md",
                                         "results/claims.csv")]
        targets += [self.out(f"results/tables/{t}.{ext}") for t in tables for ext in ("csv", "md", "tex")]
        targets += [self.out(f"figures/{f}.{ext}") for f in figures for ext in ("pdf", "png")]
        if self.tuning_enabled:
            targets += [self.out(p) for p in ("results/tuning.csv", "results/tables/tuning.md",
                                              "results/tuning_saturation.csv", "figures/tuning_saturation.png",
                                              "figures/tuning_saturation.pdf")]
        if self.validation.get("enabled", True):
            targets += [self.out(p) for p in ("results/estimator_validation.csv", "figures/estimator_validation.png",
                                              "figures/estimator_validation.pdf")]
        if self.throughput.get("enabled", False):
            targets += [self.out(p) for p in ("results/throughput.csv", "figures/throughput.png",
                                              "figures/throughput.pdf")]
        if self.robustness_names():
            targets.append(self.out("results/robustness.csv"))
        return targets

    # ------------------------------------------------------------------------- estimator validation
    def validation_args(self) -> list[str]:
        """validate-estimators options from ``validation`` (config/README.md), one argument each:
        ``preset`` wins, the older ``quick`` flag maps onto the unit-scale presets, neither gives the
        sweep's scale; with it the runs' own embedding dimension (training.dim) is always checked."""
        v = self.validation
        preset = str(v["preset"]) if v.get("preset") else ("quick" if v["quick"] else "default") if "quick" in v \
            else "sweep"
        args = ["--preset", preset, "--seed", str(v.get("seed", 0))]
        if v.get("dims"):
            args += ["--dims", *[str(int(d)) for d in v["dims"]]]
        dim = (self.config.get("training") or {}).get("dim")
        if preset == "sweep" and dim is not None:
            args += ["--include-dim", str(int(dim))]
        if v.get("modalities"):
            args += ["--modalities", *[str(int(m)) for m in v["modalities"]]]
        for key, flag in (("n_samples", "--n-samples"), ("draws", "--draws"), ("target", "--target")):
            if v.get(key) is not None:
                args += [flag, str(v[key])]
        return args

    # ------------------------------------------------------------------------- robustness
    def robustness_names(self) -> list[str]:
        """The declared perturbations (``robustness.perturbations``) when robustness is enabled."""
        spec = self.config.get("robustness", {}) or {}
        return sorted(spec.get("perturbations", {}) or {}) if spec.get("enabled", False) else []

    def robustness_dir(self, name: str) -> str:
        return self.out(f"robustness/{name}")

    def robustness_claims(self) -> list[str]:
        return [f"{self.robustness_dir(n)}/results/claims.csv" for n in self.robustness_names()]

    def robustness_sweeps(self) -> bool:
        """Whether this run sweeps the perturbations (``robustness.sweep``); else the claims read the
        perturbations' committed outputs, each checked against its current configuration."""
        spec = self.config.get("robustness", {}) or {}
        return bool(self.robustness_names()) and bool(spec.get("sweep", False))

    def robustness_status(self, name: str) -> str:
        """``"current"``, or why a perturbation's outputs cannot stand beside this sweep's verdicts:
        missing, or swept with another configuration (the top-level keys that differ)."""
        base = self.robustness_dir(name)
        claims, snapshot = f"{base}/results/claims.csv", f"{base}/results/config.json"
        if not (os.path.exists(claims) and os.path.exists(snapshot)):
            return "not swept"
        try:
            with open(snapshot) as fh:
                ran = json.load(fh).get("config", {})
        except (OSError, ValueError) as exc:
            return f"unreadable snapshot {snapshot} ({exc})"
        want, ran = _verdict_inputs(self.robustness_config(name)), _verdict_inputs(ran)
        differ = sorted(k for k in set(want) | set(ran) if want.get(k) != ran.get(k))
        return "current" if not differ else f"swept with another configuration ({', '.join(differ)})"

    def robustness_config(self, name: str) -> dict:
        """The configuration of one perturbation's sweep: this one with the perturbation's overlay
        merged on top (mappings key by key, lists and scalars replace, as --configfile does), cut to
        what the primary verdicts read: the baseline and the method in the main study and the
        generation step; the secondary studies hold only the method's runs, no validation, no
        throughput, no nested robustness; written under ``robustness/<name>``."""
        import copy

        perturbations = (self.config.get("robustness", {}) or {}).get("perturbations", {}) or {}
        if name not in perturbations:
            _fail(f"robustness.perturbations has no {name!r} (declared: {', '.join(sorted(perturbations)) or 'none'})")
        cfg = copy.deepcopy(self.config)
        _merge_into(cfg, copy.deepcopy(perturbations[name] or {}))
        report = cfg.setdefault("report", {})
        pair = [report.get("baseline", "infonce"), report.get("method", "unialign")]
        main = cfg["studies"]["main"]
        main["variants"] = pair
        for study, spec in cfg["studies"].items():
            if study != "main":  # every key replaced: the default config merged beneath adds nothing back
                cfg["studies"][study] = {"description": spec.get("description", study), "base": pair[1],
                                         "variants": [pair[1]], "ms": [main["ms"][0]],
                                         "datasets": [main["datasets"][0]]}
        gen = cfg.setdefault("generation", {})
        gen["variants"] = [v for v in gen.get("variants", []) if v in pair] or pair
        report.update(method_tuple=pair[1], controls=[], challengers=[])
        cfg["validation"] = {**(cfg.get("validation") or {}), "enabled": False}
        cfg["throughput"] = {**(cfg.get("throughput") or {}), "enabled": False}
        cfg["robustness"] = {"enabled": False, "perturbations": {}}
        cfg["output_root"] = self.robustness_dir(name)
        return cfg

    def robustness_config_text(self, name: str) -> str:
        """``robustness/<name>/config.yaml``: the perturbation's configuration as the nested sweep reads it."""
        import yaml

        return yaml.safe_dump(self.robustness_config(name), sort_keys=False)

    def refresh_robustness_configs(self) -> None:
        """When sweeping, a perturbation config whose content is not the one in force is rewritten
        (atomically), so that its nested sweep is older than its input and runs again: like
        :meth:`refresh_snapshot`, a params change alone reruns nothing in a fresh clone."""
        if not self.robustness_sweeps():
            return
        from harness.files import atomic_write_text

        for name in self.robustness_names():
            path = f"{self.robustness_dir(name)}/config.yaml"
            if os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    stale = handle.read() != self.robustness_config_text(name)
                if stale:
                    atomic_write_text(path, self.robustness_config_text(name))

    def robustness_args(self) -> str:
        """The claims rule's arguments: ``--perturbed NAME=RESULTS_DIR`` for each perturbation swept here
        or whose committed outputs match its configuration, ``--stale NAME=REASON`` for the others."""
        args = []
        for name, path in zip(self.robustness_names(), self.robustness_claims()):
            status = "current" if self.robustness_sweeps() else self.robustness_status(name)
            # its numbers, judged by this sweep's claims code
            folder = os.path.dirname(path)
            args += ["--perturbed", f"{name}={folder}"] if status == "current" else ["--stale", f"{name}={status}"]
        return shlex.join(args)

    def doubled_tuning(self) -> list[tuple[str, str]]:
        """(name, tuning.csv) of each perturbation with more tuning trials than this sweep whose outputs
        stand beside it: the saturation check's longer searches."""
        trials = int(self.tuning.get("trials", 4))
        out = []
        for name in self.robustness_names():
            more = int((self.robustness_config(name).get("tuning") or {}).get("trials", trials))
            current = self.robustness_sweeps() or self.robustness_status(name) == "current"
            if more > trials and current:
                out.append((name, f"{self.robustness_dir(name)}/results/tuning.csv"))
        return out

    def robustness_fingerprint(self) -> str:
        """sha256 of the perturbations' result files read without being inputs: a changed file reruns
        the claims rule (params trigger)."""
        import hashlib

        digest = hashlib.sha256()
        for path in self.robustness_claims():
            folder = os.path.dirname(path)
            for part in [path] + [f"{folder}/{f}" for f in ("config.json", "summary.csv", "history.csv",
                                                            "generation.csv", "tuning.csv")]:
                if os.path.exists(part):
                    with open(part, "rb") as fh:
                        digest.update(part.encode() + b"\0" + hashlib.sha256(fh.read()).digest())
        return digest.hexdigest()

    def paper_reference(self) -> list[str]:
        path = self.config.get("paper_reference", os.path.join("config", "paper_reference.csv"))
        path = path if os.path.isabs(path) else os.path.join(self.basedir, path)
        return [os.path.normpath(path)] if os.path.exists(path) else []

    def cell_dirs(self, prefix: str, jobs) -> list[str]:
        return [self.out(f"{prefix}/{d}/{job}") for (d, job) in jobs]

    def upstream_benchmarks(self) -> list[str]:
        outs = [f"benchmarks/data/{d}/split{k}.tsv" for d in self.used_datasets for k in self.dataset_splits(d)]
        outs += [f"benchmarks/{stage}/{d}/{job}.tsv" for stage in ("train", "evaluate") for (d, job) in self.jobs]
        outs += [f"benchmarks/generate/{d}/{job}.tsv" for (d, job) in self.gen_jobs]
        if self.tuning_enabled:
            outs += [f"benchmarks/tune/{d}/{v}.tsv" for (d, v) in self.tuned_cells()]
        if self.validation.get("enabled", True):
            outs.append("benchmarks/validate_estimators.tsv")
        return [self.out(p) for p in outs]

    def projection_inputs(self) -> list[str]:
        proj = self.report.get("projection", {})
        d = proj.get("dataset")
        outs = []
        for key in ("baseline", "method"):
            v = self.report.get(key)
            if d and v and (d, v) in self.cells:
                outs.append(self.out(f"runs/{d}/{self.job_of[(d, v)]}"))
        outs = sorted(set(outs))
        if d in self.used_datasets:
            outs += [f"{self.data_dir(d, k)}/dataset.npz" for k in self.split_seeds]
        return outs

    def figure_runs(self, kind: str) -> list[str]:
        """--projection / --samples arguments of the figures rule: VARIANT=FOLDER of the compared runs."""
        pair = [self.report.get(k) for k in ("baseline", "method") if self.report.get(k)]
        if kind == "projection":
            proj = self.report.get("projection", {})
            d = proj.get("dataset")
            m = proj.get("m")
            seed, split = proj.get("seed", self.seeds[0]), proj.get("split_seed", self.split_seeds[0])
            return [f"{v}={self.run_dir(d, v, m, seed, split)}" for v in pair if (d, v) in self.cells]
        first = self.run_name
        return [
            f"{v}={self.out(f'generation/{d}/{self.job_of[(d, v)]}/{v}/{first(ms[0], self.seeds[0], self.split_seeds[0])}')}"
            for (d, v), ms in sorted(self.gen_cells.items())
            if v in pair and ms
        ]

    def resolved_config(self) -> str:
        """The configuration snapshot (results/config.json) the report stages read."""
        return json.dumps(
            {
                "config": self.config,
                "seeds": self.seeds,
                "split_seeds": self.split_seeds,
                "output_root": self.output_root,
                "tuned": self.tuned if self.tuning_enabled else [],
                "cells": [
                    {
                        "dataset": d,
                        "variant": v,
                        "job": self.job_of[(d, v)],
                        "ms": ms,
                        "generation_ms": self.gen_cells.get((d, v), []),
                        "split_seeds": self.cell_splits[(d, v)],
                        "runs": self.out(f"runs/{d}/{self.job_of[(d, v)]}/{v}"),
                        "generation": self.out(f"generation/{d}/{self.job_of[(d, v)]}/{v}"),
                    }
                    for (d, v), ms in self.cells.items()
                ],
            },
            sort_keys=True,
            indent=1,
        ) + "\n"

    def refresh_snapshot(self) -> None:
        """A snapshot whose content is not the configuration in force is rewritten (atomically).

        A params change reruns a rule only where Snakemake has metadata for its output, which a fresh
        clone of committed results lacks; every report stage then reads the newer file."""
        if os.path.exists(self.snapshot):
            with open(self.snapshot, encoding="utf-8") as handle:
                stale = handle.read() != self.resolved_config()
            if stale:
                from harness.files import atomic_write_text

                atomic_write_text(self.snapshot, self.resolved_config())
