"""Base class, output type and argument checks shared by every objective."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from objectives import _distributed as dist
from objectives.kernels import plain, unit_rows
from objectives.kernels.device import checks_on_device

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

    ``backward()``, ``item()``, ``detach()`` and ``float()`` act on ``loss``, so a training loop
    written for a loss tensor (``loss_fn(img, txt).backward()``) runs unchanged. Anything that must
    receive a tensor (``GradScaler.scale``, arithmetic with other losses) takes ``out.loss``.
    """

    loss: Tensor
    terms: dict[str, Tensor]
    roles: dict[str, Role] = field(default_factory=dict)

    def backward(self, *args: Any, **kwargs: Any) -> None:
        """``loss.backward(...)``."""
        self.loss.backward(*args, **kwargs)

    def item(self) -> float:
        """``loss.item()``."""
        return self.loss.item()

    def detach(self) -> Tensor:
        """``loss.detach()``."""
        return self.loss.detach()

    def __float__(self) -> float:
        return self.loss.item()

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


TEMPERATURE_CLAMPS = ("forward", "after_step", "none")


def check_temperature(value: float | Tensor) -> float:
    """A positive finite temperature; a one-element tensor without gradient counts as its number."""
    if isinstance(value, Tensor):
        if value.requires_grad:
            raise TypeError(
                "temperature must be a number; a tensor that requires grad would be copied here and "
                "never receive its gradient: pass it at call time as logit_scale=1/temperature (as "
                "open_clip passes logit_scale.exp()), or build with learnable_temperature=True"
            )
        if value.numel() != 1 or not value.is_floating_point():
            raise TypeError(f"temperature must be one number, got a {value.dtype} tensor of shape "
                            f"{tuple(value.shape)}")
        value = float(value)
    return check_positive("temperature", value)


class Temperature(nn.Module):
    """Fixed or learnable temperature ``tau``, log-parameterised as CLIP's logit scale.

    A learnable temperature is the parameter ``log_scale = log(1 / tau)`` (float64, initialised at
    ``log(1 / temperature)``) and the objectives multiply similarities by ``scale = exp(log_scale)``.
    ``clamp`` selects how the scale is kept in range, which expresses each paper's original setting:

    * ``"forward"`` (default): ``exp(min(log_scale, log(1 / min_temperature)))`` inside the forward;
      the parameter itself is never changed (its gradient is zero above the bound).
    * ``"after_step"`` (CLIP, Radford et al., ICML 2021): ``exp(log_scale)`` unclamped in the forward;
      the training loop calls :meth:`clamp_` after each optimizer step, which clamps the parameter
      to ``[log(1 / max_temperature), log(1 / min_temperature)]`` (CLIP: ``[0, ln 100]``).
    * ``"none"`` (Symile, Saporta et al., NeurIPS 2024): ``exp(log_scale)``, never clamped, any
      initial temperature.

    A fixed temperature ignores ``clamp``. During a call with ``logit_scale=`` the objective's scale
    is that tensor instead (see :meth:`objectives.Objective.forward`).

        >>> t = Temperature(0.07, learnable=True, clamp="after_step")   # CLIP
        >>> round(t.log_scale.item(), 4)                                 # ln(1 / 0.07)
        2.6593
        >>> with torch.no_grad():
        ...     _ = t.log_scale.fill_(5.0)                               # an optimizer step overshoots
        >>> round(t.clamp_().log_scale.item(), 4)                        # ln 100
        4.6052
    """

    def __init__(self, temperature: float, learnable: bool = False, min_temperature: float = 0.01,
                 clamp: str = "forward", max_temperature: float = 1.0) -> None:
        super().__init__()
        temperature = check_temperature(temperature)
        self.min_temperature = check_positive("min_temperature", min_temperature)
        self.max_temperature = check_positive("max_temperature", max_temperature)
        self.clamp = check_choice("temperature_clamp", clamp, TEMPERATURE_CLAMPS)
        if not isinstance(learnable, bool):
            raise TypeError(f"learnable_temperature must be a bool, got {learnable!r}")
        if self.max_temperature < self.min_temperature:
            raise ValueError(f"max_temperature={self.max_temperature} is below "
                             f"min_temperature={self.min_temperature}")
        if learnable and clamp != "none" and temperature < self.min_temperature:
            raise ValueError(
                f"temperature={temperature} is below min_temperature={self.min_temperature} "
                "for a learnable temperature"
            )
        if learnable and clamp == "after_step" and temperature > self.max_temperature:
            raise ValueError(
                f"temperature={temperature} is above max_temperature={self.max_temperature} "
                "for a learnable temperature clamped after each step"
            )
        log_scale = torch.tensor(-math.log(temperature), dtype=torch.float64)
        if learnable:
            # float64 so that a float64 model sees exactly the requested temperature; scale() casts
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale.float(), persistent=True)
        self.learnable = learnable
        self._fixed = temperature
        # the logit_scale= of the call in progress (set and reset by Objective.forward)
        self._call_scale: Tensor | float | None = None

    def scale(self, dtype: torch.dtype, device: torch.device) -> Tensor | float:
        """1 / temperature: a Python float when fixed (exact in float64), a tensor when learnable or
        given as a tensor ``logit_scale=`` for the call in progress."""
        if self._call_scale is not None:
            if isinstance(self._call_scale, Tensor):
                return self._call_scale.to(dtype=dtype, device=device)
            return self._call_scale
        if not self.learnable:
            return 1.0 / self._fixed
        log_scale = self.log_scale
        if self.clamp == "forward":
            log_scale = log_scale.clamp(max=-math.log(self.min_temperature))
        return log_scale.exp().to(dtype=dtype, device=device)

    @torch.no_grad()
    def clamp_(self) -> Temperature:
        """Clamp a learnable parameter in place to ``[log(1 / max_temperature), log(1 /
        min_temperature)]`` (CLIP's ``logit_scale.clamp_(0, ln 100)``); call it after each optimizer
        step. Only ``clamp="after_step"`` is changed: for a fixed temperature, ``"forward"`` and
        ``"none"`` it does nothing, so a training loop may call it unconditionally."""
        if self.learnable and self.clamp == "after_step":
            self.log_scale.clamp_(-math.log(self.max_temperature), -math.log(self.min_temperature))
        return self

    def value(self) -> float:
        """The temperature in use (outside a call), as a float."""
        with torch.no_grad():
            return 1.0 / float(self.scale(torch.float64, torch.device("cpu")))

    def extra_repr(self) -> str:
        clamp = f", clamp={self.clamp!r}" if self.learnable else ""
        return f"temperature={self.value():.4g}, learnable={self.learnable}{clamp}"


