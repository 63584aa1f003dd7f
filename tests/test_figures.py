"""Figures: shared style, separated panels, chance level, inputs named on the command line, errors."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from harness.experiment import keys
from harness import style
from harness.report import FIGURES, figures

CFG = {"config": {"report": {"baseline": "infonce", "method": "unialign"},
                  "studies": {"main": {"variants": ["infonce", "unialign", "gram"], "datasets": ["syn"],
                                       "ms": [2, 3, 4]}},
                  "variants": {"infonce": {"label": "InfoNCE"}, "unialign": {"label": "UniAlign"},
                               "gram": {"label": "GRAM"}}},
       "seeds": [0, 1, 2], "cells": []}


def summary(n_eval: int | None = 250) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for variant, zeta in (("infonce", 0.95), ("unialign", 0.97), ("gram", 0.2)):
        for m in (2, 3, 4):
            for seed in (0, 1, 2):
                row = {"dataset": "syn", "variant": variant, "label": variant, "objective": variant, "M": m,
                       "seed": seed, keys.ZETA: zeta + 0.002 * rng.normal(), keys.CHI: 0.1 * m,
                       keys.HOLDER_MEDIAN: 0.01 * m, keys.GAP: 0.1, keys.R1_MEAN: 40 - 5 * m + rng.normal(),
                       keys.ALIGNMENT: 0.5, keys.UNIFORMITY: -2.0}
                if n_eval is not None:
                    row[keys.N_EVAL] = n_eval
                rows.append(row)
    return pd.DataFrame(rows)


def history() -> pd.DataFrame:
    rows = [{"dataset": "syn", "variant": v, "M": 3, "seed": s, "step": step, "epoch": step / 10,
             keys.VAL_HOLDER: 0.1 / step, keys.VAL_PROXY: 16.0 + 1.0 / step}
            for v in ("infonce", "unialign") for s in (0, 1) for step in (10, 20, 30)]
    return pd.DataFrame(rows)


def run_main(tmp_path, *argv) -> int:
    p = argparse.ArgumentParser()
    figures.add_arguments(p)
    return figures.main(p.parse_args(["--config", str(tmp_path / "config.json"), "--out-dir",
                                      str(tmp_path / "figs"), *argv]))


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CFG))
    summary().to_csv(tmp_path / "summary.csv", index=False)
    history().to_csv(tmp_path / "history.csv", index=False)
    return tmp_path


def test_summary_and_history_figures_drawn(inputs):
    names = ["conflicts_vs_m", "divergence_gap_vs_m", "retrieval_vs_m", "alignment_uniformity", "proxy_vs_divergence"]
    assert run_main(inputs, "--summary", str(inputs / "summary.csv"), "--history", str(inputs / "history.csv"),
                    "--only", *names) == 0
    for name in names:
        for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            assert (inputs / "figs" / f"{name}.{ext}").read_bytes()[:4] == magic


@pytest.mark.parametrize("argv, pattern", [
    (["--only", "retrieval_vs_m"], "--summary is required"),
    (["--only", "projection_pca"], "--projection VARIANT=RUN_DIR"),
    (["--only", "projection_pca", "--projection", "infonce=nowhere"], r"missing nowhere/model\.pt"),
    (["--only", "generated_samples", "--samples", "unialign=nowhere"], r"missing nowhere/samples\.npz"),
    (["--only", "generated_samples", "--samples", "nowhere"], "expected VARIANT=PATH"),
])
def test_missing_inputs_are_named(inputs, capsys, argv, pattern):
    assert run_main(inputs, *argv) == 1
    assert not (inputs / "figs").exists() or not any((inputs / "figs").iterdir())  # no placeholder drawn
    import re

    assert re.search(pattern, capsys.readouterr().err)


def test_missing_gallery_size_or_metric_fails_naming_the_column(inputs, capsys):
    summary(n_eval=None).to_csv(inputs / "s.csv", index=False)
    assert run_main(inputs, "--summary", str(inputs / "s.csv"), "--only", "retrieval_vs_m") == 1
    assert f"'{keys.N_EVAL}'" in capsys.readouterr().err
    summary().drop(columns=[keys.CHI]).to_csv(inputs / "s.csv", index=False)
    assert run_main(inputs, "--summary", str(inputs / "s.csv"), "--only", "conflicts_vs_m") == 1
    assert keys.CHI in capsys.readouterr().err


def test_far_objectives_get_their_own_panel():
    assert figures.separated({"infonce": 0.95, "unialign": 0.97, "a": 0.93, "gram": 0.2, "symile": 0.1},
                             ["infonce", "unialign"]) == {"gram", "symile"}
    # evenly spread objectives stay together; so do two groups that split the compared pair
    assert figures.separated({"infonce": 48, "unialign": 21, "a": 40, "b": 32, "gram": 9, "symile": 2},
                             ["infonce", "unialign"]) == set()
    assert figures.separated({"infonce": 0.9, "x": 0.95, "unialign": 0.1, "y": 0.05},
                             ["infonce", "unialign"]) == set()


def test_one_style_per_objective_everywhere():
    main = ["infonce", "infonce_anchor", "align_uniform", "unialign", "unialign_default", "unialign_tuple",
            "cs_aligner", "gram", "symile"]
    colours = [style.series_style(v)["color"] for v in main]
    assert len(set(colours)) == len(main)
    assert style.series_style("gram") == style.series_style("gram")
    # an unknown name gets a fixed choice from its CRC-32, the same in every process
    import zlib

    h = zlib.crc32(b"my_new_objective")
    assert style.series_style("my_new_objective")["color"] == style._FALLBACK_COLOURS[h % len(style._FALLBACK_COLOURS)]
    assert style.display_name("naive_clip_loop") != "naive_clip_loop"
    assert style.display_name("unialign[chunked]") == "UniAlign [chunked]"


def test_chance_level():
    assert style.chance_recall(1, 500) == pytest.approx(0.2)
    assert style.chance_recall(10, 5) == 100.0
    with pytest.raises(ValueError):
        style.chance_recall(1, 0)


def test_save_is_atomic_and_byte_stable(tmp_path):
    plt = style.pyplot()
    out = []
    for _ in range(2):
        fig, ax = plt.subplots()
        ax.plot([1, 2], [3, 4])
        out.append([p.read_bytes() for p in style.save(fig, tmp_path / "f")])
    assert out[0] == out[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]  # no temporary files left


def test_generated_samples_from_arrays(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CFG))
    args = []
    for variant in ("infonce", "unialign"):
        d = tmp_path / variant
        d.mkdir()
        np.savez(d / "samples.npz", samples=np.random.default_rng(0).random((4, 3, 20)),
                 conditions=np.array(["real", "anchor", "from1", "interp1+2"]), target_shape=np.array([4, 5]),
                 dataset=np.array("uci"), modality_names=np.array(["pix", "fou", "kar"]), n_modalities=np.array(3),
                 seed=np.array(0))
        args.append(f"{variant}={d}")
    assert run_main(tmp_path, "--only", "generated_samples", "--samples", *args) == 0
    assert (tmp_path / "figs" / "generated_samples.png").stat().st_size > 0
    names = ["pix", "fou", "kar"]
    assert figures.condition_label("from1", names) == "from 1: fou"
    assert figures.condition_label("real", names) == "real (0: pix)"
    assert figures.condition_label("interp1+2", names) == "from fou + kar"


def test_figure_list_is_the_report_list():
    assert figures.FIGURES is FIGURES
