"""Measuring a grid of configurations, its CSV rows and the throughput figure."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.bench.impls import (
    BASELINES,
    COLUMNS,
    Impl,
    fwd_bwd,
    gemm_call,
    gram_gemm_floor,
    make_inputs,
    make_loss,
    matmul_flops,
)
from harness.bench.timing import cuda_peak, device_name, interleaved, loadavg, probe_memory, resolve_clock


@dataclass
class Settings:
    device: torch.device
    dtypes: list[torch.dtype]
    threads: int
    warmup: int = 2
    repeats: int = 5
    memory: str = "auto"  # auto | all | none
    memory_min_batch: int = 512
    slow_s: float = 10.0
    budget_s: float = 3.0  # per configuration: more rounds for fast configurations (see interleaved)
    mode: str = "default"
    clock: str = "auto"  # timing.resolve_clock: thread CPU time for one CPU thread, else wall / CUDA events
    log: Callable[[str], None] = field(default=lambda s: print(s, file=sys.stderr, flush=True))


def _fmt(x):
    if x is None:
        return ""
    if isinstance(x, float):
        return "" if math.isnan(x) else f"{x:.6g}"
    return x


def measure_config(impls: list[Impl], M: int, B: int, d: int, dtype: torch.dtype, st: Settings,
                   chunk_size: int | None = None) -> list[dict]:
    """Rows for every implementation at one (M, B, d, dtype), timed in the same interleaved rounds."""
    device = st.device
    zs = make_inputs(M, B, d, dtype, device)
    calls: dict[str, Callable[[], None]] = {}
    failed: dict[str, str] = {}
    for impl in impls:
        try:
            calls[impl.label] = fwd_bwd(make_loss(impl, device), zs)
        except Exception as exc:  # noqa: BLE001 - reported in the row
            failed[impl.label] = f"{type(exc).__name__}: {exc}"
    gemm_rows = B if chunk_size is None else min(chunk_size, B)
    calls["__gemm__"] = gemm_call(gemm_rows, d, B, dtype, device)
    if any(impl.objective == "gram" for impl in impls) and chunk_size is None:
        calls["__gram_gemms__"] = gram_gemm_floor(M, B, d, dtype, device)
    times: dict[str, list[float]] = {}
    clock = resolve_clock(st.clock, device, st.threads)
    try:
        times = interleaved(calls, device, st.warmup, st.repeats, st.slow_s, st.budget_s, clock=clock)
    except Exception:  # noqa: BLE001 - one broken implementation must not hide the others: time separately
        for name, fn in calls.items():
            try:
                times.update(interleaved({name: fn}, device, st.warmup, st.repeats, st.slow_s, clock=clock))
            except Exception as exc:  # noqa: BLE001
                failed[name] = f"{type(exc).__name__}: {exc}"
    gemm_t = min(times["__gemm__"])
    gemm_rate = 2.0 * gemm_rows * B * d / gemm_t
    naive_t = min(times["naive_clip_loop"]) if "naive_clip_loop" in times else None
    common = {
        "mode": st.mode, "M": M, "B": B, "d": d, "chunk_size": chunk_size, "dtype": str(dtype).replace("torch.", ""),
        "device": device.type, "device_name": device_name(device), "torch_version": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "threads": st.threads if device.type == "cpu" else "", "loadavg_1m": loadavg(), "clock": clock,
        "warmup": st.warmup, "gemm_shape": f"{gemm_rows}x{d}x{B}", "gemm_time_min_s": gemm_t,
        "gemm_gflops": gemm_rate / 1e9,
    }
    if "__gram_gemms__" in times:  # GRAM's unavoidable GEMMs at its kernel's shapes (impls.gram_gemm_floor)
        common["gram_gemms_time_min_s"] = min(times["__gram_gemms__"])
    rows = []
    for impl in impls:
        row = dict(common, objective=impl.objective, kind=impl.kind, variant=impl.variant,
                   params=json.dumps(impl.kwargs(), sort_keys=True))
        ts = times.get(impl.label)
        if impl.label in failed or not ts:
            row["note"] = failed.get(impl.label, "not timed")
            rows.append(row)
            continue
        t_min, t_med = min(ts), statistics.median(ts)
        flops = matmul_flops(impl.objective, M, B, d, impl.kwargs())
        row.update(repeats=len(ts), time_min_s=t_min, time_median_s=t_med, samples_per_s=B / t_min,
                   matmul_flops=flops, achieved_gflops=None if flops is None else flops / t_min / 1e9,
                   roofline_ratio=None if flops is None else flops / t_min / gemm_rate,
                   speedup_vs_naive=None if naive_t is None else naive_t / t_min)
        if len(ts) < st.repeats:  # cut to one timing by the slow rule
            row["note"] = f"timed once (first call > {st.slow_s:g}s)"
        want_mem = st.memory == "all" or (st.memory == "auto" and B >= st.memory_min_batch)
        if device.type == "cuda":
            row.update(cuda_peak(calls[impl.label], device))
        elif want_mem:
            row.update(probe_memory(impl, M, B, d, dtype, st.threads))
        else:
            row.update(memory_method="not_measured")
        rows.append(row)
    del calls, zs
    return rows


def run_grid(shapes: list[tuple[int, int, int]], impls: list[Impl], st: Settings,
             chunk_size: int | None = None) -> list[dict]:
    rows: list[dict] = []
    t0 = time.perf_counter()
    for i, (M, B, d) in enumerate(shapes):
        for dtype in st.dtypes:
            usable = [im for im in impls if _feasible(im, M, B, d)]
            new = measure_config(usable, M, B, d, dtype, st, chunk_size)
            rows += new
            best = {r["objective"] + ("" if r["variant"] == "default" else f"[{r['variant']}]"):
                    r.get("roofline_ratio") for r in new}
            st.log(f"[{i + 1}/{len(shapes)} {time.perf_counter() - t0:6.1f}s] M={M} B={B} d={d} "
                   f"{str(dtype)[6:]}: " + ", ".join(
                       f"{k}={v:.2f}" for k, v in best.items() if isinstance(v, float)))
    return rows


def _feasible(impl: Impl, M: int, B: int, d: int) -> bool:
    """Skip configurations whose memory grows beyond reason for a benchmark: the direct GRAM keeps
    B^2 M^2 Gram entries (and their float64 determinants' workspace) for autograd."""
    if impl.objective == "gram_direct":
        return B * B * M * M * 8 <= 2 * 2**30
    if impl.kind == "ours":  # the sizes an objective declares it supports (objectives.registry)
        from objectives import registry

        return registry.get(impl.objective).supports(M, B, d)
    return True


# ----------------------------------------------------------------------------- grids


def grid(mode: str) -> list[tuple[int, int, int]]:
    """(M, B, d) shapes of each mode. M sweep at a fixed (B, d) and a B sweep at a fixed (M, d)."""
    if mode == "quick":
        return [(2, 32, 16), (3, 64, 16)]
    if mode == "gpu":  # B sweep at M = 3 and the GPU target size (M = 4, B = 16384, d = 512)
        return [(3, B, 512) for B in (1024, 2048, 4096, 8192, 16384)] + [(4, 16384, 512)]
    if mode == "full":
        shapes = [(M, B, d) for M in (2, 3, 4, 6, 8) for B in (64, 256, 1024, 2048) for d in (64, 256, 512)]
        shapes += [(M, 4096, 512) for M in (2, 3, 4)]
        return sorted(set(shapes), key=lambda s: (s[1] * s[1] * s[2] * s[0], s))
    shapes = [(M, 256, 64) for M in range(2, 9)]
    shapes += [(3, B, 128) for B in (32, 128, 512, 2048)]
    return shapes


# ----------------------------------------------------------------------------- outputs


def rows_from_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a CSV written by this module, with numbers parsed (to redraw a figure)."""
    ints = {"M", "B", "d", "chunk_size", "threads", "warmup", "repeats"}
    out = []
    with open(path, newline="") as handle:
        for raw in csv.DictReader(handle):
            row: dict = {}
            for k, v in raw.items():
                if v == "":
                    row[k] = None
                elif k in ints:
                    row[k] = int(float(v))
                else:
                    try:
                        row[k] = float(v)
                    except ValueError:
                        row[k] = v
            out.append(row)
    return out


def rows_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
    return buf.getvalue()


#: drawn bold in the throughput figure (with the reference implementations): the compared pair
HIGHLIGHT = ("infonce", "unialign")


def plot(rows: list[dict], path: str | os.PathLike) -> list[Path]:
    """The achieved matmul FLOP rate over a plain GEMM's FLOP rate, and samples/s, against B per
    objective (the B sweep at its M), PNG + PDF.

    Names, colours and markers come from :mod:`harness.style`; the footer names the device,
    threads, torch version and the date of the measurement as recorded in the rows.
    """
    from harness import style

    plt = style.pyplot()
    timed = [r for r in rows if r.get("time_min_s") is not None and r.get("chunk_size") in (None, "")]
    by_mb: dict[tuple, set] = {}
    for r in timed:
        by_mb.setdefault((r["M"], r["d"], r["dtype"]), set()).add(r["B"])
    # the (M, d) with the most batch sizes is the B sweep
    (M, d, dtype), _ = max(by_mb.items(), key=lambda kv: (len(kv[1]), kv[0][0]))
    sel = [r for r in timed if (r["M"], r["d"], r["dtype"]) == (M, d, dtype)]
    labels = sorted({_label(r) for r in sel}, key=lambda s: (s in BASELINES, style.display_name(s)))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.0), layout="constrained")
    for lab in labels:
        pts = sorted((r["B"], r.get("roofline_ratio"), r["samples_per_s"]) for r in sel if _label(r) == lab)
        name = lab.partition("[")[0]
        # the compared pair and the references stand out; the other objectives stay in their colours, thin
        loud = name in HIGHLIGHT or lab in BASELINES
        st = dict(style.series_style(name), linestyle="--" if lab in BASELINES else "-",
                  lw=style.HIGHLIGHT_WIDTH if loud else 1.0, ms=6 if loud else 3.5, alpha=1.0 if loud else 0.75,
                  zorder=3 if loud else 2, label=style.display_name(lab))
        xs = [p[0] for p in pts if p[1] is not None]
        if xs:
            axes[0].plot(xs, [p[1] for p in pts if p[1] is not None], **st)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], **st)
    for ax, ylab in zip(axes, ("achieved matmul FLOP rate / GEMM FLOP rate", "samples / s (forward + backward)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size B")
        ax.set_ylabel(ylab)
    axes[1].set_yscale("log")
    axes[0].axhline(1.0, color="black", lw=0.8)
    handles, names = axes[1].get_legend_handles_labels()
    style.legend_below(fig, handles, names)
    fig.suptitle(f"Loss forward + backward, M={M}, d={d}, {dtype}\n{_measured_on(sel)}")
    return style.save(fig, Path(path))


def _measured_on(sel: list[dict]) -> str:
    """Device, threads, torch version and date of the rows (as recorded; 'not recorded' otherwise)."""
    def one(key: str) -> str:
        vals = sorted({str(r[key]) for r in sel if r.get(key) not in (None, "")})
        return ", ".join(vals) if vals else "not recorded"

    device = one("device_name")
    threads = one("threads")
    parts = [f"device: {device}"]
    if any(r.get("device") == "cpu" for r in sel):
        parts.append(f"torch threads: {threads}")
    parts += [f"torch {one('torch_version')}", f"measured: {one('date')}"]
    return "; ".join(parts)


def _label(r: dict) -> str:
    return r["objective"] if r.get("variant", "default") == "default" else f"{r['objective']}[{r['variant']}]"


def _finding(sel: list[dict], M: int, d: int, dtype: str) -> str:
    bmax = max(r["B"] for r in sel)
    at = {_label(r): r for r in sel if r["B"] == bmax}
    bmin = min(r["B"] for r in sel)
    small = {_label(r): r for r in sel if r["B"] == bmin}
    parts = []
    if "infonce" in at and at["infonce"].get("roofline_ratio") is not None:
        parts.append(f"at B={bmax} infonce runs at {at['infonce']['roofline_ratio']:.0%} of GEMM rate")
        if "naive_clip_loop" in at:
            parts[-1] += f" (naive loop {at['naive_clip_loop']['roofline_ratio']:.0%})"
    if "unialign" in at and at["unialign"].get("roofline_ratio") is not None:
        parts.append(f"unialign {at['unialign']['roofline_ratio']:.0%}")
    if "infonce" in small and "naive_clip_loop" in small:
        sp = small["infonce"].get("speedup_vs_naive")
        if sp:
            parts.append(f"at B={bmin} infonce is {sp:.2f}x the naive loop's speed")
    head = f"Loss forward+backward, M={M}, d={d}, {dtype}"
    return head + (":\n" + "; ".join(parts) if parts else "")
