"""The small-batch path of the InfoNCE family (objectives.kernels.small.small_contrastive: normalisation
and every pair in one autograd node) against the general path (unit_rows, modality_quadratic and the
fused group kernel as separate nodes), forward and backward, term by term; and which inputs take it.

The reference tests (test_objectives_reference.py) already compare both against the naive loop
references: at their batch sizes the eligible configurations run the small path, so here the
general path is forced for the same inputs (``SMALL_MAX_BATCH = 0``) and the two must agree.
"""

from __future__ import annotations

import pytest
import torch
from reference_losses import make_zs

import objectives
from objectives.kernels import small as small_path

CONFIGS = [
    ("infonce", {}),
    ("infonce", {"temperature": 0.2}),
    ("infonce_anchor", {"anchor": 0}),
    ("infonce_anchor", {"anchor": 1}),  # partners on both sides of the anchor
    ("infonce_anchor", {"anchor": "last"}),
    ("infonce_reweighted", {"uniformity_weight": 0.3, "pairs": "all"}),
    ("infonce_reweighted", {"uniformity_weight": 2.0, "pairs": "anchor", "anchor": 1}),
]


def _params(params, M):
    return {k: (M - 1 if v == "last" else v) for k, v in params.items()}


def _run(name, params, raw, dtype, general, monkeypatch, stacked=False):
    if general:
        monkeypatch.setattr(small_path, "SMALL_MAX_BATCH", 0)
    else:
        monkeypatch.setattr(small_path, "SMALL_MAX_BATCH", 256)
    zs = [z.detach().to(dtype).requires_grad_(True) for z in raw]
    fn = objectives.build(name, **params)
    out = fn(torch.stack(zs) if stacked else zs)
    grads = {k: torch.autograd.grad(t, zs, retain_graph=True) for k, t in out.terms.items()}
    grads["loss"] = torch.autograd.grad(out.loss, zs)
    return out, grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("M", "B", "d"), [(2, 2, 3), (2, 7, 5), (3, 16, 8), (4, 5, 3), (6, 4, 16)])
@pytest.mark.parametrize("name,params", CONFIGS, ids=lambda x: x if isinstance(x, str) else str(x))
def test_small_path_matches_general_path(name, params, M, B, d, dtype, monkeypatch):
    raw = make_zs(M, B, d, seed=M * 100 + B)
    params = _params(params, M)
    small, g_small = _run(name, params, raw, dtype, False, monkeypatch)
    general, g_general = _run(name, params, raw, dtype, True, monkeypatch)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-6}
    assert set(small.terms) == set(general.terms)
    torch.testing.assert_close(small.loss, general.loss, **tol)
    for key in small.terms:
        torch.testing.assert_close(small.terms[key], general.terms[key], **tol)
    for key in g_small:  # the loss and each term separately (role gradients)
        for a, b in zip(g_small[key], g_general[key]):
            torch.testing.assert_close(a, b, **tol)


def test_stacked_tensor_and_list_agree(monkeypatch):
    raw = make_zs(3, 6, 4, seed=5)
    listed, g_list = _run("infonce", {}, raw, torch.float64, False, monkeypatch)
    stacked, g_stack = _run("infonce", {}, raw, torch.float64, False, monkeypatch, stacked=True)
    torch.testing.assert_close(listed.loss, stacked.loss, rtol=1e-14, atol=1e-14)
    for a, b in zip(g_list["loss"], g_stack["loss"]):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)


