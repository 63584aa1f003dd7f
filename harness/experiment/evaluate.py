"""Evaluate a trained run on a split: ``python -m harness evaluate --run RUN_DIR --out FILE.json``.

Output: one flat JSON object (keys sorted). Metric keys (m, n are modality indices, 0 = anchor):

- ``retrieval/{R1,R5,R10}/{m}->{n}``: recall@k in percent, queries from modality m, gallery of
  modality n (every ordered pair m != n); ``retrieval/MedR/{m}->{n}``: median rank (1 = best).
  Rank of the true match = 1 + number of gallery items with a *strictly* higher cosine (ties
  resolved in favour of the true match).
- ``retrieval/{R1,R5,R10,MedR}/mean``: mean over all ordered pairs;
  ``.../anchor->others`` (mean over n != 0 of 0->n) and ``.../others->anchor`` (mean of n->0).
- ``retrieval/true_pair_cosine/mean``: mean cosine of paired rows over all pairs m < n.
- ``probe/acc/{m}``: accuracy of a logistic-regression probe trained on modality m's training
  embeddings, tested on the split; ``probe/acc/mean`` (only when the dataset has labels).
- ``gap/<key>``: every scalar of ``harness.instruments.gap.modality_gap`` (``centroid_distance_pairs``,
  ``centroid_distance_anchor``, ``mean_paired_distance_*``, ``relative_gap_*``,
  ``linear_separability``, ``separability_chance``, ``true_pair_cosine_*``, ``alignment_*``,
  ``uniformity_m{m}``, ``uniformity_mean``, ``effective_rank_m{m}``, ``effective_rank_mean``).
- ``divergence/holder``: global Hölder divergence (gamma = M, resubstitution, median bandwidth);
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
  ``meta/split``, ``meta/n_eval``, ``meta/modality_names`` (comma-joined), ``meta/params`` (JSON
  string) and ``meta/param/<name>`` for each objective parameter, ``meta/data_sha256``.

Divergence and conflict statistics use at most ``--max-rows`` rows of the split (first rows).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from harness.cli import add_threads_argument, apply_threads
from harness.experiment.data import DataError
from harness.experiment.distributed import local_objectives
from harness.experiment.metrics import conflict_summaries, flatten_metrics, linear_probe, retrieval_metrics
from harness.experiment.runs import TrainError, embed_split, load_run
from harness.files import write_json
from harness.instruments import conflicts, divergence, gap

# ----------------------------------------------------------------------------- evaluation


def _prefixed(prefix: str, d: dict) -> dict:
    return {f"{prefix}/{k}": v for k, v in d.items()}


def evaluate_run(run_dir, split: str = "test", temperature: float = 0.07, max_rows: int = 2048,
                 probes: bool = True) -> dict:

    cfg, model, loss_fn, ds = load_run(run_dir)
    M = cfg["n_modalities"]
    rows = ds.split(split)
    zs = embed_split(model, ds, rows, M)
    out: dict = {}
    out.update(_prefixed("retrieval", retrieval_metrics(zs)))
    if probes and ds.labels is not None:
        tr = ds.split("train")
        zs_tr = embed_split(model, ds, tr, M)
        accs = []
        for m in range(M):
            acc = linear_probe(zs_tr[m].numpy(), ds.labels[tr], zs[m].numpy(), ds.labels[rows], seed=cfg["seed"])
            out[f"probe/acc/{m}"] = acc
            accs.append(acc)
        out["probe/acc/mean"] = float(np.mean(accs))
    sub = [z[:max_rows] for z in zs]
    with torch.no_grad():
        out.update(flatten_metrics("gap", gap.modality_gap(sub)))
        out["divergence/holder"] = float(divergence.holder(sub, bandwidth="median"))
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
        "meta/split": split,
        "meta/n_eval": int(len(rows)),
        "meta/modality_names": ",".join(ds.names[:M]),
        "meta/params": json.dumps(cfg["params"], sort_keys=True),
        "meta/data_sha256": ds.meta.get("sha256"),
        "meta/conflict_temperature": temperature,
        "meta/epochs": cfg["epochs"],
    })
    for k, v in cfg["params"].items():
        out[f"meta/param/{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
    return out


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, help="run folder from `python -m harness train`")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--temperature", type=float, default=0.07, help="temperature of the InfoNCE conflict statistics")
    p.add_argument("--max-rows", type=int, default=2048, help="rows used for divergence/conflict statistics")
    add_threads_argument(p)


def main(args) -> int:
    apply_threads(args)
    try:
        metrics = evaluate_run(args.run, args.split, args.temperature, args.max_rows)
    except (TrainError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_json(Path(args.out), metrics)
    print(f"wrote {args.out}: R@1 mean {metrics['retrieval/R1/mean']:.1f}, "
          f"holder {metrics.get('divergence/holder', float('nan')):.4f}")
    return 0
