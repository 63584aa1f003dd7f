"""DDP training (2 gloo processes on 127.0.0.1 via torchrun) equals one process with the full batch.

Tolerance: per-step losses and the final epoch metrics agree to 1e-5 (absolute, or relative for
values above 1); final weights to 1e-4 absolute (float32 reductions happen in a different order
across ranks, and AdamW's normalisation amplifies last-bit differences slightly).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.experiment import data as hd

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv, env):
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.parametrize("objective, params", [("infonce", []), ("unialign", ["bandwidth=median"])])
def test_two_gloo_ranks_match_one_process(tmp_path, objective, params):
    data = tmp_path / "data"
    hd.build_synthetic(data, hd.SyntheticConfig(n_modalities=3, n_samples=240, n_classes=4, latent_dim=4,
                                                dims=[10, 8, 6], seed=1))
    common = ["train", "--data", str(data), "--objective", objective, "--n-modalities", "3", "--seed", "0",
              "--epochs", "2", "--batch-size", "32", "--dim", "8", "--hidden", "16", "--depth", "1",
              "--lr", "1e-3", "--quiet", "--eval-every", "2"]
    for p in params:
        common += ["--param", p]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    run([sys.executable, "-m", "harness"] + common + ["--out", str(tmp_path / "single")], env)
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "harness"]
        + common + ["--out", str(tmp_path / "ddp")], env)

    s1 = pd.read_csv(tmp_path / "single" / "steps.csv")
    s2 = pd.read_csv(tmp_path / "ddp" / "steps.csv")
    assert len(s1) == len(s2) == 2 * (168 // 32)
    for a, b in zip(s1["loss"], s2["loss"]):
        assert math.isclose(a, b, rel_tol=TOL, abs_tol=TOL), (a, b)
    f1 = json.loads((tmp_path / "single" / "train.json").read_text())
    f2 = json.loads((tmp_path / "ddp" / "train.json").read_text())
    assert f2["world_size"] == 2 and f1["world_size"] == 1
    for k, v in f1["final"].items():
        assert math.isclose(v, f2["final"][k], rel_tol=TOL, abs_tol=TOL), (k, v, f2["final"][k])
    m1 = torch.load(tmp_path / "single" / "model.pt", weights_only=True)["model"]
    m2 = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)["model"]
    for k in m1:
        assert torch.allclose(m1[k], m2[k], atol=1e-4), k


def test_a_stopped_rank_ends_the_run_with_a_message_naming_it(tmp_path):
    """Two gloo ranks on 127.0.0.1; rank 1 is SIGSTOPped mid-run; rank 0 gives up after the
    process-group timeout with one line naming rank 1 instead of waiting forever. The timeout
    (8 s) must exceed rank 0's validation and checkpoint time, during which rank 1 waits."""
    import signal
    import time

    data = tmp_path / "data"
    hd.build_synthetic(data, hd.SyntheticConfig(n_modalities=2, n_samples=200, n_classes=4, latent_dim=4,
                                                dims=[6, 5], seed=1))
    argv = [sys.executable, "-m", "harness", "train", "--data", str(data), "--objective", "infonce",
            "--n-modalities", "2", "--steps", "100000", "--eval-every-steps", "2", "--batch-size", "16",
            "--dim", "4", "--hidden", "8", "--depth", "1", "--quiet", "--val-instruments", "core",
            "--dist-timeout-s", "8", "--out", str(tmp_path / "run")]
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), RANK=str(rank), LOCAL_RANK=str(rank),
                   WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    try:
        ckpt = tmp_path / "run" / "checkpoint.pt"
        deadline = time.time() + 120
        while not ckpt.exists() and procs[0].poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert ckpt.exists(), procs[0].stderr.read() if procs[0].poll() is not None else "no checkpoint"
        procs[1].send_signal(signal.SIGSTOP)
        t0 = time.time()
        _out, err = procs[0].communicate(timeout=90)
        assert procs[0].returncode == 1, err
        assert time.time() - t0 < 60
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, err
        assert "rank 0 of 2" in lines[0] and "rank 1" in lines[0] and "did not complete in time" in lines[0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
