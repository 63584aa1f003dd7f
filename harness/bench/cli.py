"""Time, memory and roofline ratio of every loss kernel: ``python -m harness throughput``.

For each objective of ``objectives.available()`` (plus two baselines) and each configuration
(M modalities, batch B, dimension d, dtype) this measures one **forward + backward** of the loss on
raw (unnormalised) (B, d) leaf tensors, and writes a tidy CSV (one row per implementation and
configuration) and a figure.

Timing protocol (noise-robust on a shared machine)
    All implementations of one configuration *and* the reference GEMM are timed in interleaved
    rounds (round r times each of them once, in a rotated order), after ``--warmup`` untimed calls
    each. Every row reports the minimum and the median over at least ``--repeats`` rounds (more, up
    to 200, while a configuration stays within ``--budget-s`` seconds); ratios between
    rows of one configuration (roofline, speed-ups) come from the same rounds, so slow periods of a
    busy machine hit both sides alike. On the CPU with one torch thread the clock is the thread's
    CPU time (``time.thread_time``: a preempted call is not lengthened, which on a shared machine
    otherwise penalises long calls against the short reference GEMM), with more threads the wall
    clock (``time.perf_counter``); ``--clock`` overrides, and every row names its clock. CUDA events
    (after a synchronize) on a GPU. An implementation whose first call takes longer than
    ``--slow-s`` seconds is timed once (``repeats`` = 1 in its row).

Roofline ratio
    ``roofline_ratio = (matmul_flops / time_min) / gemm_flops_per_s`` where ``gemm_flops_per_s`` is
    the rate of ``torch.mm`` of a (B, d) by a (d, B) matrix (same device, dtype and threads) timed
    in the same rounds (for chunked runs: a (chunk, d) by (d, B) product, the block the kernel forms).
    ``matmul_flops`` is the *minimal* matmul work of a forward + backward of the loss (one B x B x d
    product costs 2 B^2 d FLOPs), P the number of modality pairs the objective uses:

    ===================================  ===========================================================
    objective                            minimal matmul FLOPs of forward + backward
    ===================================  ===========================================================
    infonce, infonce_reweighted, dcl     3 * 2 B^2 d * P, P = M(M-1)/2 (pairs="all"): per pair one
    (and naive_clip_loop)                B x B x d product forward, two backward (dS Z_n, dS^T Z_m)
    infonce_anchor                       3 * 2 B^2 d * P, P = M - 1
    unialign (uniformity="each")         2 * 2 B^2 d * M: per modality one self-similarity product
                                         forward and one backward (the block is symmetric)
                                         ("anchor": M -> 1; "union": (M B)^2 instead of M B^2)
    align_uniform                        2 * 2 B^2 d * M (same self-similarity blocks)
    cs_aligner                           InfoNCE part 3 * 2 B^2 d * P plus the Cauchy-Schwarz blocks:
                                         per used modality one self block (2 products), per pair one
                                         cross block (3 products): 2 B^2 d (3P + 2U + 3P),
                                         P = M - 1 (pairs="anchor"), U = modalities in a pair
    symile (negatives="n"), and          per modality one B x B x d logits product forward and two
    symile_package                       backward: 3 * 2 B^2 d * M
    gram (and gram_direct)               the anchors against every tuple's rotated rows (the
                                         base-volume x height factorisation of
                                         objectives.kernels.volume): per non-anchor modality one
                                         (B, d) x (d, B) product forward, two backward:
                                         3 * 2 B^2 d * (M - 1), the work of anchor-based InfoNCE
                                         (the direct formulation's B^2 M x M determinants are
                                         extra work beyond this minimum)
    ===================================  ===========================================================

    The alignment terms, normalisation and elementwise passes are O(M B d) or O(B^2) and are not
    counted, so 1.0 is the best an implementation can reach (element-wise work on the B x B blocks
    is what keeps it below).

Baselines
    ``naive_clip_loop``: a deliberately naive all-pairs CLIP loss, a Python loop over pairs with
    ``F.cross_entropy`` on S and S^T and plain autograd (the same value as ``infonce``).
    ``symile_package``: the PyPI ``symile.Symile("n")`` on the same inputs as our ``symile``
    (rows L2-normalised inside the timed call for both; logit scale 1 / 0.07).
    ``gram_direct``: GRAM's loss from every (anchor, tuple) M x M Gram matrix and its determinant
    (``objectives.kernels.gram_volumes``) with plain autograd, the formulation ``gram`` replaced.
    A variant ``infonce[generated]`` runs ``infonce`` with ``objectives.kernels.generated_kernels``
    switched on (the exp / sums / scaling tail of each block as torch.compile-generated kernels).

Peak memory
    CPU: torch allocations are invisible to tracemalloc, so each configuration is run once in a fresh
    subprocess and ``peak_mem_mb`` is the high-water resident set during one forward + backward minus
    the resident set just before it (inputs, interpreter and torch already loaded);
    ``peak_rss_total_mb`` is the subprocess's high-water mark. The high-water mark is VmHWM of
    /proc/self/status, reset just before the call (``echo 5 > /proc/self/clear_refs``); not
    ``ru_maxrss``, which in a fork + exec child starts at the parent's RSS. Without the reset the
    delta is only an upper bound (``memory_note``).
    ``--memory auto`` (default) probes configurations with B >= 512, ``all`` every one, ``none`` none.
    GPU: ``torch.cuda.max_memory_allocated`` minus the allocation before the call, in process.

Every row records device, dtype, torch version, thread count and the 1-minute load average.

Modes: default grid (a few minutes on 2 CPU cores), ``--quick`` (tests, seconds), ``--full`` (the big
grid including the target sizes), ``--targets`` (evaluates the performance targets and writes
``results/throughput_targets.csv`` and ``.md``), ``--breakdown`` (prints the GEMM share of a step and
the GEMMs' efficiency against the reference rate, from a torch.profiler trace), ``--gpu`` (every
objective on CUDA in float32 and bfloat16 up to B = 16384 with CUDA events, into
``results/throughput_gpu.csv`` and ``figures/throughput_gpu.*``; every row names the device).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

from harness.bench.grid import Settings, grid, plot, rows_to_csv, run_grid
from harness.bench.impls import (
    BASELINES,
    NUMERIC_BANDWIDTH,
    Impl,
    default_impls,
    fwd_bwd,
    gemm_call,
    make_inputs,
    make_loss,
    matmul_flops,
)
from harness.bench.targets import ALL_PARTS, evaluate_targets, merge_previous, targets_csv, targets_markdown
from harness.bench.timing import CLOCKS, device_name, loadavg, resolve_clock, timer
from harness.files import atomic_write_text

_GEMM_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm")


def breakdown(impl: Impl, M: int, B: int, d: int, st: Settings, rounds: int = 4) -> dict:
    """GEMM share of one forward + backward (torch.profiler self times) and the GEMMs' efficiency
    against the reference GEMM rate of the same rounds (min over ``rounds`` profiled calls)."""
    dtype = st.dtypes[0]
    zs = make_inputs(M, B, d, dtype, st.device)
    step = fwd_bwd(make_loss(impl, st.device), zs)
    gemm = gemm_call(B, d, B, dtype, st.device)
    clock = timer(st.device, "wall")  # the profiler's operator times are wall times
    for _ in range(max(st.warmup, 1)):
        step()
        gemm()
    best = None
    for _ in range(rounds):
        with torch.profiler.profile() as prof:
            wall = clock(step)
        gemm_s = sum(e.self_device_time_total if st.device.type == "cuda" else e.self_cpu_time_total
                     for e in prof.key_averages() if e.key in _GEMM_OPS) / 1e6
        ref = min(clock(gemm) for _ in range(5))
        if best is None or wall < best[0]:
            best = (wall, gemm_s, ref)
    wall, gemm_s, ref = best
    flops = matmul_flops(impl.objective, M, B, d, impl.kwargs())
    at_rate = flops / (2.0 * B * B * d) * ref if flops else None
    return {"objective": impl.label, "M": M, "B": B, "d": d, "step_s": wall, "gemm_s": gemm_s,
            "gemm_share": gemm_s / wall, "gemm_at_reference_rate_s": at_rate,
            "gemm_efficiency": at_rate / gemm_s if at_rate and gemm_s else None}


def format_breakdown(r: dict) -> str:
    text = (f"{r['objective']} M={r['M']} B={r['B']} d={r['d']}: step {r['step_s'] * 1e3:.1f} ms (profiled), "
            f"GEMMs {r['gemm_s'] * 1e3:.1f} ms = {r['gemm_share']:.0%} of it, the rest "
            f"{(r['step_s'] - r['gemm_s']) * 1e3:.1f} ms")
    if r["gemm_efficiency"] is not None:
        text += (f"; the minimal GEMM work at the reference rate takes {r['gemm_at_reference_rate_s'] * 1e3:.1f} ms "
                 f"(GEMM efficiency {r['gemm_efficiency']:.0%})")
    return text


def add_arguments(p) -> None:
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny grid for tests (seconds)")
    size.add_argument("--full", action="store_true", help="the big grid, target sizes included (hours on a CPU)")
    size.add_argument("--targets", action="store_true",
                      help="evaluate the performance targets; writes --targets-out .csv and .md")
    size.add_argument("--gpu", action="store_true",
                      help="every objective on CUDA, float32 and bfloat16, B up to 16384 (CUDA events); "
                           "writes results/throughput_gpu.csv and figures/throughput_gpu.* unless --out / --fig")
    size.add_argument("--replot", metavar="CSV", default=None,
                      help="measure nothing: redraw --fig from a throughput CSV written earlier")
    size.add_argument("--breakdown", action="store_true",
                      help="print where one forward + backward spends its time (GEMM vs the rest) for "
                           "--objectives (default infonce) at --shapes (default the target-1 sizes)")
    p.add_argument("--out", default="results/throughput.csv", help="tidy CSV (written atomically)")
    p.add_argument("--fig", default="figures/throughput.png", help="figure (.png and .pdf); '' for none")
    p.add_argument("--targets-out", default="results/throughput_targets.csv",
                   help="--targets: the judged targets (.csv and .md next to it)")
    p.add_argument("--objectives", default=None, help="comma-separated subset (default: all + baselines)")
    p.add_argument("--shapes", default=None, help="explicit grid 'M,B,d;M,B,d;...' instead of the mode's")
    p.add_argument("--bandwidth", default=str(NUMERIC_BANDWIDTH),
                   help="bandwidth(s) of unialign / cs_aligner, comma-separated, e.g. '0.5,median'")
    p.add_argument("--chunk-size", type=int, default=None, help="chunk_size of every objective (chunked path)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default=None, help="comma-separated (default float32; float32,bfloat16 on cuda)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--clock", choices=list(CLOCKS), default="auto",
                   help="CPU timing: thread CPU time or wall clock (auto: thread time for one torch thread)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls per implementation (default 2; --quick: 1)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed interleaved rounds, min and median (default 5; --quick: 3)")
    p.add_argument("--memory", choices=["auto", "all", "none"], default=None,
                   help="CPU peak memory via a subprocess per configuration (auto: B >= 512; default auto, "
                        "--quick: none)")
    p.add_argument("--slow-s", type=float, default=None,
                   help="time once when the first call exceeds this many seconds (default 10; --quick: never)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds per configuration: extra interleaved rounds (up to 200) for fast ones "
                        "(default 3; --quick: 0, i.e. exactly --repeats rounds)")
    p.add_argument("--no-train", action="store_true", help="--targets: skip the training throughput")
    p.add_argument("--parts", default="1,2,3,4,5,6", help="--targets: which targets to measure")
    p.add_argument("--chunk-batch", type=int, default=32768, help="--targets: B of the chunked target")
    p.add_argument("--small-targets", action="store_true",
                   help="--targets at reduced sizes (a smoke test of the mode, not the targets)")


def main(args) -> int:
    import objectives

    if args.replot:
        from harness.bench import grid as bench_grid

        if not args.fig:
            print("error: --replot needs --fig", file=sys.stderr)
            return 2
        written = bench_grid.plot(bench_grid.rows_from_csv(args.replot), args.fig)
        print(f"throughput: redrew {', '.join(map(str, written))} from {args.replot}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu:
        args.device = "cuda"
        args.out = "results/throughput_gpu.csv" if args.out == "results/throughput.csv" else args.out
        args.fig = "figures/throughput_gpu.png" if args.fig == "figures/throughput.png" else args.fig
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 1
    if args.dtype:
        dtypes = [getattr(torch, s.strip()) for s in args.dtype.split(",")]
    else:
        dtypes = [torch.float32, torch.bfloat16] if device.type == "cuda" else [torch.float32]
    mode = ("quick" if args.quick else "full" if args.full else "targets" if args.targets
            else "gpu" if args.gpu else "default")
    st = Settings(
        device=device, dtypes=dtypes, threads=torch.get_num_threads(),
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
        repeats=args.repeats if args.repeats is not None else (3 if args.quick else 5),
        memory=args.memory or ("none" if args.quick else "auto"), mode=mode,
        slow_s=args.slow_s if args.slow_s is not None else (math.inf if args.quick else 10.0),
        budget_s=args.budget_s if args.budget_s is not None else (0.0 if args.quick else 3.0),
        clock=args.clock,
    )
    t0 = time.perf_counter()
    if args.breakdown:
        shapes = ([tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";") if s.strip()]
                  if args.shapes else [(6, 1024, 256), (4, 2048, 512)])
        for name in (args.objectives.split(",") if args.objectives else ["infonce"]):
            for M, B, d in shapes:
                print(format_breakdown(breakdown(Impl(name), M, B, d, st)))
        return 0
    if args.targets:
        targets, rows = evaluate_targets(st, big=not args.small_targets, chunk_B=args.chunk_batch,
                                         train=not args.no_train, chunk_size=args.chunk_size or 1024,
                                         parts=tuple(int(x) for x in args.parts.split(",")))
        tpath = Path(args.targets_out)
        out = Path(args.out)
        if args.out == "results/throughput.csv":  # do not overwrite the grid's CSV by default
            out = tpath.with_name(tpath.stem + "_rows.csv")
        parts = {int(x) for x in args.parts.split(",")}
        if parts != ALL_PARTS:  # re-measured a subset: keep the other targets' earlier results
            targets, rows = merge_previous(tpath, out, parts, targets, rows)
        atomic_write_text(tpath, targets_csv(targets))
        header = (f"# Throughput targets\n\nMeasured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
                  f"{device_name(device)} ({device.type}), torch {torch.__version__}, {st.threads} threads, "
                  f"1-min load average {loadavg()} at the end; min of at least {st.repeats} interleaved rounds "
                  f"(up to 200 within {st.budget_s:g} s per configuration), ratios from the same rounds; "
                  f"clock: {resolve_clock(st.clock, device, st.threads)}.")
        if parts != ALL_PARTS:
            header += f" Targets {sorted(parts)} re-measured in this run; the others kept from the previous run."
        atomic_write_text(tpath.with_suffix(".md"), targets_markdown(targets, header))
        atomic_write_text(out, rows_to_csv(rows))
        met = sum(t["met"] == "yes" for t in targets)
        print(f"{met}/{len(targets)} targets met; {tpath} {tpath.with_suffix('.md')} {out} "
              f"({time.perf_counter() - t0:.0f}s)")
        return 0
    names = args.objectives.split(",") if args.objectives else objectives.available()
    unknown = [n for n in names if objectives.registry.find(n) is None and n not in BASELINES]
    if unknown:
        print(f"error: unknown objective(s) {unknown}; available: {objectives.available() + list(BASELINES)}",
              file=sys.stderr)
        return 2
    impls = default_impls(names, [b.strip() for b in args.bandwidth.split(",")], baselines=args.objectives is None,
                          chunk_size=args.chunk_size)
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";") if s.strip()]
    else:
        shapes = grid(mode)
    rows = run_grid(shapes, impls, st, args.chunk_size)
    atomic_write_text(args.out, rows_to_csv(rows))
    written = [args.out]
    if args.fig:
        written += [str(p) for p in plot(rows, args.fig)]
    print(f"{len(rows)} rows in {time.perf_counter() - t0:.0f}s: {' '.join(written)}")
    return 0
