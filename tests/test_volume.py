"""GRAM's volume kernel (objectives.kernels.volume_lse) against the direct formulation.

The direct formulation (:func:`objectives.kernels.gram_volumes`) builds every M x M Gram matrix and
takes its determinant; the kernel factors det G(a, X) = det(X X^T) |a|^2 - c^T adj(X X^T) c through
per-tuple eigen-frames. In float64 both must agree to 1e-6 (they agree to ~1e-12) in value and in
gradient on every path -- no shift and exact shifts, one block and row chunks, all rows and a
rank's rows (offset, one softmax direction), label smoothing's mean term, a learnable scale -- for
M = 2..8 and for collinear and near-collinear tuples, where only the eps guard keeps the square
root differentiable; gradcheck confirms the gradients; half precision stays finite and close.
(Closer to collinear than det ~ 1e-14 both formulations are rounding noise: the direct one's
determinant may come out negative and be clamped, with zero gradient, where the factorised one
still sees the true small height.)
"""

from __future__ import annotations

import math

import pytest
import torch

from objectives.kernels import gram_volumes, volume, volume_lse

EPS = 1e-6
F64 = {"rtol": 1e-9, "atol": 1e-9}


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def _data(M, B, d, seed=0, kind="random", dtype=torch.float64):
    """anchors (B, d) and tuples (M - 1, B, d) of unit rows; ``kind`` plants degenerate tuples."""
    g = torch.Generator().manual_seed(seed)
    a = _unit(torch.randn(B, d, generator=g, dtype=torch.float64))
    x = _unit(torch.randn(M - 1, B, d, generator=g, dtype=torch.float64))
    K = M - 1
    if kind == "collinear":
        # tuple 0: the anchor's own row repeated (det G = 0 for (0, 0)); tuple 1: two equal members
        # (det C = 0: every pair with tuple 1 has zero volume); tuple 2: all members equal (rank 1)
        x[:, 0] = a[0]
        if K > 1:
            x[1, 1] = x[0, 1]
            x[:, 2] = x[0, 2]
        a[3] = x[0, 4]  # an anchor that is a tuple member
    elif kind == "aligned":  # training-like: every tuple close to its anchor, positives near-degenerate
        x = _unit(a.unsqueeze(0) + 0.05 * torch.randn(K, B, d, generator=g, dtype=torch.float64))
    elif kind == "near_collinear":
        tiny = 1e-4 * torch.randn(K, B, d, generator=g, dtype=torch.float64)
        x[:, 0] = _unit(a[0] + tiny[:, 0])  # anchor 0 almost in tuple 0's span
        if K > 1:
            x[1, 1] = _unit(x[0, 1] + tiny[1, 1])
        a[2] = _unit(x[0, 2] + 1e-3 * tiny[0, 3])  # height ~1e-7 over the span, det ~1e-14
    return a.to(dtype), x.to(dtype)


def _stack(a, x):
    return torch.cat([a.unsqueeze(0), x])


def _reference(z, anchor, scale, w_row, w_col, w_mean, rows=slice(None), cols=slice(None)):
    """The same two outputs from the direct formulation with plain autograd."""
    others = torch.cat([z[:anchor], z[anchor + 1 :]])
    B = z.shape[1]
    r0, c0 = rows.indices(B)[0], cols.indices(B)[0]
    v = gram_volumes(z[anchor, rows], others[:, cols], EPS)
    logits = -scale * v
    pos = v.diagonal(r0 - c0).sum()
    lse = w_mean * logits.sum()
    if w_row:
        lse = lse + w_row * torch.logsumexp(logits, dim=1).sum()
    if w_col:
        lse = lse + w_col * torch.logsumexp(logits, dim=0).sum()
    return pos, lse


