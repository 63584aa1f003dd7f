"""Drop-in use in open_clip- and lightly-shaped training loops (docs/drop-in.md): positional
modalities, ``logit_scale=``, ``output_dict=``, ObjectiveOutput delegating to its loss, the
Temperature switches (CLIP, Symile, default), the documented training loop, and autocast."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from reference_losses import REFERENCES, make_zs

import objectives
from objectives import Temperature

ALL = sorted(objectives.registry.builtin())  # an installed plugin is not classified here
TEMP = [n for n in ALL if "temperature" in objectives.parameters(n)]
NO_TEMP = [n for n in ALL if n not in TEMP]
F64 = dict(rtol=1e-10, atol=1e-12)
CPU = torch.device("cpu")


def _call(fn, *args, seed=3, **kwargs):
    """One call with the global generator reseeded (symile's default negatives are random)."""
    torch.manual_seed(seed)
    return fn(*args, **kwargs)


def _grads(loss, inputs):
    return torch.autograd.grad(loss, inputs)


def _leaves(zs):
    return [z.detach().clone().requires_grad_(True) for z in zs]


def test_every_objective_is_classified():
    assert set(TEMP) == {"infonce", "infonce_anchor", "infonce_reweighted", "dcl", "cs_aligner", "gram",
                         "symile"}
    assert set(NO_TEMP) == {"align_uniform", "unialign"}


# ----------------------------------------------------------------------------- calling conventions
@pytest.mark.parametrize("M", [2, 3])
@pytest.mark.parametrize("name", ALL)
def test_positional_modalities_equal_sequence_and_stacked(name, M):
    """fn(a, b[, c]) == fn([a, b, c]) == fn(stack) in value and gradient, bit for bit."""
    fn = objectives.build(name).double()
    raw = make_zs(M, 6, 5, seed=11)
    results = []
    for form in ("positional", "sequence", "stacked"):
        zs = _leaves(raw)
        if form == "positional":
            out = _call(fn, *zs)
        elif form == "sequence":
            out = _call(fn, zs)
        else:
            out = _call(fn, torch.stack(zs))
        results.append((out.loss.detach(), _grads(out.loss, zs)))
    for loss, grads in results[1:]:
        assert torch.equal(loss, results[0][0])
        assert all(torch.equal(g, h) for g, h in zip(grads, results[0][1]))


def test_call_without_embeddings_is_a_type_error_naming_the_objective():
    with pytest.raises(TypeError, match="infonce needs embeddings"):
        objectives.build("infonce")()


def test_positional_non_tensor_is_named():
    a, b = make_zs(2, 4, 3)
    with pytest.raises(TypeError, match=r"embeddings\[1\]"):
        objectives.build("infonce")(a, [b])


# ----------------------------------------------------------------------------- logit_scale
def _clip_loss(image_features, text_features, logit_scale):
    """open_clip's ClipLoss.forward for one process (features L2-normalised by the model)."""
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits_per_image = logit_scale * image_features @ text_features.T
    logits_per_text = logit_scale * text_features @ image_features.T
    labels = torch.arange(image_features.shape[0], device=image_features.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


@pytest.mark.parametrize("positional", [False, True])
def test_infonce_is_open_clip_clip_loss(positional):
    """Same value and gradients (embeddings and logit scale) as open_clip's ClipLoss."""
    img, txt = make_zs(2, 16, 8, seed=5, requires_grad=True)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    fn = objectives.build("infonce")
    out = fn(img, txt, scale) if positional else fn(img, txt, logit_scale=scale)
    ref = _clip_loss(img, txt, scale)
    torch.testing.assert_close(out.loss, ref, **F64)
    for g, h in zip(_grads(out.loss, [img, txt, scale]), _grads(ref, [img, txt, scale])):
        torch.testing.assert_close(g, h, **F64)
    # and the objective's own temperature 0.07 is the same loss
    torch.testing.assert_close(objectives.build("infonce", temperature=0.07)(img, txt).loss, ref, **F64)


@pytest.mark.parametrize("negatives", ["n", "n_squared"])
def test_symile_takes_the_symile_packages_call(negatives):
    """``fn(representations, logit_scale)`` is the PyPI symile package's call: same value and
    gradient for the learnable scale (the package does not normalise: it gets unit rows)."""
    symile = pytest.importorskip("symile")
    zs = [torch.nn.functional.normalize(z, dim=-1) for z in make_zs(3, 8, 6, seed=21)]
    scale = torch.tensor(1 / 0.1, dtype=torch.float64, requires_grad=True)
    peer_scale = scale.detach().clone().requires_grad_(True)
    ours = _call(objectives.build("symile", negatives=negatives, normalize=False), zs, scale).loss
    peer = _call(symile.Symile(negatives), zs, peer_scale)
    torch.testing.assert_close(ours, peer, **F64)
    torch.testing.assert_close(_grads(ours, [scale])[0], _grads(peer, [peer_scale])[0], **F64)


LOGIT_CASES = [("infonce", {}), ("infonce_anchor", {"anchor": 1}),
               ("infonce_reweighted", {"uniformity_weight": 0.3}), ("dcl", {"pairs": "anchor"}),
               ("cs_aligner", {"bandwidth": 0.5}), ("gram", {}), ("symile", {"negatives": "n_squared"})]


@pytest.mark.parametrize("name,params", LOGIT_CASES, ids=[c[0] for c in LOGIT_CASES])
def test_logit_scale_value_and_gradient_match_the_reference(name, params):
    """logit_scale = 1/tau replaces the temperature and receives dL/dscale (reference: the naive
    loss at temperature 1/scale, differentiated by autograd)."""
    assert name in TEMP
    raw = make_zs(3, 4, 5, seed=41)
    scale = torch.tensor(1 / 0.2, dtype=torch.float64, requires_grad=True)
    zs = _leaves(raw)
    out = objectives.build(name, **params)(zs, logit_scale=scale)
    got = _grads(out.loss, [*zs, scale])
    ref_zs = _leaves(raw)
    ref_scale = scale.detach().clone().requires_grad_(True)
    ref = REFERENCES[name](ref_zs, temperature=1.0 / ref_scale, **params)["loss"]
    want = _grads(ref, [*ref_zs, ref_scale])
    torch.testing.assert_close(out.loss, ref, rtol=1e-9, atol=1e-10)
    for g, h in zip(got, want):
        torch.testing.assert_close(g, h, rtol=1e-7, atol=1e-9)
    assert float(got[-1]) != 0.0


@pytest.mark.parametrize("name", TEMP)
def test_logit_scale_forms_agree_with_the_built_temperature(name):
    """keyword tensor, trailing positional tensor and number: the loss of temperature 1/scale."""
    raw = make_zs(3, 6, 5, seed=12)
    want = _call(objectives.build(name, temperature=0.25).double(), raw).loss
    fn = objectives.build(name).double()
    scale = torch.tensor(4.0, dtype=torch.float64)
    for out in (_call(fn, raw, logit_scale=scale), _call(fn, *raw, scale), _call(fn, raw, scale),
                _call(fn, *raw, logit_scale=4.0)):
        torch.testing.assert_close(out.loss, want, **F64)


@pytest.mark.parametrize("name", TEMP)
def test_logit_scale_lasts_one_call(name):
    """The next call without logit_scale uses the built temperature again, also after a call
    that raised."""
    raw = make_zs(3, 6, 5, seed=13)
    fn = objectives.build(name, temperature=0.3).double()
    before = _call(fn, raw).loss
    _call(fn, raw, logit_scale=torch.tensor(20.0, dtype=torch.float64))
    bad = [raw[0], raw[1] * float("nan"), raw[2]]
    with pytest.raises(ValueError):
        fn(bad, logit_scale=torch.tensor(20.0, dtype=torch.float64))
    assert torch.equal(_call(fn, raw).loss, before)


@pytest.mark.parametrize("name", NO_TEMP)
def test_logit_scale_refused_without_a_temperature(name):
    with pytest.raises(TypeError, match=f"{name} has no temperature"):
        objectives.build(name)(*make_zs(3, 4, 5), logit_scale=torch.tensor(10.0))
    with pytest.raises(TypeError, match=f"{name} has no temperature"):
        objectives.build(name)(*make_zs(3, 4, 5), torch.tensor(10.0))  # open_clip's positional form


def test_logit_scale_refused_with_a_learnable_temperature():
    with pytest.raises(ValueError, match="learnable_temperature=True"):
        objectives.build("infonce", learnable_temperature=True)(make_zs(2, 4, 5),
                                                                logit_scale=torch.tensor(10.0))


@pytest.mark.parametrize("value", [0.0, -3.0, float("nan"), float("inf")])
def test_bad_logit_scale_values(value):
    fn = objectives.build("symile")
    for given in (torch.tensor(value), value):
        with pytest.raises(ValueError, match="logit_scale") as info:
            fn(make_zs(3, 4, 5), logit_scale=given)
        assert repr(value) in str(info.value)


@pytest.mark.parametrize("given", [torch.tensor([1.0, 2.0]), torch.tensor(3), "10"])
def test_bad_logit_scale_types(given):
    with pytest.raises(TypeError, match="logit_scale"):
        objectives.build("infonce")(make_zs(2, 4, 5), logit_scale=given)


def test_logit_scale_given_twice():
    a, b = make_zs(2, 4, 5)
    with pytest.raises(TypeError, match="logit_scale twice"):
        objectives.build("infonce")(a, b, torch.tensor(10.0), logit_scale=torch.tensor(10.0))


def test_tensor_temperature_at_build():
    raw = make_zs(3, 5, 4, seed=14)
    got = objectives.build("infonce", temperature=torch.tensor(0.1, dtype=torch.float64))(raw).loss
    assert torch.equal(got, objectives.build("infonce", temperature=0.1)(raw).loss)
    with pytest.raises(TypeError, match="logit_scale"):
        objectives.build("infonce", temperature=torch.tensor(0.1, requires_grad=True))
    with pytest.raises(TypeError, match="temperature"):
        objectives.build("infonce", temperature=torch.tensor([0.1, 0.2]))


# ----------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("name", ALL)
def test_output_dict_is_the_terms(name):
    raw = make_zs(3, 6, 5, seed=15)
    fn = objectives.build(name).double()
    out = _call(fn, *raw)
    terms = _call(fn, *raw, output_dict=True)
    assert isinstance(terms, dict) and list(terms) == list(out.terms)
    for k in terms:
        assert torch.equal(terms[k], out.terms[k])
    torch.testing.assert_close(sum(terms.values()), out.loss, **F64)
    with pytest.raises(TypeError, match="output_dict"):
        fn(*raw, output_dict="yes")


def test_objective_output_delegates_to_its_loss():
    raw = make_zs(3, 6, 5, seed=16)
    zs = _leaves(raw)
    out = objectives.build("cs_aligner")(*zs)
    want = _grads(out.loss, zs)
    out = objectives.build("cs_aligner")(*zs)
    out.backward()
    assert all(torch.equal(z.grad, g) for z, g in zip(zs, want))
    assert out.item() == out.loss.item() == float(out)
    assert torch.equal(out.detach(), out.loss) and not out.detach().requires_grad


# ----------------------------------------------------------------------------- Temperature switches
@pytest.mark.parametrize("name", TEMP)
def test_default_clamp_is_forward(name):
    assert objectives.parameters(name)["temperature_clamp"] == "forward"
    fn = objectives.build(name, learnable_temperature=True)
    assert fn.temperature.clamp == "forward"


def test_forward_clamp_bounds_the_scale_and_leaves_the_parameter():
    t = Temperature(0.07, learnable=True)
    with torch.no_grad():
        t.log_scale.fill_(6.0)
    assert float(t.scale(torch.float64, CPU).detach()) == pytest.approx(100.0, rel=1e-12)
    t.clamp_()
    assert float(t.log_scale.detach()) == 6.0


def test_after_step_clamp_is_clips():
    """Forward unclamped; clamp_() moves the parameter into [0, ln 100], as CLIP's step does."""
    t = Temperature(0.07, learnable=True, clamp="after_step")
    assert float(t.log_scale.detach()) == pytest.approx(math.log(1 / 0.07), rel=1e-15)
    with torch.no_grad():
        t.log_scale.fill_(6.0)
    assert float(t.scale(torch.float64, CPU).detach()) == pytest.approx(math.exp(6.0), rel=1e-12)
    t.clamp_()
    assert float(t.log_scale.detach()) == pytest.approx(math.log(100), rel=1e-15)
    with torch.no_grad():
        t.log_scale.fill_(-1.0)
    t.clamp_()
    assert float(t.log_scale.detach()) == 0.0


def test_none_is_symiles_unclamped_scale():
    """exp(parameter), never clamped, any initial temperature (also below min_temperature)."""
    t = Temperature(0.001, learnable=True, clamp="none")
    assert float(t.scale(torch.float64, CPU).detach()) == pytest.approx(1000.0, rel=1e-12)
    t2 = Temperature(5.0, learnable=True, clamp="none")
    with torch.no_grad():
        t2.log_scale.fill_(-2.0)
    t2.clamp_()
    assert float(t2.log_scale.detach()) == -2.0
    assert float(t2.scale(torch.float64, CPU).detach()) == pytest.approx(math.exp(-2.0), rel=1e-12)


def test_fixed_temperature_ignores_clamp_():
    t = Temperature(0.005)
    t.clamp_()
    assert t.scale(torch.float64, CPU) == 1 / 0.005


@pytest.mark.parametrize("kwargs,fragment", [
    ({"temperature_clamp": "step"}, "temperature_clamp"),
    ({"temperature_clamp": "after_step", "learnable_temperature": True, "temperature": 2.0},
     "max_temperature"),
    ({"temperature_clamp": "forward", "learnable_temperature": True, "temperature": 0.001},
     "min_temperature"),
])
def test_bad_temperature_settings(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        objectives.build("infonce", **kwargs)


def _clip_run(own_temperature: bool, steps: int = 20):
    """A linear encoder trained CLIP's way on two nearly identical views; the scale is either the
    loop's logit_scale passed to the loss or the objective's temperature with clamp="after_step"."""
    torch.manual_seed(0)
    x = torch.randn(32, 6, dtype=torch.float64)
    y = x + 0.01 * torch.randn(32, 6, dtype=torch.float64)  # matched pairs: the loss favours a large scale
    enc = torch.nn.Linear(6, 4).double()
    init = 0.0102  # ln(1 / 0.0102) = 4.585, just under CLIP's bound ln 100 = 4.605
    if own_temperature:
        fn = objectives.build("infonce", temperature=init, learnable_temperature=True,
                              temperature_clamp="after_step")
        param = fn.temperature.log_scale
    else:
        fn = objectives.build("infonce")
        param = torch.nn.Parameter(torch.tensor(math.log(1 / init), dtype=torch.float64))
    opt = torch.optim.SGD([*enc.parameters(), param], lr=0.05)
    trace = []
    for _ in range(steps):
        out = fn(enc(x), enc(y)) if own_temperature else fn(enc(x), enc(y), param.exp())
        opt.zero_grad()
        out.backward()
        opt.step()
        if own_temperature:
            fn.temperature.clamp_()
        else:
            with torch.no_grad():
                param.clamp_(0, math.log(100))
        trace.append(float(param.detach()))
    return trace, [p.detach().clone() for p in enc.parameters()]


def test_after_step_temperature_trains_like_clips_logit_scale():
    loop_trace, loop_weights = _clip_run(own_temperature=False)
    own_trace, own_weights = _clip_run(own_temperature=True)
    assert loop_trace[0] < math.log(100) and loop_trace[-1] == pytest.approx(math.log(100), rel=1e-15)
    assert loop_trace == pytest.approx(own_trace, rel=1e-12, abs=1e-12)
    for a, b in zip(loop_weights, own_weights):
        torch.testing.assert_close(a, b, **F64)


# ----------------------------------------------------------------------------- the documented loop
DOC = Path(__file__).resolve().parents[1] / "docs" / "drop-in.md"


def _doc_block(marker: str) -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL) if marker in b]
    assert len(blocks) == 1, f"expected one python block of docs/drop-in.md containing {marker!r}"
    return blocks[0]


def test_documented_open_clip_loop_trains_the_logit_scale(capsys):
    ns: dict = {"__name__": "__docs__"}
    exec(compile(_doc_block("logit_scale.clamp_(0, math.log(100))"), "docs/drop-in.md", "exec"), ns)
    logit_scale, optimizer = ns["logit_scale"], ns["optimizer"]
    assert abs(logit_scale.item() - math.log(1 / 0.07)) > 1e-3  # its gradient reached it
    no_decay = [g for g in optimizer.param_groups if g["weight_decay"] == 0.0]
    assert any(p is logit_scale for g in no_decay for p in g["params"])
    decayed = [p for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert all(p is not logit_scale for p in decayed)
    history = ns["history"]
    assert sum(history[-10:]) < sum(history[:10])


# ----------------------------------------------------------------------------- autocast
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ALL)
def test_autocast_computes_in_float32(name, dtype):
    """Under CPU autocast every objective runs and equals the autocast-free float32 call, bit for
    bit, in value and gradient; half-precision embeddings get float32-computed losses too."""
    raw = make_zs(3, 8, 6, dtype=torch.float32, seed=17)
    fn = objectives.build(name)
    zs = _leaves(raw)
    want = _call(fn, *zs)
    want_grads = _grads(want.loss, zs)
    zs = _leaves(raw)
    with torch.autocast("cpu", dtype=dtype):
        got = _call(fn, *zs)
    assert got.loss.dtype == torch.float32 and all(t.dtype == torch.float32 for t in got.terms.values())
    assert torch.equal(got.loss, want.loss)
    assert all(torch.equal(g, h) for g, h in zip(_grads(got.loss, zs), want_grads))

    half = [z.to(dtype).requires_grad_(True) for z in raw]
    with torch.autocast("cpu", dtype=dtype):
        got = _call(fn, half)
    assert torch.equal(got.loss, _call(fn, [z.detach().float() for z in half]).loss)
    grads = _grads(got.loss, half)
    assert all(g.dtype == dtype and torch.isfinite(g).all() for g in grads)


def test_autocast_training_step_of_a_model():
    """Encoders under bfloat16 autocast produce bfloat16 embeddings; the loss is float32 and the
    encoders get finite gradients."""
    torch.manual_seed(0)
    enc = torch.nn.Linear(12, 8)
    x = torch.randn(3, 16, 12)
    fn = objectives.build("unialign")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = enc(x)
        assert feats.dtype == torch.bfloat16
        out = fn(*feats.unbind(0))
    assert out.loss.dtype == torch.float32
    out.backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in enc.parameters())


