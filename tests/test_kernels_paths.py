"""Every internal path of the whole-block log-sum-exp kernels (``objectives.kernels.total``), the
small-batch InfoNCE node (``objectives.kernels.small``) and the plain formulations used while
``torch.compile`` traces (``objectives.kernels.plain``) against deliberately naive float64 loops.

The expectations share no code with ``objectives/``: Python loops over rows and columns, the
textbook max-shifted log-sum-exp of ``tests/reference_losses.py``, determinants by Gaussian
elimination, and closed forms where one exists. Besides values and gradients, the tests pin the
choices that only change cost, not results, because a wrong choice there is invisible to a value
test yet costs memory or time (or, on an accelerator, a host synchronisation): which way ``exp`` is
kept in range, how many rows each block holds, whether a block is reused for the gradient, and that
the reusable scratch memory never leaks stale content into a result. Uninitialised memory is filled
with NaN throughout (``torch.use_deterministic_algorithms``), so reading it cannot pass by luck.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from reference_losses import det, dot, lse, sqdist

from objectives.kernels import device, gram_volumes, lse as lse_kernels, plain, small, total, volume, volume_lse
from objectives.kernels.total import sphere_log_mean_kernel, sphere_self_log_mean_kernels, total_lse

F64 = {"rtol": 1e-10, "atol": 1e-10}
F32 = {"rtol": 2e-5, "atol": 2e-5}
CPU = torch.device("cpu")

# a kernel that warns (e.g. an output slice resized behind its back) fails
pytestmark = pytest.mark.filterwarnings("error::UserWarning")


@pytest.fixture(autouse=True)
def _nan_filled_memory(monkeypatch):
    """torch.empty and friends return NaN-filled memory, and so does every request for reusable
    scratch memory: a result that reads memory no kernel wrote becomes NaN instead of depending
    on what an earlier call or the allocator left there. The kernels' caches (masks, small-batch
    plans) start empty, as in a fresh process."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    for module in (lse_kernels, total, volume):
        def stale(shape, dtype, dev, _scratch=module._scratch):
            return _scratch(shape, dtype, dev).fill_(float("nan"))

        monkeypatch.setattr(module, "_scratch", stale)
    monkeypatch.setattr(volume, "_masks", {})
    monkeypatch.setattr(small, "_small_plans", {})
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def _close(got, ref, tol, scale=1.0):
    """got (any dtype) against a float64 reference; atol grows with the size of the entries."""
    torch.testing.assert_close(got.double(), ref.double(), rtol=tol["rtol"], atol=tol["atol"] * scale)


def _grads(out, inputs, weight):
    """Gradients of ``weight * out`` (weight != 1 so that the incoming gradient is used)."""
    grads = torch.autograd.grad(out, inputs, grad_outputs=torch.full_like(out, weight), retain_graph=True,
                                allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]


# ----------------------------------------------------------------------------- naive references
def naive_block_lse(x, y, scale, exclude=False, offset=0):
    """log sum_{i, j} exp(scale x_i . y_j), without the entries (i, i + offset) when ``exclude``."""
    return lse(scale * dot(x[i], y[j]) for i in range(x.shape[0]) for j in range(y.shape[0])
               if not (exclude and j == i + offset))


def naive_log_mean_gaussian(x, y, bandwidth, exclude=False):
    """log mean_{i, j} exp(-|x_i - y_j|^2 / (2 s^2)) (the Gaussian kernel, no sphere identity)."""
    values = [-sqdist(x[i], y[j]) / (2.0 * bandwidth**2) for i in range(x.shape[0]) for j in range(y.shape[0])
              if not (exclude and i == j)]
    return lse(values) - math.log(len(values))


def naive_rowcol_lse(s, w_row, w_col, exclude=False, offset=0):
    """w_row sum_i lse_j S_ij + w_col sum_j lse_i S_ij over a (R, N) block S given as a tensor,
    each log-sum-exp a loop over the entries left after removing (i, i + offset)."""
    R, N = s.shape
    keep = [[not (exclude and j == i + offset) for j in range(N)] for i in range(R)]
    total_ = w_row * sum(lse(s[i, j] for j in range(N) if keep[i][j]) for i in range(R))
    if w_col:
        total_ = total_ + w_col * sum(lse(s[i, j] for i in range(R) if keep[i][j]) for j in range(N))
    return total_


def naive_volumes(a, others, eps):
    """V[i][j] = sqrt(max(det Gram(a_i, others[:, j]), 0) + eps), determinants by elimination."""
    V = []
    for i in range(a.shape[0]):
        row = []
        for j in range(others.shape[1]):
            vectors = [a[i]] + [others[k, j] for k in range(others.shape[0])]
            g = det([[dot(u, v) for v in vectors] for u in vectors])
            row.append(torch.sqrt(torch.clamp(g, min=0.0) + eps))
        V.append(row)
    return V


# ----------------------------------------------------------------------------- path and memory spies
@pytest.fixture
def spy(monkeypatch):
    """Records the no-shift decision (its arguments and answer), the rows of every block of
    ``_TotalLSE`` and every scratch buffer of ``_SelfLSE``; scratch buffers are handed out
    filled with NaN (stale content from an earlier call must never reach a result)."""
    log = {"ok": [], "blocks": [], "scratch": []}
    ok, block, scratch = total._unshifted_ok, total._block, total._scratch

    def spy_ok(bound, count, work):
        answer = ok(bound, count, work)
        log["ok"].append((bound, count, work, answer))
        return answer

    def spy_block(a, cols, work, *rest):
        log["blocks"].append(a.shape[0])
        return block(a, cols, work, *rest)

    def spy_scratch(shape, dtype, dev):
        log["scratch"].append(tuple(shape))
        return scratch(shape, dtype, dev).fill_(float("nan"))

    monkeypatch.setattr(total, "_unshifted_ok", spy_ok)
    monkeypatch.setattr(total, "_block", spy_block)
    monkeypatch.setattr(total, "_scratch", spy_scratch)
    return log


