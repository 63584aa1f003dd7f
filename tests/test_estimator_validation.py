"""validate-estimators on the sweep's scale: the grid's truths, the calibration statement, the CLI and
the configuration."""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.instruments import validation as ev
from harness.instruments.divergence import FIXED_BANDWIDTH, gaussian_holder_closed_form

ROOT = Path(__file__).resolve().parents[1]
T975_4 = 2.7764451051977987  # Student t quantile 0.975 with 4 degrees of freedom


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    return parser.parse_args(argv)


def test_closed_form_by_hand():
    # M = 2, means +-0.3 e1, s^2 = 1/4, gamma = 2: 2 / (2 * 2 * 0.25) * (0.09 + 0.09) = 0.36
    assert gaussian_holder_closed_form([[0.3, 0.0], [-0.3, 0.0]], 0.25, 2) == pytest.approx(0.36)


def test_sweep_scale_grid_rows_have_the_right_truth():
    cfg = dict(ev.SWEEP, dims=[4], modalities=[2, 3], n_samples=50, draws=2, name="t")
    rows = pd.DataFrame(ev.run_grid(cfg, seed=0, target=0.1, log=lambda *_: None))
    assert set(rows.scale) == {"embedding"} and set(rows.grid) == {"t"}
    assert set(rows.bandwidth_rule) == {f"fixed h={FIXED_BANDWIDTH:g}", "median"}
    # exact estimator only where it is O(B^2): M = 2
    assert set(rows[rows.estimator == "exact"].M) == {2}
    assert len(rows) == 2 * 2 * (2 + 1)  # draws x rules x (M=2: both estimators, M=3: resubstitution)
    assert rows.s.tolist() == pytest.approx([0.5] * len(rows))  # s = 1/sqrt(d)
    fixed = rows[rows.bandwidth_rule.str.startswith("fixed")]
    assert fixed.h.tolist() == pytest.approx([FIXED_BANDWIDTH] * len(fixed))  # absolute, not h * s
    assert rows.truth.tolist() == pytest.approx([0.1] * len(rows))
    # D_H is proportional to 1/sigma^2 at fixed means: the widened truth is truth * s^2 / (s^2 + h^2)
    by_hand = rows.truth * 0.25 / (0.25 + rows.h ** 2)
    assert rows.truth_widened.tolist() == pytest.approx(by_hand.tolist())
    assert rows.ratio.tolist() == pytest.approx((rows.estimate / rows.truth).tolist())


def test_sweep_scale_samples_match_their_truth():
    # the exact KDE estimator converges to the widened closed form: it does only if the samples are
    # drawn with the s the truth assumes (s = 1/sqrt(d) = 0.5 here; s = 1 would give ~4x less)
    cfg = dict(ev.SWEEP, dims=[4], modalities=[2], factors=["1.0"], n_samples=1500, draws=3, name="t")
    rows = pd.DataFrame(ev.run_grid(cfg, seed=1, target=0.5, log=lambda *_: None))
    exact = rows[rows.estimator == "exact"]
    assert exact.h.tolist() == pytest.approx([0.5] * 3)  # factor times s
    assert 0.75 < ev.log_ratio_interval(exact.ratio_widened)["ratio"] < 1.33


def _hand_frame(ratios: list[float], d: int = 32, rule: str = "fixed h=1", scale: str = "embedding",
                n_mod: int = 2) -> pd.DataFrame:
    return pd.DataFrame([dict(estimator="resubstitution", M=n_mod, d=d, B=300, draw=i, h=1.0,
                              bandwidth_rule=rule, ratio=r, ratio_widened=r * 33.0, scale=scale)
                         for i, r in enumerate(ratios)])


def test_calibration_geometric_mean_and_t_interval_by_hand():
    ratios = [0.8, 1.0, 1.25, 1.0, 1.0]
    # logs: -a, 0, a, 0, 0 with a = log 1.25: mean 0, sd a / sqrt(2)
    a = math.log(1.25)
    half = T975_4 * (a / math.sqrt(2)) / math.sqrt(5)
    other = _hand_frame([40.0] * 5, rule="median")  # another rule and a unit-scale grid: both ignored
    unit = _hand_frame([100.0, 90.0], scale="unit")
    cal = ev.calibration(pd.concat([_hand_frame(ratios), other, unit]), 32, "fixed")
    assert cal["ratio"] == pytest.approx(1.0)
    assert cal["lo"] == pytest.approx(math.exp(-half)) and cal["hi"] == pytest.approx(math.exp(half))
    assert cal["draws"] == 5 and cal["B"] == 300 and cal["M"] == [2] and cal["d_used"] == 32
    assert cal["calibrated"] is True
    assert "d = 32" in cal["note"] and "calibrated" in cal["note"]

    far = ev.calibration(_hand_frame([16.0, 20.0, 25.0, 20.0, 20.0]), 32, "fixed")
    assert far["ratio"] == pytest.approx(20.0) and far["calibrated"] is False
    assert "not calibrated" in far["note"]
    # a centre inside the band but an interval that leaves it is not calibrated either
    wide = ev.calibration(_hand_frame([1 / 3, 1.0, 3.0, 1.0, 1.0]), 32, "fixed")
    assert wide["ratio"] == pytest.approx(1.0) and wide["calibrated"] is False


