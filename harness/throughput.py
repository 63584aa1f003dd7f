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
    busy machine hit both sides alike. Wall clock (``time.perf_counter``) on the CPU, CUDA events
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
    gram                                 only its cross Gram products: per non-anchor modality one
                                         (B, d) x (d, B) product forward, two backward:
                                         3 * 2 B^2 d * (M - 1); the B^2 M x M determinants are not
                                         counted, so its ratio is a loose upper bound of efficiency
    ===================================  ===========================================================

    The alignment terms, normalisation and elementwise passes are O(M B d) or O(B^2) and are not
    counted, so 1.0 is the best an implementation can reach (element-wise work on the B x B blocks
    is what keeps it below).

Baselines
    ``naive_clip_loop``: a deliberately naive all-pairs CLIP loss, a Python loop over pairs with
    ``F.cross_entropy`` on S and S^T and plain autograd (the same value as ``infonce``).
    ``symile_package``: the PyPI ``symile.Symile("n")`` on the same inputs as our ``symile``
    (rows L2-normalised inside the timed call for both; logit scale 1 / 0.07).

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
the GEMMs' efficiency against the reference rate, from a torch.profiler trace).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from harness.io import atomic_write_bytes, atomic_write_text

TEMPERATURE = 0.07
NUMERIC_BANDWIDTH = 0.5
BASELINES = ("naive_clip_loop", "symile_package")

COLUMNS = [
    "mode", "objective", "kind", "variant", "params", "M", "B", "d", "chunk_size", "dtype", "device",
    "device_name", "torch_version", "threads", "loadavg_1m", "warmup", "repeats", "time_min_s",
    "time_median_s", "samples_per_s", "matmul_flops", "achieved_gflops", "gemm_shape", "gemm_time_min_s",
    "gemm_gflops", "roofline_ratio", "speedup_vs_naive", "peak_mem_mb", "peak_rss_total_mb",
    "memory_method", "memory_note", "note",
]


# ----------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class Impl:
    """One thing to time: an objective of the library (kind "ours") or a baseline."""

    objective: str
    params: tuple = ()  # sorted (key, value) pairs
    variant: str = "default"

    @property
    def kind(self) -> str:
        return "baseline" if self.objective in BASELINES else "ours"

    @property
    def label(self) -> str:
        return self.objective if self.variant == "default" else f"{self.objective}[{self.variant}]"

    def kwargs(self) -> dict:
        return dict(self.params)


def default_impls(objective_names: list[str], bandwidths: list[str] | None = None,
                  baselines: bool = True, chunk_size: int | None = None) -> list[Impl]:
    """The objectives with default parameters; numeric bandwidth 0.5 (and/or "median") where they have one."""
    import objectives

    bandwidths = bandwidths or [str(NUMERIC_BANDWIDTH)]
    out: list[Impl] = []
    for name in objective_names:
        if name in BASELINES:
            out.append(Impl(name))
            continue
        known = objectives.parameters(name)
        extra = {"chunk_size": chunk_size} if chunk_size is not None and "chunk_size" in known else {}
        if "bandwidth" in known:
            for bw in bandwidths:
                value: float | str = "median" if bw == "median" else float(bw)
                variant = "default" if bw == bandwidths[0] else f"bandwidth={bw}"
                out.append(Impl(name, tuple(sorted({"bandwidth": value, **extra}.items())), variant))
        else:
            out.append(Impl(name, tuple(sorted(extra.items()))))
    if baselines:
        for b in BASELINES:
            if b not in objective_names:
                out.append(Impl(b))
    return out


def _pairs(name: str, M: int, params: dict) -> int:
    import objectives

    defaults = objectives.parameters(name) if name not in BASELINES else {}
    pairs = params.get("pairs", defaults.get("pairs", "all"))
    if name == "infonce_anchor":
        pairs = "anchor"
    return M * (M - 1) // 2 if pairs == "all" else M - 1


