"""torch.compile and host-device synchronisation (docs/drop-in.md): every objective compiles with
fullgraph=True and equals eager in value and gradient; the batched self-similarity kernel is
traceable; the device median equals the numpy selection; the accelerator path of a loss call reads
nothing back on the host. Whole-objective compilations take seconds each: they are marked slow,
one small compilation per kind stays in the default run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch._functorch.config as functorch_config
import torch._inductor.config as inductor_config
from reference_losses import make_zs

import objectives
import objectives._base as base
from objectives import kernels
from objectives.kernels import device, distances

ALL = objectives.available()
F64 = dict(rtol=1e-9, atol=1e-11)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles new modules: start from an empty cache (no recompile limit reached)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _run(fn, zs, seed=7, **kwargs):
    """(loss, terms, gradients w.r.t. zs and the objective's parameters) of one call."""
    zs = [z.detach().clone().requires_grad_(True) for z in zs]
    torch.manual_seed(seed)
    out = fn(zs, **kwargs)
    params = [p for p in fn.parameters() if p.requires_grad] if isinstance(fn, torch.nn.Module) else []
    extra = [v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    grads = torch.autograd.grad(out.loss, [*zs, *params, *extra])
    return out.loss.detach(), {k: v.detach() for k, v in out.terms.items()}, grads


def _assert_compiled_equals_eager(fn, zs, backend, tol=F64, **kwargs):
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    got = _run(compiled, zs, **kwargs)
    want = _run(fn, zs, **kwargs)
    torch.testing.assert_close(got[0], want[0], **tol)
    assert got[1].keys() == want[1].keys()
    for k in want[1]:
        torch.testing.assert_close(got[1][k], want[1][k], **tol)
    for g, h in zip(got[2], want[2]):
        torch.testing.assert_close(g, h, **tol)


# ----------------------------------------------------------------------------- default run (small)
@pytest.mark.parametrize("bandwidth", ["float", "tensor"])
def test_self_similarity_kernel_traces_without_an_aliased_gradient(bandwidth):
    """The batched self-similarity Function compiles whole (its saved gradient used to be an
    in-place result, which torch.compile rejects), with a number or a device-held bandwidth."""
    z = torch.nn.functional.normalize(torch.randn(3, 12, 5, dtype=torch.float64), dim=-1)
    width = 0.7 if bandwidth == "float" else torch.tensor(0.7, dtype=torch.float64)

    def f(z):
        return kernels.sphere_self_log_mean_kernels(z, width, True, row_norm=1.001).sum()

    zc, ze = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(zc)
    want = f(ze)
    torch.testing.assert_close(got, want, **F64)
    torch.testing.assert_close(torch.autograd.grad(got, zc)[0], torch.autograd.grad(want, ze)[0], **F64)


def test_infonce_with_a_logit_scale_compiles_whole():
    img, txt = make_zs(2, 10, 6, seed=1)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    _assert_compiled_equals_eager(objectives.build("infonce"), [img, txt], "aot_eager", logit_scale=scale)


def test_compiled_checks_raise_through_assert_async():
    """Inside a compiled graph the finite and unit-norm checks cannot read the host: they are
    queued with torch._assert_async, which raises on the CPU."""
    zs = make_zs(3, 6, 4, seed=2)
    zs[1] = zs[1].clone()
    zs[1][0, 0] = float("nan")
    fn = torch.compile(objectives.build("align_uniform"), fullgraph=True, backend="aot_eager")
    with pytest.raises(RuntimeError, match="not finite"):
        fn(zs)
    unit = [torch.nn.functional.normalize(z, dim=-1) for z in make_zs(3, 6, 4, seed=3)]
    fn = torch.compile(objectives.build("align_uniform", normalize=False), fullgraph=True,
                       backend="aot_eager")
    fn(unit)
    with pytest.raises(RuntimeError, match="unit L2 norm"):
        fn([unit[0] * 1.01, unit[1], unit[2]])


# ----------------------------------------------------------------------------- median on the device
def _numpy_median(*xs, max_samples=512):
    """The median bandwidth as computed before it moved to the device (numpy's introselect)."""
    per_set = max(1, max_samples // len(xs))
    pooled = torch.cat([x.detach().reshape(-1, x.shape[-1])[:per_set] for x in xs], dim=0)
    pooled = pooled.float() if pooled.dtype in (torch.float16, torch.bfloat16) else pooled
    n = pooled.shape[0]
    d2 = kernels.sq_dists(pooled, pooled)
    d2.fill_diagonal_(-1.0)
    k = n + (n * (n - 1) - 1) // 2
    return max(math.sqrt(max(float(np.partition(d2.numpy().reshape(-1), k)[k]), 0.0)), 1e-3)


MEDIAN_CASES = [
    ("small", lambda g: [torch.randn(5, 3, generator=g)]),
    ("three sets", lambda g: [torch.randn(16, 8, generator=g) for _ in range(3)]),
    ("over 512 rows", lambda g: [torch.randn(300, 6, generator=g) for _ in range(2)]),
    ("ties", lambda g: [torch.randint(0, 3, (20, 2), generator=g).float() for _ in range(2)]),
    ("identical rows", lambda g: [torch.ones(6, 4), torch.ones(6, 4)]),
    ("float64", lambda g: [torch.randn(9, 5, generator=g, dtype=torch.float64) for _ in range(3)]),
    ("bfloat16", lambda g: [torch.randn(12, 5, generator=g).bfloat16() for _ in range(2)]),
]


@pytest.mark.parametrize("case,make", MEDIAN_CASES, ids=[c[0] for c in MEDIAN_CASES])
def test_device_median_is_the_numpy_lower_median(case, make, monkeypatch):
    """The selection used on accelerators and in compiled graphs (torch.kthvalue) gives exactly the
    value of the eager CPU selection and of the former numpy code, so committed results stand."""
    xs = make(torch.Generator().manual_seed(4))
    want = _numpy_median(*xs)
    assert kernels.median_bandwidth(*xs) == want
    host = kernels.median_bandwidth_tensor(*xs)
    monkeypatch.setattr(distances, "reads_are_free", lambda t: False)  # the accelerator branch
    on_device = kernels.median_bandwidth_tensor(*xs)
    assert host.dtype == on_device.dtype == torch.float64 and host.dim() == on_device.dim() == 0
    assert float(host) == float(on_device) == want


def test_compiled_median_equals_eager():
    xs = [torch.randn(40, 7) for _ in range(3)]
    got = torch.compile(kernels.median_bandwidth_tensor, fullgraph=True, backend="aot_eager")(*xs)
    assert float(got) == kernels.median_bandwidth(*xs)


# ----------------------------------------------------------------------------- no host reads
SYNC_FREE = [("align_uniform", {}), ("unialign", {}), ("symile", {}), ("symile", {"negatives": "n_squared"}),
             ("infonce", {}), ("infonce_anchor", {}), ("infonce_reweighted", {})]


@pytest.mark.parametrize("name,params", SYNC_FREE, ids=[f"{n}-{p}" for n, p in SYNC_FREE])
def test_accelerator_path_reads_nothing_on_the_host(name, params, monkeypatch):
    """The control flow a CUDA tensor takes (values are not free to read, checks are queued on the
    device), run on the CPU with every Python-level host read of a tensor refused: forward and
    backward of the loss read nothing back, so on a GPU the call queues work without waiting."""
    fn = objectives.build(name, **params)
    zs = [z.requires_grad_(True) for z in make_zs(3, 64, 8, dtype=torch.float32, seed=5)]
    monkeypatch.setattr(device, "reads_are_free", lambda t: False)
    monkeypatch.setattr(distances, "reads_are_free", lambda t: False)
    monkeypatch.setattr(base, "checks_on_device", lambda t: True)

    def refuse(self, *args, **kwargs):
        raise AssertionError("a host read of a tensor value during the loss call")

    with monkeypatch.context() as m:
        for method in ("item", "__float__", "__int__", "__bool__", "tolist", "numpy"):
            m.setattr(torch.Tensor, method, refuse)
        out = fn(zs)
        out.loss.backward()
    assert torch.isfinite(out.loss.detach()).item()
    assert all(torch.isfinite(z.grad).all() for z in zs)


# ----------------------------------------------------------------------------- every objective (slow)
CONFIGS = [(name, {}) for name in ALL] + [
    ("infonce", {"learnable_temperature": True, "temperature_clamp": "after_step"}),
    ("dcl", {"pairs": "anchor", "anchor": 2}),
    ("cs_aligner", {"pairs": "all", "learnable_temperature": True}),
    ("unialign", {"uniformity": "union", "tuple": "both"}),
    ("unialign", {"uniformity": "anchor", "tuple": "centroid", "renormalize_centroid": False,
                  "chunk_size": 4}),
    ("align_uniform", {"alpha": 1.0}),
    ("symile", {"negatives": "n_squared", "learnable_temperature": True}),
    ("gram", {"learnable_temperature": True, "label_smoothing": 0.1, "anchor": 1}),
]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name,params", CONFIGS, ids=[f"{n}-{p}" for n, p in CONFIGS])
def test_every_objective_compiles_whole(name, params, dtype):
    """fullgraph=True capture (dynamo + AOT autograd) of every objective: values, terms (and their
    dtype) and gradients (embeddings and any learnable temperature) equal eager."""
    fn = objectives.build(name, **params).to(dtype)
    tol = F64 if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)
    _assert_compiled_equals_eager(fn, make_zs(3, 9, 6, dtype=dtype, seed=6), "aot_eager", tol=tol)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_every_objective_with_inductor(name):
    """The default backend (inductor, C++ code generated with gcc) for every objective. Symile's
    random negatives match eager's draws under inductor's fallback_random (otherwise inductor may
    reorder the independent randperm calls), the setting docs/drop-in.md names for that."""
    fn = objectives.build(name).double()
    with inductor_config.patch(fallback_random=name == "symile"):
        _assert_compiled_equals_eager(fn, make_zs(3, 9, 6, seed=8), "inductor")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unialign", "cs_aligner", "symile"])
@functorch_config.patch(backward_pass_autocast="off")
def test_compiled_under_autocast(name):
    """Forward under bfloat16 autocast (float32 inside the objective), backward after leaving it,
    as autocast's documentation prescribes: compiled equals eager. PyTorch traces a compiled
    backward under the forward's autocast unless backward_pass_autocast is "off" (its announced
    future default, the setting docs/drop-in.md recommends)."""
    fn = objectives.build(name)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    raw = make_zs(3, 9, 6, dtype=torch.float32, seed=9)
    results = []
    for f in (compiled, fn):
        zs = [z.clone().requires_grad_(True) for z in raw]
        torch.manual_seed(7)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = f(zs)
        assert out.loss.dtype == torch.float32
        results.append((out.loss.detach(), torch.autograd.grad(out.loss, zs)))
    tol = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0][0], results[1][0], **tol)
    for g, h in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g, h, **tol)


