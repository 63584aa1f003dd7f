"""Metrics shared by training (per-epoch validation) and evaluation: retrieval, probes, and the
flattening of instrument results into ``prefix/name/stat`` keys."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from harness.instruments import conflicts, divergence, gap

log = logging.getLogger(__name__)

CONFLICT_TEMPERATURE = 0.07
VAL_ROWS = 256


def _unit(z: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(z.double(), dim=-1, eps=1e-12)


def ranks_from_scores(scores: torch.Tensor) -> torch.Tensor:
    """Rank (1-based) of the true match for each query row: ``scores[i, j]`` scores query i against
    gallery item j, the true match of query i is item i; rank ``1 + #{j: s_ij > s_ii}`` (ties count
    in favour of the true match)."""
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square (queries x gallery) matrix, got {tuple(scores.shape)}")
    true = scores.diagonal().unsqueeze(1)
    return 1 + (scores > true).sum(dim=1)


#: query rows per block of the retrieval metrics: peak memory O(RETRIEVAL_BLOCK x n) float64 scores
RETRIEVAL_BLOCK = 1024


def _check_block(block: int) -> int:
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")
    return block


def blocked_ranks(scores_of, n: int, block: int = RETRIEVAL_BLOCK) -> torch.Tensor:
    """Ranks of :func:`ranks_from_scores` for an (n x n) score matrix that is never held whole:
    ``scores_of(start, stop)`` returns its rows ``start:stop`` (queries x all n gallery items), one
    block of at most ``block`` rows at a time."""
    _check_block(block)
    ranks = torch.empty(n, dtype=torch.long)
    for s0 in range(0, n, block):
        s1 = min(n, s0 + block)
        s = scores_of(s0, s1)
        if s.shape != (s1 - s0, n):
            raise ValueError(f"scores_of({s0}, {s1}) must return shape ({s1 - s0}, {n}), got {tuple(s.shape)}")
        true = s[torch.arange(s1 - s0), torch.arange(s0, s1)].unsqueeze(1)
        ranks[s0:s1] = 1 + (s > true).sum(dim=1)
    return ranks


def retrieval_ranks(query: torch.Tensor, gallery: torch.Tensor, block: int = RETRIEVAL_BLOCK) -> torch.Tensor:
    """Cosine retrieval: rank (1-based) of gallery row i for query row i: 1 + #{j: s_ij > s_ii}, over
    query blocks of ``block`` rows (the same ranks as the whole matrix)."""
    if query.shape != gallery.shape:
        raise ValueError(f"query {tuple(query.shape)} and gallery {tuple(gallery.shape)} must be paired")
    q, g = _unit(query), _unit(gallery)
    return blocked_ranks(lambda s0, s1: q[s0:s1] @ g.T, q.shape[0], block)


def recall_stats(ranks: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    out = {f"R{k}": 100.0 * float((ranks <= k).double().mean()) for k in ks}
    out["MedR"] = float(torch.median(ranks.double()))  # lower median for even counts
    return out


def _summarise(per_task: dict[str, torch.Tensor], ks: Sequence[int]) -> dict[str, float]:
    """``{stat}/{task}`` for every task's ranks, ``{stat}/mean`` over the tasks and ``R1/mean_se``: the
    standard error over test queries of R1/mean (each query's hits averaged over the tasks;
    scipy.stats.sem, i.e. the bootstrap standard error over queries up to a factor sqrt(n/(n-1)))."""
    from scipy import stats

    out: dict[str, float] = {}
    per: dict[str, list[float]] = {}
    for task, ranks in per_task.items():
        for key, v in recall_stats(ranks, ks).items():
            out[f"{key}/{task}"] = v
            per.setdefault(key, []).append(v)
    for key, vals in per.items():
        out[f"{key}/mean"] = float(np.mean(vals))
    hits = torch.stack([(r <= 1).double() for r in per_task.values()]).mean(0).numpy() * 100.0
    out["R1/mean_se"] = float(stats.sem(hits)) if hits.size > 1 else float("nan")
    return out


def retrieval_metrics(zs: Sequence[torch.Tensor], ks: Sequence[int] = (1, 5, 10), anchor: int = 0,
                      block: int = RETRIEVAL_BLOCK) -> dict[str, float]:
    """Pairwise cosine retrieval: per ordered pair ``{stat}/{m}->{n}``, their ``mean`` (and
    ``R1/mean_se``), ``anchor->others`` and ``others->anchor``; keys without prefix (``retrieval/``).
    Scores are formed ``block`` query rows at a time (peak memory O(block x n))."""
    M = len(zs)
    tasks = {f"{m}->{n}": retrieval_ranks(zs[m], zs[n], block) for m in range(M) for n in range(M) if m != n}
    out = _summarise(tasks, ks)
    for key in [k.split("/")[0] for k in out if k.endswith("/mean") and not k.endswith("_se")]:
        out[f"{key}/anchor->others"] = float(np.mean([out[f"{key}/{anchor}->{n}"] for n in range(M) if n != anchor]))
        out[f"{key}/others->anchor"] = float(np.mean([out[f"{key}/{m}->{anchor}"] for m in range(M) if m != anchor]))
    us = [_unit(z) for z in zs]
    cos = [float((us[m] * us[n]).sum(1).mean()) for m in range(M) for n in range(m + 1, M)]
    out["true_pair_cosine/mean"] = float(np.mean(cos))
    return out


_RULES = ("gram_volume", "symile_mip", "cosine_sum")


def _tuple_scorer(zs: Sequence[torch.Tensor], m: int, rule: str):
    """``score(rows, cols)``: the block ``S[rows, cols]`` of :func:`tuple_scores` (``rows``, ``cols``
    slices), so that a caller can walk S in blocks of rows or of columns without holding it."""
    if rule not in _RULES:
        raise ValueError(f"retrieval rule must be one of {', '.join(_RULES)}; got {rule!r}")
    us = [_unit(z) for z in zs]
    others = [us[n] for n in range(len(us)) if n != m]
    if not others:
        raise ValueError("tuple retrieval needs at least 2 modalities")
    cand = us[m]
    if rule == "gram_volume":
        from objectives.kernels import tuple_volumes

        stacked = torch.stack(others)
        return lambda rows, cols: -tuple_volumes(cand[rows], stacked[:, cols])
    if rule == "symile_mip":
        tup = others[0]
        for o in others[1:]:
            tup = tup * o
    else:
        tup = torch.stack(others).sum(0)
    return lambda rows, cols: cand[rows] @ tup[cols].T


def tuple_scores(zs: Sequence[torch.Tensor], m: int, rule: str) -> torch.Tensor:
    """``S[i, j]``: the score of candidate row i of modality m against the tuple formed by row j of
    every other modality, under ``rule`` (rows are L2-normalised first, as the objectives do):

    - ``"gram_volume"``: ``-sqrt(det Gram(z^m_i, z^n_j for n != m))`` (GRAM's volume; the determinant
      is symmetric in its vectors, so the same for every choice of anchor), through the base volume x
      height factorisation in float64 (``objectives.kernels.tuple_volumes``);
    - ``"symile_mip"``: ``sum_k z^m_ik prod_{n != m} z^n_jk`` (Symile's multilinear inner product);
    - ``"cosine_sum"``: ``sum_{n != m} cos(z^m_i, z^n_j)``.

    The whole (n x n) matrix; :func:`own_retrieval_metrics` walks it in blocks instead.
    """
    every = slice(None)
    return _tuple_scorer(zs, m, rule)(every, every)


def own_retrieval_metrics(zs: Sequence[torch.Tensor], rule: str, ks: Sequence[int] = (1, 5, 10),
                          anchor: int = 0, block: int = RETRIEVAL_BLOCK) -> dict[str, float]:
    """Tuple retrieval scored by ``rule`` (:func:`tuple_scores`); keys without prefix (``retrieval_own/``):

    - ``{stat}/anchor->tuple``: query anchor row i, gallery the tuples of the other modalities;
    - ``{stat}/tuple->anchor``: query a tuple, gallery the anchor rows;
    - ``{stat}/rest->{m}`` (m != anchor): query the tuple of every modality but m, gallery modality m;
    - ``{stat}/rest->one``: mean of ``tuple->anchor`` and every ``rest->{m}``;
    - ``{stat}/mean`` (and ``R1/mean_se``): mean over all M + 1 tasks.

    Scores are formed ``block`` queries at a time (peak memory O(block x n)): the same ranks as
    the whole matrices.
    """
    _check_block(block)
    M = len(zs)
    n = zs[anchor].shape[0]
    every = slice(None)
    tasks: dict[str, torch.Tensor] = {}
    score_anchor = _tuple_scorer(zs, anchor, rule)
    tasks["anchor->tuple"] = blocked_ranks(lambda s0, s1: score_anchor(slice(s0, s1), every), n, block)
    tasks["tuple->anchor"] = blocked_ranks(lambda s0, s1: score_anchor(every, slice(s0, s1)).T, n, block)
    for m in range(M):
        if m != anchor:
            score_m = _tuple_scorer(zs, m, rule)
            tasks[f"rest->{m}"] = blocked_ranks(lambda s0, s1, f=score_m: f(every, slice(s0, s1)).T, n, block)
    out = _summarise(tasks, ks)
    rest = [t for t in tasks if t != "anchor->tuple"]
    for key in [k.split("/")[0] for k in out if k.endswith("/mean") and not k.endswith("_se")]:
        out[f"{key}/rest->one"] = float(np.mean([out[f"{key}/{t}"] for t in rest]))
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
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (int, float, np.integer, np.floating)):
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


def validation_metrics(zs: list[torch.Tensor], loss_fn, anchor: int = 0, run: str = "",
                       gap_keys: bool = True, conflict_keys: bool = True) -> dict[str, float]:
    """The per-evaluation instruments on validation embeddings (unit rows).

    Always: ``val/R1_mean``, ``val/holder`` and ``val/proxy/*`` (the divergence and its proxy bound,
    followed along training). ``gap_keys``: a few keys computed by the individual
    ``harness.instruments.gap`` functions (``modality_gap`` also fits a separability classifier, too
    slow per evaluation). ``conflict_keys``: means of ``infonce_conflicts`` and of the trained
    objective's ``gradient_conflicts`` (M objective passes with gradients: the costly part, about half
    of the time at 256 rows, M = 6, d = 32, and most of it for volume objectives such as GRAM).
    Proxy: ``proxy_bound`` with the resubstitution estimator (its bound terms do not depend on the
    estimator).
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
        } if gap_keys else {}
        for k, fn in gap_fns.items():
            v = _safe(run, f"gap.{k}", fn)
            if v is not None:
                out[f"val/gap/{k}"] = float(v)
        if conflict_keys:
            c = _safe(run, "conflicts.infonce_conflicts", conflicts.infonce_conflicts, zs, CONFLICT_TEMPERATURE,
                      anchor)
            if c is not None:
                out.update(conflict_summaries("val/conflict", c, ("mean",)))
    if conflict_keys:
        gc = _safe(run, "conflicts.gradient_conflicts", conflicts.gradient_conflicts, loss_fn, zs, anchor=anchor)
        if gc is not None:
            out.update(conflict_summaries("val/grad", gc, ("mean",)))
    return out