def matmul_flops(name: str, M: int, B: int, d: int, params: dict | None = None) -> float | None:
    """Minimal matmul FLOPs of one forward + backward (see the module docstring's table)."""
    params = params or {}
    unit = 2.0 * B * B * d  # one B x B x d product
    if name in ("infonce", "infonce_reweighted", "dcl", "infonce_anchor", "naive_clip_loop"):
        return 3 * unit * _pairs(name, M, params)
    if name in ("unialign", "align_uniform"):
        scope = params.get("uniformity", "each")
        if scope == "anchor":
            return 2 * unit
        if scope == "union":
            return 2 * 2.0 * (M * B) ** 2 * d
        return 2 * unit * M
    if name == "cs_aligner":
        P = _pairs(name, M, params)
        U = M  # anchor pairs and all pairs both touch every modality
        return unit * (3 * P + 2 * U + 3 * P)
    if name in ("symile", "symile_package"):
        if params.get("negatives", "n") != "n":
            return None
        return 3 * unit * M
    if name == "gram":
        return 3 * unit * (M - 1)
    return None


# ----------------------------------------------------------------------------- the timed callables


def naive_clip_loop(zs: list[torch.Tensor], temperature: float = TEMPERATURE) -> torch.Tensor:
    """Deliberately naive all-pairs CLIP loss: a Python loop, F.cross_entropy on S and S^T, autograd."""
    zs = [F.normalize(z, dim=-1) for z in zs]
    labels = torch.arange(zs[0].shape[0], device=zs[0].device)
    total, n = 0.0, 0
    for m in range(len(zs)):
        for k in range(m + 1, len(zs)):
            s = zs[m] @ zs[k].T / temperature
            total = total + 0.5 * (F.cross_entropy(s, labels) + F.cross_entropy(s.T, labels))
            n += 1
    return total / n


def make_loss(impl: Impl, device: torch.device) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    if impl.objective == "naive_clip_loop":
        return naive_clip_loop
    if impl.objective == "symile_package":
        import symile  # the PyPI peer

        peer = symile.Symile("n")
        scales: dict[torch.dtype, torch.Tensor] = {}

        def run_peer(zs):
            dtype = zs[0].dtype
            if dtype not in scales:  # built once per dtype, exact in that dtype
                scales[dtype] = torch.tensor(1.0 / TEMPERATURE, dtype=dtype, device=device)
            return peer([F.normalize(z, dim=-1) for z in zs], scales[dtype])

        return run_peer
    import objectives

    fn = objectives.build(impl.objective, **impl.kwargs()).to(device)
    return lambda zs: fn(zs).loss


def make_inputs(M: int, B: int, d: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(B, d, generator=g).to(device=device, dtype=dtype).requires_grad_(True) for _ in range(M)]


def fwd_bwd(loss_fn, zs) -> Callable[[], None]:
    def step():
        for z in zs:
            z.grad = None
        loss_fn(zs).backward()

    return step


def gemm_call(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device) -> Callable[[], None]:
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    return lambda: torch.mm(a, b, out=out)


