"""Conflict statistics: how the alignment and uniformity forces on an embedding pull against each other.

Definitions (reconstructed in ``docs/method.md``, "Conflict statistics"; the paper's own code is not
public). Embeddings ``z_i^m`` are L2-normalised rows (``normalize=True`` normalises them first).

Multimodal InfoNCE, anchor a, sample i (:func:`infonce_conflicts`, computed from the formulas):

* The gradient of the anchor-side InfoNCE rows ``sum_{n != a} CE(S^{an}_{i,:}, i)``,
  ``S^{an} = Z_a Z_n^T / tau``, with respect to ``z_i^a`` is ``-(1/tau) (V_a - Phi_a)`` with the
  **alignment force** ``V_a = sum_{n != a} z_i^n`` and the **uniformity force**
  ``Phi_a = sum_{n != a} sum_j p_ij^n z_j^n``, ``p_ij^n = softmax_j(<z_i^a, z_j^n> / tau)``.
* **alignment-uniformity conflict** ``zeta_a = cos(V_a, Phi_a)`` and the **projection ratio**
  ``<Phi_a, V_a> / |V_a|^2`` (how much of the pull the push cancels along the pull's direction).
  The paper claims zeta tends to 1 as M grows.
* **intra-alignment conflict** ``chi_a = 1 - |mean_{n != a} u_n|`` ("1 - consensus magnitude") with
  ``u_n = z_i^n / |z_i^n|``, the unit alignment pull that modality n exerts on ``z_i^a`` (the n-th
  summand of ``V_a``). For unit positives with pairwise cosine rho,
  ``chi = 1 - sqrt(rho + (1 - rho)/(M - 1))`` (toy model of docs/method.md); for M = 2 it is 0 (one pull
  has no competitor). Also reported: ``chi_net`` with ``u_n`` the normalised *net* per-modality
  InfoNCE pull ``z_i^n - sum_j p_ij^n z_j^n``.

Any objective of ``objectives.build`` (:func:`gradient_conflicts`), through autograd:

* ``g_align``, ``g_unif``: gradients with respect to the embeddings of the sum of the terms whose
  role is "alignment", resp. "uniformity" (``ObjectiveOutput.terms`` / ``.roles``), projected on the
  tangent space of the sphere at each row (``tangent=True``; only tangent components move a
  normalised embedding). Per sample and modality: ``cos(g_align, g_unif)`` and the angle in degrees.
  For InfoNCE ``g_align ~ -V/tau`` and ``g_unif ~ +Phi/tau``, so a strong conflict (zeta -> 1) shows
  here as a cosine near **-1** (angle near 180 degrees).
* **per-modality alignment pulls** on the anchor, defined counterfactually so that any objective
  works: ``pull_n = g_align_a(Z) - g_align_a(Z with Z_n replaced by a detached copy of Z_a)``, the part
  of the anchor's alignment gradient that disappears when modality n is perfectly aligned with the
  anchor. For pairwise-additive alignment terms (anchor, all-pairs, InfoNCE's positive logits) this
  recovers each pair's (tangential) gradient exactly and ``sum_n pull_n = g_align_a`` (the reported
  ``pull_additivity_residual = |g_align_a - sum_n pull_n| / |g_align_a|`` is ~0); for coupled terms
  (Gram volume, Symile) the residual says how far the decomposition is from additive. With
  ``tangent=False`` the counterfactual also changes the radial component (e.g. InfoNCE's positive
  logit then gives ``-(z^n - z^a)/tau`` instead of ``-z^n/tau``), so use the default for pulls.
  Statistics: the cosine between every two pulls, and ``chi_grad = 1 - |mean_n pull_n / |pull_n||``.
* with ``params``: the cosine between the flattened parameter gradients of the two parts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from harness.instruments._inputs import check_anchor, checked_modalities

__all__ = ["gradient_conflicts", "infonce_conflicts", "role_gradients", "summarize"]

_EPS = 1e-12
_ROW_BLOCK_ELEMS = 1 << 22


def summarize(values: Any) -> dict[str, float]:
    """``mean, std`` (sample std, ddof=1; 0 for one value), ``median, q05, q25, q75, q95`` and ``n``.

    Non-finite values (NaN marks an undefined cosine, e.g. a zero gradient) are dropped; ``n`` counts
    the values used. With no finite value every statistic is NaN and ``n = 0``.
    """
    if isinstance(values, Tensor):
        arr = values.detach().double().cpu().numpy().ravel()
    else:
        arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    keys = ("mean", "std", "median", "q05", "q25", "q75", "q95")
    if arr.size == 0:
        return {**{k: float("nan") for k in keys}, "n": 0}
    q05, q25, q50, q75, q95 = np.quantile(arr, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "median": float(q50),
        "q05": float(q05),
        "q25": float(q25),
        "q75": float(q75),
        "q95": float(q95),
        "n": int(arr.size),
    }


def _prepare(zs: Any, normalize: bool, detach: bool = True) -> list[Tensor]:
    return checked_modalities(zs, "zs", min_rows=1, paired=True, detach=detach, normalize=normalize, eps=_EPS)


def _cos(u: Tensor, v: Tensor) -> Tensor:
    """Row-wise cosine; NaN where either row is (numerically) zero."""
    nu, nv = u.norm(dim=-1), v.norm(dim=-1)
    cos = (u * v).sum(-1) / (nu * nv).clamp_min(_EPS)
    undefined = (nu <= _EPS) | (nv <= _EPS)
    return cos.clamp(-1.0, 1.0).masked_fill(undefined, float("nan"))


def _deg(cos: Tensor) -> Tensor:
    return torch.rad2deg(torch.arccos(cos))


# ----------------------------------------------------------------------------- InfoNCE, from the formulas


def _softmax_pull(za: Tensor, zn: Tensor, scale: float) -> Tensor:
    """``sum_j softmax_j(<za_i, zn_j> * scale) zn_j`` for every row i, row-chunked."""
    step = max(1, _ROW_BLOCK_ELEMS // zn.shape[0])
    return torch.cat(
        [torch.softmax((za[s : s + step] @ zn.T) * scale, dim=-1) @ zn for s in range(0, za.shape[0], step)]
    )


def _infonce_one_anchor(z: list[Tensor], a: int, scale: float) -> dict[str, Tensor]:
    others = [n for n in range(len(z)) if n != a]
    phis = [_softmax_pull(z[a], z[n], scale) for n in others]
    v = torch.stack([z[n] for n in others]).sum(0)
    phi = torch.stack(phis).sum(0)
    zeta = _cos(v, phi)
    proj = (phi * v).sum(-1) / (v * v).sum(-1).clamp_min(_EPS)
    units = torch.stack([F.normalize(z[n], dim=-1, eps=_EPS) for n in others])
    chi = 1.0 - units.mean(0).norm(dim=-1)
    nets = torch.stack([F.normalize(z[n] - p, dim=-1, eps=_EPS) for n, p in zip(others, phis)])
    chi_net = 1.0 - nets.mean(0).norm(dim=-1)
    return {"zeta": zeta, "projection_ratio": proj, "chi": chi, "chi_net": chi_net}


def infonce_conflicts(
    zs: Sequence[Tensor] | Tensor,
    temperature: float,
    anchor: int | None = 0,
    normalize: bool = True,
) -> dict[str, Any]:
    """Per-sample InfoNCE conflict statistics (module docstring): zeta, projection ratio, chi, chi_net.

    Args:
        zs: M >= 2 paired (B, d) tensors or one (M, B, d) tensor.
        temperature: tau > 0 of the logits ``<z_i^a, z_j^n> / tau``.
        anchor: the anchor a; ``None`` computes every modality as anchor.
        normalize: L2-normalise rows first (the statistics assume unit rows).

    Returns ``{"zeta", "projection_ratio", "chi", "chi_net"}`` as tensors of shape (B,) (or (M, B)
    with ``anchor=None``), ``"summary"``: ``{name: summarize(values)}``, and ``"anchor"``,
    ``"temperature"``, ``"M"``, ``"B"``.
    """
    with torch.no_grad():  # statistics of the embeddings, never part of a training graph
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0
        ):
            raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")
        z = _prepare(zs, normalize)
        n_mod = len(z)
        check_anchor(anchor, n_mod, allow_none=True)
        anchors = list(range(n_mod)) if anchor is None else [anchor]
        per = [_infonce_one_anchor(z, a, 1.0 / float(temperature)) for a in anchors]
        keys = ("zeta", "projection_ratio", "chi", "chi_net")
        out: dict[str, Any] = {}
        for k in keys:
            out[k] = torch.stack([p[k] for p in per]) if anchor is None else per[0][k]
        out["summary"] = {k: summarize(out[k]) for k in keys}
        out.update(anchor=anchor, temperature=float(temperature), M=n_mod, B=z[0].shape[0])
        return out


# ----------------------------------------------------------------------------- any objective, via autograd


def _role_part(output: Any, role: str) -> Tensor | None:
    names = [k for k, r in output.roles.items() if r == role and k in output.terms]
    if not names:
        return None
    return torch.stack([output.terms[k] for k in names]).sum()


def _grads(part: Tensor | None, inputs: Sequence[Tensor]) -> list[Tensor]:
    if part is None or not part.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    gs = torch.autograd.grad(part, list(inputs), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(gs, inputs)]


def _tangent(g: Tensor, z: Tensor) -> Tensor:
    u = F.normalize(z.detach(), dim=-1, eps=_EPS)
    return g - (g * u).sum(-1, keepdim=True) * u


def role_gradients(
    objective: Any,
    zs: Sequence[Tensor] | Tensor,
    roles: Sequence[str] = ("alignment", "uniformity"),
    tangent: bool = True,
) -> dict[str, list[Tensor]]:
    """Gradients of each role's part of ``objective(zs)`` with respect to every modality's embeddings.

    The inputs are detached copies (nothing flows back into ``zs``). A role with no term gives zeros.
    ``tangent=True`` projects each row's gradient on the tangent space of the sphere at that row.
    """
    leaves = [z.detach().clone().requires_grad_(True) for z in _prepare(zs, normalize=False)]
    out = objective(leaves)
    result = {}
    for role in roles:
        gs = _grads(_role_part(out, role), leaves)
        result[role] = [_tangent(g, z) if tangent else g for g, z in zip(gs, leaves)]
    return result


def gradient_conflicts(
    objective: Any,
    zs: Sequence[Tensor] | Tensor,
    params: Iterable[Tensor] | None = None,
    anchor: int = 0,
    tangent: bool = True,
) -> dict[str, Any]:
    """Conflict statistics of any objective with ``.terms`` and ``.roles`` (module docstring).

    Args:
        objective: callable ``objective(list_of_M_tensors)`` returning an object with ``loss``,
            ``terms`` (weighted, ``loss == sum(terms)``) and ``roles`` (term -> role), e.g.
            ``objectives.build("unialign")``.
        zs: M paired (B, d) embeddings (unit rows expected). For the embedding statistics detached
            copies are used; with ``params`` they must be the encoders' outputs (graph attached).
        params: optional encoder parameters; adds the cosine of the flattened parameter gradients of
            the alignment and uniformity parts.
        anchor: whose per-modality alignment pulls are decomposed.
        tangent: project embedding gradients on the sphere's tangent space.

    Returns tensors ``cos_align_unif`` and ``angle_align_unif_deg`` (M, B), ``grad_norm_alignment``
    and ``grad_norm_uniformity`` (M, B), ``pulls`` (M-1, B, d; rows follow ``pull_modalities``),
    ``pull_cos`` and ``pull_angle_deg`` (P, B) for the pairs ``pull_pairs``, ``chi_grad`` (B,),
    ``pull_additivity_residual`` (B,); ``summary`` (summaries of the anchor's cosine and angle, of all
    modalities' cosines, of the pull cosines, chi_grad and the residual); ``missing_roles``; with
    ``params`` also ``param_cos_align_unif``, ``param_angle_align_unif_deg`` and the two norms.
    NaN marks an undefined cosine (a zero gradient, e.g. a modality without a uniformity term).
    """
    z = _prepare(zs, normalize=False, detach=False)
    n_mod = len(z)
    check_anchor(anchor, n_mod, allow_none=False)
    result: dict[str, Any] = {}

    leaves = [x.detach().clone().requires_grad_(True) for x in z]
    out = objective(leaves)
    parts = {role: _role_part(out, role) for role in ("alignment", "uniformity")}
    result["missing_roles"] = [r for r, p in parts.items() if p is None]
    g = {}
    for role, part in parts.items():
        gs = _grads(part, leaves)
        g[role] = torch.stack([_tangent(x, l) if tangent else x for x, l in zip(gs, leaves)]).detach()
    cos = _cos(g["alignment"], g["uniformity"])
    result["cos_align_unif"] = cos
    result["angle_align_unif_deg"] = _deg(cos)
    result["grad_norm_alignment"] = g["alignment"].norm(dim=-1)
    result["grad_norm_uniformity"] = g["uniformity"].norm(dim=-1)

    # counterfactual per-modality alignment pulls on the anchor
    others = [n for n in range(n_mod) if n != anchor]
    total = g["alignment"][anchor]
    pulls = []
    for n in others:
        swapped = [x.detach().clone().requires_grad_(True) for x in z]
        swapped[n] = z[anchor].detach().clone().requires_grad_(True)
        part = _role_part(objective(swapped), "alignment")
        ga = _grads(part, [swapped[anchor]])[0]
        ga = _tangent(ga, swapped[anchor]) if tangent else ga
        pulls.append(total - ga.detach())
    pull = torch.stack(pulls)  # (M-1, B, d)
    pairs = [(i, j) for i in range(len(others)) for j in range(i + 1, len(others))]
    if pairs:
        pull_cos = torch.stack([_cos(pull[i], pull[j]) for i, j in pairs])
    else:
        pull_cos = total.new_zeros((0, total.shape[0]))
    units = pull / pull.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    result["pulls"] = pull
    result["pull_modalities"] = others
    result["pull_pairs"] = [(others[i], others[j]) for i, j in pairs]
    result["pull_cos"] = pull_cos
    result["pull_angle_deg"] = _deg(pull_cos)
    result["chi_grad"] = 1.0 - units.mean(0).norm(dim=-1)
    residual = (total - pull.sum(0)).norm(dim=-1) / total.norm(dim=-1).clamp_min(_EPS)
    result["pull_additivity_residual"] = residual

    if params is not None:
        params = [p for p in params]
        if not params:
            raise ValueError("params is empty")
        out_p = objective(list(z))
        flat = {}
        for role in ("alignment", "uniformity"):
            part = _role_part(out_p, role)
            gs = _grads(part, params)
            flat[role] = torch.cat([x.reshape(-1) for x in gs]).detach()
        pc = _cos(flat["alignment"][None], flat["uniformity"][None])[0]
        result["param_cos_align_unif"] = float(pc)
        result["param_angle_align_unif_deg"] = float(_deg(pc))
        result["param_grad_norm_alignment"] = float(flat["alignment"].norm())
        result["param_grad_norm_uniformity"] = float(flat["uniformity"].norm())

    result["summary"] = {
        "cos_align_unif_anchor": summarize(cos[anchor]),
        "angle_align_unif_deg_anchor": summarize(result["angle_align_unif_deg"][anchor]),
        "cos_align_unif_all": summarize(cos),
        "pull_cos": summarize(pull_cos),
        "chi_grad": summarize(result["chi_grad"]),
        "pull_additivity_residual": summarize(result["pull_additivity_residual"]),
    }
    result.update(anchor=anchor, M=n_mod, B=z[0].shape[0])
    return result