def test_calibration_nearest_d_median_rule_and_missing_file(tmp_path):
    df = pd.concat([_hand_frame([0.04, 0.05, 0.06], d=16, rule="median"),
                    _hand_frame([0.02, 0.03, 0.02], d=64, rule="median")])
    cal = ev.calibration(df, 30, "median")
    assert cal["d_used"] == 16 and "nearest to 30" in cal["note"]
    assert cal["ratio"] == pytest.approx((0.04 * 0.05 * 0.06) ** (1 / 3))
    assert ev.calibration(tmp_path / "absent.csv", 32, "fixed") is None
    (tmp_path / "empty.csv").write_text("")
    assert ev.calibration(tmp_path / "empty.csv", 32, "fixed") is None
    assert ev.calibration(df, 32, "fixed") is None  # no fixed-bandwidth rows
    with pytest.raises(ValueError, match="bandwidth"):
        ev.calibration(df, 32, "silverman")


def test_cli_sweep_grid_writes_csv_png_pdf(tmp_path):
    csv, png = tmp_path / "v.csv", tmp_path / "v.png"
    args = _parse(["--preset", "sweep", "--dims", "4", "--include-dim", "8", "--modalities", "2", "3",
                   "--n-samples", "40", "--draws", "2", "--out-csv", str(csv), "--out-fig", str(png)])
    assert ev.main(args) == 0
    df = pd.read_csv(csv)
    assert set(df.d) == {4, 8} and set(df.M) == {2, 3} and set(df.scale) == {"embedding"}
    columns = {"estimate", "truth", "truth_widened", "h", "bandwidth_rule", "rel_error", "grid", "scale"}
    assert columns <= set(df.columns)
    assert df.truth.iloc[0] == pytest.approx(ev.SWEEP["target"])
    assert png.stat().st_size > 0 and (tmp_path / "v.pdf").stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    cal = ev.calibration(csv, 8, "fixed")
    assert cal["d_used"] == 8 and cal["draws"] == 2 and cal["M"] == [2, 3] and cal["B"] == 40


@pytest.mark.parametrize("argv, field", [
    (["--draws", "0"], "validation.draws"),
    (["--dims", "0", "4"], "validation.dims"),
    (["--modalities", "1"], "validation.modalities"),
    (["--n-samples", "1"], "validation.n_samples"),
    (["--target", "-1"], "validation.target"),
    (["--factors", "wide"], "validation.factors"),
])
def test_bad_cli_values_name_the_config_field(argv, field):
    with pytest.raises(SystemExit, match=field.replace(".", r"\.")):
        ev.resolve_config(_parse(["--preset", "sweep", *argv]))


def _merged(overlay: dict) -> dict:
    from harness.plan import _merge_into

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    _merge_into(cfg, overlay)
    return cfg


@pytest.mark.parametrize("validation, field", [
    ({"draws": 0}, "validation.draws"),
    ({"dims": [0]}, "validation.dims.0"),
    ({"modalities": [1, 2]}, "validation.modalities.0"),
    ({"n_samples": 1}, "validation.n_samples"),
    ({"preset": "huge"}, "validation.preset"),
    ({"target": 0}, "validation.target"),
])
def test_bad_config_values_fail_the_schema_naming_the_field(validation, field):
    import jsonschema

    from harness.plan import schema_error_message

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(_merged({"validation": validation}), schema)
    assert f"`{field}`" in schema_error_message(err.value)


def test_shipped_configs_pass_the_schema():
    import jsonschema

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    jsonschema.validate(copy.deepcopy(base), schema)
    assert base["training"]["dim"] in base["validation"]["dims"]
    jsonschema.validate(_merged(yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())), schema)


@pytest.mark.parametrize("block, expected", [
    ({"preset": "sweep", "dims": [4, 64], "draws": 3}, ["--preset", "sweep", "--seed", "0", "--dims", "4", "64",
                                                        "--include-dim", "32", "--draws", "3"]),
    ({"quick": True}, ["--preset", "quick", "--seed", "0"]),
    ({"quick": False, "seed": 2}, ["--preset", "default", "--seed", "2"]),
    ({}, ["--preset", "sweep", "--seed", "0", "--include-dim", "32"]),
])
def test_the_plan_turns_the_validation_block_into_arguments(block, expected):
    from harness.plan import Plan

    plan = Plan({"validation": block, "training": {"dim": 32}, "datasets": {}, "variants": {},
                 "studies": {"main": {"variants": [], "ms": [2], "datasets": []}}, "seeds": [0],
                 "split_seeds": [0]}, ".")
    assert plan.validation_args() == expected