def _timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    if device.type == "cuda":
        def cuda_time(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1000.0

        return cuda_time

    def wall(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return wall


def interleaved(calls: dict[str, Callable[[], None]], device: torch.device, warmup: int, repeats: int,
                slow_s: float = 10.0, budget_s: float = 0.0, max_rounds: int = 200) -> dict[str, list[float]]:
    """Time every call once per round, rotating the order; ``warmup`` untimed calls first.

    Names starting with ``__`` (the reference GEMM) are never "slow", get at least one warm-up call
    and at least ten timed calls (cheap next to a loss; a noisy reference could only *lower* the
    roofline ratios, never inflate them). With ``budget_s`` > 0 the number of rounds grows beyond
    ``repeats`` (up to ``max_rounds``) until about ``budget_s`` seconds are spent: many rounds of
    short calls make their minimum robust against a busy machine at little cost.
    """
    timer = _timer(device)
    times: dict[str, list[float]] = {k: [] for k in calls}
    active = list(calls)
    for name in list(active):
        ref = name.startswith("__")
        first = timer(calls[name])
        if first > slow_s and not ref:  # too slow to repeat: keep the single (cold) timing
            times[name].append(first)
            active.remove(name)
            continue
        for _ in range(max(warmup - 1, 1 if ref else 0)):
            calls[name]()
    if budget_s > 0 and active:
        round_s = sum(timer(calls[name]) for name in active)  # one more warm-up round, timed
        repeats = max(repeats, min(max_rounds, int(budget_s / max(round_s, 1e-9))))
    for r in range(repeats):
        shift = r % max(len(active), 1)
        for name in active[shift:] + active[:shift]:
            times[name].append(timer(calls[name]))
    for name in active:
        while name.startswith("__") and len(times[name]) < 10:
            times[name].append(timer(calls[name]))
    return times


def _loadavg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return float("nan")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- peak memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:  # pragma: no cover - not Linux
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0: ``echo 5 > clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    """High-water RSS of this process image.

    ``/proc/self/status`` VmHWM where available: ``getrusage``'s ru_maxrss is *not* usable in a
    child started by fork + exec, because Linux carries the pre-exec high-water mark (a copy of the
    parent's RSS at fork time) into ``signal->maxrss``, so a child of a big parent reports the
    parent's size. ru_maxrss (KiB on Linux, bytes on macOS) is the fallback.
    """
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def probe_memory_here(spec: dict) -> dict:
    """One forward + backward in *this* process; meant to run in a fresh subprocess."""
    torch.set_num_threads(int(spec["threads"]))
    device = torch.device("cpu")
    dtype = getattr(torch, spec["dtype"])
    impl = Impl(spec["objective"], tuple(sorted(spec["params"].items())), spec.get("variant", "default"))
    loss_fn = make_loss(impl, device)
    zs = make_inputs(spec["M"], spec["B"], spec["d"], dtype, device)
    reset = _reset_peak_rss()
    before_rss = _rss_bytes()
    before_hw = _maxrss_bytes()
    t0 = time.perf_counter()
    fwd_bwd(loss_fn, zs)()
    elapsed = time.perf_counter() - t0
    after_hw = _maxrss_bytes()
    return {
        "time_s": elapsed,
        "peak_mem_mb": max(after_hw - before_rss, 0) / 2**20,
        "peak_rss_total_mb": after_hw / 2**20,
        "memory_note": "" if reset or after_hw > before_hw else "upper bound: below the import-time high-water mark",
    }


def probe_memory(impl: Impl, M: int, B: int, d: int, dtype: torch.dtype, threads: int,
                 timeout: float = 900.0) -> dict:
    """Run :func:`probe_memory_here` in a fresh interpreter and return its measurements."""
    spec = {"objective": impl.objective, "params": impl.kwargs(), "variant": impl.variant, "M": M, "B": B,
            "d": d, "dtype": str(dtype).replace("torch.", ""), "threads": threads}
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = ("import json, sys; from harness.throughput import probe_memory_here; "
            "print('PROBE ' + json.dumps(probe_memory_here(json.loads(sys.argv[1]))))")
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=root)
    except subprocess.TimeoutExpired:
        return {"memory_method": "rss_subprocess", "memory_note": f"probe timed out after {timeout:.0f}s"}
    for line in proc.stdout.splitlines():
        if line.startswith("PROBE "):
            out = json.loads(line[6:])
            out["memory_method"] = "rss_subprocess"
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"memory_method": "rss_subprocess", "memory_note": f"probe failed: {tail[0][:200]}"}


def cuda_peak(step: Callable[[], None], device: torch.device) -> dict:
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return {"peak_mem_mb": (torch.cuda.max_memory_allocated(device) - base) / 2**20,
            "memory_method": "cuda_max_memory_allocated", "memory_note": ""}


