"""Gram-determinant volumes of (anchor, tuple) pairs and GRAM's fused log-sum-exp over them.

GRAM scores anchor row a_i against tuple j (the rows x_j1 .. x_jK of the K = M - 1 other
modalities) by the volume V_ij = sqrt(det G(a_i, x_j1, .., x_jK) + eps). Building the B x B Gram
matrices (M x M each) and taking B^2 determinants costs O(B^2 M^2 (d + M)) and runs at a few
percent of the GEMM rate. This module factors the determinant instead. With C_j = X_j X_j^T the
K x K Gram matrix of tuple j and c_ij = X_j a_i, the Schur complement gives

    det G(a_i, X_j) = det(C_j) |a_i|^2 - c_ij^T adj(C_j) c_ij

(base volume det C_j times the squared height |a_i|^2 - |P_j a_i|^2 of a_i over the tuple's span
when C_j is invertible; the adjugate form also holds for collinear tuples). In the eigenbasis
C_j = U_j diag(s_j) U_j^T, adj(C_j) = U_j diag(lam_j) U_j^T with lam_jk = prod_{l != k} s_jl, so
with the rotated tuple rows f_jk = (U_j^T X_j)_k

    D_ij := det G(a_i, X_j) = det(C_j) |a_i|^2 - sum_k lam_jk (a_i . f_jk)^2
          = det(C_j) |a_i|^2 - sum_k Q_ijk^2,   Q_ijk = a_i . (sqrt(lam_jk) f_jk) :

one GEMM of the anchors against all tuples' weighted rotated rows (the (M - 1) B^2 d work of
anchor-based InfoNCE) and K multiply-adds per entry. The per-tuple frames (eigh of B matrices of
size K x K in float64, then O(B K^2 d)) cost little next to the GEMM.

Gradient (computed in the forward pass, as for the other fused kernels: the loss is a scalar, so
dL/dD is known there). With H_ij = dL/dD_ij, g_jk = sqrt(lam_jk) f_jk and T_ijk = H_ij Q_ijk:

    dL/da_i = 2 (sum_j H_ij det C_j) a_i - 2 sum_jk T_ijk g_jk                  (one GEMM)
    W_jk    = sum_i T_ijk a_i = sqrt(lam_jk) Y_jk,  Y_jk = sum_i H_ij P_ijk a_i  (one GEMM)

with P_ijk = a_i . f_jk, and per tuple, with S'_j = Y_j F_j^T = sum_i H_ij P_ij P_ij^T (K x K)
and h_j = sum_i H_ij |a_i|^2, the derivative through C_j (adj and det are polynomials in C_j, so
nothing divides by a vanishing eigenvalue; pi_jkl = prod_{m != k, l} s_jm):

    dL/dC_j (eigenbasis) = h_j diag(lam_j) - Gamma_j,  Gamma_mm = sum_{k != m} pi_km S'_kk,
                                                       Gamma_kl = -pi_kl S'_kl (k != l)
    dL/dX_j = 2 U_j (dL/dC_j' F_j - diag(lam_j) Y_j).

Y_jk = W_jk / sqrt(lam_jk) where lam_jk > 0; where lam_jk = 0 (another eigenvalue of C_j is 0)
every term that Y_jk enters is multiplied by zero (a zero eigenvalue's rotated row f_jl and its
P_ijl vanish), so Y_jk = 0 there is exact.

So a forward + backward costs three GEMMs of (M - 1) B^2 d each, like anchor-based InfoNCE.

exp is kept in range as in :mod:`objectives.kernels.lse`: the logits -scale V_ij lie in
[-scale vmax, 0] with vmax^2 = prod_m max|z^m|^2 + eps (Hadamard's inequality), so no shift is
needed while scale vmax stays below the float range's exponent limit; otherwise exact row and
column log-sum-exps take over. ``eps`` keeps the square root differentiable at collinear tuples
(det = 0); a determinant that comes out slightly negative in floating point is clamped at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from objectives.kernels.forms import _refuse_double_backward
from objectives.kernels.lse import _EXP_LIMIT, _work_dtype
from objectives.kernels.workspace import _scratch

# rows per elementwise step inside a block: about this many entries of Q (the (rows, K, N) GEMM
# output) per step, so that one step's values stay in cache between its passes
_SLAB_ENTRIES = 2**18


@dataclass
class _Frames:
    """Per-tuple eigen-frames of C_j = X_j X_j^T and the GEMM operand.

    The eigen-decomposition runs in float64; the rest in the frame dtype (float64 for float64
    inputs, else float32), the GEMM operand in the input dtype.
    """

    u: Tensor  # (N, K, K) eigenvectors (columns)
    s: Tensor  # (N, K) eigenvalues, clamped at 0
    det: Tensor  # (N,) det C_j
    lam: Tensor  # (N, K) eigenvalues of adj(C_j): prod_{l != k} s_l
    rot: Tensor  # (N, K, d) rotated tuple rows f_jk
    rows: Tensor  # (K N, d) g_jk = sqrt(lam_jk) f_jk in the input dtype, k-major (row k N + j)


def _exclusive_products(s: Tensor) -> Tensor:
    """(N, K) prod_{l != k} s_l, without division (s may contain zeros)."""
    ones = torch.ones_like(s[:, :1])
    before = torch.cumprod(torch.cat([ones, s[:, :-1]], dim=1), dim=1)
    after = torch.cumprod(torch.cat([ones, s.flip(1)[:, :-1]], dim=1), dim=1).flip(1)
    return before * after


def _pair_exclusive_products(s: Tensor) -> Tensor:
    """(N, K, K) prod_{m != k, l} s_m (the diagonal k == l is not used)."""
    k = s.shape[1]
    eye = torch.eye(k, dtype=torch.bool, device=s.device)
    keep = ~(eye.view(k, 1, k) | eye.view(1, k, k))  # (k, l, m): m differs from k and from l
    return torch.where(keep, s.view(-1, 1, 1, k), torch.ones((), dtype=s.dtype, device=s.device)).prod(-1)


def _frames(others: Tensor) -> _Frames:
    n_other, n, d = others.shape
    fdt = torch.float64 if others.dtype == torch.float64 else torch.float32
    x = others.transpose(0, 1).to(fdt)  # (N, K, d)
    s, u = torch.linalg.eigh((x @ x.transpose(1, 2)).double())
    s = s.clamp_min(0.0)
    lam = _exclusive_products(s)
    s, u, lam = s.to(fdt), u.to(fdt), lam.to(fdt)
    rot = u.transpose(1, 2) @ x  # (N, K, d)
    rows = (rot * lam.sqrt().unsqueeze(2)).transpose(0, 1).reshape(n_other * n, d)
    return _Frames(u=u, s=s, det=s.prod(dim=1), lam=lam, rot=rot, rows=rows.to(others.dtype))


def _tuple_grad(w: Tensor, h: Tensor, fr: _Frames) -> Tensor:
    """dL/dX (N, K, d) from W_jk = sum_i H_ij Q_ijk a_i (N, K, d) and h_j = sum_i H_ij |a_i|^2."""
    k = fr.s.shape[1]
    root = fr.lam.sqrt().unsqueeze(2)
    y = torch.where(root > 0, w / root, torch.zeros((), dtype=w.dtype, device=w.device))  # Y_jk
    sp = y @ fr.rot.transpose(1, 2)  # S'_j = Y_j F_j^T
    sp = 0.5 * (sp + sp.transpose(1, 2))
    pi = _pair_exclusive_products(fr.s)
    eye = torch.eye(k, dtype=torch.bool, device=w.device)
    diag_s = torch.diagonal(sp, dim1=1, dim2=2)  # (N, K)
    gamma_diag = (pi.masked_fill(eye, 0.0) * diag_s.unsqueeze(2)).sum(dim=1)  # sum_{k != m} pi_km S'_kk
    gamma = torch.diag_embed(gamma_diag) - (pi * sp).masked_fill(eye, 0.0)
    dc = torch.diag_embed(h.unsqueeze(1) * fr.lam) - gamma  # dL/dC_j in the eigenbasis
    return 2.0 * (fr.u @ torch.baddbmm(w * root, dc, fr.rot, alpha=1.0, beta=-1.0))


def _volume_bound(a: Tensor, others: Tensor, eps: float, row_norm: float | None) -> float:
    """vmax >= V_ij for every pair: prod_m max|z^m|^2 bounds det G (Hadamard's inequality)."""
    if row_norm is not None:
        return math.sqrt(float(row_norm) ** (2 * (others.shape[0] + 1)) + eps)
    work = _work_dtype(a.dtype)
    norms = torch.cat([torch.linalg.vector_norm(a, dim=-1, dtype=work).amax().view(1),
                       torch.linalg.vector_norm(others, dim=-1, dtype=work).amax(dim=1)])
    return math.sqrt(float(norms.double().square().prod()) + eps)


class _Block:
    """The volumes of one chunk of anchor rows against every tuple, in scratch memory.

    ``q`` (c, K, N): Q_ijk = a_i . g_jk (one GEMM); ``v`` (c, N): V_ij, filled slab by slab by
    :meth:`volumes` so that a slab's passes run in cache; ``e`` (c, N) for the caller.
    """

    def __init__(self, a_c: Tensor, n_c: Tensor, fr: _Frames, det_w: Tensor, eps: float, work: torch.dtype):
        c, (n, n_other) = a_c.shape[0], fr.s.shape
        buf = _scratch((c * (n_other + 2) * n,), work, a_c.device)
        q = buf[: c * n_other * n].view(c, n_other * n)
        if a_c.dtype == work:
            torch.mm(a_c, fr.rows.T, out=q)
        else:  # half-precision GEMM, float32 elementwise work
            q.copy_(a_c @ fr.rows.T)
        self.q = q.view(c, n_other, n)
        self.v, self.e = buf[c * n_other * n :].view(2, c, n).unbind(0)
        self.n_c, self.det_w = n_c, det_w
        self.eps = torch.full((), eps, dtype=work, device=a_c.device)
        self.step = max(1, _SLAB_ENTRIES // max(n * n_other, 1))

    def slabs(self) -> list[slice]:
        return [slice(r0, r0 + self.step) for r0 in range(0, self.v.shape[0], self.step)]

    def volumes(self, sl: slice) -> Tensor:
        """V = sqrt(max(|a|^2 det C - sum_k Q_k^2 + eps, eps)) of the slab's rows (in ``v``)."""
        q, v = self.q[sl], self.v[sl]
        torch.addr(self.eps, self.n_c[sl], self.det_w, out=v)
        for k in range(q.shape[1]):
            v.addcmul_(q[:, k], q[:, k], value=-1.0)
        return v.clamp_min_(self.eps).sqrt_()


class _VolumeLSE(torch.autograd.Function):
    """(sum_i V[i, i + offset], w_row sum_i lse_j L_ij + w_col sum_j lse_i L_ij + w_mean sum_ij L_ij)
    with L = -scale V, V the (R, N) volumes of ``a`` (R, d) against the tuples of ``others`` (K, N, d).

    Both outputs carry their own gradients (GRAM's alignment and uniformity terms): the (B, d)-sized
    pieces of each are kept, and the per-tuple chain through C_j runs once, in the backward, on
    their weighted sum. Column log-sum-exps need every anchor row (``a`` holds all of them);
    chunked, they take a first pass over the row chunks. ``scale_t``: the learnable scale tensor
    or None (``scale`` its value).
    """

    @staticmethod
    def forward(ctx, a, others, scale_t, scale: float, w_row: float, w_col: float, w_mean: float, eps: float,
                offset: int, chunk, vmax: float, want_pos: bool):
        n_other, n, d = others.shape
        R = a.shape[0]
        work = _work_dtype(a.dtype)
        fr = _frames(others)
        det_w = fr.det.to(work)
        n_all = torch.linalg.vector_norm(a, dim=-1, dtype=work).square()
        step = R if chunk is None else max(1, min(int(chunk), R))
        # no shift while every exp(L) = exp(-scale V) >= exp(-scale vmax) stays a normal number
        unshifted = scale * vmax <= _EXP_LIMIT.get(work, -math.inf)
        need = ctx.needs_input_grad
        grads = need[0] or need[1] or need[2]

        def block(s0: int) -> _Block:
            return _Block(a[s0 : s0 + step], n_all[s0 : s0 + step], fr, det_w, eps, work)

        # column statistics over all rows first when the rows come in several chunks
        col = None  # unshifted: column sums of E = exp(L); shifted: column log-sum-exps
        if w_col != 0.0 and step < R:
            cmax = torch.full((n,), -math.inf, dtype=work, device=a.device)
            csum = torch.zeros(n, dtype=work, device=a.device)
            for s0 in range(0, R, step):
                blk = block(s0)
                for sl in blk.slabs():
                    logits = blk.volumes(sl).mul_(-scale)
                    if unshifted:
                        csum += logits.exp_().sum(dim=0)
                    else:
                        new = torch.maximum(cmax, logits.amax(dim=0))
                        csum = csum * torch.exp(cmax - new) + logits.sub_(new).exp_().sum(dim=0)
                        cmax = new
            col = csum if unshifted else csum.log() + cmax

        total = torch.zeros((), dtype=torch.float64, device=a.device)
        pos = torch.zeros((), dtype=torch.float64, device=a.device)
        if grads:
            da = torch.empty((R, d), dtype=work, device=a.device)
            w = torch.empty((n_other * n, d), dtype=work, device=a.device)
            h = torch.empty(n, dtype=work, device=a.device)
        gscale = torch.zeros((), dtype=torch.float64, device=a.device) if need[2] else None
        if want_pos:
            da_pos = torch.zeros((R, d), dtype=work, device=a.device)
            w_pos = torch.zeros((n, n_other, d), dtype=work, device=a.device)
            h_pos = torch.zeros(n, dtype=work, device=a.device)
        for s0 in range(0, R, step):
            a_c = a[s0 : s0 + step]
            blk = block(s0)
            v, e = blk.v, blk.e
            c = v.shape[0]
            own_col = w_col != 0.0 and col is None  # every row is in this block
            if own_col:
                col = torch.zeros(n, dtype=work, device=a.device)
            rowsum = torch.empty(c, dtype=work, device=a.device)
            for sl in blk.slabs():  # volumes, exp, row and column sums of each slab while in cache
                vs, es = blk.volumes(sl), e[sl]
                torch.mul(vs, -scale, out=es)
                if not unshifted:
                    continue
                es.exp_()
                torch.sum(es, dim=1, out=rowsum[sl])
                if own_col:
                    col += es.sum(dim=0)
                if grads and gscale is None:
                    es.div_(vs)  # E / V
            if want_pos:  # the positives (i, i + s0 + offset) where that tuple exists: no GEMM
                first = s0 + offset
                k_pos = max(0, min(c, n - first))
                if k_pos:
                    _positive_grads(a_c[:k_pos], n_all[s0 : s0 + k_pos], fr, first, blk,
                                    da_pos[s0 : s0 + k_pos], w_pos[first : first + k_pos],
                                    h_pos[first : first + k_pos])
                    pos += torch.diagonal(v, offset=first).sum(dtype=torch.float64)
            if w_mean != 0.0:
                total += (-scale * w_mean) * v.sum(dtype=torch.float64)
            if not unshifted:  # exact shifts: e holds the logits
                rowsum = torch.logsumexp(e, dim=1)
                if own_col:
                    col = torch.logsumexp(e, dim=0)
            if w_row != 0.0:
                total += w_row * (rowsum.log() if unshifted else rowsum).sum(dtype=torch.float64)
            if not grads:
                continue
            for sl in blk.slabs():  # H' = G / V with G = dlse/dL (dlse/dD = -scale H' / 2), T' = H' Q
                es, vs = e[sl], v[sl]
                if unshifted:
                    coef = (w_col / col).unsqueeze(0) if w_col != 0.0 else 0.0
                    if w_row != 0.0:
                        coef = (w_row / rowsum[sl]).unsqueeze(1) + coef
                    es.mul_(coef)  # G (with a learnable scale) or G / V
                else:
                    logits = es.clone() if w_row != 0.0 and w_col != 0.0 else es
                    if w_row != 0.0:
                        es.sub_(rowsum[sl].unsqueeze(1)).exp_().mul_(w_row)
                    if w_col != 0.0:
                        p_col = logits.sub_(col.unsqueeze(0)).exp_().mul_(w_col)
                        if w_row != 0.0:
                            es.add_(p_col)
                if not unshifted or gscale is not None:
                    if w_mean != 0.0:
                        es.add_(w_mean)
                    if gscale is not None:  # dlse/dscale = -sum_ij G_ij V_ij
                        gscale -= torch.linalg.vecdot(es.reshape(-1), vs.reshape(-1)).double()
                    es.div_(vs)
                elif w_mean != 0.0:
                    es.addcdiv_(blk.eps.new_ones(()), vs, value=w_mean)
                blk.q[sl].mul_(es.unsqueeze(1))
            # d lse/d a_c = -scale ((H' @ det) a_c - T' @ g); W = T'^T a; h = H'^T |a|^2
            t = blk.q.view(c, n_other * n)
            da_c = da[s0 : s0 + c]
            torch.mul(a_c, (e @ det_w).unsqueeze(1), out=da_c)
            first = s0 == 0
            if a.dtype == work:
                da_c.addmm_(t, fr.rows, alpha=-1.0)
                if first:
                    torch.mm(t.T, a_c, out=w)
                else:
                    w.addmm_(t.T, a_c)
            else:  # half: T' spans many decades (H' up to 1 / sqrt(eps)); cast it normalised
                top = t.abs().amax().clamp_min(torch.finfo(work).tiny)
                t_low = t.div(top).to(a.dtype)
                da_c.sub_((t_low @ fr.rows).to(work).mul_(top))
                part = (t_low.T @ a_c).to(work).mul_(top)
                w.copy_(part) if first else w.add_(part)
            torch.mv(e.T, n_all[s0 : s0 + c], out=h) if first else h.addmv_(e.T, n_all[s0 : s0 + c])
        if w_col != 0.0:
            total += w_col * (col.log() if unshifted else col).sum(dtype=torch.float64)
        if grads:
            factor = -scale  # the 2 of dD/da and dD/dX folded in with dlse/dD = -scale H' / 2
            da.mul_(factor)
            fdt = fr.rot.dtype
            w = w.view(n_other, n, d).transpose(0, 1).to(fdt).mul_(0.5 * factor)
            h = h.to(fdt).mul_(0.5 * factor)
            saved = [da.to(a.dtype), w, h]
            saved += [da_pos.to(a.dtype), w_pos.to(fdt), h_pos.to(fdt)] if want_pos else [None, None, None]
            saved += [fr.u, fr.s, fr.lam, fr.rot, None if gscale is None else gscale.to(a.dtype)]
            ctx.save_for_backward(*saved)
        return pos.to(a.dtype), total.to(a.dtype)

    @staticmethod
    def backward(ctx, g_pos, g_lse):
        _refuse_double_backward()
        da, w, h, da_pos, w_pos, h_pos, u, s, lam, rot, gscale = ctx.saved_tensors
        grad_a = grad_x = grad_s = None
        if ctx.needs_input_grad[0]:
            grad_a = g_lse * da if da_pos is None else g_lse * da + g_pos * da_pos
        if ctx.needs_input_grad[1]:
            if w_pos is not None:
                gp = g_pos.to(w.dtype)
                w, h = torch.add(w_pos * gp, w, alpha=g_lse.to(w.dtype)), torch.add(h_pos * gp, h, alpha=g_lse.to(w.dtype))
            else:
                w, h = w * g_lse.to(w.dtype), h * g_lse.to(w.dtype)
            fr = _Frames(u=u, s=s, det=s.prod(dim=1), lam=lam, rot=rot, rows=rot)
            grad_x = _tuple_grad(w, h, fr).transpose(0, 1).to(g_lse.dtype)
        if ctx.needs_input_grad[2]:
            grad_s = g_lse * gscale
        return grad_a, grad_x, grad_s, None, None, None, None, None, None, None, None, None


def _positive_grads(a_p: Tensor, n_p: Tensor, fr: _Frames, first: int, blk: _Block, da: Tensor, w: Tensor,
                    h: Tensor) -> None:
    """The gradient pieces of V[i, i + first] for the rows a_p (written into da, w, h): no GEMM.

    dV/dD = 1 / (2 V); dD/da_i = 2 det C_j a_i - 2 sum_k Q_ijk g_jk; W_jk = Q_ijk a_i / (2 V) and
    h_j = |a_i|^2 / (2 V) for j = i + first.
    """
    r = a_p.shape[0]
    q = torch.diagonal(blk.q, offset=first, dim1=0, dim2=2).T  # (r, K)
    hh = 0.5 / torch.diagonal(blk.v, offset=first)  # (r,)
    cols = slice(first, first + r)
    g = fr.rows.view(fr.s.shape[1], -1, a_p.shape[1])[:, cols].transpose(0, 1)  # (r, K, d)
    a_w = a_p.to(da.dtype)
    pull = torch.bmm(q.unsqueeze(1), g.to(q.dtype)).squeeze(1)  # sum_k Q_k g_k
    da.copy_((2.0 * hh).unsqueeze(1) * (fr.det[cols].to(da.dtype).unsqueeze(1) * a_w - pull))
    w.copy_((hh.unsqueeze(1) * q).unsqueeze(2) * a_w.unsqueeze(1))
    h.copy_(hh * n_p)


def volume_lse(
    a: Tensor,
    others: Tensor,
    scale: float | Tensor,
    w_row: float,
    w_col: float,
    w_mean: float = 0.0,
    eps: float = 1e-6,
    offset: int = 0,
    chunk_size: int | None = None,
    row_norm: float | None = None,
    positives: bool = True,
) -> tuple[Tensor, Tensor]:
    """(sum_i V[i, i + offset], w_row sum_i lse_j L_ij + w_col sum_j lse_i L_ij + w_mean sum_ij L_ij).

    ``V[i, j] = sqrt(max(det Gram(a_i, others[:, j]), 0) + eps)`` for anchors ``a`` (R, d) and the
    tuples of ``others`` (K, N, d); ``L = -scale V``. ``scale`` may be a learnable 0-dim tensor.
    One autograd node, gradients formed in the forward pass; ``chunk_size`` bounds the live block
    to about ``chunk_size x N x (K + 3)`` entries. ``row_norm``: an upper bound on every row's L2
    norm when the caller knows one (unit rows); it must hold, since it decides how exp is kept in
    range. ``positives=False`` skips the first output's gradient (it is then 0).
    """
    if others.dim() != 3 or a.dim() != 2 or others.shape[2] != a.shape[1]:
        raise ValueError(f"volume_lse needs a: (R, d) and others: (K, N, d), got {tuple(a.shape)} and "
                         f"{tuple(others.shape)}")
    if w_col != 0.0 and a.shape[0] < others.shape[1]:
        raise ValueError("column log-sum-exps need every anchor row")
    if torch.compiler.is_compiling():  # no host reads in a compiled graph: the direct formulation
        from objectives.kernels import plain

        return plain.volume_lse(a, others, scale, w_row, w_col, w_mean, eps, offset)
    learnable = isinstance(scale, Tensor)
    value = float(scale.detach()) if learnable else float(scale)
    vmax = _volume_bound(a.detach(), others.detach(), float(eps), row_norm)
    return _VolumeLSE.apply(a.contiguous(), others.contiguous(), scale if learnable else None, value,
                            float(w_row), float(w_col), float(w_mean), float(eps), int(offset), chunk_size,
                            vmax, bool(positives))


def gram_volumes(anchor_rows: Tensor, others: Tensor, eps: float, chunk_size: int | None = None) -> Tensor:
    """The direct formulation: V[i, j] = sqrt(max(det Gram(anchor_rows[i], others[:, j]), 0) + eps).

    Builds the (R, N, M, M) Gram blocks and takes R N determinants with plain autograd
    (half precision in float64). The reference the fused :func:`volume_lse` is tested and timed
    against; it is O(R N M^2 (d + M)) and slow.
    """
    n_other, n, _ = others.shape
    m = n_other + 1
    inner = torch.einsum("knd,lnd->nkl", others, others)  # (N, M-1, M-1)
    step = anchor_rows.shape[0] if chunk_size is None else chunk_size
    out = []
    for s0 in range(0, anchor_rows.shape[0], step):
        a = anchor_rows[s0 : s0 + step]
        r = a.shape[0]
        cross = torch.einsum("rd,knd->rnk", a, others)  # (R, N, M-1)
        gram = a.new_empty((r, n, m, m))
        gram[:, :, 0, 0] = (a * a).sum(-1, keepdim=True)
        gram[:, :, 0, 1:] = cross
        gram[:, :, 1:, 0] = cross
        gram[:, :, 1:, 1:] = inner.unsqueeze(0)
        low = gram.dtype in (torch.float16, torch.bfloat16)
        det = torch.linalg.det(gram.double() if low else gram).to(gram.dtype)
        out.append((det.clamp_min(0.0) + eps).sqrt())
    return torch.cat(out, dim=0)
