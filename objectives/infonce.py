"""Multimodal InfoNCE (CLIP loss over modality pairs) and its decoupled / re-weighted variants.

References:
    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
    ICML 2021 (CLIP). Girdhar et al., "ImageBind", CVPR 2023 (anchor-based pairs).
    Yeh et al., "Decoupled Contrastive Learning", ECCV 2022 (DCL).

Example:
    >>> import torch, objectives
    >>> zs = [torch.randn(8, 16) for _ in range(3)]
    >>> out = objectives.build("infonce", temperature=0.07)(zs)
    >>> sorted(out.terms), out.roles["alignment"]
    (['alignment', 'uniformity'], 'alignment')

Drop-in for open_clip's ``ClipLoss`` (same value and gradients for two modalities): modalities as
positional tensors and CLIP's exponentiated logit scale, which receives its gradient
(docs/drop-in.md):

    >>> img, txt = torch.randn(8, 16), torch.randn(8, 16)
    >>> logit_scale = torch.tensor(1 / 0.07, requires_grad=True)
    >>> out = objectives.build("infonce")(img, txt, logit_scale)
    >>> out.backward(); logit_scale.grad is not None
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from objectives._base import (
    Objective,
    ObjectiveOutput,
    Role,
    Temperature,
    check_choice,
    check_chunk,
    check_index,
    check_nonnegative,
)
from objectives._contrastive import contrastive_parts, pair_list
from objectives.kernels.small import (
    _small_plan,
    _SmallContrastive,
    small_contrastive_fits,
    small_contrastive_loss,
)
from objectives.registry import declare, gemm, loguniform, pair_count


class _PairwiseContrastive(Objective):
    """Shared constructor of the InfoNCE family.

    Args:
        temperature: tau > 0 (default 0.07, CLIP's initial value).
        learnable_temperature: learn ``log(1 / tau)`` (``objectives.Temperature``).
        min_temperature: the floor of a learnable tau (CLIP: 0.01).
        temperature_clamp: ``"forward"`` (default: clamp inside the forward), ``"after_step"``
            (CLIP: call ``objective.temperature.clamp_()`` after each optimizer step) or ``"none"``.
        pairs: ``"all"`` modality pairs or ``"anchor"`` pairs (a, n).
        anchor: the anchor modality for ``pairs="anchor"``.
        uniformity_weight: weight w of the log-sum-exp part.
        chunk_size: rows per block (bounded memory), or None.
        normalize: L2-normalise rows inside (else they must already be unit rows).
    """

    roles: ClassVar[dict[str, Role]] = {"alignment": "alignment", "uniformity": "uniformity"}
    min_batch: ClassVar[int] = 2  # a batch of one has no negative
    exclude_positive: ClassVar[bool] = False

    def __init__(
        self,
        temperature: float = 0.07,
        learnable_temperature: bool = False,
        min_temperature: float = 0.01,
        pairs: str = "all",
        anchor: int = 0,
        uniformity_weight: float = 1.0,
        chunk_size: int | None = None,
        normalize: bool = True,
        temperature_clamp: str = "forward",
    ) -> None:
        super().__init__(normalize=normalize)
        self.temperature = Temperature(temperature, learnable_temperature, min_temperature, temperature_clamp)
        self.pairs = check_choice("pairs", pairs, ("all", "anchor"))
        self.anchor = check_index("anchor", anchor)
        self.uniformity_weight = check_nonnegative("uniformity_weight", uniformity_weight)
        self.chunk_size = check_chunk(chunk_size)
        self._pairs: dict[tuple, tuple[tuple[int, int], ...]] = {}  # pair lists of fused_output
        self._fast: dict[tuple, tuple] = {}  # forward's small-path signatures (see _fast_plan)

    @property
    def symmetric_in_modalities(self) -> bool:  # type: ignore[override]
        return self.pairs == "all"

    def forward(self, *embeddings: Tensor | Sequence[Tensor], logit_scale: Tensor | float | None = None,
                output_dict: bool = False) -> ObjectiveOutput | dict[str, Tensor]:
        """:meth:`objectives.Objective.forward`. A call without ``logit_scale`` or ``output_dict`` on
        modalities whose (M, shape, dtype, device) already took the small path goes there directly,
        with that signature's checks and constants from the first such call: at small B the general
        path's layers (call parsing, input checks, temperature swap) are a tenth of the call."""
        if logit_scale is None and output_dict is False and not torch.compiler.is_compiling():
            xs = embeddings[0] if len(embeddings) == 1 else embeddings
            fast = self._fast_plan(xs)
            if fast is not None and not self.is_distributed() and not torch.is_autocast_enabled(fast[0]):
                loss, align, unif = _SmallContrastive.apply(fast[1], fast[2], 1e-12, self.uniformity_weight,
                                                            *xs)
                self._check_loss(loss, xs)
                return ObjectiveOutput(loss=loss, terms={"alignment": align, "uniformity": unif},
                                       roles=dict(self.roles))
        return super().forward(*embeddings, logit_scale=logit_scale, output_dict=output_dict)

    def _fast_plan(self, xs) -> tuple | None:
        """(device type, scale, small-path plan) for a list or tuple of M (B, d) tensors of one shape,
        dtype and device that the small path takes with this objective's settings, else None. The
        verdict is kept per signature (kernels.small.SMALL_MAX_BATCH as it was at the first call)."""
        if type(xs) is not list and type(xs) is not tuple or len(xs) < 2:
            return None
        first = xs[0]
        if not isinstance(first, Tensor):
            return None
        shape, dtype, device = first.shape, first.dtype, first.device
        for t in xs[1:]:
            if not isinstance(t, Tensor) or t.shape != shape or t.dtype != dtype or t.device != device:
                return None
        temperature = self._modules["temperature"]
        if temperature.learnable or temperature._call_scale is not None:
            return None
        scale = 1.0 / temperature._fixed
        key = (len(xs), shape, dtype, device, scale, self.pairs, self.anchor)
        fast = self._fast.get(key)
        if fast is None:  # the checks of this signature, once; False: the general path takes it
            if len(self._fast) > 64:
                self._fast.clear()
            pairs = self._small_pairs(xs, scale)
            fast = False if pairs is None else (device.type, scale, _small_plan(pairs, shape[0], scale, dtype, device))
            self._fast[key] = fast
        return fast or None

    def _small_pairs(self, embeddings, scale: float) -> tuple[tuple[int, int], ...] | None:
        """The pair list when the small path takes ``embeddings`` with this objective's settings
        (fixed temperature, rows normalised inside, no chunking, B within kernels.small's limits),
        else None: the general path and its input checks take them."""
        if (self.exclude_positive or not self.normalize or self.chunk_size is not None
                or self.temperature.learnable):
            return None
        fits = small_contrastive_fits(embeddings, scale)
        if fits is None or self.anchor >= fits[0] or fits[1] < self.min_batch:
            return None
        key = (fits[0], self.pairs, self.anchor)
        pairs = self._pairs.get(key)
        if pairs is None:
            pairs = self._pairs[key] = tuple(pair_list(*key))
        return pairs

    def fused_output(self, embeddings) -> tuple[Tensor, dict[str, Tensor]] | None:
        """Small batches in one process (B <= kernels.small.SMALL_MAX_BATCH, fixed temperature, rows
        normalised inside): normalisation, every pair and the loss itself in one node
        (kernels.small.small_contrastive_loss)."""
        if self.temperature.learnable or self.is_distributed():
            return None
        scale = self.temperature.scale(torch.float32, None)
        pairs = self._small_pairs(embeddings, scale)
        if pairs is None:
            return None  # the general path (and its input checks)
        loss, align, unif = small_contrastive_loss(embeddings, pairs, scale, self.uniformity_weight)
        return loss, {"alignment": align, "uniformity": unif}

    def compute(self, z: Tensor, rows: slice) -> dict[str, Tensor]:
        pairs = pair_list(z.shape[0], self.pairs, self.anchor)
        scale = self.temperature.scale(z.dtype, z.device)
        align, unif = contrastive_parts(z, rows, pairs, scale, self.exclude_positive, self.chunk_size)
        weight = self.uniformity_weight
        return {"alignment": align, "uniformity": unif if weight == 1.0 else weight * unif}

    def extra_repr(self) -> str:
        return f"pairs={self.pairs!r}, anchor={self.anchor}, uniformity_weight={self.uniformity_weight}"


@declare(label="InfoNCE (all pairs)", colour="#0072B2", marker="o",
         search={"temperature": loguniform(0.03, 0.3)},
         flops=lambda M, B, d, p: 3 * gemm(B, d) * pair_count(M, "all"))
class InfoNCE(_PairwiseContrastive):
    """CLIP loss averaged over all unordered modality pairs m < n.

    ``L = mean_{m<n} 1/2 [CE(S_mn, I) + CE(S_mn^T, I)]``, ``S_mn = Z_m Z_n^T / tau``.
    Terms: ``alignment = -mean_{pairs, i} s_ii``, ``uniformity = mean_{pairs} 1/2 (mean_i lse_j s_ij +
    mean_j lse_i s_ij)``.
    """

    name = "infonce"

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = False,
                 min_temperature: float = 0.01, chunk_size: int | None = None, normalize: bool = True,
                 temperature_clamp: str = "forward"):
        super().__init__(temperature, learnable_temperature, min_temperature, "all", 0, 1.0, chunk_size,
                         normalize, temperature_clamp)


