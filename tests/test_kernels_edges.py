"""Edge cases of the fused log-sum-exp kernels and of the forms, distances, workspace and device
modules, each against an independent expectation.

The expectations are deliberately naive: float64 Python loops over rows, blocks and columns with the
textbook log-sum-exp of ``tests/reference_losses.py`` (autograd through the loops gives the reference
gradients), closed forms, hand-made values and ``torch.autograd.gradcheck`` in float64. The fused
kernels choose between three ways of keeping exp() in range (no shift, one shift per row, separate
row and column shifts) from bounds on the operands; the tests below force each one by lowering the
module's limits, check which one answered, and cover what the generic comparisons in
``tests/test_kernels.py`` leave open: weights of exactly 0, 1 and 2, row chunks that split unevenly,
a single row, positives at an offset, one operand without gradient, the dispatch thresholds, the
learnable scale, half-precision operands and the optional generated block tail (with
``torch.compile`` replaced by the eager functions, so no compiler is needed).
"""

from __future__ import annotations

import math
from functools import cache
from types import SimpleNamespace

import pytest
import torch
from reference_losses import dot
from reference_losses import lse as naive_lse

from objectives.kernels import device, distances, lse, workspace
from objectives.kernels.distances import sq_dists
from objectives.kernels.forms import modality_quadratic, pair_laplacian, unit_rows
from objectives.kernels.lse import group_lse, pair_lse

F64 = torch.float64
PATHS = ("unshifted", "row shift", "two shifts")


# ----------------------------------------------------------------------------- naive references


def naive_pair(a, k, w_row=1.0, w_col=0.0, exclude=False, offset=0, scale=1.0):
    """w_row sum_{i,b} lse_j S[i,b,j] + w_col sum_{b,j} lse_i S[i,b,j] with S = scale a_i . k_bj,
    by loops in float64; with ``exclude`` the entry j == i + offset leaves both log-sum-exps."""
    a = a.double()
    k = k.double()
    if k.dim() == 2:
        k = k.unsqueeze(0)
    R, nb, N = a.shape[0], k.shape[0], k.shape[1]
    s = [[[scale * dot(a[i], k[b, j]) for j in range(N)] for b in range(nb)] for i in range(R)]

    def kept(i, j):
        return not (exclude and j == i + offset)

    total = torch.zeros((), dtype=F64)
    for b in range(nb):
        if w_row != 0.0:
            for i in range(R):
                total = total + w_row * naive_lse([s[i][b][j] for j in range(N) if kept(i, j)])
        if w_col != 0.0:
            for j in range(N):
                total = total + w_col * naive_lse([s[i][b][j] for i in range(R) if kept(i, j)])
    return total


