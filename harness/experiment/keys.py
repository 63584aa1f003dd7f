"""Metric keys: the one definition of every metric name the harness writes and reads.

``harness evaluate`` writes these keys into each run's metrics JSON, ``harness aggregate`` turns them
into ``results/summary.csv`` columns, and the tables, figures and claims read the columns through
:data:`METRICS` and :func:`column`. A column that is absent is an error naming it
(:class:`MissingColumnError`), never a guess.

Retrieval (``harness.experiment.metrics``; ranks: 1 + number of gallery items scoring *strictly*
higher than the true match):

- ``retrieval/{R1,R5,R10,MedR}/...``: pairwise cosine retrieval, every ordered modality pair
  ``{m}->{n}``, their ``mean``, ``anchor->others`` and ``others->anchor``;
- ``retrieval_own/{R1,R5,R10,MedR}/...``: each objective scored by its own rule
  (``meta/retrieval_rule``, ``objectives.registry``) on tuple tasks: ``anchor->tuple`` (query an
  anchor row, gallery the tuples of the other M - 1 modalities), ``tuple->anchor`` (the reverse),
  ``rest->{m}`` for m >= 1 (query the tuple of every modality but m, gallery modality m),
  ``rest->one`` (mean of ``tuple->anchor`` and every ``rest->{m}``) and ``mean`` (mean of
  ``anchor->tuple`` and ``rest->one``'s M tasks, i.e. of all M + 1 tasks);
- ``.../R1/mean_se``: the standard error of ``R1/mean`` over test queries (per-query hits averaged
  over the tasks, ``scipy.stats.sem``): the test-set sampling error of the primary retrieval metric.

Divergence (``harness.instruments.divergence``):

- ``divergence/holder``: resubstitution global Hölder divergence at the median bandwidth (the
  bandwidth differs between runs);
- ``divergence/holder_fixed/{estimate,null_mean,null_sd,null_q95,null_n,null_size,excess,h}``: the same
  estimator at the fixed KDE bandwidth ``FIXED_BANDWIDTH``, its same-distribution null (M disjoint
  samples of one modality, same bandwidth and sample size), and ``excess = estimate - null_mean``.
"""

from __future__ import annotations

from collections.abc import Iterable

# ----------------------------------------------------------------------------- metadata
META_OBJECTIVE = "meta/objective"
META_SEED = "meta/seed"
META_SPLIT_SEED = "meta/split_seed"
META_RETRIEVAL_RULE = "meta/retrieval_rule"

#: summary.csv columns that identify a run (``split_seed``: 0 when a run does not record one)
ID_COLUMNS = ["dataset", "variant", "label", "objective", "M", "seed", "split_seed"]
#: the key that pairs a method's run with its baseline's run
PAIR_KEYS = ["dataset", "M", "seed", "split_seed"]
#: one statistical unit: a (training seed, data-split seed) at one dataset
UNIT_KEYS = ["dataset", "seed", "split_seed"]
#: summary.csv column copied from ``meta/retrieval_rule``
RETRIEVAL_RULE = "retrieval_rule"
META_N_EVAL = "meta/n_eval"
#: summary.csv column copied from ``meta/n_eval``: the evaluated rows, i.e. the retrieval gallery size
N_EVAL = "n_eval"

# ----------------------------------------------------------------------------- retrieval
RETRIEVAL = "retrieval"
RETRIEVAL_OWN = "retrieval_own"
RETRIEVAL_STATS = ("R1", "R5", "R10", "MedR")

#: every objective declares its own retrieval rule in the registry (objectives.registry); the default
DEFAULT_RETRIEVAL_RULE = "cosine_sum"
RULE_DESCRIPTIONS = {
    "gram_volume": "GRAM: -volume of the Gram matrix of the candidate with the tuple",
    "symile_mip": "Symile: multilinear inner product of the candidate with the tuple",
    "cosine_sum": "sum of cosines between the candidate and the tuple's members",
    "pairwise_cosine": "cosine between two modalities (every ordered pair)",
}


