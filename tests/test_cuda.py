"""CUDA parity: every objective and the fused kernels on a GPU against the CPU in float64.

Skipped without a CUDA device. Run on a GPU machine with
``python -m pytest -q tests/test_cuda.py`` (a minute), then the measurements with
``python -m harness throughput --gpu`` (docs/performance.md).
"""

from __future__ import annotations

import csv

import pytest
import torch
from reference_losses import make_zs

import objectives
from objectives import kernels
from objectives.kernels import gram_volumes, lse, volume_lse

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def _params(name):
    return {"bandwidth": 0.5} if "bandwidth" in objectives.parameters(name) else {}


def _loss_and_grads(name, params, raw, device, dtype, seed=0):
    zs = [z.detach().to(device=device, dtype=dtype).requires_grad_(True) for z in raw]
    torch.manual_seed(seed)  # symile's sampled negatives
    out = objectives.build(name, **params).to(device)(zs)
    return out.loss, torch.autograd.grad(out.loss, zs)


@pytest.mark.parametrize("name", objectives.available())
@pytest.mark.parametrize("B", [8, 300])  # the small-batch path and the fused kernels
def test_float32_on_cuda_matches_float64_on_cpu(name, B):
    params = _params(name)
    raw = make_zs(3, B, 16, seed=B)
    if name == "symile":
        params = {"negatives": "n_squared"} if B == 8 else params
    ref, ref_g = _loss_and_grads(name, params, raw, torch.device("cpu"), torch.float64)
    got, got_g = _loss_and_grads(name, params, raw, CUDA, torch.float32)
    torch.testing.assert_close(got.double().cpu(), ref, rtol=2e-4, atol=2e-4)
    for g, r in zip(got_g, ref_g):
        torch.testing.assert_close(g.double().cpu(), r, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("name", objectives.available())
def test_bfloat16_on_cuda_finite_and_close(name):
    params = _params(name)
    raw = make_zs(3, 256, 32, seed=3)
    ref, _ = _loss_and_grads(name, params, raw, CUDA, torch.float32)
    got, grads = _loss_and_grads(name, params, raw, CUDA, torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.isfinite(got)
    assert all(torch.isfinite(g).all() for g in grads)
    assert abs(float(got.detach()) - float(ref.detach())) <= 0.03 * abs(float(ref.detach())) + 0.05


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("scale", "chunk", "rows", "cols", "w_col"), [
    (1 / 0.07, None, None, None, 0.5), (1000.0, None, None, None, 0.5), (1 / 0.07, 7, None, None, 0.5),
    (1 / 0.07, None, slice(10, 30), None, 0.0), (1 / 0.07, 5, None, slice(10, 30), 0.5),
])
def test_volume_kernel_on_cuda(dtype, scale, chunk, rows, cols, w_col):
    raw = torch.nn.functional.normalize(torch.stack(make_zs(4, 40, 12, seed=5)), dim=-1)
    w_row = 0.5 if cols is None else 0.0
    out = []
    for device, dt in ((torch.device("cpu"), torch.float64), (CUDA, dtype)):
        z = raw.to(device=device, dtype=dt).requires_grad_(True)
        pos, total = volume_lse(z, 0, scale, w_row, w_col, -0.01, 1e-6, rows, cols, chunk)
        out.append((pos, total, torch.autograd.grad(pos + total, z)[0]))
    tol = {"rtol": 1e-9, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    for got, ref in zip(out[1], out[0]):
        torch.testing.assert_close(got.double().cpu(), ref, **{k: v * max(1.0, scale / 14) for k, v in tol.items()})


def test_volume_kernel_on_cuda_matches_direct_formulation():
    z = torch.nn.functional.normalize(torch.randn(3, 64, 16, dtype=torch.float64, device=CUDA), dim=-1)
    v = gram_volumes(z[0], z[1:], 1e-6)
    logits = -v / 0.07
    ref = 0.5 * (torch.logsumexp(logits, 1).sum() + torch.logsumexp(logits, 0).sum())
    pos, total = volume_lse(z, 0, 1 / 0.07, 0.5, 0.5)
    torch.testing.assert_close(total, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pos, v.diagonal().sum(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["infonce", "infonce_anchor", "infonce_reweighted"])
def test_small_path_on_cuda_matches_general_path(name, monkeypatch):
    raw = make_zs(3, 32, 16, seed=7)
    small = _loss_and_grads(name, {}, raw, CUDA, torch.float32)
    monkeypatch.setattr(lse, "SMALL_MAX_BATCH", 0)
    general = _loss_and_grads(name, {}, raw, CUDA, torch.float32)
    torch.testing.assert_close(small[0], general[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(small[1], general[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_generated_tail_on_cuda_matches_eager():
    raw = make_zs(3, 1024, 64, seed=11)
    eager = _loss_and_grads("infonce", {}, raw, CUDA, torch.float32)
    with kernels.generated_kernels(True):
        generated = _loss_and_grads("infonce", {}, raw, CUDA, torch.float32)
    info = kernels.generated_kernels_info()
    if info["error"]:
        pytest.skip(f"generated kernels unavailable here: {info['error']}")
    torch.testing.assert_close(generated[0], eager[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(generated[1], eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_gpu_mode_writes_rows_naming_the_device(tmp_path):
    from harness import cli

    out = tmp_path / "gpu.csv"
    rc = cli.main(["throughput", "--gpu", "--shapes", "3,256,64", "--objectives", "infonce,gram",
                   "--out", str(out), "--fig", "", "--repeats", "2", "--warmup", "1", "--budget-s", "0"])
    assert rc == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["dtype"] for r in rows} == {"float32", "bfloat16"}
    assert all(r["device"] == "cuda" and r["device_name"] == torch.cuda.get_device_name() for r in rows)
    assert all(r["clock"] == "cuda" and float(r["time_min_s"]) > 0 for r in rows)