def inputs(R, nb, N, d=3, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(R, d, generator=g, dtype=F64)
    k = torch.randn(nb, N, d, generator=g, dtype=F64)
    return a.to(dtype), k.to(dtype)


@cache
def reference(shape, seed, w_row, w_col, exclude=False, offset=0, scale=1.0):
    """(value, d/da, d/dk) of naive_pair on inputs(*shape, seed), computed once per key."""
    a, k = inputs(*shape, seed=seed)
    a.requires_grad_(True)
    k.requires_grad_(True)
    value = naive_pair(a, k, w_row, w_col, exclude, offset, scale)
    ga, gk = torch.autograd.grad(value, (a, k))
    return value.detach(), ga, gk


def naive_group(z, groups, w_row, w_col, exclude=False, scale=1.0):
    total = torch.zeros((), dtype=F64)
    for m, partners in groups:
        total = total + naive_pair(z[m], z[list(partners)], w_row, w_col, exclude, 0, scale)
    return total


# ----------------------------------------------------------------------------- spies and switches


def force_path(monkeypatch, path, work=F64):
    """Make the kernels answer through ``path``: a negative exp limit declines the unshifted path,
    a negative margin declines the row-shift path (both only decide; every path is exact); small
    blocks go through the fused Function too."""
    monkeypatch.setattr(lse, "FUSED_MIN_ENTRIES", 0)
    if path in ("row shift", "two shifts"):
        monkeypatch.setitem(lse._EXP_LIMIT, work, -1.0)
    if path == "two shifts":
        monkeypatch.setitem(lse._SHIFT_MARGIN, work, -1.0)


def path_log(monkeypatch):
    """The paths that answered, in call order."""
    log = []
    for name, label in (("_pair_lse_unshifted", "unshifted"), ("_pair_lse_one_block", "row shift"),
                        ("_pair_lse_shifted", "two shifts")):
        original = getattr(lse, name)

        def wrapper(*args, _original=original, _label=label):
            out = _original(*args)
            if out is not None:
                log.append(_label)
            return out

        monkeypatch.setattr(lse, name, wrapper)
    return log


def block_rows(monkeypatch):
    """Rows of every similarity block formed (one GEMM each)."""
    rows = []
    original = lse._pair_block

    def wrapper(a_c, *args):
        rows.append(a_c.shape[0])
        return original(a_c, *args)

    monkeypatch.setattr(lse, "_pair_block", wrapper)
    return rows


def expected_path(path, w_col, chunk):
    # one shift per row exists only for the symmetric case in one block
    if path == "row shift" and (w_col == 0.0 or chunk is not None):
        return "two shifts"
    return path


def expected_blocks(path, w_col, chunk, R=7):
    chunks = [R] if chunk is None else [min(chunk, R - s0) for s0 in range(0, R, chunk)]
    passes = 2 if (w_col != 0.0 and chunk is not None) else 1  # column sums take a first pass
    declined = [R] if (path == "two shifts" and w_col != 0.0 and chunk is None) else []
    if expected_path(path, w_col, chunk) == "row shift":
        return [R]
    return declined + chunks * passes


def close(got, want, rtol=1e-10, atol=1e-10):
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- pair_lse


WEIGHTS = [(1.0, 0.0), (1.0, 1.0), (2.0, 2.0), (0.3, 0.7), (0.0, 1.0)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("exclude", [False, True])
def test_pair_lse_each_path_against_naive_loops(path, weights, chunk, exclude, monkeypatch):
    """Value and gradients on every path, whole block and 7 rows in chunks of 3, 3, 1, with weights
    of exactly 0, 1 and 2 (branches skip a multiplication by 1 and a zero term) and scale 2 (the
    scale rides on the GEMM); also which path answered and how many blocks were formed (a first
    pass over the row chunks only for column sums)."""
    w_row, w_col = weights
    force_path(monkeypatch, path)
    log = path_log(monkeypatch)
    rows = block_rows(monkeypatch)
    a, k = inputs(7, 2, 7)
    a.requires_grad_(True)
    k.requires_grad_(True)
    got = pair_lse(a, k, w_row, w_col, exclude, 0, chunk, scale=2.0)
    value, ga, gk = reference((7, 2, 7, 3), 0, w_row, w_col, exclude, 0, 2.0)
    close(got, value)
    for g, r in zip(torch.autograd.grad(got, (a, k)), (ga, gk)):
        close(g, r)
    assert log == [expected_path(path, w_col, chunk)]
    assert rows == expected_blocks(path, w_col, chunk)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("needs", ["a", "k", "none"])
def test_pair_lse_gradient_of_one_operand_only(path, chunk, needs, monkeypatch):
    """Only ``a``, only ``k`` or neither needs a gradient: the one asked for is exact; without any,
    no gradient product is formed and the value still sums every row chunk."""
    force_path(monkeypatch, path)
    log = path_log(monkeypatch)
    gradient_products = []
    original = lse._accumulate
    monkeypatch.setattr(lse, "_accumulate", lambda *args: gradient_products.append(1) or original(*args))
    a, k = inputs(7, 2, 7)
    leaf = {"a": a, "k": k}.get(needs)
    if leaf is not None:
        leaf.requires_grad_(True)
    got = pair_lse(a, k, 0.3, 0.7, False, 0, chunk)
    value, ga, gk = reference((7, 2, 7, 3), 0, 0.3, 0.7)
    close(got, value)
    if leaf is not None:
        (g,) = torch.autograd.grad(got, leaf)
        close(g, ga if needs == "a" else gk)
    else:  # and no gradient was formed
        assert not got.requires_grad and gradient_products == []
    assert log == [expected_path(path, 0.7, chunk)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("chunk", [None, 1])
def test_pair_lse_single_row_and_single_column(path, chunk, monkeypatch):
    """R = N = 1: every log-sum-exp has one entry, so the value is (w_row + w_col) sum_b S[0,b,0]
    and d/da = (w_row + w_col) scale sum_b k_b0."""
    force_path(monkeypatch, path)
    a, k = inputs(1, 3, 1, d=4, seed=1)
    a.requires_grad_(True)
    k.requires_grad_(True)
    got = pair_lse(a, k, 0.5, 2.0, False, 0, chunk, scale=3.0)
    close(got, 2.5 * 3.0 * (k[:, 0] @ a[0]).sum())
    ga, gk = torch.autograd.grad(got, (a, k))
    close(ga, 2.5 * 3.0 * k[:, 0].sum(0, keepdim=True))
    close(gk, (2.5 * 3.0 * a[0]).expand(3, 1, 4))


def test_pair_lse_chunks_of_one_row(monkeypatch):
    """chunk_size=1: one row per block, and the value and gradients of the whole block."""
    rows = block_rows(monkeypatch)
    a, k = inputs(7, 2, 7)
    a.requires_grad_(True)
    got = pair_lse(a, k, 1.0, 1.0, False, 0, 1)
    value, ga, _ = reference((7, 2, 7, 3), 0, 1.0, 1.0)
    close(got, value)
    close(torch.autograd.grad(got, a)[0], ga)
    assert rows == [1] * 14


@pytest.mark.parametrize("path", ["small", "fused", "fused chunks"])
@pytest.mark.parametrize(("R", "N", "w_col", "offset"), [(3, 7, 0.0, 2), (3, 7, 0.0, 5), (5, 5, 0.5, 2)])
def test_pair_lse_excludes_positives_at_an_offset(path, R, N, w_col, offset, monkeypatch):
    """Row i's positive is column i + offset (rows of a later process); positives past the last
    column are not masked (offset 5: rows 0 and 1 only)."""
    monkeypatch.setattr(lse, "FUSED_MIN_ENTRIES", 10**9 if path == "small" else 0)
    a, k = inputs(R, 2, N, seed=2)
    a.requires_grad_(True)
    k.requires_grad_(True)
    chunk = 2 if path == "fused chunks" else None
    got = pair_lse(a, k, 1.0, w_col, True, offset, chunk, scale=2.0)
    value, ga, gk = reference((R, 2, N, 3), 2, 1.0, w_col, True, offset, 2.0)
    close(got, value)
    for g, r in zip(torch.autograd.grad(got, (a, k)), (ga, gk)):
        close(g, r)


@pytest.mark.parametrize("fused", [False, True])
def test_pair_lse_defaults_and_two_dimensional_columns(fused, monkeypatch):
    """Defaults: row log-sum-exps only, weight 1, nothing excluded (and offset 0 once excluded),
    scale 1; a (N, d) ``k`` is one block."""
    monkeypatch.setattr(lse, "FUSED_MIN_ENTRIES", 0 if fused else 10**9)
    a, k = inputs(5, 1, 5, seed=3)
    close(pair_lse(a, k), reference((5, 1, 5, 3), 3, 1.0, 0.0)[0])
    close(pair_lse(a, k[0]), reference((5, 1, 5, 3), 3, 1.0, 0.0)[0])
    close(pair_lse(a, k, exclude_positive=True), reference((5, 1, 5, 3), 3, 1.0, 0.0, True, 0)[0])
    close(pair_lse(a, k[0], 1.0, 1.0), reference((5, 1, 5, 3), 3, 1.0, 1.0)[0])


def test_small_path_weights_scale_and_dtype():
    """The plain-autograd path for small blocks: both weights of 1, scale 2 and a float16 result."""
    a, k = inputs(4, 2, 4, seed=4)
    close(pair_lse(a, k, 1.0, 1.0, scale=2.0), reference((4, 2, 4, 3), 4, 1.0, 1.0, False, 0, 2.0)[0])
    half = pair_lse(a.half(), k.half(), 1.0, 1.0, scale=2.0)
    assert half.dtype == torch.float16
    close(half.double(), naive_pair(a.half(), k.half(), 1.0, 1.0, scale=2.0), rtol=2e-3, atol=0.0)


def test_pair_lse_dispatch_threshold(monkeypatch):
    """Blocks of fewer than FUSED_MIN_ENTRIES = R * nb * N entries take the plain-autograd path,
    unless a chunk size is given; the fused Function from the threshold on."""
    calls = []
    original = lse._small_pair_lse
    monkeypatch.setattr(lse, "_small_pair_lse", lambda *args: calls.append(args[0].shape) or original(*args))
    a, k = inputs(2, 3, 4, d=5, seed=5)  # 24 entries; every dimension differs
    want = naive_pair(a, k, 1.0, 0.0)
    monkeypatch.setattr(lse, "FUSED_MIN_ENTRIES", 24)
    close(pair_lse(a, k), want)
    assert calls == []
    monkeypatch.setattr(lse, "FUSED_MIN_ENTRIES", 25)
    close(pair_lse(a, k), want)
    assert len(calls) == 1
    close(pair_lse(a, k, chunk_size=8), want)
    assert len(calls) == 1


def test_pair_lse_chunk_bounds_every_block(monkeypatch):
    """chunk_size bounds the rows of every block, on the plain pair call and per group (the group's
    chunk is shared by its partners: 3 partners, chunk 3 -> one row per block)."""
    rows = block_rows(monkeypatch)
    a, k = inputs(7, 2, 7)
    pair_lse(a, k, 1.0, 0.0, False, 0, 2)
    assert rows == [2, 2, 2, 1]
    rows.clear()
    z = unit_z(M=4, B=5)
    got = group_lse(z, [(0, [1, 2, 3])], 1.0, 0.0, False, 3)
    close(got, naive_group(z, [(0, [1, 2, 3])], 1.0, 0.0))
    assert rows == [1] * 5


@pytest.mark.parametrize("w_col", [0.5, 1.0])
def test_column_sums_need_a_square_block(w_col, monkeypatch):
    monkeypatch.setattr(lse, "FUSED_MIN_ENTRIES", 0)
    a, k = inputs(3, 1, 5)
    with pytest.raises(ValueError, match="column log-sum-exp needs as many rows as columns, got 3 and 5"):
        pair_lse(a, k, 1.0, w_col, False, 0, 2)
    close(pair_lse(a, k, 1.0, 0.0, False, 0, 2), naive_pair(a, k, 1.0, 0.0))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("needs", ["a", "k"])
def test_half_precision_operands_on_each_path(path, needs, monkeypatch):
    """float16 operands: GEMMs in float16, elementwise work in float32 (scale 2 applied after the
    GEMM), the result in float16, gradients close to float64 loops over the same values."""
    force_path(monkeypatch, path, work=torch.float32)
    log = path_log(monkeypatch)
    a, k = inputs(6, 2, 6, seed=7, dtype=torch.float16)
    leaf = a if needs == "a" else k
    leaf.requires_grad_(True)
    got = pair_lse(a, k, 0.3, 0.7, False, 0, None, scale=2.0)
    assert got.dtype == torch.float16
    a64, k64 = a.detach().double().requires_grad_(True), k.detach().double().requires_grad_(True)
    want = naive_pair(a64, k64, 0.3, 0.7, scale=2.0)
    close(got.double(), want, rtol=2e-3, atol=0.0)
    (g,) = torch.autograd.grad(got, leaf)
    (r,) = torch.autograd.grad(want, a64 if needs == "a" else k64)
    close(g.double(), r, rtol=1e-2, atol=1e-2)
    assert log == [path]


@pytest.mark.parametrize("path", PATHS)
def test_pair_lse_gradcheck(path, monkeypatch):
    """Finite differences in float64 on each path (rows in uneven chunks off the row-shift path)."""
    force_path(monkeypatch, path)
    a, k = inputs(5, 2, 5, seed=8)
    a.requires_grad_(True)
    k.requires_grad_(True)
    chunk = None if path == "row shift" else 2
    assert torch.autograd.gradcheck(lambda x, y: pair_lse(x, y, 0.4, 0.6, True, 0, chunk, scale=1.5), (a, k))


@pytest.mark.parametrize("path", ["unshifted", "row shift"])
@pytest.mark.parametrize("outer", [1, 3 * 2 * 7])
def test_outer_sum_scaling_in_row_steps(path, outer, monkeypatch):
    """The gradient E_ij (beta_i + v_j) is formed a few rows at a time (one row, or three of seven:
    3, 3, 1); every row of the block gets its factor."""
    force_path(monkeypatch, path)
    monkeypatch.setattr(lse, "_OUTER_CHUNK_ENTRIES", outer)
    a, k = inputs(7, 2, 7)
    a.requires_grad_(True)
    k.requires_grad_(True)
    got = pair_lse(a, k, 0.3, 0.7)
    value, ga, gk = reference((7, 2, 7, 3), 0, 0.3, 0.7)
    close(got, value)
    for g, r in zip(torch.autograd.grad(got, (a, k)), (ga, gk)):
        close(g, r)


# ----------------------------------------------------------------------------- bounds and margins


def test_exp_bound_is_the_product_of_the_largest_row_norms():
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 1.0]], dtype=F64)  # row norms 5, 1, sqrt 2
    y = torch.tensor([[0.0, 2.0], [1.0, 0.0]], dtype=F64)  # row norms 2, 1
    assert lse._exp_bound(x, y) == 10.0
    # half operands: the norms are taken in float32 (sqrt 3 is 1.7320508 there, 1.7324 in float16)
    h = torch.ones(2, 3, dtype=torch.float16)
    assert lse._exp_bound(h, 2 * h) == pytest.approx(6.0, rel=1e-6)
    assert lse._exp_bound(h, h) == pytest.approx(3.0, rel=1e-6)


