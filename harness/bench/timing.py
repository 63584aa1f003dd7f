"""Interleaved timing (thread CPU time or wall clock on the CPU, CUDA events on a GPU) and peak
memory probes."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from harness.bench.impls import Impl, fwd_bwd, make_inputs, make_loss

CLOCKS = ("auto", "thread", "wall")


def resolve_clock(clock: str, device: torch.device, threads: int) -> str:
    """"cuda" on a GPU; on the CPU "thread" (CPU time of the calling thread) for one torch thread
    and "wall" otherwise when ``clock`` is "auto".

    Thread CPU time counts only the time the timed thread ran, so a busy machine that preempts it
    cannot lengthen a measurement (wall-clock minima of long calls, which are rarely left
    unpreempted on a shared machine, overstate their time against short ones such as the reference
    GEMM); with several torch threads the work of the others would be missing, so the wall clock
    is used there."""
    if device.type == "cuda":
        return "cuda"
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    if clock == "auto":
        return "thread" if threads == 1 else "wall"
    return clock


def timer(device: torch.device, clock: str = "wall") -> Callable[[Callable[[], None]], float]:
    """Seconds one call takes: CUDA events on a GPU, else ``clock`` ("thread" or "wall")."""
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

    def thread(fn):
        t0 = time.thread_time()
        fn()
        return time.thread_time() - t0

    return thread if clock == "thread" else wall


def interleaved(calls: dict[str, Callable[[], None]], device: torch.device, warmup: int, repeats: int,
                slow_s: float = 10.0, budget_s: float = 0.0, max_rounds: int = 200,
                clock: str = "wall") -> dict[str, list[float]]:
    """Time every call once per round, rotating the order; ``warmup`` untimed calls first.

    Names starting with ``__`` (the reference GEMM) are never "slow", get at least one warm-up call
    and at least ten timed calls (cheap next to a loss; a noisy reference could only *lower* the
    roofline ratios, never inflate them). With ``budget_s`` > 0 the number of rounds grows beyond
    ``repeats`` (up to ``max_rounds``) until about ``budget_s`` seconds are spent: many rounds of
    short calls make their minimum robust against a busy machine at little cost.
    """
    clock = timer(device, clock)
    times: dict[str, list[float]] = {k: [] for k in calls}
    active = list(calls)
    for name in list(active):
        ref = name.startswith("__")
        first = clock(calls[name])
        if first > slow_s and not ref:  # too slow to repeat: keep the single (cold) timing
            times[name].append(first)
            active.remove(name)
            continue
        for _ in range(max(warmup - 1, 1 if ref else 0)):
            calls[name]()
    if budget_s > 0 and active:
        round_s = sum(clock(calls[name]) for name in active)  # one more warm-up round, timed
        repeats = max(repeats, min(max_rounds, int(budget_s / max(round_s, 1e-9))))
    for r in range(repeats):
        shift = r % max(len(active), 1)
        for name in active[shift:] + active[:shift]:
            times[name].append(clock(calls[name]))
    for name in active:
        while name.startswith("__") and len(times[name]) < 10:
            times[name].append(clock(calls[name]))
    return times


def loadavg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return float("nan")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model() or platform.processor() or platform.machine()


def cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo), or None where it is not available."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


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
    code = ("import json, sys; from harness.bench.timing import probe_memory_here; "
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