# ----------------------------------------------------------------------------- CUDA
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize("name", ALL)
def test_cuda_matches_cpu(name):
    raw = make_zs(3, 32, 16, dtype=torch.float32, seed=18)
    fn = objectives.build(name)
    zs = _leaves(raw)
    want = _call(fn, *zs)
    want_grads = _grads(want.loss, zs)
    zs_cuda = [z.detach().cuda().requires_grad_(True) for z in raw]
    got = _call(fn.cuda(), *zs_cuda)
    torch.testing.assert_close(got.loss.cpu(), want.loss, rtol=1e-4, atol=1e-5)
    for g, h in zip(_grads(got.loss, zs_cuda), want_grads):
        torch.testing.assert_close(g.cpu(), h, rtol=1e-3, atol=1e-5)


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ALL)
def test_cuda_autocast_computes_in_float32(name, dtype):
    raw = make_zs(3, 32, 16, dtype=torch.float32, seed=19)
    fn = objectives.build(name).cuda()
    zs = [z.cuda().requires_grad_(True) for z in raw]
    want = _call(fn, *zs)
    with torch.autocast("cuda", dtype=dtype):
        got = _call(fn, *zs)
    assert got.loss.dtype == torch.float32
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-6, atol=1e-6)
    assert all(torch.isfinite(g).all() for g in _grads(got.loss, zs))


@cuda
def test_cuda_logit_scale_receives_its_gradient():
    img, txt = (z.cuda().requires_grad_(True) for z in make_zs(2, 32, 16, dtype=torch.float32, seed=20))
    scale = torch.tensor(1 / 0.07, device="cuda", requires_grad=True)
    out = objectives.build("infonce")(img, txt, scale)
    ref = _clip_loss(img, txt, scale)
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_grads(out.loss, [scale])[0], _grads(ref, [scale])[0], rtol=1e-4, atol=1e-5)