def test_unshifted_bound_limits():
    """No shift while bound + log(entries per sum) <= the dtype's limit (80 in float32, 700 in
    float64), never for an infinite bound or a dtype without a limit."""
    ok = lse._unshifted_ok
    assert ok(80.0, 1, torch.float32) and ok(80.0, 0, torch.float32)
    assert not ok(80.0 + 1e-5, 1, torch.float32)
    assert ok(79.0, 2, torch.float32)  # 79.69
    assert not ok(79.0, 3, torch.float32)  # 80.10
    assert ok(700.0, 1, F64) and not ok(699.0, 3, F64)
    assert not ok(math.inf, 1, F64) and not ok(math.nan, 1, F64)
    assert not ok(1.0, 1, torch.float16)


@pytest.mark.parametrize(("low", "path"), [(30.0, "row shift"), (29.0, "two shifts")])
def test_row_shift_margin_is_inclusive(low, path, monkeypatch):
    """float32, exact products: row maxima 90 and 30 lie exactly 60 (the margin) apart and keep
    the one-shift path; 90 and 29 lie 61 apart and take separate shifts. Both are exact."""
    monkeypatch.setattr(lse, "FUSED_MIN_ENTRIES", 0)
    log = path_log(monkeypatch)
    a = torch.tensor([[90.0], [low]], requires_grad=True)
    k = torch.tensor([[[1.0], [0.5]]], requires_grad=True)
    got = pair_lse(a, k, 0.5, 0.5)
    a64 = a.detach().double().requires_grad_(True)
    want = naive_pair(a64, k.detach(), 0.5, 0.5)
    close(got.double(), want, rtol=1e-6, atol=0.0)
    close(torch.autograd.grad(got, a)[0].double(), torch.autograd.grad(want, a64)[0], rtol=1e-5, atol=1e-6)
    assert log == [path]