def retrieval_rule(objective: str) -> str:
    """The own-rule retrieval score of ``objective`` (a registered name or ``package.module:Class``),
    as its registry entry declares it."""
    from objectives import registry

    return registry.get(str(objective)).retrieval_rule


R1_MEAN = "retrieval/R1/mean"
R1_MEAN_SE = "retrieval/R1/mean_se"
R5_MEAN = "retrieval/R5/mean"
R10_MEAN = "retrieval/R10/mean"
MEDR_MEAN = "retrieval/MedR/mean"
R1_A2O = "retrieval/R1/anchor->others"
R1_O2A = "retrieval/R1/others->anchor"
OWN_R1_MEAN = "retrieval_own/R1/mean"
OWN_R1_MEAN_SE = "retrieval_own/R1/mean_se"
OWN_R1_A2T = "retrieval_own/R1/anchor->tuple"
OWN_R1_T2A = "retrieval_own/R1/tuple->anchor"
OWN_R1_REST = "retrieval_own/R1/rest->one"

# ----------------------------------------------------------------------------- other summary metrics
PROBE = "probe/acc/mean"
ZETA = "conflict/zeta/mean"
CHI = "conflict/chi/mean"
GRAD_COS = "conflict/grad/cos_align_unif_all/mean"
HOLDER_MEDIAN = "divergence/holder"
HOLDER_FIXED = "divergence/holder_fixed/estimate"
HOLDER_FIXED_NULL_MEAN = "divergence/holder_fixed/null_mean"
HOLDER_FIXED_NULL_SD = "divergence/holder_fixed/null_sd"
HOLDER_FIXED_NULL_Q95 = "divergence/holder_fixed/null_q95"
HOLDER_FIXED_NULL_N = "divergence/holder_fixed/null_n"
HOLDER_FIXED_NULL_SIZE = "divergence/holder_fixed/null_size"
HOLDER_FIXED_EXCESS = "divergence/holder_fixed/excess"
HOLDER_FIXED_H = "divergence/holder_fixed/h"
PROXY_BOUND = "divergence/proxy/bound"
CS_PAIRWISE = "divergence/cs_pairwise_mean"
GAP = "gap/centroid_distance_pairs"
GAP_REL = "gap/relative_gap_pairs"
ALIGNMENT = "gap/alignment_pairs"
UNIFORMITY = "gap/uniformity_mean"
EFFECTIVE_RANK = "gap/effective_rank_mean"
WITHIN_COSINE = "gap/within_cosine_mean"

# ----------------------------------------------------------------------------- history (training)
EPOCH = "epoch"
STEP = "step"
VAL_HOLDER = "val/holder"
VAL_PROXY = "val/proxy/bound"

# ----------------------------------------------------------------------------- generation (per-run condition means)
GEN_CROSS_FD = "cross-modal/fd"
GEN_CROSS_ACC = "cross-modal/acc"

