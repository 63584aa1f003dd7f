"""Our ``symile`` objective against the PyPI peer implementation ``symile.Symile`` (values and
gradients), and our naive reference against the peer (so that the reference is anchored too).

The peer does not normalise: it is fed rows we normalise ourselves (differentiably, so gradients
with respect to the raw inputs are comparable), and ours is run both with its default
normalize=True on the raw inputs and with normalize=False on unit rows. For negatives="n" the peer
draws torch.randperm from the global RNG; both sides are run under the same torch.manual_seed.
The peer's "n_squared" needs M >= 3 (its recursion has no M = 2 base case)."""

import pytest
import torch
from reference_losses import make_zs, ref_symile

import objectives


def _f(x):
    """float() of a tensor or number, without the requires_grad warning."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


symile = pytest.importorskip("symile")


def _peer(zs_unit, tau, negatives, seed=None):
    if seed is not None:
        torch.manual_seed(seed)
    scale = torch.tensor(1.0 / tau, dtype=zs_unit[0].dtype)
    return symile.Symile(negatives)(list(zs_unit), scale)


def _normalise(zs):
    return [z / z.norm(dim=1, keepdim=True) for z in zs]


CASES = [
    ("n_squared", 3, 5, 8, 0.07),
    ("n_squared", 3, 8, 4, 0.01),
    ("n_squared", 3, 2, 16, 1.0),
    ("n_squared", 4, 3, 8, 0.07),
    ("n_squared", 4, 4, 5, 0.5),
    ("n_squared", 5, 2, 6, 0.07),
    ("n", 2, 6, 8, 0.07),
    ("n", 3, 8, 8, 0.07),
    ("n", 3, 16, 4, 0.01),
    ("n", 4, 5, 16, 1.0),
    ("n", 6, 7, 8, 0.07),
]


def _ids(c):
    return "-".join(str(x) for x in c)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_matches_peer_values_and_gradients(case, dtype):
    negatives, M, B, d, tau = case
    raw = make_zs(M, B, d, dtype=dtype, seed=M * 100 + B)
    seed = 1000 + B
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)

    zs_peer = [z.detach().clone().requires_grad_(True) for z in raw]
    peer = _peer(_normalise(zs_peer), tau, negatives, seed)
    g_peer = torch.autograd.grad(peer, zs_peer)

    zs_ours = [z.detach().clone().requires_grad_(True) for z in raw]
    fn = objectives.build("symile", temperature=tau, negatives=negatives)
    torch.manual_seed(seed)
    out = fn(zs_ours)
    g_ours = torch.autograd.grad(out.loss, zs_ours)

    torch.testing.assert_close(out.loss.detach(), peer.detach(), **tol)
    for a, b in zip(g_ours, g_peer):
        torch.testing.assert_close(a, b, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10 * _f(b.abs().max()))

    # normalize=False on unit rows, same seed: same value
    units = [z.detach() for z in _normalise(raw)]
    torch.manual_seed(seed)
    out2 = objectives.build("symile", temperature=tau, negatives=negatives, normalize=False)(units)
    torch.testing.assert_close(out2.loss.detach(), peer.detach(), **tol)

    # both sides consumed the same amount of global RNG
    torch.manual_seed(seed)
    fn(zs_ours)
    after_ours = torch.rand(3)
    torch.manual_seed(seed)
    _peer(_normalise(raw), tau, negatives)
    after_peer = torch.rand(3)
    assert torch.equal(after_ours, after_peer), "different RNG consumption than the peer"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_reference_matches_peer(case):
    negatives, M, B, d, tau = case
    if negatives == "n_squared" and B ** M * M > 3000:
        pytest.skip("too slow for the naive reference")
    raw = make_zs(M, B, d, seed=M * 100 + B)
    peer = _peer(_normalise(raw), tau, negatives, seed=7)
    torch.manual_seed(7)
    ref = ref_symile(raw, tau, negatives)
    assert abs(_f(ref["loss"]) - _f(peer)) <= 1e-10 * max(1.0, abs(_f(peer)))


def test_learnable_temperature_matches_peer_logit_scale_gradient():
    """With a learnable temperature the loss equals the peer at logit_scale = 1/tau; the gradient
    wrt tau (chain rule from the peer's logit-scale gradient) has the same sign."""
    M, B, d, tau = 3, 6, 8, 0.1
    raw = make_zs(M, B, d, seed=5)
    scale = torch.tensor(1.0 / tau, dtype=torch.float64, requires_grad=True)
    peer = symile.Symile("n_squared")(_normalise(raw), scale)
    (g_scale,) = torch.autograd.grad(peer, scale)
    fn = objectives.build("symile", temperature=tau, negatives="n_squared", learnable_temperature=True).double()
    out = fn(raw)
    # rtol 1e-7: the temperature parameter is created in float32, so tau = 0.1 to float32 precision
    torch.testing.assert_close(out.loss.detach(), peer.detach(), rtol=1e-7, atol=1e-9)
    (p,) = [q for q in fn.parameters() if q.requires_grad]
    (g_p,) = torch.autograd.grad(out.loss, p)
    # dL/dtau = -g_scale / tau^2. Parameterised by log tau: -g_scale / tau; by log(1/tau):
    # +g_scale / tau; by tau: -g_scale / tau^2; by 1/tau: g_scale.
    gs = _f(g_scale)
    expected = [-gs / tau, gs / tau, -gs / tau ** 2, gs]
    assert gs != 0.0
    assert min(abs(_f(g_p) - e) for e in expected) <= 1e-8 * abs(gs) / tau ** 2, (
        f"temperature-parameter gradient {_f(g_p)} matches none of {expected}")


def test_peer_n_squared_column_count():
    """The peer's n_squared logits have B^(M-1) columns (what 'all combinations' means)."""
    zs = _normalise(make_zs(4, 3, 5))
    logits = symile.Symile("n_squared").compute_logits_n_squared(zs[0], zs[1:])
    assert logits.shape == (3, 27)


@pytest.mark.parametrize("negatives,M", [("n", 2), ("n", 4), ("n_squared", 3)])
def test_raw_rows_match_the_peer_with_normalize_false(negatives, M):
    """The original feeds LayerNorm outputs without L2 normalisation: with normalize=False ours
    scores rows of any norm as given, like the peer (values and gradients)."""
    zs = [(3.0 * z).requires_grad_(True) for z in make_zs(M, 6, 5, seed=11)]
    ours = objectives.build("symile", temperature=0.2, negatives=negatives, normalize=False)
    torch.manual_seed(5)
    got = ours(zs).loss
    g_ours = torch.autograd.grad(got, zs)
    want = _peer(zs, 0.2, negatives, seed=5)
    g_peer = torch.autograd.grad(want, zs)
    assert abs(_f(zs[0].norm(dim=1).mean()) - 1.0) > 0.5  # really not unit rows
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_ours, g_peer):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_other_objectives_still_require_unit_rows_with_normalize_false():
    zs = [3.0 * z for z in make_zs(3, 6, 5, seed=1)]
    with pytest.raises(ValueError, match="unit L2 norm"):
        objectives.build("infonce", normalize=False)(zs)
