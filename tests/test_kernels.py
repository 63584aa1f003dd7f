"""The fused log-sum-exp kernels against plain autograd, on every internal path.

``pair_lse`` keeps exp in range by one of three paths (no shift when the operand norms bound |S|,
one shift per row, separate row and column shifts), each reached by ``test_pair_lse_matches_autograd``
(``test_pair_lse_paths`` checks which scale reaches which); ``group_lse`` runs all pairs of a loss in
one node; ``total_lse`` and the batched self-similarity kernel have unshifted, shifted and chunked
forms. Each must give the same value and gradients as ``torch.logsumexp`` with autograd, in float64
and float32, and half precision must stay finite and close to float32.
"""

from __future__ import annotations

import pytest
import torch

import objectives
from objectives import kernels
from objectives.kernels import lse, pair_lse, total_lse


@pytest.fixture(params=["fused", "autograd"])
def pair_path(request, monkeypatch):
    """Run a test once through the fused Function and once through the small-block autograd path."""
    monkeypatch.setattr(lse, "FUSED_MIN_ENTRIES", 0 if request.param == "fused" else 10**12)
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
# float32: 1 and 30 take the unshifted path, 85 the row-shift path, 400 the two-shift path
# (float64: 400 unshifted, 800 row shift, 2000 two shifts; 1000 once gave NaN gradients when a
# block's row sum lay far below its row's maximum); test_pair_lse_paths checks the mapping
@pytest.mark.parametrize("scale", [1.0, 30.0, 85.0, 400.0, 800.0, 1000.0, 2000.0])
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


def _path_log(monkeypatch):
    """Record which of pair_lse's three paths answered each call."""
    log = []
    for name, label in (("_pair_lse_unshifted", "unshifted"), ("_pair_lse_one_block", "row shift")):
        original = getattr(lse, name)

        def wrapper(*args, _original=original, _label=label):
            out = _original(*args)
            log.append(_label if out is not None else "declined")
            return out

        monkeypatch.setattr(lse, name, wrapper)
    return log


@pytest.mark.parametrize(
    ("dtype", "scale", "path"),
    [(torch.float32, 30.0, "unshifted"), (torch.float32, 85.0, "row shift"), (torch.float32, 400.0, "two shifts"),
     (torch.float64, 400.0, "unshifted"), (torch.float64, 800.0, "row shift"), (torch.float64, 2000.0, "two shifts")],
)
def test_pair_lse_paths(dtype, scale, path, monkeypatch):
    """The scales of test_pair_lse_matches_autograd reach every path (else a path goes untested)."""
    monkeypatch.setattr(lse, "FUSED_MIN_ENTRIES", 0)
    log = _path_log(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(7, 4, generator=gen, dtype=dtype), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(3, 7, 4, generator=gen, dtype=dtype), dim=-1)
    pair_lse(a, k, 0.3, 0.7, False, 0, None, scale=scale)
    answered = [p for p in log if p != "declined"]
    assert (answered[0] if answered else "two shifts") == path


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("same", [True, False])
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("scale", [2.5, 40.0])  # float32: 2.5 unshifted, 40 shifted by the maximum
def test_total_lse_matches_autograd(dtype, same, exclude, chunk, scale):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=gen, dtype=dtype, requires_grad=True)
    y = None if same else torch.randn(6, 3, generator=gen, dtype=dtype, requires_grad=True)
    if dtype == torch.float32 and scale == 40.0:  # the bound |S| <= scale |x| |y| rules out no shift
        with torch.no_grad():
            assert lse._exp_bound(x * scale, x if same else y) > 80.0
    got = total_lse(x, y, scale, exclude, 0, chunk)
    s = scale * x @ (x if same else y).T
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


