"""Fused log-sum-exp kernels over similarity blocks: pair, group, total and self-similarity."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from objectives.kernels.device import host_float
from objectives.kernels.forms import _refuse_double_backward
from objectives.kernels.workspace import _scratch

# ----------------------------------------------------------------------------- fused log-sum-exp blocks
#
# The B x B similarity blocks dominate every contrastive and kernel objective. Because each loss is a
# scalar, the gradient of a log-sum-exp block with respect to its similarity matrix is known during
# the forward pass, so the two fused functions below compute it there (one GEMM forward, two or one
# backward, a handful of in-place elementwise passes) and keep only (B, d)-sized gradients for the
# backward: no B x B tensor outlives the call, and with ``chunk`` no more than (chunk, N) exists.
#
# Three ways to keep exp() in range, cheapest first:
# 1. no shift: |S_ij| <= max_i |a_i| max_j |k_j| =: bound is known from the (B, d) operands, so when
#    bound + log(entries per sum) stays below ``_EXP_LIMIT`` no entry or sum can overflow or become
#    subnormal, and E = exp(S) needs no max pass and no subtraction (unit rows: tau >= ~0.015 in fp32);
# 2. one shift per row (``_pair_lse_one_block``), checked for underflow;
# 3. separate row and column shifts (the general path, and the chunked one).

# exp(x) of float32 overflows above about 88.7 and becomes subnormal below -87.3 (float64: +-708)
_EXP_LIMIT = {torch.float32: 80.0, torch.float64: 700.0}


def _block(a: Tensor, cols: Tensor, work: torch.dtype, scale: float = 1.0) -> Tensor:
    """scale * a @ cols^T in the work dtype, written into the scratch buffer."""
    out = _scratch((a.shape[0], cols.shape[0]), work, a.device)
    if a.dtype == work:
        if scale == 1.0:
            torch.mm(a, cols.T, out=out)
        else:  # the scale rides on the GEMM (alpha), no pass over the block
            torch.addmm(out, a, cols.T, beta=0.0, alpha=scale, out=out)
    else:  # half-precision GEMM, float32 elementwise work
        out.copy_(a @ cols.T)
        if scale != 1.0:
            out.mul_(scale)
    return out


def _exp_bound(x: Tensor, y: Tensor) -> float:
    """max_i |x_i| * max_j |y_j| >= |x_i . y_j| for every pair (one synchronising read)."""
    work = _work_dtype(x.dtype)
    nx = torch.linalg.vector_norm(x, dim=-1, dtype=work).max()
    ny = torch.linalg.vector_norm(y, dim=-1, dtype=work).max()
    return float(nx * ny)


def _unshifted_ok(bound: float, count: int, work: torch.dtype) -> bool:
    limit = _EXP_LIMIT.get(work)
    return limit is not None and math.isfinite(bound) and bound + math.log(max(count, 1)) <= limit


# rows per step when E is scaled by an outer sum: ~0.5 MB of float32 keeps the temporary in cache
_OUTER_CHUNK_ENTRIES = 2**17


def _mask_positives(s: Tensor, start: int, offset: int) -> None:
    """Set s[i, ..., i + start + offset] = -inf for the rows of this chunk (in place)."""
    rows = torch.arange(s.shape[0], device=s.device)
    cols = rows + start + offset
    keep = cols < s.shape[-1]
    s[rows[keep], ..., cols[keep]] = float("-inf")


def _pair_block(a_c: Tensor, kf: Tensor, work: torch.dtype, scale: float, nb: int, N: int, exclude: bool,
                start: int, offset: int) -> Tensor:
    """The (c, nb, N) block scale * a_c @ kf^T in scratch memory, positives masked with ``exclude``
    (a_c holds rows start.. of the full row set)."""
    s = _block(a_c, kf, work, scale).view(-1, nb, N)
    if exclude:
        _mask_positives(s, start, offset)
    return s


# the row-shift path is used only when every row maximum lies within this margin of the largest one
_SHIFT_MARGIN = {torch.float32: 60.0, torch.float64: 600.0}


_TINY = {torch.float32: 1e-30, torch.float64: 1e-290}


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Elementwise work of half-precision blocks runs in float32; the GEMMs stay in ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _accumulate(g: Tensor, a_c: Tensor, kf: Tensor, scale: float, da: Tensor | None, dk: Tensor | None,
                rows: slice) -> None:
    """da[rows] += scale G kf and dk += scale G^T a_c for the gradient G w.r.t. this block of S."""
    g = g.view(g.shape[0], -1).to(a_c.dtype)
    if da is not None:
        da[rows].addmm_(g, kf, alpha=scale)
    if dk is not None:
        dk.addmm_(g.T, a_c, alpha=scale)


def _pair_lse_unshifted(a, kf, nb, N, w_row, w_col, exclude, offset, step, scale, da, dk, bound=None):
    """Path 1, any chunking: E = exp(S) without a shift, or None when the bound on |S| forbids it.

    Per chunk of rows: GEMM, exp, row sums, one scaling, two gradient GEMMs. The column sums come
    from the same block when it holds every row, else from a first pass over the row chunks. The
    gradient w_row E_ij / r_i + w_col E_ij / c_j = E_ij (beta_i + v_j) is formed a few rows at a
    time so that the outer sum beta_i + v_j stays in cache.
    """
    work = _work_dtype(a.dtype)
    R = a.shape[0]
    bound = _exp_bound(a, kf) if bound is None else bound
    if not _unshifted_ok(abs(scale) * bound, max(R, N), work):
        return None
    colsum = None
    if w_col != 0.0 and step < R:  # pass 1: column sums over all row chunks
        colsum = torch.zeros((nb, N), dtype=work, device=a.device)
        for s0 in range(0, R, step):
            s = _pair_block(a[s0 : s0 + step], kf, work, scale, nb, N, exclude, s0, offset)
            colsum += s.exp_().sum(dim=0)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for s0 in range(0, R, step):
        a_c = a[s0 : s0 + step]
        s = _pair_block(a_c, kf, work, scale, nb, N, exclude, s0, offset)
        s.exp_()
        rowsum = s.sum(dim=2)  # (c, nb)
        if w_col != 0.0 and colsum is None:
            colsum = s.sum(dim=0)  # (nb, N): every row is in this block
        total += w_row * rowsum.log().sum(dtype=torch.float64)
        if da is None and dk is None:
            continue
        beta = (w_row / rowsum).unsqueeze(2)  # (c, nb, 1)
        if w_col != 0.0:
            v = (w_col / colsum).unsqueeze(0)  # (1, nb, N)
            rows = max(1, _OUTER_CHUNK_ENTRIES // (nb * N))
            for r0 in range(0, s.shape[0], rows):
                s[r0 : r0 + rows].mul_(beta[r0 : r0 + rows] + v)
        else:
            s.mul_(beta)
        _accumulate(s, a_c, kf, scale, da, dk, slice(s0, s0 + step))
    if w_col != 0.0:
        total += w_col * colsum.log().sum(dtype=torch.float64)
    return total


def _pair_lse_one_block(a, kf, nb, N, w_row, w_col, exclude, offset, scale, da, dk):
    """Symmetric (row and column) case in one block with one shift per row (path 2).

    With one shift per row, E = exp(S - rowmax_i), the row sums come directly and the column sums
    through one GEMV with u_i = exp(rowmax_i - c), c = max_i rowmax_i. The gradient
    w_row E_ij / r_i + w_col E_ij u_i / c_j = u_i E_ij (beta_i + v_j) is formed with one outer sum,
    and u_i is applied to the GEMMs' (B, d) sides, so each GEMM spans all column blocks.
    Returns None (the two-shift path then runs) when a shift could lose a row or column sum to
    underflow: a row maximum far below the largest, or a row / column sum below ``_TINY``.
    """
    work = _work_dtype(a.dtype)
    margin = _SHIFT_MARGIN.get(work)
    if margin is None:
        return None
    R = a.shape[0]
    s = _pair_block(a, kf, work, scale, nb, N, exclude, 0, offset)
    rowmax = s.amax(dim=(1, 2))  # (R,) one shift per row for all blocks
    top = rowmax.max()
    u = torch.exp(rowmax - top)  # (R,)
    s.sub_(rowmax.view(-1, 1, 1)).exp_()  # E
    rowsum = s.sum(dim=2)  # (R, nb)
    colsum = (u @ s.view(R, nb * N)).view(nb, N)
    tiny = _TINY[work]
    # one synchronising check for all three failure modes (each would need the two-shift path);
    # rowsum * u, not rowsum: a block's row sum can be tiny while the row's maximum is in another
    # block, and the gradient divides by the product
    scaled_rowsum = rowsum * u.unsqueeze(1)
    if bool((top - rowmax).max() > margin) or bool(torch.minimum(scaled_rowsum.min(), colsum.min()) < tiny):
        return None
    total = w_row * (rowmax.unsqueeze(1) + rowsum.log()).sum(dtype=torch.float64)
    total = total + w_col * (top + colsum.log()).sum(dtype=torch.float64)
    if da is None and dk is None:
        return total
    beta = (w_row / scaled_rowsum).unsqueeze(2)  # (R, nb, 1)
    v = (w_col / colsum).unsqueeze(0)  # (1, nb, N)
    rows = max(1, _OUTER_CHUNK_ENTRIES // (nb * N))
    for r0 in range(0, R, rows):  # E * (beta_ib + v_bj); the gradient is u_i times it
        s[r0 : r0 + rows].mul_(beta[r0 : r0 + rows] + v)
    if a.dtype != work:  # half: entries reach w / u_i (up to e^60), so apply u_i before the cast
        s.mul_(u.view(-1, 1, 1))
        _accumulate(s, a, kf, scale, da, dk, slice(0, R))
        return total
    g = s.view(R, nb * N)
    ucol = u.unsqueeze(1)
    if da is not None:
        da.addcmul_(g @ kf, ucol, value=scale)
    if dk is not None:
        dk.addmm_(g.T, a * ucol, alpha=scale)
    return total


def _pair_lse_shifted(a, kf, nb, N, w_row, w_col, exclude, offset, step, scale, da, dk):
    """Path 3, any chunking: separate row and column shifts (exact log-sum-exps everywhere)."""
    work = _work_dtype(a.dtype)
    R = a.shape[0]
    col_lse = None
    if w_col != 0.0 and step < R:  # pass 1: online column log-sum-exp over row chunks
        cmax = torch.full((nb, N), float("-inf"), dtype=work, device=a.device)
        csum = torch.zeros((nb, N), dtype=work, device=a.device)
        for s0 in range(0, R, step):
            s = _pair_block(a[s0 : s0 + step], kf, work, scale, nb, N, exclude, s0, offset)
            bmax = torch.maximum(cmax, s.amax(dim=0))
            safe = torch.where(torch.isinf(bmax), torch.zeros_like(bmax), bmax)
            csum = csum * torch.exp(cmax - safe) + s.sub_(safe).exp_().sum(dim=0)
            cmax = bmax
        safe = torch.where(torch.isinf(cmax), torch.zeros_like(cmax), cmax)
        col_lse = csum.log() + safe
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for s0 in range(0, R, step):
        a_c = a[s0 : s0 + step]
        s = _pair_block(a_c, kf, work, scale, nb, N, exclude, s0, offset)
        row_lse = torch.logsumexp(s, dim=2)  # (c, nb)
        if w_col != 0.0 and col_lse is None:
            col_lse = torch.logsumexp(s, dim=0)  # (nb, N): every row is in this block
        total += w_row * row_lse.sum(dtype=torch.float64)
        if da is None and dk is None:
            continue
        # gradient w.r.t. s, formed in place: w_row * softmax_rows + w_col * softmax_cols
        if w_col != 0.0:
            p_col = torch.sub(s, col_lse.unsqueeze(0)).exp_()
            if w_col != 1.0:
                p_col.mul_(w_col)
        s.sub_(row_lse.unsqueeze(2)).exp_()
        if w_row != 1.0:
            s.mul_(w_row)
        if w_col != 0.0:
            s.add_(p_col)
            del p_col
        _accumulate(s, a_c, kf, scale, da, dk, slice(s0, s0 + step))
    if w_col != 0.0:
        total += w_col * col_lse.sum(dtype=torch.float64)
    return total


def _block_lse(a, kf, nb, N, w_row, w_col, exclude, offset, chunk, scale, da, dk, bound=None) -> Tensor:
    """The float64 total of one (R, nb * N) block through the cheapest safe path; the gradients
    w.r.t. ``a`` and ``kf`` are *added* into ``da`` and ``dk`` (either may be None). ``bound``:
    max |a_i| max |kf_j| when the caller knows it."""
    R = a.shape[0]
    if w_col != 0.0 and R != N:
        raise ValueError(f"column log-sum-exp needs as many rows as columns, got {R} and {N}")
    step = R if chunk is None else max(1, min(int(chunk), R))
    total = _pair_lse_unshifted(a, kf, nb, N, w_row, w_col, exclude, offset, step, scale, da, dk, bound)
    if total is None and w_col != 0.0 and step == R:
        total = _pair_lse_one_block(a, kf, nb, N, w_row, w_col, exclude, offset, scale, da, dk)
    if total is None:
        total = _pair_lse_shifted(a, kf, nb, N, w_row, w_col, exclude, offset, step, scale, da, dk)
    return total


class _PairLSE(torch.autograd.Function):
    """w_row * sum_i lse_j S[i,b,j] + w_col * sum_j lse_i S[i,b,j] summed over blocks b.

    S = scale * a @ k[b]^T with a: (R, d) rows and k: (nb, N, d) column blocks. With ``exclude``
    the positive S[i, b, i + offset] leaves every log-sum-exp (decoupled contrastive learning).
    Column log-sum-exps need every row, so w_col != 0 requires R == N; chunked, they take a first
    pass over the row chunks.
    """

    @staticmethod
    def forward(ctx, a, k, w_row: float, w_col: float, exclude: bool, offset: int, chunk, scale: float = 1.0):
        nb, N, d = k.shape
        kf = k.reshape(nb * N, d)
        da = torch.zeros_like(a) if ctx.needs_input_grad[0] else None
        dk = torch.zeros_like(kf) if ctx.needs_input_grad[1] else None
        total = _block_lse(a, kf, nb, N, w_row, w_col, exclude, offset, chunk, scale, da, dk)
        ctx.save_for_backward(da, None if dk is None else dk.view(nb, N, d))
        return total.to(a.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward()
        da, dk = ctx.saved_tensors
        return (None if da is None else grad_out * da, None if dk is None else grad_out * dk,
                None, None, None, None, None, None)


class _GroupLSE(torch.autograd.Function):
    """sum over groups (m, partners) of the symmetric block lse of scale * z[m] @ z[partners]^T.

    One autograd node for every pair of a contrastive loss: each group's gradient is added into a
    single (M, B, d) buffer (GEMMs with beta = 1, views for consecutive partners), so the backward
    is one multiplication instead of a slice, stack and sum per pair. A learnable scale gets its
    gradient from Euler's identity for the homogeneous blocks: dL/dscale = <dz, z> / (2 scale).
    """

    @staticmethod
    def forward(ctx, z, scale_t, groups, w_row: float, w_col: float, exclude: bool, chunk, scale: float, row_norm):
        M, B, d = z.shape
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        dz = torch.zeros_like(z) if need_grad else None
        total = torch.zeros((), dtype=torch.float64, device=z.device)
        # every modality's largest row norm, read once (one sync) for all groups' exp bounds
        if row_norm is None:
            norms = torch.linalg.vector_norm(z, dim=-1, dtype=_work_dtype(z.dtype)).amax(dim=1).tolist()
        else:
            norms = [row_norm] * M
        for m, partners in groups:
            first, nb = partners[0], len(partners)
            consecutive = list(partners) == list(range(first, first + nb))
            if consecutive:
                kf = z[first : first + nb].view(nb * B, d)
                dk = None if dz is None else dz[first : first + nb].view(nb * B, d)
            else:
                kf = torch.cat([z[n] for n in partners])
                dk = None if dz is None else torch.zeros_like(kf)
            step = None if chunk is None else max(1, int(chunk) // nb)
            da = None if dz is None else dz[m]
            bound = norms[m] * max(norms[n] for n in partners)
            total += _block_lse(z[m], kf, nb, B, w_row, w_col, exclude, 0, step, scale, da, dk, bound)
            if dk is not None and not consecutive:
                for i, n in enumerate(partners):
                    dz[n] += dk[i * B : (i + 1) * B]
        ctx.scale = scale
        ctx.save_for_backward(z if ctx.needs_input_grad[1] else None, dz)
        return total.to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward()
        z, dz = ctx.saved_tensors
        grad_z = grad_out * dz if ctx.needs_input_grad[0] else None
        grad_scale = None
        if ctx.needs_input_grad[1]:
            grad_scale = grad_out * (dz * z).sum() / (2.0 * ctx.scale)
        return grad_z, grad_scale, None, None, None, None, None, None, None


# Below this many block entries (rows x columns) per call, per-operation overhead dominates and the
# plain autograd formulation is faster than the fused Function; tests lower it to 0 to cover both.
FUSED_MIN_ENTRIES = 192 * 192


def _small_pair_lse(a: Tensor, k: Tensor, w_row: float, w_col: float, exclude: bool, offset: int) -> Tensor:
    """Plain-autograd form of one pair_lse call (per-operation overhead dominates small blocks)."""
    s = torch.einsum("id,bjd->ibj", a, k)
    if exclude:
        rows = torch.arange(a.shape[0], device=a.device)
        cols = rows + offset
        keep = cols < k.shape[1]
        mask = torch.zeros(s.shape, dtype=torch.bool, device=a.device)
        mask[rows[keep], :, cols[keep]] = True
        s = s.masked_fill(mask, float("-inf"))
    s = s.to(_work_dtype(a.dtype))
    total = w_row * torch.logsumexp(s, dim=2).sum()
    if w_col != 0.0:
        total = total + w_col * torch.logsumexp(s, dim=0).sum()
    return total.to(a.dtype)


def pair_lse(
    a: Tensor,
    k: Tensor,
    w_row: float = 1.0,
    w_col: float = 0.0,
    exclude_positive: bool = False,
    offset: int = 0,
    chunk_size: int | None = None,
    scale: float = 1.0,
) -> Tensor:
    """Weighted sums of row- and column-wise log-sum-exps of ``scale * a @ k[b]^T`` over blocks b.

    ``a``: (R, d) rows; ``k``: (nb, N, d) or (N, d); ``scale`` a Python float (a learnable scale
    should multiply ``a`` before the call). Row i's positive in every block is column
    ``i + offset``. Large blocks go through the fused Function, whose gradient is computed during
    the forward pass (see the section comment above); small ones through plain autograd.
    """
    if k.dim() == 2:
        k = k.unsqueeze(0)
    entries = a.shape[0] * k.shape[0] * k.shape[1]
    if chunk_size is None and entries < FUSED_MIN_ENTRIES:
        return _small_pair_lse(a * scale if scale != 1.0 else a, k, w_row, w_col, exclude_positive, offset)
    return _PairLSE.apply(a, k, float(w_row), float(w_col), bool(exclude_positive), int(offset), chunk_size,
                          float(scale))


def group_lse(
    z: Tensor,
    groups: Sequence[tuple[int, Sequence[int]]],
    w_row: float,
    w_col: float,
    exclude_positive: bool = False,
    chunk_size: int | None = None,
    scale: float | Tensor = 1.0,
    row_norm: float | None = None,
) -> Tensor:
    """sum over (m, partners) in ``groups`` of ``pair_lse(z[m], z[partners], ...)`` for z: (M, B, d).

    Every row is local (one process, offset 0). ``scale`` may be a learnable 0-dim tensor.
    ``row_norm``: an upper bound on every row's L2 norm when the caller knows one (unit rows),
    which saves a pass and a synchronisation; it must hold, since it decides how exp is kept in
    range. All groups run as one autograd node (:class:`_GroupLSE`; measured faster than plain
    autograd at every size down to B = 32, since it needs fewer operations); ``chunk_size`` bounds
    the live block of each group to about ``chunk_size x B`` entries whatever its number of partners.
    """
    learnable = isinstance(scale, Tensor)
    value = float(scale.detach()) if learnable else float(scale)
    frozen = tuple((int(m), tuple(int(n) for n in partners)) for m, partners in groups)
    return _GroupLSE.apply(z.contiguous(), scale if learnable else None, frozen, float(w_row), float(w_col),
                           bool(exclude_positive), chunk_size, value, None if row_norm is None else float(row_norm))


# ----------------------------------------------------------------------------- small batches, one node
#
# At small B a loss call costs its operator dispatches, not its arithmetic (~2-10 us each). The
# Function below is the whole InfoNCE family's loss for raw (un-normalised) rows in one node:
# normalisation, one block u_m @ u_partners^T per group of pairs (both softmax directions from it),
# the alignment as one quadratic form over modalities, and every gradient, written by the GEMMs
# into one (M, B, d) buffer: ~30 operations forward and 6 backward for M = 2, against ~70 for the
# general path's separate nodes (normalisation, quadratic form, fused block, reductions). Input
# checks are the ones the shapes require (:func:`small_contrastive_fits`); anything unusual takes
# the general path, which reports it.

SMALL_MAX_BATCH = 256  # B at most this: the small path (measured faster than the general one up to here)
_small_weights: dict = {}


def _pair_weights(pairs: tuple[tuple[int, int], ...], n_mod: int, batch: int, scale: float, dtype: torch.dtype,
                  device: torch.device) -> tuple:
    """The small path's constants, cached per call signature (A the (M, M) pair adjacency, P the
    number of pairs, c = scale / (B P)): the alignment's -c A, its gradient -c (A + A^T), and c / 2."""
    key = (pairs, n_mod, batch, scale, dtype, device)
    w = _small_weights.get(key)
    if w is None:
        if len(_small_weights) > 256:
            _small_weights.clear()
        adj = torch.zeros(n_mod, n_mod, dtype=torch.float64)
        for m, n in pairs:
            adj[m, n] += 1.0
        unit = scale / (batch * len(pairs))
        w = ((-unit * adj).to(dtype=dtype, device=device), (-unit * (adj + adj.T)).to(dtype=dtype, device=device),
             0.5 * unit)
        _small_weights[key] = w
    return w