# ----------------------------------------------------------------------------- group_lse


SCATTERED = [(0, [2, 1]), (1, [0, 2]), (2, [0])]


def unit_z(M=3, B=6, d=4, seed=9):
    z = torch.randn(M, B, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return torch.nn.functional.normalize(z, dim=-1)


@pytest.mark.parametrize("chunk", [None, 4])
@pytest.mark.parametrize("learnable", [False, True])
def test_group_lse_scattered_partners_that_are_also_anchors(chunk, learnable):
    """Scattered partner lists whose modalities are anchors of other groups too: every group's
    gradient adds to the same modality rows."""
    z = unit_z().requires_grad_(True)
    log_scale = torch.tensor(1.2, dtype=F64, requires_grad=True)
    got = group_lse(z, SCATTERED, 0.4, 0.6, True, chunk, log_scale.exp() if learnable else 3.0)
    want = naive_group(z, SCATTERED, 0.4, 0.6, True, log_scale.exp() if learnable else 3.0)
    close(got, want)
    leaves = (z, log_scale) if learnable else (z,)
    for g, r in zip(torch.autograd.grad(got, leaves), torch.autograd.grad(want, leaves)):
        close(g, r)


@pytest.mark.parametrize("groups", [SCATTERED, [(0, [1, 2])]])
def test_group_lse_without_any_gradient(groups, monkeypatch):
    """Nothing needs a gradient: the value, and no gradient product formed."""
    gradient_products = []
    original = lse._accumulate
    monkeypatch.setattr(lse, "_accumulate", lambda *args: gradient_products.append(1) or original(*args))
    z = unit_z()
    got = group_lse(z, groups, 0.4, 0.6, False, 2, 3.0)
    close(got, naive_group(z, groups, 0.4, 0.6, False, 3.0))
    assert not got.requires_grad and gradient_products == []


@pytest.mark.parametrize("scale", [2.5, -4.0])
def test_group_lse_gradient_of_the_scale_alone(scale):
    """A learnable scale on inputs without gradient: dL/dscale = <dL/dz, z> / (2 scale) needs the
    gradient w.r.t. z even though z itself gets none."""
    z = unit_z()
    s = torch.tensor(scale, dtype=F64, requires_grad=True)
    got = group_lse(z, [(0, [1, 2]), (2, [0])], 0.5, 0.5, False, None, s)
    want = naive_group(z, [(0, [1, 2]), (2, [0])], 0.5, 0.5, False, s)
    close(got, want)
    close(torch.autograd.grad(got, s)[0], torch.autograd.grad(want, s)[0])


def test_group_lse_gradcheck_with_learnable_scale():
    z = unit_z(M=3, B=4, d=3, seed=10).requires_grad_(True)
    s = torch.tensor(1.7, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: group_lse(x, SCATTERED, 0.3, 0.7, False, 2, t), (z, s))


def test_group_lse_defaults():
    """Defaults: nothing excluded, scale 1."""
    z = unit_z()
    close(group_lse(z, [(0, [1])], 1.0, 1.0), naive_group(z, [(0, [1])], 1.0, 1.0))


def test_group_lse_reads_consecutive_partners_as_views(monkeypatch):
    """Consecutive partners are one view of z (no copy); scattered ones are gathered."""
    shared = []
    original = lse._block_lse

    def wrapper(a, kf, *args):
        shared.append(kf.untyped_storage().data_ptr() == z.untyped_storage().data_ptr())
        return original(a, kf, *args)

    monkeypatch.setattr(lse, "_block_lse", wrapper)
    z = unit_z(M=4)
    group_lse(z, [(0, [1, 2, 3]), (3, [2]), (1, [3, 0]), (0, [2, 3])], 1.0, 1.0)
    assert shared == [True, True, False, True]


@pytest.mark.parametrize("split", [True, False])
def test_group_lse_splits_large_blocks_one_partner_at_a_time(split, monkeypatch):
    """From SPLIT_MIN_ENTRIES = B * B on, every partner is its own block; the value is the same."""
    blocks = []
    original = lse._block_lse

    def wrapper(a, kf, nb, *args):
        blocks.append(nb)
        return original(a, kf, nb, *args)

    monkeypatch.setattr(lse, "_block_lse", wrapper)
    monkeypatch.setattr(lse, "SPLIT_MIN_ENTRIES", 36 if split else 37)
    z = unit_z(M=4, B=6).requires_grad_(True)
    groups = [(0, [1, 2, 3]), (1, [3, 2])]
    got = group_lse(z, groups, 0.5, 0.5, False, None, 2.0)
    want = naive_group(z, groups, 0.5, 0.5, False, 2.0)
    close(got, want)
    close(torch.autograd.grad(got, z)[0], torch.autograd.grad(want, z)[0])
    assert blocks == ([1, 1, 1, 1, 1] if split else [3, 2])


def test_group_lse_bound_comes_from_the_row_norms(monkeypatch):
    """The exp bound of a group is max |z_m rows| * max |z_n rows|, read once for all groups (never
    recomputed per block). Rows of norm 2 spread over 8 features (column norms 1): at scale 60 in
    float32 only the product of the row norms (4 * 60 = 240) rules out the unshifted path; a bound
    from column norms or a ratio of norms (1 * 60) would let exp(240) overflow."""
    calls = []
    monkeypatch.setattr(lse, "_exp_bound", lambda *args: calls.append(1))
    row = torch.ones(8) / math.sqrt(2.0)
    alt = row * torch.tensor([1.0, -1.0] * 4)
    z = torch.stack([torch.stack([row, alt])] * 2).requires_grad_(True)  # (2, 2, 8), row norms 2
    got = group_lse(z, [(0, [1])], 0.5, 0.5, False, None, 60.0)
    z64 = z.detach().double().requires_grad_(True)
    want = naive_group(z64, [(0, [1])], 0.5, 0.5, False, 60.0)
    assert torch.isfinite(got)
    close(got.double(), want, rtol=1e-6, atol=0.0)
    close(torch.autograd.grad(got, z)[0].double(), torch.autograd.grad(want, z64)[0], rtol=1e-5, atol=1e-5)
    assert calls == []


def test_group_lse_bound_of_half_rows_uses_float32_norms(monkeypatch):
    """float16 rows (1, 1, 1): norm sqrt 3 = 1.7320508 in float32 but 1.7324 in float16. At a scale
    that puts scale * 3 + log 2 at 79.99 (just inside float32's limit of 80) the unshifted path
    answers; a bound from float16 norms (scale * 3.0013 + log 2 = 80.02) would decline it."""
    log = path_log(monkeypatch)
    scale = (79.99 - math.log(2.0)) / 3.0
    z = torch.ones(2, 2, 3, dtype=torch.float16)
    got = group_lse(z, [(0, [1])], 0.5, 0.5, False, None, scale)
    close(got.double(), naive_group(z, [(0, [1])], 0.5, 0.5, False, scale), rtol=2e-3, atol=0.0)
    assert log == ["unshifted"]


def test_group_lse_row_norm_decides_the_path(monkeypatch):
    """A given ``row_norm`` replaces the measured norms in the bound: unit rows at scale 10 run
    unshifted in float64 (bound 10), with row_norm 10 the bound is 1000 and a shift is taken."""
    log = path_log(monkeypatch)
    z = unit_z()
    want = naive_group(z, [(0, [1])], 0.5, 0.5, False, 10.0)
    close(group_lse(z, [(0, [1])], 0.5, 0.5, False, None, 10.0), want)
    close(group_lse(z, [(0, [1])], 0.5, 0.5, False, None, 10.0, row_norm=10.0), want)
    assert log == ["unshifted", "row shift"]


@pytest.mark.parametrize(("chunk", "row_norm"), [(None, 1.0), (2, 1.0), (2, 100.0)])
def test_group_lse_keeps_every_intermediate_on_the_input_device(chunk, row_norm):
    """On the meta device (shapes only; nothing can be read, as on an accelerator without a
    synchronisation) the whole block, row chunks with a column pass, and separate shifts in chunks
    (row_norm 100 rules out no shift) run forward and backward: every buffer they create must
    follow the input's device (a CPU buffer there would fail on CUDA)."""
    z = torch.empty(3, 6, 4, device="meta", requires_grad=True)
    out = group_lse(z, [(0, [1, 2]), (2, [0])], 0.3, 0.7, False, chunk, 2.0, row_norm=row_norm)
    assert out.device.type == "meta" and out.shape == ()
    (grad,) = torch.autograd.grad(out, z)
    assert grad.device.type == "meta" and grad.shape == z.shape


# ----------------------------------------------------------------------------- generated block tail


class FakeCompile:
    """Stands in for torch.compile: returns the eager function (optionally corrupted) and records
    how it was asked to compile and how often the result ran."""

    def __init__(self, fail=None, corrupt=False):
        self.fail, self.corrupt = fail, corrupt
        self.requests = []
        self.runs = 0

    def __call__(self, fn, **options):
        self.requests.append((fn, options))
        if self.fail:
            raise RuntimeError(self.fail)

        def run(*args):
            self.runs += 1
            out = fn(*args)
            if self.corrupt and len(args) == 3:  # the scaling kernel: 1.5 times too large
                args[0].mul_(1.5)
            return out

        return run


@pytest.fixture
def generated(monkeypatch):
    """The generated tail switched on with a fake compiler, fresh state, blocks of 16 entries on."""
    monkeypatch.setitem(lse._generated, "enabled", True)
    monkeypatch.setitem(lse._generated, "fns", None)
    monkeypatch.setitem(lse._generated, "error", None)
    monkeypatch.setitem(lse._generated, "compile_s", None)
    monkeypatch.setattr(lse, "GENERATED_MIN_ENTRIES", 16)
    monkeypatch.setattr(lse, "FUSED_MIN_ENTRIES", 0)
    clock = iter([100.0, 102.5])
    monkeypatch.setattr(lse, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    fake = FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    with torch.random.fork_rng():  # the probe block draws from the global generator
        torch.manual_seed(0)
        yield fake


def test_generated_tail_values_gradients_and_one_compilation(generated):
    """Whole float32 blocks of both weights run the generated tail: the same value and gradients
    as the loops, the two kernels compiled once (dynamic shapes, full graph) and checked on a probe."""
    a, k = inputs(6, 2, 6, seed=11, dtype=torch.float32)
    a.requires_grad_(True)
    k.requires_grad_(True)
    a64, k64 = a.detach().double().requires_grad_(True), k.detach().double().requires_grad_(True)
    want = naive_pair(a64, k64, 0.3, 0.7)
    wants = torch.autograd.grad(want, (a64, k64))
    for _ in range(2):
        got = pair_lse(a, k, 0.3, 0.7)
        close(got.double(), want, rtol=1e-6, atol=1e-6)
        for g, r in zip(torch.autograd.grad(got, (a, k)), wants):
            close(g.double(), r, rtol=1e-5, atol=1e-5)
    assert [(fn, options) for fn, options in generated.requests] == [
        (lse._exp_stats, {"dynamic": True, "fullgraph": True}),
        (lse._scale_outer, {"dynamic": True, "fullgraph": True})]
    assert generated.runs == 2 + 2 * 2  # the probe, then both kernels per call
    assert lse.generated_kernels_info() == {"enabled": True, "compiled": True, "compile_s": 2.5, "error": None}


def test_generated_tail_only_for_whole_blocks(generated):
    """Row chunks keep the eager tail (the generated one takes column sums from its own block)."""
    a, k = inputs(6, 2, 6, seed=11, dtype=torch.float32)
    got = pair_lse(a, k, 0.3, 0.7, False, 0, 4)
    close(got.double(), naive_pair(a, k, 0.3, 0.7), rtol=1e-6, atol=1e-6)
    assert generated.runs == 0


@pytest.mark.parametrize("weights", [(0.0, 1.0), (1.0, 0.0)])
def test_generated_tail_needs_both_weights(weights, generated):
    a, k = inputs(6, 2, 6, seed=11, dtype=torch.float32)
    a.requires_grad_(True)
    got = pair_lse(a, k, *weights)
    a64 = a.detach().double().requires_grad_(True)
    want = naive_pair(a64, k, *weights)
    close(got.double(), want, rtol=1e-6, atol=1e-6)
    close(torch.autograd.grad(got, a)[0].double(), torch.autograd.grad(want, a64)[0], rtol=1e-5, atol=1e-5)
    assert generated.requests == [] and generated.runs == 0


def _block(shape=(4, 1, 4), dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(12)).to(dtype)


@pytest.mark.parametrize("case", ["off", "failed before", "float64", "small", "no row weight", "no column weight",
                                  "tracing"])
def test_generated_tail_declines(case, generated, monkeypatch):
    """Each condition alone keeps the eager tail (and compiles nothing); the same block with all of
    them met gets the kernels."""
    s, w_row, w_col = _block(), 1.0, 1.0
    if case == "off":
        lse._generated["enabled"] = False
    elif case == "failed before":
        lse._generated["error"] = "RuntimeError: earlier"
    elif case == "float64":
        s = _block(dtype=F64)
    elif case == "small":
        s = _block((3, 1, 5))
    elif case == "no row weight":
        w_row = 0.0
    elif case == "no column weight":
        w_col = 0.0
    else:
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert lse._generated_tail(s, w_row, w_col) is None
    assert generated.requests == []
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
    lse._generated["enabled"], lse._generated["error"] = True, None
    fns = lse._generated_tail(_block(), 1.0, 1.0)
    assert fns is not None and len(fns) == 2


def test_generated_tail_failed_compilation_stays_eager(generated, monkeypatch):
    fake = FakeCompile(fail="no compiler")
    monkeypatch.setattr(torch, "compile", fake)
    a, k = inputs(6, 2, 6, seed=11, dtype=torch.float32)
    for _ in range(2):
        close(pair_lse(a, k, 0.3, 0.7).double(), naive_pair(a, k, 0.3, 0.7), rtol=1e-6, atol=1e-6)
    assert len(fake.requests) == 1  # not retried
    assert lse.generated_kernels_info() == {"enabled": True, "compiled": False, "compile_s": None,
                                            "error": "RuntimeError: no compiler"}


def test_generated_tail_refuses_kernels_that_disagree_on_the_probe(generated, monkeypatch):
    monkeypatch.setattr(torch, "compile", FakeCompile(corrupt=True))
    a, k = inputs(6, 2, 6, seed=11, dtype=torch.float32)
    a.requires_grad_(True)
    got = pair_lse(a, k, 0.3, 0.7)
    a64 = a.detach().double().requires_grad_(True)
    want = naive_pair(a64, k, 0.3, 0.7)
    close(torch.autograd.grad(got, a)[0].double(), torch.autograd.grad(want, a64)[0], rtol=1e-5, atol=1e-5)
    assert lse.generated_kernels_info()["error"] == (
        "RuntimeError: the generated kernels disagree with eager on a probe block")
    assert lse._generated["fns"] is None


def test_generated_kernels_switch(monkeypatch):
    """generated_kernels(flag) switches for the process; as a context manager it restores the
    previous setting on exit; the default is on."""
    monkeypatch.setitem(lse._generated, "enabled", False)
    lse.generated_kernels()
    assert lse.generated_kernels_info()["enabled"] is True
    with lse.generated_kernels(False) as switch:
        assert isinstance(switch, lse.generated_kernels)
        assert lse.generated_kernels_info()["enabled"] is False
        with lse.generated_kernels(1):
            assert lse._generated["enabled"] is True
        assert lse._generated["enabled"] is False
    assert lse._generated["enabled"] is True


# ----------------------------------------------------------------------------- forms


def test_fused_functions_refuse_second_derivatives_with_the_full_reason():
    z = torch.randn(2, 3, 4, dtype=F64, requires_grad=True)
    message = ("objectives' fused kernels do not support create_graph=True (second derivatives): "
               "their gradients are formed in the forward pass without autograd history")
    for out in (unit_rows(z).sum(), modality_quadratic(z, [[1.0, 0.5], [0.0, 2.0]])):
        with pytest.raises(RuntimeError) as info:
            torch.autograd.grad(out, z, create_graph=True)
        assert str(info.value) == message


def naive_unit(x, eps):
    """Each row divided by max(|row|, eps), by loops."""
    rows = [[r / max(float(r.norm()), eps) for r in m] for m in x]
    return torch.stack([torch.stack(m) for m in rows])


@pytest.mark.parametrize("traced", [False, True])
@pytest.mark.parametrize("as_list", [False, True])
def test_unit_rows_against_loops_fused_and_traced(traced, as_list, monkeypatch):
    """The fused Function and the plain form used while torch.compile traces: rows of norm above,
    below and at eps = 0.5 (clamped rows are scaled by 1 / eps), a list or an (M, B, d) tensor."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: traced)
    x = torch.tensor([[[3.0, 4.0, 0.0], [0.1, 0.2, 0.2], [0.0, 0.0, 0.0]],
                      [[1.0, 2.0, 2.0], [0.3, 0.0, 0.4], [-2.0, 0.0, 0.0]]], dtype=F64)
    got = unit_rows(list(x.unbind(0)) if as_list else x, eps=0.5)
    close(got, naive_unit(x, 0.5), rtol=1e-15, atol=1e-15)


def test_unit_rows_output_is_contiguous_for_a_strided_input():
    base = torch.randn(4, 5, 2, dtype=F64)
    z = base.permute(2, 1, 0)  # (2, 5, 4), not contiguous
    out = unit_rows(z)
    assert out.is_contiguous()
    close(out, naive_unit(z, 1e-12))


def test_unit_rows_gradcheck_away_from_the_clamp():
    xs = [torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(s), requires_grad=True)
          for s in range(2)]
    assert torch.autograd.gradcheck(lambda *a: unit_rows(list(a), eps=0.1), xs)


def naive_quadratic(z, w):
    total = torch.zeros((), dtype=F64)
    for m in range(z.shape[0]):
        for n in range(z.shape[0]):
            for i in range(z.shape[1]):
                total = total + float(w[m][n]) * dot(z[m, i].double(), z[n, i].double())
    return total


@pytest.mark.parametrize("traced", [False, True])
def test_modality_quadratic_against_loops(traced, monkeypatch):
    """sum_{m,n} W_mn sum_i <z_i^m, z_i^n> for a non-symmetric W given as a list (0.1 is not a
    float32 number: the weights take z's dtype) and as a tensor, fused and traced, with gradients."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: traced)
    w = [[0.1, -0.7, 0.0], [0.3, 1.0, 2.0], [0.0, -1.3, 0.5]]
    z = torch.randn(3, 4, 2, dtype=F64, generator=torch.Generator().manual_seed(13), requires_grad=True)
    want = naive_quadratic(z, w)
    (want_grad,) = torch.autograd.grad(want, z, retain_graph=True)
    for weights in (w, torch.tensor(w, dtype=F64)):
        got = modality_quadratic(z, weights)
        close(got, want, rtol=1e-14, atol=1e-14)
        close(torch.autograd.grad(got, z)[0], want_grad, rtol=1e-14, atol=1e-14)


def test_modality_quadratic_weights_follow_the_device_of_z():
    """A weight matrix given on the host is moved to z's device (meta: shapes only)."""
    z = torch.empty(2, 3, 4, device="meta", requires_grad=True)
    out = modality_quadratic(z, torch.tensor([[1.0, 0.5], [0.0, 2.0]]))
    assert out.device.type == "meta"
    assert torch.autograd.grad(out, z)[0].device.type == "meta"


def test_modality_quadratic_weights_take_the_dtype_of_z():
    z = torch.randn(2, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(14))
    got = modality_quadratic(z, torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=torch.float32))
    assert got.dtype == F64
    close(got, naive_quadratic(z, [[0.1, 0.2], [0.3, 0.4]]), rtol=1e-7, atol=0.0)


def test_pair_laplacian_by_hand_and_as_sum_of_squared_distances():
    """Every pair adds 1 to both diagonal entries and -1 to both off-diagonal ones; a modality in
    several pairs collects them, a pair given twice counts twice, a modality in none stays zero."""
    pairs = [(0, 1), (0, 2), (2, 1), (1, 0)]  # (0, 1) in both orders: counted twice
    w = pair_laplacian(4, pairs)
    assert w == [[3.0, -2.0, -1.0, 0.0], [-2.0, 3.0, -1.0, 0.0], [-1.0, -1.0, 2.0, 0.0], [0.0] * 4]
    z = torch.randn(4, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(15))
    want = sum(float(((z[m] - z[n]) ** 2).sum()) for m, n in pairs)
    assert float(modality_quadratic(z, w)) == pytest.approx(want, rel=1e-13)


# ----------------------------------------------------------------------------- distances


def naive_sq_dists(x, y):
    return torch.stack([torch.stack([((u - v) ** 2).sum() for v in y]) for u in x])


def test_sq_dists_batched_against_loops():
    """Leading batch dimensions: every batch entry's own (n, m) distances."""
    g = torch.Generator().manual_seed(16)
    x = torch.randn(2, 4, 3, dtype=F64, generator=g)
    y = torch.randn(2, 5, 3, dtype=F64, generator=g)
    close(sq_dists(x, y), torch.stack([naive_sq_dists(x[b], y[b]) for b in range(2)]))
    assert (sq_dists(x[0], x[0]).diagonal() >= 0.0).all()


def naive_log_mean_kernel(x, y, s, exclude):
    values = [-float(((u - v) ** 2).sum()) / (2 * s * s) for i, u in enumerate(x) for j, v in enumerate(y)
              if not (exclude and i == j)]
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values))


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("chunk", [None, 2])
def test_log_mean_kernel_batched_chunked_against_loops(exclude, chunk, monkeypatch):
    """x and y with two leading batch dimensions, in row chunks of 2, 2, 1, the diagonal excluded in
    every chunk; no block has more rows than the chunk."""
    rows = []
    original = distances.log_kernel_matrix
    monkeypatch.setattr(distances, "log_kernel_matrix", lambda x, *a: rows.append(x.shape[-2]) or original(x, *a))
    g = torch.Generator().manual_seed(17)
    x = torch.randn(2, 1, 5, 3, dtype=F64, generator=g)  # two leading dimensions
    y = x if exclude else torch.randn(2, 1, 5, 3, dtype=F64, generator=g)
    got = distances.log_mean_kernel(x, y, 0.8, exclude, chunk)
    want = [[naive_log_mean_kernel(x[b, 0], y[b, 0], 0.8, exclude)] for b in range(2)]
    close(got, torch.tensor(want, dtype=F64))
    assert rows == ([5] if chunk is None else [2, 2, 1])


