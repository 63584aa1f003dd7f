"""GRAM's small-batch volume path against the direct determinants, the fused kernel and gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import objectives
from objectives.kernels import gram_volumes, small_volume_fits, small_volume_lse, volume_lse
from objectives.kernels import volume_small


def _unit(M: int, B: int, d: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(M, B, d, generator=g, dtype=dtype), dim=-1)


def _direct(z, anchor, scale, w_row, w_col, w_mean, eps):
    """Both sums from B^2 explicit determinants (the reference the fused kernel is held to)."""
    others = torch.stack([z[m] for m in range(z.shape[0]) if m != anchor])
    v = gram_volumes(z[anchor], others, eps)
    logits = -scale * v
    total = w_row * torch.logsumexp(logits, 1).sum() + w_col * torch.logsumexp(logits, 0).sum() \
        + w_mean * logits.sum()
    return v.diagonal().sum(), total


@pytest.mark.parametrize("M", [2, 3, 4])
@pytest.mark.parametrize("weights", [(0.5, 0.5, 0.0), (1.0, 0.0, 0.0), (0.5, 0.5, -0.01), (0.0, 1.0, 1.0)])
def test_small_volume_lse_equals_direct_determinants_every_anchor(M, weights):
    z = _unit(M, 11, 6, seed=M)
    for anchor in range(M):
        got = small_volume_lse(z, anchor, 7.0, *weights, eps=1e-6)
        want = _direct(z, anchor, 7.0, *weights, 1e-6)
        for g, w in zip(got, want):
            assert torch.allclose(g, w, rtol=0, atol=1e-11), (anchor, float(g), float(w))


@pytest.mark.parametrize("M", [2, 3, 4])
def test_small_volume_lse_equals_fused_kernel_with_gradients(M):
    z = _unit(M, 9, 5, seed=10 + M).requires_grad_()
    grads = []
    for fn in (small_volume_lse, volume_lse):
        pos, lse = fn(z, M - 1, 12.0, 0.5, 0.5, -0.02)
        (0.3 * pos + lse).backward()
        grads.append((pos.detach(), lse.detach(), z.grad.clone()))
        z.grad = None
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_small_volume_lse_collinear_and_repeated_tuples_match_direct():
    z = _unit(4, 7, 5, seed=3)
    z[2, :3] = z[1, :3]  # repeated rows: det C_j = 0 for three tuples
    z[3, 4] = -z[1, 4]  # collinear (opposite) rows
    z[0, 5] = z[1, 5]  # an anchor inside its own tuple's span: volume eps ** 0.5
    got = small_volume_lse(z, 0, 5.0, 0.5, 0.5, eps=1e-6)
    want = _direct(z, 0, 5.0, 0.5, 0.5, 0.0, 1e-6)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=0, atol=1e-11)
    v = gram_volumes(z[0], z[1:], 1e-6)
    assert v[:3].diagonal()[:3].allclose(torch.full((3,), 1e-3, dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("M", [2, 3, 4])
def test_small_volume_lse_gradcheck_inputs_and_learnable_scale(M):
    z = _unit(M, 5, 4, seed=20 + M).requires_grad_()
    scale = torch.tensor(6.0, dtype=torch.float64, requires_grad=True)

    def both(z, scale):
        pos, lse = small_volume_lse(z, 1, scale, 0.5, 0.5, -0.05)
        return 0.7 * pos + lse

    assert torch.autograd.gradcheck(both, (z, scale))


def test_small_volume_lse_float32_close_to_float64_and_large_scale_finite():
    z64 = _unit(3, 64, 32, seed=5)
    z32 = z64.float().requires_grad_()
    for scale in (1 / 0.07, 1 / 0.001):  # temperature 0.001: exp far beyond the float range unshifted
        got = small_volume_lse(z32, 0, scale, 0.5, 0.5)
        want = _direct(z64, 0, scale, 0.5, 0.5, 0.0, 1e-6)
        for g, w in zip(got, want):
            g = g.detach()
            assert torch.isfinite(g) and abs(float(g) - float(w)) <= 1e-4 * max(1.0, abs(float(w)))
        sum(got).backward()
        assert torch.isfinite(z32.grad).all()
        z32.grad = None


def test_small_volume_fits_boundaries():
    cols = volume_small.SMALL_VOLUME_MAX_COLUMNS
    assert cols == 256
    assert small_volume_fits(torch.zeros(2, 256, 4)) and not small_volume_fits(torch.zeros(2, 257, 4))
    assert small_volume_fits(torch.zeros(3, 128, 4)) and not small_volume_fits(torch.zeros(3, 129, 4))
    assert small_volume_fits(torch.zeros(4, 85, 4)) and not small_volume_fits(torch.zeros(4, 86, 4))
    assert small_volume_fits(torch.zeros(4, 1, 4, dtype=torch.float64)) and small_volume_fits(torch.zeros(2, 1, 4))
    assert not small_volume_fits(torch.zeros(5, 8, 4))  # K = 4: no closed-form cofactors here
    assert not small_volume_fits(torch.zeros(1, 8, 4))
    assert not small_volume_fits(torch.zeros(3, 8, 4, dtype=torch.bfloat16))
    assert not small_volume_fits(torch.zeros(3, 8, 4, dtype=torch.float16))
    assert not small_volume_fits(torch.zeros(3, 8, 4), chunk_size=4)
    assert not small_volume_fits(torch.zeros(8, 4))
    assert not small_volume_fits(torch.zeros(3, 0, 4))


@pytest.mark.parametrize("M", [2, 3, 4])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_gram_objective_small_path_equals_fused_path(M, label_smoothing, monkeypatch):
    g = torch.Generator().manual_seed(M)
    xs = [torch.randn(16, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(M)]
    loss = objectives.build("gram", temperature=0.05, label_smoothing=label_smoothing, anchor=M - 1)
    results = []
    for columns in (256, 0):  # 0: nothing fits, the fused kernel runs
        monkeypatch.setattr(volume_small, "SMALL_VOLUME_MAX_COLUMNS", columns)
        out = loss(xs)
        grads = torch.autograd.grad(out.loss, xs)
        results.append((out.loss.detach(), {k: v.detach() for k, v in out.terms.items()}, grads))
    (l1, t1, g1), (l2, t2, g2) = results
    assert torch.allclose(l1, l2, rtol=0, atol=1e-12)
    assert t1.keys() == t2.keys() and all(torch.allclose(t1[k], t2[k], rtol=0, atol=1e-12) for k in t1)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(g1, g2))


def test_fused_volume_lse_mean_term_alone_with_shifted_exp_matches_direct_gradient():
    """Only the mean term (no row or column log-sum-exp) where exp needs a shift (scale 1000):
    its gradient is w_mean dL/dz, not the logits."""
    z = _unit(3, 6, 5, seed=0).requires_grad_()
    _, lse = volume_lse(z, 0, 1000.0, 0.0, 0.0, 0.3)
    (got,) = torch.autograd.grad(lse, z)
    (want,) = torch.autograd.grad(0.3 * (-1000.0 * gram_volumes(z[0], z[1:], 1e-6)).sum(), z)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)
