"""Training budget by convergence: the stopping rule on planted curves, and on real runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from harness.cli import main as cli_main
from harness.experiment.train import convergence_stop
from tests.test_train import train_args

torch.set_num_threads(1)


def naive_stop(values, patience, delta):
    """Reference: at point i, stop when none of the last ``patience`` points beat the best before
    them by more than ``delta`` (restarting the window after every improvement)."""
    if patience is None:
        return None
    for i in range(len(values)):
        if i < patience:
            continue
        start = i - patience + 1
        window, before = values[start:i + 1], [v for v in values[:start] if v == v]
        if not before:
            continue
        # the best at the window's start, counting only improvements by more than delta
        ref = None
        for v in values[:start]:
            if v == v and (ref is None or v > ref + delta):
                ref = v
        if all(not (w == w and w > ref + delta) for w in window):
            # the first such i is the stop
            return i
    return None


@pytest.mark.parametrize("curve,patience,delta,expected", [
    ([1, 2, 3, 4, 5], 2, 0.0, None),             # still rising: the cap is reached
    ([1, 5, 5, 5, 9], 2, 0.0, 3),                # flat for 2 points after the best: stop at index 3
    ([1, 5, 5.5, 5.8, 9], 2, 1.0, 3),            # rises smaller than delta do not count
    ([1, 5, 5.5, 6.2, 6.4, 6.5], 2, 1.0, 5),     # 6.2 beats 5 by more than 1: the window restarts
    ([float("nan"), float("nan"), 3, 3], 1, 0.0, 3),   # no stop before a first finite value
    ([3, 3, 3], None, 0.0, None),                # no patience: never stops
    ([3, 2, 1, 0], 3, 0.0, 3),
])
def test_convergence_stop_on_planted_curves(curve, patience, delta, expected):
    assert convergence_stop(curve, patience, delta) == expected
    assert naive_stop(curve, patience, delta) == expected


def test_convergence_stop_matches_the_reference_on_random_curves():
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        n = int(torch.randint(1, 12, (1,), generator=g))
        curve = (torch.randint(0, 6, (n,), generator=g).float() * 0.5).tolist()
        patience = int(torch.randint(1, 4, (1,), generator=g))
        delta = float(torch.randint(0, 3, (1,), generator=g)) * 0.5
        assert convergence_stop(curve, patience, delta) == naive_stop(curve, patience, delta), (curve, patience, delta)


def _run(data, out, **kw):
    assert cli_main(train_args(data, out, **{"--steps": 12, "--epochs": None, "--eval-every-steps": 2, **kw})) == 0
    return json.loads((out / "train.json").read_text()), pd.read_csv(out / "history.csv")


def test_patience_stops_early_and_records_it(tiny_data, tmp_path):
    full, h_full = _run(tiny_data, tmp_path / "full")
    assert full["cap_hit"] is True and full["stopped_step"] == full["cap_steps"] == 12
    # a delta no run can beat: the first point is the best, the run stops `patience` points later
    stopped, h = _run(tiny_data, tmp_path / "stop", **{"--patience": 2, "--min-delta": 1000})
    assert stopped["cap_hit"] is False
    assert stopped["stopped_step"] == stopped["steps"] == 6 and stopped["cap_steps"] == 12
    assert stopped["patience"] == 2 and stopped["min_delta"] == 1000
    # the stopped run is the first steps of the full one, bit for bit
    pd.testing.assert_frame_equal(h[["step", "loss", "val/R1_mean"]],
                                  h_full[["step", "loss", "val/R1_mean"]].iloc[:3])
    # its last point carries the conflict keys of a run's last point
    assert any(c.startswith("val/conflict/") and pd.notna(h[c].iloc[-1]) for c in h.columns)


def test_a_stopped_run_resumes_to_the_same_stop(tiny_data, tmp_path):
    out = tmp_path / "r"
    first, h1 = _run(tiny_data, out, **{"--patience": 2, "--min-delta": 1000})
    (out / "train.json").unlink()
    (out / "model.pt").unlink()
    again, h2 = _run(tiny_data, out, **{"--patience": 2, "--min-delta": 1000})
    assert again["stopped_step"] == first["stopped_step"] == 6 and again["resumed_from_step"] == 6
    pd.testing.assert_frame_equal(h1, h2)
    # and rerunning the finished run does nothing
    third, _ = _run(tiny_data, out, **{"--patience": 2, "--min-delta": 1000})
    assert third["stopped_step"] == 6


def test_patience_and_delta_errors(tiny_data, tmp_path, capsys):
    assert cli_main(train_args(tiny_data, tmp_path / "x", **{"--patience": 0})) == 1
    assert "--patience 0" in capsys.readouterr().err
    assert cli_main(train_args(tiny_data, tmp_path / "y", **{"--min-delta": -1})) == 1
    assert "--min-delta -1" in capsys.readouterr().err
