"""Tuning saturation (harness.report.tuning): best-so-far curves, what a search with twice the
trials buys, and the claims note it leaves on the retrieval rows."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from harness.plan import draw_trials
from harness.report import tuning

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _trials(dataset: str, variant: str, values: list[float], params: list[dict] | None = None) -> pd.DataFrame:
    params = params or [{"temperature": 0.1 * (i + 1), "fixed": 1} for i in range(len(values))]
    return pd.DataFrame({"dataset": dataset, "variant": variant, "objective": variant, "trial": range(len(values)),
                         "params": [json.dumps(p, sort_keys=True) for p in params], "split": "val",
                         "metric": "retrieval/R1/mean", "value": values, "selected": False})


def test_best_so_far_is_the_running_maximum_and_skips_non_finite_scores():
    assert tuning.best_so_far([3.0, 1.0, 5.0, 4.0]) == [3.0, 3.0, 5.0, 5.0]
    got = tuning.best_so_far([math.nan, 2.0, math.inf, 1.0])
    assert math.isnan(got[0]) and got[1:] == [2.0, 2.0, 2.0]


def test_searched_names_the_parameters_that_vary():
    params = [json.dumps({"a": 1, "b": x, "c": "off"}) for x in (0.1, 0.2)]
    assert tuning.searched(params) == ["b"]


def test_saturation_compares_the_selected_score_at_both_budgets():
    main = pd.concat([_trials("syn", "infonce", [70.0, 72.0]), _trials("syn", "unialign", [50.0, 60.0])])
    doubled = pd.concat([_trials("syn", "infonce", [70.0, 72.0, 71.0, 72.5]),
                         _trials("syn", "unialign", [50.0, 60.0, 58.0, 64.0])])
    table = tuning.saturation(main, {"trials_x2": doubled}, delta=1.0).set_index("variant")
    assert table.loc["infonce", "gain"] == pytest.approx(0.5) and str(table.loc["infonce", "saturated"]) == "True"
    assert table.loc["unialign", "gain"] == pytest.approx(4.0) and str(table.loc["unialign", "saturated"]) == "False"
    assert table.loc["unialign", "best_so_far"] == "50 60 60 64" and table.loc["unialign", "prefix_matches"]
    assert table.loc["unialign", "searched"] == "temperature"
    # a cell no longer search covers is not checked, never called saturated
    alone = tuning.saturation(_trials("uci", "gram", [1.0, 2.0]), {"trials_x2": doubled}, 1.0)
    assert alone.loc[0, "saturated"] == "not checked" and math.isnan(alone.loc[0, "gain"])
    # a longer search that does not start with this one's trials is flagged
    other = _trials("syn", "infonce", [10.0, 11.0, 12.0, 80.0])
    flagged = tuning.saturation(_trials("syn", "infonce", [70.0, 72.0]), {"x": other}, 1.0)
    assert str(flagged.loc[0, "prefix_matches"]) == "False"
    note = tuning.note(table.reset_index(), "syn", ("unialign", "infonce"))
    assert note == "tuning not saturated: unialign +4 with 4 trials (searched: temperature)"
    assert tuning.note(table.reset_index(), "other", ("unialign", "infonce")) == ""


def test_every_cell_is_checked_inside_the_sweep_by_its_own_first_half():
    """No doubled search needed: the first half of the sequence is the half-budget search."""
    cells = pd.concat([_trials("syn", "gram", [10.0, 12.0, 12.5, 12.0]),      # +0.5 in its second half
                       _trials("syn", "unialign", [50.0, 49.0, 51.0, 58.0]),  # +8 in its second half
                       _trials("syn", "symile", [7.0])])                      # one trial: no half
    table = tuning.saturation(cells, {}, delta=1.0).set_index("variant")
    assert table.loc["gram", "trials_half"] == 2 and table.loc["gram", "best_half"] == 12.0
    assert table.loc["gram", "gain_half"] == pytest.approx(0.5) and str(table.loc["gram", "saturated_half"]) == "True"
    assert table.loc["unialign", "gain_half"] == pytest.approx(8.0)
    assert str(table.loc["unialign", "saturated_half"]) == "False"
    assert table.loc["symile", "saturated_half"] == "not checked" and math.isnan(table.loc["symile", "gain_half"])
    # without a doubled search the note falls back to the half check; a doubled search decides where it exists
    assert tuning.note(table.reset_index(), "syn", ("unialign",)) == (
        "tuning not saturated: unialign +8 from 2 to 4 trials (searched: temperature)")
    doubled = _trials("syn", "unialign", [50.0, 49.0, 51.0, 58.0, 57.0, 58.2, 50.0, 40.0])
    both = tuning.saturation(cells, {"trials_x2": doubled}, delta=1.0)
    assert str(both.set_index("variant").loc["unialign", "saturated"]) == "True"
    assert tuning.note(both, "syn", ("unialign",)) == ""


def test_the_first_trials_of_a_doubled_search_are_this_searchs():
    """The saturation check rests on this: the draws are one seeded stream."""
    space = {"temperature": {"low": 0.01, "high": 1.0, "log": True}, "lam": [0.5, 1.0]}
    four = draw_trials(space, {"fixed": 1}, 4, 0, "unialign")
    eight = draw_trials(space, {"fixed": 1}, 8, 0, "unialign")
    assert eight[:4] == four and eight[4:] != four


def test_the_draws_cover_a_two_parameter_space_as_evenly_as_one():
    """Quasi-random (scrambled Sobol) draws: T = 4 or 8 trials (powers of 2; 8 is the default) put one
    value in each T-th of every searched range, and one point in each cell of every a x b grid of a
    2-D space with a * b = T (quadrants at 4; 2 x 4 and 4 x 2 at 8); independent draws would not
    guarantee it. (Values are rounded to 3 significant digits, so a boundary gets a slack of 0.01.)"""
    import math

    slack = 0.01

    def position(value, dist):  # where a value lies in its log range, 0..1
        lo, hi = math.log(dist["low"]), math.log(dist["high"])
        return (math.log(value) - lo) / (hi - lo)

    def one_per_cell(xs, cells):
        return all(j - slack <= x <= j + 1 + slack for j, x in enumerate(sorted(cells * x for x in xs)))

    one = {"temperature": {"low": 0.01, "high": 1.0, "log": True}}
    two = {"bandwidth": {"low": 0.1, "high": 2.0, "log": True}, "lam_uni": {"low": 0.1, "high": 10.0, "log": True}}
    for n, grids in ((4, [(2, 2)]), (8, [(2, 4), (4, 2)])):
        for seed in range(5):
            for variant in ("infonce", "unialign", "cs_aligner"):
                trials = draw_trials(one, {}, n, seed, variant)
                assert one_per_cell([position(t["temperature"], one["temperature"]) for t in trials], n), trials
                trials = draw_trials(two, {}, n, seed, variant)
                pts = [(position(t["bandwidth"], two["bandwidth"]), position(t["lam_uni"], two["lam_uni"]))
                       for t in trials]
                assert one_per_cell([x for x, _ in pts], n) and one_per_cell([y for _, y in pts], n), (n, seed, variant)
                for cols, rows in grids:
                    for a in range(cols):
                        for b in range(rows):
                            assert any(a - slack <= cols * x <= a + 1 + slack and b - slack <= rows * y <= b + 1 + slack
                                       for x, y in pts), (n, seed, variant, a, b, trials)
    # independent uniform draws put two of four trials in one quarter most of the time
    import numpy as np

    rng = np.random.default_rng(0)
    assert np.mean([len({int(4 * u) for u in rng.uniform(size=4)}) < 4 for _ in range(1000)]) > 0.8
    # seeded: the same call gives the same trials; another seed or variant others
    assert draw_trials(two, {}, 4, 0, "unialign") == draw_trials(two, {}, 4, 0, "unialign")
    assert draw_trials(two, {}, 4, 1, "unialign") != draw_trials(two, {}, 4, 0, "unialign")
    assert draw_trials(two, {}, 4, 0, "other") != draw_trials(two, {}, 4, 0, "unialign")
    # a list is a choice, every option reachable; no searched parameter leaves the base alone
    picks = {t["lam"] for t in draw_trials({"lam": [0.5, 1.0]}, {}, 4, 0, "v")}
    assert picks == {0.5, 1.0}
    assert draw_trials({}, {"fixed": 1}, 2, 0, "v") == [{"fixed": 1}, {"fixed": 1}]


def test_bad_input_names_the_option(tmp_path):
    with pytest.raises(tuning.SaturationInputError, match="--tuning: no tuning table"):
        tuning.saturation(pd.DataFrame({"dataset": ["a"]}), {}, 1.0)


def test_cli_writes_the_table_and_the_figure(tmp_path):
    main, doubled = tmp_path / "t.csv", tmp_path / "t8.csv"
    _trials("syn", "unialign", [50.0, 60.0]).to_csv(main, index=False)
    _trials("syn", "unialign", [50.0, 60.0, 70.0, 65.0]).to_csv(doubled, index=False)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness", "tuning-saturation", "--tuning", str(main),
                           "--doubled", f"trials_x2={doubled}", "--delta", "2", "--out-csv", str(out / "s.csv"),
                           "--out-fig", str(out / "s.png")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out / "s.csv")
    assert table.loc[0, "gain"] == pytest.approx(10.0) and not table.loc[0, "saturated"]
    assert (out / "s.png").stat().st_size > 0 and (out / "s.pdf").stat().st_size > 0
    bad = subprocess.run([sys.executable, "-m", "harness", "tuning-saturation", "--tuning", str(main),
                          "--delta", "-1"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--delta must be a finite number >= 0, got -1.0" in bad.stderr


def test_claims_put_the_note_on_each_retrieval_row_for_its_own_pair(tmp_path):
    """The primary rows name the method's open tuning, the full method's (secondary) rows its own."""
    from harness.report import claims
    from tests.test_claims_table import _cfg, _generation, _history, _summary

    cfg = _cfg(method_tuple="unialign_t")
    table = claims.judge(_summary(), _history(), _generation(), cfg)
    dataset = table[(table["claim"] == "5") & (table["role"] == "primary")]["dataset"].iloc[0]
    method, baseline = cfg["config"]["report"]["method"], cfg["config"]["report"]["baseline"]
    main = pd.concat([_trials(dataset, method, [50.0, 60.0]), _trials(dataset, baseline, [70.0, 71.0]),
                      _trials(dataset, "unialign_t", [40.0, 41.0])])
    doubled = pd.concat([_trials(dataset, method, [50.0, 60.0, 66.0, 61.0]),
                         _trials(dataset, baseline, [70.0, 71.0, 70.0, 70.0]),
                         _trials(dataset, "unialign_t", [40.0, 41.0, 41.0, 50.0])])
    sat = tuning.saturation(main, {"trials_x2": doubled}, 1.0)
    noted = claims._with_tuning_notes(table, sat, cfg)
    retrieval = noted[(noted["claim"] == "5") & (noted["dataset"] == dataset)]
    rows = retrieval[retrieval["role"] == "primary"]
    assert rows["note"].str.contains(f"tuning not saturated: {method} \\+6").all()
    assert not rows["note"].str.contains("unialign_t").any()
    tuple_rows = retrieval[retrieval["comparison"].str.startswith("UniAlign-T")]
    assert len(tuple_rows) and tuple_rows["note"].str.contains("tuning not saturated: unialign_t \\+9").all()
    assert not tuple_rows["note"].str.contains(f"{method} \\+6").any()
    others = noted[noted["claim"] != "5"]
    assert not others["note"].astype(str).str.contains("tuning not saturated").any()
    text = claims.render_markdown(noted, 0.95, saturation=sat)
    assert "## Tuning saturation" in text and "| **no** |" in text


def test_the_hoelder_rows_quote_the_measured_calibration(tmp_path):
    """Claims 3 and 7 carry the validate-estimators calibration at the embedding dimension; a
    validation file without rows for it is an error naming the option."""
    from harness.instruments.validation import calibration
    from harness.report import claims
    from tests.test_claims_table import _cfg, _generation, _history, _summary

    notes = {"fixed": "fixed-rule sentence", "median": "median-rule sentence"}
    table = claims.judge(_summary(), _history(), _generation(), _cfg(), estimator_notes=notes)
    assert table[table["id"] == "3"]["note"].str.contains("fixed-rule sentence").all()
    assert table[table["id"] == "7"]["note"].str.contains("median-rule sentence").all()
    assert not table[table["id"] == "5"]["note"].str.contains("rule sentence").any()
    rows = [dict(estimator="resubstitution", M=2, gamma=2.0, d=8, B=50, draw=k, h=1.0, s=8 ** -0.5, scale="embedding",
                 bandwidth_rule=rule, estimate=0.05 * (1 + 0.1 * k), truth=0.1, truth_widened=0.04,
                 ratio=0.5 * (1 + 0.1 * k), ratio_widened=1.25, rel_error=0.0, rel_error_widened=0.0, seconds=0.0,
                 grid="sweep") for k in range(3) for rule in ("fixed", "median")]
    csv = tmp_path / "validation.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    assert calibration(csv, 8, "fixed") is not None
    cfg = _cfg()
    cfg["config"].setdefault("training", {})["dim"] = 8
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    _summary().to_csv(tmp_path / "summary.csv", index=False)
    _history().to_csv(tmp_path / "history.csv", index=False)
    base = [sys.executable, "-m", "harness", "claims", "--config", str(tmp_path / "config.json"),
            "--summary", str(tmp_path / "summary.csv"), "--history", str(tmp_path / "history.csv"),
            "--out-md", str(tmp_path / "c.md"), "--out-csv", str(tmp_path / "c.csv")]
    proc = subprocess.run(base + ["--estimator-validation", str(csv)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = pd.read_csv(tmp_path / "c.csv")
    assert out[out["id"] == "3"]["note"].str.contains("KDE estimator at d = 8").all()
    empty = tmp_path / "empty.csv"
    pd.DataFrame(rows).assign(estimator="exact").to_csv(empty, index=False)
    bad = subprocess.run(base + ["--estimator-validation", str(empty)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and f"--estimator-validation: {empty} holds no resubstitution rows" in bad.stderr
