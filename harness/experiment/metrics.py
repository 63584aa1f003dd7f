"""Metrics shared by training (per-epoch validation) and evaluation: retrieval, probes, and the
flattening of instrument results into ``prefix/name/stat`` keys."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from harness.instruments import conflicts, divergence, gap

log = logging.getLogger(__name__)

CONFLICT_TEMPERATURE = 0.07
VAL_ROWS = 256


def retrieval_ranks(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Rank (1-based) of gallery row i for query row i: 1 + #{j: s_ij > s_ii}."""
    if query.shape != gallery.shape:
        raise ValueError(f"query {tuple(query.shape)} and gallery {tuple(gallery.shape)} must be paired")
    sims = query.double() @ gallery.double().T
    true = sims.diagonal().unsqueeze(1)
    return 1 + (sims > true).sum(dim=1)


def recall_stats(ranks: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    out = {f"R{k}": 100.0 * float((ranks <= k).double().mean()) for k in ks}
    out["MedR"] = float(torch.median(ranks.double()))  # lower median for even counts
    return out


def retrieval_metrics(zs: Sequence[torch.Tensor], ks: Sequence[int] = (1, 5, 10), anchor: int = 0) -> dict[str, float]:
    """Per ordered pair and aggregated recall@k (percent) and median rank; keys without prefix."""
    M = len(zs)
    out: dict[str, float] = {}
    per: dict[str, dict[tuple[int, int], float]] = {}
    for m in range(M):
        for n in range(M):
            if m == n:
                continue
            stats = recall_stats(retrieval_ranks(zs[m], zs[n]), ks)
            for key, v in stats.items():
                out[f"{key}/{m}->{n}"] = v
                per.setdefault(key, {})[(m, n)] = v
    for key, d in per.items():
        out[f"{key}/mean"] = float(np.mean(list(d.values())))
        out[f"{key}/anchor->others"] = float(np.mean([v for (m, n), v in d.items() if m == anchor]))
        out[f"{key}/others->anchor"] = float(np.mean([v for (m, n), v in d.items() if n == anchor]))
    cos = [float((zs[m].double() * zs[n].double()).sum(1).mean()) for m in range(M) for n in range(m + 1, M)]
    out["true_pair_cosine/mean"] = float(np.mean(cos))
    return out


# ----------------------------------------------------------------------------- probes


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 seed: int = 0) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000, random_state=seed)
    clf.fit(train_x, train_y)
    return float((clf.predict(test_x) == test_y).mean())




def flatten_metrics(prefix: str, value: Any) -> dict[str, float]:
    """Scalars kept; 1-D tensors/arrays -> their mean; dicts flattened with '/'; other types dropped."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten_metrics(f"{prefix}/{k}" if prefix else str(k), v))
        return out
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double()
        if value.numel() == 1:
            out[prefix] = float(value.reshape(()))
        elif value.numel() > 1:
            out[prefix + "/mean"] = float(value.mean())
        return out
    if isinstance(value, np.ndarray):
        if value.size == 1:
            out[prefix] = float(value.reshape(()))
        elif value.size > 1 and value.dtype.kind in "fiu":
            out[prefix + "/mean"] = float(value.mean())
        return out
    if isinstance(value, (bool, np.bool_)):
        out[prefix] = float(value)
    elif isinstance(value, (int, float, np.integer, np.floating)):
        out[prefix] = float(value)
    return out


def _safe(run: str, instrument: str, fn, *args, **kwargs) -> Any:
    """``fn(*args)``, or None after logging which instrument failed on which run (every time: an
    instrument must not kill a training run, but its failure must be visible)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        log.warning("%s: instrument %s failed and is left empty: %s: %s", run or "run", instrument,
                    type(exc).__name__, exc)
        return None


def conflict_summaries(prefix: str, result: dict, stats: tuple[str, ...] | None = None) -> dict[str, float]:
    """``result["summary"]`` of harness.instruments.conflicts -> ``{prefix/<name>/<stat>: float}``."""
    out: dict[str, float] = {}
    for name, summ in result.get("summary", {}).items():
        for stat, v in summ.items():
            if stats is None or stat in stats:
                out[f"{prefix}/{name}/{stat}"] = float(v)
    return out


def validation_metrics(zs: list[torch.Tensor], loss_fn, anchor: int = 0, run: str = "") -> dict[str, float]:
    """The cheap per-epoch instruments on validation embeddings (unit rows).

    Gap: a few keys computed by the individual ``harness.instruments.gap`` functions (``modality_gap`` also fits
    a separability classifier, too slow per epoch). Proxy: ``proxy_bound`` with the resubstitution
    estimator (its bound terms do not depend on the estimator). Conflicts: means only.
    """
    out: dict[str, float] = {}
    r = retrieval_metrics(zs, ks=(1,))
    out["val/R1_mean"] = r["R1/mean"]
    with torch.no_grad():
        h = _safe(run, "divergence.holder", divergence.holder, zs, bandwidth="median")
        if h is not None:
            out["val/holder"] = float(h)
        p = _safe(run, "divergence.proxy_bound", divergence.proxy_bound, zs, bandwidth="median", anchor=anchor,
                  estimator="resubstitution")
        if p is not None:
            for k in ("bound", "alignment", "uniformity", "constant", "L_align_anchor", "h"):
                if k in p:
                    out[f"val/proxy/{k}"] = float(p[k])
        gap_fns = {
            "centroid_distance_pairs": lambda: gap.centroid_distance(zs),
            "mean_paired_distance_pairs": lambda: gap.mean_paired_distance(zs),
            "relative_gap_pairs": lambda: gap.relative_gap(zs),
            "true_pair_cosine_anchor": lambda: gap.true_pair_cosine(zs, anchor),
            "uniformity_mean": lambda: float(np.mean([gap.uniformity(z) for z in zs])),
        }
        for k, fn in gap_fns.items():
            v = _safe(run, f"gap.{k}", fn)
            if v is not None:
                out[f"val/gap/{k}"] = float(v)
        c = _safe(run, "conflicts.infonce_conflicts", conflicts.infonce_conflicts, zs, CONFLICT_TEMPERATURE, anchor)
        if c is not None:
            out.update(conflict_summaries("val/conflict", c, ("mean",)))
    gc = _safe(run, "conflicts.gradient_conflicts", conflicts.gradient_conflicts, loss_fn, zs, anchor=anchor)
    if gc is not None:
        out.update(conflict_summaries("val/grad", gc, ("mean",)))
    return out
