"""The InfoNCE core shared by infonce, infonce_anchor, infonce_reweighted, dcl and cs_aligner.

For a pair (m, n) with logits s_ij = z_i^m . z_j^n / tau the symmetric CLIP loss is
    l(m, n) = 1/2 [ mean_i (-s_ii + lse_j s_ij) + mean_j (-s_jj + lse_i s_ij) ],
and it splits exactly into an alignment part -mean_i s_ii and a uniformity (log-sum-exp) part.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from objectives.kernels import pair_lse


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
    """
    from objectives._base import Objective  # local import: _base imports this module's users

    total = z.shape[1]
    local = rows.stop - rows.start
    distributed = local != total
    n_pairs = len(pairs)
    # a fixed scale goes into the kernel as a float (no autograd node); a learnable one stays a
    # tensor multiplied outside so that its gradient flows
    fixed = not isinstance(scale, Tensor)
    lse = 0.0
    if not distributed:
        # no row slicing and one unbind: each slice or select would add a full-size backward copy
        zs = z.unbind(0)
        pos = sum((zs[m] * zs[n]).sum() for m, n in pairs)
        groups: dict[int, list[int]] = defaultdict(list)
        for m, n in pairs:
            groups[m].append(n)
        for m, partners in groups.items():
            first, last = partners[0], partners[-1]
            if partners == list(range(first, last + 1)):
                k = z[first : last + 1]  # a view, no copy
            else:
                k = torch.stack([zs[n] for n in partners])
            # chunk_size bounds the live block to chunk_size x B entries, whatever the group size
            chunk = None if chunk_size is None else max(1, chunk_size // len(partners))
            if fixed:
                lse = lse + pair_lse(zs[m], k, 0.5, 0.5, exclude_positive, 0, chunk, scale=scale)
            else:
                lse = lse + pair_lse(zs[m] * scale, k, 0.5, 0.5, exclude_positive, 0, chunk)
    else:
        zs = z.unbind(0)
        pos = sum((zs[m][rows] * zs[n][rows]).sum() for m, n in pairs)
        for m, n in pairs:
            for q, k in ((m, n), (n, m)):
                a = zs[q][rows] if fixed else zs[q][rows] * scale
                lse = lse + pair_lse(a, zs[k], 0.5, 0.0, exclude_positive, rows.start, chunk_size,
                                     scale=scale if fixed else 1.0)
    alignment = -Objective.mean_over_rows(pos * scale, total) / n_pairs
    uniformity = Objective.mean_over_rows(lse, total) / n_pairs
    return alignment, uniformity
