"""harness.instruments.conflicts: toy-model values, cross-checks against autograd, and the objectives library."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import objectives
from harness.instruments.conflicts import gradient_conflicts, infonce_conflicts, role_gradients, summarize

F64 = torch.float64


def unit(x):
    return F.normalize(x, dim=-1)


def rand_unit(M, B, d, gen):
    return [unit(torch.randn(B, d, generator=gen, dtype=F64)) for _ in range(M)]


def toy_chi(rho, M):
    return 1.0 - math.sqrt(rho + (1.0 - rho) / (M - 1))


# ----------------------------------------------------------------------------- summarize


def test_summarize_known_values_and_nan_handling():
    s = summarize(torch.arange(1, 101, dtype=F64))
    assert s["n"] == 100 and s["mean"] == pytest.approx(50.5) and s["median"] == pytest.approx(50.5)
    assert s["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert s["q05"] == pytest.approx(np.quantile(np.arange(1, 101), 0.05))
    assert s["q95"] == pytest.approx(np.quantile(np.arange(1, 101), 0.95))
    assert s["q25"] < s["median"] < s["q75"]
    s = summarize([1.0, float("nan"), 3.0])
    assert s["n"] == 2 and s["mean"] == 2.0
    empty = summarize([])
    assert empty["n"] == 0 and math.isnan(empty["mean"])


# ----------------------------------------------------------------------------- chi: toy model


def toy_embeddings(M, B, d, rho, gen, exact):
    """Anchor plus M-1 unit positives per sample with pairwise cosine rho (exactly, or on average)."""
    anchor = unit(torch.randn(B, d, generator=gen, dtype=F64))
    if exact:
        # per sample: orthonormal c, e_1..e_{M-1}; z^n = sqrt(rho) c + sqrt(1-rho) e_n
        q = torch.linalg.qr(torch.randn(B, d, M, generator=gen, dtype=F64))[0]  # (B, d, M)
        pos = [math.sqrt(rho) * q[:, :, 0] + math.sqrt(1 - rho) * q[:, :, n] for n in range(1, M)]
    else:
        c = unit(torch.randn(B, d, generator=gen, dtype=F64))
        pos = [unit(math.sqrt(rho) * c + math.sqrt(1 - rho) * unit(torch.randn(B, d, generator=gen, dtype=F64)))
               for _ in range(M - 1)]
    return [anchor, *pos]


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.7])
def test_chi_toy_model_exact_construction(rho):
    gen = torch.Generator().manual_seed(int(rho * 10))
    for M in range(2, 9):
        zs = toy_embeddings(M, 64, 16, rho, gen, exact=True)
        chi = infonce_conflicts(zs, 0.1, anchor=0)["chi"]
        assert torch.allclose(chi, torch.full_like(chi, toy_chi(rho, M)), atol=1e-10)
    # M = 2 edge case: a single pull has no competitor, chi = 1 - sqrt(rho + 1 - rho) = 0


@pytest.mark.parametrize("rho", [0.2, 0.6])
def test_chi_toy_model_within_sampling_error(rho):
    """Random positives whose pairwise cosines are rho only on average (d = 128: per-pair cosine noise
    ~0.09). The mean chi over B = 300 samples matches the formula within 4 standard errors plus 0.005
    for the bias of the non-linear map (5 seeds: worst deviation 40 % of this tolerance). Replacing
    (M - 1) by M in the formula would miss by 0.09 at M = 3."""
    gen = torch.Generator().manual_seed(40 + int(rho * 10))
    for M in range(2, 9):
        zs = toy_embeddings(M, 300, 128, rho, gen, exact=False)
        chi = infonce_conflicts(zs, 0.1, anchor=0)["chi"]
        se = float(chi.std()) / math.sqrt(chi.numel())
        assert abs(float(chi.mean()) - toy_chi(rho, M)) < 4 * se + 0.005, (M, float(chi.mean()), toy_chi(rho, M))
        if M == 2:
            assert torch.allclose(chi, torch.zeros_like(chi), atol=1e-12)


def test_chi_grows_with_m_and_has_positive_lower_bound():
    gen = torch.Generator().manual_seed(3)
    chis = [float(infonce_conflicts(toy_embeddings(M, 64, 32, 0.3, gen, True), 0.1)["summary"]["chi"]["mean"])
            for M in range(2, 9)]
    assert all(b > a for a, b in zip(chis, chis[1:]))
    assert chis[-1] < 1 - math.sqrt(0.3)  # the M -> infinity limit


# ----------------------------------------------------------------------------- zeta


def test_zeta_and_projection_ratio_match_autograd():
    """Phi is recovered from the autograd gradient of the anchor-side InfoNCE rows,
    grad = -(1/tau)(V - Phi), and zeta / projection ratio recomputed from it."""
    gen = torch.Generator().manual_seed(4)
    M, B, d, tau = 4, 20, 8, 0.2
    zs = rand_unit(M, B, d, gen)
    za = zs[0].clone().requires_grad_(True)
    loss = sum(F.cross_entropy(za @ zs[n].T / tau, torch.arange(B), reduction="sum") for n in range(1, M))
    (grad,) = torch.autograd.grad(loss, za)
    v = sum(zs[n] for n in range(1, M))
    phi = v + tau * grad
    ref_zeta = F.cosine_similarity(v, phi, dim=-1)
    ref_proj = (phi * v).sum(-1) / (v * v).sum(-1)
    out = infonce_conflicts(zs, tau, anchor=0)
    assert torch.allclose(out["zeta"], ref_zeta, atol=1e-10)
    assert torch.allclose(out["projection_ratio"], ref_proj, atol=1e-10)
    every = infonce_conflicts(zs, tau, anchor=None)
    assert every["zeta"].shape == (M, B) and torch.allclose(every["zeta"][0], ref_zeta, atol=1e-10)


def test_zeta_versus_m():
    """Measured before writing the assertions (d=64; B=256 all anchors and B=200 anchor 0; 3-4 seeds):

    * random unit embeddings: zeta ~ 0.00-0.03 at tau = 0.07 and ~0.04 at tau = 0.5, flat or slowly
      *decreasing* in M (2 -> 8). The paper's claim (zeta -> 1 as M grows) does NOT show on random
      data: with unrelated positives the uniformity force is uncorrelated with the alignment force.
    * "trained-like" embeddings (every modality = shared unit vector + isotropic noise of norm ~1):
      zeta rises monotonically with M, e.g. 0.64, 0.69, 0.72, 0.73, 0.74, 0.74, 0.74 (anchor 0,
      tau = 0.2, M = 2..8) -- the claimed direction, with a modest size that saturates.
    """
    gen = torch.Generator().manual_seed(0)
    B, d = 200, 64
    rand = rand_unit(8, B, d, gen)
    z_rand = [infonce_conflicts(rand[:M], 0.07, anchor=0)["summary"]["zeta"]["mean"] for M in range(2, 9)]
    assert all(abs(z) < 0.05 for z in z_rand), z_rand
    assert z_rand[-1] - z_rand[0] < 0.03, z_rand  # no rise on random data

    c = unit(torch.randn(B, d, generator=gen, dtype=F64))
    trained = [unit(c + torch.randn(B, d, generator=gen, dtype=F64) / math.sqrt(d)) for _ in range(8)]
    z_tr = [infonce_conflicts(trained[:M], 0.2, anchor=0)["summary"]["zeta"]["mean"] for M in range(2, 9)]
    print("zeta vs M=2..8, random:", [round(z, 3) for z in z_rand], "trained-like:", [round(z, 3) for z in z_tr])
    assert all(b > a - 0.005 for a, b in zip(z_tr, z_tr[1:])), z_tr
    assert z_tr[-1] - z_tr[0] > 0.07, z_tr


# ----------------------------------------------------------------------------- gradient_conflicts


class RowInfoNCE(torch.nn.Module):
    """TEST FIXTURE (not a library objective): anchor-side InfoNCE rows split into the positive-logit
    (alignment) and log-sum-exp (uniformity) parts, no normalisation, following the objectives
    contract (``loss``, ``terms``, ``roles``). Its gradients are -(V/tau) and +(Phi/tau) exactly."""

    def __init__(self, tau):
        super().__init__()
        self.tau = tau

    def forward(self, zs):
        za = zs[0]
        align = -sum((za * z).sum() for z in zs[1:]) / self.tau
        unif = sum(torch.logsumexp(za @ z.T / self.tau, dim=1).sum() for z in zs[1:])
        out = type("Out", (), {})()
        out.terms = {"align": align, "unif": unif}
        out.roles = {"align": "alignment", "unif": "uniformity"}
        out.loss = align + unif
        return out


def test_gradient_conflicts_recovers_minus_zeta_on_the_row_infonce_fixture():
    gen = torch.Generator().manual_seed(5)
    zs = rand_unit(4, 24, 8, gen)
    tau = 0.3
    g = gradient_conflicts(RowInfoNCE(tau), zs, anchor=0, tangent=False)
    zeta = infonce_conflicts(zs, tau, anchor=0)["zeta"]
    assert torch.allclose(g["cos_align_unif"][0], -zeta, atol=1e-10)
    assert torch.allclose(g["angle_align_unif_deg"][0], torch.rad2deg(torch.arccos(-zeta)), atol=1e-6)
    # pulls (tangent space, the default): the positive logit of modality n pulls with -P z^n / tau,
    # P the projector on the tangent space at z^a; they add up to the anchor's alignment gradient
    g = gradient_conflicts(RowInfoNCE(tau), zs, anchor=0)
    za = zs[0]
    units = []
    for k, n in enumerate(g["pull_modalities"]):
        tangential = zs[n] - (zs[n] * za).sum(-1, keepdim=True) * za
        assert torch.allclose(g["pulls"][k], -tangential / tau, atol=1e-10)
        units.append(unit(tangential))
    assert float(g["pull_additivity_residual"].max()) < 1e-10
    assert torch.allclose(g["chi_grad"], 1 - torch.stack(units).mean(0).norm(dim=-1), atol=1e-10)


def test_unialign_anchor_alignment_pulls_are_pairwise():
    gen = torch.Generator().manual_seed(6)
    M, B, d = 4, 16, 6
    zs = rand_unit(M, B, d, gen)
    obj = objectives.build("unialign", anchor=0, bandwidth=0.5, lam_align=2.0)
    g = gradient_conflicts(obj, zs, anchor=0, tangent=False)
    for k, n in enumerate(g["pull_modalities"]):
        expected = 2.0 * 2.0 * (zs[0] - zs[n]) / (B * (M - 1))  # d/dz^a of lam |z^a - z^n|^2 / (B (M-1))
        # the objective normalises its inputs: on unit rows the Jacobian of normalize is the tangent projector
        expected = expected - (expected * zs[0]).sum(-1, keepdim=True) * zs[0]
        assert torch.allclose(g["pulls"][k], expected, atol=1e-10)
    assert float(g["pull_additivity_residual"].max()) < 1e-8
    assert g["pull_cos"].shape == (3, B) and g["missing_roles"] == []


def test_unialign_uniformity_gradient_on_anchor_ignores_other_modalities():
    gen = torch.Generator().manual_seed(7)
    M, B, d = 4, 32, 16
    zs = rand_unit(M, B, d, gen)
    replaced = [zs[0]] + rand_unit(M - 1, B, d, gen)
    each = objectives.build("unialign", uniformity="each", bandwidth=0.5)
    g1 = role_gradients(each, zs)["uniformity"][0]
    g2 = role_gradients(each, replaced)["uniformity"][0]
    assert float(g1.abs().max()) > 1e-4
    assert torch.equal(g1, g2)
    # the re-coupled ablation (uniformity over the union) does depend on them: the check can fail
    union = objectives.build("unialign", uniformity="union", bandwidth=0.5)
    u1 = role_gradients(union, zs)["uniformity"][0]
    u2 = role_gradients(union, replaced)["uniformity"][0]
    assert float((u1 - u2).abs().max()) > 0.1 * float(u1.abs().max())


def test_gradient_conflicts_runs_on_library_objectives():
    gen = torch.Generator().manual_seed(8)
    zs = rand_unit(3, 16, 8, gen)
    for name in ("infonce", "infonce_anchor", "unialign", "align_uniform"):
        g = gradient_conflicts(objectives.build(name), zs)
        assert g["cos_align_unif"].shape == (3, 16)
        assert torch.isfinite(g["cos_align_unif"]).all(), name
        assert g["summary"]["cos_align_unif_anchor"]["n"] == 16


def test_gradient_conflicts_m2_and_missing_roles():
    gen = torch.Generator().manual_seed(9)
    zs = rand_unit(2, 10, 4, gen)
    g = gradient_conflicts(objectives.build("unialign", bandwidth=0.5), zs)
    assert g["pull_cos"].shape == (0, 10)
    assert torch.allclose(g["chi_grad"], torch.zeros(10, dtype=F64), atol=1e-12)

    class OnlyOther(torch.nn.Module):  # TEST FIXTURE: a loss with no alignment / uniformity split
        def forward(self, zs):
            loss = sum((z ** 2).sum() for z in zs)
            out = type("Out", (), {})()
            out.loss, out.terms, out.roles = loss, {"all": loss}, {"all": "other"}
            return out

    g = gradient_conflicts(OnlyOther(), zs)
    assert sorted(g["missing_roles"]) == ["alignment", "uniformity"]
    assert torch.isnan(g["cos_align_unif"]).all() and g["summary"]["cos_align_unif_all"]["n"] == 0


def test_parameter_gradient_cosine():
    gen = torch.Generator().manual_seed(10)
    M, B, d_in, d = 3, 12, 5, 4
    encoders = [torch.nn.Linear(d_in, d).double() for _ in range(M)]
    xs = [torch.randn(B, d_in, generator=gen, dtype=F64) for _ in range(M)]
    zs = [enc(x) for enc, x in zip(encoders, xs)]
    params = [p for enc in encoders for p in enc.parameters()]
    obj = objectives.build("unialign", bandwidth=0.5)
    g = gradient_conflicts(obj, zs, params=params)
    out = obj([enc(x) for enc, x in zip(encoders, xs)])
    ga = torch.autograd.grad(out.part("alignment"), params, retain_graph=True)
    gu = torch.autograd.grad(out.part("uniformity"), params)
    fa, fu = torch.cat([x.reshape(-1) for x in ga]), torch.cat([x.reshape(-1) for x in gu])
    assert g["param_cos_align_unif"] == pytest.approx(float(F.cosine_similarity(fa, fu, dim=0)), abs=1e-10)
    assert g["param_grad_norm_alignment"] == pytest.approx(float(fa.norm()))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda zs: infonce_conflicts(zs, 0.0), "temperature.*0.0"),
        (lambda zs: infonce_conflicts(zs, True), "temperature.*True"),  # a bool is not a temperature
        (lambda zs: infonce_conflicts(zs, float("inf")), "temperature.*inf"),
        (lambda zs: infonce_conflicts(zs, 0.1, anchor=5), "anchor.*5"),
        (lambda zs: infonce_conflicts(zs[:1], 0.1), "M=2"),
        (lambda zs: infonce_conflicts([zs[0], zs[1][:, :2]], 0.1), r"zs\[1\]"),
        (lambda zs: infonce_conflicts([zs[0], zs[1] * float("nan")], 0.1), r"zs\[1\].*non-finite"),
        (lambda zs: gradient_conflicts(objectives.build("infonce"), zs, anchor=-1), "anchor.*-1"),
    ],
)
def test_bad_inputs(call, match):
    zs = rand_unit(3, 5, 4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=match):
        call(zs)


def test_infonce_conflicts_default_anchor_is_the_first_modality():
    zs = rand_unit(3, 6, 4, torch.Generator().manual_seed(4))
    default, first, second = infonce_conflicts(zs, 0.2), infonce_conflicts(zs, 0.2, anchor=0), \
        infonce_conflicts(zs, 0.2, anchor=1)
    assert default["anchor"] == 0 and default["B"] == 6 and default["M"] == 3
    for k in ("zeta", "projection_ratio", "chi", "chi_net"):
        assert torch.equal(default[k], first[k])
    assert not torch.allclose(default["zeta"], second["zeta"])
