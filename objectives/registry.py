"""The one registry of objectives: every consumer of the harness reads an objective from here.

An objective declares everything the harness needs beside its class, with :func:`declare`::

    @declare(label="InfoNCE (all pairs)", colour="#0072B2", marker="o",
             search={"temperature": loguniform(0.03, 0.3)},
             flops=lambda M, B, d, p: 3 * gemm(B, d) * pair_count(M, p["pairs"]))
    class InfoNCE(Objective):
        name = "infonce"

- ``label``: the readable name of tables and figures; ``colour`` and ``marker``: its look in every
  figure (``None``: a stable default from the palette, chosen by the name);
- ``retrieval_rule``: its own tuple-retrieval score (``cosine_sum``, ``gram_volume``, ``symile_mip``:
  :data:`RETRIEVAL_RULES`);
- ``search``: its tuning search space (parameter -> :func:`loguniform`, :func:`uniform` or a list of
  choices), drawn for every variant with ``tune: true`` under the same trial budget;
- ``flops``: the minimal matmul FLOPs of one forward + backward at (M, B, d) and the parameters
  (the throughput benchmark's roofline ratio; ``None``: not reported), ``sizes``: a predicate on
  (M, B, d) saying which throughput sizes it supports (``None``: all), and ``roofline_target``: the
  roofline ratio the throughput targets hold it to at B = 2048, d = 512 (``None``: not judged).

Where an objective comes from:

1. built in: every module of the ``objectives`` package is imported and its declared classes are
   registered (a new built-in objective is its own file and its test, nothing else);
2. an installed distribution's entry point in the group :data:`ENTRY_POINT_GROUP`
   (``[project.entry-points."unialign_bench.objectives"] my_loss = "my_pkg.losses:MyLoss"``);
3. a module path ``"my_pkg.losses:MyLoss"`` given where a name is expected (a variant's
   ``module:`` line in the workflow configuration, ``python -m harness train --objective``).

Every objective is a subclass of :class:`objectives.Objective` with a ``name``. Undeclared
classes (entry point or module path) get their ``name`` as label, the figures' palette default, the
``cosine_sum`` rule and no search space.

Example:

    >>> from objectives import registry
    >>> entry = registry.get("unialign")
    >>> entry.label, entry.retrieval_rule
    ('UniAlign', 'cosine_sum')
    >>> "infonce" in registry.available()
    True
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from objectives._base import Objective

ENTRY_POINT_GROUP = "unialign_bench.objectives"
#: the tuple-retrieval scores the harness implements (harness.experiment.metrics)
RETRIEVAL_RULES = ("cosine_sum", "gram_volume", "symile_mip")
DEFAULT_RULE = "cosine_sum"
_DECLARATION = "__objective_declaration__"


class ObjectiveError(ValueError):
    """An objective cannot be found, declared, built or trained; the message names it."""


# ----------------------------------------------------------------------------- search spaces
def loguniform(low: float, high: float) -> dict[str, Any]:
    """A log-uniform tuning range (the workflow's ``{low, high, log: true}``)."""
    return {"low": low, "high": high, "log": True}


def uniform(low: float, high: float) -> dict[str, Any]:
    """A uniform tuning range."""
    return {"low": low, "high": high}


# ----------------------------------------------------------------------------- FLOP helpers
def gemm(B: int, d: int) -> float:
    """FLOPs of one B x B x d product."""
    return 2.0 * B * B * d


def pair_count(M: int, pairs: str) -> int:
    """Modality pairs of ``pairs="all"`` (M(M-1)/2) or ``"anchor"`` (M - 1)."""
    return M * (M - 1) // 2 if pairs == "all" else M - 1


def uniformity_flops(M: int, B: int, d: int, scope: str = "each") -> float:
    """Forward + backward of kernel uniformity: one B x B block per modality (``each``), the anchor's
    alone (``anchor``) or one M B x M B block over the union (``union``), twice each."""
    if scope == "anchor":
        return 2 * gemm(B, d)
    if scope == "union":
        return 2 * gemm(M * B, d)
    return 2 * gemm(B, d) * M


# ----------------------------------------------------------------------------- declarations
@dataclass(frozen=True)
class Declaration:
    label: str | None = None
    colour: str | None = None
    marker: str | None = None
    retrieval_rule: str = DEFAULT_RULE
    search: Mapping[str, Any] = field(default_factory=dict)
    flops: Callable[[int, int, int, dict], float | None] | None = None
    sizes: Callable[[int, int, int], bool] | None = None
    roofline_target: float | None = None


def declare(*, label: str | None = None, colour: str | None = None, marker: str | None = None,
            retrieval_rule: str = DEFAULT_RULE, search: Mapping[str, Any] | None = None,
            flops: Callable[[int, int, int, dict], float | None] | None = None,
            sizes: Callable[[int, int, int], bool] | None = None,
            roofline_target: float | None = None) -> Callable[[type], type]:
    """Class decorator: the objective's registry entry (module docstring). Changes nothing else."""
    decl = Declaration(label, colour, marker, retrieval_rule, dict(search or {}), flops, sizes, roofline_target)

    def attach(cls: type) -> type:
        setattr(cls, _DECLARATION, decl)
        return cls

    return attach


@dataclass(frozen=True)
class Entry:
    """One registered objective."""

    name: str
    cls: type
    label: str
    colour: str | None  # None: the figures' palette default (harness style)
    marker: str | None
    retrieval_rule: str
    search: Mapping[str, Any]
    flops: Callable[[int, int, int, dict], float | None] | None
    sizes: Callable[[int, int, int], bool] | None
    roofline_target: float | None
    source: str  # "built in", "entry point of <distribution>" or "module <path>"

    def parameters(self) -> dict[str, object]:
        """Constructor parameters and their defaults (``None`` for a required one)."""
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(self.cls.__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def build(self, **params: object) -> Objective:
        """The objective built with ``params``. An unknown parameter is a TypeError naming it; a
        built-in constructor's own TypeError / ValueError passes through, and any failure of an
        outside objective's constructor is an :class:`ObjectiveError` naming the objective."""
        known = self.parameters()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise TypeError(f"{self.name} got unknown parameter(s) {unknown}; accepted: {', '.join(sorted(known))}")
        if self.source == "built in":
            return self.cls(**params)
        try:
            return self.cls(**params)
        except Exception as exc:  # noqa: BLE001 - an outside constructor may raise anything
            raise ObjectiveError(f"objective {self.name!r} ({self.source}) failed to build with {params}: "
                                 f"{type(exc).__name__}: {exc}") from exc

    def matmul_flops(self, M: int, B: int, d: int, params: dict | None = None) -> float | None:
        """Minimal matmul FLOPs of one forward + backward (``None`` when not declared)."""
        if self.flops is None:
            return None
        return self.flops(M, B, d, {**self.parameters(), **(params or {})})

    def supports(self, M: int, B: int, d: int) -> bool:
        """Whether the throughput benchmark times this objective at (M, B, d)."""
        return self.sizes is None or bool(self.sizes(M, B, d))


def _entry(cls: object, source: str, name: str | None = None) -> Entry:
    where = f"{source}: {getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', cls)}"
    if not (inspect.isclass(cls) and issubclass(cls, Objective)):
        raise ObjectiveError(f"objective {name or cls!r} ({where}) is not a subclass of objectives.Objective")
    own = cls.__dict__.get("name") or getattr(cls, "name", "")
    if name is not None and own and own != name:
        raise ObjectiveError(f"objective {name!r} ({where}): the class's name is {own!r}; the two must agree")
    name = name or own
    if not isinstance(name, str) or not name:
        raise ObjectiveError(f"objective class {where} has no `name` (a class attribute, e.g. name = 'my_loss')")
    decl: Declaration = cls.__dict__.get(_DECLARATION) or Declaration()
    if decl.retrieval_rule not in RETRIEVAL_RULES:
        raise ObjectiveError(f"objective {name!r} ({where}) declares retrieval_rule={decl.retrieval_rule!r}; "
                             f"known rules: {', '.join(RETRIEVAL_RULES)}")
    return Entry(name=name, cls=cls, label=decl.label or name, colour=decl.colour, marker=decl.marker,
                 retrieval_rule=decl.retrieval_rule, search=dict(decl.search), flops=decl.flops,
                 sizes=decl.sizes, roofline_target=decl.roofline_target, source=source)


# ----------------------------------------------------------------------------- discovery
_CACHE: dict[str, dict[str, Entry]] = {}


def _builtin() -> dict[str, Entry]:
    if "builtin" not in _CACHE:
        import objectives

        found: dict[str, Entry] = {}
        for info in sorted(pkgutil.iter_modules(objectives.__path__), key=lambda i: i.name):
            if info.name.startswith("_") or info.ispkg or info.name == "registry":
                continue
            module = importlib.import_module(f"objectives.{info.name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__ and _DECLARATION in cls.__dict__:
                    entry = _entry(cls, "built in")
                    if entry.name in found:
                        raise ObjectiveError(f"two built-in objectives are named {entry.name!r}")
                    found[entry.name] = entry
        _CACHE["builtin"] = dict(sorted(found.items()))
    return _CACHE["builtin"]


def _entry_points() -> dict[str, metadata.EntryPoint]:
    points = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _builtin():
            dist = getattr(ep.dist, "name", "?")
            raise ObjectiveError(f"entry point {ep.name!r} of {dist} ({ep.value}) in {ENTRY_POINT_GROUP} names a "
                                 "built-in objective; choose another name")
        points.setdefault(ep.name, ep)
    return points


def refresh() -> None:
    """Forget what was discovered (after installing a distribution in a running process)."""
    _CACHE.clear()
    importlib.invalidate_caches()


def available() -> list[str]:
    """Every registered name, built in and from entry points, sorted (no plugin is imported)."""
    return sorted({*_builtin(), *_entry_points()})


def builtin() -> dict[str, Entry]:
    """The built-in objectives, by name."""
    return dict(_builtin())


def is_module_path(name: str) -> bool:
    """``"package.module:Class"``: an objective given by where it lives rather than by name."""
    return isinstance(name, str) and ":" in name


def get(name: str) -> Entry:
    """The entry of a registered name or of a module path ``package.module:Class``."""
    if not isinstance(name, str) or not name:
        raise ObjectiveError(f"an objective is a registered name or 'package.module:Class', got {name!r}")
    key = f"entry:{name}"
    if key in _CACHE:
        return _CACHE[key]["entry"]
    if name in _builtin():
        return _builtin()[name]
    if is_module_path(name):
        module_name, _, attr = name.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ObjectiveError(f"objective module {name!r} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        entry = _entry(obj, f"module {name}")
    else:
        points = _entry_points()
        if name not in points:
            raise ObjectiveError(f"unknown objective {name!r}; available: {', '.join(available())}")
        ep = points[name]
        dist = getattr(ep.dist, "name", "?")
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is named, not a traceback
            raise ObjectiveError(f"objective {name!r} (entry point {ep.value} of {dist}) cannot be loaded: "
                                 f"{type(exc).__name__}: {exc}") from exc
        entry = _entry(obj, f"entry point of {dist}", name)
    _CACHE[key] = {"entry": entry}
    return entry


def find(name: str) -> Entry | None:
    """The entry of ``name`` if it is an objective, else None (for names that may be variants)."""
    try:
        return get(name)
    except ObjectiveError:
        return None


def entries() -> list[Entry]:
    """Every registered objective (entry points are loaded)."""
    return [get(n) for n in available()]


# ----------------------------------------------------------------------------- checks while training
def check_step(name: str, loss: object, step: int, parameters: list | None = None) -> None:
    """A training step's loss: a finite scalar tensor with a gradient.

    ``parameters`` (the encoder's, after ``backward()``): at least one must have received a finite,
    non-zero gradient. Raises :class:`ObjectiveError` naming the objective."""
    import torch

    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ObjectiveError(f"objective {name!r} returned {type(loss).__name__} at step {step}; "
                             "the loss must be a scalar tensor (ObjectiveOutput.loss)")
    value = float(loss.detach())
    if not math.isfinite(value):
        raise ObjectiveError(f"objective {name!r} returned a non-finite loss ({value}) at step {step}")
    if parameters is None:
        if not loss.requires_grad:
            raise ObjectiveError(f"objective {name!r} returned a loss without a gradient at step {step} "
                                 "(it does not depend on the embeddings, or was detached)")
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not any(bool(torch.isfinite(g).all()) and bool(g.abs().sum() > 0) for g in grads):
        raise ObjectiveError(f"objective {name!r} gave the encoders no finite, non-zero gradient at step {step}")


def markdown_table() -> str:
    """The built-in objectives as a Markdown table (docs/objectives.md holds this table verbatim)."""
    lines = ["| name | label | retrieval rule | tuned parameters |", "|---|---|---|---|"]
    for e in _builtin().values():
        space = ", ".join(f"`{k}`" for k in sorted(e.search)) or "–"
        lines.append(f"| `{e.name}` | {e.label} | `{e.retrieval_rule}` | {space} |")
    return "\n".join(lines) + "\n"
