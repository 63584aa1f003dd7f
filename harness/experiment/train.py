"""Train per-modality encoders with one objective: ``python -m harness train ...``.

Outputs in RUN_DIR (only rank 0 writes):

- ``history.csv``: one row per epoch (rewritten atomically each epoch). Columns: ``epoch``,
  ``step`` (optimizer steps so far), ``loss`` and ``term/<name>`` (epoch means of the objective's
  weighted terms), and on evaluation epochs (every ``--eval-every`` and the last) validation
  metrics on the first 256 validation rows (empty on other epochs):
  ``val/R1_mean`` (mean R@1 in percent over ordered pairs); ``val/holder`` (global Hölder
  divergence, gamma = M, resubstitution, median bandwidth); ``val/proxy/{bound,alignment,
  uniformity,constant,L_align_anchor,h}`` (``harness.instruments.divergence.proxy_bound``); ``val/gap/
  {centroid_distance_pairs,mean_paired_distance_pairs,relative_gap_pairs,true_pair_cosine_anchor,
  uniformity_mean}`` (``harness.instruments.gap``); ``val/conflict/{zeta,projection_ratio,chi,chi_net}/mean``
  (``harness.instruments.conflicts.infonce_conflicts``, temperature 0.07, anchor 0); ``val/grad/<name>/mean``
  (``harness.instruments.conflicts.gradient_conflicts`` of the trained objective: ``cos_align_unif_anchor``,
  ``angle_align_unif_deg_anchor``, ``cos_align_unif_all``, ``pull_cos``, ``chi_grad``,
  ``pull_additivity_residual``). An instrument that raises is left empty with one warning.
- ``steps.csv``: ``step, epoch, loss`` per optimizer step (for equivalence checks).
- ``checkpoint.pt``: written atomically every epoch; resumed from automatically when the same
  command is run again (bitwise identical results on CPU). Its payload is stored with a sha256;
  a truncated or corrupted file is refused with an error.
- ``model.pt``: final encoder weights + config; ``train.json``: resolved config, data sha256, wall
  time, samples/second, final losses and validation metrics.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.cli import add_threads_argument, apply_threads
from harness.experiment import distributed as hdist
from harness.experiment.data import DataError, load_dataset
from harness.experiment.metrics import VAL_ROWS, validation_metrics
from harness.experiment.models import MultiEncoder
from harness.experiment.runs import (
    CheckpointError,
    TrainError,
    build_objective,
    check_dataset_for_run,
    config_diff,
    load_checkpoint,
    objective_temperature,
    parse_params,
    save_checkpoint,
)
from harness.files import atomic_save_torch, atomic_write_text, write_json

# ----------------------------------------------------------------------------- checkpoints


# ----------------------------------------------------------------------------- metrics helpers


def _write_csv(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))


# ----------------------------------------------------------------------------- training


def resolve_config(args) -> dict[str, Any]:
    return {
        "data": str(Path(args.data).resolve()),
        "objective": args.objective,
        "params": parse_params(args.param),
        "n_modalities": int(args.n_modalities),
        "seed": int(args.seed),
        "epochs": int(args.epochs),
        "batch_size": int(args.batch_size),
        "dim": int(args.dim),
        "hidden": int(args.hidden),
        "depth": int(args.depth),
        "lr": float(args.lr),
        "weight_decay": float(args.weight_decay),
        "eval_every": int(args.eval_every),
        "out": str(Path(args.out).resolve()),
        "device": args.device,
        "quiet": bool(args.quiet),
        "threads": int(getattr(args, "threads", 0)),
    }


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) one training run described by a resolved config; returns train.json's dict."""
    info = hdist.init_from_env(cfg["device"])
    try:
        return _train(cfg, info)
    finally:
        hdist.cleanup(info)


