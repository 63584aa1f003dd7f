"""Temperature-free InfoNCE: the cosine mapped through atanh instead of divided by a temperature.

For a modality pair (m, n) the logits are ``l_ij = atanh(clip(z_i^m . z_j^n, -1 + eps, 1 - eps))``:
near cos = 1 the map stretches like a small temperature, near 0 it is the identity, so there is no
temperature to tune. The loss is CLIP's symmetric cross-entropy on these logits, averaged over the
modality pairs (``pairs="all"``: every m < n; ``"anchor"``: the anchor against each other modality),
split into an alignment part (the positives) and a uniformity part (the log-sum-exp).

Built with the benchmark's own base class, so inputs are checked and rows L2-normalised as for every
built-in objective; ``declare`` gives its label, colour and tuning search space (the pairing).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from objectives import Objective, declare
from objectives.registry import gemm, pair_count


@declare(label="Temperature-free InfoNCE (atanh)", search={"pairs": ["all", "anchor"]},
         flops=lambda M, B, d, p: 3 * gemm(B, d) * pair_count(M, p["pairs"]))
class TemperatureFreeInfoNCE(Objective):
    name = "temperature_free"
    roles: ClassVar[dict] = {"alignment": "alignment", "uniformity": "uniformity"}
    min_batch: ClassVar[int] = 2

    def __init__(self, pairs: str = "all", anchor: int = 0, eps: float = 1e-4, normalize: bool = True) -> None:
        super().__init__(normalize=normalize)
        if pairs not in ("all", "anchor"):
            raise ValueError(f"pairs must be 'all' or 'anchor', got {pairs!r}")
        if isinstance(anchor, bool) or not isinstance(anchor, int) or anchor < 0:
            raise ValueError(f"anchor must be an integer >= 0, got {anchor!r}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
        self.pairs, self.anchor, self.eps = pairs, anchor, float(eps)

    def compute(self, z: Tensor, rows: slice) -> dict[str, Tensor]:
        n_mod, total = z.shape[0], z.shape[1]
        if self.pairs == "all":
            pairs = [(m, n) for m in range(n_mod) for n in range(m + 1, n_mod)]
        else:
            pairs = [(self.anchor, n) for n in range(n_mod) if n != self.anchor]
        local = self.local(z, rows)
        idx = torch.arange(rows.stop - rows.start, device=z.device)
        positives, lse = z.new_zeros(()), z.new_zeros(())
        for m, n in pairs:
            for q, k in ((m, n), (n, m)):  # both directions: rows of q against every row of k
                logits = torch.atanh((local[q] @ z[k].T).clamp(-1 + self.eps, 1 - self.eps))
                positives = positives + logits[idx, idx + rows.start].sum()
                lse = lse + torch.logsumexp(logits, dim=1).sum()
        count = 2 * total * len(pairs)
        return {"alignment": self.mean_over_rows(positives, count, -1.0),
                "uniformity": self.mean_over_rows(lse, count)}
