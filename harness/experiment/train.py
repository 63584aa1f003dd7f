"""Train per-modality encoders with one objective: ``python -m harness train ...``.

Budget and cadence (in optimizer steps; ``steps_per_epoch = n_train // batch_size``):

- ``--steps N`` or ``--epochs E`` (exactly one; E epochs are E * steps_per_epoch steps). The data
  are reshuffled at every epoch boundary from one seeded generator, so a run of N steps is the first
  N steps of any longer run with the same configuration.
- ``--eval-every-steps K`` or ``--eval-every E`` (epochs; at most one): validation metrics every K
  steps and at the last step; default: ``ceil(N / 10)``, i.e. 10 evaluation points.
- ``--select last|best_val``: the weights written to ``model.pt``: those after the last step, or
  those of the evaluation point with the highest ``val/R1_mean`` (the first one on ties).

Optimizer: AdamW. ``--weight-decay-groups all`` decays every parameter; ``clip`` follows open_clip:
parameters with fewer than 2 dimensions (biases, LayerNorm weights) and the objective's temperature
(logit scale) get no weight decay. After every optimizer step each objective module with a
``clamp_()`` method (``objectives._base.Temperature``) is called, so a logit-scale clamp can act on
the parameter after the update as CLIP does; the objective's own options decide what it clamps.

Encoder head: ``--head linear`` (unit L2 rows) or ``layernorm`` (``harness.experiment.models``);
validation instruments are defined on the sphere and see L2-normalised rows either way.

Outputs in RUN_DIR (only rank 0 writes):

- ``history.csv``: one row per evaluation point (rewritten atomically at each). Columns: ``step``
  (optimizer steps so far), ``epoch`` (``step / steps_per_epoch``), ``loss`` and ``term/<name>``
  (means over the steps since the previous evaluation point of the loss and the objective's weighted
  terms), then validation metrics on the first 256 validation rows: ``val/R1_mean`` (mean R@1 in
  percent over ordered pairs); ``val/holder`` (global Hölder divergence, gamma = M, resubstitution,
  median bandwidth); ``val/proxy/{bound,alignment,uniformity,constant,L_align_anchor,h}``
  (``harness.instruments.divergence.proxy_bound``); ``val/gap/{centroid_distance_pairs,
  mean_paired_distance_pairs,relative_gap_pairs,true_pair_cosine_anchor,uniformity_mean}``
  (``harness.instruments.gap``); ``val/conflict/{zeta,projection_ratio,chi,chi_net}/mean``
  (``harness.instruments.conflicts.infonce_conflicts``, temperature 0.07, anchor 0); ``val/grad/<name>/mean``
  (``harness.instruments.conflicts.gradient_conflicts`` of the trained objective: ``cos_align_unif_anchor``,
  ``angle_align_unif_deg_anchor``, ``cos_align_unif_all``, ``pull_cos``, ``chi_grad``,
  ``pull_additivity_residual``). ``--val-instruments``: ``standard`` (default) computes R@1, Hölder,
  proxy and gap keys at every point and the conflict keys at the last point only; ``full`` every key
  at every point; ``core`` only R@1, Hölder and proxy. An instrument that raises is left empty with
  one warning.
- ``steps.csv``: ``step, epoch, loss`` per optimizer step (for equivalence checks).
- ``checkpoint.pt``: written atomically at every evaluation point; resumed from automatically when
  the same command is run again (bitwise identical results on CPU). Its payload is stored with a
  sha256; a truncated or corrupted file is refused with an error. It also holds the weights of the
  best evaluation point so far, so ``--select`` may change on resume.
- ``model.pt``: selected encoder weights + config; ``train.json``: resolved config, data sha256,
  wall time, samples/second, ``final`` (the last history row), ``selected_step`` /
  ``selected_epoch`` / ``selected`` (the history row whose weights ``model.pt`` holds),
  ``best_val_step`` / ``best_val_R1``, ``eval_points``, ``eval_every_steps``, and
  ``still_improving``: True when the best validation R@1 in the last quarter of the run exceeds the
  best before it by more than ``still_improving_tolerance`` (1 R@1 point), i.e. the run had not
  converged (None when either part has no evaluation point).

Budget by convergence: with ``--patience P`` (evaluation points) the run stops at the first
evaluation point where ``val/R1_mean`` has not exceeded its best earlier value by more than
``--min-delta D`` (R@1 points, default 0) for P consecutive evaluation points; ``--steps``/``--epochs``
is then the cap. The decision is a function of ``history.csv`` alone, so a resumed run stops at the
same step as an uninterrupted one. ``train.json`` adds ``cap_steps`` (the budget), ``stopped_step``
(the last step trained), ``cap_hit`` (True when the run trained the whole cap without meeting the
stopping rule; always True without ``--patience``), ``patience`` and ``min_delta``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.cli import add_threads_argument, apply_threads
from harness.experiment import distributed as hdist
from harness.experiment.data import DataError, load_dataset
from harness.experiment.metrics import VAL_ROWS, validation_metrics
from harness.experiment.models import HEADS, MultiEncoder
from harness.experiment.progress import Progress, ProgressOptionError, ProgressOptions, TensorBoardUnavailable
from harness.experiment.progress import add_arguments as add_progress_arguments
from harness.experiment.progress import options_from_args as progress_options
from harness.experiment.runs import (
    CheckpointError,
    TrainError,
    bind_dataset,
    build_objective,
    check_dataset_for_run,
    check_finished_run,
    check_resume,
    config_diff,
    load_checkpoint,
    objective_temperature,
    parse_params,
    run_writer,
    save_checkpoint,
    write_run,
)
from harness.files import atomic_write_text

DEFAULT_EVAL_POINTS = 10
SELECT_CHOICES = ("last", "best_val")
WEIGHT_DECAY_GROUPS = ("all", "clip")
VAL_INSTRUMENTS = ("standard", "full", "core")
# still_improving: the best R@1 of the last quarter beats the best before it by more than this
STILL_IMPROVING_TOLERANCE = 1.0
STILL_IMPROVING_FRACTION = 0.25
# configuration keys added after runs were first written, with the behaviour those runs had
LEGACY_CONFIG = {"head": "linear", "weight_decay_groups": "all", "patience": None, "min_delta": 0.0}


# ----------------------------------------------------------------------------- helpers


def _write_csv(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))


def with_legacy_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with the keys older runs lack set to the behaviour those runs had."""
    return {**LEGACY_CONFIG, **cfg}


