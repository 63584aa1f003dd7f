"""Evaluate a trained run on a split: ``python -m harness evaluate --run RUN_DIR --out FILE.json``.

Output: one flat JSON object (keys sorted). Metric keys (m, n are modality indices, 0 = anchor):

- ``retrieval/{R1,R5,R10}/{m}->{n}``: recall@k in percent, queries from modality m, gallery of
  modality n (every ordered pair m != n); ``retrieval/MedR/{m}->{n}``: median rank (1 = best).
  Rank of the true match = 1 + number of gallery items with a *strictly* higher cosine (ties
  resolved in favour of the true match).
- ``retrieval/{R1,R5,R10,MedR}/mean``: mean over all ordered pairs;
  ``.../anchor->others`` (mean over n != 0 of 0->n) and ``.../others->anchor`` (mean of n->0).
- ``retrieval/true_pair_cosine/mean``: mean cosine of paired rows over all pairs m < n;
  ``retrieval/R1/mean_se``: standard error of ``R1/mean`` over test queries.
- ``retrieval_own/{R1,R5,R10,MedR}/{anchor->tuple,tuple->anchor,rest->{m},rest->one,mean}`` and
  ``retrieval_own/R1/mean_se``: tuple retrieval scored by the objective's own rule
  (``harness.experiment.metrics.own_retrieval_metrics``), recorded in ``meta/retrieval_rule``: GRAM by
  -volume (``gram_volume``), Symile by its multilinear inner product (``symile_mip``), every other
  objective by a sum of cosines to the tuple's members (``cosine_sum``).
- ``probe/acc/{m}``: accuracy of a logistic-regression probe trained on modality m's training
  embeddings, tested on the split; ``probe/acc/mean`` (only when the dataset has labels).
- ``gap/<key>``: every scalar of ``harness.instruments.gap.modality_gap`` (``centroid_distance_pairs``,
  ``centroid_distance_anchor``, ``mean_paired_distance_*``, ``relative_gap_*``,
  ``linear_separability``, ``separability_chance``, ``true_pair_cosine_*``, ``alignment_*``,
  ``uniformity_m{m}``, ``uniformity_mean``, ``effective_rank_m{m}``, ``effective_rank_mean``).
- ``divergence/holder``: global Hölder divergence (gamma = M, resubstitution, median bandwidth: the
  bandwidth differs between runs);
- ``divergence/holder_fixed/{estimate,h,null_mean,null_sd,null_q95,null_n,null_size,excess}``: the same
  estimator at the fixed KDE bandwidth ``divergence.FIXED_BANDWIDTH``, its same-distribution null
  (``divergence.holder_null``: M disjoint samples of one modality's train + evaluated rows, same
  bandwidth, same sample size where the rows suffice, 8 draws cycling over the modalities, seeded by
  the run's seed) and ``excess = estimate - null_mean`` (the estimate beyond the estimator's own bias;
  at or below 0 it is no detectable divergence);
  ``divergence/cs_pairwise_mean``: mean Cauchy-Schwarz divergence over pairs m < n;
  ``divergence/proxy/{divergence,constant,alignment,uniformity,bound,slack,L_align_anchor,h,M,B}``
  from ``harness.instruments.divergence.proxy_bound`` (estimator "auto"), plus ``divergence/proxy/guaranteed``
  (bool) and ``divergence/proxy/estimator`` (str).
- ``conflict/{zeta,projection_ratio,chi,chi_net}/{mean,std,median,q05,q25,q75,q95,n}``:
  ``harness.instruments.conflicts.infonce_conflicts`` for anchor 0 at ``--temperature`` (default 0.07, the same
  for every objective so that values are comparable).
- ``conflict/grad/{cos_align_unif_anchor,angle_align_unif_deg_anchor,cos_align_unif_all,pull_cos,
  chi_grad,pull_additivity_residual}/<stat>``: ``harness.instruments.conflicts.gradient_conflicts`` of the trained
  objective on the split's embeddings (alignment-vs-uniformity cosine, intra-alignment pull cosines).
- Metadata: ``meta/dataset``, ``meta/objective``, ``meta/n_modalities``, ``meta/seed``,
  ``meta/split_seed`` (the seed that drew the data split: dataset.json ``split_seed``, else its
  ``seed``), ``meta/retrieval_rule``, ``meta/split``, ``meta/n_eval``, ``meta/n_eval_below_min`` (test split under ``MIN_TEST_ROWS`` = 200 rows: also a stderr warning), ``meta/modality_names`` (comma-joined), ``meta/params`` (JSON
  string) and ``meta/param/<name>`` for each objective parameter, ``meta/data_sha256``.

Memory: retrieval (both rules) forms its scores ``--block-rows`` queries at a time and the modality
gap's uniformity ``--block-rows`` rows at a time, over every row of the split (peak O(block x n)).
The quadratic instruments -- the KDE divergences and the conflict statistics -- use at most
``--max-rows`` rows: every row when the split has no more, else a seeded sample
(``harness.instruments._inputs.sample_rows`` with the run's seed, rows in their split order),
recorded in ``meta/instrument_rows`` (rows used) and ``meta/instrument_sample`` (``all`` or
``seeded``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from harness.cli import add_threads_argument, apply_threads, positive_float, positive_int
from harness.experiment import keys
from harness.experiment.data import DataError
from harness.experiment.distributed import local_objectives
from harness.experiment.metrics import (
    RETRIEVAL_BLOCK,
    conflict_summaries,
    flatten_metrics,
    linear_probe,
    own_retrieval_metrics,
    retrieval_metrics,
)
from harness.experiment.runs import TrainError, embed_split, load_run, run_meta
from harness.files import check_output_file, write_json_sealed
from harness.instruments import conflicts, divergence, gap
from harness.instruments._inputs import sample_rows

# ----------------------------------------------------------------------------- evaluation


def _prefixed(prefix: str, d: dict) -> dict:
    return {f"{prefix}/{k}": v for k, v in d.items()}


#: rows standardised and embedded at a time (a multiple of the model's own 4096-row blocks, so the
#: embeddings are the same bits as one call on every row)
EMBED_BLOCK = 4 * 4096
#: the smallest test split whose numbers are reported without a warning: below it one row moves a
#: retrieval percentage by more than 0.5 points (a stderr line and ``meta/n_eval_below_min``)
MIN_TEST_ROWS = 200


def _embed(model, ds, rows, M: int) -> list[torch.Tensor]:
    """``embed_split`` over blocks of EMBED_BLOCK rows: the standardised copy of a split (float32 and
    its float64 temporaries) is never alive whole, only the (n, d) embeddings are."""
    parts = [embed_split(model, ds, rows[s : s + EMBED_BLOCK], M) for s in range(0, max(len(rows), 1), EMBED_BLOCK)]
    return [parts[0][m] if len(parts) == 1 else torch.cat([p[m] for p in parts]) for m in range(M)]


def evaluate_run(run_dir, split: str = "test", temperature: float = 0.07, max_rows: int = 2048,
                 probes: bool = True, block_rows: int = RETRIEVAL_BLOCK) -> dict:

    cfg, model, loss_fn, ds = load_run(run_dir)
    M = cfg["n_modalities"]
    rows = ds.split(split)
    below = split == "test" and len(rows) < MIN_TEST_ROWS
    if below:
        print(f"warning: {run_dir}: the test split has {len(rows)} rows (< {MIN_TEST_ROWS}): one row moves R@1 "
              f"by {100 / max(len(rows), 1):.1f} points; read its numbers with that resolution", file=sys.stderr)
    zs = _embed(model, ds, rows, M)
    out: dict = {}
    rule = keys.retrieval_rule(cfg["objective"])
    out.update(_prefixed(keys.RETRIEVAL, retrieval_metrics(zs, block=block_rows)))
    with torch.no_grad():
        out.update(_prefixed(keys.RETRIEVAL_OWN, own_retrieval_metrics(zs, rule, block=block_rows)))
    tr = ds.split("train")
    zs_tr = _embed(model, ds, tr, M)
    if probes and ds.labels is not None:
        accs = []
        for m in range(M):
            acc = linear_probe(zs_tr[m].numpy(), ds.labels[tr], zs[m].numpy(), ds.labels[rows], seed=cfg["seed"])
            out[f"probe/acc/{m}"] = acc
            accs.append(acc)
        out["probe/acc/mean"] = float(np.mean(accs))
    idx = sample_rows(len(rows), max_rows, int(cfg["seed"]))
    sub = [z[idx] for z in zs]
    with torch.no_grad():
        out.update(flatten_metrics("gap", gap.modality_gap(zs, block=block_rows)))
        out[keys.HOLDER_MEDIAN] = float(divergence.holder(sub, bandwidth="median"))
        h = divergence.FIXED_BANDWIDTH
        est = float(divergence.holder(sub, bandwidth=h))
        pools = [torch.cat([zs_tr[m], zs[m]]) for m in range(M)]
        null = divergence.holder_null(pools, M, sub[0].shape[0], h, seed=int(cfg["seed"]))
        out.update({
            keys.HOLDER_FIXED: est, keys.HOLDER_FIXED_H: h, keys.HOLDER_FIXED_NULL_MEAN: null["mean"],
            keys.HOLDER_FIXED_NULL_SD: null["sd"], keys.HOLDER_FIXED_NULL_Q95: null["q95"],
            keys.HOLDER_FIXED_NULL_N: null["n"], keys.HOLDER_FIXED_NULL_SIZE: null["size"],
            keys.HOLDER_FIXED_EXCESS: est - null["mean"],
        })
        cs = [float(divergence.cauchy_schwarz(sub[m], sub[n], bandwidth="median"))
              for m in range(M) for n in range(m + 1, M)]
        out["divergence/cs_pairwise_mean"] = float(np.mean(cs))
        proxy = divergence.proxy_bound(sub, bandwidth="median", anchor=0)
        out.update({f"divergence/proxy/{k}": float(v) for k, v in proxy.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
        out["divergence/proxy/guaranteed"] = bool(proxy.get("guaranteed", False))
        out["divergence/proxy/estimator"] = str(proxy.get("estimator"))
        c = conflicts.infonce_conflicts(sub, temperature, 0)
        out.update(conflict_summaries("conflict", c))
    # objectives with random negatives (symile "n") draw from torch's global generator: seed it so
    # an evaluation does not depend on what ran before it in the same process
    torch.manual_seed(int(cfg["seed"]))
    with local_objectives():
        gc = conflicts.gradient_conflicts(loss_fn, sub, anchor=0)
    out.update(conflict_summaries("conflict/grad", gc))
    out = {k: v for k, v in out.items()}
    out.update({
        "meta/dataset": ds.meta.get("dataset"),
        "meta/objective": cfg["objective"],
        "meta/n_modalities": M,
        "meta/seed": cfg["seed"],
        keys.META_SPLIT_SEED: int(ds.meta.get("split_seed", ds.meta.get("seed", 0))),
        keys.META_RETRIEVAL_RULE: rule,
        "meta/split": split,
        "meta/n_eval": len(rows),
        "meta/n_eval_below_min": below,
        "meta/instrument_rows": int(idx.numel()),
        "meta/instrument_sample": "all" if idx.numel() == len(rows) else "seeded",
        "meta/modality_names": ",".join(ds.names[:M]),
        "meta/params": json.dumps(cfg["params"], sort_keys=True),
        "meta/conflict_temperature": temperature,
        "meta/epochs": cfg.get("epochs"),
        "meta/steps": cfg.get("steps"),
    })
    out.update(run_meta(cfg))  # weight, data and split hashes, provenance
    for k, v in cfg["params"].items():
        out[f"meta/param/{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
    return out


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, help="run folder from `python -m harness train`")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--temperature", type=positive_float, default=0.07, help="temperature of the InfoNCE conflict statistics")
    p.add_argument("--max-rows", type=positive_int, default=2048,
                   help="rows used for divergence/conflict statistics (a seeded sample when the split has more)")
    p.add_argument("--block-rows", type=positive_int, default=RETRIEVAL_BLOCK,
                   help="query rows per block of the retrieval scores and the uniformity (peak memory ~ block x n)")
    add_threads_argument(p)


def main(args) -> int:
    apply_threads(args)
    check_output_file(args.out)
    try:
        metrics = evaluate_run(args.run, args.split, args.temperature, args.max_rows,
                               block_rows=getattr(args, "block_rows", RETRIEVAL_BLOCK))
    except (TrainError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_json_sealed(Path(args.out), metrics)  # its content hash: aggregation refuses an edited file
    print(f"wrote {args.out}: R@1 mean {metrics[keys.R1_MEAN]:.1f}, own-rule ({metrics[keys.META_RETRIEVAL_RULE]}) "
          f"{metrics[keys.OWN_R1_MEAN]:.1f}, {keys.HOLDER_FIXED_EXCESS} {metrics[keys.HOLDER_FIXED_EXCESS]:.4f} "
          "(nats over the same-distribution null)")
    return 0
