"""The throughput command: --quick writes a well-formed CSV and figure; baselines compute the same losses.

Fast (well under 30 s on 2 cores): the quick grid is 3 tiny shapes x 11 implementations.
"""

import csv
import json
import math
from pathlib import Path

import pytest
import torch

import objectives
from harness import cli
from harness.bench import cli as bench_cli
from harness.bench import grid as bench_grid
from harness.bench import impls as tp
from harness.bench import timing as bench_timing


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("throughput")
    csv_path, fig = out / "t.csv", out / "t.png"
    rc = cli.main(["throughput", "--quick", "--out", str(csv_path), "--fig", str(fig), "--repeats", "1", "--warmup", "1"])
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        rows = list(reader)
    return rc, header, rows, out


def test_quick_csv_is_well_formed(quick_run):
    rc, header, rows, out = quick_run
    assert rc == 0
    assert header == tp.COLUMNS
    names = {r["objective"] for r in rows}
    assert names == set(objectives.available()) | {b for b in tp.BASELINES if tp.peer_missing(b) is None}
    shapes = {(int(r["M"]), int(r["B"]), int(r["d"])) for r in rows}
    assert shapes == set(bench_grid.grid("quick"))
    assert len(rows) == len(shapes) * len(names)
    for r in rows:
        assert r["note"] == "", r
        assert r["kind"] == ("baseline" if r["objective"] in tp.BASELINES else "ours")
        assert r["device"] == "cpu" and r["dtype"] == "float32"
        assert r["torch_version"] == torch.__version__ and int(r["threads"]) >= 1
        t_min, t_med = float(r["time_min_s"]), float(r["time_median_s"])
        assert 0 < t_min <= t_med
        assert math.isclose(float(r["samples_per_s"]), int(r["B"]) / t_min, rel_tol=1e-4)
        flops = float(r["matmul_flops"])
        expected = tp.matmul_flops(r["objective"], int(r["M"]), int(r["B"]), int(r["d"]), json.loads(r["params"]))
        assert math.isclose(flops, expected, rel_tol=1e-5)
        ratio = float(r["roofline_ratio"])
        gemm = float(r["gemm_gflops"]) * 1e9
        assert math.isclose(ratio, flops / t_min / gemm, rel_tol=1e-3)
        assert float(r["speedup_vs_naive"]) > 0
        assert r["memory_method"] == "not_measured"
    # numeric bandwidth by default for the kernel objectives
    assert {r["params"] for r in rows if r["objective"] == "unialign"} == {'{"bandwidth": 0.5}'}
    assert (out / "t.png").stat().st_size > 0 and (out / "t.pdf").stat().st_size > 0


def test_matmul_flops_table():
    B, d, unit = 8, 4, 2 * 8 * 8 * 4
    assert tp.matmul_flops("infonce", 4, B, d) == 3 * unit * 6
    assert tp.matmul_flops("naive_clip_loop", 4, B, d) == 3 * unit * 6
    assert tp.matmul_flops("infonce_anchor", 4, B, d) == 3 * unit * 3
    assert tp.matmul_flops("dcl", 3, B, d) == 3 * unit * 3
    assert tp.matmul_flops("dcl", 3, B, d, {"pairs": "anchor"}) == 3 * unit * 2
    assert tp.matmul_flops("unialign", 2, B, d) == 2 * unit * 2  # 4 GEMMs at M=2 vs InfoNCE's 3
    assert tp.matmul_flops("align_uniform", 5, B, d) == 2 * unit * 5
    assert tp.matmul_flops("cs_aligner", 3, B, d) == unit * (3 * 2 + 2 * 3 + 3 * 2)
    assert tp.matmul_flops("symile", 3, B, d) == tp.matmul_flops("symile_package", 3, B, d) == 3 * unit * 3
    assert tp.matmul_flops("symile", 3, B, d, {"negatives": "n_squared"}) is None


def test_naive_loop_is_the_infonce_loss():
    zs = [torch.randn(16, 8, dtype=torch.float64) for _ in range(4)]
    ours = objectives.build("infonce", temperature=tp.TEMPERATURE)(zs).loss
    assert torch.allclose(tp.naive_clip_loop(zs), ours, rtol=1e-10, atol=1e-12)


