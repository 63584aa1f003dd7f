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

import inspect

__version__ = "0.2.0"

from objectives._base import Objective, ObjectiveOutput, Temperature
from objectives._distributed import no_gather
from objectives.align_uniform import AlignUniform
from objectives.cs_aligner import CSAligner
from objectives.gram import GRAM
from objectives.infonce import DCL, InfoNCE, InfoNCEAnchor, InfoNCEReweighted
from objectives.symile import Symile
from objectives.unialign import UniAlign

_REGISTRY: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (InfoNCE, InfoNCEAnchor, InfoNCEReweighted, DCL, AlignUniform, UniAlign, CSAligner, GRAM, Symile)
}

__all__ = [
    "available",
    "build",
    "parameters",
    "no_gather",
    "Objective",
    "ObjectiveOutput",
    "Temperature",
    *[cls.__name__ for cls in _REGISTRY.values()],
]


def available() -> list[str]:
    """Names accepted by :func:`build`, sorted."""
    return sorted(_REGISTRY)


def parameters(name: str) -> dict[str, object]:
    """Constructor parameters of an objective and their defaults."""
    cls = _get(name)
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self"
    }


def _get(name: str) -> type[Objective]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def build(name: str, **params: object) -> Objective:
    """Instantiate an objective by name; unknown parameters raise a TypeError naming them."""
    cls = _get(name)
    known = parameters(name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise TypeError(
            f"{name} got unknown parameter(s) {unknown}; accepted: {', '.join(sorted(known))}"
        )
    return cls(**params)