@contextlib.contextmanager
def no_host_reads():
    """Reading a tensor's value on the host fails (as it would have to wait for an accelerator),
    and 0-dim tensors count as device values (``host_float`` keeps them as tensors)."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("a host read of a tensor value")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(device, "reads_are_free", lambda t: False)
        for method in ("item", "__float__", "__int__", "__bool__", "tolist", "numpy"):
            m.setattr(torch.Tensor, method, refuse)
        yield


# ----------------------------------------------------------------------------- total_lse
# (dtype, scale, no shift?): |S| <= scale max|x| max|y| ~ 6 scale here; float32 allows 80, float64 700
SCALES = [(torch.float64, 2.5, True), (torch.float64, 400.0, False),
          (torch.float32, 2.5, True), (torch.float32, 40.0, False)]


def _expected_blocks(R, chunk, grad):
    """Rows per block: one (R, N) block reused by the gradient, or chunks of ``chunk`` rows
    (at least 1) computed again for the gradient."""
    step = R if chunk is None else max(1, min(chunk, R))
    if step == R:
        return [R]
    rows = [min(step, R - s0) for s0 in range(0, R, step)]
    return rows * 2 if grad else rows


@pytest.mark.parametrize(("dtype", "scale", "unshifted"), SCALES)
@pytest.mark.parametrize("chunk", [None, 2, 1, 0, 50])
@pytest.mark.parametrize(("same", "exclude", "offset"), [
    (True, False, 0), (True, True, 0), (False, False, 0), (False, True, 0), (False, True, 3),
])
def test_total_lse_matches_naive_loop_on_every_path(dtype, scale, unshifted, chunk, same, exclude, offset, spy):
    """Value and gradients of log sum_ij exp(scale x_i . y_j) against a naive loop on every path
    (no shift, one block shifted by the maximum, chunks without a shift, chunks with an online
    maximum), including 5 rows in chunks of 2 (uneven), 1 and 0 (one row at a time) and 50 (one
    block); also which path was taken, on what bound, and the rows of every block computed."""
    x64 = _randn(5, 3, seed=1)
    y64 = None if same else _randn(7, 3, seed=2) * 1.3
    x = x64.to(dtype).requires_grad_(True)
    y = None if same else y64.to(dtype).requires_grad_(True)
    got = total_lse(x, y, scale, exclude, offset, chunk)
    assert got.dtype == dtype and got.shape == ()
    xr = x.detach().double().requires_grad_(True)
    yr = None if same else y.detach().double().requires_grad_(True)
    ref = naive_block_lse(xr, xr if same else yr, scale, exclude, offset)
    tol = F64 if dtype == torch.float64 else F32
    _close(got, ref, tol, scale)
    inputs, ref_inputs = ((x,), (xr,)) if same else ((x, y), (xr, yr))
    for g, r in zip(_grads(got, inputs, 1.7), _grads(ref, ref_inputs, 1.7)):
        _close(g, r, tol, scale)
    cols = x.detach() if same else y.detach()
    (bound, count, work, answer), = spy["ok"]
    assert answer is unshifted and work == dtype and count == x.shape[0] * cols.shape[0]
    assert bound == pytest.approx(scale * float(x.detach().norm(dim=1).max()) * float(cols.norm(dim=1).max()),
                                  rel=1e-5)
    assert spy["blocks"] == _expected_blocks(5, chunk, grad=True)


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("scale", [2.5, 40.0])
def test_total_lse_without_gradient_computes_each_block_once(chunk, scale, spy):
    x, y = _randn(5, 3, seed=3, dtype=torch.float32), _randn(4, 3, seed=4, dtype=torch.float32)
    got = total_lse(x, y, scale, False, 0, chunk)
    _close(got, naive_block_lse(x.double(), y.double(), scale), F32, scale)
    assert spy["blocks"] == _expected_blocks(5, chunk, grad=False)


@pytest.mark.parametrize("which", ["x", "y"])
@pytest.mark.parametrize("chunk", [None, 2])
def test_total_lse_gradient_of_one_operand(which, chunk):
    """Only one of x and y requires a gradient: that one still gets it."""
    x, y = _randn(5, 3, seed=5), _randn(6, 3, seed=6)
    (x if which == "x" else y).requires_grad_(True)
    leaf = x if which == "x" else y
    got = total_lse(x, y, 3.0, True, 1, chunk)
    ref = naive_block_lse(x, y, 3.0, True, 1)
    _close(got, ref, F64)
    (g,), (r,) = _grads(got, (leaf,), -0.6), _grads(ref, (leaf,), -0.6)
    _close(g, r, F64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("scale", "chunk"), [(2.5, None), (2.5, 2), (40.0, None), (40.0, 2)])
@pytest.mark.parametrize("same", [True, False])
def test_total_lse_half_precision_close_to_float64(dtype, scale, chunk, same):
    """Half inputs: GEMMs in the input dtype, exp and sums in float32, the softmax normalised before
    it is cast back (E itself may exceed the half range); result in the input dtype."""
    x = _randn(5, 3, seed=7).to(dtype).requires_grad_(True)
    y = None if same else _randn(6, 3, seed=8).to(dtype).requires_grad_(True)
    got = total_lse(x, y, scale, False, 0, chunk)
    assert got.dtype == dtype
    xr = x.detach().double().requires_grad_(True)
    yr = None if same else y.detach().double().requires_grad_(True)
    ref = naive_block_lse(xr, xr if same else yr, scale)
    tol = {"rtol": 2e-2, "atol": 2e-2}
    _close(got, ref, tol, scale)
    inputs, ref_inputs = ((x,), (xr,)) if same else ((x, y), (xr, yr))
    for g, r in zip(_grads(got, inputs, 1.0), _grads(ref, ref_inputs, 1.0)):
        _close(g, r, tol, scale)


def test_total_lse_self_similarity_needs_offset_zero_for_its_gradient():
    x = _randn(5, 3, seed=9)
    # the value alone is defined for any offset
    got = total_lse(x, None, 2.0, True, 1)
    _close(got, naive_block_lse(x, x, 2.0, True, 1), F64)
    with pytest.raises(ValueError, match=r"^self-similarity LSE needs all rows \(offset 0\)$"):
        total_lse(x.requires_grad_(True), None, 2.0, True, 1)


def test_total_lse_defaults_keep_the_diagonal_at_offset_zero():
    x, y = _randn(4, 3, seed=10).requires_grad_(True), _randn(6, 3, seed=11)
    _close(total_lse(x, y, 1.5), naive_block_lse(x, y, 1.5), F64)
    got = total_lse(x, None, 1.5, True)
    ref = naive_block_lse(x, x, 1.5, True, 0)
    _close(got, ref, F64)
    _close(_grads(got, (x,), 1.0)[0], _grads(ref, (x,), 1.0)[0], F64)


@pytest.mark.parametrize(("same", "exclude", "offset", "chunk", "scale"), [
    (True, False, 0, None, 2.0), (True, True, 0, 2, 2.0), (False, True, 2, None, 800.0), (False, False, 0, 2, 800.0),
])
def test_total_lse_gradcheck(same, exclude, offset, chunk, scale):
    x = _randn(4, 3, seed=12).requires_grad_(True)
    y = None if same else _randn(5, 3, seed=13).requires_grad_(True)
    inputs = (x,) if same else (x, y)
    assert torch.autograd.gradcheck(lambda *t: total_lse(t[0], None if same else t[1], scale, exclude, offset, chunk),
                                    inputs, eps=1e-6, atol=1e-6 * scale, rtol=1e-5)


@pytest.mark.parametrize("chunk", [None, 2])
def test_sphere_log_mean_kernel_is_the_gaussian_log_mean_kernel(chunk, spy):
    """On unit rows: log mean_ij exp(-|x_i - y_j|^2 / (2 s^2)) (a naive loop of the Gaussian kernel,
    not of the sphere identity), for a sample against another of a different size and against
    itself without the diagonal; gradients through the normalisation."""
    raw_x, raw_y = _randn(5, 4, seed=14).requires_grad_(True), _randn(3, 4, seed=15).requires_grad_(True)
    x, y = _unit(raw_x), _unit(raw_y)
    got = sphere_log_mean_kernel(x, y, 0.7, chunk_size=chunk)
    ref = naive_log_mean_gaussian(x, y, 0.7)
    _close(got, ref, F64)
    for g, r in zip(_grads(got, (raw_x, raw_y), 1.3), _grads(ref, (raw_x, raw_y), 1.3)):
        _close(g, r, F64)
    assert spy["blocks"] == _expected_blocks(5, chunk, grad=True)
    got = sphere_log_mean_kernel(x, None, 0.7, True, chunk)
    ref = naive_log_mean_gaussian(x, x, 0.7, exclude=True)
    _close(got, ref, F64)
    _close(_grads(got, (raw_x,), 0.4)[0], _grads(ref, (raw_x,), 0.4)[0], F64)
    # the default keeps the diagonal, against the sample itself too
    _close(sphere_log_mean_kernel(x, None, 0.7), naive_log_mean_gaussian(x, x, 0.7), F64)


@pytest.mark.parametrize("fn", [sphere_log_mean_kernel, sphere_self_log_mean_kernels])
def test_exclude_diagonal_needs_two_samples(fn):
    one = _unit(_randn(1, 1, 3, seed=16))
    x = one if fn is sphere_self_log_mean_kernels else one[0]
    with pytest.raises(ValueError, match=r"^exclude_diagonal needs at least 2 samples, got 1$"):
        fn(x, *([None] if fn is sphere_log_mean_kernel else []), 0.5, True)
    # two samples are enough; one sample with its diagonal is fine
    two = _unit(_randn(1, 2, 3, seed=17))
    z2 = two if fn is sphere_self_log_mean_kernels else two[0]
    args = [None] if fn is sphere_log_mean_kernel else []
    got = fn(z2, *args, 0.5, True)
    ref = naive_log_mean_gaussian(two[0], two[0], 0.5, exclude=True)
    _close(got.reshape(()), ref, F64)
    _close(fn(x, *args, 0.5).reshape(()), torch.zeros((), dtype=torch.float64), F64)


# ----------------------------------------------------------------------------- sphere_self_log_mean_kernels
# (dtype, bandwidth, no shift?): 1 / s^2 = 4 is small; 100 needs a shift in float32, 1111 in float64
SELF_CASES = [(torch.float64, 0.5, True), (torch.float64, 0.03, False),
              (torch.float32, 0.5, True), (torch.float32, 0.1, False)]


def _naive_self(z, bandwidth, exclude):
    """(M,) naive log mean_{i, j} exp((z_i . z_j - 1) / s^2), the sphere identity written as a loop."""
    inv = 1.0 / bandwidth**2
    out = []
    for m in range(z.shape[0]):
        values = [inv * (dot(z[m, i], z[m, j]) - 1.0) for i in range(z.shape[1]) for j in range(z.shape[1])
                  if not (exclude and i == j)]
        out.append(lse(values) - math.log(len(values)))
    return torch.stack(out)


@pytest.mark.parametrize(("dtype", "bandwidth", "unshifted"), SELF_CASES)
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("row_norm", [None, 1.25])
def test_self_log_mean_kernels_match_naive_loop(dtype, bandwidth, unshifted, exclude, row_norm, spy):
    """(M,) values and the gradient w.r.t. z (per-modality weights) against naive loops, the bound
    that decides the shift (a given row-norm bound, or the rows' own norms), and the block written
    into the reusable scratch buffer (handed out NaN-filled)."""
    z64 = _unit(_randn(3, 5, 4, seed=18))
    z = z64.to(dtype).requires_grad_(True)
    got = sphere_self_log_mean_kernels(z, bandwidth, exclude, row_norm)
    assert got.dtype == dtype and got.shape == (3,)
    zr = z.detach().double().requires_grad_(True)
    ref = _naive_self(zr, bandwidth, exclude)
    tol = F64 if dtype == torch.float64 else F32
    inv = 1.0 / bandwidth**2
    _close(got, ref, tol, inv)
    weights = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    (g,) = torch.autograd.grad(got, z, grad_outputs=weights.to(dtype))
    (r,) = torch.autograd.grad(ref, zr, grad_outputs=weights)
    _close(g, r, tol, inv)
    # the unit rows are Gaussian-kernel samples too (the identity |u - v|^2 = 2 - 2 u.v)
    gauss = torch.stack([naive_log_mean_gaussian(z64[m], z64[m], bandwidth, exclude) for m in range(3)])
    _close(got, gauss, tol, inv)
    (bound, count, work, answer), = spy["ok"]
    norm2 = row_norm**2 if row_norm is not None else float(z.detach().norm(dim=-1).max()) ** 2
    assert bound == pytest.approx(inv * norm2, rel=1e-5) and count == 25 and work == dtype
    unshifted = unshifted and (inv * norm2 + math.log(25) <= (80.0 if dtype == torch.float32 else 700.0))
    assert answer is unshifted
    assert spy["scratch"] == [(3, 5, 5)]


def test_self_log_mean_kernels_row_norm_bound_decides_the_shift(spy):
    """A loose row-norm bound (2 for unit rows) rules out the no-shift path that the rows' own
    norms allow; both give the same values."""
    z = _unit(_randn(3, 5, 4, seed=19)).float()
    loose = sphere_self_log_mean_kernels(z, 0.2, False, 2.0)
    tight = sphere_self_log_mean_kernels(z, 0.2, False)
    _close(loose, tight, F32, 25.0)
    assert [a for *_, a in spy["ok"]] == [False, True]
    assert [b for b, *_ in spy["ok"]] == [pytest.approx(100.0), pytest.approx(25.0, rel=1e-5)]


def test_self_log_mean_kernels_excluded_diagonal_of_orthogonal_rows_in_closed_form():
    """Orthonormal rows without the diagonal: every kernel value is exp(-1 / s^2), so LMK = -1 / s^2
    exactly. In float32 at 1 / s^2 = 110 the maximum must be taken without the diagonal (shifting by
    the diagonal's 110 would underflow every remaining entry)."""
    z = torch.eye(4, 6, dtype=torch.float32).expand(2, 4, 6).contiguous().requires_grad_(True)
    s = 1.0 / math.sqrt(110.0)
    got = sphere_self_log_mean_kernels(z, s, True)
    torch.testing.assert_close(got, torch.full((2,), -110.0), rtol=1e-6, atol=1e-4)
    # d/dz_i of log sum_{j != i} exp(u_i . u_j / s^2): 2 / s^2 * mean over the other rows
    (g,) = torch.autograd.grad(got.sum(), z)
    expected = 2.0 * 110.0 * (torch.ones(4, 4) - torch.eye(4)) @ torch.eye(4, 6) / 12.0
    torch.testing.assert_close(g, expected.expand(2, 4, 6), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bandwidth", [0.5, 0.25])
@pytest.mark.parametrize("exclude", [False, True])
def test_self_log_mean_kernels_half_precision(dtype, bandwidth, exclude):
    z = _unit(_randn(3, 6, 4, seed=20)).to(dtype).requires_grad_(True)
    got = sphere_self_log_mean_kernels(z, bandwidth, exclude)
    assert got.dtype == dtype
    zr = z.detach().double().requires_grad_(True)
    ref = _naive_self(zr, bandwidth, exclude)
    inv = 1.0 / bandwidth**2
    tol = {"rtol": 2e-2, "atol": 2e-2}
    _close(got, ref, tol, inv)
    weights = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    (g,) = torch.autograd.grad(got, z, grad_outputs=weights.to(dtype))
    (r,) = torch.autograd.grad(ref, zr, grad_outputs=weights)
    _close(g, r, tol, inv)


@pytest.mark.parametrize("exclude", [False, True])
# 1 / s^2 = 11 needs no shift; 100 (float32) and 1111 (float64) would overflow exp without one
@pytest.mark.parametrize(("dtype", "bandwidth"), [(torch.float64, 0.3), (torch.float64, 0.03), (torch.float32, 0.3),
                                                  (torch.float32, 0.1), (torch.bfloat16, 0.3)])
def test_self_log_mean_kernels_device_bandwidth_reads_nothing_on_the_host(exclude, dtype, bandwidth, spy):
    """A 0-dim bandwidth tensor that is not free to read (as on an accelerator) stays a tensor:
    forward and backward read nothing on the host and take no decision that needs its value (so
    exp is always shifted), the result equals the float bandwidth's (half inputs: the block is
    scaled in float32 either way), and the bandwidth is detached."""
    z = _unit(_randn(3, 5, 4, seed=21)).to(dtype).requires_grad_(True)
    bw = torch.tensor(bandwidth, dtype=dtype, requires_grad=True)
    weights = torch.tensor([0.5, 1.5, -1.0], dtype=dtype)
    with no_host_reads():
        got = sphere_self_log_mean_kernels(z, bw * 1.0, exclude)
        (g,) = torch.autograd.grad((got * weights).sum(), z)
    assert spy["ok"] == [] and spy["scratch"] == []
    ref = sphere_self_log_mean_kernels(z, float(bw.detach()), exclude)
    (r,) = torch.autograd.grad((ref * weights).sum(), z)
    inv = 1.0 / float(bw.detach()) ** 2
    tol = {torch.float64: F64, torch.float32: F32, torch.bfloat16: {"rtol": 1e-5, "atol": 1e-5}}[dtype]
    assert torch.isfinite(got).all()
    _close(got, ref, tol, inv)
    if dtype == torch.bfloat16:  # within one bfloat16 rounding of the largest entry
        _close(g, r, {"rtol": 4e-3, "atol": 4e-3}, float(r.abs().max()))
    else:
        _close(g, r, tol, inv)
    with no_host_reads():
        kept = sphere_self_log_mean_kernels(z.detach(), bw * 1.0, exclude)
    assert not kept.requires_grad


@pytest.mark.parametrize(("row_norm", "bandwidth"), [(None, 0.4), (None, 0.03), (1.0, 0.4), (1.0, 0.03)])
def test_self_log_mean_kernels_while_tracing(row_norm, bandwidth, monkeypatch, spy):
    """The formulation taken while torch.compile traces (run eagerly here): no scratch memory, no
    host read of a tensor, and the shift decided only from a given row-norm bound (1 / s^2 = 1111
    would overflow exp in float64 without a shift)."""
    z = _unit(_randn(3, 5, 4, seed=22)).requires_grad_(True)
    ref = _naive_self(z, bandwidth, True)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with no_host_reads():
        got = sphere_self_log_mean_kernels(z, bandwidth, True, row_norm)
        (g,) = torch.autograd.grad(got.sum(), z)
    monkeypatch.undo()
    inv = 1.0 / bandwidth**2
    _close(got, ref, F64, inv)
    _close(g, torch.autograd.grad(ref.sum(), z)[0], F64, inv)
    assert spy["scratch"] == []
    assert [(b, c, a) for b, c, _, a in spy["ok"]] == ([] if row_norm is None else
                                                       [(pytest.approx(inv), 25, inv + math.log(25) <= 700)])


def test_self_log_mean_kernels_gradcheck():
    z = _unit(_randn(2, 4, 3, seed=23)).requires_grad_(True)
    for bw, exclude in ((0.6, False), (0.6, True), (0.03, True)):
        assert torch.autograd.gradcheck(lambda t, bw=bw, exclude=exclude: sphere_self_log_mean_kernels(t, bw, exclude),
                                        (z,), eps=1e-6, atol=1e-5 / bw**2, rtol=1e-5)


def test_self_log_mean_kernels_default_keeps_the_diagonal():
    z = _unit(_randn(2, 4, 3, seed=24))
    _close(sphere_self_log_mean_kernels(z, 0.5), _naive_self(z, 0.5, False), F64)


# ----------------------------------------------------------------------------- small_contrastive
def _naive_small(xs, pairs, scale, eps=1e-12):
    """(alignment, uniformity) of the InfoNCE family by loops: u = x / max(|x|, eps) per row,
    alignment = -1 / (B |P|) sum_pairs sum_i scale u_m,i . u_n,i and uniformity = 1 / (B |P|)
    sum_pairs 1/2 (sum_i lse_j + sum_j lse_i) of scale u_m,i . u_n,j."""
    U = [[x[i] / torch.sqrt(dot(x[i], x[i])).clamp_min(eps) for i in range(x.shape[0])] for x in xs]
    B, P = len(U[0]), len(pairs)
    align = 0.0
    unif = 0.0
    for m, n in pairs:
        S = [[scale * dot(U[m][i], U[n][j]) for j in range(B)] for i in range(B)]
        align = align - sum(S[i][i] for i in range(B))
        unif = unif + 0.5 * (sum(lse(S[i]) for i in range(B)) + sum(lse(S[i][j] for i in range(B)) for j in range(B)))
    return align / (B * P), unif / (B * P)


SMALL_CASES = [
    # pairs, B, d
    (((0, 1),), 5, 3),
    (((0, 1),), 1, 4),  # a single row
    (((0, 1), (0, 2), (1, 2)), 4, 6),  # "all": consecutive groups, later ones accumulate
    (((1, 0), (1, 2)), 6, 3),  # anchor 1: partners on both sides (not consecutive)
    (((2, 0), (2, 1), (2, 3)), 3, 5),  # anchor 2 of 4
    (((0, 1), (0, 2), (0, 3), (2, 1), (2, 3)), 4, 3),  # a later non-consecutive group accumulates
    (((0, 1), (2, 3)), 5, 3),  # the first group leaves modalities out
    (((0, 1), (2, 1), (2, 3)), 4, 5),  # ... and a later non-consecutive group adds to one
    (tuple((m, n) for m in range(5) for n in range(m + 1, 5)), 3, 4),  # "all" for M = 5
]


@pytest.mark.parametrize(("pairs", "B", "d"), SMALL_CASES, ids=[f"{len(c[0])}pairs-B{c[1]}" for c in SMALL_CASES])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("stacked", [False, True])
def test_small_contrastive_matches_naive_loop(pairs, B, d, dtype, stacked, monkeypatch):
    """Both outputs and their gradients (each output weighted differently) against the naive
    loops, for pair lists whose groups take every branch (first group covering all modalities or
    not, consecutive or scattered partners, later groups adding to earlier gradients)."""
    monkeypatch.setattr(small, "_small_plans", {})
    M = 1 + max(max(p) for p in pairs)
    raw = [_randn(B, d, seed=30 + m) * (0.3 + 0.5 * m) for m in range(M)]
    xs = [x.to(dtype).requires_grad_(True) for x in raw]
    scale = 1 / 0.07
    if stacked:
        z = torch.stack([x.detach() for x in xs]).requires_grad_(True)
        align, unif = small.small_contrastive(z, pairs, scale)
        inputs = (z,)
    else:
        align, unif = small.small_contrastive(xs, pairs, scale)
        inputs = tuple(xs)
    assert align.dtype == unif.dtype == dtype
    refs = [x.detach().double().requires_grad_(True) for x in xs]
    ref_align, ref_unif = _naive_small(refs, pairs, scale)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else F32
    _close(align, ref_align, tol, scale)
    _close(unif, ref_unif, tol, scale)
    got = torch.autograd.grad((1.3 * align + 0.7 * unif,), inputs)
    ref = torch.autograd.grad(1.3 * ref_align + 0.7 * ref_unif, refs)
    got = got[0].unbind(0) if stacked else got
    assert len(got) == M
    for g, r in zip(got, ref):
        _close(g, r, tol, scale)


def test_small_contrastive_zero_row_gets_the_f_normalize_gradient(monkeypatch):
    """An exactly zero row is left at zero by the normalisation and gets F.normalize's gradient
    g / eps (no projection); a row of norm 0.3 is normalised (the default eps is 1e-12)."""
    monkeypatch.setattr(small, "_small_plans", {})
    xs = [_randn(4, 3, seed=40 + m).requires_grad_(True) for m in range(2)]
    with torch.no_grad():
        xs[0][1].zero_()
        xs[1][2].mul_(0.3 / xs[1][2].norm())
    pairs = ((0, 1),)
    align, unif = small.small_contrastive(xs, pairs, 5.0)
    u = [F.normalize(x, dim=-1, eps=1e-12) for x in xs]
    S = 5.0 * u[0] @ u[1].T
    ref_align = -S.diagonal().sum() / 4
    ref_unif = 0.5 * (torch.logsumexp(S, 1).sum() + torch.logsumexp(S, 0).sum()) / 4
    _close(align, ref_align, F64)
    _close(unif, ref_unif, F64)
    got = torch.autograd.grad(0.4 * align + 1.1 * unif, xs)
    ref = torch.autograd.grad(0.4 * ref_align + 1.1 * ref_unif, xs)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10 * float(r.abs().max()))


def test_small_contrastive_gradcheck(monkeypatch):
    monkeypatch.setattr(small, "_small_plans", {})
    xs = [_randn(3, 4, seed=50 + m).requires_grad_(True) for m in range(3)]
    for pairs in (((0, 1), (0, 2), (1, 2)), ((1, 0), (1, 2)), ((0, 1), (2, 1))):
        assert torch.autograd.gradcheck(lambda *t, pairs=pairs: small.small_contrastive(list(t), pairs, 4.0), xs,
                                        eps=1e-6, atol=1e-6, rtol=1e-5)


def test_small_plan_constants_in_closed_form(monkeypatch):
    """Groups by first modality in order of appearance; with A the pair adjacency, P pairs and
    c = scale / (B P): alignment weights -c A, their gradient -c (A + A^T), and c / 2."""
    monkeypatch.setattr(small, "_small_plans", {})
    pairs = ((1, 0), (1, 3), (0, 2), (1, 2))
    for dtype in (torch.float64, torch.float32):
        groups, w, w_grad, half = small._small_plan(pairs, 6, 3.0, dtype, CPU)
        assert groups == ((1, (0, 3, 2)), (0, (2,)))
        c = 3.0 / (6 * 4)
        A = torch.zeros(4, 4, dtype=torch.float64)
        for m, n in pairs:
            A[m, n] = 1.0
        assert w.dtype == w_grad.dtype == dtype
        assert torch.equal(w, (-c * A).to(dtype)) and torch.equal(w_grad, (-c * (A + A.T)).to(dtype))
        assert half == 0.5 * c


def test_small_plan_is_cached_and_the_cache_is_bounded(monkeypatch):
    """One plan per call signature, reused (the same object); past 256 signatures the cache
    starts over."""
    cache = {}
    monkeypatch.setattr(small, "_small_plans", cache)
    key = (((0, 1),), 1, 2.0, torch.float64, CPU)
    plan = small._small_plan(*key)
    assert small._small_plan(*key) is plan and cache[key] is plan
    for batch in range(2, 258):
        small._small_plan(((0, 1),), batch, 2.0, torch.float64, CPU)
    assert len(cache) == 257
    small._small_plan(((0, 1),), 300, 2.0, torch.float64, CPU)
    assert list(cache) == [(((0, 1),), 300, 2.0, torch.float64, CPU)]
    # small_contrastive files its plan under its signature and reuses it
    x = [_randn(3, 2, seed=60 + m) for m in range(2)]
    small.small_contrastive(x, ((0, 1),), 2.0)
    key = (((0, 1),), 3, 2.0, torch.float64, CPU)
    first = cache[key]
    small.small_contrastive(torch.stack(x), ((0, 1),), 2.0)
    assert cache[key] is first



def test_small_contrastive_refuses_a_repeated_pair(monkeypatch):
    """A pair listed twice would have its block gradient written once instead of added twice:
    refused, naming the pairs, and nothing cached."""
    cache = {}
    monkeypatch.setattr(small, "_small_plans", cache)
    x = [_randn(3, 2, seed=70 + m) for m in range(2)]
    with pytest.raises(ValueError, match=r"distinct pairs, got \(\(0, 1\), \(0, 1\)\)"):
        small.small_contrastive(x, ((0, 1), (0, 1)), 2.0)
    assert cache == {}

def _t(*shape, dtype=torch.float32, dev="cpu"):
    return torch.zeros(*shape, dtype=dtype, device=dev)


FITS = [
    # (xs, scale, expected)
    ([_t(8, 4), _t(8, 4)], 14.0, (2, 8)),
    ([_t(8, 4)] * 3, 14.0, (3, 8)),
    ((_t(8, 4), _t(8, 4)), 14.0, (2, 8)),  # a tuple
    (_t(3, 8, 4), 14.0, (3, 8)),  # one stacked tensor
    (_t(2, 8, 4, dtype=torch.float64), 14.0, (2, 8)),
    ([_t(1, 4), _t(1, 4)], 14.0, (2, 1)),  # one row
    ([_t(256, 4), _t(256, 4)], 14.0, (2, 256)),  # SMALL_MAX_BATCH rows
    ([_t(257, 4), _t(257, 4)], 14.0, None),
    ([_t(8, 1), _t(8, 1)], 14.0, (2, 8)),  # d = 1
    ([_t(8, 0), _t(8, 0)], 14.0, None),  # d = 0
    ([_t(0, 4), _t(0, 4)], 14.0, None),  # no rows
    ([_t(8, 4), _t(8, 4)], 0.5, (2, 8)),  # a scale below 1
    ([_t(8, 4), _t(8, 4)], 0.0, None),
    ([_t(8, 4), _t(8, 4)], -1.0, None),
    ([_t(8, 4), _t(8, 4)], 14, None),  # an int is not a Python float
    ([_t(8, 4), _t(8, 4)], 80.0 - math.log(16), (2, 8)),  # the largest scale exp allows
    ([_t(8, 4), _t(8, 4)], 80.0 - math.log(16) + 1e-9, None),
    ([_t(8, 4), _t(8, 4)] * 2, 80.0 - math.log(32) + 1e-9, None),
    (_t(4, 8, 4, dtype=torch.float64), 700.0 - math.log(32), (4, 8)),
    (_t(4, 8, 4, dtype=torch.float64), 700.0 - math.log(32) + 1e-7, None),
    ([_t(8, 4)], 14.0, None),  # one modality
    (_t(1, 8, 4), 14.0, None),
    (_t(8, 4), 14.0, None),  # a 2-D tensor
    (_t(2, 2, 8, 4), 14.0, None),
    ([_t(8, 4), _t(7, 4)], 14.0, None),  # shapes differ
    ([_t(8, 4), _t(8, 4), _t(8, 3)], 14.0, None),  # the third differs
    ([_t(8, 4), _t(8, 4, dtype=torch.float64)], 14.0, None),  # dtypes differ
    ([_t(8, 4), _t(8, 4, dev="meta")], 14.0, None),  # devices differ
    ([_t(8, 4), [0.0] * 4], 14.0, None),  # not a tensor
    ([[0.0] * 4, _t(8, 4)], 14.0, None),
    ([_t(2, 8, 4), _t(2, 8, 4)], 14.0, None),  # 3-D members
    ([_t(8, 4, dtype=torch.bfloat16)] * 2, 14.0, None),  # no exp limit known for half
    (_t(2, 8, 4, dtype=torch.float16), 14.0, None),
    ({0: _t(8, 4), 1: _t(8, 4)}, 14.0, None),  # neither a tensor nor a list
    (5, 14.0, None),
]


@pytest.mark.parametrize(("xs", "scale", "expected"), FITS)
def test_small_contrastive_fits(xs, scale, expected):
    assert small.small_contrastive_fits(xs, scale) == expected


def test_small_contrastive_fits_nothing_while_tracing(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert small.small_contrastive_fits([_t(8, 4), _t(8, 4)], 14.0) is None


# ----------------------------------------------------------------------------- plain formulations
@pytest.mark.parametrize(("w_row", "w_col", "rows", "exclude"), [
    (w_row, w_col, slice(0, 6), exclude) for w_row, w_col in ((0.3, 0.7), (1.0, 1.0), (0.5, 0.0), (0.0, 0.5))
    for exclude in (False, True)
] + [(0.5, 0.0, slice(2, 5), True), (0.5, 0.0, slice(4, 5), True), (1.0, 0.0, slice(5, 6), True)])
def test_plain_pair_lse_matches_naive_loop(w_row, w_col, rows, exclude):
    """w_row sum_i lse_j S_ij + w_col sum_j lse_i S_ij for S = a_rows @ k^T, positives (i, i +
    offset) removed; a rank's rows (an offset, one row) with w_col = 0 as the distributed path
    calls it: a column whose only entry is removed must not turn the sum into NaN."""
    a = (_randn(6, 4, seed=70) * 3.0)[rows].requires_grad_(True)
    k = _randn(6, 4, seed=71).requires_grad_(True)
    got = plain.pair_lse(a, k, w_row, w_col, exclude, rows.start)
    ref = naive_rowcol_lse(a @ k.T, w_row, w_col, exclude, rows.start)
    assert torch.isfinite(got)
    _close(got, ref, F64)
    for g, r in zip(_grads(got, (a, k), 1.4), _grads(ref, (a, k), 1.4)):
        _close(g, r, F64)


def test_plain_pair_lse_defaults_keep_the_positives():
    a, k = _randn(5, 3, seed=72), _randn(5, 3, seed=73)
    _close(plain.pair_lse(a, k, 0.5, 0.5), naive_rowcol_lse(a @ k.T, 0.5, 0.5), F64)
    _close(plain.pair_lse(a, k, 0.5, 0.5, True), naive_rowcol_lse(a @ k.T, 0.5, 0.5, True, 0), F64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_plain_half_precision_reduces_in_float32(dtype):
    """Half-precision blocks are reduced in float32 (``_work``), results in the input dtype."""
    t = torch.ones(2, 2, dtype=dtype)
    assert plain._work(t).dtype == torch.float32
    for other in (torch.float32, torch.float64):
        x = torch.ones(2, 2, dtype=other)
        assert plain._work(x) is x
    a, k = _randn(6, 4, seed=74).to(dtype), _randn(6, 4, seed=75).to(dtype)
    got = plain.pair_lse(a * 4.0, k, 0.5, 0.5, True)
    assert got.dtype == dtype
    _close(got, naive_rowcol_lse((a * 4.0).double() @ k.double().T, 0.5, 0.5, True), {"rtol": 1e-2, "atol": 1e-2})
    got = plain.total_lse(a, k, 4.0)
    assert got.dtype == dtype
    _close(got, naive_block_lse(a.double(), k.double(), 4.0), {"rtol": 1e-2, "atol": 1e-2})


@pytest.mark.parametrize(("same", "exclude", "offset"), [(True, False, 0), (True, True, 0), (True, True, 1),
                                                         (False, False, 0), (False, True, 2)])
@pytest.mark.parametrize("learnable", [False, True])
def test_plain_total_lse_matches_naive_loop(same, exclude, offset, learnable):
    x = _randn(5, 3, seed=76).requires_grad_(True)
    y = None if same else _randn(7, 3, seed=77).requires_grad_(True)
    log_scale = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)

    def scale():
        return log_scale.exp() if learnable else 3.0

    got = plain.total_lse(x, y, scale(), exclude, offset)
    ref = naive_block_lse(x, x if same else y, scale(), exclude, offset)
    _close(got, ref, F64)
    inputs = (x,) + (() if same else (y,)) + ((log_scale,) if learnable else ())
    for g, r in zip(_grads(got, inputs, 0.8), _grads(ref, inputs, 0.8)):
        _close(g, r, F64)


def test_plain_total_lse_defaults_keep_the_diagonal():
    x = _randn(4, 3, seed=78)
    _close(plain.total_lse(x, None, 2.0), naive_block_lse(x, x, 2.0), F64)
    _close(plain.total_lse(x, None, 2.0, True), naive_block_lse(x, x, 2.0, True, 0), F64)


def test_plain_total_lse_of_one_entry():
    x, y = _randn(1, 3, seed=79), _randn(1, 3, seed=80)
    _close(plain.total_lse(x, y, 2.0), 2.0 * dot(x[0], y[0]), F64)


def _naive_volume_sums(a, others, scale, w_row, w_col, w_mean, eps, offset):
    V = naive_volumes(a, others, eps)
    R, N = len(V), len(V[0])
    L = torch.stack([torch.stack(row) for row in V]) * -scale
    pos = sum(V[i][i + offset] for i in range(R) if 0 <= i + offset < N)
    total_ = naive_rowcol_lse(L, w_row, w_col) + w_mean * sum(L[i, j] for i in range(R) for j in range(N))
    return pos, total_


@pytest.mark.parametrize(("M", "w_row", "w_col", "w_mean", "rows", "eps"), [
    (2, 0.5, 0.5, 0.0, slice(0, 5), 1e-6),
    (3, 0.5, 0.5, -0.02, slice(0, 5), 1e-6),
    (4, 1.0, 1.0, 1.0, slice(0, 5), 1e-3),
    (5, 0.5, 0.0, -0.01, slice(2, 4), 1e-6),  # a rank's anchors: offset 2
    (8, 0.0, 0.7, 0.0, slice(0, 5), 1e-6),
])
@pytest.mark.parametrize("learnable", [False, True])
def test_plain_volume_lse_matches_direct_determinants(M, w_row, w_col, w_mean, rows, eps, learnable):
    """GRAM's two sums from volumes sqrt(max(det Gram, 0) + eps), each determinant by Gaussian
    elimination of the Gram matrix of dot products, for M = 2..8; a collinear tuple (the anchor
    repeated) has det 0 and volume sqrt(eps)."""
    z = _unit(_randn(M, 5, max(M + 1, 4), seed=80 + M))
    z[1, 0] = z[0, 0]  # the anchor of sample 0 inside its own tuple
    z.requires_grad_(True)
    log_scale = torch.tensor(math.log(5.0), dtype=torch.float64, requires_grad=True)

    def scale():
        return log_scale.exp() if learnable else 5.0

    a, others = z[0, rows], z[1:]
    got = plain.volume_lse(a, others, scale(), w_row, w_col, w_mean, eps, rows.start)
    ref = _naive_volume_sums(a, others, scale(), w_row, w_col, w_mean, eps, rows.start)
    inputs = (z, log_scale) if learnable else (z,)
    for g, r in zip(got, ref):
        _close(g, r, F64)
        for gg, rr in zip(_grads(g, inputs, 1.2), _grads(r, inputs, 1.2)):
            _close(gg, rr, F64)
    if rows.start == 0:
        assert float(naive_volumes(a.detach(), others.detach(), eps)[0][0]) == pytest.approx(math.sqrt(eps), rel=1e-6)


def test_plain_volume_lse_defaults():
    """w_mean 0, eps 1e-6 and offset 0 by default."""
    z = _unit(_randn(3, 4, 5, seed=90))
    got = plain.volume_lse(z[0], z[1:], 3.0, 0.5, 0.5)
    ref = _naive_volume_sums(z[0], z[1:], 3.0, 0.5, 0.5, 0.0, 1e-6, 0)
    for g, r in zip(got, ref):
        _close(g, r, F64)
    assert all(t.dtype == torch.float64 for t in got)
    low = plain.volume_lse(z[0].float(), z[1:].float(), 3.0, 0.5, 0.5)
    assert all(t.dtype == torch.float32 for t in low)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_plain_volume_lse_half_precision(dtype):
    """Half inputs: determinants in float64, log-sum-exps in float32, both sums in the input dtype."""
    z = _unit(_randn(3, 4, 5, seed=91)).to(dtype)
    got = plain.volume_lse(z[0], z[1:], 3.0, 0.5, 0.5, -0.01)
    assert [t.dtype for t in got] == [dtype, dtype]
    ref = _naive_volume_sums(z[0].double(), z[1:].double(), 3.0, 0.5, 0.5, -0.01, 1e-6, 0)
    for g, r in zip(got, ref):
        _close(g, r, {"rtol": 1e-2, "atol": 1e-2})


# ----------------------------------------------------------------------------- GRAM's volumes
def _gram_data(M, B, d, seed=0, kind="random", dtype=torch.float64):
    """(M, B, d) unit rows; ``kind`` plants degenerate tuples (for anchor 0): "collinear" puts
    sample 0's anchor inside its own tuple, repeats a member inside tuple 1 (every pair with it
    has det 0) and makes anchor 3 a member of tuple 4; "near_collinear" moves them 1e-4 apart."""
    z = _unit(_randn(M, B, d, seed=seed))
    if kind in ("collinear", "near_collinear"):
        tiny = 1e-4 if kind == "near_collinear" else 0.0
        noise = tiny * _randn(M, B, d, seed=seed + 1)
        z[1, 0] = _unit(z[0, 0] + noise[1, 0])
        if M > 2:
            z[2, 1] = _unit(z[1, 1] + noise[2, 1])
        z[0, 3] = _unit(z[M - 1, 4] + noise[0, 3])
    return z.to(dtype)


def _naive_gram(z, anchor, rows, cols, scale, w_row, w_col, w_mean, eps):
    """GRAM's two sums by loops: V from Gaussian-elimination determinants of the Gram matrices of
    (anchor row, tuple), L = -scale V; (sum of V over the positive pairs (i, i + offset),
    w_row sum_i lse_j L + w_col sum_j lse_i L + w_mean sum_ij L)."""
    M, B = z.shape[0], z.shape[1]
    (r0, r1), (c0, c1) = rows.indices(B)[:2], cols.indices(B)[:2]
    others = torch.stack([z[m, c0:c1] for m in range(M) if m != anchor])
    V = naive_volumes(z[anchor, r0:r1], others, eps)
    R, N, offset = r1 - r0, c1 - c0, r0 - c0
    L = torch.stack([torch.stack(row) for row in V]) * -scale
    pos = sum((V[i][i + offset] for i in range(R) if 0 <= i + offset < N), 0.0 * z.sum())
    rest = naive_rowcol_lse(L, w_row, w_col) if (w_row or w_col) else torch.zeros((), dtype=z.dtype)
    return pos, rest + w_mean * sum(L[i, j] for i in range(R) for j in range(N))


def _case(M=3, B=6, d=5, anchor=0, rows=None, cols=None, scale=1 / 0.07, w=(0.5, 0.5, 0.0), chunk=None,
          kind="random", dtype=torch.float64, learnable=False, positives=True, slab=None, row_norm=None, eps=1e-6,
          seed=0, norm=1.0):
    return dict(M=M, B=B, d=d, anchor=anchor, rows=rows, cols=cols, scale=scale, w=w, chunk=chunk, kind=kind,
                dtype=dtype, learnable=learnable, positives=positives, slab=slab, row_norm=row_norm, eps=eps,
                seed=seed, norm=norm)


# float64: exp(-scale V) needs no shift up to scale vmax = 700 (unit rows: vmax ~ 1), float32 up to 80
VOLUME_CASES = {
    **{f"M{M}": _case(M=M, B=5, d=max(M + 1, 5), seed=M) for M in range(2, 9)},
    "anchor-middle": _case(M=4, anchor=1), "anchor-2-of-4": _case(M=4, anchor=2, w=(0.3, 0.9, -0.02)),
    "anchor-last": _case(M=4, anchor=3),
    "collinear": _case(kind="collinear"), "collinear-M4": _case(M=4, kind="collinear", w=(0.5, 0.5, -0.01)),
    "near-collinear": _case(kind="near_collinear"),
    "collinear-shifted-chunks": _case(M=4, kind="collinear", scale=1000.0, chunk=4),
    # a column 1000 below the largest logit: one shift for all columns would underflow it
    "collinear-shifted-column-gap": _case(kind="collinear", scale=6000.0, chunk=2),
    "shifted": _case(scale=1000.0), "shifted-mean": _case(scale=1000.0, w=(0.5, 0.5, -0.01)),
    "mean-one": _case(w=(0.5, 0.5, 1.0)), "mean-one-shifted": _case(w=(0.5, 0.5, 1.0), scale=1000.0),
    "shifted-col-one": _case(scale=1000.0, w=(0.5, 1.0, 0.0)),
    # rows of norm 3: vmax = 27, so scale 100 needs the shifts (exp(-100 V) underflows otherwise)
    "large-norms": _case(norm=3.0, scale=100.0, w=(0.5, 0.5, -0.01)),
    "large-norms-float32": _case(norm=3.0, scale=10.0, dtype=torch.float32),
    "shifted-chunk1": _case(scale=1000.0, chunk=1, w=(0.5, 0.5, -0.01)),
    "shifted-chunk4": _case(scale=1000.0, chunk=4, B=7), "chunk4": _case(chunk=4, B=7, w=(0.5, 0.5, -0.01)),
    "chunk0": _case(chunk=0, w=(0.2, 0.8, 0.0)), "chunk-large": _case(chunk=50),
    "rows-offset": _case(rows=slice(2, 5), w=(0.5, 0.0, -0.005)),
    "rows-offset-shifted-chunks": _case(rows=slice(1, 6), w=(0.5, 0.0, -0.005), scale=1000.0, chunk=2),
    "cols-offset": _case(cols=slice(1, 4), w=(0.5, 0.5, -0.005)),
    "cols-offset-shifted": _case(cols=slice(2, 6), w=(0.0, 0.5, 0.0), scale=1000.0, chunk=2, anchor=2),
    "rows-and-cols": _case(rows=slice(1, 4), cols=slice(3, 6), w=(0.7, 0.0, 0.01), chunk=2),
    "rows-equal-cols": _case(rows=slice(1, 6), cols=slice(1, 6), w=(0.5, 0.0, 0.01)),
    "rows-equal-cols-prefix": _case(rows=slice(0, 5), cols=slice(0, 5), w=(0.5, 0.0, 0.0), B=6, d=5),
    "rows-and-cols-negative": _case(rows=slice(3, 6), cols=slice(0, 5), w=(0.7, 0.0, 0.0), M=4, anchor=3),
    "no-positive-pair": _case(rows=slice(4, 6), cols=slice(0, 3), w=(0.5, 0.0, 0.0)),
    "row-lse-only": _case(w=(1.0, 0.0, 0.0)), "col-lse-only": _case(w=(0.0, 1.0, 0.0), chunk=2),
    "col-lse-only-shifted": _case(w=(0.0, 1.0, 0.0), scale=1000.0),
    "mean-only": _case(w=(0.0, 0.0, -0.5)), "mean-only-chunks": _case(w=(0.0, 0.0, 0.3), chunk=4),
    "learnable": _case(learnable=True, w=(0.5, 0.5, -0.02)),
    "learnable-shifted-chunks": _case(learnable=True, scale=1000.0, chunk=4, B=7, w=(0.5, 0.5, -0.02)),
    "learnable-row-only": _case(learnable=True, w=(0.5, 0.0, 0.0), rows=slice(1, 5), chunk=2),
    "learnable-col-only": _case(learnable=True, w=(0.0, 0.5, 0.0)),
    "no-positives-gradient": _case(positives=False, w=(0.5, 0.5, -0.01), chunk=4),
    "slabs": _case(slab=1, w=(0.5, 0.5, -0.01), rows=None, cols=slice(1, 6)),
    "slabs-shifted-chunks": _case(slab=1, scale=1000.0, chunk=4, B=7, w=(0.5, 0.5, -0.01)),
    "slabs-offset": _case(slab=1, rows=slice(2, 6), cols=slice(0, 5), w=(0.5, 0.0, 0.0)),
    "row-norm": _case(row_norm=1.0, w=(0.5, 0.5, -0.01)), "eps": _case(eps=1e-3, kind="collinear"),
    "float32": _case(dtype=torch.float32, w=(0.5, 0.5, -0.01)),
    "float32-shifted": _case(dtype=torch.float32, scale=100.0, chunk=4, B=7),
    "float32-learnable": _case(dtype=torch.float32, learnable=True, chunk=2),
}


@pytest.mark.parametrize("case", list(VOLUME_CASES.values()), ids=list(VOLUME_CASES))
def test_volume_lse_matches_naive_determinants(case, monkeypatch):
    """Both outputs of the factorised kernel and their gradients (each output weighted differently;
    a learnable scale's too) against determinants by Gaussian elimination, for M = 2..8, every
    anchor position, exactly and nearly collinear tuples (the eps guard), both ways of keeping
    exp in range, uneven row chunks, slab steps of one row, a rank's rows or columns (offsets of
    either sign, or no positive pair at all), each weight zero or not."""
    c = case
    if c["slab"] is not None:
        monkeypatch.setattr(volume, "_SLAB_ENTRIES", c["slab"])
    z = (c["norm"] * _gram_data(c["M"], c["B"], c["d"], seed=c["seed"], kind=c["kind"])).to(c["dtype"])
    z.requires_grad_(True)
    log_scale = torch.tensor(math.log(c["scale"]), dtype=c["dtype"], requires_grad=True)
    scale = log_scale.exp() if c["learnable"] else c["scale"]
    w_row, w_col, w_mean = c["w"]
    got = volume_lse(z, c["anchor"], scale, w_row, w_col, w_mean, c["eps"], c["rows"], c["cols"], c["chunk"],
                     c["row_norm"], c["positives"])
    assert [t.dtype for t in got] == [c["dtype"]] * 2
    zr = z.detach().double().requires_grad_(True)
    log_r = log_scale.detach().double().requires_grad_(True)
    ref = _naive_gram(zr, c["anchor"], c["rows"] or slice(None), c["cols"] or slice(None),
                      log_r.exp() if c["learnable"] else c["scale"], w_row, w_col, w_mean, c["eps"])
    f64 = c["dtype"] == torch.float64
    tol = {"rtol": 1e-9, "atol": 1e-9} if f64 else {"rtol": 1e-4, "atol": 1e-4}
    for g, r in zip(got, ref):
        _close(g, r, tol, c["scale"] if not f64 else 1.0)
    inputs, ref_inputs = ((z, log_scale), (zr, log_r)) if c["learnable"] else ((z,), (zr,))
    outs = [got[1]] + ([got[0]] if c["positives"] else [])
    refs = [ref[1]] + ([ref[0]] if c["positives"] else [])
    weights = [1.3, 0.7]
    g = torch.autograd.grad(outs, inputs, grad_outputs=[torch.tensor(w, dtype=c["dtype"]) for w in weights[:len(outs)]],
                            retain_graph=True, allow_unused=True)
    r = torch.autograd.grad(refs, ref_inputs, grad_outputs=[torch.tensor(w, dtype=torch.float64)
                                                            for w in weights[:len(refs)]], allow_unused=True)
    for gg, rr in zip(g, r):
        rr = torch.zeros_like(gg, dtype=torch.float64) if rr is None else rr
        _close(gg, rr, tol, max(1.0, float(rr.abs().max())))
    if not c["positives"]:  # the first output carries no gradient
        (gp,) = torch.autograd.grad(got[0], z, allow_unused=True)
        assert gp is None or not gp.any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("scale", "chunk", "learnable"), [(1 / 0.07, None, False), (100.0, 4, False),
                                                           (1 / 0.07, 3, True)])
def test_volume_lse_half_precision_close_to_naive(dtype, scale, chunk, learnable):
    """Half inputs: results in the input dtype, finite and close to float64 determinants of the same
    rounded rows. (Negatives with det 0 exactly are not used here: a half-precision GEMM cannot
    resolve a cancellation to zero, and the eps guard's slope 1 / (2 sqrt(eps)) magnifies it.)"""
    z = _gram_data(3, 7, 6, seed=3).to(dtype).requires_grad_(True)
    s = torch.tensor(scale, dtype=dtype, requires_grad=True) if learnable else scale
    pos, lse_ = volume_lse(z, 0, s, 0.5, 0.5, -0.01, 1e-6, None, None, chunk)
    assert pos.dtype == lse_.dtype == dtype
    zr = z.detach().double().requires_grad_(True)
    rpos, rlse = _naive_gram(zr, 0, slice(None), slice(None), float(scale), 0.5, 0.5, -0.01, 1e-6)
    _close(pos, rpos, {"rtol": 1e-2, "atol": 1e-2})
    _close(lse_, rlse, {"rtol": 1e-2, "atol": 1e-2}, scale)
    (g,) = torch.autograd.grad(0.6 * pos + lse_, z)
    (r,) = torch.autograd.grad(0.6 * rpos + rlse, zr)
    assert torch.isfinite(g).all()
    assert float((g.double() - r).norm() / r.norm()) < (4e-2 if dtype == torch.bfloat16 else 1e-2)


def test_volume_lse_while_tracing_is_the_direct_formulation(monkeypatch):
    """While torch.compile traces, the direct determinants answer (eagerly here): same sums for a
    rank's rows against some columns, any anchor."""
    z = _gram_data(4, 6, 5, seed=4).requires_grad_(True)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    got = volume_lse(z, 2, 5.0, 0.5, 0.0, -0.01, 1e-4, slice(1, 5), slice(2, 6))
    monkeypatch.undo()
    ref = _naive_gram(z, 2, slice(1, 5), slice(2, 6), 5.0, 0.5, 0.0, -0.01, 1e-4)
    for g, r in zip(got, ref):
        _close(g, r, F64)
        _close(_grads(g, (z,), 1.1)[0], _grads(r, (z,), 1.1)[0], F64)


def test_volume_lse_defaults():
    """w_mean 0, eps 1e-6, all rows and columns, positives with their gradient."""
    z = _gram_data(3, 5, 4, seed=5, kind="collinear").requires_grad_(True)
    got = volume_lse(z, 1, 3.0, 0.5, 0.5)
    ref = _naive_gram(z, 1, slice(None), slice(None), 3.0, 0.5, 0.5, 0.0, 1e-6)
    for g, r in zip(got, ref):
        _close(g, r, F64)
        _close(_grads(g, (z,), 1.0)[0], _grads(r, (z,), 1.0)[0], F64)


def test_volume_lse_rejects_bad_arguments():
    z = _gram_data(3, 4, 5)
    volume_lse(z[:2], 1, 1.0, 0.5, 0.5)  # M = 2 and the last anchor are fine
    volume_lse(z, 0, 1.0, 0.5, 0.0, rows=slice(3, 4), cols=slice(0, 1))  # one row, one column
    with pytest.raises(ValueError, match=r"^volume_lse needs z: \(M, B, d\) with M >= 2, got \(4, 5\)$"):
        volume_lse(z[0], 0, 1.0, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"^volume_lse needs z: \(M, B, d\) with M >= 2, got \(1, 4, 5\)$"):
        volume_lse(z[:1], 0, 1.0, 0.5, 0.5)
    for anchor in (3, -1):
        with pytest.raises(ValueError, match=rf"^anchor={anchor} is out of range for M=3 modalities$"):
            volume_lse(z, anchor, 1.0, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"^column log-sum-exps need every anchor row$"):
        volume_lse(z, 0, 1.0, 0.5, 0.5, rows=slice(0, 3))
    for part in (slice(0, 4, 2), slice(2, 2), slice(3, 1)):
        with pytest.raises(ValueError, match=r"^rows and cols must be non-empty contiguous slices, got "):
            volume_lse(z, 0, 1.0, 0.5, 0.0, rows=part)
        with pytest.raises(ValueError, match=r"^rows and cols must be non-empty contiguous slices, got "):
            volume_lse(z, 0, 1.0, 0.5, 0.0, cols=part)


@pytest.mark.parametrize(("M", "kind", "scale", "chunk"), [(2, "random", 5.0, None), (3, "collinear", 1000.0, 2),
                                                            (4, "near_collinear", 14.0, 3)])
def test_volume_lse_gradcheck(M, kind, scale, chunk):
    z = _gram_data(M, 5, 4, seed=6 + M, kind=kind).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: volume_lse(t, M - 1, scale, 0.5, 0.5, -0.02, 1e-6, None, None, chunk),
                                    (z,), eps=1e-6, atol=1e-5 * max(1.0, scale / 14), rtol=1e-4)


@pytest.mark.parametrize(("chunk", "dtype"), [(None, torch.float64), (2, torch.float64), (None, torch.float32),
                                              (3, torch.bfloat16), (None, torch.float16)])
@pytest.mark.parametrize("M", [2, 3, 5])
def test_gram_volumes_are_direct_determinants(chunk, dtype, M):
    """V[i, j] = sqrt(max(det Gram(a_i, tuple j), 0) + eps) against elimination, with the anchor
    inside tuple 0 (det 0: V = sqrt(eps)); half precision takes its determinants in float64."""
    z = _gram_data(M, 5, 6, seed=7 + M, kind="collinear")
    a, others = z[0, :4].to(dtype).requires_grad_(True), z[1:].to(dtype)
    got = gram_volumes(a, others, 1e-4, chunk)
    assert got.dtype == dtype and got.shape == (4, 5)
    ar = a.detach().double().requires_grad_(True)
    ref = torch.stack([torch.stack(row) for row in naive_volumes(ar, others.double(), 1e-4)])
    tol = F64 if dtype == torch.float64 else ({"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32
                                               else {"rtol": 1e-2, "atol": 1e-2})
    _close(got, ref, tol)
    assert float(got[0, 0].detach()) == pytest.approx(0.01, rel=tol["rtol"])
    weights = torch.linspace(-1.0, 1.0, 20, dtype=torch.float64).view(4, 5)
    (g,) = torch.autograd.grad(got, a, grad_outputs=weights.to(dtype))
    (r,) = torch.autograd.grad(ref, ar, grad_outputs=weights)
    _close(g, r, tol if dtype != torch.bfloat16 else {"rtol": 5e-2, "atol": 5e-2}, float(r.abs().max()))


def test_gram_volumes_clamp_a_negative_determinant():
    """Rounding can make det Gram of linearly dependent rows slightly negative: the volume is then
    sqrt(0 + eps), not NaN (here with eps = 0: exactly 0)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(100):  # the first dependent triple u, w, 0.3 u + 0.7 w whose determinant rounds below 0
        u, w = torch.randn(2, 3, generator=g, dtype=torch.float64)
        rows = torch.stack([u, w, 0.3 * u + 0.7 * w])
        if float(torch.linalg.det(rows @ rows.T)) < 0.0:
            break
    else:
        pytest.fail("no negative rounding found")
    got = gram_volumes(rows[:1], rows[1:].unsqueeze(1), 0.0)
    assert float(got) == 0.0
    assert float(gram_volumes(rows[:1], rows[1:].unsqueeze(1), 1e-8)) == pytest.approx(1e-4, rel=1e-6)



@pytest.mark.parametrize("M", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("kind", ["collinear", "near_collinear", "random"])
def test_tuple_volumes_are_direct_determinants(M, kind, monkeypatch):
    """The scoring volumes by the factorisation equal elimination determinants in float64 (degenerate
    tuples included), also when the rows come in several steps (here 3 rows per step)."""
    z = _gram_data(M, 7, 9, seed=40 + M, kind=kind)
    ref = torch.stack([torch.stack(row) for row in naive_volumes(z[0, :5], z[1:], 1e-4)])
    monkeypatch.setattr(volume, "_VOLUME_STEP_ENTRIES", 3 * (M - 1) * 7)
    got = volume.tuple_volumes(z[0, :5], z[1:], 1e-4)
    assert got.dtype == torch.float64 and got.shape == (5, 7)
    _close(got, ref, F64)
    monkeypatch.undo()
    _close(volume.tuple_volumes(z[0, :5], z[1:], 1e-4), ref, F64)
    if kind == "collinear":  # the anchor inside its own tuple: V = sqrt(eps)
        assert float(got[0, 0]) == pytest.approx(0.01, rel=1e-9)



def test_tuple_volumes_step_over_more_rows_than_dimensions(monkeypatch):
    """Rows stepped 2 at a time when there are more rows (7) than dimensions (3)."""
    z = _unit(_randn(3, 7, 3, seed=11))
    monkeypatch.setattr(volume, "_VOLUME_STEP_ENTRIES", 2 * 2 * 7)
    ref = torch.stack([torch.stack(row) for row in naive_volumes(z[0], z[1:], 1e-6)])
    _close(volume.tuple_volumes(z[0], z[1:], 1e-6), ref, F64)

def test_tuple_volumes_in_float32_are_float64_accurate():
    """float32 rows are scored in float64 and returned in float32: within float32 rounding of the
    float64 values (the direct float32 determinants are ~10x further off), and never tracked by autograd."""
    z = _unit(_randn(4, 60, 32, seed=3))
    z[1, 2] = z[0, 2]  # a zero volume
    ref = gram_volumes(z[0], z[1:], 0.0)
    x = z.float().requires_grad_(True)
    got = volume.tuple_volumes(x[0], x[1:])
    assert got.dtype == torch.float32 and not got.requires_grad
    assert float((got.double() - ref).abs().max()) < 1e-6
    assert float(got[2, 2]) == pytest.approx(0.0, abs=1e-6)


def test_tuple_volumes_clamp_a_negative_determinant_and_add_eps():
    """A dependent triple whose determinant rounds below 0 scores 0 with eps = 0, sqrt(eps) with eps > 0."""
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        u, w = torch.randn(2, 3, generator=g, dtype=torch.float64)
        others = torch.stack([w, 0.3 * u + 0.7 * w]).unsqueeze(1)
        fr = volume._frames(others.transpose(0, 1), torch.float64)
        if float(u.square().sum() * fr.det[0] - (u @ fr.rows.T).square().sum()) < 0.0:
            break
    else:
        pytest.fail("no negative rounding found")
    assert float(volume.tuple_volumes(u[None], others)) == 0.0
    assert float(volume.tuple_volumes(u[None], others, 1e-8)) == pytest.approx(1e-4, rel=1e-6)


@pytest.mark.parametrize(("rows", "others"), [((3,), (2, 4, 3)), ((3, 4), (4, 3)), ((3, 4), (0, 3, 4)),
                                              ((3, 4), (2, 3, 5))])
def test_tuple_volumes_name_the_bad_shapes(rows, others):
    with pytest.raises(ValueError, match=r"tuple_volumes needs anchor_rows \(R, d\).*" + str(tuple(rows))):
        volume.tuple_volumes(torch.zeros(rows), torch.zeros(others))

def _naive_excl(s, skip):
    """prod of s[m] over m not in ``skip`` (a Python loop)."""
    out = 1.0
    for m in range(len(s)):
        if m not in skip:
            out = out * float(s[m])
    return out


@pytest.mark.parametrize("K", [1, 2, 3, 4, 7])
def test_exclusive_products_by_loops(K):
    """prod_{l != k} s_l and prod_{m != k, l} s_m without division, zeros included."""
    s = torch.rand(3, K, generator=torch.Generator().manual_seed(K), dtype=torch.float64) + 0.5
    s[1, K // 2] = 0.0
    if K > 2:
        s[2, :2] = 0.0
    lam = volume._exclusive_products(s)
    assert lam.shape == (3, K)
    for n in range(3):
        for k in range(K):
            assert float(lam[n, k]) == pytest.approx(_naive_excl(s[n], {k}), rel=1e-14, abs=0.0)
    pi = volume._pair_exclusive_products(s)
    assert pi.shape == (3, K, K) and pi.dtype == s.dtype
    for n in range(3):
        for k in range(K):
            for l in range(K):
                if k != l:
                    assert float(pi[n, k, l]) == pytest.approx(_naive_excl(s[n], {k, l}), rel=1e-14, abs=0.0)


def test_eye_masks_by_loops_and_cached():
    for k in (1, 2, 3, 5):
        eye, keep = volume._eye(k, CPU)
        assert volume._eye(k, CPU)[0] is eye and volume._eye(k, CPU)[1] is keep
        assert eye.dtype == keep.dtype == torch.bool
        assert eye.tolist() == [[i == j for j in range(k)] for i in range(k)]
        assert keep.tolist() == [[[m != a and m != b for m in range(k)] for b in range(k)] for a in range(k)]


@pytest.mark.parametrize("K", [1, 2, 3, 5])
def test_eigh_reconstructs_and_orders(K):
    """Eigenvalues ascending as torch.linalg.eigh gives them, orthonormal eigenvectors as columns,
    U diag(s) U^T = C; K = 2 also at a double eigenvalue and an off-diagonal zero."""
    x = _randn(4, K, 6, seed=K)
    c = x @ x.transpose(1, 2)
    if K == 2:
        c[1] = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        c[2] = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
        c[3] = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    s, u = volume._eigh(c)
    assert s.shape == (4, K) and u.shape == (4, K, K)
    torch.testing.assert_close(s, torch.linalg.eigvalsh(c), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(u @ torch.diag_embed(s) @ u.transpose(1, 2), c, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(u.transpose(1, 2) @ u, torch.eye(K, dtype=torch.float64).expand(4, K, K),
                               rtol=1e-12, atol=1e-12)


def _adjugate(c):
    """adj(C)[k][l] = (-1)^(k + l) det(C without row l and column k), by elimination."""
    K = len(c)
    if K == 1:
        return [[torch.ones((), dtype=torch.float64)]]
    return [[(-1) ** (k + l) * det([[c[i][j] for j in range(K) if j != k] for i in range(K) if i != l])
             for l in range(K)] for k in range(K)]


@pytest.mark.parametrize(("K", "dtype"), [(1, torch.float64), (2, torch.float64), (3, torch.float64),
                                          (4, torch.float32), (2, torch.bfloat16)])
def test_frames_hold_det_and_adjugate(K, dtype):
    """Per tuple j: det C_j, and g_j^T g_j = X_j^T adj(C_j) X_j (the adjugate by cofactors), the
    tuple rows k-major in the GEMM dtype; collinear members give det 0 and a rank-one adjugate."""
    x = _randn(3, K, 5, seed=20 + K)
    if K > 1:
        x[1, 1] = x[1, 0]
    fr = volume._frames(volume._tuple_rows(x.transpose(0, 1).to(dtype)), dtype)
    fdt = torch.float64 if dtype == torch.float64 else torch.float32
    assert fr.x.dtype == fr.s.dtype == fr.lam.dtype == fr.det.dtype == fr.g.dtype == fdt and fr.rows.dtype == dtype
    xs = x.to(dtype).double()
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 2e-4}
    for j in range(3):
        c = [[dot(xs[j, k], xs[j, l]) for l in range(K)] for k in range(K)]
        adj = torch.stack([torch.stack(row) for row in _adjugate(c)])
        _close(fr.det[j], det(c), tol)
        _close(fr.g[j].T @ fr.g[j], xs[j].T @ adj @ xs[j], tol)
        for k in range(K):
            _close(fr.rows[k * 3 + j], fr.g[j, k].to(dtype), {"rtol": 0.0, "atol": 0.0})
    assert float(fr.s.min()) >= 0.0


def test_tuple_rows_and_others():
    z = _randn(4, 3, 2, seed=30)
    for anchor in range(4):
        others = volume._others(z, anchor)
        assert torch.equal(others, torch.stack([z[m] for m in range(4) if m != anchor]))
    assert volume._others(z, 0).data_ptr() == z[1].data_ptr()  # a view at either end
    assert volume._others(z, 3).data_ptr() == z.data_ptr()
    for dtype, frame in ((torch.float64, torch.float64), (torch.float32, torch.float32),
                         (torch.bfloat16, torch.float32), (torch.float16, torch.float32)):
        rows = volume._tuple_rows(z.to(dtype))
        assert rows.dtype == frame and rows.shape == (3, 4, 2)
        assert torch.equal(rows, z.to(dtype).transpose(0, 1).to(frame))


def test_volume_bound_by_hadamard():
    """sqrt(prod_m max_i |z^m_i|^2 + eps), or sqrt(row_norm^(2 M) + eps) for a known bound; it
    bounds every volume."""
    z = _randn(3, 4, 5, seed=31)
    expected = math.sqrt(math.prod(max(float(dot(z[m, i], z[m, i])) for i in range(4)) for m in range(3)) + 0.25)
    assert volume._volume_bound(z, 0.25, None) == pytest.approx(expected, rel=1e-12)
    assert volume._volume_bound(z.float(), 0.25, None) == pytest.approx(expected, rel=1e-5)
    assert volume._volume_bound(z, 0.25, 1.5) == pytest.approx(math.sqrt(1.5**6 + 0.25), rel=1e-12)
    V = naive_volumes(z[0], z[1:], 0.25)
    assert max(float(v) for row in V for v in row) <= expected


def test_volume_lse_gradient_of_the_scale_alone():
    """Only a learnable scale requires a gradient (frozen embeddings): it still gets it."""
    z = _gram_data(3, 5, 4, seed=40)
    for value, chunk in ((14.0, None), (1000.0, 2)):
        log_scale = torch.tensor(math.log(value), dtype=torch.float64, requires_grad=True)
        _, got = volume_lse(z, 0, log_scale.exp(), 0.5, 0.5, -0.01, 1e-6, None, None, chunk)
        _, ref = _naive_gram(z, 0, slice(None), slice(None), log_scale.exp(), 0.5, 0.5, -0.01, 1e-6)
        _close(got, ref, F64, value)
        _close(_grads(got, (log_scale,), 0.9)[0], _grads(ref, (log_scale,), 0.9)[0], F64, value)


def test_volume_lse_known_row_norm_reads_nothing_on_the_host():
    """With a row-norm bound the exp range is decided without reading the rows' norms (a host
    read, a synchronisation on an accelerator); the sums are the same."""
    z = _gram_data(3, 5, 4, seed=41).requires_grad_(True)
    with no_host_reads():
        got = volume_lse(z, 1, 14.0, 0.5, 0.5, -0.01, 1e-6, row_norm=1.0)
        (g,) = torch.autograd.grad(got[0] + got[1], z)
    ref = _naive_gram(z, 1, slice(None), slice(None), 14.0, 0.5, 0.5, -0.01, 1e-6)
    for a, b in zip(got, ref):
        _close(a, b, F64)
    _close(g, torch.autograd.grad(ref[0] + ref[1], z)[0], F64)


@pytest.mark.parametrize("w_col", [0.5, 0.0])
@pytest.mark.parametrize("chunk", [None, 2, 1, 0, 50])
def test_volume_lse_chunk_bounds_the_block(chunk, w_col, monkeypatch):
    """``chunk_size`` bounds the live block to chunk x N x (K + 2) entries (at least one row, at
    most all): rows in chunks of ``chunk``, twice over when column sums need a first pass."""
    blocks = []
    scratch = volume._scratch

    def spy(shape, dtype, dev):
        blocks.append(shape[0] // (4 * 5))  # K + 2 = 4 slices of N = 5 entries per row
        return scratch(shape, dtype, dev)

    monkeypatch.setattr(volume, "_scratch", spy)
    z = _gram_data(3, 5, 4, seed=42).requires_grad_(True)
    got = volume_lse(z, 0, 14.0, 0.5, w_col, 0.0, 1e-6, None, None, chunk)
    ref = _naive_gram(z, 0, slice(None), slice(None), 14.0, 0.5, w_col, 0.0, 1e-6)
    for a, b in zip(got, ref):
        _close(a, b, F64)
    step = 5 if chunk is None else max(1, min(chunk, 5))
    rows = [min(step, 5 - s0) for s0 in range(0, 5, step)]
    assert blocks == (rows * 2 if w_col and step < 5 else rows)


def test_gram_volumes_in_chunks_of_rows_beyond_the_dimension():
    """More anchor rows (5) than dimensions (3), in chunks of 2: every row is covered."""
    z = _gram_data(3, 5, 3, seed=43)
    got = gram_volumes(z[0], z[1:], 1e-6, 2)
    ref = torch.stack([torch.stack(row) for row in naive_volumes(z[0], z[1:], 1e-6)])
    _close(got, ref, F64)


@pytest.mark.parametrize(("chunk", "scale"), [(2, 14.0), (2, 1000.0), (None, 14.0)])
def test_volume_lse_without_gradient_sums_every_chunk(chunk, scale):
    """Inputs that need no gradient (evaluation): both sums still cover every row chunk."""
    z = _gram_data(3, 5, 4, seed=44, kind="near_collinear")
    with torch.no_grad():
        got = volume_lse(z, 0, scale, 0.5, 0.5, -0.01, 1e-6, None, None, chunk)
    ref = _naive_gram(z, 0, slice(None), slice(None), scale, 0.5, 0.5, -0.01, 1e-6)
    for a, b in zip(got, ref):
        _close(a, b, F64, scale)
