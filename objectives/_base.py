"""Base class, output type and argument checks shared by every objective."""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Sequence

import torch
from torch import Tensor, nn

from objectives import _distributed as dist
from objectives.kernels import unit_rows

Role = Literal["alignment", "uniformity", "other"]

# prepare() accepts rows within this distance of unit norm (normalize=False); the kernels may then
# rely on every row norm being at most UNIT_ROW_NORM_BOUND when deciding how to keep exp in range
UNIT_NORM_TOLERANCE = 1e-3
UNIT_ROW_NORM_BOUND = 1.0 + UNIT_NORM_TOLERANCE
ROLES = ("alignment", "uniformity", "other")


@dataclass
class ObjectiveOutput:
    """What every objective returns.

    ``loss == sum(terms.values())``: terms are the *weighted* contributions, so the gradient of an
    objective's alignment part is the gradient of the sum of the terms whose role is "alignment".
    """

    loss: Tensor
    terms: dict[str, Tensor]
    roles: dict[str, Role] = field(default_factory=dict)

    def part(self, role: Role) -> Tensor:
        """Sum of the terms with the given role (a zero tensor when there is none)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        parts = [t for name, t in self.terms.items() if self.roles[name] == role]
        return torch.stack(parts).sum() if parts else torch.zeros((), device=self.loss.device)


# ----------------------------------------------------------------------------- argument checks


def check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def check_nonnegative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a non-negative number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return float(value)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_bandwidth(name: str, value: float | str) -> float | str:
    if isinstance(value, str):
        if value != "median":
            raise ValueError(f"{name} must be a positive number or 'median', got {value!r}")
        return value
    return check_positive(name, value)


def check_index(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_chunk(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"chunk_size must be None or a positive int, got {value!r}")
    return value


# ----------------------------------------------------------------------------- temperature


class Temperature(nn.Module):
    """Fixed or learnable temperature, log-parameterised as CLIP's logit scale.

    Learnable: the parameter is ``log(1 / temperature)``; the scale ``1 / temperature`` is clamped
    to at most ``1 / min_temperature`` (CLIP clamps at 100, i.e. ``min_temperature = 0.01``).
    """

    def __init__(self, temperature: float, learnable: bool = False, min_temperature: float = 0.01):
        super().__init__()
        temperature = check_positive("temperature", temperature)
        self.min_temperature = check_positive("min_temperature", min_temperature)
        if not isinstance(learnable, bool):
            raise TypeError(f"learnable_temperature must be a bool, got {learnable!r}")
        if learnable and temperature < self.min_temperature:
            raise ValueError(
                f"temperature={temperature} is below min_temperature={self.min_temperature} "
                "for a learnable temperature"
            )
        log_scale = torch.tensor(-math.log(temperature), dtype=torch.float64)
        if learnable:
            # float64 so that a float64 model sees exactly the requested temperature; scale() casts
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale.float(), persistent=True)
        self.learnable = learnable
        self._fixed = temperature

    def scale(self, dtype: torch.dtype, device: torch.device) -> Tensor | float:
        """1 / temperature: a Python float when fixed (exact in float64), a tensor when learnable."""
        if not self.learnable:
            return 1.0 / self._fixed
        return self.log_scale.clamp(max=-math.log(self.min_temperature)).exp().to(dtype=dtype, device=device)

    def value(self) -> float:
        return 1.0 / float(self.scale(torch.float64, torch.device("cpu")))

    def extra_repr(self) -> str:
        return f"temperature={self.value():.4g}, learnable={self.learnable}"


# ----------------------------------------------------------------------------- base objective


class Objective(nn.Module):
    """Base class: input checks, normalisation, cross-rank gathering, output assembly.

    Subclasses implement ``compute(z, rows)`` where ``z`` is the (M, N, d) tensor of all rows
    (gathered over ranks when torch.distributed is initialised) and ``rows`` the slice of rows this
    rank owns (all of them in a single process). They return the terms as *local sums over their
    rows* divided by the global count through :meth:`mean_over_rows`, so one code path serves one
    process and many.
    """

    name: ClassVar[str] = ""
    symmetric_in_modalities: ClassVar[bool] = True
    roles: ClassVar[dict[str, Role]] = {}
    min_batch: ClassVar[int] = 1

    def __init__(self, *, normalize: bool = True, check_finite: bool = True) -> None:
        super().__init__()
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {normalize!r}")
        self.normalize = normalize
        self.check_finite = bool(check_finite)

    # -- input handling -------------------------------------------------------------------
    def prepare(self, embeddings: Sequence[Tensor] | Tensor) -> Tensor:
        if isinstance(embeddings, Tensor):
            if embeddings.dim() != 3:
                raise ValueError(
                    f"embeddings as one tensor must have shape (M, B, d), got {tuple(embeddings.shape)}"
                )
            z = embeddings
            shapes = [tuple(embeddings.shape[1:])] * embeddings.shape[0]
        elif isinstance(embeddings, (list, tuple)):
            for m, t in enumerate(embeddings):
                if not isinstance(t, Tensor):
                    raise TypeError(f"embeddings[{m}] must be a torch.Tensor, got {type(t).__name__}")
                if t.dim() != 2:
                    raise ValueError(f"embeddings[{m}] must have shape (B, d), got {tuple(t.shape)}")
            shapes = [tuple(t.shape) for t in embeddings]
            z = None
        else:
            raise TypeError(
                "embeddings must be a sequence of (B, d) tensors or one (M, B, d) tensor, "
                f"got {type(embeddings).__name__}"
            )
        n_mod = len(shapes)
        if n_mod < 2:
            raise ValueError(f"need at least M=2 modalities, got M={n_mod}")
        for m, shape in enumerate(shapes):
            if shape != shapes[0]:
                raise ValueError(
                    f"all modalities need the same (B, d): embeddings[0] has {shapes[0]}, "
                    f"embeddings[{m}] has {shape}"
                )
        if z is None:
            dtypes = {t.dtype for t in embeddings}
            if len(dtypes) > 1:
                raise ValueError(f"all modalities need the same dtype, got {sorted(map(str, dtypes))}")
        first = embeddings[0]
        if not first.is_floating_point():
            raise TypeError(f"embeddings must be floating point, got dtype {first.dtype}")
        batch, dim = shapes[0]
        if batch < self.min_batch:
            raise ValueError(f"{self.name} needs a batch of at least B={self.min_batch} rows, got B={batch}")
        if dim < 1:
            raise ValueError(f"embedding dimension d must be >= 1, got d={dim}")
        if self.normalize:
            # stacking and normalising in one Function: 2 passes forward, 3 backward
            z = unit_rows(embeddings if z is None else z, eps=1e-12)
        else:
            if z is None:
                z = torch.stack(list(embeddings))
            norms = z.detach().norm(dim=-1)
            worst = (norms - 1).abs().amax(dim=1)
            if bool((worst > UNIT_NORM_TOLERANCE).any()):
                m = int(torch.argmax(worst))
                raise ValueError(
                    f"embeddings[{m}] has rows with norm {float(norms[m][(norms[m] - 1).abs().argmax()]):.6g}; "
                    f"with normalize=False every row must have unit L2 norm (tolerance {UNIT_NORM_TOLERANCE:g})"
                )
        self.check_modalities(n_mod)
        return z

    @staticmethod
    def _raise_if_not_finite(embeddings: Sequence[Tensor] | Tensor) -> None:
        for m, t in enumerate(embeddings):
            bad = int((~torch.isfinite(t.detach())).sum())
            if bad:
                raise ValueError(f"embeddings[{m}] contains {bad} NaN or inf values")

    def check_modalities(self, n_modalities: int) -> None:
        anchor = getattr(self, "anchor", None)
        if anchor is not None and anchor >= n_modalities:
            raise ValueError(f"anchor={anchor} is out of range for M={n_modalities} modalities")

    def forward(self, embeddings: Sequence[Tensor] | Tensor) -> ObjectiveOutput:
        z_local = self.prepare(embeddings)
        rank, size = dist.world()
        local = z_local.shape[1]
        z = dist.gather_rows(z_local)
        rows = slice(rank * local, (rank + 1) * local)
        terms = self.compute(z, rows)
        loss = functools.reduce(operator.add, terms.values())
        # NaN/inf anywhere in the input reaches the loss: one scalar check instead of a pass over
        # the input on every call; the input is searched only when the loss is not finite
        if self.check_finite and not math.isfinite(loss.detach().item()):
            self._raise_if_not_finite(embeddings)
        return ObjectiveOutput(loss=loss, terms=terms, roles={k: self.roles[k] for k in terms})

    def compute(self, z: Tensor, rows: slice) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def local(z: Tensor, rows: slice) -> Tensor:
        """This rank's rows of every modality, (M, R, d); z itself in one process (a full slice
        would still cost a zero-filled copy in its backward)."""
        return z if rows.stop - rows.start == z.shape[1] else z[:, rows]

    # -- reductions that are exact across ranks -------------------------------------------
    @staticmethod
    def mean_over_rows(local_sum: Tensor, total_rows: int, weight: float | Tensor = 1.0) -> Tensor:
        """weight * global mean of per-row quantities from this rank's sum (differentiable across
        ranks); a float weight costs no extra operation."""
        total = dist.all_reduce_sum(local_sum)
        if isinstance(weight, Tensor):
            return total * weight / total_rows
        return total * (weight / total_rows)

    @staticmethod
    def is_distributed() -> bool:
        return dist.world()[1] > 1


def _rows_lmk(
    blocks: list[tuple[Tensor, int]],
    y: Tensor,
    bandwidth: float,
    exclude_diagonal: bool,
    chunk_size: int | None,
) -> Tensor:
    """log mean_{i, j} k_s(x_i, y_j) over the rows of every block on every rank (unit rows).

    Each block is (local rows, offset): row i's diagonal partner is column i + offset of ``y``.
    Every row of ``y`` is a row of exactly one (rank, block), so the global row count is |y|.
    """
    from objectives.kernels import total_lse

    inv = 1.0 / float(bandwidth) ** 2
    local = torch.stack([total_lse(x, y, inv, exclude_diagonal, off, chunk_size) for x, off in blocks])
    totals = dist.gather_flat(local)
    n = y.shape[0]
    pairs = n * (n - 1) if exclude_diagonal else n * n
    return torch.logsumexp(totals, dim=0) - inv - math.log(pairs)


def self_lmk(x: Tensor, rows: slice, bandwidth: float, exclude_diagonal: bool, chunk_size: int | None) -> Tensor:
    """U_s(X) = LMK_s(X, X) of one modality's (gathered) rows, exact across ranks."""
    from objectives.kernels import sphere_log_mean_kernel

    if not Objective.is_distributed():
        return sphere_log_mean_kernel(x, None, bandwidth, exclude_diagonal, chunk_size)
    return _rows_lmk([(x[rows], rows.start)], x, bandwidth, exclude_diagonal, chunk_size)


