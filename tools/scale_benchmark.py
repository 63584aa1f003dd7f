"""Paper-scale benchmark: a user features file through ``harness data`` -> ``train`` -> ``evaluate``.

    python tools/scale_benchmark.py --work /tmp/scale            # n = 150000, M = 3, dims 768/512/1024
    python tools/scale_benchmark.py --work /tmp/scale --n 60000  # a smaller case
    python tools/scale_benchmark.py --work /tmp/scale --repo OTHER_CHECKOUT   # the same on other code

Writes ``features.npz`` (a seeded shared latent seen through one random linear map per modality plus
noise; no labels, so no probes), then runs each step as ``/usr/bin/time -v python -m harness ...`` in
``--repo`` and prints one Markdown row per step: wall time and peak resident memory (``Maximum resident
set size``). The numbers of ``docs/performance.md`` come from this script.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_features(path: Path, n: int, dims: list[int], seed: int = 0, latent: int = 32, noise: float = 0.5) -> None:
    """Rows paired through a shared latent; written atomically (a temporary name, then renamed)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, latent)).astype(np.float32)
    arrays = {}
    for m, d in enumerate(dims):
        w = rng.standard_normal((latent, d)).astype(np.float32) / np.sqrt(latent)
        x = z @ w
        x += noise * rng.standard_normal((n, d)).astype(np.float32)
        arrays[f"modality_{m}"] = x
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of ``cmd`` under ``/usr/bin/time -v``; raises if it fails."""
    env = dict(os.environ, PYTHONPATH=str(cwd))
    full = ["/usr/bin/time", "-v", *cmd]
    print("$ " + " ".join(shlex.quote(c) for c in full), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(full, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: {cmd[3]} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if m is None:
        raise SystemExit("error: /usr/bin/time -v printed no 'Maximum resident set size'")
    return wall, int(m.group(1)) / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="working folder (features, dataset, run, metrics)")
    p.add_argument("--repo", default=str(REPO), help="checkout whose `python -m harness` runs (default: this one)")
    p.add_argument("--n", type=int, default=150_000, help="rows of the features file")
    p.add_argument("--dims", default="768,512,1024", help="comma-separated per-modality dims (M = their count)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--objective", default="infonce")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--extra-evaluate", default="", help="more evaluate arguments (shell words)")
    a = p.parse_args(argv)
    dims = [int(x) for x in a.dims.split(",")]
    work, repo = Path(a.work).resolve(), Path(a.repo).resolve()
    work.mkdir(parents=True, exist_ok=True)
    feats = work / f"features_n{a.n}.npz"
    if not feats.exists():
        make_features(feats, a.n, dims)
    py = [sys.executable, "-m", "harness"]
    data, run, out = work / "data", work / "run", work / "metrics.json"
    for f in (out,):
        f.unlink(missing_ok=True)
    steps = {
        "data": py + ["data", "--dataset", "features", "--features", str(feats), "--out", str(data)],
        "train": py + ["train", "--data", str(data), "--objective", a.objective, "--n-modalities", str(len(dims)),
                       "--steps", str(a.steps), "--batch-size", str(a.batch_size), "--out", str(run),
                       "--threads", str(a.threads), "--quiet"],
        "evaluate": py + ["evaluate", "--run", str(run), "--out", str(out), "--threads", str(a.threads),
                          *shlex.split(a.extra_evaluate)],
    }
    print(f"| step | n = {a.n} |\n|---|---|")
    for name, cmd in steps.items():
        wall, gb = timed(cmd, repo)
        print(f"| {name} | {wall:.0f} s, {gb:.2f} GB |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
