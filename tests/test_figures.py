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
                       keys.ALIGNMENT: 0.5, keys.UNIFORMITY: -2.0, keys.EFFECTIVE_RANK: 20.0, keys.WITHIN_COSINE: 0.1,
                       keys.HOLDER_FIXED_EXCESS: 0.001 * m * (variant == "infonce") + 0.0005 * seed}
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
    names = ["conflicts_vs_m", "divergence_gap_vs_m", "retrieval_vs_m", "alignment_uniformity", "proxy_vs_divergence",
             "advantage_vs_m"]
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
            "unialign_full", "cs_aligner", "gram", "symile"]
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


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figure a figure function saves (instead of its files)."""
    seen = {}

    def save(fig, stem):
        seen["fig"] = fig
        return [stem]

    monkeypatch.setattr(figures.style, "save", save)
    return seen


def test_conflicts_panels_and_uninformative_bands(tmp_path, drawn):
    df = summary()
    wide = df["variant"] == "gram"
    df.loc[wide, keys.ZETA] = np.tile([-0.9, 0.2, 0.95], int(wide.sum()) // 3)  # a band over most of [-1, 1]
    figures.lines_vs_m(df, CFG, tmp_path, "conflicts_vs_m", ["zeta", "chi"], "t", apart_panels=False)
    fig = drawn["fig"]
    assert len(fig.axes) == 2  # one dataset x (zeta, chi): no far-objective panels
    title = fig._suptitle.get_text()
    assert "no band for gram on $\\zeta$" in title and "over 90%" in title
    zeta_ax = fig.axes[0]
    assert len(zeta_ax.collections) == 2  # bands of infonce and unialign only


def test_marker_size_key_and_r_definition(tmp_path, drawn):
    figures.alignment_uniformity(summary(), CFG, tmp_path)
    legend = drawn["fig"].axes[-1].get_legend()
    assert legend is not None and legend.get_title().get_text() == "marker area"
    assert [t.get_text() for t in legend.get_texts()] == ["M=2", "M=3", "M=4"]
    hist = history()
    hist["split_seed"] = 0
    figures.proxy_vs_divergence(hist, CFG, tmp_path)
    titles = [ax.get_title() for ax in drawn["fig"].axes]
    assert all("Pearson r(D_H, proxy) over a run's evaluations" in t and "mean of 2 runs" in t for t in titles), titles


def test_advantage_vs_m_draws_the_paired_difference_per_m(inputs, monkeypatch):
    """Each point is the mean over units of method - baseline at that M (the claims' pairing), the
    Hölder excess clipped at 0 as claims 3 and 8 read it."""
    seen = []
    real = figures.curve

    def spy(df, col):
        out = real(df, col)
        seen.append(out.assign(n_rows=len(df)))
        return out

    monkeypatch.setattr(figures, "curve", spy)
    table = summary()
    written = figures.advantage_vs_m(table, CFG, inputs / "figs")
    assert [p.suffix for p in written] == [".png", ".pdf"]
    # five metrics x one method (the tuple variant of CFG is absent from the summary)
    assert len(seen) == 5 and all(list(c["M"]) == [2, 3, 4] for c in seen)
    by_hand = []
    for m in (2, 3, 4):
        u = table[(table["variant"] == "unialign") & (table["M"] == m)].sort_values("seed")
        b = table[(table["variant"] == "infonce") & (table["M"] == m)].sort_values("seed")
        by_hand.append(float((u[keys.R1_MEAN].to_numpy() - b[keys.R1_MEAN].to_numpy()).mean()))
    assert list(seen[4]["mean"]) == pytest.approx(by_hand)
    assert list(seen[2]["mean"]) == pytest.approx([-0.002, -0.003, -0.004])  # excess: method 0.0005 s, base 0.001 m
    with pytest.raises(figures.FigureInputError, match="no runs of 'infonce'"):
        figures.advantage_vs_m(table[table["variant"] != "infonce"], CFG, inputs / "figs")