def still_improving(steps: Sequence[int], r1: Sequence[float], total_steps: int,
                    tolerance: float = STILL_IMPROVING_TOLERANCE) -> bool | None:
    """True when validation R@1 still rose in the last quarter of the run: the best value at steps
    after ``0.75 * total_steps`` exceeds the best value up to there by more than ``tolerance``
    (R@1 points). None when either part has no finite value."""
    cut = (1.0 - STILL_IMPROVING_FRACTION) * total_steps
    before = [v for s, v in zip(steps, r1) if s <= cut and math.isfinite(v)]
    late = [v for s, v in zip(steps, r1) if s > cut and math.isfinite(v)]
    if not before or not late:
        return None
    return bool(max(late) > max(before) + tolerance)


def convergence_stop(values: Sequence[float], patience: int | None, min_delta: float = 0.0) -> int | None:
    """Index of the evaluation point at which training stops by convergence, or None.

    A value improves when it exceeds the best earlier value by more than ``min_delta`` (the first
    finite value always does); the run stops at the first point that ends ``patience`` consecutive
    points without an improvement. Non-finite values never improve. ``patience`` None: never stops.
    """
    if patience is None:
        return None
    best, since = None, 0
    for i, v in enumerate(values):
        v = float(v)
        if math.isfinite(v) and (best is None or v > best + min_delta):
            best, since = v, 0
        else:
            since += 1
            if best is not None and since >= patience:
                return i
    return None