def test_gradcheck_small_path():
    fn = objectives.build("infonce_anchor", anchor=1, temperature=0.1)
    zs = [z.detach().requires_grad_(True) for z in make_zs(3, 4, 3, seed=9)]
    assert torch.autograd.gradcheck(lambda *z: fn(list(z)).loss, zs, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_zero_row_gets_f_normalize_gradient(monkeypatch):
    """An exactly zero row: F.normalize's gradient g / eps on both paths (finite, equal)."""
    raw = make_zs(2, 4, 3, seed=2)
    raw[0][1] = 0.0
    small, g_small = _run("infonce", {}, raw, torch.float64, False, monkeypatch)
    general, g_general = _run("infonce", {}, raw, torch.float64, True, monkeypatch)
    torch.testing.assert_close(small.loss, general.loss, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_small["loss"], g_general["loss"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))


def _spy(monkeypatch):
    calls = []
    original = small_path._SmallContrastive.apply

    def apply(*args):
        calls.append(True)
        return original(*args)

    monkeypatch.setattr(small_path._SmallContrastive, "apply", apply)
    return calls


@pytest.mark.parametrize(("name", "params", "call", "taken"), [
    ("infonce", {}, {}, True),
    ("infonce_anchor", {"anchor": 2}, {}, True),
    ("infonce", {}, {"batch": 257}, False),  # beyond SMALL_MAX_BATCH
    ("infonce", {"temperature": 0.01}, {}, False),  # scale 100: exp needs a shift
    ("infonce", {"learnable_temperature": True}, {}, False),
    ("infonce", {}, {"logit_scale": "tensor"}, False),
    ("infonce", {}, {"logit_scale": 20.0}, True),
    ("dcl", {}, {}, False),
    ("infonce", {"normalize": False}, {}, False),
    ("infonce", {"chunk_size": 2}, {}, False),
    ("infonce", {}, {"dtype": torch.bfloat16}, False),
    ("infonce_anchor", {"anchor": 5}, {}, False),  # out of range: the general path raises
])
def test_which_inputs_take_the_small_path(name, params, call, taken, monkeypatch):
    calls = _spy(monkeypatch)
    batch = call.get("batch", 8)
    zs = [torch.nn.functional.normalize(z, dim=-1).to(call.get("dtype", torch.float32))
          for z in make_zs(3, batch, 4, seed=1, dtype=torch.float32)]
    fn = objectives.build(name, **params)
    scale = call.get("logit_scale")
    kwargs = {} if scale is None else {"logit_scale": torch.tensor(14.0) if scale == "tensor" else scale}
    try:
        fn(zs, **kwargs)
    except ValueError:
        assert not taken  # reported by the general path's input checks
    assert bool(calls) == taken


def test_malformed_inputs_still_raise_the_general_errors():
    fn = objectives.build("infonce")
    with pytest.raises(ValueError, match="same"):
        fn([torch.randn(4, 3), torch.randn(5, 3)])
    with pytest.raises(ValueError, match="dtype"):
        fn([torch.randn(4, 3), torch.randn(4, 3, dtype=torch.float64)])
    with pytest.raises(ValueError, match="NaN or inf"):
        fn([torch.randn(4, 3), torch.full((4, 3), float("nan"))])


def test_small_path_row_below_eps_gets_the_f_normalize_gradient():
    """A row of norm between 0 and eps is scaled by 1 / eps, not projected, as F.normalize does."""
    import torch.nn.functional as F

    from objectives.kernels.small import small_contrastive

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(2)]
    xs[0][1] = torch.tensor([0.9e-12, 0.0, 0.0], dtype=torch.float64)
    xs = [x.requires_grad_() for x in xs]
    align, unif = small_contrastive(xs, ((0, 1),), 10.0)
    got = torch.autograd.grad(align + unif, xs)
    u = F.normalize(torch.stack(xs), dim=-1, eps=1e-12)
    s = 10.0 * u[0] @ u[1].T
    ref = -s.diagonal().sum() / 4 + 0.5 * (torch.logsumexp(s, 1).sum() + torch.logsumexp(s, 0).sum()) / 4
    want = torch.autograd.grad(ref, xs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-3)  # entries ~1e11 at the tiny row
    assert abs(float(got[0][1, 0]) - float(want[0][1, 0])) <= 1e-9 * abs(float(want[0][1, 0]))


def test_small_path_row_of_norm_exactly_eps_is_projected_as_by_f_normalize():
    import torch.nn.functional as F

    from objectives.kernels.small import small_contrastive

    xs = [torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.6, 0.8]], dtype=torch.float64, requires_grad=True),
          torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)]
    align, unif = small_contrastive(xs, ((0, 1),), 3.0, eps=0.5)
    got = torch.autograd.grad(2.0 * align + unif, xs)
    u = F.normalize(torch.stack(xs), dim=-1, eps=0.5)
    s = 3.0 * u[0] @ u[1].T
    ref = 2.0 * -s.diagonal().sum() / 2 + 0.5 * (torch.logsumexp(s, 1).sum() + torch.logsumexp(s, 0).sum()) / 2
    for a, b in zip(got, torch.autograd.grad(ref, xs)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_repeated_calls_take_the_cached_signature_and_agree_with_the_general_path(monkeypatch):
    """forward keeps each signature's verdict: the second call of a shape equals the first and the
    general path (loss, terms, gradients); another shape, a malformed call and an out-of-range anchor
    after it are still judged afresh."""
    calls = _spy(monkeypatch)
    fn = objectives.build("infonce_reweighted", uniformity_weight=0.4)
    raw = make_zs(3, 6, 5, seed=11)
    zs = [z.detach().requires_grad_(True) for z in raw]
    first, second = fn(zs), fn(zs)
    assert len(calls) == 2
    general, g_general = _run("infonce_reweighted", {"uniformity_weight": 0.4}, raw, torch.float64, True,
                              monkeypatch)
    torch.testing.assert_close(second.loss, general.loss, rtol=1e-12, atol=1e-12)
    assert second.roles == general.roles and set(second.terms) == set(general.terms)
    for key, term in second.terms.items():
        torch.testing.assert_close(term, first.terms[key], rtol=0, atol=0)
        for a, b in zip(torch.autograd.grad(term, zs, retain_graph=True), g_general[key]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="same"):
        fn([zs[0], zs[1][:5], zs[2]])
    anchored = objectives.build("infonce_anchor", anchor=2)
    anchored(zs)
    with pytest.raises(ValueError, match="anchor=2 is out of range"):
        anchored(zs[:2])