# ----------------------------------------------------------------------------- base objective


class Objective(nn.Module):
    """Base class: input checks, normalisation, cross-rank gathering, output assembly.

    Subclasses implement ``compute(z, rows)`` where ``z`` is the (M, N, d) tensor of all rows
    (gathered over ranks when torch.distributed is initialised) and ``rows`` the slice of rows this
    rank owns (all of them in a single process). They return the terms as *local sums over their
    rows* divided by the global count through :meth:`mean_over_rows`, so one code path serves one
    process and many. An objective with a temperature keeps it in ``self.temperature`` (a
    :class:`Temperature`) and reads it through ``self.temperature.scale(dtype, device)``, which is
    what makes ``logit_scale=`` apply to it.

    ``check_finite`` (attribute, default True): a non-finite loss is reported; see :meth:`forward`.
    """

    name: ClassVar[str] = ""
    symmetric_in_modalities: ClassVar[bool] = True
    roles: ClassVar[dict[str, Role]] = {}
    min_batch: ClassVar[int] = 2  # every objective contrasts a row with others: B = 1 has no negative
    #: with normalize=False, rows must have unit norm (the kernels bound exp() by the row norms);
    #: an objective whose computation takes rows of any norm sets this to False
    unit_rows_required: ClassVar[bool] = True

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
            raise ValueError(f"{self.name} needs a batch of at least B={self.min_batch} rows (a batch of one has no "
                             f"negatives to contrast with), got B={batch}")
        if dim < 1:
            raise ValueError(f"embedding dimension d must be >= 1, got d={dim}")
        if self.normalize:
            # stacking and normalising in one Function: 2 passes forward, 3 backward
            z = unit_rows(embeddings if z is None else z, eps=1e-12)
        elif z is None:
            z = torch.stack(list(embeddings))
        if not self.normalize and self.unit_rows_required:
            norms = z.detach().norm(dim=-1)
            worst = (norms - 1).abs().amax(dim=1)
            if checks_on_device(worst):  # queued on the device, no synchronisation
                torch._assert_async(
                    ~(worst > UNIT_NORM_TOLERANCE).any(),
                    f"{self.name}: with normalize=False every row must have unit L2 norm "
                    f"(tolerance {UNIT_NORM_TOLERANCE:g})",
                )
            elif bool((worst > UNIT_NORM_TOLERANCE).any()):
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

    def forward(
        self,
        *embeddings: Tensor | Sequence[Tensor],
        logit_scale: Tensor | float | None = None,
        output_dict: bool = False,
    ) -> ObjectiveOutput | dict[str, Tensor]:
        """The loss of M modalities' embeddings.

        Args:
            *embeddings: the M modalities as positional (B, d) tensors (``fn(img, txt)``,
                ``fn(a, b, c)``), or one sequence of them, or one (M, B, d) tensor. A trailing 0-dim
                tensor is the logit scale, as in open_clip's ``loss(img, txt, logit_scale)``.
            logit_scale: CLIP's exponentiated logit scale, i.e. ``1 / temperature``: a 0-dim tensor
                (it receives its gradient) or a positive number. It replaces the objective's
                temperature for this call; only objectives with a temperature accept it, and not
                one built with ``learnable_temperature=True`` (that parameter would get no gradient).
            output_dict: return ``dict(out.terms)`` (named loss tensors that sum to the loss, as
                open_clip's ``output_dict=True``) instead of the :class:`ObjectiveOutput`.

        Under ``torch.autocast`` the objective computes in float32 (half-precision and float32
        inputs are cast up, float64 is kept, as ``torch.amp.custom_fwd(cast_inputs=torch.float32)``
        does): the loss then equals an autocast-free call on the same embeddings.

        With ``check_finite`` (default) a non-finite loss raises. On CUDA and while ``torch.compile``
        traces, the check is queued with ``torch._assert_async`` (no host-device synchronisation, no
        graph break): a RuntimeError on the CPU, a device-side assert on CUDA (which ends the CUDA
        context, as any device assert does). Elsewhere the loss is read on the host (free on the
        CPU) and a ValueError names the modality that holds NaN or inf. Set
        ``objective.check_finite = False`` to skip the check.
        """
        inputs, logit_scale = self._split_call(embeddings, logit_scale)
        if not isinstance(output_dict, bool):
            raise TypeError(f"output_dict must be a bool, got {output_dict!r}")
        temperature = self._call_temperature(logit_scale)
        device = _first_tensor_device(inputs)
        if device is not None and torch.is_autocast_enabled(device.type):
            with torch.autocast(device.type, enabled=False):
                out = self._with_scale(_float32(inputs), temperature, logit_scale)
        else:
            out = self._with_scale(inputs, temperature, logit_scale)
        return dict(out.terms) if output_dict else out

    def _split_call(
        self, args: tuple, logit_scale: Tensor | float | None
    ) -> tuple[Sequence[Tensor] | Tensor, Tensor | float | None]:
        """(embeddings, logit_scale) from forward's positional arguments."""
        if len(args) >= 2 and isinstance(args[-1], Tensor) and args[-1].dim() == 0:
            if logit_scale is not None:
                raise TypeError(
                    f"{self.name} got logit_scale twice: as a trailing 0-dim tensor and as a keyword"
                )
            args, logit_scale = args[:-1], args[-1]
        if not args:
            raise TypeError(
                f"{self.name} needs embeddings: M tensors of shape (B, d), one sequence of them or one "
                "(M, B, d) tensor"
            )
        return (args[0] if len(args) == 1 else args), logit_scale

    def _call_temperature(self, logit_scale: Tensor | float | None) -> Temperature | None:
        """The Temperature that ``logit_scale`` replaces for this call (None without one), checked."""
        if logit_scale is None:
            return None
        temperature = getattr(self, "temperature", None)
        if not isinstance(temperature, Temperature):
            raise TypeError(
                f"{self.name} has no temperature, so logit_scale= does not apply to it (it applies to the "
                "objectives whose objectives.parameters(name) include 'temperature')"
            )
        if temperature.learnable:
            raise ValueError(
                f"{self.name} was built with learnable_temperature=True; logit_scale= would replace that "
                "parameter, which would then get no gradient: use one or the other"
            )
        if isinstance(logit_scale, Tensor):
            if logit_scale.numel() != 1 or not logit_scale.is_floating_point():
                raise TypeError(
                    f"logit_scale must be a 0-dim floating-point tensor (CLIP's logit_scale.exp(), i.e. "
                    f"1 / temperature) or a number, got a {logit_scale.dtype} tensor of shape "
                    f"{tuple(logit_scale.shape)}"
                )
            value = logit_scale.detach().reshape(())
            if checks_on_device(value):
                torch._assert_async(
                    torch.isfinite(value) & (value > 0), "logit_scale must be finite and positive"
                )
            elif not (math.isfinite(float(value)) and float(value) > 0):
                raise ValueError(f"logit_scale must be a finite positive number (1 / temperature), "
                                 f"got {float(value)!r}")
        else:
            check_positive("logit_scale", logit_scale)
        return temperature

    def _with_scale(self, embeddings, temperature: Temperature | None, logit_scale) -> ObjectiveOutput:
        """:meth:`_forward` with ``temperature`` reading ``logit_scale`` during the call."""
        if temperature is None:
            return self._forward(embeddings)
        temperature._call_scale = (logit_scale.reshape(()) if isinstance(logit_scale, Tensor)
                                   else float(logit_scale))
        try:
            return self._forward(embeddings)
        finally:
            temperature._call_scale = None

    def _forward(self, embeddings: Sequence[Tensor] | Tensor) -> ObjectiveOutput:
        fused = self.fused_output(embeddings)
        if fused is None:
            z_local = self.prepare(embeddings)
            rank, size = dist.world()
            local = z_local.shape[1]
            z = dist.gather_rows(z_local)
            rows = slice(rank * local, (rank + 1) * local)
            terms = self.compute(z, rows)
            loss = _sum_terms(terms)
        else:
            loss, terms = fused
        self._check_loss(loss, embeddings)
        return ObjectiveOutput(loss=loss, terms=terms, roles={k: self.roles[k] for k in terms})

    def _check_loss(self, loss: Tensor, embeddings: Sequence[Tensor] | Tensor) -> None:
        """With ``check_finite``: NaN/inf anywhere in the input reaches the loss, so one scalar check
        instead of a pass over the input on every call; the input is searched only when the loss is
        not finite."""
        if not self.check_finite:
            return
        if checks_on_device(loss):
            torch._assert_async(
                torch.isfinite(loss.detach()),
                f"{self.name}: the loss is not finite (NaN or inf in the embeddings, or an overflow)",
            )
        elif not math.isfinite(loss.item()):
            self._raise_if_not_finite(embeddings)

    def fused_output(self, embeddings: Sequence[Tensor] | Tensor) -> tuple[Tensor, dict[str, Tensor]] | None:
        """(loss, terms) from one fused node for inputs that allow it (small batches), else None: then
        prepare() validates and normalises and compute() runs. Default: the sum of
        :meth:`fused_terms`, when that gives terms."""
        terms = self.fused_terms(embeddings)
        return None if terms is None else (_sum_terms(terms), terms)

    def fused_terms(self, embeddings: Sequence[Tensor] | Tensor) -> dict[str, Tensor] | None:
        """The terms from one fused node for inputs that allow it (small batches), else None: then
        prepare() validates and normalises and compute() runs. Default: None."""
        return None

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