def _history_stop(history: Sequence[dict], cfg: dict[str, Any]) -> int | None:
    r1 = [r.get("val/R1_mean", float("nan")) for r in history]
    return convergence_stop(r1, cfg.get("patience"), cfg.get("min_delta", 0.0))


def parameter_groups(model: torch.nn.Module, loss_fn: torch.nn.Module, weight_decay: float,
                     mode: str) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``all``: one group, every parameter decayed (model first, then the
    objective's trainable parameters); ``clip``: no decay on parameters with ndim < 2 and on the
    objective's temperature (logit scale), decay on the rest (open_clip's exclusion rule)."""
    from objectives._base import Temperature

    params = list(model.parameters()) + [p for p in loss_fn.parameters() if p.requires_grad]
    if mode == "all":
        return [{"params": params, "weight_decay": weight_decay}]
    if mode != "clip":
        raise TrainError(f"--weight-decay-groups {mode!r} is not one of {list(WEIGHT_DECAY_GROUPS)}")
    temperature = {id(p) for m in loss_fn.modules() if isinstance(m, Temperature) for p in m.parameters()}
    decay = [p for p in params if p.ndim >= 2 and id(p) not in temperature]
    no_decay = [p for p in params if p.ndim < 2 or id(p) in temperature]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def clamp_modules(loss_fn: torch.nn.Module) -> list[torch.nn.Module]:
    """The objective's modules with a ``clamp_()`` method, called after every optimizer step."""
    return [m for m in loss_fn.modules() if callable(getattr(m, "clamp_", None))]


@dataclass(frozen=True)
class Plan:
    """A run's budget in optimizer steps, resolved against its dataset."""

    steps_per_epoch: int
    total_steps: int
    eval_every_steps: int

    def is_eval_step(self, step: int) -> bool:
        return step % self.eval_every_steps == 0 or step == self.total_steps

    def eval_points(self) -> list[int]:
        return [s for s in range(1, self.total_steps + 1) if self.is_eval_step(s)]


def make_plan(cfg: dict[str, Any], steps_per_epoch: int) -> Plan:
    total = cfg["steps"] if cfg.get("steps") is not None else cfg["epochs"] * steps_per_epoch
    if cfg.get("eval_every_steps") is not None:
        every = cfg["eval_every_steps"]
    elif cfg.get("eval_every") is not None:
        every = cfg["eval_every"] * steps_per_epoch
    else:
        every = math.ceil(total / DEFAULT_EVAL_POINTS)
    return Plan(steps_per_epoch, int(total), max(int(every), 1))


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items() if isinstance(v, (int, float))}


def _clone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in state.items()}


# ----------------------------------------------------------------------------- configuration


def _optional_int(args, name: str, flag: str) -> int | None:
    value = getattr(args, name, None)
    if value is None:
        return None
    if int(value) < 1:
        raise TrainError(f"{flag} {value} must be a positive integer")
    return int(value)


def _choice(args, name: str, flag: str, choices: Sequence[str], default: str) -> str:
    value = getattr(args, name, None) or default
    if value not in choices:
        raise TrainError(f"{flag} {value!r} is not one of {list(choices)}")
    return value


@dataclass
class TrainOptions:
    """The options of one training run, named as ``python -m harness train`` names them.

    The command line takes its defaults from here and ``compare`` builds one directly;
    :meth:`resolve` checks them and returns the run's config (the ``config`` of ``train.json``).
    """

    data: str
    objective: str
    n_modalities: int
    out: str
    param: list[str] = field(default_factory=list)
    seed: int = 0
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 128
    dim: int = 64
    hidden: int = 256
    depth: int = 2
    head: str = "linear"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    weight_decay_groups: str = "all"
    eval_every_steps: int | None = None
    eval_every: int | None = None
    patience: int | None = None
    min_delta: float = 0.0
    select: str = "last"
    val_instruments: str = "standard"
    device: str = "cpu"
    quiet: bool = False
    threads: int = 0
    dist_timeout_s: float | None = None

    @classmethod
    def from_args(cls, args) -> "TrainOptions":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def resolve(self) -> dict[str, Any]:
        return resolve_config(self)