def test_symile_package_row_uses_the_same_loss():
    pytest.importorskip("symile")
    zs = [torch.randn(12, 6, dtype=torch.float64) for _ in range(3)]
    torch.manual_seed(3)
    peer = tp.make_loss(tp.Impl("symile_package"), torch.device("cpu"))(zs)
    torch.manual_seed(3)
    ours = tp.make_loss(tp.Impl("symile"), torch.device("cpu"))(zs)
    assert torch.allclose(peer, ours, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("peer", sorted(tp.PEERS))
def test_peer_rows_use_the_same_loss_and_gradient(peer):
    """open_clip's ClipLoss and info-nce-pytorch, averaged over all pairs, are the infonce loss."""
    if tp.peer_missing(peer):
        pytest.skip(tp.peer_missing(peer))
    zs = [torch.randn(12, 6, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    got = tp.make_loss(tp.Impl(peer), torch.device("cpu"))(zs)
    ours = objectives.build("infonce", temperature=tp.TEMPERATURE)(zs).loss
    torch.testing.assert_close(got, ours, rtol=1e-10, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, zs), torch.autograd.grad(ours, zs)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert tp.peer_version(peer) != ""


def test_a_missing_peer_is_named_and_left_out(monkeypatch):
    """Without its package a peer is skipped with the package to install, never timed as a failure."""
    real = tp.importlib.util.find_spec
    monkeypatch.setattr(tp.importlib.util, "find_spec",
                        lambda name, *a: None if name == "open_clip" else real(name, *a))
    reason = tp.peer_missing("open_clip_loss")
    assert reason is not None and "open_clip_torch" in reason and "[bench]" in reason
    assert "open_clip_loss" not in {i.objective for i in tp.default_impls(["infonce"])}
    with pytest.raises(ImportError, match="open_clip_torch"):
        tp.make_loss(tp.Impl("open_clip_loss"), torch.device("cpu"))
    assert tp.peer_missing("infonce") is None


def test_memory_probe_subprocess():
    res = bench_timing.probe_memory(tp.Impl("infonce"), 2, 256, 32, torch.float32, threads=1, timeout=120)
    assert res["memory_method"] == "rss_subprocess"
    assert res["peak_mem_mb"] >= 0 and res["peak_rss_total_mb"] > res["peak_mem_mb"]
    assert res["time_s"] > 0


def test_unknown_objective_is_refused(tmp_path, capsys):
    rc = cli.main(["throughput", "--objectives", "nope", "--out", str(tmp_path / "x.csv"), "--fig", ""])
    assert rc == 2
    assert "unknown objective" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_breakdown_reports_gemm_share(capsys):
    """--breakdown profiles one step: the GEMM time is a positive part of it, and the efficiency is
    computed against the reference GEMM of the same rounds."""
    rc = cli.main(["throughput", "--breakdown", "--shapes", "3,64,16", "--objectives", "infonce,unialign",
                   "--warmup", "1"])
    assert rc == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "GEMM efficiency" in ln]
    assert len(lines) == 2 and lines[0].startswith("infonce M=3 B=64 d=16") and lines[1].startswith("unialign")
    st = bench_grid.Settings(device=torch.device("cpu"), dtypes=[torch.float32], threads=1, warmup=1, repeats=1,
                     memory="none", mode="breakdown", slow_s=10.0, budget_s=0.0)
    r = bench_cli.breakdown(tp.Impl("infonce"), 3, 64, 16, st, rounds=1)
    assert 0.0 < r["gemm_s"] < r["step_s"] and 0.0 < r["gemm_share"] < 1.0
    assert r["gemm_efficiency"] > 0.0


def test_gram_direct_baseline_is_the_gram_loss():
    zs = [torch.randn(10, 6, dtype=torch.float64) for _ in range(3)]
    ours = objectives.build("gram", temperature=tp.TEMPERATURE)(zs).loss
    assert torch.allclose(tp.gram_direct(zs), ours, rtol=1e-10, atol=1e-12)
    assert tp.matmul_flops("gram_direct", 3, 8, 4) == tp.matmul_flops("gram", 3, 8, 4) == 3 * (2 * 8 * 8 * 4) * 2


def test_generated_variant_computes_the_same_loss_and_restores_the_switch():
    """The ``generated_kernels`` parameter switches objectives.kernels.generated_kernels on for the
    call only (the blocks here are below the generated tail's size, so this checks the plumbing)."""
    from objectives.kernels import generated_kernels_info

    zs = [torch.randn(16, 8, dtype=torch.float64) for _ in range(3)]
    before = generated_kernels_info()["enabled"]
    plain = tp.make_loss(tp.Impl("infonce"), torch.device("cpu"))(zs)
    gen = tp.make_loss(tp.Impl("infonce", (("generated_kernels", True),), "generated"), torch.device("cpu"))(zs)
    assert torch.allclose(plain, gen, rtol=1e-12, atol=1e-12)
    assert generated_kernels_info()["enabled"] == before


def test_clock_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert bench_timing.resolve_clock("auto", cpu, 1) == "thread"
    assert bench_timing.resolve_clock("auto", cpu, 2) == "wall"
    assert bench_timing.resolve_clock("wall", cpu, 1) == "wall"
    assert bench_timing.resolve_clock("thread", cpu, 4) == "thread"
    assert bench_timing.resolve_clock("auto", cuda, 1) == "cuda"
    with pytest.raises(ValueError):
        bench_timing.resolve_clock("sundial", cpu, 1)
    spent = bench_timing.timer(cpu, "thread")(lambda: sum(range(20000)))
    assert spent > 0


def test_targets_smoke_gram_part(tmp_path):
    """--targets --small-targets --parts 6 judges GRAM against the direct formulation and against
    anchor-based InfoNCE (reduced sizes: a smoke test of the mode, not the targets)."""
    tpath = tmp_path / "targets.csv"
    threads = torch.get_num_threads()
    try:
        rc = cli.main(["throughput", "--targets", "--small-targets", "--parts", "6", "--targets-out", str(tpath),
                       "--repeats", "1", "--warmup", "1", "--budget-s", "0", "--memory", "none", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    with open(tpath, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["target"] for r in rows] == ["6 gram vs direct determinants", "6 gram roofline vs infonce_anchor"]
    assert "clock: thread" in (tmp_path / "targets.md").read_text()
    with open(tmp_path / "targets_rows.csv", newline="") as handle:
        measured = list(csv.DictReader(handle))
    assert {r["objective"] for r in measured} == {"gram", "gram_direct", "infonce_anchor"}
    assert {r["clock"] for r in measured} == {"thread"}
    # the note bounds the speed-up: by the GEMMs alone, and by anchor InfoNCE's time at the same GEMM work
    t = {r["objective"]: float(r["time_min_s"]) for r in measured}
    floor = float(next(r for r in measured if r["objective"] == "gram")["gram_gemms_time_min_s"])
    assert rows[0]["note"].startswith(f"ceiling {t['gram_direct'] / floor:.1f}x: the three GEMMs")
    assert rows[0]["note"].endswith(f"would be {t['gram_direct'] / t['infonce_anchor']:.1f}x")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_mode_refused_without_cuda(tmp_path, capsys):
    rc = cli.main(["throughput", "--gpu", "--out", str(tmp_path / "g.csv"), "--fig", ""])
    assert rc == 1
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "g.csv").exists()
    assert bench_grid.grid("gpu")[-1] == (4, 16384, 512)


def test_replot_redraws_the_figure_from_a_csv_without_measuring(tmp_path, monkeypatch):
    import argparse

    from harness.bench import cli, grid

    def no_timing(*a, **k):
        raise AssertionError("--replot must not measure")

    monkeypatch.setattr(grid, "run_grid", no_timing)
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    fig = tmp_path / "t.png"
    table = str(Path(__file__).resolve().parents[1] / "results" / "throughput.csv")
    assert cli.main(p.parse_args(["--replot", table, "--fig", str(fig)])) == 0
    assert fig.read_bytes()[:4] == b"\x89PNG" and (tmp_path / "t.pdf").exists()
    assert cli.main(p.parse_args(["--replot", table, "--fig", ""])) == 2
