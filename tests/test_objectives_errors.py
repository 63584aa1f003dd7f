"""Every bad input raises ValueError (TypeError for wrong types / unknown keywords) with a message
naming the parameter or field and the offending value. A check may fire at build time or at
forward time (both are wrapped), except where the brief fixes it (anchor: at forward, against M)."""

import math

import pytest
import torch
from reference_losses import make_zs, unit

import objectives


def _f(x):
    """float() of a tensor or number, without the requires_grad warning."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)

TEMP_NAMES = ["infonce", "infonce_anchor", "infonce_reweighted", "dcl", "cs_aligner", "gram", "symile"]
ANCHOR_NAMES = ["infonce_anchor", "gram", "unialign", "cs_aligner"]
ALL_NAMES = ["infonce", "infonce_anchor", "infonce_reweighted", "dcl", "align_uniform", "unialign",
             "cs_aligner", "gram", "symile"]


def _raises(exc, call, *fragments):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    for frag in fragments:
        assert frag.lower() in msg.lower(), f"message {msg!r} does not name {frag!r}"
    return msg


def _build_and_run(name, zs=None, **params):
    def call():
        fn = objectives.build(name, **params)
        fn(make_zs(3, 4, 5) if zs is None else zs)
    return call


# ----------------------------------------------------------------------------- names / keywords
def test_unknown_objective_lists_available():
    msg = _raises(ValueError, lambda: objectives.build("infonse"), "infonse")
    for name in objectives.available():
        assert name in msg, f"{msg!r} does not list {name!r}"


def test_unknown_keyword_is_type_error():
    _raises(TypeError, lambda: objectives.build("infonce", temprature=0.1), "temprature")
    _raises(TypeError, lambda: objectives.build("unialign", bandwith=0.1), "bandwith")


@pytest.mark.parametrize("name,key", [("infonce", "bandwidth"), ("gram", "uniformity_weight"),
                                      ("symile", "lam_vol"), ("align_uniform", "negatives")])
def test_keyword_of_another_objective_is_type_error(name, key):
    _raises(TypeError, lambda: objectives.build(name, **{key: 0.5}), key)


# ----------------------------------------------------------------------------- temperature
@pytest.mark.parametrize("value,shown", [(0.0, "0"), (-0.5, "-0.5"), (float("nan"), "nan"),
                                         (float("inf"), "inf")])
@pytest.mark.parametrize("name", TEMP_NAMES)
def test_bad_temperature(name, value, shown):
    _raises(ValueError, _build_and_run(name, temperature=value), "temperature", shown)


@pytest.mark.parametrize("name", ["infonce", "gram", "symile"])
def test_learnable_temperature_below_floor(name):
    _raises(ValueError, _build_and_run(name, temperature=0.005, learnable_temperature=True),
            "temperature", "0.005")


@pytest.mark.parametrize("name", ["infonce", "symile"])
def test_temperature_wrong_type(name):
    with pytest.raises((TypeError, ValueError)) as info:
        _build_and_run(name, temperature="0.1")()
    assert "temperature" in str(info.value).lower()


# ----------------------------------------------------------------------------- bandwidths
@pytest.mark.parametrize("key", ["bandwidth", "centroid_bandwidth"])
@pytest.mark.parametrize("value,shown", [(0.0, "0"), (-1.0, "-1"), ("mean", "mean"),
                                         (float("nan"), "nan")])
def test_bad_unialign_bandwidth(key, value, shown):
    params = {key: value, "tuple": "centroid"}
    _raises(ValueError, _build_and_run("unialign", **params), key, shown)


@pytest.mark.parametrize("value,shown", [(0.0, "0"), (-2.0, "-2"), ("foo", "foo")])
def test_bad_cs_aligner_bandwidth(value, shown):
    _raises(ValueError, _build_and_run("cs_aligner", bandwidth=value), "bandwidth", shown)


# ----------------------------------------------------------------------------- anchor / M
@pytest.mark.parametrize("name", ANCHOR_NAMES)
def test_anchor_out_of_range_at_forward(name):
    fn = objectives.build(name, anchor=3)  # fine at build: M is not known yet
    msg = _raises(ValueError, lambda: fn(make_zs(3, 4, 5)), "anchor", "3")
    assert "M" in msg, f"{msg!r} does not name M"
    fn(make_zs(4, 4, 5))  # and fine where M = 4


@pytest.mark.parametrize("name", ANCHOR_NAMES)
def test_negative_anchor(name):
    _raises((ValueError, TypeError), _build_and_run(name, anchor=-1), "anchor", "-1")


@pytest.mark.parametrize("name", ALL_NAMES)
def test_single_modality(name):
    fn = objectives.build(name)
    msg = _raises(ValueError, lambda: fn(make_zs(1, 4, 5)), "1")
    assert "M" in msg, f"{msg!r} does not name M"
    msg = _raises(ValueError, lambda: fn(torch.randn(1, 4, 5)), "1")
    assert "M" in msg


@pytest.mark.parametrize("name", ALL_NAMES)
def test_empty_list(name):
    with pytest.raises(ValueError):
        objectives.build(name)([])


# ----------------------------------------------------------------------------- shapes
def _names_shapes(msg, *shapes):
    for shp in shapes:
        forms = [str(tuple(shp)), str(list(shp)), str(torch.Size(shp))]
        assert any(f in msg for f in forms), f"{msg!r} does not show shape {shp}"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_unequal_batch_sizes(name):
    zs = make_zs(3, 4, 5)
    zs[1] = torch.randn(6, 5, dtype=torch.float64)
    msg = _raises(ValueError, lambda: objectives.build(name)(zs))
    _names_shapes(msg, (4, 5), (6, 5))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_unequal_dims(name):
    zs = make_zs(3, 4, 5)
    zs[2] = torch.randn(4, 7, dtype=torch.float64)
    msg = _raises(ValueError, lambda: objectives.build(name)(zs))
    _names_shapes(msg, (4, 5), (4, 7))


@pytest.mark.parametrize("bad", [torch.randn(4, 5), torch.randn(2, 3, 4, 5), torch.randn(5)])
@pytest.mark.parametrize("name", ["infonce", "unialign", "symile"])
def test_wrong_rank_tensor(name, bad):
    msg = _raises(ValueError, lambda: objectives.build(name)(bad))
    assert str(bad.dim()) in msg or str(tuple(bad.shape)) in msg or str(list(bad.shape)) in msg, msg


@pytest.mark.parametrize("name", ["infonce", "unialign", "gram"])
def test_wrong_rank_in_list(name):
    zs = [torch.randn(4, 5), torch.randn(4, 5, 1), torch.randn(4, 5)]
    _raises(ValueError, lambda: objectives.build(name)(zs))
    zs = [torch.randn(4, 5), torch.randn(20), torch.randn(4, 5)]
    _raises(ValueError, lambda: objectives.build(name)(zs))


@pytest.mark.parametrize("name", ["infonce", "unialign"])
def test_not_a_tensor(name):
    with pytest.raises((TypeError, ValueError)):
        objectives.build(name)([[0.0, 1.0], [1.0, 0.0]])


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_non_finite_inputs(name, bad):
    zs = make_zs(3, 4, 5)
    zs[1] = zs[1].clone()
    zs[1][2, 3] = bad
    msg = _raises(ValueError, lambda: objectives.build(name)(zs))
    low = msg.lower()
    assert "finite" in low or "nan" in low or "inf" in low, msg


@pytest.mark.parametrize("name", ALL_NAMES)
def test_non_unit_rows_with_normalize_false(name):
    zs = unit(make_zs(3, 4, 5))
    objectives.build(name, normalize=False)(zs)  # unit rows accepted
    zs[0] = zs[0] * 1.01
    if not objectives.build(name).unit_rows_required:  # symile: rows of any norm, as the original
        assert name == "symile"
        objectives.build(name, normalize=False)(zs)
        return
    msg = _raises(ValueError, lambda: objectives.build(name, normalize=False)(zs))
    low = msg.lower()
    assert "normal" in low or "unit" in low or "norm" in low, msg


@pytest.mark.parametrize("name", ALL_NAMES)
def test_zero_row_with_normalize(name):
    """A zero row cannot be normalised: an error or, at least, a finite loss -- never NaN."""
    zs = make_zs(3, 4, 5)
    zs[0] = zs[0].clone()
    zs[0][1] = 0.0
    try:
        out = objectives.build(name)(zs)
    except ValueError:
        return
    assert math.isfinite(_f(out.loss))


# ----------------------------------------------------------------------------- switches
SWITCHES = [
    ("unialign", "uniformity", "foo"),
    ("unialign", "alignment", "foo"),
    ("unialign", "tuple", "foo"),
    ("infonce_reweighted", "pairs", "foo"),
    ("dcl", "pairs", "foo"),
    ("cs_aligner", "pairs", "foo"),
    ("symile", "negatives", "foo"),
]


@pytest.mark.parametrize("name,key,value", SWITCHES)
def test_unknown_switch_value(name, key, value):
    _raises(ValueError, _build_and_run(name, **{key: value}), key, value)


@pytest.mark.parametrize("name,key,value", [
    ("unialign", "lam_uni", float("nan")), ("unialign", "lam_align", float("nan")), ("unialign", "vol_eps", -1e-6),
    ("unialign", "lam_vol", float("inf")), ("gram", "vol_eps", -1.0), ("cs_aligner", "lam", float("nan")),
    ("align_uniform", "t", 0.0), ("align_uniform", "alpha", -1.0),
    ("infonce_reweighted", "uniformity_weight", float("nan")),
])
def test_bad_numeric_parameter(name, key, value):
    _raises(ValueError, _build_and_run(name, **{key: value}), key)


@pytest.mark.parametrize("value", [0, -3, 2.5])
@pytest.mark.parametrize("name", ["infonce", "unialign", "gram"])
def test_bad_chunk_size(name, value):
    with pytest.raises((ValueError, TypeError)) as info:
        _build_and_run(name, chunk_size=value)()
    assert "chunk_size" in str(info.value)


def test_valid_switch_values_accepted():
    """Sanity: the valid switch values are accepted."""
    for neg in ("n", "n_squared"):
        objectives.build("symile", negatives=neg)(make_zs(3, 3, 4))


# ----------------------------------------------------------------------------- wrong types
@pytest.mark.parametrize("name,key,value", [
    ("infonce_anchor", "anchor", 1.5), ("infonce_anchor", "anchor", "0"), ("gram", "anchor", True),
    ("infonce", "normalize", "yes"), ("infonce", "learnable_temperature", "yes"),
    ("unialign", "renormalize_centroid", "yes"), ("unialign", "include_diagonal", 1),
    ("infonce", "temperature", True), ("unialign", "lam_uni", "1"),
])
def test_wrong_type(name, key, value):
    with pytest.raises((TypeError, ValueError)) as info:
        _build_and_run(name, **{key: value})()
    assert key in str(info.value), str(info.value)
    assert repr(value) in str(info.value) or str(value) in str(info.value), str(info.value)


def test_normalize_false_tolerance_is_1e_3():
    """docs/interfaces.md: with normalize=False rows must satisfy | |z| - 1 | <= 1e-3."""
    u = unit(make_zs(3, 4, 5))
    for factor in (1.0005, 0.9995):
        objectives.build("infonce", normalize=False)([u[0] * factor, u[1], u[2]])
    for factor in (1.0015, 0.998):
        with pytest.raises(ValueError):
            objectives.build("infonce", normalize=False)([u[0] * factor, u[1], u[2]])
