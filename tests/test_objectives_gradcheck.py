"""torch.autograd.gradcheck (float64) for every objective, incl. the learnable temperature and
the chunked path; finiteness of values and gradients in float32 at the extreme settings
(temperature 0.01, bandwidth 0.05) and for degenerate inputs (identical / collinear tuples,
duplicated rows), where the sqrt(det + eps) of the volume terms needs its eps guard."""

import pytest
import torch
from reference_losses import make_zs
from torch.func import functional_call

import objectives


def _f(x):
    """float() of a tensor or number, without the requires_grad warning."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)

GRAD_CONFIGS = [
    ("infonce", {"temperature": 0.07}),
    ("infonce_anchor", {"temperature": 0.07, "anchor": 1}),
    ("infonce_reweighted", {"temperature": 0.07, "uniformity_weight": 0.5, "pairs": "all"}),
    ("infonce_reweighted", {"temperature": 0.07, "uniformity_weight": 2.0, "pairs": "anchor"}),
    ("dcl", {"temperature": 0.07, "pairs": "all"}),
    ("dcl", {"temperature": 0.07, "pairs": "anchor", "anchor": 2}),
    ("align_uniform", {}),
    ("cs_aligner", {"temperature": 0.07, "bandwidth": 0.5, "pairs": "anchor"}),
    ("cs_aligner", {"temperature": 0.07, "bandwidth": 0.5, "pairs": "all"}),
    ("gram", {"temperature": 0.07, "anchor": 0}),
    ("gram", {"temperature": 0.05, "anchor": 2, "label_smoothing": 0.1}),
    ("symile", {"temperature": 0.07, "negatives": "n_squared"}),
    ("unialign", {"bandwidth": 0.5, "centroid_bandwidth": 0.5}),
    ("unialign", {"uniformity": "union", "alignment": "centroid", "tuple": "both", "bandwidth": 0.5,
                  "centroid_bandwidth": 0.7}),
    ("unialign", {"uniformity": "anchor", "alignment": "all_pairs", "tuple": "centroid", "anchor": 2,
                  "bandwidth": 1.0, "centroid_bandwidth": 0.3, "renormalize_centroid": False,
                  "include_diagonal": True}),
    ("unialign", {"tuple": "volume", "bandwidth": 0.8, "lam_vol": 0.1, "vol_eps": 1e-4}),
]
# (bandwidth="median" is detached by design, so it is not gradcheck-able: the numerical
# Jacobian sees the median move; test_objectives_reference checks the detached gradient.)
TEMP_NAMES = {"infonce", "infonce_anchor", "infonce_reweighted", "dcl", "cs_aligner", "gram", "symile"}


def _ids(x):
    if isinstance(x, dict):
        return ",".join(f"{k}={v}" for k, v in x.items())
    return x if isinstance(x, str) else "-".join(map(str, x))


def _inputs(M=3, B=3, d=3, seed=0):
    return [z.detach().requires_grad_(True) for z in make_zs(M, B, d, seed=seed)]


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("name,params", GRAD_CONFIGS, ids=_ids)
def test_gradcheck_inputs(name, params, chunk_size):
    fn = objectives.build(name, **params, chunk_size=chunk_size)
    zs = _inputs()
    assert torch.autograd.gradcheck(lambda *z: fn(list(z)).loss, zs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name,params", [c for c in GRAD_CONFIGS if c[0] in TEMP_NAMES] +
                         [("symile", {"temperature": 0.07, "negatives": "n"})], ids=_ids)
def test_gradcheck_learnable_temperature(name, params):
    fn = objectives.build(name, **params, learnable_temperature=True)
    named = [(k, p) for k, p in fn.named_parameters() if p.requires_grad]
    assert len(named) == 1, f"{name}: expected exactly one learnable parameter, got {[k for k, _ in named]}"
    key, p0 = named[0]
    zs = _inputs()
    seeded = params.get("negatives") == "n"

    def f(p, *z):
        if seeded:
            torch.manual_seed(3)
        return functional_call(fn, {key: p}, (list(z),)).loss

    p = p0.detach().double().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (p, *zs), eps=1e-6, atol=1e-6, rtol=1e-5)
    # and the gradient reaches the module's own parameter
    fn.double()
    if seeded:
        torch.manual_seed(3)
    out = fn(zs)
    out.loss.backward()
    assert p0.grad is not None and torch.isfinite(p0.grad).all() and _f(p0.grad.abs()) > 0


def test_gradcheck_symile_n_fixed_seed():
    fn = objectives.build("symile", temperature=0.07, negatives="n")
    zs = _inputs(M=3, B=5)

    def f(*z):
        torch.manual_seed(5)
        return fn(list(z)).loss

    assert torch.autograd.gradcheck(f, zs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_stacked_input_and_normalize_false():
    fn = objectives.build("unialign", tuple="both", bandwidth=0.5, centroid_bandwidth=0.5)
    z = torch.stack([t.detach() for t in _inputs(M=4, B=3)]).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fn(x).loss, (z,), eps=1e-6, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- finiteness
EXTREME = [
    ("infonce", {"temperature": 0.01}),
    ("infonce_anchor", {"temperature": 0.01}),
    ("infonce_reweighted", {"temperature": 0.01, "uniformity_weight": 0.5, "pairs": "all"}),
    ("dcl", {"temperature": 0.01, "pairs": "all"}),
    ("align_uniform", {}),
    ("cs_aligner", {"temperature": 0.01, "bandwidth": 0.05, "pairs": "all"}),
    ("gram", {"temperature": 0.01}),
    ("gram", {"temperature": 0.01, "anchor": 2}),
    ("gram", {"temperature": 0.01, "label_smoothing": 0.1}),
    ("symile", {"temperature": 0.01, "negatives": "n_squared"}),
    ("symile", {"temperature": 0.01, "negatives": "n"}),
    ("unialign", {"tuple": "both", "bandwidth": 0.05, "centroid_bandwidth": 0.05}),
    ("unialign", {"tuple": "both", "uniformity": "union", "alignment": "centroid", "bandwidth": 0.05,
                  "centroid_bandwidth": 0.05, "renormalize_centroid": False}),
    ("unialign", {"tuple": "volume", "bandwidth": "median", "centroid_bandwidth": "median"}),
    ("unialign", {"tuple": "both", "bandwidth": "median", "centroid_bandwidth": "median"}),
]


def _degenerate(kind, M, B, d):
    g = torch.Generator().manual_seed(1)
    if kind == "random":
        return [torch.randn(B, d, generator=g) for _ in range(M)]
    if kind == "identical_modalities":  # every tuple collinear: det(G_i) = 0
        z = torch.randn(B, d, generator=g)
        return [z.clone() for _ in range(M)]
    if kind == "collinear_scaled":  # same directions, different norms and a sign flip
        z = torch.randn(B, d, generator=g)
        return [z * (m + 1) * (-1) ** m for m in range(M)]
    if kind == "duplicate_rows":  # every row of a modality identical: zero distances inside
        return [torch.randn(1, d, generator=g).repeat(B, 1) for _ in range(M)]
    if kind == "all_identical":
        z = torch.randn(1, d, generator=g).repeat(B, 1)
        return [z.clone() for _ in range(M)]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["random", "identical_modalities", "collinear_scaled", "duplicate_rows",
                                  "all_identical"])
@pytest.mark.parametrize("name,params", EXTREME, ids=_ids)
def test_float32_values_and_gradients_finite(name, params, kind):
    M, B, d = 3, 6, 8
    zs = [z.float().requires_grad_(True) for z in _degenerate(kind, M, B, d)]
    torch.manual_seed(0)
    out = objectives.build(name, **params)(zs)
    assert torch.isfinite(out.loss), f"{name} {kind}: loss {out.loss}"
    for k, v in out.terms.items():
        assert torch.isfinite(v), f"{name} {kind}: term {k} = {v}"
    grads = torch.autograd.grad(out.loss, zs)
    for m, g in enumerate(grads):
        assert torch.isfinite(g).all(), f"{name} {kind}: non-finite gradient wrt modality {m}"


@pytest.mark.parametrize("M", [2, 3, 6])
def test_volume_eps_guard_float64_identical(M):
    """Identical tuples: det(G) = 0 exactly in theory; with the eps guard the volume term is
    sqrt(eps) and its gradient finite (float64, gram and unialign volume)."""
    z = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    zs = [z.clone().requires_grad_(True) for _ in range(M)]
    out = objectives.build("unialign", tuple="volume", bandwidth=0.5, vol_eps=1e-6)(zs)
    assert abs(_f(out.terms["volume"].detach()) - 1e-3) < 1e-7
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(out.loss, zs))
    out = objectives.build("gram", temperature=0.07)(zs)
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(out.loss, zs))