def _train(cfg: dict[str, Any], info: hdist.DistInfo) -> dict[str, Any]:
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
    check_dataset_for_run(ds, M, cfg["batch_size"], info.world_size)
    loss_fn = build_objective(cfg["objective"], cfg["params"])

    done = out / "train.json"
    if done.exists() and (out / "model.pt").exists():
        prev = json.loads(done.read_text())
        if not config_diff(prev["config"], cfg) and prev["config"]["epochs"] == cfg["epochs"]:
            if info.is_main and not cfg["quiet"]:
                print(f"{out} already holds a finished run with this configuration; nothing to do")
            return prev

    torch.manual_seed(cfg["seed"])
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
    except Exception:  # noqa: BLE001  # pragma: no cover
        pass

    model = MultiEncoder(ds.dims[:M], cfg["dim"], cfg["hidden"], cfg["depth"]).to(device)
    loss_fn = loss_fn.to(device)
    obj_params = [p for p in loss_fn.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(list(model.parameters()) + obj_params, lr=cfg["lr"],
                                  weight_decay=cfg["weight_decay"])
    shuffle = torch.Generator()
    shuffle.manual_seed(cfg["seed"])

    train_idx = ds.split("train")
    xs_train = [torch.from_numpy(ds.standardized(m, train_idx)).to(device) for m in range(M)]
    val_idx = ds.split("val")[:VAL_ROWS]
    if len(val_idx) < 2:
        val_idx = train_idx[:VAL_ROWS]
    xs_val = [torch.from_numpy(ds.standardized(m, val_idx)).to(device) for m in range(M)]
    n_train, B = len(train_idx), cfg["batch_size"]
    steps_per_epoch = n_train // B

    history: list[dict] = []
    steps: list[dict] = []
    start_epoch, step, elapsed_before = 0, 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    resumed_from = None
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        diff = config_diff(state["config"], cfg)
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
        start_epoch, step, elapsed_before = state["epoch"], state["step"], state["elapsed"]
        resumed_from = start_epoch
        if info.is_main and not cfg["quiet"]:
            print(f"resuming {out} from epoch {start_epoch}", file=sys.stderr)

    ddp_model = model
    if info.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )

    show = info.is_main and not cfg["quiet"] and sys.stderr.isatty()
    from tqdm import tqdm

    bar = tqdm(total=cfg["epochs"], initial=start_epoch, desc=f"{cfg['objective']} M={M}", disable=not show,
               file=sys.stderr)
    t_loop = time.perf_counter()
    samples = 0
    for epoch in range(start_epoch, cfg["epochs"]):
        model.train()
        perm = torch.randperm(n_train, generator=shuffle)
        sums: dict[str, float] = {}
        for b in range(steps_per_epoch):
            rows = hdist.shard(perm[b * B : (b + 1) * B], info).to(device)
            xb = [x[rows] for x in xs_train]
            zs = ddp_model(xb)
            res = loss_fn(zs)
            optimizer.zero_grad(set_to_none=True)
            res.loss.backward()
            hdist.average_gradients(obj_params, info)
            optimizer.step()
            step += 1
            samples += B
            loss_v = float(res.loss.detach())
            if not math.isfinite(loss_v):
                raise TrainError(f"loss became {loss_v} at epoch {epoch + 1}, step {step}")
            steps.append({"step": step, "epoch": epoch + 1, "loss": loss_v})
            sums["loss"] = sums.get("loss", 0.0) + loss_v
            for k, v in res.terms.items():
                sums[f"term/{k}"] = sums.get(f"term/{k}", 0.0) + float(v.detach())
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step}
        row.update({k: v / steps_per_epoch for k, v in sums.items()})
        last = epoch + 1 == cfg["epochs"]
        if info.is_main and ((epoch + 1) % max(cfg["eval_every"], 1) == 0 or last):
            # validation may draw random numbers (symile's negatives); fork the generator so the
            # training stream (and, under DDP, its agreement across ranks) does not depend on it
            with hdist.local_objectives(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(cfg["seed"]) + epoch)
                zs_val = model.embed(xs_val)
                row.update(validation_metrics([z.cpu() for z in zs_val], loss_fn.cpu() if device.type != "cpu" else loss_fn,
                                                  run=str(out)))
            loss_fn.to(device)
        history.append(row)
        if info.is_main:
            _write_csv(out / "history.csv", history)
            _write_csv(out / "steps.csv", steps)
            save_checkpoint(ckpt_path, {
                "config": cfg, "epoch": epoch + 1, "step": step,
                "model": model.state_dict(), "objective": loss_fn.state_dict(),
                "optimizer": optimizer.state_dict(), "shuffle_rng": shuffle.get_state(),
                "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                "history": history, "steps": steps,
                "elapsed": elapsed_before + time.perf_counter() - t_start,
            })
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", R1=f"{row.get('val/R1_mean', float('nan')):.1f}")
    bar.close()
    hdist.barrier(info)
    loop_s = time.perf_counter() - t_loop
    wall = elapsed_before + time.perf_counter() - t_start
    final = history[-1] if history else {}
    result = {
        "config": cfg,
        "seed": cfg["seed"],
        "data_sha256": ds.meta.get("sha256"),
        "dataset": ds.meta.get("dataset"),
        "modality_names": ds.names[:M],
        "modality_dims": ds.dims[:M],
        "n_train": n_train,
        "steps": step,
        "steps_per_epoch": steps_per_epoch,
        "world_size": info.world_size,
        "resumed_from_epoch": resumed_from,
        "wall_time_s": wall,
        "samples_per_second": samples / loop_s if loop_s > 0 and samples else None,
        "final": {k: v for k, v in final.items() if isinstance(v, (int, float))},
        "objective_temperature": objective_temperature(loss_fn),
        "torch_version": torch.__version__,
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }
    if info.is_main:
        atomic_save_torch(out / "model.pt", {
            "model": model.state_dict(), "objective": loss_fn.state_dict(), "config": cfg,
            "in_dims": ds.dims[:M],
        })
        write_json(out / "train.json", result)
        if not cfg["quiet"]:
            print(f"{out}: {step} steps, final loss {final.get('loss', float('nan')):.4f}, "
                  f"val R@1 {final.get('val/R1_mean', float('nan')):.1f}, {wall:.1f}s")
    return result


# ----------------------------------------------------------------------------- CLI


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="dataset folder from `python -m harness data`")
    p.add_argument("--objective", required=True, help="objective name (objectives.available())")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="objective parameter, value parsed with yaml.safe_load (repeatable)")
    p.add_argument("--n-modalities", type=int, required=True, help="M: use the first M modalities")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128, help="global batch size (all ranks together)")
    p.add_argument("--dim", type=int, default=64, help="shared embedding dimension d")
    p.add_argument("--hidden", type=int, default=256, help="encoder hidden width")
    p.add_argument("--depth", type=int, default=2, help="encoder hidden layers")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--eval-every", type=int, default=1, help="validation metrics every K epochs (and the last)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    add_threads_argument(p)


def main(args) -> int:
    apply_threads(args)
    try:
        cfg = resolve_config(args)
        train(cfg)
    except (TrainError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