def test_log_mean_kernel_defaults_and_two_samples():
    g = torch.Generator().manual_seed(18)
    x, y = torch.randn(2, 2, dtype=F64, generator=g), torch.randn(3, 2, dtype=F64, generator=g)
    assert float(distances.log_mean_kernel(x, y, 0.5)) == pytest.approx(naive_log_mean_kernel(x, y, 0.5, False))
    assert float(distances.log_mean_kernel(x, x, 0.5, True)) == pytest.approx(
        naive_log_mean_kernel(x, x, 0.5, True))  # two samples: one pair each way


def test_log_mean_kernel_refusals_name_the_counts():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError) as info:
        distances.log_mean_kernel(x, torch.zeros(4, 2), 1.0, True)
    assert str(info.value) == "exclude_diagonal needs equal sample counts, got x: 3 rows and y: 4 rows"
    with pytest.raises(ValueError) as info:
        distances.log_mean_kernel(x[:1], x[:1], 1.0, True)
    assert str(info.value) == "exclude_diagonal needs at least 2 samples, got 1"


@pytest.mark.parametrize("on_host", [True, False])
def test_kth_smallest_selects_the_same_element_on_both_branches(on_host, monkeypatch):
    """numpy's introselect where reading is free, torch.kthvalue otherwise (here: while tracing)."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: not on_host)
    values = torch.tensor([5.0, -1.0, 3.0, 3.0, 9.0, 0.5, 7.0])
    for k, want in enumerate(sorted(values.tolist())):
        got = distances._kth_smallest(values, k)
        assert got.shape == () and float(got) == want


def test_median_bandwidth_by_hand_and_its_sample_cap():
    """Lower median of the pairwise distances (1, 2, 2, 3, 4, 5 -> 2); the first 512 rows by
    default, ``max_samples`` rows when given (a far 513th row would move the median)."""
    x = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    assert distances.median_bandwidth(x) == 2.0
    assert distances.median_bandwidth(x, max_samples=3) == 2.0  # 0, 1, 3: distances 1, 2, 3
    assert distances.median_bandwidth(x, max_samples=2) == 1.0
    many = torch.cat([torch.arange(512.0).view(-1, 1) / 512.0, torch.full((1, 1), 1e3)])
    capped = distances.median_bandwidth(many)
    assert capped == float(distances.median_bandwidth_tensor(many[:512]))
    assert capped != float(distances.median_bandwidth_tensor(many, max_samples=513))


def test_resolve_bandwidth():
    x = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    assert distances.resolve_bandwidth("median", x) == 2.0
    assert distances.resolve_bandwidth(0.25, x) == 0.25 and isinstance(distances.resolve_bandwidth(1, x), float)
    with pytest.raises(ValueError) as info:
        distances.resolve_bandwidth("mean", x)
    assert str(info.value) == "bandwidth must be a positive number or 'median', got 'mean'"


# ----------------------------------------------------------------------------- workspace


def _buffers():
    return workspace._workspace.__dict__.get("buffers")


def _shares(t, buf):
    return t.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()


def test_scratch_reuses_one_buffer_per_dtype_and_release_frees_it(monkeypatch):
    monkeypatch.setattr(workspace, "WORKSPACE_MAX_BYTES", 64)
    workspace.release_workspace()
    workspace.release_workspace()  # nothing to free: no error
    try:
        cpu = torch.device("cpu")
        first = workspace._scratch((2, 8), F64, cpu)  # 128 bytes: over the cap, not kept
        assert first.shape == (2, 8) and first.dtype == F64 and _buffers() in (None, {})
        small = workspace._scratch((2, 4), F64, cpu)  # 64 bytes: kept
        buf = _buffers()[F64]
        assert small.shape == (2, 4) and small.dtype == F64 and _shares(small, buf) and buf.numel() == 8
        again = workspace._scratch((8,), F64, cpu)  # the same size: the same buffer
        assert _buffers()[F64] is buf and _shares(again, buf)
        fewer = workspace._scratch((3,), F64, cpu)
        assert _buffers()[F64] is buf and fewer.shape == (3,)
        other = workspace._scratch((4,), torch.float32, cpu)  # another dtype: its own buffer
        assert _buffers()[torch.float32].dtype == torch.float32 and _buffers()[F64] is buf
        assert other.dtype == torch.float32
        workspace.release_workspace()
        assert _buffers() is None
        fresh = workspace._scratch((4,), F64, cpu)
        assert _buffers()[F64] is not buf and _shares(fresh, _buffers()[F64])
    finally:
        workspace.release_workspace()


def test_scratch_grows_for_a_larger_block():
    workspace.release_workspace()
    try:
        workspace._scratch((3,), F64, torch.device("cpu"))
        small = _buffers()[F64]
        big = workspace._scratch((4, 5), F64, torch.device("cpu"))
        assert _buffers()[F64].numel() == 20 and _buffers()[F64] is not small and big.shape == (4, 5)
    finally:
        workspace.release_workspace()


def test_scratch_off_the_cpu_is_an_ordinary_allocation():
    workspace.release_workspace()
    out = workspace._scratch((2, 3), torch.float16, torch.device("meta"))
    assert out.device.type == "meta" and out.shape == (2, 3) and out.dtype == torch.float16
    assert _buffers() is None


# ----------------------------------------------------------------------------- device


def _fake_cuda_tensor():
    return SimpleNamespace(device=SimpleNamespace(type="cuda"))


@pytest.mark.parametrize("tracing", [False, True])
def test_reads_and_checks_by_device(tracing, monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: tracing)
    cpu, meta, cuda = torch.tensor(2.5), torch.empty((), device="meta"), _fake_cuda_tensor()
    assert device.reads_are_free(cpu) is (not tracing)
    assert device.reads_are_free(meta) is False and device.reads_are_free(cuda) is False
    assert device.checks_on_device(cpu) is tracing and device.checks_on_device(meta) is tracing
    assert device.checks_on_device(cuda) is True
    got = device.host_float(cpu)
    assert (got is cpu) if tracing else (got == 2.5 and isinstance(got, float))
    assert device.host_float(meta) is meta
    assert device.host_float(3) == 3.0 and isinstance(device.host_float(3), float)


def test_host_values_off_cuda_are_a_plain_tensor():
    for dev in (torch.device("cpu"), torch.device("meta")):
        out = device.host_values([0.1, 2.0], F64, dev)
        assert out.dtype == F64 and out.device == dev and out.shape == (2,)
    assert device.host_values([0.1, 2.0], F64, torch.device("cpu")).tolist() == [0.1, 2.0]


def test_host_values_for_cuda_are_staged_in_pinned_memory(monkeypatch):
    """A pinned host copy, then an asynchronous copy to the device (stand-ins record the calls)."""
    calls = []

    def pin_memory(self):
        calls.append(("pin", self.dtype, self.tolist()))
        return self

    def to(self, *args, **kwargs):
        calls.append(("to", args, kwargs))
        return self

    cuda = torch.device("cuda", 0)
    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "pin_memory", pin_memory)
        patch.setattr(torch.Tensor, "to", to)
        device.host_values([0.1, 2.0], F64, cuda)
    assert calls == [("pin", F64, [0.1, 2.0]), ("to", (cuda,), {"non_blocking": True})]
