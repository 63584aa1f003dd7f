"""Small batches of the InfoNCE family in one autograd node: normalisation, every pair block, both
terms and their gradients (per-operator dispatch dominates below a few hundred rows)."""

from __future__ import annotations
import math
from collections.abc import Sequence
import torch
from torch import Tensor
from objectives.kernels.forms import _refuse_double_backward
from objectives.kernels.lse import _EXP_LIMIT

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
_small_plans: dict = {}


def _small_plan(pairs: tuple[tuple[int, int], ...], batch: int, scale: float, dtype: torch.dtype,
                device: torch.device) -> tuple:
    """The small path's groups (m, partners) and constants, cached per call signature (A the (M, M)
    pair adjacency, P the number of pairs, c = scale / (B P)): the alignment's -c A, its gradient
    -c (A + A^T), and c / 2. ``pairs`` holds every modality (M = max index + 1)."""
    key = (pairs, batch, scale, dtype, device)
    plan = _small_plans.get(key)
    if plan is None:
        if len(set(pairs)) != len(pairs):  # a repeated pair's block gradient would be written, not added
            raise ValueError(f"small_contrastive needs distinct pairs, got {pairs!r}")
        if len(_small_plans) > 256:
            _small_plans.clear()
        n_mod = 1 + max(max(p) for p in pairs)
        adj = torch.zeros(n_mod, n_mod, dtype=torch.float64)
        groups: dict[int, list[int]] = {}
        for m, n in pairs:
            adj[m, n] += 1.0
            groups.setdefault(m, []).append(n)
        unit = scale / (batch * len(pairs))
        plan = (tuple((m, tuple(p)) for m, p in groups.items()), (-unit * adj).to(dtype=dtype, device=device),
                (-unit * (adj + adj.T)).to(dtype=dtype, device=device), 0.5 * unit)
        _small_plans[key] = plan
    return plan


def _small_blocks(u: Tensor, scale: float, groups: tuple, half_unit: float) -> tuple[Tensor, Tensor]:
    """Uniformity and its gradient w.r.t. u from one block u_m @ u_partners^T per group (pairs
    sharing their first modality), both softmax directions from it: P B^2 d work. The first
    group's GEMMs write the gradient buffer (pair lists start with the group that covers every
    modality: (0, (1, .., M - 1)) or (a, others)); later groups add to it."""
    M, B, d = u.shape
    if M == 2 and len(groups) == 1:  # the one pair (0, 1) or (1, 0)
        return _pair_block(u, scale, groups[0][0], half_unit)
    du = torch.empty_like(u) if len(groups[0][1]) == M - 1 else torch.zeros_like(u)
    fresh = len(groups[0][1]) == M - 1
    sums = []
    for m, partners in groups:
        nb, first = len(partners), partners[0]
        consecutive = partners == tuple(range(first, first + nb))
        um = u[m]
        kf = u[first : first + nb].view(nb * B, d) if consecutive else torch.cat([u[n] for n in partners])
        e = torch.mm(um, kf.t()).mul_(scale).exp_()
        sums_rc = torch.cat([e.view(B, nb, B).sum(2).view(-1), e.sum(0)])  # row sums (B, nb), column sums (nb B)
        inv_rc = torch.div(half_unit, sums_rc)
        sums.append(sums_rc.log_().sum())
        # gradient w.r.t. the block: E (c / 2) (1 / rows_i + 1 / cols_j)
        e.view(B, nb, B).mul_(inv_rc[: B * nb].view(B, nb, 1) + inv_rc[B * nb :].view(1, nb, B))
        if fresh:
            torch.mm(e, kf, out=du[m])
        else:
            du[m].addmm_(e, kf)
        if consecutive and fresh:
            torch.mm(e.t(), um, out=du[first : first + nb].view(nb * B, d))
        elif consecutive:
            du[first : first + nb].view(nb * B, d).addmm_(e.t(), um)
        else:
            dk = torch.mm(e.t(), um).view(nb, B, d)
            if fresh:
                du[list(partners)] = dk
            else:
                du[list(partners)] += dk
        fresh = False
    unif = (sums[0] if len(sums) == 1 else torch.stack(sums).sum()) * (half_unit / scale)
    return unif, du


