"""Symile: contrastive learning with the multilinear inner product (MIP) of M modalities.

``MIP(x, y, z, ...) = sum_k x_k y_k z_k ...``. Each modality m in turn is scored against
candidates built from the other modalities; ``loss = mean_m CE(logits_m / tau, positives)``.

* ``negatives="n"`` (O(B)): candidate j is ``prod_{n != m} z^n_{pi_n(j)}`` with one random
  permutation per other modality; the diagonal is replaced by the positive tuple's MIP. The
  permutations are drawn with ``torch.randperm`` from torch's global generator in the same order
  as the reference ``symile`` package, so the two agree exactly under ``torch.manual_seed``.
* ``negatives="n_squared"``: every combination of the other modalities' rows is a candidate
  (B^(M-1) candidates per row, so memory grows as B^(M-1): small B or M only).

Terms: ``alignment = -mean_{m,i} MIP(positive) / tau`` and ``uniformity`` (the log-sum-exp part).

The package's call ``Symile()(representations, logit_scale)`` works as it is (``logit_scale``: the
tensor ``exp(parameter)``, which receives its gradient), and the package's own learnable scale,
``exp(parameter)`` never clamped, is ``learnable_temperature=True, temperature_clamp="none"``.
With ``normalize=False`` rows of any norm are scored as given (the original's encoders end in
LayerNorm without L2 normalisation); the other objectives require unit rows there.

Reference: A. Saporta, A. Puli, M. Goldstein, R. Ranganath, "Contrasting with Symile: Simple
Model-Agnostic Representation Learning for Unlimited Modalities", NeurIPS 2024; PyPI ``symile``.

Example:
    >>> import torch, objectives
    >>> out = objectives.build("symile", temperature=0.1)([torch.randn(8, 4) for _ in range(3)])
    >>> sorted(out.terms)
    ['alignment', 'uniformity']
"""

from __future__ import annotations

import functools
import operator
from typing import ClassVar

import torch
from torch import Tensor

from objectives._base import Objective, Role, Temperature, check_choice, check_chunk
from objectives.registry import declare, gemm, loguniform


def _permutation(n: int, device: torch.device) -> Tensor:
    """``torch.randperm(n)`` from torch's global CPU generator (the symile package's draw), on
    ``device``; a CUDA copy goes through pinned memory, so it does not synchronise."""
    perm = torch.randperm(n)
    if device.type == "cuda" and not torch.compiler.is_compiling():
        return perm.pin_memory().to(device, non_blocking=True)
    return perm.to(device)


def _permuted_rows(x: Tensor, perm: Tensor) -> Tensor:
    """``x[perm]``; while torch.compile traces, the same rows through ``torch.gather`` (inductor's
    rewrite of a randperm followed by an index fails on an unsliced permutation)."""
    if torch.compiler.is_compiling():
        return torch.gather(x, 0, perm.unsqueeze(1).expand(-1, x.shape[1]))
    return x[perm]


# trilinear logits are smaller than cosines: a lower temperature range
@declare(label="Symile", colour="#B8A000", marker="p", retrieval_rule="symile_mip",
         search={"temperature": loguniform(0.005, 0.1)},
         flops=lambda M, B, d, p: 3 * gemm(B, d) * M if p["negatives"] == "n" else None)
class Symile(Objective):
    name = "symile"
    symmetric_in_modalities = True
    roles: ClassVar[dict[str, Role]] = {"alignment": "alignment", "uniformity": "uniformity"}
    # the multilinear product and log-sum-exp take rows of any norm: with normalize=False the rows
    # are used as given, as the original does with its LayerNorm encoder outputs
    unit_rows_required = False

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = False,
                 min_temperature: float = 0.01, negatives: str = "n", chunk_size: int | None = None,
                 normalize: bool = True, temperature_clamp: str = "forward") -> None:
        super().__init__(normalize=normalize)
        self.temperature = Temperature(temperature, learnable_temperature, min_temperature, temperature_clamp)
        self.negatives = check_choice("negatives", negatives, ("n", "n_squared"))
        self.chunk_size = check_chunk(chunk_size)

    def compute(self, z: Tensor, rows: slice) -> dict[str, Tensor]:
        n_mod, total = z.shape[0], z.shape[1]
        scale = self.temperature.scale(z.dtype, z.device)
        local = self.local(z, rows)
        positive = local.prod(dim=0).sum(-1) * scale  # (R,) MIP of each positive tuple
        idx = torch.arange(rows.stop - rows.start, device=z.device)
        # unbind once: one backward node (a select per use would zero-fill (M, B, d) each)
        zs, mine = z.unbind(0), local.unbind(0)
        lses = []
        for m in range(n_mod):
            others = [n for n in range(n_mod) if n != m]
            if self.negatives == "n":
                cand = None
                for n in others:  # same draw order as symile.Symile.compute_logits_n
                    rows_n = _permuted_rows(zs[n], _permutation(total, z.device))
                    # the package starts from ones; 1 * x == x exactly, so start from the first factor
                    cand = rows_n if cand is None else cand * rows_n
                logits = (mine[m] * scale) @ cand.T
                logits = logits.index_put((idx, idx + rows.start), positive)
                lses.append(torch.logsumexp(logits, dim=1).sum())
            else:
                lses.append(self._all_combinations_lse(mine[m] * scale, z[others]))
        lse = functools.reduce(operator.add, lses)
        return {
            "alignment": -self.mean_over_rows(positive.sum(), total),
            "uniformity": self.mean_over_rows(lse, total) / n_mod,
        }

    def _all_combinations_lse(self, a: Tensor, others: Tensor) -> Tensor:
        """sum_i log sum_{j_1..j_k} exp(MIP(a_i, others[0][j_1], ..., others[k-1][j_k]))."""
        step = a.shape[0] if self.chunk_size is None else self.chunk_size
        out = a.new_zeros(())
        for s0 in range(0, a.shape[0], step):
            x = a[s0 : s0 + step].unsqueeze(1)  # (c, 1, d)
            for o in others[:-1]:
                x = (x.unsqueeze(2) * o.unsqueeze(0).unsqueeze(0)).flatten(1, 2)  # (c, P * N, d)
            logits = x @ others[-1].T  # (c, P, N)
            out = out + torch.logsumexp(logits.flatten(1), dim=1).sum()
        return out