def test_unit_rows_matches_stack_and_normalize():
    """The fused stack + normalise against torch.stack + F.normalize, zero and tiny rows included."""
    gen = torch.Generator().manual_seed(5)
    xs = [torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda *a: kernels.unit_rows(list(a)), xs)
    z = torch.randn(3, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kernels.unit_rows, (z,))
    with torch.no_grad():  # rows at and below eps take F.normalize's clamped branch (no projection)
        xs[1][2].zero_()
        xs[2][0].mul_(1e-14)
    got = kernels.unit_rows(xs)
    ref = torch.nn.functional.normalize(torch.stack(xs), dim=-1, eps=1e-12)
    weights = torch.randn(3, 5, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(torch.autograd.grad((got * weights).sum(), xs), torch.autograd.grad((ref * weights).sum(), xs)):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_unit_rows_gradient_at_a_norm_of_exactly_eps_matches_normalize():
    """At |x| = eps F.normalize's clamp_min still passes the gradient through the norm (projection)."""
    x = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.3, 0.4]]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]], dtype=torch.float64)
    got = torch.autograd.grad((kernels.unit_rows(x, eps=0.5) * w).sum(), x)[0]
    ref = torch.autograd.grad((torch.nn.functional.normalize(x, dim=-1, eps=0.5) * w).sum(), x)[0]
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-15)
    assert got[0, 0].tolist() == [0.0, 4.0, 6.0]  # (g - y <g, y>) / eps with y = (1, 0, 0)


@pytest.mark.parametrize("groups", [[(0, [1, 2, 3]), (1, [2, 3]), (2, [3])], [(2, [0, 1, 3])], [(1, [3, 0])]])
@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("chunk", [None, 4])
@pytest.mark.parametrize("exclude", [False, True])
def test_group_lse_matches_pairwise(groups, learnable, chunk, exclude, monkeypatch):
    """One node for all groups (consecutive and scattered partners, learnable scale) == the sum of
    per-group pair_lse calls through plain autograd."""
    monkeypatch.setattr(lse, "FUSED_MIN_ENTRIES", 0)
    gen = torch.Generator().manual_seed(6)
    z = torch.nn.functional.normalize(torch.randn(4, 9, 5, generator=gen, dtype=torch.float64), dim=-1)
    z.requires_grad_(True)
    log_scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    def scale():  # a fresh graph for each side
        return log_scale.exp() if learnable else 7.0

    got = kernels.group_lse(z, groups, 0.5, 0.5, exclude, chunk, scale())
    ref = sum(_reference_pair(z[m] * scale(), z[list(p)], 0.5, 0.5, exclude) for m, p in groups)
    inputs = (z, log_scale) if learnable else (z,)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-10)
    for g, r in zip(torch.autograd.grad(got, inputs), torch.autograd.grad(ref, inputs)):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("bandwidth", [0.5, 0.1])  # float32: 1/s^2 = 4 unshifted, 100 shifted
@pytest.mark.parametrize("row_norm", [None, 1.001])
def test_batched_self_lmk_matches_log_mean_kernel(dtype, exclude, bandwidth, row_norm):
    """All modalities' self log-mean-kernels in one node == log_mean_kernel per modality.

    Gradients are taken through the normalisation (as in the objectives): on the sphere the two
    formulas agree, off it they differ by a radial component that normalisation removes."""
    gen = torch.Generator().manual_seed(7)
    raw = torch.randn(3, 10, 4, generator=gen, dtype=dtype, requires_grad=True)

    def unit():
        return torch.nn.functional.normalize(raw, dim=-1)

    got = kernels.sphere_self_log_mean_kernels(unit(), bandwidth, exclude, row_norm)
    ref = torch.stack([kernels.log_mean_kernel(x, x, bandwidth, exclude) for x in unit().unbind(0)])
    weights = torch.tensor([0.3, -1.0, 2.0], dtype=dtype)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got, ref, **tol)
    torch.testing.assert_close(torch.autograd.grad((got * weights).sum(), raw)[0],
                               torch.autograd.grad((ref * weights).sum(), raw)[0], **tol)


def test_scratch_buffer_made_under_inference_mode_serves_training():
    """The reused CPU block buffer, first allocated under inference_mode, must stay writable
    outside it (an inference tensor could not be updated in place later)."""
    kernels.release_workspace()
    with torch.inference_mode():
        objectives.build("infonce")(torch.randn(2, 256, 16))
    z = torch.randn(2, 256, 16, requires_grad=True)
    objectives.build("infonce")(z).loss.backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("name", ["infonce", "dcl"])
def test_low_temperature_half_precision_gradients_are_finite(name):
    """At temperature 0.01 the one-shift-per-row path runs; in float16 its per-row factor must be
    applied before the cast (entries reach e^60 otherwise and overflow)."""
    z = torch.randn(3, 64, 16, generator=torch.Generator().manual_seed(8)).half().requires_grad_(True)
    out = objectives.build(name, temperature=0.01)(z)
    (grad,) = torch.autograd.grad(out.loss, z)
    assert torch.isfinite(out.loss) and torch.isfinite(grad).all()
    ref = objectives.build(name, temperature=0.01)(z.detach().double().requires_grad_(True))
    assert abs(out.loss.item() - ref.loss.item()) <= 0.03 * abs(ref.loss.item()) + 0.05


