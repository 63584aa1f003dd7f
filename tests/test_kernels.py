"""The fused log-sum-exp kernels against plain autograd, on both of their internal paths.

``pair_lse`` has a single-shift fast path and a two-shift path used when a shift could underflow;
``total_lse`` has a one-block and a chunked (online) path. Each must give the same value and
gradients as ``torch.logsumexp`` with autograd, in float64 and float32, and half precision must stay
finite and close to float32.
"""

from __future__ import annotations

import pytest
import torch

import objectives
from objectives import kernels
from objectives.kernels import pair_lse, total_lse


@pytest.fixture(params=["fused", "autograd"])
def pair_path(request, monkeypatch):
    """Run a test once through the fused Function and once through the small-block autograd path."""
    monkeypatch.setattr(kernels, "FUSED_MIN_ENTRIES", 0 if request.param == "fused" else 10**12)
    return request.param


def _reference_pair(a, k, w_row, w_col, exclude):
    s = torch.einsum("id,bjd->ibj", a, k)
    if exclude:
        s = s.clone()
        idx = torch.arange(a.shape[0])
        s[idx, :, idx] = float("-inf")
    return w_row * torch.logsumexp(s, 2).sum() + w_col * torch.logsumexp(s, 0).sum()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("nb", [1, 3])
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("scale", [1.0, 30.0, 400.0])  # 400: rows far apart -> two-shift path
@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("inner_scale", [False, True])
def test_pair_lse_matches_autograd(dtype, nb, exclude, scale, chunk, inner_scale, pair_path):
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(7, 4, generator=gen, dtype=dtype), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(nb, 7, 4, generator=gen, dtype=dtype), dim=-1)
    a.requires_grad_(True)
    k.requires_grad_(True)
    if inner_scale:  # the scale handed to the kernel as a float
        got = pair_lse(a, k, 0.3, 0.7, exclude, 0, chunk, scale=scale)
    else:
        got = pair_lse(a * scale, k, 0.3, 0.7, exclude, 0, chunk)
    ref = _reference_pair(a * scale, k, 0.3, 0.7, exclude)
    tol = dict(rtol=1e-10, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-4)
    torch.testing.assert_close(got, ref, **tol)
    for g, r in zip(torch.autograd.grad(got, (a, k)), torch.autograd.grad(ref, (a, k))):
        torch.testing.assert_close(g, r, **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("same", [True, False])
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("chunk", [None, 2])
def test_total_lse_matches_autograd(dtype, same, exclude, chunk):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=gen, dtype=dtype, requires_grad=True)
    y = None if same else torch.randn(6, 3, generator=gen, dtype=dtype, requires_grad=True)
    got = total_lse(x, y, 2.5, exclude, 0, chunk)
    s = 2.5 * x @ (x if same else y).T
    if exclude:
        s = s.masked_fill(torch.eye(6, dtype=torch.bool), float("-inf"))
    ref = torch.logsumexp(s.reshape(-1), 0)
    inputs = (x,) if same else (x, y)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, ref, **tol)
    for g, r in zip(torch.autograd.grad(got, inputs), torch.autograd.grad(ref, inputs)):
        torch.testing.assert_close(g, r, **tol)


@pytest.mark.parametrize("name", objectives.available())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_close_to_float32(name, dtype, pair_path):
    params = {"bandwidth": 0.5} if "bandwidth" in objectives.parameters(name) else {}
    loss_fn = objectives.build(name, **params)
    z = torch.randn(3, 48, 16, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    ref = loss_fn(z).loss
    low = z.to(dtype).requires_grad_(True)
    torch.manual_seed(0)
    out = loss_fn(low)
    out.loss.backward()
    assert out.loss.dtype == dtype
    assert torch.isfinite(low.grad).all()
    assert abs(float(out.loss.detach()) - float(ref)) <= 0.03 * abs(float(ref)) + 0.05


def test_low_temperature_is_finite_in_float32():
    z = torch.randn(4, 64, 32, generator=torch.Generator().manual_seed(3), requires_grad=True)
    for name in ("infonce", "dcl", "cs_aligner", "gram", "symile"):
        params = {"temperature": 0.01}
        if name == "cs_aligner":
            params["bandwidth"] = 0.05
        out = objectives.build(name, **params)(z)
        (grad,) = torch.autograd.grad(out.loss, z)
        assert torch.isfinite(out.loss) and torch.isfinite(grad).all(), name


@pytest.mark.parametrize("name", ["infonce", "infonce_anchor", "dcl", "cs_aligner"])
@pytest.mark.parametrize("learnable", [False, True])
def test_fused_and_small_paths_agree_on_objectives(name, learnable, monkeypatch):
    params = {"learnable_temperature": learnable, "temperature": 0.1}
    if name == "cs_aligner":
        params["bandwidth"] = 0.5
    z = torch.randn(4, 12, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64,
                    requires_grad=True)
    results = []
    for threshold in (0, 10**12):
        monkeypatch.setattr(kernels, "FUSED_MIN_ENTRIES", threshold)
        loss_fn = objectives.build(name, **params).double()
        out = loss_fn(z)
        grads = torch.autograd.grad(out.loss, [z, *loss_fn.parameters()])
        results.append((out.loss, grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    for g0, g1 in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g0, g1, rtol=1e-10, atol=1e-12)