def _small_blocks(u: Tensor, scale: float, groups: tuple, weights: tuple) -> tuple[Tensor, Tensor]:
    """Uniformity and its gradient w.r.t. u from one block u_m @ u_partners^T per group (pairs
    sharing their first modality), both softmax directions from it: P B^2 d work."""
    M, B, d = u.shape
    half_unit = weights[2]
    du = torch.empty_like(u)
    written = set()  # modalities whose du holds a value (the first write needs no zeros)

    def product(m0: int, count: int, a: Tensor, b: Tensor) -> None:
        """du[m0 : m0 + count] (+)= a @ b: written by the GEMM where those rows hold nothing yet."""
        target = du[m0 : m0 + count].view(count * B, d)
        if written.isdisjoint(range(m0, m0 + count)):
            torch.mm(a, b, out=target)
            written.update(range(m0, m0 + count))
        else:
            target.addmm_(a, b)

    sums = []
    for m, partners in groups:
        nb, first = len(partners), partners[0]
        consecutive = partners == tuple(range(first, first + nb))
        kf = u[first : first + nb].view(nb * B, d) if consecutive else torch.cat([u[n] for n in partners])
        e = torch.mm(u[m], kf.t()).mul_(scale).exp_()
        rows = e.view(B, nb, B).sum(2)  # (B, nb) row sums of each pair block
        cols = e.sum(0)  # (nb B) column sums
        sums.append(torch.cat([rows.view(-1), cols]).log_().sum())
        # gradient w.r.t. the block: E (c / 2) (1 / rows_i + 1 / cols_j)
        e.view(B, nb, B).mul_(torch.div(half_unit, rows).unsqueeze(2) + torch.div(half_unit, cols).view(1, nb, B))
        product(m, 1, e, kf)
        if consecutive:
            product(first, nb, e.t(), u[m])
        else:
            dk = torch.mm(e.t(), u[m])
            for i, n in enumerate(partners):
                if n in written:
                    du[n] += dk[i * B : (i + 1) * B]
                else:
                    du[n].copy_(dk[i * B : (i + 1) * B])
                    written.add(n)
    if len(written) < M:  # modalities in no pair
        du[[n for n in range(M) if n not in written]] = 0.0
    unif = (sums[0] if len(sums) == 1 else torch.stack(sums).sum()) * (half_unit / scale)
    return unif, du