def _sum_terms(terms: dict[str, Tensor]) -> Tensor:
    """The loss: the sum of the terms (one term is its own sum, no add node)."""
    return functools.reduce(operator.add, terms.values())


def _first_tensor_device(embeddings: Sequence[Tensor] | Tensor) -> torch.device | None:
    if isinstance(embeddings, Tensor):
        return embeddings.device
    if isinstance(embeddings, (list, tuple)):
        for t in embeddings:
            if isinstance(t, Tensor):
                return t.device
    return None


def _float32(embeddings: Sequence[Tensor] | Tensor) -> Sequence[Tensor] | Tensor:
    """Half-precision and float32 tensors as float32 (autocast's eligible inputs); others unchanged."""
    def cast(t):
        if isinstance(t, Tensor) and t.is_floating_point() and t.dtype != torch.float64:
            return t.float()
        return t

    if isinstance(embeddings, (list, tuple)):
        return [cast(t) for t in embeddings]
    return cast(embeddings)


def _inverse_square(bandwidth: float | Tensor) -> float | Tensor:
    """1 / s^2, in float64 (a Python float, or a 0-dim tensor for a width kept on the device)."""
    if isinstance(bandwidth, Tensor):
        return 1.0 / bandwidth.detach().double() ** 2
    return 1.0 / float(bandwidth) ** 2