# ----------------------------------------------------------------------------- CUDA
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize("name,params", SYNC_FREE, ids=[f"{n}-{p}" for n, p in SYNC_FREE])
def test_cuda_loss_call_does_not_synchronise(name, params):
    """With CUDA's sync debug mode set to error, a forward and backward raise on any
    synchronising call (host reads, pageable copies)."""
    fn = objectives.build(name, **params).cuda()
    zs = [z.cuda().requires_grad_(True) for z in make_zs(3, 256, 32, dtype=torch.float32, seed=10)]
    fn(zs).loss.backward()  # warm-up: cuBLAS handles, allocator pools
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = fn(zs)
        out.loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert torch.isfinite(out.loss).item()


@cuda
def test_cuda_median_equals_the_cpu_selection():
    values = torch.randn(700 * 700)
    k = 123_456
    assert torch.equal(distances._kth_smallest(values.cuda(), k).cpu(), distances._kth_smallest(values, k))


@cuda
@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_cuda_compiled_equals_eager(name):
    fn = objectives.build(name).cuda()
    zs = [z.cuda() for z in make_zs(3, 64, 16, dtype=torch.float32, seed=11)]
    with inductor_config.patch(fallback_random=name == "symile"):
        _assert_compiled_equals_eager(fn, zs, "inductor", tol=dict(rtol=1e-4, atol=1e-5))
