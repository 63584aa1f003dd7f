"""Input handling shared by the instruments (divergence, gap, conflicts)."""

from __future__ import annotations

from typing import Any

import torch
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