def resolve_config(args) -> dict[str, Any]:
    steps = _optional_int(args, "steps", "--steps")
    epochs = _optional_int(args, "epochs", "--epochs")
    if (steps is None) == (epochs is None):
        raise TrainError(f"give exactly one training budget, --steps N or --epochs E "
                         f"(got --steps {steps}, --epochs {epochs})")
    eval_every_steps = _optional_int(args, "eval_every_steps", "--eval-every-steps")
    eval_every = _optional_int(args, "eval_every", "--eval-every")
    if eval_every_steps is not None and eval_every is not None:
        raise TrainError(f"give at most one validation cadence, --eval-every-steps K or --eval-every E "
                         f"(got --eval-every-steps {eval_every_steps}, --eval-every {eval_every})")
    patience = _optional_int(args, "patience", "--patience")
    min_delta = float(getattr(args, "min_delta", 0.0) or 0.0)
    if not math.isfinite(min_delta) or min_delta < 0:
        raise TrainError(f"--min-delta {min_delta} must be a finite number >= 0 (R@1 points)")
    return {
        "data": str(Path(args.data).resolve()),
        "objective": args.objective,
        "params": parse_params(args.param),
        "n_modalities": int(args.n_modalities),
        "seed": int(args.seed),
        "steps": steps,
        "epochs": epochs,
        "batch_size": int(args.batch_size),
        "dim": int(args.dim),
        "hidden": int(args.hidden),
        "depth": int(args.depth),
        "head": _choice(args, "head", "--head", HEADS, "linear"),
        "lr": float(args.lr),
        "weight_decay": float(args.weight_decay),
        "weight_decay_groups": _choice(args, "weight_decay_groups", "--weight-decay-groups",
                                       WEIGHT_DECAY_GROUPS, "all"),
        "eval_every_steps": eval_every_steps,
        "eval_every": eval_every,
        "patience": patience,
        "min_delta": min_delta,
        "select": _choice(args, "select", "--select", SELECT_CHOICES, "last"),
        "val_instruments": _choice(args, "val_instruments", "--val-instruments", VAL_INSTRUMENTS, "standard"),
        "out": str(Path(args.out).resolve()),
        "device": args.device,
        "quiet": bool(args.quiet),
        "threads": int(getattr(args, "threads", 0)),
        "dist_timeout_s": getattr(args, "dist_timeout_s", None),
    }


# ----------------------------------------------------------------------------- training


def train(cfg: dict[str, Any], reporting: ProgressOptions | None = None) -> dict[str, Any]:
    """Run (or resume) one training run described by a resolved config; returns train.json's dict."""
    info = hdist.init_from_env(cfg["device"], cfg.get("dist_timeout_s"))
    try:
        # one writer per run folder (validated config, lock, stale temporary files removed)
        with run_writer(cfg, info.is_main), hdist.collective_errors(info):
            return _train(cfg, info, reporting)
    finally:
        hdist.cleanup(info)


def _finished_run(out: Path, cfg: dict[str, Any], plan: Plan) -> dict[str, Any] | None:
    """train.json of a finished run in ``out`` with this configuration and budget, else None."""
    done = out / "train.json"
    if not (done.exists() and (out / "model.pt").exists()):
        return None
    prev = json.loads(done.read_text())
    pcfg = with_legacy_defaults(prev["config"])
    same = (not config_diff(pcfg, cfg) and prev.get("cap_steps", prev.get("steps")) == plan.total_steps
            and prev.get("eval_every_steps") == plan.eval_every_steps
            and pcfg.get("select", "last") == cfg["select"]
            and pcfg.get("val_instruments", "standard") == cfg["val_instruments"])
    return prev if same else None