@declare(label="InfoNCE (anchor)", colour="#56B4E9", marker="v",
         search={"temperature": loguniform(0.03, 0.3)},
         flops=lambda M, B, d, p: 3 * gemm(B, d) * pair_count(M, "anchor"))
class InfoNCEAnchor(_PairwiseContrastive):
    """Anchor-based multimodal InfoNCE (ImageBind / LanguageBind): mean over n != a of l(a, n)."""

    name = "infonce_anchor"

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = False,
                 min_temperature: float = 0.01, anchor: int = 0, chunk_size: int | None = None,
                 normalize: bool = True, temperature_clamp: str = "forward"):
        super().__init__(temperature, learnable_temperature, min_temperature, "anchor", anchor, 1.0,
                         chunk_size, normalize, temperature_clamp)


@declare(label="InfoNCE, uniformity ×0.5", colour="#332288", marker="P",
         flops=lambda M, B, d, p: 3 * gemm(B, d) * pair_count(M, p["pairs"]))
class InfoNCEReweighted(_PairwiseContrastive):
    """InfoNCE with its log-sum-exp (uniformity) part weighted: alignment + w * uniformity.

    ``w = 1`` is InfoNCE; ``w < 1`` weakens the repulsion that the paper blames for the
    alignment-uniformity conflict (a reviewers' ablation).
    """

    name = "infonce_reweighted"

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = False,
                 min_temperature: float = 0.01, uniformity_weight: float = 0.5, pairs: str = "all",
                 anchor: int = 0, chunk_size: int | None = None, normalize: bool = True,
                 temperature_clamp: str = "forward"):
        super().__init__(temperature, learnable_temperature, min_temperature, pairs, anchor,
                         uniformity_weight, chunk_size, normalize, temperature_clamp)


@declare(label="DCL", colour="#44AA99", marker="h",
         flops=lambda M, B, d, p: 3 * gemm(B, d) * pair_count(M, p["pairs"]))
class DCL(_PairwiseContrastive):
    """Decoupled contrastive learning: the positive leaves each log-sum-exp denominator.

    ``l(m, n) = 1/2 [mean_i (-s_ii + lse_{j != i} s_ij) + mean_j (-s_jj + lse_{i != j} s_ij)]``.
    Needs B >= 2 (a single row has no negative).
    """

    name = "dcl"
    min_batch = 2
    exclude_positive = True

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = False,
                 min_temperature: float = 0.01, pairs: str = "all", anchor: int = 0,
                 chunk_size: int | None = None, normalize: bool = True, temperature_clamp: str = "forward"):
        super().__init__(temperature, learnable_temperature, min_temperature, pairs, anchor, 1.0,
                         chunk_size, normalize, temperature_clamp)