# ----------------------------------------------------------------------------- measuring a grid


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
    times: dict[str, list[float]] = {}
    try:
        times = interleaved(calls, device, st.warmup, st.repeats, st.slow_s, st.budget_s)
    except Exception:  # noqa: BLE001 - one broken implementation must not hide the others: time separately
        for name, fn in calls.items():
            try:
                times.update(interleaved({name: fn}, device, st.warmup, st.repeats, st.slow_s))
            except Exception as exc:  # noqa: BLE001
                failed[name] = f"{type(exc).__name__}: {exc}"
    gemm_t = min(times["__gemm__"])
    gemm_rate = 2.0 * gemm_rows * B * d / gemm_t
    naive_t = min(times["naive_clip_loop"]) if "naive_clip_loop" in times else None
    common = {
        "mode": st.mode, "M": M, "B": B, "d": d, "chunk_size": chunk_size, "dtype": str(dtype).replace("torch.", ""),
        "device": device.type, "device_name": _device_name(device), "torch_version": torch.__version__,
        "threads": st.threads if device.type == "cpu" else "", "loadavg_1m": _loadavg(),
        "warmup": st.warmup, "gemm_shape": f"{gemm_rows}x{d}x{B}", "gemm_time_min_s": gemm_t,
        "gemm_gflops": gemm_rate / 1e9,
    }
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
    """Skip configurations whose memory grows beyond reason for a benchmark (gram: B^2 M^2 doubles)."""
    if impl.objective == "gram":
        return B * B * M * M * 8 <= 2 * 2**30
    return True


# ----------------------------------------------------------------------------- grids


def grid(mode: str) -> list[tuple[int, int, int]]:
    """(M, B, d) shapes of each mode. M sweep at a fixed (B, d) and a B sweep at a fixed (M, d)."""
    if mode == "quick":
        return [(2, 32, 16), (3, 64, 16)]
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