def _check_step(objective: str, loss, step: int, parameters=None) -> None:
    """objectives.registry.check_step as a TrainError (the message names the objective)."""
    from objectives.registry import ObjectiveError, check_step

    try:
        check_step(objective, loss, step, parameters)
    except ObjectiveError as exc:
        raise TrainError(str(exc)) from exc


def _validate(model, loss_fn, xs_val, cfg: dict[str, Any], step: int, last: bool, device, out: Path) -> dict:
    """Validation metrics at one evaluation point (main rank only)."""
    mode = cfg["val_instruments"]
    # validation may draw random numbers (symile's negatives); fork the generator so the training
    # stream (and, under DDP, its agreement across ranks) does not depend on it
    with hdist.local_objectives(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["seed"]) + step)
        zs_val = [z.cpu() for z in model.embed(xs_val)]
        if cfg["head"] != "linear":
            zs_val = [F.normalize(z, dim=-1, eps=1e-12) for z in zs_val]
        metrics = validation_metrics(zs_val, loss_fn.cpu() if device.type != "cpu" else loss_fn, run=str(out),
                                     gap_keys=mode != "core",
                                     conflict_keys=mode == "full" or (mode == "standard" and last))
    loss_fn.to(device)
    return metrics


def _train(cfg: dict[str, Any], info: hdist.DistInfo, reporting: ProgressOptions | None = None) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(cfg["out"])
    device = torch.device(cfg["device"] if not info.enabled or cfg["device"] == "cpu" else f"cuda:{info.local_rank}")
    if cfg["device"].startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda was asked for but CUDA is not available")
    try:
        ds = load_dataset(cfg["data"])
    except DataError as exc:
        raise TrainError(str(exc)) from exc
    M = cfg["n_modalities"]
    check_dataset_for_run(ds, M, cfg["batch_size"], info.world_size, cfg["params"])
    bind_dataset(cfg, ds)
    loss_fn = build_objective(cfg["objective"], cfg["params"])

    train_idx = ds.split("train")
    n_train, B = len(train_idx), cfg["batch_size"]
    plan = make_plan(cfg, n_train // B)

    check_finished_run(out, cfg, plan.total_steps)
    prev = _finished_run(out, cfg, plan)
    if prev is not None:
        if info.is_main and not cfg["quiet"]:
            print(f"{out} already holds a finished run with this configuration; nothing to do")
        return prev

    torch.manual_seed(cfg["seed"])
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
    except Exception:  # noqa: BLE001  # pragma: no cover
        pass

    # -- model, objective, optimizer ------------------------------------------------------
    model = MultiEncoder(ds.dims[:M], cfg["dim"], cfg["hidden"], cfg["depth"], head=cfg["head"]).to(device)
    loss_fn = loss_fn.to(device)
    obj_params = [p for p in loss_fn.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameter_groups(model, loss_fn, cfg["weight_decay"], cfg["weight_decay_groups"]),
                                  lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    clampers = clamp_modules(loss_fn)
    shuffle = torch.Generator()
    shuffle.manual_seed(cfg["seed"])

    # -- data -----------------------------------------------------------------------------
    xs_train = [torch.from_numpy(ds.standardized(m, train_idx)).to(device) for m in range(M)]
    val_idx = ds.split("val")[:VAL_ROWS]
    if len(val_idx) < 2:
        val_idx = train_idx[:VAL_ROWS]
    xs_val = [torch.from_numpy(ds.standardized(m, val_idx)).to(device) for m in range(M)]

    # -- state (resumed from the checkpoint when there is one) ----------------------------
    history: list[dict] = []
    steps: list[dict] = []
    step, pos, perm, best, elapsed_before = 0, 0, None, None, 0.0
    ckpt_path = out / "checkpoint.pt"
    resumed_from = None
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, required=(
            "config", "step", "model", "objective", "optimizer", "shuffle_rng", "torch_rng", "numpy_rng",
            "history", "steps", "elapsed"))
        check_resume(ckpt_path, state, cfg, plan.total_steps)
        diff = config_diff(with_legacy_defaults(state["config"]), cfg)
        if diff:
            raise CheckpointError(
                f"{ckpt_path} was written by a run with a different configuration (differs in: "
                f"{', '.join(diff)}); use another --out or delete the checkpoint"
            )
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        history, steps = state["history"], state["steps"]
        step, elapsed_before = state["step"], state["elapsed"]
        # position in the current epoch's permutation (checkpoints written at epoch ends lack it)
        pos, perm, best = state.get("pos", 0), state.get("perm"), state.get("best")
        resumed_from = step
        if info.is_main and not cfg["quiet"]:
            print(f"resuming {out} from step {step}", file=sys.stderr)

    ddp_model = model
    if info.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )

    show = info.is_main and not cfg["quiet"] and sys.stderr.isatty()
    from tqdm import tqdm

    bar = tqdm(total=plan.total_steps, initial=step, desc=f"{cfg['objective']} M={M}", disable=not show,
               file=sys.stderr)
    progress = Progress(plan.total_steps, B, step, reporting, enabled=info.is_main and not cfg["quiet"])
    t_loop = time.perf_counter()
    samples = 0
    sums: dict[str, float] = {}  # loss and terms summed since the last evaluation point
    n_sums = 0
    model.train()
    # a checkpoint written at the stopping point resumes as a finished run
    stop_at = _history_stop(history, cfg)
    while step < plan.total_steps and stop_at is None:
        # -- one optimizer step; the shuffle continues across epoch boundaries ------------
        hdist.report_progress(info, step + 1)
        if pos == 0:
            perm = torch.randperm(n_train, generator=shuffle)
        rows = hdist.shard(perm[pos * B : (pos + 1) * B], info).to(device)
        pos = (pos + 1) % plan.steps_per_epoch
        xb = [x[rows] for x in xs_train]
        zs = ddp_model(xb)
        try:
            res = loss_fn(zs)
        except ValueError as exc:
            raise TrainError(f"objective {cfg['objective']!r} rejected the embeddings at step {step + 1} "
                             f"(--head {cfg['head']}): {exc}") from exc
        optimizer.zero_grad(set_to_none=True)
        first = samples == 0  # this process's first step: a NaN loss or one without a gradient
        if first:
            _check_step(cfg["objective"], res.loss, step + 1)
        res.loss.backward()
        if first:
            _check_step(cfg["objective"], res.loss, step + 1, list(model.parameters()))
        hdist.average_gradients(obj_params, info)
        optimizer.step()
        with torch.no_grad():
            for m in clampers:
                m.clamp_()
        step += 1
        samples += B
        loss_v = float(res.loss.detach())
        epoch = step / plan.steps_per_epoch
        if not math.isfinite(loss_v):
            raise TrainError(f"objective {cfg['objective']!r}: loss became {loss_v} at step {step} (epoch {epoch:.2f})")
        steps.append({"step": step, "epoch": math.ceil(epoch), "loss": loss_v})
        sums["loss"] = sums.get("loss", 0.0) + loss_v
        for k, v in res.terms.items():
            sums[f"term/{k}"] = sums.get(f"term/{k}", 0.0) + float(v.detach())
        n_sums += 1
        bar.update(1)
        progress.step(step, loss_v, {k: float(v.detach()) for k, v in res.terms.items()},
                      optimizer.param_groups[0]["lr"], objective_temperature(loss_fn))
        if not plan.is_eval_step(step):
            continue

        # -- evaluation point: history row, selection, checkpoint -------------------------
        row: dict[str, Any] = {"step": step, "epoch": round(epoch, 6)}
        row.update({k: v / n_sums for k, v in sums.items()})
        sums, n_sums = {}, 0
        if info.is_main:
            row.update(_validate(model, loss_fn, xs_val, cfg, step, step == plan.total_steps, device, out))
            r1 = row.get("val/R1_mean", float("nan"))
            if math.isfinite(r1) and (best is None or r1 > best["R1"]):
                best = {"step": step, "epoch": row["epoch"], "R1": r1, "model": _clone_state(model.state_dict()),
                        "objective": _clone_state(loss_fn.state_dict())}
        history.append(row)
        stop_at = _history_stop(history, cfg) if info.is_main else None
        if info.enabled:  # every rank stops with the main one
            flag = torch.tensor([0 if stop_at is None else 1], device=device)
            torch.distributed.broadcast(flag, 0)
            stop_at = None if int(flag) == 0 else len(history) - 1
        if info.is_main and stop_at is not None and step < plan.total_steps and cfg["val_instruments"] == "standard":
            # the stopping point is the run's last: give it the last point's conflict keys
            row.update(_validate(model, loss_fn, xs_val, cfg, step, True, device, out))
        if info.is_main:
            _write_csv(out / "history.csv", history)
            _write_csv(out / "steps.csv", steps)
            save_checkpoint(ckpt_path, {
                "config": cfg, "step": step, "epoch": row["epoch"], "pos": pos, "perm": perm,
                "model": model.state_dict(), "objective": loss_fn.state_dict(),
                "optimizer": optimizer.state_dict(), "shuffle_rng": shuffle.get_state(),
                "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                "history": history, "steps": steps, "best": best,
                "elapsed": elapsed_before + time.perf_counter() - t_start,
            })
        bar.set_postfix(loss=f"{row['loss']:.4f}", R1=f"{row.get('val/R1_mean', float('nan')):.1f}")
        progress.evaluation(step, row)
    bar.close()
    progress.close()
    hdist.barrier(info)
    loop_s = time.perf_counter() - t_loop
    wall = elapsed_before + time.perf_counter() - t_start

    # -- selection and outputs --------------------------------------------------------------
    final = history[-1] if history else {}
    if cfg["select"] == "best_val" and best is not None:
        weights = {"model": best["model"], "objective": best["objective"]}
        selected_step = best["step"]
    else:
        weights = {"model": model.state_dict(), "objective": loss_fn.state_dict()}
        selected_step = step
    selected = next((r for r in history if r["step"] == selected_step), {})
    curve = [(r["step"], r.get("val/R1_mean", float("nan"))) for r in history]
    result = {
        "config": cfg,
        "seed": cfg["seed"],
        "data_sha256": ds.meta.get("sha256"),
        "dataset": ds.meta.get("dataset"),
        "modality_names": ds.names[:M],
        "modality_dims": ds.dims[:M],
        "n_train": n_train,
        "steps": step,
        "cap_steps": plan.total_steps,
        "stopped_step": step,
        "cap_hit": stop_at is None,
        "patience": cfg.get("patience"),
        "min_delta": cfg.get("min_delta", 0.0),
        "steps_per_epoch": plan.steps_per_epoch,
        "eval_every_steps": plan.eval_every_steps,
        "eval_points": len(history),
        "world_size": info.world_size,
        "resumed_from_step": resumed_from,
        "resumed_from_epoch": None if resumed_from is None else resumed_from / plan.steps_per_epoch,
        "wall_time_s": wall,
        "samples_per_second": samples / loop_s if loop_s > 0 and samples else None,
        "final": _numeric(final),
        "select": cfg["select"],
        "selected_step": selected_step,
        "selected_epoch": selected_step / plan.steps_per_epoch,
        "selected": _numeric(selected),
        "best_val_step": None if best is None else best["step"],
        "best_val_R1": None if best is None else best["R1"],
        "still_improving": still_improving([s for s, _ in curve], [v for _, v in curve], step),
        "still_improving_tolerance": STILL_IMPROVING_TOLERANCE,
        "objective_temperature": objective_temperature(loss_fn),
        "torch_version": torch.__version__,
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }
    if info.is_main:
        result = write_run(out, {**weights, "config": cfg, "in_dims": ds.dims[:M],
                                 "selected_step": selected_step}, result, cfg["device"])
        if not cfg["quiet"]:
            print(f"{out}: {step} steps, final loss {final.get('loss', float('nan')):.4f}, "
                  f"val R@1 {final.get('val/R1_mean', float('nan')):.1f}, model.pt from step {selected_step}, "
                  f"{wall:.1f}s")
    return result