def _pair_block(u: Tensor, scale: float, m: int, half_unit: float) -> tuple[Tensor, Tensor]:
    """:func:`_small_blocks` for two modalities (the one pair (m, 1 - m)) in a third fewer
    operations: at B <= 64 each one is a measurable share of the call."""
    B = u.shape[1]
    du = torch.empty_like(u)
    parts, grads = u.unbind(0), du.unbind(0)
    um, un = parts[m], parts[1 - m]
    e = torch.mm(um, un.t()).mul_(scale).exp_()
    sums_rc = torch.cat([e.sum(1), e.sum(0)])  # row sums, column sums
    rows, cols = torch.div(half_unit, sums_rc).view(2, B).unbind(0)
    unif = sums_rc.log_().sum() * (half_unit / scale)
    e.mul_(rows.unsqueeze(1) + cols)  # gradient w.r.t. the block: E (c / 2) (1 / rows_i + 1 / cols_j)
    torch.mm(e, un, out=grads[m])
    torch.mm(e.t(), um, out=grads[1 - m])
    return unif, du


class _SmallContrastive(torch.autograd.Function):
    """(alignment, uniformity) of the InfoNCE family for raw rows xs (M tensors (B, d) or one
    (M, B, d)): u = x / max(|x|, eps), s = scale u_m . u_n over the pairs P (``plan``: see
    :func:`_small_plan`): alignment = -1 / (B |P|) sum_pairs sum_i s(m_i, n_i), uniformity =
    1 / (B |P|) sum_pairs 1/2 (sum_i lse_j s(m_i, n_j) + sum_j lse_i s(m_i, n_j)). Needs scale
    |u|^2 small enough that exp(s) stays in range (the caller checks). A row below eps gets the
    gradient g / eps, as with ``F.normalize``. With a ``weight`` (not None) the outputs are (loss,
    alignment, weight * uniformity), loss their sum, so that a caller needs no separate sum node."""

    @staticmethod
    def forward(ctx, scale: float, plan: tuple, eps: float, weight: float | None, *xs):
        groups, w_align, w_align_grad, half_unit = plan
        one = len(xs) == 1
        z = xs[0] if one else torch.stack(xs)
        M, B, d = z.shape
        norms = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
        projected = norms >= eps  # F.normalize: a row below eps is only scaled (g / eps), not projected
        inv = norms.clamp_min_(eps).reciprocal_()
        u = z * inv
        flat = u.view(M, B * d)
        # sum over pairs of u_m . u_n = <u, A u>, and its gradient (A + A^T) u (constants folded in)
        align = torch.vdot(u.view(-1), torch.mm(w_align, flat).view(-1))
        du_align = torch.mm(w_align_grad, flat).view(M, B, d)
        unif, du_unif = _small_blocks(u, scale, groups, half_unit)
        ctx.one = one
        ctx.weight = weight
        ctx.save_for_backward(u, inv, projected, du_align, du_unif)
        if weight is None:
            return align, unif
        ctx.set_materialize_grads(False)  # the unused outputs' gradients stay None, no zero tensors
        unif = unif if weight == 1.0 else unif * weight
        return align + unif, align, unif

    @staticmethod
    def backward(ctx, *grads):
        _refuse_double_backward()
        u, inv, projected, du_align, du_unif = ctx.saved_tensors
        if ctx.weight is None:
            g_align, g_unif = grads
        else:
            g_loss, g_align, g_unif = grads
            g_align = g_loss if g_align is None else (g_align if g_loss is None else g_align + g_loss)
            g_unif = g_loss if g_unif is None else (g_unif if g_loss is None else g_unif + g_loss)
            if g_align is None or g_unif is None:  # only the uniformity (or only the alignment) was used
                zero = torch.zeros((), dtype=u.dtype, device=u.device)
                g_align, g_unif = (zero if g_align is None else g_align), (zero if g_unif is None else g_unif)
            if ctx.weight != 1.0:
                g_unif = g_unif * ctx.weight
        du = (du_unif * g_unif).addcmul_(du_align, g_align)
        # through u = x / max(|x|, eps): (g - u <g, u>) / |x|, and g / eps for a row below eps
        dot = torch.linalg.vecdot(du, u).unsqueeze(-1).mul_(projected)
        dx = torch.addcmul(du, u, dot, value=-1.0).mul_(inv)
        return (None, None, None, None) + ((dx,) if ctx.one else dx.unbind(0))


