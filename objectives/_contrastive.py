"""The InfoNCE core shared by infonce, infonce_anchor, infonce_reweighted, dcl and cs_aligner.

For a pair (m, n) with logits s_ij = z_i^m . z_j^n / tau the symmetric CLIP loss is
    l(m, n) = 1/2 [ mean_i (-s_ii + lse_j s_ij) + mean_j (-s_jj + lse_i s_ij) ],
and it splits exactly into an alignment part -mean_i s_ii and a uniformity (log-sum-exp) part.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from objectives.kernels import group_lse, modality_quadratic, pair_lse, plain


def pair_list(n_modalities: int, pairs: str, anchor: int) -> list[tuple[int, int]]:
    if pairs == "all":
        return [(m, n) for m in range(n_modalities) for n in range(m + 1, n_modalities)]
    return [(anchor, n) for n in range(n_modalities) if n != anchor]


def contrastive_parts(
    z: Tensor,
    rows: slice,
    pairs: list[tuple[int, int]],
    scale: Tensor | float,
    exclude_positive: bool = False,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """(alignment, uniformity) averaged over ``pairs`` and over the global batch.

    Single process: pairs sharing their first modality are fused into one GEMM per group
    (``z[m] @ [z[n1]; z[n2]; ...]^T``) and both softmax directions come from that one block.
    Distributed: this rank's rows against all gathered columns, once per direction.
    While ``torch.compile`` traces, every pair is one plain log-sum-exp block
    (:mod:`objectives.kernels.plain`).
    """
    from objectives._base import UNIT_ROW_NORM_BOUND, Objective  # local: _base imports this module's users

    total = z.shape[1]
    local = rows.stop - rows.start
    distributed = local != total
    n_pairs = len(pairs)
    # a fixed scale goes into the kernels as a float (no autograd node); a learnable one is a tensor
    fixed = not isinstance(scale, Tensor)
    # sum over pairs of <z_m, z_n> as <z, W z> with the (M, M) pair adjacency W: O(M^2 B d)
    weights = [[0.0] * z.shape[0] for _ in range(z.shape[0])]
    for m, n in pairs:
        weights[m][n] += 1.0
    pos = modality_quadratic(Objective.local(z, rows), weights)
    if torch.compiler.is_compiling():
        zs = z.unbind(0)
        lse = 0.0
        for m, n in pairs:
            if not distributed:
                lse = lse + plain.pair_lse(zs[m] * scale, zs[n], 0.5, 0.5, exclude_positive)
                continue
            for q, k in ((m, n), (n, m)):
                lse = lse + plain.pair_lse(zs[q][rows] * scale, zs[k], 0.5, 0.0, exclude_positive, rows.start)
    elif not distributed:
        # pairs sharing their first modality form one group: one wide GEMM z[m] @ z[partners]^T;
        # rows are unit vectors up to Objective.prepare's tolerance
        groups: dict[int, list[int]] = defaultdict(list)
        for m, n in pairs:
            groups[m].append(n)
        lse = group_lse(z, list(groups.items()), 0.5, 0.5, exclude_positive, chunk_size, scale, row_norm=UNIT_ROW_NORM_BOUND)
    else:
        lse = 0.0
        zs = z.unbind(0)
        for m, n in pairs:
            for q, k in ((m, n), (n, m)):
                a = zs[q][rows] if fixed else zs[q][rows] * scale
                lse = lse + pair_lse(a, zs[k], 0.5, 0.0, exclude_positive, rows.start, chunk_size,
                                     scale=scale if fixed else 1.0)
    alignment = Objective.mean_over_rows(pos, total * n_pairs, -scale)
    uniformity = Objective.mean_over_rows(lse, total * n_pairs)
    return alignment, uniformity