#: short name -> (column, label, measurement standard-error column or None)
METRICS: dict[str, dict[str, str | None]] = {
    "R1": {"col": R1_MEAN, "label": "R@1 (%), pairwise cosine, mean over ordered pairs", "se": R1_MEAN_SE},
    "R5": {"col": R5_MEAN, "label": "R@5 (%), pairwise cosine", "se": None},
    "R10": {"col": R10_MEAN, "label": "R@10 (%), pairwise cosine", "se": None},
    "MedR": {"col": MEDR_MEAN, "label": "median rank, pairwise cosine", "se": None},
    "R1_a2o": {"col": R1_A2O, "label": "R@1 anchor->others (%), pairwise cosine", "se": None},
    "R1_o2a": {"col": R1_O2A, "label": "R@1 others->anchor (%), pairwise cosine", "se": None},
    "R1_own": {"col": OWN_R1_MEAN, "label": "R@1 (%), own rule, mean over tuple tasks", "se": OWN_R1_MEAN_SE},
    "R1_own_a2t": {"col": OWN_R1_A2T, "label": "R@1 anchor->tuple (%), own rule", "se": None},
    "R1_own_t2a": {"col": OWN_R1_T2A, "label": "R@1 tuple->anchor (%), own rule", "se": None},
    "R1_own_rest": {"col": OWN_R1_REST, "label": "R@1 rest->one (%), own rule", "se": None},
    "probe": {"col": PROBE, "label": "linear-probe accuracy", "se": None},
    "zeta": {"col": ZETA, "label": "zeta = cos(V_a, Phi_a)", "se": None},
    "chi": {"col": CHI, "label": "chi = 1 - |mean pull|", "se": None},
    "grad_cos": {"col": GRAD_COS, "label": "cos(grad alignment, grad uniformity) of the trained objective",
                 "se": None},
    "holder": {"col": HOLDER_MEDIAN, "label": "global Hölder divergence, median bandwidth (nats, plug-in)",
               "se": None},
    "holder_fixed": {"col": HOLDER_FIXED, "label": "global Hölder divergence, fixed bandwidth (nats, plug-in)",
                     "se": HOLDER_FIXED_NULL_SD},
    "holder_null": {"col": HOLDER_FIXED_NULL_MEAN,
                    "label": "same-distribution null of the fixed-bandwidth estimate (nats)", "se": None},
    "holder_excess": {"col": HOLDER_FIXED_EXCESS,
                      "label": "Hölder divergence excess over its same-distribution null (nats, fixed bandwidth)",
                      "se": HOLDER_FIXED_NULL_SD},
    "proxy": {"col": PROXY_BOUND, "label": "proxy bound (nats)", "se": None},
    "cs": {"col": CS_PAIRWISE, "label": "mean pairwise CS divergence (median bandwidth)", "se": None},
    "gap": {"col": GAP, "label": "modality gap (centroid distance)", "se": None},
    "gap_rel": {"col": GAP_REL, "label": "relative gap", "se": None},
    "alignment": {"col": ALIGNMENT, "label": "alignment |z_m - z_n|^2 (Wang & Isola)", "se": None},
    "uniformity": {"col": UNIFORMITY, "label": "uniformity log E exp(-2|z_i - z_j|^2)", "se": None},
    "effective_rank": {"col": EFFECTIVE_RANK, "label": "effective rank of one modality's embeddings, mean over modalities",
                       "se": None},
    "within_cosine": {"col": WITHIN_COSINE, "label": "mean cosine between distinct embeddings of one modality",
                      "se": None},
}

#: short name -> history.csv column
HISTORY_METRICS = {"holder": VAL_HOLDER, "proxy": VAL_PROXY}


class MissingColumnError(KeyError):
    """A metric column the report needs is absent from its input; the message names it."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def _spec(name: str) -> dict:
    if name not in METRICS:
        raise KeyError(f"unknown metric name {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def metric_key(name: str) -> str:
    """The column of short metric ``name``."""
    return str(_spec(name)["col"])


def metric_label(name: str) -> str:
    return str(METRICS[name]["label"]) if name in METRICS else name


def metric_se_key(name: str) -> str | None:
    """The column holding the per-run measurement standard error of ``name`` (or None)."""
    se = _spec(name)["se"]
    return None if se is None else str(se)


def require(columns: Iterable[str], key: str, where: str = "summary.csv", name: str | None = None) -> str:
    """``key`` if it is one of ``columns``, else :class:`MissingColumnError` naming it."""
    columns = set(columns)
    if key not in columns:
        what = f" (metric {name!r})" if name else ""
        raise MissingColumnError(f"{where} has no column {key!r}{what}; it is written by `harness evaluate` "
                                 "(harness/experiment/keys.py lists every key)")
    return key


def column(columns: Iterable[str], name: str, where: str = "summary.csv") -> str:
    """The column of short metric ``name``, which must be present in ``columns``."""
    return require(columns, metric_key(name), where, name)


def history_column(columns: Iterable[str], name: str) -> str:
    """The history.csv column of ``name`` (``holder``, ``proxy``), which must be present."""
    if name not in HISTORY_METRICS:
        raise KeyError(f"unknown history metric {name!r}; known: {', '.join(HISTORY_METRICS)}")
    return require(columns, HISTORY_METRICS[name], "history.csv", name)
