"""Input handling shared by the instruments (divergence, gap, conflicts): one place that turns what
a user passes into checked (B, d) float tensors, and one place for anchors and modality pairs."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def modality_list(xs: Any, name: str = "zs", min_modalities: int = 2) -> list[Tensor]:
    """A sequence of (B_m, d) tensors or one (M, B, d) tensor -> a list of M tensors (unchecked rows).

    Raises a ValueError naming ``name`` for a wrong type, a wrong rank or too few modalities;
    array-likes are converted with ``torch.as_tensor``.
    """
    if isinstance(xs, Tensor):
        if xs.dim() != 3:
            raise ValueError(f"{name} as one tensor must have shape (M, B, d), got {tuple(xs.shape)}")
        items = list(xs.unbind(0))
    elif isinstance(xs, (list, tuple)):
        items = [x if isinstance(x, Tensor) else torch.as_tensor(x) for x in xs]
    else:
        raise ValueError(
            f"{name} must be a sequence of (B, d) tensors or one (M, B, d) tensor, got {type(xs).__name__}"
        )
    if len(items) < min_modalities:
        raise ValueError(f"{name} must hold at least M={min_modalities} modalities, got M={len(items)}")
    return items


def checked_modalities(
    xs: Any,
    name: str = "zs",
    *,
    min_modalities: int = 2,
    min_rows: int = 2,
    paired: bool = False,
    detach: bool = True,
    normalize: bool = False,
    eps: float = 1e-12,
) -> list[Tensor]:
    """Checked (B_m, d) embeddings of every modality, in one common floating dtype.

    Every modality must be 2-D with at least ``min_rows`` rows, share d and the device, and hold
    only finite values; ``paired=True`` also asks for equal B. Integer and half-precision inputs are
    computed in float32, float64 stays float64 (mixed inputs are promoted to the wider type).
    ``normalize`` L2-normalises the rows; ``detach=False`` keeps the autograd graph (gradients of an
    objective with respect to its inputs). Errors name ``name[m]`` and the offending value.
    """
    items = modality_list(xs, name, min_modalities)
    for m, x in enumerate(items):
        if x.dim() != 2:
            raise ValueError(f"{name}[{m}] must have shape (B, d), got {tuple(x.shape)}")
        if x.shape[0] < min_rows:
            raise ValueError(f"{name}[{m}] needs at least {min_rows} samples, got B={x.shape[0]}")
        if x.shape[1] != items[0].shape[1]:
            raise ValueError(
                f"{name}[{m}] has dimension d={x.shape[1]} but {name}[0] has d={items[0].shape[1]}"
            )
        if x.device != items[0].device:
            raise ValueError(f"{name}[{m}] is on {x.device} but {name}[0] is on {items[0].device}")
    if paired and len({x.shape[0] for x in items}) != 1:
        raise ValueError(f"paired metrics need equal B across modalities, got B={[x.shape[0] for x in items]}")
    dtype = torch.float32
    for x in items:
        if x.is_floating_point() and x.dtype not in (torch.float16, torch.bfloat16):
            dtype = torch.promote_types(dtype, x.dtype)
    out = []
    for m, x in enumerate(items):
        bad = int((~torch.isfinite(x.detach())).sum())
        if bad:
            raise ValueError(f"{name}[{m}] contains {bad} non-finite value(s) (NaN or inf)")
        x = (x.detach() if detach else x).to(dtype)
        out.append(F.normalize(x, dim=-1, eps=eps) if normalize else x)
    return out


def check_anchor(anchor: Any, n_modalities: int, allow_none: bool = False) -> None:
    """An anchor is an int in [0, M - 1] (or None where ``allow_none``); the error names it."""
    if anchor is None and allow_none:
        return
    if isinstance(anchor, bool) or not isinstance(anchor, int) or not 0 <= anchor < n_modalities:
        extra = " or None" if allow_none else ""
        raise ValueError(f"anchor must be an int in [0, {n_modalities - 1}]{extra}, got {anchor!r}")


def modality_pairs(n_modalities: int, anchor: int | None = None) -> list[tuple[int, int]]:
    """All pairs m < n (``anchor=None``), or the pairs (anchor, n) for n != anchor."""
    check_anchor(anchor, n_modalities, allow_none=True)
    if anchor is None:
        return [(m, n) for m in range(n_modalities) for n in range(m + 1, n_modalities)]
    return [(anchor, n) for n in range(n_modalities) if n != anchor]


def sample_rows(n: int, max_rows: int, seed: int) -> Tensor:
    """Sorted indices of the rows a quadratic instrument (KDE divergences, conflict statistics) uses:
    every row when ``n <= max_rows``, else ``max_rows`` rows drawn without replacement by
    ``torch.randperm`` from a generator seeded with ``seed`` (the same rows for the same arguments,
    whatever ran before)."""
    for name, v, low in (("n", n, 0), ("max_rows", max_rows, 1), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    if n <= max_rows:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:max_rows].sort().values