def _sphere_lmk(x: Tensor, y: Tensor | None, bandwidth: float | Tensor, exclude_diagonal: bool,
                chunk_size: int | None) -> Tensor:
    """LMK_s of unit rows in one process: the fused kernel, or its plain form while compiling."""
    from objectives.kernels import sphere_log_mean_kernel

    if not torch.compiler.is_compiling():
        return sphere_log_mean_kernel(x, y, bandwidth, exclude_diagonal, chunk_size)
    n = x.shape[0]
    if exclude_diagonal and n < 2:
        raise ValueError(f"exclude_diagonal needs at least 2 samples, got {n}")
    pairs = n * (n - 1) if exclude_diagonal else n * (n if y is None else y.shape[0])
    inv = _inverse_square(bandwidth)
    return (plain.total_lse(x, y, inv, exclude_diagonal) - inv - math.log(pairs)).to(x.dtype)


def _rows_lmk(
    blocks: list[tuple[Tensor, int]],
    y: Tensor,
    bandwidth: float | Tensor,
    exclude_diagonal: bool,
    chunk_size: int | None,
) -> Tensor:
    """log mean_{i, j} k_s(x_i, y_j) over the rows of every block on every rank (unit rows).

    Each block is (local rows, offset): row i's diagonal partner is column i + offset of ``y``.
    Every row of ``y`` is a row of exactly one (rank, block), so the global row count is |y|.
    """
    from objectives.kernels import total_lse

    inv = _inverse_square(bandwidth)
    if torch.compiler.is_compiling():
        local = torch.stack([plain.total_lse(x, y, inv, exclude_diagonal, off) for x, off in blocks])
    else:
        local = torch.stack([total_lse(x, y, inv, exclude_diagonal, off, chunk_size) for x, off in blocks])
    totals = dist.gather_flat(local)
    n = y.shape[0]
    pairs = n * (n - 1) if exclude_diagonal else n * n
    # a device-held 1 / s^2 is a float64 0-dim tensor: keep the result in the embeddings' dtype
    return (torch.logsumexp(totals, dim=0) - inv - math.log(pairs)).to(totals.dtype)