# ----------------------------------------------------------------------------- CLI


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="dataset folder from `python -m harness data`")
    p.add_argument("--objective", required=True,
                   help="objective name (objectives.available(), entry points included) or package.module:Class")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="objective parameter, value parsed with yaml.safe_load (repeatable)")
    p.add_argument("--n-modalities", type=int, required=True, help="M: use the first M modalities")
    p.add_argument("--seed", type=int, default=TrainOptions.seed)
    p.add_argument("--steps", type=int, default=None,
                   help="training budget in optimizer steps (give this or --epochs)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training budget in epochs, i.e. epochs * (training rows // batch size) steps")
    p.add_argument("--batch-size", type=int, default=TrainOptions.batch_size,
                   help="global batch size (all ranks together)")
    p.add_argument("--dim", type=int, default=TrainOptions.dim, help="shared embedding dimension d")
    p.add_argument("--hidden", type=int, default=TrainOptions.hidden, help="encoder hidden width")
    p.add_argument("--depth", type=int, default=TrainOptions.depth, help="encoder hidden layers")
    p.add_argument("--head", choices=HEADS, default=TrainOptions.head,
                   help="encoder output: linear (unit L2 rows) or layernorm (LayerNorm rows, no L2 norm)")
    p.add_argument("--lr", type=float, default=TrainOptions.lr)
    p.add_argument("--weight-decay", type=float, default=TrainOptions.weight_decay)
    p.add_argument("--weight-decay-groups", choices=WEIGHT_DECAY_GROUPS, default=TrainOptions.weight_decay_groups,
                   help="all: AdamW decays every parameter; clip: no decay on biases, norm weights (ndim < 2) "
                        "and the objective's temperature, as open_clip")
    p.add_argument("--eval-every-steps", type=int, default=None,
                   help=f"validation metrics every K steps and at the last (default: {DEFAULT_EVAL_POINTS} points)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="validation metrics every K epochs and at the last (instead of --eval-every-steps)")
    p.add_argument("--patience", type=int, default=None,
                   help="stop when val R@1 has not improved by more than --min-delta for this many evaluation "
                        "points; --steps/--epochs is then the cap (default: train the whole budget)")
    p.add_argument("--min-delta", type=float, default=TrainOptions.min_delta,
                   help="smallest rise of val R@1 (points) that counts as an improvement for --patience")
    p.add_argument("--select", choices=SELECT_CHOICES, default=TrainOptions.select,
                   help="model.pt weights: after the last step, or at the evaluation point with the best val R@1")
    p.add_argument("--val-instruments", choices=VAL_INSTRUMENTS, default=TrainOptions.val_instruments,
                   help="standard: conflict instruments at the last evaluation point only; full: every "
                        "instrument at every point; core: R@1, Hölder divergence and proxy only")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--device", default=TrainOptions.device, help="cpu or cuda")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, progress lines or summary line (warnings only)")
    add_progress_arguments(p)
    add_threads_argument(p)
    hdist.add_arguments(p)


def main(args) -> int:
    apply_threads(args)
    try:
        cfg = TrainOptions.from_args(args).resolve()
        terminal = not cfg["quiet"] and sys.stderr.isatty()
        train(cfg, progress_options(args, terminal))
    except (TrainError, DataError, TensorBoardUnavailable, ProgressOptionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
