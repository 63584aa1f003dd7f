"""Progress of a training run that can be watched in a batch log, and an optional TensorBoard writer.

The training loop calls :meth:`Progress.step` after every optimizer step and
:meth:`Progress.evaluation` after every evaluation point. On a terminal the loop shows its tqdm bar
and :class:`Progress` logs only the evaluation points; elsewhere (Snakemake, SLURM, a file) it logs
one line every ``every_steps`` optimizer steps or ``every_seconds`` seconds, whichever comes first,
and at the last step, through the ``logging`` logger ``harness.experiment.progress``::

    step 120/600 (20%) loss 3.8123 [align 0.41 uniform -2.77] 5312 samples/s lr 1.00e-03 T 0.0700 ETA 0:00:09

``T`` is the objective's temperature (1 / logit scale) where it has one. An evaluation line adds the
validation R@1. history.csv and steps.csv remain the record of a run; these lines and the
TensorBoard scalars (``--tensorboard DIR``: ``train/*`` at the logging cadence, ``val/*`` at every
evaluation point) are views of it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

TENSORBOARD_EXTRA = "tensorboard"


class ProgressOptionError(ValueError):
    """A reporting option out of range."""


class TensorBoardUnavailable(RuntimeError):
    """``--tensorboard`` was given but the optional dependency is not installed."""


@dataclass
class ProgressOptions:
    """How often a run reports (from the command line; not part of the run's configuration)."""

    every_steps: int | None = None  # None: total_steps // 20 (20 lines per run)
    every_seconds: float = 60.0
    tensorboard: str | None = None
    terminal: bool = False  # a tqdm bar is shown: log evaluation points only


def tensorboard_writer(log_dir: str):
    """A ``torch.utils.tensorboard.SummaryWriter`` for ``log_dir`` (imported here: the extra is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise TensorBoardUnavailable(
            f"--tensorboard needs the optional dependency tensorboard: pip install "
            f"'unialign-bench[{TENSORBOARD_EXTRA}]' ({exc})"
        ) from exc
    return SummaryWriter(log_dir=log_dir)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Rate-limited progress lines (and TensorBoard scalars) of one training run."""

    def __init__(self, total_steps: int, batch_size: int, start_step: int = 0,
                 options: ProgressOptions | None = None, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic, writer: Any = None):
        self.options = options or ProgressOptions()
        self.total = int(total_steps)
        self.batch_size = int(batch_size)
        self.enabled = enabled
        self.every_steps = max(1, self.options.every_steps or self.total // 20 or 1)
        self.clock = clock
        self.start_step = self.last_step = int(start_step)
        self.start_time = self.last_time = clock()
        # samples/s is measured since the last line or evaluation point (evaluations excluded)
        self.rate_step, self.rate_time = self.last_step, self.last_time
        self.writer = writer
        if writer is None and enabled and self.options.tensorboard:
            self.writer = tensorboard_writer(self.options.tensorboard)

    def _due(self, step: int, now: float) -> bool:
        return (step - self.last_step >= self.every_steps or now - self.last_time >= self.options.every_seconds
                or step == self.total)

    def step(self, step: int, loss: float, terms: Mapping[str, float] | None = None, lr: float | None = None,
             temperature: float | None = None) -> bool:
        """Report optimizer step ``step`` if the cadence is due; True when a line or scalars were written."""
        if not self.enabled:
            return False
        now = self.clock()
        if not self._due(step, now):
            return False
        done = step - self.start_step
        rate = self.batch_size * (step - self.rate_step) / max(now - self.rate_time, 1e-9)
        steps_per_s = done / max(now - self.start_time, 1e-9)
        eta = (self.total - step) / steps_per_s if steps_per_s > 0 else math.inf
        self.last_step, self.last_time = step, now
        self.rate_step, self.rate_time = step, now
        terms = dict(terms or {})
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            for k, v in terms.items():
                self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.add_scalar("train/samples_per_s", rate, step)
            if lr is not None:
                self.writer.add_scalar("train/lr", lr, step)
            if temperature is not None and math.isfinite(temperature):
                self.writer.add_scalar("train/temperature", temperature, step)
        if self.options.terminal:
            return True
        parts = [f"step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%) loss {loss:.4f}"]
        if terms:
            parts.append("[" + " ".join(f"{k} {v:.4g}" for k, v in terms.items()) + "]")
        parts.append(f"{rate:.0f} samples/s")
        if lr is not None:
            parts.append(f"lr {lr:.2e}")
        if temperature is not None and math.isfinite(temperature):
            parts.append(f"T {temperature:.4f}")
        parts.append(f"ETA {_duration(eta)}")
        log.info(" ".join(parts))
        return True

    def evaluation(self, step: int, row: Mapping[str, Any]) -> None:
        """Report an evaluation point (a history row): validation R@1 and loss; every val/* to TensorBoard."""
        if not self.enabled:
            return
        # the next samples/s excludes the evaluation's time
        self.rate_step, self.rate_time = step, self.clock()
        r1 = row.get("val/R1_mean")
        r1_txt = f"val R@1 {r1:.2f}%" if isinstance(r1, (int, float)) and math.isfinite(r1) else "val R@1 n/a"
        log.info("evaluation at step %d/%d: loss %.4f, %s", step, self.total, float(row.get("loss", math.nan)),
                 r1_txt)
        if self.writer is not None:
            for k, v in row.items():
                if k.startswith("val/") and isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(k, v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def add_arguments(p) -> None:
    """The reporting options of ``harness train``."""
    from harness.cli import positive_float, positive_int

    p.add_argument("--log-every", type=positive_int, default=None, metavar="STEPS",
                   help="off a terminal: a progress line every STEPS optimizer steps (default: 20 lines per run)")
    p.add_argument("--log-seconds", type=positive_float, default=60.0, metavar="S",
                   help="off a terminal: a progress line at least every S seconds (default 60)")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help=f"also write TensorBoard scalars to DIR (needs the '{TENSORBOARD_EXTRA}' extra)")


def options_from_args(args, terminal: bool) -> ProgressOptions:
    every = getattr(args, "log_every", None)
    if every is not None and every < 1:
        raise ProgressOptionError(f"--log-every must be >= 1, got {every}")
    seconds = float(getattr(args, "log_seconds", 60.0))
    if not (seconds > 0):
        raise ProgressOptionError(f"--log-seconds must be > 0, got {seconds}")
    return ProgressOptions(every_steps=every, every_seconds=seconds,
                           tensorboard=getattr(args, "tensorboard", None), terminal=terminal)