def _compare(z, anchor, scale, w_row, w_col, w_mean, rows=None, cols=None, chunk=None, tol=F64, row_norm=None):
    z = z.clone().requires_grad_(True)
    learnable = isinstance(scale, torch.Tensor)
    got = volume_lse(z, anchor, scale, w_row, w_col, w_mean, EPS, rows, cols, chunk, row_norm)
    ref = _reference(z, anchor, scale, w_row, w_col, w_mean, rows or slice(None), cols or slice(None))
    inputs = (z, scale) if learnable else (z,)
    for which, (g, r) in enumerate(zip(got, ref)):
        torch.testing.assert_close(g, r.to(g.dtype), **tol)
        for gg, rr in zip(torch.autograd.grad(g, inputs, retain_graph=True, allow_unused=True),
                          torch.autograd.grad(r, inputs, retain_graph=True, allow_unused=True)):
            gg = torch.zeros_like(rr) if gg is None else gg
            rr = torch.zeros_like(gg) if rr is None else rr
            # gradients grow with the scale: the tolerance is relative to the largest entry
            size = max(1.0, float(rr.abs().max()))
            torch.testing.assert_close(gg, rr.to(gg.dtype), rtol=tol["rtol"], atol=tol["atol"] * size,
                                       msg=lambda m, which=which: f"output {which}: {m}")


@pytest.mark.parametrize("M", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("kind", ["random", "aligned", "collinear", "near_collinear"])
def test_matches_direct_formulation_every_m(M, kind):
    a, x = _data(M, 9, max(M + 2, 6), seed=M, kind=kind)
    _compare(_stack(a, x), 0, 1 / 0.07, 0.5, 0.5, 0.0)


@pytest.mark.parametrize("anchor", [1, 2, 3])
def test_any_anchor(anchor):
    a, x = _data(4, 7, 6, seed=11, kind="near_collinear")
    z = _stack(a, x)[torch.tensor([1, 2, 0, 3]) if anchor == 2 else torch.arange(4)]
    _compare(z, anchor, 1 / 0.07, 0.5, 0.5, -0.01)


# float64: scale 14 runs without a shift, 1000 needs the exact row and column shifts
@pytest.mark.parametrize("scale", [1 / 0.07, 1000.0])
@pytest.mark.parametrize("chunk", [None, 1, 4])
@pytest.mark.parametrize(("w_row", "w_col", "w_mean", "rows", "cols"), [
    (0.5, 0.5, 0.0, None, None),  # one process
    (0.5, 0.5, -0.01, None, None),  # label smoothing's mean term
    (0.5, 0.0, -0.005, slice(3, 6), None),  # a rank's anchors against every tuple
    (0.0, 0.5, -0.005, None, slice(3, 6)),  # every anchor against a rank's tuples
])
def test_paths_match_direct_formulation(scale, chunk, w_row, w_col, w_mean, rows, cols):
    a, x = _data(4, 9, 6, seed=1, kind="near_collinear")
    _compare(_stack(a, x), 0, scale, w_row, w_col, w_mean, rows, cols, chunk)


@pytest.mark.parametrize(("dtype", "scale", "unshifted"), [
    (torch.float64, 1 / 0.07, True), (torch.float64, 1000.0, False),
    (torch.float32, 1 / 0.07, True), (torch.float32, 100.0, False),
])
def test_scales_reach_both_paths(dtype, scale, unshifted):
    """The scales used above and in the objective tests reach both ways of keeping exp in range."""
    a, x = _data(3, 5, 4, dtype=dtype)
    vmax = volume._volume_bound(_stack(a, x), EPS, None)
    assert (scale * vmax <= volume._EXP_LIMIT[dtype]) == unshifted


def test_learnable_scale_gradient():
    a, x = _data(3, 7, 5, seed=4, kind="near_collinear")
    for scale in (14.0, 1000.0):
        _compare(_stack(a, x), 0, torch.tensor(scale, dtype=torch.float64, requires_grad=True), 0.5, 0.5, -0.02)


def test_row_norm_bound_and_computed_bound_agree():
    a, x = _data(3, 8, 5, seed=5)
    got = volume_lse(_stack(a, x), 0, 20.0, 0.5, 0.5, row_norm=1.0)
    ref = volume_lse(_stack(a, x), 0, 20.0, 0.5, 0.5)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("M", [2, 3, 5])
@pytest.mark.parametrize("kind", ["random", "collinear", "near_collinear"])
@pytest.mark.parametrize("scale", [1 / 0.07, 1000.0])
def test_gradcheck(M, kind, scale):
    a, x = _data(M, 5, 4, seed=10 + M, kind=kind)
    z = _stack(a, x).requires_grad_(True)
    # a step of 1e-6: at exactly collinear tuples a smaller one measures rounding noise of det ~ 0
    assert torch.autograd.gradcheck(lambda z: volume_lse(z, 0, scale, 0.5, 0.5, -0.02, EPS), (z,), eps=1e-6,
                                    atol=1e-5 * max(1.0, scale / 14), rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["random", "aligned", "collinear"])
def test_low_precision_close_to_float64(dtype, kind):
    """float32 / half inputs: the GEMMs run in the input dtype (float16's gradient GEMMs in
    float32), the elementwise work in float32, the frames' eigh in float64, the positives
    recomputed from the operands; values and gradients finite and close to float64 on the same
    rounded inputs. "collinear" plants negatives with det G = 0 exactly: their gradient is a
    difference of two terms of size 1 / sqrt(eps), so the GEMM's half-precision rounding shows
    there (the positives and everything else stay as close as the direct formulation)."""
    a, x = _data(3, 48, 16, seed=3, kind=kind, dtype=dtype)
    z = _stack(a, x).requires_grad_(True)
    pos, lse = volume_lse(z, 0, 1 / 0.07, 0.5, 0.5, -0.002, EPS)
    z64 = z.detach().double().requires_grad_(True)
    rpos, rlse = _reference(z64, 0, 1 / 0.07, 0.5, 0.5, -0.002)
    assert pos.dtype == lse.dtype == dtype
    rel = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-3}[dtype]
    grad_rel = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2}[dtype]
    for out, ref in ((pos, rpos), (lse, rlse)):
        assert torch.isfinite(out)
        assert abs(float(out.detach()) - float(ref.detach())) <= rel * abs(float(ref.detach())) + rel
        (g,) = torch.autograd.grad(out, z, retain_graph=True)
        (r,) = torch.autograd.grad(ref, z64, retain_graph=True)
        assert torch.isfinite(g).all()
        err = float((g.double() - r).norm() / r.norm())
        limit = 0.25 if kind == "collinear" and out is lse and dtype != torch.float32 else grad_rel
        assert err <= limit, (err, limit)