def self_lmks(z: Tensor, rows: slice, bandwidth: float, exclude_diagonal: bool, chunk_size: int | None) -> Tensor:
    """(M,) U_s(X_m) of every modality: one batched node in one process without chunking (rows
    are unit vectors after Objective.prepare), else one :func:`self_lmk` per modality."""
    from objectives.kernels import sphere_self_log_mean_kernels

    if chunk_size is None and not Objective.is_distributed():
        return sphere_self_log_mean_kernels(z, bandwidth, exclude_diagonal, row_norm=UNIT_ROW_NORM_BOUND)
    return torch.stack([self_lmk(x, rows, bandwidth, exclude_diagonal, chunk_size) for x in z.unbind(0)])


def cross_lmk(x: Tensor, y: Tensor, rows: slice, bandwidth: float, chunk_size: int | None) -> Tensor:
    """LMK_s(X, Y) for two equally sized modalities (diagonal included), exact across ranks."""
    from objectives.kernels import sphere_log_mean_kernel

    if not Objective.is_distributed():
        return sphere_log_mean_kernel(x, y, bandwidth, False, chunk_size)
    return _rows_lmk([(x[rows], rows.start)], y, bandwidth, False, chunk_size)


def union_lmk(z: Tensor, rows: slice, bandwidth: float, exclude_diagonal: bool, chunk_size: int | None) -> Tensor:
    """U_s over the union of all modalities' rows (M N rows), exact across ranks."""
    from objectives.kernels import sphere_log_mean_kernel

    n_mod, n, d = z.shape
    union = z.reshape(n_mod * n, d)
    if not Objective.is_distributed():
        return sphere_log_mean_kernel(union, None, bandwidth, exclude_diagonal, chunk_size)
    blocks = [(z[m, rows], m * n + rows.start) for m in range(n_mod)]
    return _rows_lmk(blocks, union, bandwidth, exclude_diagonal, chunk_size)