@pytest.mark.parametrize("name", ["infonce", "unialign", "symile"])
def test_second_derivatives_raise_instead_of_being_wrong(name):
    """The fused Functions save gradients without history: a double backward must fail loudly."""
    z = torch.randn(3, 16, 8, dtype=torch.float64, requires_grad=True)
    params = {"bandwidth": 0.5} if name == "unialign" else {}
    out = objectives.build(name, **params)(z)
    with pytest.raises(RuntimeError, match="create_graph=True"):
        torch.autograd.grad(out.loss, z, create_graph=True)


def test_negative_scale_matches_autograd():
    """A negative scale must not be mistaken for a small one by the no-shift bound."""
    gen = torch.Generator().manual_seed(9)
    a = torch.nn.functional.normalize(torch.randn(7, 4, generator=gen, dtype=torch.float64), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(2, 7, 4, generator=gen, dtype=torch.float64), dim=-1)
    a.requires_grad_(True)
    for scale in (-100.0, -1000.0):
        got = kernels.group_lse(torch.stack([a, *k]), [(0, [1, 2])], 0.3, 0.7, False, None, scale)
        ref = _reference_pair(a * scale, k, 0.3, 0.7, False)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-8)
        torch.testing.assert_close(torch.autograd.grad(got, a)[0], torch.autograd.grad(ref, a)[0],
                                   rtol=1e-10, atol=1e-8)


def test_median_bandwidth_by_hand_pooling_dtypes_and_errors():
    """Lower median of the off-diagonal pairwise distances of the pooled rows, worked out by hand."""
    med = kernels.median_bandwidth_tensor
    # 1-D points 0, 0.1, 0.3, 0.5: distances 0.1, 0.3, 0.5, 0.2, 0.4, 0.2 -> sorted 0.1 0.2 0.2 0.3 0.4 0.5,
    # lower median 0.2 (squared distances below 1: the diagonal must sort below them)
    x = torch.tensor([[0.0], [0.1], [0.3], [0.5]], dtype=torch.float64)
    assert float(med(x)) == pytest.approx(0.2, abs=1e-15)
    # two sets pooled by rows (not features): the same four points split in two
    assert float(med(x[:2], x[2:])) == pytest.approx(0.2, abs=1e-15)
    # max_samples=2 over two sets: one row each, the first rows (0 and 0.3): distance 0.3
    assert float(med(x[:2], x[2:], max_samples=2)) == pytest.approx(0.3, abs=1e-15)
    # max_samples=1 over two sets still takes one row of each (at least one per set)
    assert float(med(x[:2], x[2:], max_samples=1)) == pytest.approx(0.3, abs=1e-15)
    # a (M, B, d) input is pooled over its rows of d features: rows (0, 0) and (6, 8), distance 10
    z = torch.tensor([[[0.0, 0.0]], [[6.0, 8.0]]], dtype=torch.float64)
    assert float(med(z)) == pytest.approx(10.0, abs=1e-12)
    # float64 stays float64 (a float32 detour would round 1/3); half precision is measured in float32
    y = torch.tensor([[0.0], [1.0 / 3.0], [2.0 / 3.0]], dtype=torch.float64)
    assert float(med(y)) == pytest.approx(1.0 / 3.0, abs=1e-14)
    h = torch.tensor([[0.0], [0.1], [0.35]], dtype=torch.float16)
    assert float(med(h)) == float(med(h.float()))
    assert med(h).dtype == torch.float64
    # at most 512 rows by default: the first 512 of 600 points 0, 1, 2, ...
    pts = torch.arange(600, dtype=torch.float64).unsqueeze(1)
    first = pts[:512, 0]
    dist = (first.unsqueeze(0) - first.unsqueeze(1)).abs()
    off = dist[~torch.eye(512, dtype=torch.bool)].sort().values
    assert float(med(pts)) == float(off[(off.numel() - 1) // 2])
    with pytest.raises(ValueError, match=r"^median bandwidth needs at least one sample set$"):
        med()
    with pytest.raises(ValueError, match=r"^median bandwidth needs at least 2 samples, got 1$"):
        med(torch.zeros(1, 3))