def small_contrastive(xs: Sequence[Tensor] | Tensor, pairs: tuple[tuple[int, int], ...], scale: float,
                      eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """(alignment, uniformity) of :func:`objectives._contrastive.contrastive_parts` for raw rows
    (normalised inside, ``F.normalize`` semantics) in one autograd node: the small-batch path.

    ``xs``: M tensors (B, d) or one (M, B, d), float32 or float64, B <= :data:`SMALL_MAX_BATCH`;
    ``pairs`` a tuple of (m, n); ``scale`` a Python float with scale <= _EXP_LIMIT - log(M B) (no
    shift needed for unit rows).
    """
    first = xs if isinstance(xs, Tensor) else xs[0]
    key = (pairs, first.shape[-2], scale, first.dtype, first.device)
    plan = _small_plans.get(key) or _small_plan(*key)
    return _SmallContrastive.apply(scale, plan, eps, None, *((xs,) if first is xs else xs))


def small_contrastive_loss(xs: Sequence[Tensor] | Tensor, pairs: tuple[tuple[int, int], ...], scale: float,
                           weight: float = 1.0, eps: float = 1e-12) -> tuple[Tensor, Tensor, Tensor]:
    """``(alignment + weight * uniformity, alignment, weight * uniformity)`` of :func:`small_contrastive`
    from the same one node: the loss needs no separate sum (one autograd node forward and backward
    fewer per call, what a small batch's time is made of)."""
    first = xs if isinstance(xs, Tensor) else xs[0]
    key = (pairs, first.shape[-2], scale, first.dtype, first.device)
    plan = _small_plans.get(key) or _small_plan(*key)
    return _SmallContrastive.apply(scale, plan, eps, float(weight), *((xs,) if first is xs else xs))


def small_contrastive_fits(xs: object, scale: object) -> tuple[int, int] | None:
    """(M, B) when ``xs`` (the raw embeddings of a loss call) and ``scale`` suit
    :func:`small_contrastive`: M >= 2 float32 / float64 tensors (B, d) of one shape, dtype and
    device (or one (M, B, d)) with B <= SMALL_MAX_BATCH, and a Python-float scale that keeps
    exp(scale u.v) in range. Else None (for every malformed input too, which the general path then
    reports)."""
    if type(scale) is not float or torch.compiler.is_compiling():
        return None
    if isinstance(xs, Tensor):
        if xs.dim() != 3:
            return None
        n_mod, batch, dim = xs.shape
        dtype = xs.dtype
    elif isinstance(xs, (list, tuple)) and len(xs) >= 2:
        first = xs[0]
        if not isinstance(first, Tensor) or first.dim() != 2:
            return None
        shape, dtype, device = first.shape, first.dtype, first.device
        for t in xs[1:]:
            if not isinstance(t, Tensor) or t.shape != shape or t.dtype != dtype or t.device != device:
                return None
        n_mod, (batch, dim) = len(xs), shape
    else:
        return None
    limit = _EXP_LIMIT.get(dtype)
    if (n_mod >= 2 and 1 <= batch <= SMALL_MAX_BATCH and dim >= 1 and limit is not None
            and 0.0 < scale <= limit - math.log(n_mod * batch)):
        return n_mod, batch
    return None
