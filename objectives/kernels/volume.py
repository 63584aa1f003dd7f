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

from objectives.kernels import plain
from objectives.kernels.forms import _refuse_double_backward
from objectives.kernels.lse import _EXP_LIMIT, _work_dtype
from objectives.kernels.plain import gram_volumes  # noqa: F401  (re-exported; the doctest below)
from objectives.kernels.workspace import _scratch

# rows per elementwise step inside a block: about this many entries of Q (the (rows, K, N) GEMM
# output) per step (2^18..2^22 measured alike on one CPU thread; fewer steps, fewer operations)
_SLAB_ENTRIES = 2**20


@dataclass
class _Frames:
    """Per-tuple eigen-frames of C_j = X_j X_j^T and the GEMM operand.

    The eigen-decomposition runs in float64; the rest in the frame dtype (float64 for float64
    inputs, else float32), the GEMM operand in the input dtype.
    """

    x: Tensor  # (N, K, d) the tuples' rows x_jk
    u: Tensor  # (N, K, K) eigenvectors of C_j (columns)
    s: Tensor  # (N, K) eigenvalues, clamped at 0
    lam: Tensor  # (N, K) eigenvalues of adj(C_j): prod_{l != k} s_l
    det: Tensor  # (N,) det C_j
    g: Tensor | None = None  # (N, K, d) g_jk = sqrt(lam_jk) f_jk, f_jk = (U_j^T X_j)_k
    rows: Tensor | None = None  # (K N, d) g in the input dtype, k-major (row k N + j)


def _exclusive_products(s: Tensor) -> Tensor:
    """(N, K) prod_{l != k} s_l, without division (s may contain zeros)."""
    if s.shape[1] <= 2:  # K = 1: the empty product; K = 2: the other eigenvalue
        return torch.ones_like(s) if s.shape[1] == 1 else s.flip(1)
    ones = torch.ones_like(s[:, :1])
    before = torch.cumprod(torch.cat([ones, s[:, :-1]], dim=1), dim=1)
    after = torch.cumprod(torch.cat([ones, s.flip(1)[:, :-1]], dim=1), dim=1).flip(1)
    return before * after


_masks: dict = {}