def test_small_temperature_stays_finite_in_float32():
    a, x = _data(4, 32, 8, seed=6, kind="collinear", dtype=torch.float32)
    z = _stack(a, x).requires_grad_(True)
    for scale in (100.0, 1000.0, 1e4):
        pos, lse = volume_lse(z, 0, scale, 0.5, 0.5, -0.003)
        assert torch.isfinite(pos) and torch.isfinite(lse)
        (g,) = torch.autograd.grad(pos + lse, z)
        assert torch.isfinite(g).all()


def test_rejects_bad_arguments():
    a, x = _data(3, 4, 5)
    z = _stack(a, x)
    with pytest.raises(ValueError, match="volume_lse needs"):
        volume_lse(z[0], 0, 1.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="out of range"):
        volume_lse(z, 3, 1.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="every anchor row"):
        volume_lse(z, 0, 1.0, 0.5, 0.5, rows=slice(0, 2))
    with pytest.raises(ValueError, match="contiguous slices"):
        volume_lse(z, 0, 1.0, 0.5, 0.0, rows=slice(0, 4, 2))


def test_second_derivatives_refused():
    a, x = _data(3, 4, 5)
    z = _stack(a, x).requires_grad_(True)
    _, lse = volume_lse(z, 0, 2.0, 0.5, 0.5)
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(lse, z, create_graph=True)


def test_objective_label_smoothing_is_smoothed_cross_entropy():
    """GRAM(label_smoothing=ls) is torch's label-smoothed cross-entropy of -V / tau both ways."""
    import objectives

    g = torch.Generator().manual_seed(8)
    zs = [torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    units = [_unit(z) for z in zs]
    v = gram_volumes(units[1], torch.stack([units[0], units[2]]), EPS)
    logits = -v / 0.1
    labels = torch.arange(6)
    F = torch.nn.functional
    ref = 0.5 * (F.cross_entropy(logits, labels, label_smoothing=0.1)
                 + F.cross_entropy(logits.T, labels, label_smoothing=0.1))
    out = objectives.build("gram", temperature=0.1, anchor=1, label_smoothing=0.1)(zs)
    assert math.isclose(float(out.loss), float(ref), rel_tol=1e-12)
    assert math.isclose(float(out.terms["alignment"]), 0.9 * float(v.diagonal().mean()) / 0.1, rel_tol=1e-12)
