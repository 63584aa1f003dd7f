"""Samples/s of a whole training step of the default model, per objective."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch

from harness.bench.timing import device_name, loadavg


def training_throughput(names: list[str], M: int = 3, batch: int = 128, dim: int = 64, hidden: int = 256,
                        depth: int = 2, steps: int = 10, windows: int = 3, threads: int = 1,
                        log: Callable[[str], None] = print) -> list[dict]:
    """Samples/s of a training step of the default model (harness.experiment.train's defaults) per objective.

    Uses ``harness.experiment.models.MultiEncoder`` and ``harness.experiment.train.build_objective`` with each objective's
    *default* parameters (median bandwidth included: what ``harness train`` runs) and AdamW, on
    random inputs of the synthetic dataset's modality widths; the step is harness.experiment.train's (encode,
    loss, zero_grad, backward, step, float(loss)). Best of ``windows`` windows of ``steps`` steps.
    Returns rows with ``note`` "not measured" when harness.experiment.train is missing.
    """
    base = {"mode": "train", "M": M, "B": batch, "d": dim, "dtype": "float32", "device": "cpu",
            "torch_version": torch.__version__, "threads": threads, "device_name": device_name(torch.device("cpu"))}
    try:
        from harness.experiment.data import DEFAULT_SYNTHETIC_DIMS
        from harness.experiment.models import MultiEncoder
        from harness.experiment.runs import build_objective
    except Exception as exc:  # noqa: BLE001 - another module may be missing
        return [dict(base, objective=n, kind="ours", note=f"not measured: {type(exc).__name__}: {exc}") for n in names]
    rows = []
    dims = [DEFAULT_SYNTHETIC_DIMS[m % len(DEFAULT_SYNTHETIC_DIMS)] for m in range(M)]
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, k, generator=g) for k in dims]
    for name in names:
        torch.manual_seed(0)
        model = MultiEncoder(dims, dim, hidden, depth)
        loss_fn = build_objective(name, {})
        params = list(model.parameters()) + [p for p in loss_fn.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)

        def step():
            res = loss_fn(model(xs))
            opt.zero_grad(set_to_none=True)
            res.loss.backward()
            opt.step()
            float(res.loss.detach())

        for _ in range(3):
            step()
        best = math.inf
        per = []
        for _ in range(windows):
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            dt = (time.perf_counter() - t0) / steps
            per.append(dt)
            best = min(best, dt)
        rows.append(dict(base, objective=name, kind="ours", variant="default", params="{}", repeats=windows,
                         time_min_s=best, time_median_s=statistics.median(per), samples_per_s=batch / best,
                         loadavg_1m=loadavg(),
                         note=f"training step of MultiEncoder(hidden={hidden}, depth={depth}), AdamW, "
                              f"min over {windows} windows of {steps} steps"))
        log(f"train {name}: {batch / best:.0f} samples/s")
    return rows
