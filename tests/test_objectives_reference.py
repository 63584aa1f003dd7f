"""The loss library against the naive loop references in reference_losses.py.

Values of the loss and of every named term, the gradients with respect to the raw (un-normalised)
inputs, ``loss == sum(terms)``, the roles, chunked vs unchunked paths, the B = 1 edge cases.
The grid below is a deliberately chosen subset of the full product
M in 2..6 x B in {1, 2, 5, 16} x d in {3, 8, 32} x temperature in {0.01, 0.07, 1.0} x switches:
every objective configuration meets several shapes, every shape meets every objective, every
temperature meets every temperature-bearing configuration, and every UniAlign switch value is
covered (all 36 uniformity x alignment x tuple combinations, the other switches rotated).
"""

import itertools
import math
import zlib

import pytest
import torch
from reference_losses import REFERENCES, ROLES, as_rows, make_zs, median_candidates, unit

import objectives


def _f(x):
    """float() of a tensor or number, without the requires_grad warning."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)

LAST = "LAST"  # anchor placeholder: resolved to M - 1 for the case's M
TAUS = (0.01, 0.07, 1.0)
# (M, B, d): every M in 2..6, every B in {2, 5, 16}, every d in {3, 8, 32}
SHAPES = [(2, 16, 32), (3, 5, 8), (4, 2, 3), (5, 5, 8), (6, 2, 32), (3, 16, 3), (4, 5, 32), (6, 5, 3)]

F64 = dict(rtol=1e-9, atol=1e-11)
F32 = dict(rtol=2e-4, atol=2e-4)


def resolve(params, M):
    return {k: (M - 1 if v == LAST else v) for k, v in params.items()}


def symile_cost(params, M, B):
    return B ** (M - 1) * B * M if params.get("negatives") == "n_squared" else 0


# temperature-bearing configurations (temperature added per case)
TEMP_CONFIGS = [
    ("infonce", {}),
    ("infonce_anchor", {"anchor": 0}),
    ("infonce_anchor", {"anchor": LAST}),
    ("infonce_reweighted", {"uniformity_weight": 0.5, "pairs": "all"}),
    ("infonce_reweighted", {"uniformity_weight": 2.0, "pairs": "anchor", "anchor": 1}),
    ("dcl", {"pairs": "all"}),
    ("dcl", {"pairs": "anchor", "anchor": LAST}),
    ("cs_aligner", {"lam": 1.0, "bandwidth": 0.5, "pairs": "anchor", "anchor": 0}),
    ("cs_aligner", {"lam": 0.3, "bandwidth": 0.05, "pairs": "all"}),
    ("cs_aligner", {"lam": 2.0, "bandwidth": 2.0, "pairs": "anchor", "anchor": LAST}),
    ("gram", {"anchor": 0}),
    ("gram", {"anchor": 1, "vol_eps": 1e-4}),
    ("gram", {"anchor": LAST, "label_smoothing": 0.1}),
    ("symile", {"negatives": "n_squared"}),
    ("symile", {"negatives": "n"}),
]
OTHER_CONFIGS = [
    ("align_uniform", {}),
    ("align_uniform", {"alpha": 1.5, "t": 1.0, "lam_align": 0.7, "lam_unif": 1.3}),
    ("unialign", {"bandwidth": 0.5, "centroid_bandwidth": 0.5}),
]


def _grid():
    cases = []
    for c, (name, params) in enumerate(TEMP_CONFIGS):
        for s, (M, B, d) in enumerate(SHAPES):
            if symile_cost(params, M, B) > 4000:
                continue
            tau = TAUS[(c + s) % 3]
            cases.append((name, {**params, "temperature": tau}, M, B, d))
    for name, params in OTHER_CONFIGS:
        for M, B, d in SHAPES:
            cases.append((name, dict(params), M, B, d))
    # every uniformity x alignment x tuple combination, the rest rotated
    bws = (0.05, 0.5, 2.0)
    for k, (uni, ali, tup) in enumerate(itertools.product(
            ("each", "anchor", "union"), ("anchor", "centroid", "all_pairs"),
            ("off", "centroid", "volume", "both"))):
        M, B, d = SHAPES[k % len(SHAPES)]
        params = {
            "uniformity": uni, "alignment": ali, "tuple": tup,
            "anchor": (0, 1, LAST)[k % 3],
            "bandwidth": bws[k % 3], "centroid_bandwidth": bws[(k + 1) % 3],
            "renormalize_centroid": k % 2 == 0, "include_diagonal": (k // 2) % 2 == 1,
        }
        if k % 4 == 3:
            params.update(lam_uni=0.5, lam_align=2.0, lam_ctr=0.3, lam_vol=0.1, vol_eps=1e-4)
        cases.append(("unialign", params, M, B, d))
    return cases


GRID = _grid()


def _id(case):
    name, params, M, B, d = case
    p = ",".join(f"{k}={v}" for k, v in params.items())
    return f"{name}[{p}]-M{M}B{B}d{d}"


def _close(lib, ref, tol, what):
    lib = _f(lib)
    ref = _f(ref)
    assert math.isfinite(lib), f"{what}: library value {lib} is not finite (reference {ref})"
    assert abs(lib - ref) <= tol["atol"] + tol["rtol"] * abs(ref), (
        f"{what}: library {lib!r} vs reference {ref!r} (diff {lib - ref:.3e})")


def _grads_close(g_lib, g_ref, tol, what):
    for m, (a, b) in enumerate(zip(g_lib, g_ref)):
        a = a.double()
        scale = _f(b.abs().max()) if b.numel() else 0.0
        err = _f((a - b).abs().max())
        assert err <= tol["atol"] * max(1.0, scale) + tol["rtol"] * scale * 10, (
            f"{what}: gradient wrt modality {m}: max abs diff {err:.3e} (max |grad| {scale:.3e})")


def run_library(name, params, zs, seed=None):
    fn = objectives.build(name, **params)
    if seed is not None:
        torch.manual_seed(seed)
    return fn(zs)


def _tangential(grads, units):
    """Row-wise projection onto the tangent space of the sphere at the (unit) input rows."""
    return [g - (g * u).sum(dim=1, keepdim=True) * u for g, u in zip(grads, units)]


def check_against_reference(name, params, M, B, d, dtype=torch.float64, grads=True, seed=1234,
                            normalize=True):
    tol = F64 if dtype == torch.float64 else F32
    if params.get("learnable_temperature") and dtype == torch.float64:
        # the learnable (log-)temperature parameter is created in float32: the effective
        # temperature is 0.07 rounded to float32 precision (~1e-8 relative)
        tol = dict(rtol=1e-7, atol=1e-9)
    raw = make_zs(M, B, d, dtype=torch.float64, seed=zlib.crc32(f"{name}-{M}-{B}-{d}".encode()))
    if not normalize:
        raw = unit(raw)
        params = {**params, "normalize": False}
    zs_lib = [z.detach().to(dtype).requires_grad_(grads) for z in raw]
    zs_ref = [z.detach().to(dtype).double().requires_grad_(grads) for z in raw]
    out = run_library(name, params, zs_lib, seed=seed)
    ref_params = {k: v for k, v in params.items()
                  if k not in ("chunk_size", "learnable_temperature", "normalize")}
    torch.manual_seed(seed)
    ref = REFERENCES[name](zs_ref, normalize=normalize, **ref_params)

    what = f"{name} {params} M={M} B={B} d={d} {dtype}"
    assert set(out.terms) == set(ref["terms"]), f"{what}: term names {sorted(out.terms)} != {sorted(ref['terms'])}"
    assert set(out.roles) == set(out.terms), f"{what}: roles keys {sorted(out.roles)} != terms keys"
    for key in out.terms:
        assert out.roles[key] == ROLES[key], f"{what}: role of {key} is {out.roles[key]!r}, expected {ROLES[key]!r}"
        _close(out.terms[key], ref["terms"][key], tol, f"{what} term {key}")
    _close(out.loss, ref["loss"], tol, f"{what} loss")
    total = sum(out.terms.values())
    assert out.loss.dim() == 0
    assert abs(_f(out.loss) - _f(total)) <= 1e-12 * max(1.0, abs(_f(total))) * (
        1 if dtype == torch.float64 else 1e5), f"{what}: loss != sum(terms)"
    if grads:
        g_lib = torch.autograd.grad(out.loss, zs_lib)
        g_ref = torch.autograd.grad(ref["loss"], zs_ref)
        gtol = dict(rtol=tol["rtol"], atol=tol["atol"]) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
        if not normalize:
            # with normalize=False only the tangential part of the gradient is defined by the
            # loss on the sphere (|u - v|^2 and 2 - 2 u.v agree on it, their radial parts differ)
            g_lib = _tangential(g_lib, [z.detach().to(g.dtype) for z, g in zip(zs_ref, g_lib)])
            g_ref = _tangential(g_ref, [z.detach() for z in zs_ref])
        _grads_close(g_lib, g_ref, gtol, what)
    return out, ref


# ----------------------------------------------------------------------------- the grid
@pytest.mark.parametrize("case", GRID, ids=_id)
def test_float64_matches_reference(case):
    name, params, M, B, d = case
    check_against_reference(name, resolve(params, M), M, B, d)


# a few larger cases: B = 16 with many modalities
LARGE = [
    ("infonce", {"temperature": 0.07}, 6, 16, 8),
    ("infonce_anchor", {"temperature": 0.01, "anchor": 3}, 4, 16, 32),
    ("unialign", {"tuple": "both", "bandwidth": 0.5, "centroid_bandwidth": 0.5}, 6, 16, 8),
    ("dcl", {"temperature": 0.07, "pairs": "anchor", "anchor": 2}, 5, 16, 3),
]


@pytest.mark.parametrize("case", LARGE, ids=_id)
def test_large_cases(case):
    name, params, M, B, d = case
    check_against_reference(name, params, M, B, d)


# float32: a spread of configurations at a spread of shapes, looser tolerance
F32_CASES = [c for k, c in enumerate(GRID) if k % 7 == 0]


@pytest.mark.parametrize("case", F32_CASES, ids=_id)
def test_float32_matches_reference(case):
    name, params, M, B, d = case
    out, _ = check_against_reference(name, resolve(params, M), M, B, d, dtype=torch.float32)
    assert out.loss.dtype == torch.float32


# normalize=False with unit rows: same values as the normalising path
NORMALIZE_FALSE_CASES = [c for k, c in enumerate(GRID) if k % 11 == 5]


@pytest.mark.parametrize("case", NORMALIZE_FALSE_CASES, ids=_id)
def test_normalize_false_matches_reference(case):
    name, params, M, B, d = case
    check_against_reference(name, resolve(params, M), M, B, d, normalize=False)


# ----------------------------------------------------------------------------- temperatures
@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("name,params", [c for c in TEMP_CONFIGS if c[0] != "symile"]
                         + [("symile", {"negatives": "n_squared"})],
                         ids=lambda x: x if isinstance(x, str) else ",".join(f"{k}={v}" for k, v in x.items()))
def test_every_temperature(name, params, tau):
    M, B, d = (3, 5, 8)
    check_against_reference(name, resolve({**params, "temperature": tau}, M), M, B, d)


@pytest.mark.parametrize("name,params", [c for c in TEMP_CONFIGS if c[1].get("anchor") != LAST][::2]
                         + [("symile", {"negatives": "n"})],
                         ids=lambda x: x if isinstance(x, str) else ",".join(f"{k}={v}" for k, v in x.items()))
def test_learnable_temperature_same_forward(name, params):
    M, B, d = 3, 5, 8
    params = resolve({**params, "temperature": 0.07, "learnable_temperature": True}, M)
    check_against_reference(name, params, M, B, d)
    fn = objectives.build(name, **params)
    assert len([p for p in fn.parameters() if p.requires_grad]) == 1, "learnable temperature: one parameter"
    fixed = objectives.build(name, **{**params, "learnable_temperature": False})
    assert len([p for p in fixed.parameters() if p.requires_grad]) == 0, "fixed temperature: no parameter"


# ----------------------------------------------------------------------------- input forms
@pytest.mark.parametrize("name,params", [("infonce", {}), ("unialign", {"tuple": "both", "bandwidth": 0.5,
                                                                       "centroid_bandwidth": 0.5}),
                                         ("symile", {"negatives": "n_squared"}), ("gram", {"anchor": 1})])
def test_stacked_tensor_equals_list(name, params):
    zs = make_zs(3, 5, 8, seed=3)
    a = objectives.build(name, **params)(zs)
    b = objectives.build(name, **params)(torch.stack(zs))
    c = objectives.build(name, **params)(tuple(zs))
    for o in (b, c):
        assert _f(o.loss) == pytest.approx(_f(a.loss), rel=1e-12, abs=1e-14)
        assert set(o.terms) == set(a.terms)


# ----------------------------------------------------------------------------- chunking
CHUNK_CONFIGS = [
    ("infonce", {"temperature": 0.07}),
    ("infonce_anchor", {"temperature": 0.01, "anchor": 1}),
    ("infonce_reweighted", {"temperature": 0.07, "uniformity_weight": 0.5, "pairs": "anchor"}),
    ("dcl", {"temperature": 1.0, "pairs": "all"}),
    ("align_uniform", {}),
    ("cs_aligner", {"temperature": 0.07, "bandwidth": 0.5, "pairs": "all"}),
    ("gram", {"temperature": 0.07, "anchor": 2}),
    ("gram", {"temperature": 0.01, "anchor": 1, "label_smoothing": 0.1}),
    ("symile", {"temperature": 0.07, "negatives": "n_squared"}),
    ("symile", {"temperature": 0.07, "negatives": "n"}),
    ("unialign", {"uniformity": "each", "alignment": "anchor", "tuple": "both", "bandwidth": 0.5,
                  "centroid_bandwidth": 0.5}),
    ("unialign", {"uniformity": "union", "alignment": "centroid", "tuple": "centroid", "bandwidth": 0.05,
                  "centroid_bandwidth": 2.0, "include_diagonal": True, "renormalize_centroid": False}),
    ("unialign", {"uniformity": "anchor", "alignment": "all_pairs", "tuple": "volume", "anchor": 2,
                  "bandwidth": 2.0}),
    ("unialign", {"uniformity": "each", "bandwidth": "median", "centroid_bandwidth": "median",
                  "tuple": "centroid"}),
]


@pytest.mark.parametrize("name,params", CHUNK_CONFIGS,
                         ids=lambda x: x if isinstance(x, str) else ",".join(f"{k}={v}" for k, v in x.items()))
def test_chunked_equals_unchunked(name, params):
    M, B, d = (3, 16, 8) if not (name == "symile" and params.get("negatives") == "n_squared") else (3, 7, 8)
    raw = make_zs(M, B, d, seed=7)
    results = []
    for chunk in (None, 3, 1, B + 5):
        zs = [z.detach().clone().requires_grad_(True) for z in raw]
        torch.manual_seed(11)
        out = objectives.build(name, **params, chunk_size=chunk)(zs)
        grads = torch.autograd.grad(out.loss, zs)
        results.append((chunk, out, grads))
    _, base, gbase = results[0]
    for chunk, out, grads in results[1:]:
        what = f"{name} chunk_size={chunk}"
        assert set(out.terms) == set(base.terms)
        for key in base.terms:
            _close(out.terms[key], base.terms[key], dict(rtol=1e-11, atol=1e-12), f"{what} term {key}")
        _close(out.loss, base.loss, dict(rtol=1e-11, atol=1e-12), what)
        _grads_close(grads, gbase, dict(rtol=1e-10, atol=1e-12), what)


@pytest.mark.parametrize("name,params", CHUNK_CONFIGS[:-1],
                         ids=lambda x: x if isinstance(x, str) else ",".join(f"{k}={v}" for k, v in x.items()))
def test_chunked_matches_reference(name, params):
    M, B, d = (4, 5, 8)
    check_against_reference(name, {**params, "chunk_size": 2}, M, B, d)


# ----------------------------------------------------------------------------- median bandwidth
def _with_f32(values):
    """Candidates plus their float32-rounded versions (the library computes the median heuristic
    in float32 -- observed, harmless: ~1e-8 relative)."""
    out = []
    for v in values:
        out += [v, _f(torch.tensor(v, dtype=torch.float32))]
    return out


def _matches_some(lib_value, candidates, what):
    diffs = [abs(_f(lib_value) - _f(c)) for c in candidates]
    assert min(diffs) <= 1e-9 * max(1.0, abs(_f(lib_value))), (
        f"{what}: library {_f(lib_value)!r} matches no reference candidate "
        f"{[_f(c) for c in candidates]}")


@pytest.mark.parametrize("M,B,d", [(2, 5, 3), (3, 4, 8), (4, 6, 8)])
@pytest.mark.parametrize("uniformity", ["each", "union"])
def test_median_bandwidth(M, B, d, uniformity):
    """bandwidth='median': median of |x_i - x_j| over distinct pooled rows of all modalities
    (for even counts the lower, upper or mid median are all accepted)."""
    raw = make_zs(M, B, d, seed=21)
    out = objectives.build("unialign", uniformity=uniformity, bandwidth="median",
                           centroid_bandwidth=0.5)(raw)
    pooled = [row for rows in as_rows(raw) for row in rows]
    cands = [REFERENCES["unialign"](raw, uniformity=uniformity, bandwidth=s, centroid_bandwidth=0.5)
             ["terms"]["uniformity"] for s in _with_f32(median_candidates(pooled))]
    _matches_some(out.terms["uniformity"], cands, f"unialign median M={M} B={B}")


@pytest.mark.parametrize("renorm", [True, False])
def test_median_centroid_bandwidth(renorm):
    """centroid_bandwidth='median': median pairwise distance of the centroid rows actually used
    (renormalised iff renormalize_centroid); any even-count convention accepted."""
    M, B, d = 3, 9, 8
    raw = make_zs(M, B, d, seed=22)
    out = objectives.build("unialign", tuple="centroid", bandwidth=0.5, centroid_bandwidth="median",
                           renormalize_centroid=renorm)(raw)
    Z = as_rows(raw)
    C = [sum(Z[m][i] for m in range(M)) / M for i in range(B)]
    if renorm:
        C = [c / c.norm() for c in C]
    cands = [REFERENCES["unialign"](raw, tuple="centroid", bandwidth=0.5, centroid_bandwidth=s,
                                    renormalize_centroid=renorm)["terms"]["centroid_uniformity"]
             for s in _with_f32(median_candidates(C))]
    _matches_some(out.terms["centroid_uniformity"], cands, f"centroid median renorm={renorm}")


def test_median_bandwidth_is_detached():
    """The median heuristic is detached: the gradient equals the one at the fixed median value."""
    M, B, d = 3, 5, 4  # 15 pooled rows, 105 distances: odd count, a unique median
    raw = make_zs(M, B, d, seed=23)
    zs = [z.clone().requires_grad_(True) for z in raw]
    out = objectives.build("unialign", bandwidth="median", centroid_bandwidth=0.5)(zs)
    g = torch.autograd.grad(out.loss, zs)
    (s,) = median_candidates([r for rows in as_rows(raw) for r in rows])
    zs2 = [z.clone().requires_grad_(True) for z in raw]
    out2 = objectives.build("unialign", bandwidth=s, centroid_bandwidth=0.5)(zs2)
    g2 = torch.autograd.grad(out2.loss, zs2)
    _close(out.loss, out2.loss, dict(rtol=1e-7, atol=1e-9), "median vs fixed")  # float32 median
    _grads_close(g, g2, dict(rtol=1e-7, atol=1e-9), "median detached")


@pytest.mark.parametrize("M,pairs", [(2, "all"), (3, "anchor"), (3, "all")])
def test_cs_aligner_median_bandwidth(M, pairs):
    """One bandwidth for all pairs: the median over all modalities pooled."""
    B, d = 6, 5
    raw = make_zs(M, B, d, seed=24)
    out = objectives.build("cs_aligner", temperature=0.07, bandwidth="median", pairs=pairs)(raw)
    pooled = [row for rows in as_rows(raw) for row in rows]
    cands = [REFERENCES["cs_aligner"](raw, temperature=0.07, bandwidth=s, pairs=pairs)["loss"]
             for s in _with_f32(median_candidates(pooled))]
    diffs = [abs(_f(out.loss) - _f(c)) for c in cands]
    assert min(diffs) <= 1e-8 * max(1.0, abs(_f(out.loss))), (out.loss, cands)


# ----------------------------------------------------------------------------- B = 1
# A batch of one has no negative: every objective refuses it with a ValueError naming B (some losses
# have a formal value there -- a log-sum-exp of one term -- that would train nothing, silently)
B1_UNDEFINED = [
    ("infonce", {"temperature": 0.07}),
    ("infonce_anchor", {"temperature": 0.07, "anchor": 1}),
    ("infonce_reweighted", {"temperature": 0.07, "uniformity_weight": 0.5, "pairs": "all"}),
    ("cs_aligner", {"temperature": 0.07, "bandwidth": 0.5, "pairs": "anchor"}),
    ("gram", {"temperature": 0.07}),
    ("symile", {"temperature": 0.07, "negatives": "n_squared"}),
    ("symile", {"temperature": 0.07, "negatives": "n"}),
    ("dcl", {"temperature": 0.07, "pairs": "all"}),
    ("dcl", {"temperature": 0.07, "pairs": "anchor"}),
    ("align_uniform", {}),
    ("unialign", {"bandwidth": 0.5}),
    ("unialign", {"uniformity": "anchor", "bandwidth": 0.5}),
    ("unialign", {"uniformity": "each", "include_diagonal": False, "tuple": "off", "bandwidth": 0.5}),
]


@pytest.mark.parametrize("name,params", B1_UNDEFINED,
                         ids=lambda x: x if isinstance(x, str) else ",".join(f"{k}={v}" for k, v in x.items()))
def test_batch_of_one_undefined_raises(name, params):
    zs = make_zs(3, 1, 8)
    with pytest.raises(ValueError, match=r"(?i)\bB\b|batch"):
        objectives.build(name, **params)(zs)


@pytest.mark.parametrize("params", [
    {"include_diagonal": True, "tuple": "both", "bandwidth": 0.5, "centroid_bandwidth": 0.5},
    {"uniformity": "union", "bandwidth": 0.5, "alignment": "centroid"},
], ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_unialign_batch_of_one_either_defined_or_rejected(params):
    """With include_diagonal=True, or uniformity='union' (M*B pooled rows), the uniformity is
    defined at B = 1 (a constant). Rejecting B = 1 for UniAlign is defensible too (a one-sample
    uniformity is meaningless): accept a ValueError naming B, or the reference value."""
    zs = make_zs(3, 1, 8)
    try:
        out = objectives.build("unialign", **params)(zs)
    except ValueError as e:
        assert "B" in str(e), str(e)
        return
    ref = REFERENCES["unialign"](zs, **params)
    _close(out.loss, ref["loss"], F64, "unialign B=1")


# ----------------------------------------------------------------------------- documented defaults
# Only the defaults the spec documents are left implicit (temperature 0.07, anchor 0, alpha = t = 2,
# every lam = 1, vol_eps = 1e-6, renormalize_centroid=True, include_diagonal=False, the base UniAlign
# form uniformity="each", alignment="anchor", tuple="off"); undocumented ones are passed explicitly.
DEFAULTS = [
    ("infonce", {}, {}),
    ("infonce_anchor", {}, {}),
    ("infonce_reweighted", {"uniformity_weight": 0.5, "pairs": "all"}, {}),
    ("dcl", {"pairs": "all"}, {}),
    ("align_uniform", {}, {}),
    ("cs_aligner", {"bandwidth": 0.5, "pairs": "anchor"}, {}),
    ("gram", {}, {}),
    ("symile", {"negatives": "n_squared"}, {}),
    ("unialign", {"bandwidth": 0.5, "centroid_bandwidth": 0.5}, {}),
    ("unialign", {"bandwidth": 0.5, "centroid_bandwidth": 0.5, "tuple": "both"}, {}),
]


@pytest.mark.parametrize("name,explicit,_", DEFAULTS, ids=lambda x: x if isinstance(x, str) else "")
def test_documented_defaults(name, explicit, _):
    M, B, d = 3, 5, 8
    raw = make_zs(M, B, d, seed=61)
    out = objectives.build(name, **explicit)(raw)
    ref = REFERENCES[name](raw, **explicit)  # the reference's defaults are the documented ones
    assert set(out.terms) == set(ref["terms"])
    for k in out.terms:
        _close(out.terms[k], ref["terms"][k], F64, f"{name} defaults, term {k}")


def test_learnable_floor_default_is_0_01_for_every_temperature_objective():
    for name in ("infonce", "infonce_anchor", "infonce_reweighted", "dcl", "cs_aligner", "gram", "symile"):
        objectives.build(name, temperature=0.01, learnable_temperature=True)(make_zs(3, 4, 5))


# ----------------------------------------------------------------------------- temperature range
def test_fixed_temperature_below_learnable_floor_is_not_clamped():
    """min_temperature only bounds a learnable temperature: a fixed 0.005 is used as given."""
    check_against_reference("infonce", {"temperature": 0.005}, 3, 5, 8)
    check_against_reference("gram", {"temperature": 0.005}, 3, 5, 8)


@pytest.mark.parametrize("name,params", [
    ("infonce", {}), ("infonce_anchor", {"anchor": 2}), ("infonce_reweighted", {"uniformity_weight": 0.3}),
    ("dcl", {"pairs": "anchor"}), ("cs_aligner", {"bandwidth": 0.5}), ("gram", {}),
    ("gram", {"label_smoothing": 0.1, "anchor": 1}), ("symile", {"negatives": "n_squared"}),
], ids=lambda x: x if isinstance(x, str) else ",".join(f"{k}={v}" for k, v in x.items()))
def test_learnable_temperature_gradient_matches_reference(name, params):
    """The parameter's gradient is the reference dL/dtau times d tau / d parameter, for the
    parameterisation in use (log tau, log 1/tau, tau or 1/tau)."""
    tau = 0.2
    raw = make_zs(3, 4, 5, seed=41)
    fn = objectives.build(name, temperature=tau, learnable_temperature=True, **params).double()
    out = fn(raw)
    (p,) = [q for q in fn.parameters() if q.requires_grad]
    (g_p,) = torch.autograd.grad(out.loss, p)
    t = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    ref = REFERENCES[name](raw, temperature=t, **params)
    (g_t,) = torch.autograd.grad(ref["loss"], t)
    gt = _f(g_t)
    candidates = {"log tau": tau * gt, "log 1/tau": -tau * gt, "tau": gt, "1/tau": -tau * tau * gt}
    err = {k: abs(_f(g_p) - v) for k, v in candidates.items()}
    assert min(err.values()) <= 1e-6 * max(abs(v) for v in candidates.values()), (
        f"parameter gradient {_f(g_p)} vs {candidates}")


def test_learnable_temperature_at_the_floor_still_has_a_gradient():
    fn = objectives.build("infonce", temperature=0.01, learnable_temperature=True)
    out = fn(make_zs(3, 5, 8))
    (p,) = [q for q in fn.parameters() if q.requires_grad]
    (g,) = torch.autograd.grad(out.loss, p)
    assert _f(g) != 0.0


# ----------------------------------------------------------------------------- public kernels
from reference_losses import log_mean_exp, sqdist

from objectives import kernels


@pytest.mark.parametrize("exclude_diagonal", [False, True])
@pytest.mark.parametrize("bandwidth", [0.05, 0.7, 3.0])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_kernels_log_mean_kernel(exclude_diagonal, bandwidth, chunk_size):
    """Full squared Euclidean distances (rows not unit), diagonal optionally excluded."""
    x = make_zs(1, 5, 4, seed=31)[0]
    y = x if exclude_diagonal else make_zs(1, 7, 4, seed=32)[0]
    got = kernels.log_mean_kernel(x, y, bandwidth, exclude_diagonal=exclude_diagonal, chunk_size=chunk_size)
    want = log_mean_exp(-sqdist(x[i], y[j]) / (2 * bandwidth ** 2)
                        for i in range(x.shape[0]) for j in range(y.shape[0])
                        if not (exclude_diagonal and i == j))
    _close(got, want, F64, "log_mean_kernel")


def test_kernels_sq_dists_and_median():
    x = make_zs(1, 6, 3, seed=33)[0]
    y = make_zs(1, 4, 3, seed=34)[0]
    D = kernels.sq_dists(x, y)
    assert D.shape == (6, 4)
    for i in range(6):
        for j in range(4):
            _close(D[i, j], sqdist(x[i], y[j]), dict(rtol=1e-12, atol=1e-12), f"sq_dists[{i},{j}]")
    assert _f(kernels.sq_dists(x, x).min()) >= 0.0
    rows = [r for r in x] + [r for r in y]
    got = kernels.median_bandwidth(x, y)
    _matches_some(got, _with_f32(median_candidates(rows)), "median_bandwidth")


# ----------------------------------------------------------------------------- random configurations
from hypothesis import given, settings
from hypothesis import strategies as st


@st.composite
def random_case(draw):
    M = draw(st.integers(2, 4))
    B = draw(st.integers(2, 5))
    d = draw(st.integers(2, 6))
    tau = draw(st.sampled_from([0.01, 0.05, 0.07, 0.3, 1.0, 2.5]))
    anchor = draw(st.integers(0, M - 1))
    name = draw(st.sampled_from(sorted(REFERENCES)))
    if name == "unialign":
        params = dict(
            anchor=anchor, uniformity=draw(st.sampled_from(["each", "anchor", "union"])),
            alignment=draw(st.sampled_from(["anchor", "centroid", "all_pairs"])),
            tuple=draw(st.sampled_from(["off", "centroid", "volume", "both"])),
            lam_uni=draw(st.sampled_from([0.0, 0.3, 1.0])), lam_align=draw(st.sampled_from([0.5, 1.0, 4.0])),
            lam_ctr=draw(st.sampled_from([0.2, 1.0])), lam_vol=draw(st.sampled_from([0.1, 1.0])),
            bandwidth=draw(st.sampled_from([0.05, 0.2, 0.5, 1.5])),
            centroid_bandwidth=draw(st.sampled_from([0.05, 0.3, 1.0])),
            renormalize_centroid=draw(st.booleans()), include_diagonal=draw(st.booleans()),
            vol_eps=draw(st.sampled_from([1e-6, 1e-3])))
    elif name == "align_uniform":
        params = dict(alpha=draw(st.sampled_from([1.0, 2.0, 3.0])), t=draw(st.sampled_from([0.5, 2.0, 5.0])),
                      lam_align=draw(st.sampled_from([0.5, 1.0])), lam_unif=draw(st.sampled_from([0.5, 1.0])))
    else:
        params = {"temperature": tau}
        if name in ("infonce_anchor", "gram"):
            params["anchor"] = anchor
        if name in ("infonce_reweighted", "dcl", "cs_aligner"):
            params.update(pairs=draw(st.sampled_from(["all", "anchor"])), anchor=anchor)
        if name == "infonce_reweighted":
            params["uniformity_weight"] = draw(st.sampled_from([0.0, 0.25, 1.0, 3.0]))
        if name == "cs_aligner":
            params.update(lam=draw(st.sampled_from([0.5, 1.0])), bandwidth=draw(st.sampled_from([0.1, 0.5, 2.0])))
        if name == "gram":
            params["vol_eps"] = draw(st.sampled_from([1e-6, 1e-3]))
        if name == "symile":
            params["negatives"] = draw(st.sampled_from(["n", "n_squared"]))
    params["chunk_size"] = draw(st.sampled_from([None, 1, 2, 3]))
    return name, params, M, B, d


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(case=random_case())
def test_random_configurations_match_reference(case):
    name, params, M, B, d = case
    check_against_reference(name, params, M, B, d)