class _SmallContrastive(torch.autograd.Function):
    """(alignment, uniformity) of the InfoNCE family for raw rows xs (M tensors (B, d) or one
    (M, B, d)): u = x / max(|x|, eps), s = scale u_m . u_n over the pairs P (``groups``: (m,
    partners) of pairs sharing their first modality): alignment = -1 / (B |P|) sum_pairs sum_i
    s(m_i, n_i), uniformity = 1 / (B |P|) sum_pairs 1/2 (sum_i lse_j s(m_i, n_j) + sum_j lse_i
    s(m_i, n_j)). Needs scale |u|^2 small enough that exp(s) stays in range (the caller checks).
    ``weights``: :func:`_pair_weights`."""

    @staticmethod
    def forward(ctx, scale: float, groups: tuple, weights: tuple, eps: float, *xs):
        one = len(xs) == 1
        z = xs[0] if one else torch.stack(xs)
        M, B, d = z.shape
        norms = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
        inv = norms.clamp_min(eps).reciprocal_()
        u = z * inv
        flat = u.view(M, B * d)
        # sum over pairs of u_m . u_n = <u, A u>, and its gradient (A + A^T) u (constants folded in)
        align = torch.vdot(flat.reshape(-1), torch.mm(weights[0], flat).view(-1))
        du_align = torch.mm(weights[1], flat).view(M, B, d)
        unif, du_unif = _small_blocks(u, scale, groups, weights)
        ctx.one = one
        ctx.save_for_backward(u, inv, norms <= eps, du_align, du_unif)
        return align, unif

    @staticmethod
    def backward(ctx, g_align, g_unif):
        _refuse_double_backward()
        u, inv, clamped, du_align, du_unif = ctx.saved_tensors
        du = (du_unif * g_unif).addcmul_(du_align, g_align)
        # through u = x / |x|: (g - u <g, u>) / |x|; rows clamped at eps are scaled only
        dot = torch.linalg.vecdot(du, u).unsqueeze(-1).masked_fill_(clamped, 0.0)
        dx = torch.addcmul(du, u, dot, value=-1.0).mul_(inv)
        return (None, None, None, None) + ((dx,) if ctx.one else dx.unbind(0))