def plot(rows: list[dict], path: str | os.PathLike) -> list[Path]:
    """Roofline ratio and samples/s against B per objective (the B sweep at its M), PNG + PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if r.get("time_min_s") is not None and r.get("chunk_size") in (None, "")]
    by_mb: dict[tuple, set] = {}
    for r in timed:
        by_mb.setdefault((r["M"], r["d"], r["dtype"]), set()).add(r["B"])
    # the (M, d) with the most batch sizes is the B sweep
    (M, d, dtype), _ = max(by_mb.items(), key=lambda kv: (len(kv[1]), kv[0][0]))
    sel = [r for r in timed if (r["M"], r["d"], r["dtype"]) == (M, d, dtype)]
    labels = sorted({_label(r) for r in sel}, key=lambda s: (s in BASELINES, s))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    colors = plt.get_cmap("tab20").colors
    for i, lab in enumerate(labels):
        pts = sorted((r["B"], r.get("roofline_ratio"), r["samples_per_s"]) for r in sel if _label(r) == lab)
        style = dict(marker="o", linestyle="--" if lab in BASELINES else "-", label=lab,
                     color=colors[(2 * i) % 20 + (2 * i) // 20 % 2])
        xs = [p[0] for p in pts if p[1] is not None]
        if xs:
            axes[0].plot(xs, [p[1] for p in pts if p[1] is not None], **style)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], **style)
    for ax, ylab in zip(axes, ("roofline ratio (matmul FLOPs / time) / GEMM rate", "samples / s (forward + backward)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size B")
        ax.set_ylabel(ylab)
        ax.grid(True, alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(_finding(sel, M, d, dtype), fontsize=10)
    fig.tight_layout()
    out = []
    path = Path(path)
    for ext in (".png", ".pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext[1:], dpi=130)
        out.append(atomic_write_bytes(path.with_suffix(ext), buf.getvalue()))
    plt.close(fig)
    return out


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


# ----------------------------------------------------------------------------- training throughput


def training_throughput(names: list[str], M: int = 3, batch: int = 128, dim: int = 64, hidden: int = 256,
                        depth: int = 2, steps: int = 10, windows: int = 3, threads: int = 1,
                        log: Callable[[str], None] = print) -> list[dict]:
    """Samples/s of a training step of the default model (harness.train's defaults) per objective.

    Uses ``harness.models.MultiEncoder`` and ``harness.train.build_objective`` with each objective's
    *default* parameters (median bandwidth included: what ``harness train`` runs) and AdamW, on
    random inputs of the synthetic dataset's modality widths; the step is harness.train's (encode,
    loss, zero_grad, backward, step, float(loss)). Best of ``windows`` windows of ``steps`` steps.
    Returns rows with ``note`` "not measured" when harness.train is missing.
    """
    base = {"mode": "train", "M": M, "B": batch, "d": dim, "dtype": "float32", "device": "cpu",
            "torch_version": torch.__version__, "threads": threads, "device_name": _device_name(torch.device("cpu"))}
    try:
        from harness.data import DEFAULT_SYNTHETIC_DIMS
        from harness.models import MultiEncoder
        from harness.train import build_objective
    except Exception as exc:  # noqa: BLE001 - another module may be missing
        return [dict(base, objective=n, kind="ours", note=f"not measured: {type(exc).__name__}: {exc}") for n in names]
    rows = []
    dims = [DEFAULT_SYNTHETIC_DIMS[m % len(DEFAULT_SYNTHETIC_DIMS)] for m in range(M)]
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, k, generator=g) for k in dims]
    for name in names:
        torch.manual_seed(0)
        model = MultiEncoder(dims, dim, hidden, depth)
        loss_fn = build_objective(name, {})
        params = list(model.parameters()) + [p for p in loss_fn.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)

        def step():
            res = loss_fn(model(xs))
            opt.zero_grad(set_to_none=True)
            res.loss.backward()
            opt.step()
            float(res.loss.detach())

        for _ in range(3):
            step()
        best = math.inf
        per = []
        for _ in range(windows):
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            dt = (time.perf_counter() - t0) / steps
            per.append(dt)
            best = min(best, dt)
        rows.append(dict(base, objective=name, kind="ours", variant="default", params="{}", repeats=windows,
                         time_min_s=best, time_median_s=statistics.median(per), samples_per_s=batch / best,
                         loadavg_1m=_loadavg(),
                         note=f"training step of MultiEncoder(hidden={hidden}, depth={depth}), AdamW, "
                              f"min over {windows} windows of {steps} steps"))
        log(f"train {name}: {batch / best:.0f} samples/s")
    return rows


# ----------------------------------------------------------------------------- targets


def _row(rows, objective, M, B, d, chunk=None, variant="default"):
    for r in rows:
        if (r["objective"], r["M"], r["B"], r["d"], r.get("variant", "default")) == (objective, M, B, d, variant) \
                and (r.get("chunk_size") or None) == chunk and r.get("time_min_s") is not None:
            return r
    return None


def evaluate_targets(st: Settings, chunk_size: int = 1024, big: bool = True, chunk_B: int = 32768,
                     train: bool = True, parts: tuple[int, ...] = (1, 2, 3, 4, 5)) -> tuple[list[dict], list[dict]]:
    """Measure and judge the performance targets; returns (target rows, measurement rows)."""
    import objectives

    names = objectives.available()
    rows: list[dict] = []
    targets: list[dict] = []

    def judge(target, condition, measured, threshold, met, gap="", note=""):
        targets.append({"target": target, "condition": condition, "measured": measured, "threshold": threshold,
                        "met": "yes" if met else "no", "gap": gap, "note": note})

    # 1. all-pairs InfoNCE: roofline and never slower than the naive loop
    if 1 in parts:
        t1 = [Impl("infonce"), Impl("naive_clip_loop")]
        small = [(M, B, d) for M in (2, 3, 4) for B in (32, 64, 256) for d in (32, 64)]
        mid = [(3, 1024, 128), (4, 1024, 256)]
        bigs = [(6, 1024, 256), (4, 2048, 512)] if big else [(6, 512, 128)]
        sizes = small + mid + bigs
        rows += run_grid(sizes, t1, st)
        for (M, B, d) in bigs:
            r = _row(rows, "infonce", M, B, d)
            ratio = r["roofline_ratio"]
            judge("1 infonce roofline", f"M={M} B={B} d={d}", f"{ratio:.3f}", ">= 0.85", ratio >= 0.85,
                  f"{ratio - 0.85:+.3f}", f"{r['time_min_s'] * 1e3:.1f} ms, GEMM {r['gemm_gflops']:.1f} GFLOP/s; "
                  f"naive loop {_row(rows, 'naive_clip_loop', M, B, d)['roofline_ratio']:.3f}")
        sp = {(M, B, d): (_row(rows, "infonce", M, B, d) or {}).get("speedup_vs_naive") for (M, B, d) in sizes}
        sp = {k: v for k, v in sp.items() if v is not None}
        worst = min(sp, key=sp.get)
        slower = [k for k, v in sp.items() if v < 1.0]
        judge("1 infonce never slower than naive loop", f"{len(sizes)} sizes (B=32..{bigs[-1][1]})",
              f"worst speed-up {sp[worst]:.2f}x at M={worst[0]} B={worst[1]} d={worst[2]}",
              ">= 1.0x at every size", not slower,
              f"slower at {len(slower)}/{len(sp)} sizes", " ".join(f"({m},{b},{d}):{sp[(m, b, d)]:.2f}x"
                                                                  for m, b, d in slower))

    # 2. kernel objectives at B >= 2048, d = 512; unialign vs infonce at equal M, B, d
    if 2 in parts:
        t2 = [Impl("unialign", (("bandwidth", NUMERIC_BANDWIDTH),)), Impl("align_uniform"),
              Impl("cs_aligner", (("bandwidth", NUMERIC_BANDWIDTH),)), Impl("infonce")]
        t2_shapes = [(M, 2048, 512) for M in (2, 3, 4)] if big else [(M, 512, 128) for M in (2, 3)]
        t2_small = [(M, B, 64) for M in (2, 4) for B in (64, 256)]
        rows += run_grid(t2_shapes + t2_small, t2, st)
        for name in ("unialign", "align_uniform", "cs_aligner"):
            for (M, B, d) in t2_shapes:
                r = _row(rows, name, M, B, d)
                ratio = r["roofline_ratio"]
                judge(f"2 {name} roofline", f"M={M} B={B} d={d}", f"{ratio:.3f}", ">= 0.7", ratio >= 0.7,
                      f"{ratio - 0.7:+.3f}", f"{r['time_min_s'] * 1e3:.1f} ms")
        for (M, B, d) in t2_shapes + t2_small:
            u, i = _row(rows, "unialign", M, B, d), _row(rows, "infonce", M, B, d)
            if u and i:
                ratio = i["time_min_s"] / u["time_min_s"]
                judge("2 unialign never slower than infonce", f"M={M} B={B} d={d}",
                      f"infonce/unialign time {ratio:.2f}", ">= 1.0", ratio >= 1.0, f"{ratio - 1:+.2f}",
                      f"matmul FLOPs unialign/infonce {u['matmul_flops'] / i['matmul_flops']:.2f}")

    # 3. chunked all-pairs InfoNCE at M=4, B=32768, d=256: one cold forward + backward in a fresh
    # subprocess gives both the time and the peak RSS (minutes on a CPU: not repeated)
    if 3 in parts:
        M3, d3 = 4, 256
        impl = Impl("infonce", (("chunk_size", chunk_size),))
        st.log(f"chunked infonce M={M3} B={chunk_B} d={d3} chunk={chunk_size}: one run in a subprocess ...")
        probe = probe_memory(impl, M3, chunk_B, d3, torch.float32, st.threads, timeout=3600)
        gemm_rows = min(chunk_size, chunk_B)
        gt = min(interleaved({"__gemm__": gemm_call(gemm_rows, d3, chunk_B, torch.float32, st.device)},
                             st.device, 1, 3)["__gemm__"])
        gemm_rate = 2.0 * gemm_rows * chunk_B * d3 / gt
        flops = matmul_flops("infonce", M3, chunk_B, d3)
        t = probe.get("time_s")
        r = {"mode": st.mode, "objective": "infonce", "kind": "ours", "variant": "default",
             "params": json.dumps(impl.kwargs()), "M": M3, "B": chunk_B, "d": d3, "chunk_size": chunk_size,
             "dtype": "float32", "device": st.device.type, "device_name": _device_name(st.device),
             "torch_version": torch.__version__, "threads": st.threads, "loadavg_1m": _loadavg(), "warmup": 0,
             "repeats": 1, "time_min_s": t, "time_median_s": t, "samples_per_s": chunk_B / t if t else None,
             "matmul_flops": flops, "achieved_gflops": flops / t / 1e9 if t else None,
             "gemm_shape": f"{gemm_rows}x{d3}x{chunk_B}", "gemm_time_min_s": gt, "gemm_gflops": gemm_rate / 1e9,
             "roofline_ratio": flops / t / gemm_rate if t else None, **probe,
             "note": "one cold run in a fresh subprocess (time and RSS from the same run)"}
        rows.append(r)
        st.log(f"chunked: {t}s, ratio {r['roofline_ratio']}, peak RSS {probe.get('peak_rss_total_mb')} MB")
        total = r.get("peak_rss_total_mb")
        judge("3 chunked infonce memory", f"M={M3} B={chunk_B} d={d3} chunk={chunk_size}",
              f"peak RSS {total:.0f} MB (delta {r.get('peak_mem_mb', float('nan')):.0f} MB)" if total
              else "not measured", "<= 2048 MB", bool(total) and total <= 2048,
              f"{2048 - total:+.0f} MB" if total else "", r.get("memory_note", ""))
        ratio = r.get("roofline_ratio")
        judge("3 chunked infonce roofline", f"M={M3} B={chunk_B} d={d3} chunk={chunk_size}",
              f"{ratio:.3f}" if ratio else "not measured", ">= 0.5", bool(ratio) and ratio >= 0.5,
              f"{ratio - 0.5:+.3f}" if ratio else "",
              f"{t or float('nan'):.1f} s, single cold run; GEMM reference {r['gemm_shape']} "
              f"{gemm_rate / 1e9:.1f} GFLOP/s")

    # 4. gram and symile reported; ours against the symile package
    if 4 in parts:
        t4 = [Impl("symile"), Impl("symile_package"), Impl("gram")]
        t4_shapes = [(3, 64, 64), (3, 256, 64), (4, 256, 128), (3, 1024, 128), (6, 512, 64)]
        rows += run_grid(t4_shapes, t4, st)
        for (M, B, d) in t4_shapes:
            o, p, g = (_row(rows, n, M, B, d) for n in ("symile", "symile_package", "gram"))
            ratio = p["time_min_s"] / o["time_min_s"]
            judge("4 symile no slower than symile package", f"M={M} B={B} d={d}",
                  f"package/ours time {ratio:.2f} (ours {o['time_min_s'] * 1e3:.2f} ms)", ">= 1.0", ratio >= 1.0,
                  f"{ratio - 1:+.2f}", f"gram {g['time_min_s'] * 1e3:.1f} ms" if g else "gram not run")

    # 5. training throughput of the default model per objective
    if 5 in parts and train:
        trows = training_throughput(names, threads=st.threads, log=st.log)
        rows += trows
        for r in trows:
            sps = r.get("samples_per_s")
            judge("5 training throughput", f"{r['objective']} M={r['M']} batch={r['B']}",
                  f"{sps:.0f} samples/s" if sps else r.get("note", "not measured"), "reported", sps is not None,
                  "", r.get("note", ""))
    return targets, rows


def _merge_previous(tpath: Path, rows_path: Path, parts: set[int], targets: list[dict],
                    rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Previous targets of the parts not re-measured, then the new ones (ordered by part); rows likewise."""
    old_t, old_r = [], []
    if tpath.exists():
        with open(tpath, newline="") as handle:
            old_t = [t for t in csv.DictReader(handle) if int(t["target"].split()[0]) not in parts]
    if rows_path.exists():
        new_keys = {(str(r.get("objective")), str(r.get("M")), str(r.get("B")), str(r.get("d")),
                     str(r.get("chunk_size") or ""), str(r.get("mode"))) for r in rows}
        with open(rows_path, newline="") as handle:
            old_r = [r for r in csv.DictReader(handle)
                     if (r["objective"], r["M"], r["B"], r["d"], r["chunk_size"], r["mode"]) not in new_keys]
    merged = sorted(old_t + targets, key=lambda t: int(str(t["target"]).split()[0]))
    return merged, old_r + rows


def targets_markdown(targets: list[dict], header: str) -> str:
    cols = ["target", "condition", "measured", "threshold", "met", "gap", "note"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for t in targets:
        lines.append("| " + " | ".join(str(t.get(c, "")).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def targets_csv(targets: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["target", "condition", "measured", "threshold", "met", "gap", "note"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(targets)
    return buf.getvalue()


# ----------------------------------------------------------------------------- CLI


_GEMM_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm")


def breakdown(impl: Impl, M: int, B: int, d: int, st: Settings, rounds: int = 4) -> dict:
    """GEMM share of one forward + backward (torch.profiler self times) and the GEMMs' efficiency
    against the reference GEMM rate of the same rounds (min over ``rounds`` profiled calls)."""
    dtype = st.dtypes[0]
    zs = make_inputs(M, B, d, dtype, st.device)
    step = fwd_bwd(make_loss(impl, st.device), zs)
    gemm = gemm_call(B, d, B, dtype, st.device)
    timer = _timer(st.device)
    for _ in range(max(st.warmup, 1)):
        step()
        gemm()
    best = None
    for _ in range(rounds):
        with torch.profiler.profile() as prof:
            wall = timer(step)
        gemm_s = sum(e.self_device_time_total if st.device.type == "cuda" else e.self_cpu_time_total
                     for e in prof.key_averages() if e.key in _GEMM_OPS) / 1e6
        ref = min(timer(gemm) for _ in range(5))
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
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per implementation")
    p.add_argument("--repeats", type=int, default=None, help="timed interleaved rounds (min and median)")
    p.add_argument("--memory", choices=["auto", "all", "none"], default=None,
                   help="CPU peak memory via a subprocess per configuration (auto: B >= 512)")
    p.add_argument("--slow-s", type=float, default=None,
                   help="time once when the first call exceeds this many seconds (default 10; --quick: never)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds per configuration: extra interleaved rounds (up to 200) for fast ones "
                        "(default 3; --quick: 0, i.e. exactly --repeats rounds)")
    p.add_argument("--no-train", action="store_true", help="--targets: skip the training throughput")
    p.add_argument("--parts", default="1,2,3,4,5", help="--targets: which targets to measure")
    p.add_argument("--chunk-batch", type=int, default=32768, help="--targets: B of the chunked target")
    p.add_argument("--small-targets", action="store_true",
                   help="--targets at reduced sizes (a smoke test of the mode, not the targets)")


def main(args) -> int:
    import objectives

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 1
    if args.dtype:
        dtypes = [getattr(torch, s.strip()) for s in args.dtype.split(",")]
    else:
        dtypes = [torch.float32, torch.bfloat16] if device.type == "cuda" else [torch.float32]
    mode = "quick" if args.quick else "full" if args.full else "targets" if args.targets else "default"
    st = Settings(
        device=device, dtypes=dtypes, threads=torch.get_num_threads(),
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
        repeats=args.repeats if args.repeats is not None else (3 if args.quick else 5),
        memory=args.memory or ("none" if args.quick else "auto"), mode=mode,
        slow_s=args.slow_s if args.slow_s is not None else (math.inf if args.quick else 10.0),
        budget_s=args.budget_s if args.budget_s is not None else (0.0 if args.quick else 3.0),
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
        if parts != {1, 2, 3, 4, 5}:  # re-measured a subset: keep the other targets' earlier results
            targets, rows = _merge_previous(tpath, out, parts, targets, rows)
        atomic_write_text(tpath, targets_csv(targets))
        header = (f"# Throughput targets\n\nMeasured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
                  f"{_device_name(device)} ({device.type}), torch {torch.__version__}, {st.threads} threads, "
                  f"1-min load average {_loadavg()} at the end; min of at least {st.repeats} interleaved rounds "
                  f"(up to 200 within {st.budget_s:g} s per configuration), ratios from the same rounds.")
        if parts != {1, 2, 3, 4, 5}:
            header += f" Targets {sorted(parts)} re-measured in this run; the others kept from the previous run."
        atomic_write_text(tpath.with_suffix(".md"), targets_markdown(targets, header))
        atomic_write_text(out, rows_to_csv(rows))
        met = sum(t["met"] == "yes" for t in targets)
        print(f"{met}/{len(targets)} targets met; {tpath} {tpath.with_suffix('.md')} {out} "
              f"({time.perf_counter() - t0:.0f}s)")
        return 0
    names = args.objectives.split(",") if args.objectives else objectives.available()
    unknown = [n for n in names if n not in objectives.available() and n not in BASELINES]
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
