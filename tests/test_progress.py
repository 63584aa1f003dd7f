"""Progress lines of training (cadence in steps and seconds, terminal, quiet) and the TensorBoard writer."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from harness.cli import main as cli_main
from harness.experiment import data as hd
from harness.experiment.progress import Progress, ProgressOptions, TensorBoardUnavailable, tensorboard_writer

torch.set_num_threads(1)
LOGGER = "harness.experiment.progress"


class Clock:
    """A clock the test advances by hand."""

    def __init__(self, step_s: float = 0.01):
        self.t, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        return self.t

    def tick(self) -> None:
        self.t += self.step_s


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def run(progress: Progress, clock: Clock, steps: int, start: int = 0) -> None:
    for step in range(start + 1, steps + 1):
        clock.tick()
        progress.step(step, 1.0 / step, {"align": 0.5, "uniform": -2.0}, lr=1e-3, temperature=0.07)


def test_a_line_every_n_steps_and_at_the_last(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    p = Progress(95, batch_size=32, options=ProgressOptions(every_steps=10, every_seconds=1e9), clock=clock)
    run(p, clock, 95)
    got = lines(caplog)
    assert [m.split()[1] for m in got] == [f"{s}/95" for s in (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)]
    first = got[0]
    for part in ("loss 0.1000", "align 0.5", "uniform -2", "3200 samples/s", "lr 1.00e-03", "T 0.0700", "ETA 0:00:01"):
        assert part in first, (part, first)
    assert "ETA 0:00:00" in got[-1]


def test_default_cadence_is_twenty_lines(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    run(Progress(400, batch_size=8, options=ProgressOptions(every_seconds=1e9), clock=clock), clock, 400)
    assert len(lines(caplog)) == 20


def test_a_line_every_n_seconds_when_steps_are_slow(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock(step_s=25.0)
    p = Progress(1000, batch_size=8, options=ProgressOptions(every_steps=500, every_seconds=60.0), clock=clock)
    run(p, clock, 9)
    # 25 s per step: due at 75 s (step 3), then every 3 steps
    assert [m.split()[1] for m in lines(caplog)] == ["3/1000", "6/1000", "9/1000"]


def test_resumed_run_counts_from_its_start_step(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    p = Progress(100, batch_size=4, start_step=50, options=ProgressOptions(every_steps=25, every_seconds=1e9),
                 clock=clock)
    run(p, clock, 100, start=50)
    assert [m.split()[1] for m in lines(caplog)] == ["75/100", "100/100"]


def test_terminal_logs_evaluations_only_and_quiet_logs_nothing(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    term = Progress(20, batch_size=4, options=ProgressOptions(every_steps=1, terminal=True), clock=clock)
    run(term, clock, 20)
    term.evaluation(20, {"loss": 0.5, "val/R1_mean": 42.125})
    assert lines(caplog) == ["evaluation at step 20/20: loss 0.5000, val R@1 42.12%"]
    caplog.clear()
    quiet = Progress(20, batch_size=4, options=ProgressOptions(every_steps=1), enabled=False, clock=clock)
    run(quiet, clock, 20)
    quiet.evaluation(20, {"loss": 0.5})
    assert lines(caplog) == []


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    hd.build_synthetic(out, hd.SyntheticConfig(n_modalities=2, n_samples=200, n_classes=4, latent_dim=4,
                                               dims=[6, 5], seed=0))
    return out


def train_argv(data, out, *extra):
    return ["train", "--data", str(data), "--objective", "infonce", "--n-modalities", "2", "--steps", "12",
            "--batch-size", "32", "--dim", "4", "--hidden", "8", "--depth", "1", "--eval-every-steps", "6",
            "--out", str(out), *extra]


def test_train_logs_progress_off_a_terminal(small_data, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert cli_main(train_argv(small_data, tmp_path / "run", "--log-every", "4")) == 0
    got = lines(caplog)
    steps = [m for m in got if m.startswith("step ")]
    assert [m.split()[1] for m in steps] == ["4/12", "8/12", "12/12"]
    assert all(" T " in m and "samples/s" in m for m in steps)  # InfoNCE has a temperature
    assert [m.split()[3] for m in got if m.startswith("evaluation")] == ["6/12:", "12/12:"]
    caplog.clear()
    assert cli_main(train_argv(small_data, tmp_path / "quiet", "--quiet")) == 0
    assert lines(caplog) == []


def test_missing_tensorboard_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(TensorBoardUnavailable, match=r"unialign-bench\[tensorboard\]"):
        tensorboard_writer(str(tmp_path))


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    clock = Clock()
    p = Progress(10, batch_size=4, options=ProgressOptions(every_steps=5, tensorboard=str(tmp_path / "tb")),
                 clock=clock)
    run(p, clock, 10)
    p.evaluation(10, {"loss": 0.1, "val/R1_mean": 12.5, "val/holder": float("nan")})
    p.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/align", "train/lr", "train/temperature", "train/samples_per_s", "val/R1_mean"} <= tags
    assert "val/holder" not in tags  # non-finite values are left out
    assert [e.step for e in acc.Scalars("train/loss")] == [5, 10]
    assert acc.Scalars("val/R1_mean")[0].value == pytest.approx(12.5)