def _eye(k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The (k, k) boolean identity and the (k, k, k) mask "m differs from k and from l", cached."""
    key = (k, device)
    if key not in _masks:
        eye = torch.eye(k, dtype=torch.bool, device=device)
        _masks[key] = (eye, ~(eye.view(k, 1, k) | eye.view(1, k, k)))
    return _masks[key]


def _pair_exclusive_products(s: Tensor) -> Tensor:
    """(N, K, K) prod_{m != k, l} s_m (the diagonal k == l is not used)."""
    k = s.shape[1]
    if k <= 2:  # the empty product
        return torch.ones((s.shape[0], k, k), dtype=s.dtype, device=s.device)
    keep = _eye(k, s.device)[1]  # (k, l, m)
    return torch.where(keep, s.view(-1, 1, 1, k), torch.ones((), dtype=s.dtype, device=s.device)).prod(-1)


def _tuple_rows(others: Tensor) -> Tensor:
    """(N, K, d) tuple rows in the frame dtype (a view for float32 / float64 inputs)."""
    fdt = torch.float64 if others.dtype == torch.float64 else torch.float32
    return others.transpose(0, 1).to(fdt)


def _eigh(c: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues and eigenvectors of symmetric (N, K, K) float64 matrices; K = 1, 2 in closed
    form (a batched LAPACK call costs more than the arithmetic there)."""
    k = c.shape[-1]
    if k == 1:
        return c[:, 0], torch.ones_like(c)
    if k == 2:
        p, q, r = c[:, 0, 0], c[:, 0, 1], c[:, 1, 1]
        mid, rad = 0.5 * (p + r), torch.hypot(0.5 * (p - r), q)
        theta = 0.5 * torch.atan2(2.0 * q, p - r)  # the larger eigenvalue's direction
        cos, sin = torch.cos(theta), torch.sin(theta)
        u = torch.stack([torch.stack([-sin, cos], dim=1), torch.stack([cos, sin], dim=1)], dim=2)
        return torch.stack([mid - rad, mid + rad], dim=1), u
    return torch.linalg.eigh(c)


def _frames(x: Tensor, dtype: torch.dtype) -> _Frames:
    """The frames of the tuples x (N, K, d), with the GEMM operand in ``dtype``."""
    s, u = _eigh((x @ x.transpose(1, 2)).double())
    s = s.clamp_min(0.0)
    lam = _exclusive_products(s)
    s, u, lam = s.to(x.dtype), u.to(x.dtype), lam.to(x.dtype)
    fr = _Frames(x=x, u=u, s=s, lam=lam, det=s.prod(dim=1))
    n, n_other, d = x.shape
    fr.g = (u * lam.sqrt().unsqueeze(1)).transpose(1, 2) @ x  # rows sqrt(lam_k) u_k^T X_j
    fr.rows = fr.g.transpose(0, 1).reshape(n_other * n, d).to(dtype)
    return fr


def _tuple_grad(w: Tensor, h: Tensor, fr: _Frames) -> Tensor:
    """dL/dX (N, K, d) from W_jk = sum_i H_ij Q_ijk a_i (N, K, d) and h_j = sum_i H_ij |a_i|^2.

    With Y_jk = W_jk / sqrt(lam_jk) (0 where lam_jk = 0) and F_j = U_j^T X_j:
    S'_j = Y_j F_j^T = diag(1 / sqrt(lam)) (W_j X_j^T) U_j and
    dL/dX_j = 2 U_j (dC'_j F_j - diag(lam) Y_j) = 2 (U dC' U^T)_j X_j - 2 (U diag(sqrt(lam)))_j W_j.
    """
    k = fr.s.shape[1]
    root = fr.lam.sqrt()
    inv = torch.where(root > 0, root.reciprocal(), torch.zeros((), dtype=root.dtype, device=root.device))
    sp = inv.unsqueeze(2) * ((w @ fr.x.transpose(1, 2)) @ fr.u)
    sp = 0.5 * (sp + sp.transpose(1, 2))
    pi = _pair_exclusive_products(fr.s)
    eye = _eye(k, w.device)[0]
    diag_s = torch.diagonal(sp, dim1=1, dim2=2)  # (N, K)
    gamma_diag = (pi.masked_fill(eye, 0.0) * diag_s.unsqueeze(2)).sum(dim=1)  # sum_{k != m} pi_km S'_kk
    gamma = torch.diag_embed(gamma_diag) - (pi * sp).masked_fill(eye, 0.0)
    dc = torch.diag_embed(h.unsqueeze(1) * fr.lam) - gamma  # dL/dC_j in the eigenbasis
    outer = 2.0 * (fr.u @ dc @ fr.u.transpose(1, 2))
    return torch.baddbmm(outer @ fr.x, fr.u * root.unsqueeze(1), w, alpha=-2.0)


def _volume_bound(z: Tensor, eps: float, row_norm: float | None) -> float:
    """vmax >= V_ij for every pair: prod_m max|z^m|^2 bounds det G (Hadamard's inequality); one
    synchronising read unless the caller knows a bound on the row norms."""
    if row_norm is not None:
        return math.sqrt(float(row_norm) ** (2 * z.shape[0]) + eps)
    norms = torch.linalg.vector_norm(z, dim=-1, dtype=_work_dtype(z.dtype)).amax(dim=1)
    return math.sqrt(float(norms.double().square().prod()) + eps)


class _Diagonal:
    """The pairs (i, i + diag) of one chunk of rows (chunk rows lo .. hi - 1), recomputed from the
    operands in the frame dtype (O(r K d), no GEMM).

    These are the positives: aligned, near-degenerate tuples whose small determinant the GEMM's
    rounding would swamp (in half precision a GEMM output carries ~3 significant digits, and
    D = |a|^2 det C - sum_k Q_k^2 cancels to ~1e-3 and below). The block's diagonal is replaced by
    these values and leaves the block's gradient GEMMs: the gradient through them is formed from
    the pieces kept here (``q``, ``pull``), with any weights, in the backward.
    """

    def __init__(self, a_c: Tensor, n_c: Tensor, fr: _Frames, s0: int, offset: int, eps: float) -> None:
        c, n = a_c.shape[0], fr.s.shape[0]
        self.lo = min(c, max(0, -offset - s0))
        self.hi = max(self.lo, min(c, n - offset - s0))
        self.diag = s0 + offset  # entry (i, i + diag) of the chunk's (c, N) block
        cols = slice(self.lo + self.diag, self.hi + self.diag)
        g = fr.g[cols]  # (r, K, d)
        a = a_c[self.lo : self.hi].to(g.dtype)
        self.q = (g * a.unsqueeze(1)).sum(dim=2)  # (r, K)
        self.pull = (self.q.unsqueeze(2) * g).sum(dim=1)  # sum_k Q_k g_k, (r, d)
        self.v = (n_c[self.lo : self.hi].to(g.dtype) * fr.det[cols] - self.q.square().sum(dim=1)).clamp_min(0.0)
        self.v = self.v.add_(eps).sqrt_()

    def _entries(self, x: Tensor, row0: int, lo: int, hi: int) -> Tensor:
        """View of the entries (i, i + diag) for rows lo .. hi - 1 of ``x``, whose first row is row0."""
        off = self.diag + row0  # x's own diagonal offset; its diagonal view starts at row max(0, -off)
        return torch.diagonal(x, offset=off).narrow(0, lo - row0 - max(0, -off), hi - lo)

    def overwrite(self, v: Tensor, sl: slice) -> None:
        """Write the recomputed V into the slab ``v`` = rows ``sl`` of the chunk's block."""
        lo, hi = max(sl.start, self.lo), min(sl.stop, self.hi)
        if hi > lo:
            self._entries(v, sl.start, lo, hi).copy_(self.v[lo - self.lo : hi - self.lo])

    def take(self, e: Tensor) -> Tensor:
        """The block's entries (i, i + diag) of ``e`` (c, N), replaced by 0; returns them."""
        if self.hi <= self.lo:
            return self.v.new_zeros(0)
        view = self._entries(e, 0, self.lo, self.hi)
        out = view.to(self.v.dtype, copy=True)
        view.zero_()
        return out


def _diagonal_grads(weight: Tensor, q: Tensor, pull: Tensor, a: Tensor, n: Tensor, det: Tensor,
                    da: Tensor, w: Tensor, h: Tensor) -> None:
    """Add the gradient pieces of sum_i weight_i D[i, i + offset] into da (r, d), w (r, K, d), h (r,):
    dD/da_i = 2 det C_j a_i - 2 sum_k Q_ijk g_jk; W_jk = Q_ijk a_i; h_j = |a_i|^2 (j = i + offset)."""
    da.add_((2.0 * weight).unsqueeze(1) * (det.unsqueeze(1) * a - pull))
    w.addcmul_((weight.unsqueeze(1) * q).unsqueeze(2), a.unsqueeze(1))
    h.addcmul_(weight, n)


class _Block:
    """The volumes of one chunk of anchor rows against every tuple, in scratch memory.

    ``q`` (c, K, N): Q_ijk = a_i . g_jk (one GEMM); ``v`` (c, N): V_ij, filled slab by slab by
    :meth:`volumes` so that a slab's passes run in cache; ``e`` (c, N) for the caller;
    ``diag``: the pairs (i, i + offset), recomputed accurately.
    """

    def __init__(self, a_c: Tensor, n_c: Tensor, fr: _Frames, det_w: Tensor, eps: float, work: torch.dtype,
                 s0: int, offset: int) -> None:
        c, (n, n_other) = a_c.shape[0], fr.s.shape
        buf = _scratch((c * (n_other + 2) * n,), work, a_c.device)
        q = buf[: c * n_other * n].view(c, n_other * n)
        if a_c.dtype == work:
            torch.mm(a_c, fr.rows.T, out=q)
        else:  # half-precision GEMM, float32 elementwise work
            q.copy_(a_c @ fr.rows.T)
        self.q = q.view(c, n_other, n)
        self.v, self.e = buf[c * n_other * n :].view(2, c, n).unbind(0)
        self.n_c, self.det_w, self.eps = n_c, det_w, eps
        self.step = max(1, _SLAB_ENTRIES // max(n * n_other, 1))
        self.diag = _Diagonal(a_c, n_c, fr, s0, offset, eps)

    def slabs(self) -> list[slice]:
        return [slice(r0, r0 + self.step) for r0 in range(0, self.v.shape[0], self.step)]

    def volumes(self, sl: slice) -> Tensor:
        """V = sqrt(max(|a|^2 det C - sum_k Q_k^2, 0) + eps) of the slab's rows (in ``v``)."""
        q, v = self.q[sl], self.v[sl]
        torch.mul(self.n_c[sl].unsqueeze(1), self.det_w, out=v)
        for k in range(q.shape[1]):
            v.addcmul_(q[:, k], q[:, k], value=-1.0)
        v.clamp_min_(0.0).add_(self.eps).sqrt_()
        self.diag.overwrite(v, sl)
        return v


def _others(z: Tensor, anchor: int) -> Tensor:
    """(K, B, d): every modality but the anchor (a view unless the anchor sits in the middle)."""
    if anchor == 0:
        return z[1:]
    if anchor == z.shape[0] - 1:
        return z[:-1]
    return torch.cat([z[:anchor], z[anchor + 1 :]])


class _VolumeLSE(torch.autograd.Function):
    """(sum_i V[i, i + offset], w_row sum_i lse_j L_ij + w_col sum_j lse_i L_ij + w_mean sum_ij L_ij)
    with L = -scale V, V the (R, N) volumes of the anchors a = z[anchor, rows] against the tuples
    z[n, cols], n != anchor; offset = rows.start - cols.start (a pair of one sample is positive).

    Both outputs carry their own gradients (GRAM's alignment and uniformity terms). The forward
    keeps the (B, d)-sized pieces: the log-sum-exp's GEMM gradients (da, W, h) and, for the
    positive pairs, their recomputed Q and pull with the weights of both outputs; the backward
    combines them with the incoming gradients and runs the per-tuple chain through C_j once.
    Column log-sum-exps need every anchor row; chunked, they take a first pass over the row
    chunks. ``scale_t``: the learnable scale tensor or None (``scale`` its value).
    """

    @staticmethod
    def forward(ctx, z, scale_t, anchor: int, rows: tuple[int, int], cols: tuple[int, int], scale: float,
                w_row: float, w_col: float, w_mean: float, eps: float, chunk, vmax: float, want_pos: bool):
        a = z[anchor, rows[0] : rows[1]]
        others = _others(z, anchor)[:, cols[0] : cols[1]]
        offset = rows[0] - cols[0]
        n_other, n, d = others.shape
        R = a.shape[0]
        work = _work_dtype(a.dtype)
        fr = _frames(_tuple_rows(others), dtype=a.dtype)
        det_w = fr.det.to(work)
        n_all = torch.linalg.vector_norm(a, dim=-1, dtype=work).square()
        step = R if chunk is None else max(1, min(int(chunk), R))
        # no shift while every exp(L) = exp(-scale V) >= exp(-scale vmax) stays a normal number
        unshifted = scale * vmax <= _EXP_LIMIT.get(work, -math.inf)
        need = ctx.needs_input_grad
        grads = need[0] or need[1]

        def block(s0: int) -> _Block:
            return _Block(a[s0 : s0 + step], n_all[s0 : s0 + step], fr, det_w, eps, work, s0, offset)

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
        if grads:
            da = torch.empty((R, d), dtype=work, device=a.device)
            w = torch.empty((n_other * n, d), dtype=work, device=a.device)
            h = torch.empty(n, dtype=work, device=a.device)
        gscale = torch.zeros((), dtype=torch.float64, device=a.device) if need[1] else None
        diags = []  # (chunk start, _Diagonal, dlse/dD of its entries)
        for s0 in range(0, R, step):
            a_c = a[s0 : s0 + step]
            blk = block(s0)
            v, e, diag = blk.v, blk.e, blk.diag
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
            if w_mean != 0.0:
                total += (-scale * w_mean) * v.sum(dtype=torch.float64)
            if not unshifted:  # exact shifts: e holds the logits
                rowsum = torch.logsumexp(e, dim=1)
                if own_col:
                    col = torch.logsumexp(e, dim=0)
            if w_row != 0.0:
                total += w_row * (rowsum.log() if unshifted else rowsum).sum(dtype=torch.float64)
            if not grads:
                diags.append((s0, diag, None))
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
                    if w_row == 0.0 and w_col == 0.0:  # only the mean term: es still holds the logits
                        es.zero_()
                if not unshifted or gscale is not None:
                    if w_mean != 0.0:
                        es.add_(w_mean)
                    if gscale is not None:  # dlse/dscale = -sum_ij G_ij V_ij
                        gscale -= torch.linalg.vecdot(es.reshape(-1), vs.reshape(-1)).double()
                    es.div_(vs)
                elif w_mean != 0.0:
                    es.addcdiv_(torch.ones((), dtype=work, device=a.device), vs, value=w_mean)
            # the diagonal leaves the GEMMs: its gradient is formed from the recomputed values
            diags.append((s0, diag, (-0.5 * scale) * diag.take(e)))
            blk.q.mul_(e.unsqueeze(1))  # T' = H' Q
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
            else:  # half precision: bfloat16 GEMMs; float16 cannot hold T' (H' spans ~1 / sqrt(eps)
                # decades beyond its narrow exponent range), so its two gradient GEMMs run in float32
                low = a.dtype if a.dtype == torch.bfloat16 else work
                t_low = t.to(low)
                da_c.sub_(t_low @ fr.rows.to(low))
                part = t_low.T @ a_c.to(low)
                w.copy_(part) if first else w.add_(part)
            torch.mv(e.T, n_all[s0 : s0 + c], out=h) if first else h.addmv_(e.T, n_all[s0 : s0 + c])
        if w_col != 0.0:
            total += w_col * (col.log() if unshifted else col).sum(dtype=torch.float64)
        # the positives: one contiguous run of anchors (lo .. hi) over all chunks
        lo = min(R, max(0, -offset))
        hi = max(lo, min(R, n - offset))
        def joined(parts: list[Tensor]) -> Tensor:  # one chunk's piece, or all chunks' joined
            return parts[0] if len(parts) == 1 else torch.cat(parts)

        pv = joined([dg.v for _, dg, _ in diags])
        pos = pv.sum(dtype=torch.float64)
        if grads:
            weights = torch.stack([joined([wt for _, _, wt in diags]), 0.5 / pv if want_pos else torch.zeros_like(pv)])
            ctx.diag = (lo, hi, offset)
            ctx.layout = (anchor, rows, cols)
            # the GEMMs' pieces as they are (W k-major): the backward scales them by -scale / 2
            # (dlse/dD = -scale H' / 2; the 2 of dD/da and dD/dX folded in) with the incoming gradient
            ctx.scale = scale
            ctx.save_for_backward(z, da, w, h, fr.u, fr.s, fr.lam, joined([dg.q for _, dg, _ in diags]),
                                  joined([dg.pull for _, dg, _ in diags]), weights,
                                  None if gscale is None else gscale.to(a.dtype))
        return pos.to(a.dtype), total.to(a.dtype)

    @staticmethod
    def backward(ctx, g_pos, g_lse):
        _refuse_double_backward()
        z, da, w, h, u, s, lam, q, pull, weights, gscale = ctx.saved_tensors
        grad_z = grad_s = None
        if ctx.needs_input_grad[0]:
            anchor, (r0, r1), (c0, c1) = ctx.layout
            lo, hi, offset = ctx.diag
            M, B = z.shape[0], z.shape[1]
            fdt = u.dtype
            n_other, n, d = u.shape[1], u.shape[0], z.shape[2]
            gl, gp = g_lse.to(fdt), g_pos.to(fdt)
            factor = gl * (-ctx.scale)
            da = da.to(fdt) * factor
            w = torch.mul(w.view(n_other, n, d).transpose(0, 1), 0.5 * factor).contiguous()  # (N, K, d)
            h = h.to(fdt) * (0.5 * factor)
            # the positive pairs (i, i + offset), i = lo .. hi - 1 of the anchors, both outputs
            a = z[anchor, r0 + lo : r0 + hi].to(fdt)
            x = _tuple_rows(_others(z, anchor)[:, c0:c1])
            cols = slice(lo + offset, hi + offset)
            _diagonal_grads(weights[0] * gl + weights[1] * gp, q, pull, a, a.square().sum(dim=1), s[cols].prod(dim=1),
                            da[lo:hi], w[cols], h[cols])
            fr = _Frames(x=x, u=u, s=s, lam=lam, det=s.prod(dim=1))
            dx = _tuple_grad(w, h, fr).to(z.dtype)  # (N, K, d)
            if (r0, r1) == (c0, c1) == (0, B):  # every row: the gradient in one copy, modality order
                parts = list(dx.transpose(0, 1).unbind(0))
                parts.insert(anchor, da.to(z.dtype))
                grad_z = torch.stack(parts)
            else:
                grad_z = z.new_zeros(z.shape)
                grad_z[anchor, r0:r1] = da
                for k, m in enumerate(i for i in range(M) if i != anchor):
                    grad_z[m, c0:c1] = dx[:, k]
        if ctx.needs_input_grad[1]:
            grad_s = g_lse * gscale
        return (grad_z, grad_s) + (None,) * 11


def _span(part: slice | None, size: int) -> tuple[int, int]:
    start, stop, stride = (slice(None) if part is None else part).indices(size)
    if stride != 1 or stop <= start:
        raise ValueError(f"rows and cols must be non-empty contiguous slices, got {part!r}")
    return start, stop


def volume_lse(
    z: Tensor,
    anchor: int,
    scale: float | Tensor,
    w_row: float,
    w_col: float,
    w_mean: float = 0.0,
    eps: float = 1e-6,
    rows: slice | None = None,
    cols: slice | None = None,
    chunk_size: int | None = None,
    row_norm: float | None = None,
    positives: bool = True,
) -> tuple[Tensor, Tensor]:
    """GRAM's two sums over the volumes of anchors against tuples, in one autograd node.

    ``z`` (M, B, d): anchors a_i = z[anchor, i] for i in ``rows``, tuples j = (z[n, j] for n !=
    anchor) for j in ``cols`` (default: all rows); ``V[i, j] = sqrt(max(det Gram(a_i, tuple j), 0)
    + eps)`` and ``L = -scale V``. Returns ``(sum_i V[i, i], w_row sum_i lse_j L_ij + w_col sum_j
    lse_i L_ij + w_mean sum_ij L_ij)``, where (i, i) is the positive pair of one sample (only those
    in both ``rows`` and ``cols``). ``scale`` may be a learnable 0-dim tensor. Gradients are formed
    in the forward pass; ``chunk_size`` bounds the live block to about ``chunk_size x N x (M + 1)``
    entries. ``row_norm``: an upper bound on every row's L2 norm when the caller knows one (unit
    rows); it must hold, since it decides how exp is kept in range. ``positives=False`` skips the
    first output's gradient (it is then 0). Column log-sum-exps need every anchor (``rows`` all).
    """
    if z.dim() != 3 or z.shape[0] < 2:
        raise ValueError(f"volume_lse needs z: (M, B, d) with M >= 2, got {tuple(z.shape)}")
    if not 0 <= anchor < z.shape[0]:
        raise ValueError(f"anchor={anchor} is out of range for M={z.shape[0]} modalities")
    r, c = _span(rows, z.shape[1]), _span(cols, z.shape[1])
    if w_col != 0.0 and r != (0, z.shape[1]):
        raise ValueError("column log-sum-exps need every anchor row")
    if torch.compiler.is_compiling():  # no host reads in a compiled graph: the direct formulation
        return plain.volume_lse(z[anchor, r[0] : r[1]], _others(z, anchor)[:, c[0] : c[1]], scale, w_row, w_col,
                                w_mean, eps, r[0] - c[0])
    learnable = isinstance(scale, Tensor)
    value = float(scale.detach()) if learnable else float(scale)
    vmax = _volume_bound(z.detach(), float(eps), row_norm)
    return _VolumeLSE.apply(z.contiguous(), scale if learnable else None, int(anchor), r, c, value, float(w_row),
                            float(w_col), float(w_mean), float(eps), chunk_size, vmax, bool(positives))


#: entries of Q (rows x K x N, float64) per step of :func:`tuple_volumes` (~32 MiB)
_VOLUME_STEP_ENTRIES = 2**22


def tuple_volumes(anchor_rows: Tensor, others: Tensor, eps: float = 0.0) -> Tensor:
    """V[i, j] = sqrt(max(det Gram(anchor_rows[i], others[:, j]), 0) + eps) for scoring, without
    gradients: the base volume x height factorisation of :func:`volume_lse` in float64 (one GEMM,
    O(R N (M - 1) d), chunked to ~32 MiB), returned in the input dtype. The same values as
    :func:`gram_volumes` up to float64 rounding, at the cost of a similarity matrix instead of R N
    determinants. ``anchor_rows`` (R, d), ``others`` (M - 1, N, d).

        >>> import torch
        >>> x = torch.randn(5, 4, dtype=torch.float64)
        >>> others = torch.randn(2, 6, 4, dtype=torch.float64)
        >>> torch.allclose(tuple_volumes(x, others), gram_volumes(x, others, 0.0))
        True
    """
    if anchor_rows.dim() != 2 or others.dim() != 3 or others.shape[0] < 1 \
            or others.shape[2] != anchor_rows.shape[1]:
        raise ValueError(f"tuple_volumes needs anchor_rows (R, d) and others (M - 1, N, d), got "
                         f"{tuple(anchor_rows.shape)} and {tuple(others.shape)}")
    with torch.no_grad():  # in the body, not as a decorator: mutmut skips decorated functions
        fr = _frames(others.transpose(0, 1).double(), dtype=torch.float64)
        a = anchor_rows.double()
        norms = a.square().sum(dim=1, keepdim=True)
        n_other, n, _ = others.shape
        step = max(1, _VOLUME_STEP_ENTRIES // (n_other * n))
        out = torch.empty((a.shape[0], n), dtype=anchor_rows.dtype, device=anchor_rows.device)
        for s0 in range(0, a.shape[0], step):
            q = (a[s0 : s0 + step] @ fr.rows.T).view(-1, n_other, n)
            det = torch.addcmul(q.square().sum(dim=1).neg_(), norms[s0 : s0 + step], fr.det.unsqueeze(0))
            out[s0 : s0 + step] = det.clamp_min_(0.0).add_(float(eps)).sqrt_()
    return out
