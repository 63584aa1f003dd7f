"""Contrastive objectives for M >= 2 modalities, each splittable into alignment and uniformity.

    >>> import torch, objectives
    >>> loss_fn = objectives.build("unialign", anchor=0, bandwidth=0.5)
    >>> out = loss_fn([torch.randn(16, 8) for _ in range(3)])
    >>> out.loss.shape, sorted(out.roles.values())
    (torch.Size([]), ['alignment', 'uniformity'])

Modalities may also be positional (``loss_fn(img, txt, audio)``); objectives with a temperature take
CLIP's ``logit_scale`` tensor per call, and every objective runs under ``torch.autocast`` and
``torch.compile(..., fullgraph=True)`` (docs/drop-in.md).
"""

from __future__ import annotations

__version__ = "0.2.0"

from objectives import registry
from objectives._base import Objective, ObjectiveOutput, Temperature
from objectives._distributed import no_gather
from objectives.registry import declare

# the built-in classes, found by the registry (objectives/registry.py): each module of this package
# declares its own; nothing here lists them
globals().update({e.cls.__name__: e.cls for e in registry.builtin().values()})

__all__ = [
    "available",
    "build",
    "declare",
    "parameters",
    "registry",
    "no_gather",
    "Objective",
    "ObjectiveOutput",
    "Temperature",
    *sorted(e.cls.__name__ for e in registry.builtin().values()),
]


def available() -> list[str]:
    """Names accepted by :func:`build`, sorted: the built-in objectives and those that installed
    distributions register (entry point group ``unialign_bench.objectives``)."""
    return registry.available()


def parameters(name: str) -> dict[str, object]:
    """Constructor parameters of an objective and their defaults."""
    return _get(name).parameters()


def _get(name: str) -> registry.Entry:
    try:
        return registry.get(name)
    except registry.ObjectiveError as exc:
        raise ValueError(str(exc)) from None


def build(name: str, **params: object) -> Objective:
    """Instantiate an objective by name (or ``"package.module:Class"``); unknown parameters raise a
    TypeError naming them."""
    return _get(name).build(**params)