def self_lmk(x: Tensor, rows: slice, bandwidth: float | Tensor, exclude_diagonal: bool,
             chunk_size: int | None) -> Tensor:
    """U_s(X) = LMK_s(X, X) of one modality's (gathered) rows, exact across ranks."""
    if not Objective.is_distributed():
        return _sphere_lmk(x, None, bandwidth, exclude_diagonal, chunk_size)
    return _rows_lmk([(x[rows], rows.start)], x, bandwidth, exclude_diagonal, chunk_size)


def self_lmks(z: Tensor, rows: slice, bandwidth: float | Tensor, exclude_diagonal: bool,
              chunk_size: int | None) -> Tensor:
    """(M,) U_s(X_m) of every modality: one batched node in one process without chunking (rows
    are unit vectors after Objective.prepare), else one :func:`self_lmk` per modality."""
    from objectives.kernels import sphere_self_log_mean_kernels

    if chunk_size is None and not Objective.is_distributed():
        return sphere_self_log_mean_kernels(z, bandwidth, exclude_diagonal, row_norm=UNIT_ROW_NORM_BOUND)
    return torch.stack([self_lmk(x, rows, bandwidth, exclude_diagonal, chunk_size) for x in z.unbind(0)])


def cross_lmk(x: Tensor, y: Tensor, rows: slice, bandwidth: float | Tensor, chunk_size: int | None) -> Tensor:
    """LMK_s(X, Y) for two equally sized modalities (diagonal included), exact across ranks."""
    if not Objective.is_distributed():
        return _sphere_lmk(x, y, bandwidth, False, chunk_size)
    return _rows_lmk([(x[rows], rows.start)], y, bandwidth, False, chunk_size)


def union_lmk(z: Tensor, rows: slice, bandwidth: float | Tensor, exclude_diagonal: bool,
              chunk_size: int | None) -> Tensor:
    """U_s over the union of all modalities' rows (M N rows), exact across ranks."""
    n_mod, n, d = z.shape
    union = z.reshape(n_mod * n, d)
    if not Objective.is_distributed():
        return _sphere_lmk(union, None, bandwidth, exclude_diagonal, chunk_size)
    blocks = [(z[m, rows], m * n + rows.start) for m in range(n_mod)]
    return _rows_lmk(blocks, union, bandwidth, exclude_diagonal, chunk_size)