def small_contrastive(xs: Sequence[Tensor] | Tensor, pairs: Sequence[tuple[int, int]], scale: float,
                      eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """(alignment, uniformity) of :func:`objectives._contrastive.contrastive_parts` for raw rows
    (normalised inside, ``F.normalize`` semantics) in one autograd node: the small-batch path.

    ``xs``: M tensors (B, d) or one (M, B, d), float32 or float64, B <= :data:`SMALL_MAX_BATCH`;
    ``scale`` a Python float with scale <= _EXP_LIMIT - log(M B) (no shift needed for unit rows).
    """
    first = xs if isinstance(xs, Tensor) else xs[0]
    n_mod, batch = (first.shape[0], first.shape[1]) if isinstance(xs, Tensor) else (len(xs), first.shape[0])
    pairs = tuple((int(m), int(n)) for m, n in pairs)
    weights = _pair_weights(pairs, n_mod, batch, float(scale), first.dtype, first.device)
    groups: dict[int, list[int]] = {}
    for m, n in pairs:
        groups.setdefault(m, []).append(n)
    parts = (xs,) if isinstance(xs, Tensor) else tuple(xs)
    return _SmallContrastive.apply(float(scale), tuple((m, tuple(p)) for m, p in groups.items()), weights,
                                   float(eps), *parts)


def small_contrastive_fits(xs: object, scale: object) -> bool:
    """True when ``xs`` (the raw embeddings of a loss call) and ``scale`` suit :func:`small_contrastive`:
    M >= 2 float32 / float64 tensors (B, d) of one shape, dtype and device (or one (M, B, d)) with
    B <= SMALL_MAX_BATCH, and a Python-float scale that keeps exp(scale u.v) in range. Anything
    else (including every malformed input, which the regular path then reports) is False."""
    if not isinstance(scale, float) or torch.compiler.is_compiling():
        return False
    if isinstance(xs, Tensor):
        if xs.dim() != 3:
            return False
        n_mod, batch, dim = xs.shape
        dtype = xs.dtype
    elif isinstance(xs, (list, tuple)) and len(xs) >= 2 and all(isinstance(t, Tensor) for t in xs):
        first = xs[0]
        if first.dim() != 2 or any(t.shape != first.shape or t.dtype != first.dtype or t.device != first.device
                                   for t in xs[1:]):
            return False
        n_mod, (batch, dim), dtype = len(xs), first.shape, first.dtype
    else:
        return False
    limit = _EXP_LIMIT.get(dtype)
    return (n_mod >= 2 and 1 <= batch <= SMALL_MAX_BATCH and dim >= 1 and limit is not None
            and 0.0 < scale <= limit - math.log(n_mod * batch))


class _TotalLSE(torch.autograd.Function):
    """log sum_{i,j} exp(scale * x_i . y_j) over all entries (optionally without i == j + offset).

    One global shift c = max_ij S_ij is exact here: an entry that underflows in exp(S_ij - c) is
    below the float range relative to the largest one, so it cannot change the total. With
    ``y is None`` the block is the self-similarity of ``x`` and the symmetric gradient needs a
    single GEMM: d/dx = 2 * scale * G x with G the softmax over all entries.
    """

    @staticmethod
    def forward(ctx, x, y, scale: float, exclude_diagonal: bool, offset: int, chunk):
        same = y is None
        cols = x if same else y
        R = x.shape[0]
        step = R if chunk is None else max(1, min(int(chunk), R))
        need_grad = ctx.needs_input_grad[0] or (not same and ctx.needs_input_grad[1])
        xs = x * scale  # fold the scale into the (R, d) operand, not the (R, N) block
        work = _work_dtype(x.dtype)

        def block(s0: int) -> Tensor:
            s = _block(xs[s0 : s0 + step], cols, work)
            if exclude_diagonal:
                _mask_positives(s, s0, offset)
            return s

        def mass_of(e: Tensor) -> Tensor:  # float32 row sums, float64 over rows (a float64 pass is ~20x slower)
            return e.sum(dim=1).sum(dtype=torch.float64)

        # no shift when the bound on |S| allows it (see the section comment), else the exact maximum
        unshifted = _unshifted_ok(_exp_bound(xs, cols), R * cols.shape[0], work)
        if step == R:
            s = block(0)
            top = torch.zeros((), dtype=work, device=x.device) if unshifted else s.max()
            if not unshifted:
                s.sub_(top)
            mass = mass_of(s.exp_())
            total = top.double() + mass.log()
            blocks = [s]
        elif unshifted:
            top = torch.zeros((), dtype=work, device=x.device)
            mass = sum(mass_of(block(s0).exp_()) for s0 in range(0, R, step))
            total = mass.log()
            blocks = None
        else:  # chunked: online maximum and mass, blocks recomputed for the gradient
            top = torch.tensor(float("-inf"), dtype=work, device=x.device)
            mass = torch.zeros((), dtype=torch.float64, device=x.device)
            for s0 in range(0, R, step):
                s = block(s0)
                new_top = torch.maximum(top, s.max())
                mass = mass * torch.exp((top - new_top).double()) + mass_of(s.sub_(new_top).exp_())
                top = new_top
            total = top.double() + mass.log()
            blocks = None
        if need_grad:
            dx = torch.empty_like(x)
            dy = None if same else torch.zeros_like(cols)
            inv_mass = (1.0 / mass).to(work)
            # half inputs: E may exceed the half range, the softmax E / mass cannot; so normalise
            # the block before the cast; otherwise scale the (R, d) results instead of the block
            half = x.dtype != work
            for i, s0 in enumerate(range(0, R, step)):
                if blocks is not None:
                    g = blocks[i]  # exp(S - top)
                else:
                    g = block(s0)
                    g = g.exp_() if unshifted else g.sub_(top).exp_()
                g = g.mul_(inv_mass).to(x.dtype) if half else g
                torch.mm(g, cols, out=dx[s0 : s0 + step])
                if not same:
                    dy.addmm_(g.T, x[s0 : s0 + step])
            # softmax = exp(S - top) / mass; d/dx_i = scale * sum_j softmax_ij y_j
            post = scale if half else scale * inv_mass
            if same:
                # x enters as rows and as columns; G is symmetric when every row is local
                if offset != 0 or dx.shape[0] != cols.shape[0]:
                    raise ValueError("self-similarity LSE needs all rows (offset 0)")
                dx.mul_(2.0 * post)
                ctx.save_for_backward(dx)
            else:
                dx.mul_(post)
                dy.mul_(post)
                ctx.save_for_backward(dx, dy)
        ctx.same = same
        return total.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward()
        saved = ctx.saved_tensors
        if ctx.same:
            return grad_out * saved[0], None, None, None, None, None
        return grad_out * saved[0], grad_out * saved[1], None, None, None, None


def total_lse(
    x: Tensor,
    y: Tensor | None,
    scale: float,
    exclude_diagonal: bool = False,
    offset: int = 0,
    chunk_size: int | None = None,
) -> Tensor:
    """log sum_ij exp(scale * x_i . y_j); ``y=None`` for the self-similarity of ``x``."""
    return _TotalLSE.apply(x, y, float(scale), bool(exclude_diagonal), int(offset), chunk_size)


class _SelfLSE(torch.autograd.Function):
    """(M,) log sum_{i,j} exp(scale * z_i^m . z_j^m) of every modality's self-similarity block in
    one node: one batched GEMM forward and one backward for all modalities (the per-modality
    ``total_lse`` calls cost ~15 operations each, which dominates small batches).

    ``scale`` is a Python float, or a 0-dim tensor for a value that stays on the device (a median
    bandwidth on an accelerator or under ``torch.compile``): the unshifted path is then not taken,
    since choosing it would read the value on the host. ``torch.compile`` traces this Function (no
    scratch buffer and no host read while tracing; the saved gradient is a fresh tensor).
    """

    @staticmethod
    def forward(ctx, z, scale, exclude_diagonal: bool, row_norm):
        M, B, d = z.shape
        work = _work_dtype(z.dtype)
        half = z.dtype != work
        traced = torch.compiler.is_compiling()
        on_host = not isinstance(scale, Tensor)
        if on_host and not traced:
            s = _scratch((M, B, B), work, z.device)
            if half:
                s.copy_(torch.bmm(z, z.transpose(1, 2))).mul_(scale)
            else:
                torch.baddbmm(s, z, z.transpose(1, 2), beta=0.0, alpha=scale, out=s)
        else:
            s = torch.mul(torch.bmm(z, z.transpose(1, 2)).to(work), scale)
        unshifted = False
        if on_host and (row_norm is not None or not traced):
            bound = _exp_bound(z, z) if row_norm is None else row_norm * row_norm
            unshifted = _unshifted_ok(scale * bound, B * B, work)
        if unshifted:
            top = torch.zeros((M, 1, 1), dtype=work, device=z.device)
            s.exp_()
        else:  # one exact shift per modality (see _TotalLSE)
            if exclude_diagonal:
                s.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
            top = s.amax(dim=(1, 2), keepdim=True)
            s.sub_(top).exp_()
        if exclude_diagonal:
            s.diagonal(dim1=1, dim2=2).zero_()
        mass = s.sum(dim=2).sum(dim=1, dtype=torch.float64)  # (M,) float32 rows, float64 over rows
        total = top.view(M).double() + mass.log()
        if ctx.needs_input_grad[0]:
            # d/dz_m = 2 scale softmax_m z_m (the block is symmetric)
            factor = (2.0 * scale / mass).to(work).view(M, 1, 1)
            if half:
                dz = torch.bmm(s.mul_(factor).to(z.dtype), z)
            else:
                # out of place: an in-place result would alias the product, which torch.compile
                # cannot carry from the forward to the backward
                dz = torch.bmm(s, z) * factor
            ctx.save_for_backward(dz)
        return total.to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward()
        (dz,) = ctx.saved_tensors
        return dz * grad_out.view(-1, 1, 1), None, None, None


def sphere_self_log_mean_kernels(
    z: Tensor, bandwidth: float | Tensor, exclude_diagonal: bool = False, row_norm: float | None = None
) -> Tensor:
    """(M,) LMK_s(X_m, X_m) for unit-norm rows of every modality of z: (M, B, d), in one node.

    ``bandwidth``: a number, or a detached 0-dim tensor (e.g. ``median_bandwidth_tensor``), read on
    the host only where that is free (a CPU tensor outside ``torch.compile``), else kept on the
    device. ``row_norm``: an upper bound on every row norm when known (see :func:`group_lse`).
    """
    n = z.shape[1]
    if exclude_diagonal and n < 2:
        raise ValueError(f"exclude_diagonal needs at least 2 samples, got {n}")
    pairs = n * (n - 1) if exclude_diagonal else n * n
    bandwidth = host_float(bandwidth)
    inv = 1.0 / (bandwidth.detach().double() if isinstance(bandwidth, Tensor) else bandwidth) ** 2
    total = _SelfLSE.apply(z.contiguous(), inv, bool(exclude_diagonal), None if row_norm is None else float(row_norm))
    return total - (inv + math.log(pairs))


def sphere_log_mean_kernel(
    x: Tensor,
    y: Tensor | None,
    bandwidth: float,
    exclude_diagonal: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """LMK_s for *unit-norm* rows: |u - v|^2 = 2 - 2 u.v, so log k_s = (u.v - 1) / s^2.

    Same value as :func:`log_mean_kernel` on unit vectors, through the fused kernel (``y=None``:
    the sample against itself).
    """
    n = x.shape[0]
    m = n if y is None else y.shape[0]
    if exclude_diagonal and n < 2:
        raise ValueError(f"exclude_diagonal needs at least 2 samples, got {n}")
    pairs = n * (n - 1) if exclude_diagonal else n * m
    inv = 1.0 / float(bandwidth) ** 2
    return total_lse(x, y, inv, exclude_diagonal, 0, chunk_size) - inv - math.log(pairs)
