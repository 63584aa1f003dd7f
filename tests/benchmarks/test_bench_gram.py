"""GRAM (base-volume x height factorisation) against the direct determinant formulation and against
anchor-based InfoNCE, which does the same matmul work (same group per size); and the small-batch
sizes of the InfoNCE family, where one fused node has to beat the naive per-pair loop.

The speed targets themselves are judged by ``python -m harness throughput --targets --parts 6``
(``results/throughput_targets.md``); these benchmarks are for before/after comparisons.
"""

import pytest

GRAM_SIZES = [(3, 256, 64), (4, 256, 64), (3, 1024, 256)]


@pytest.mark.parametrize("impl", ["gram", "gram_direct", "infonce_anchor"])
@pytest.mark.parametrize("M,B,d", GRAM_SIZES, ids=[f"M{m}-B{b}-d{d}" for m, b, d in GRAM_SIZES])
def test_gram_vs_direct(benchmark, fwd_bwd_of, impl, M, B, d):
    benchmark.group = f"gram vs direct M={M} B={B} d={d}"
    benchmark.extra_info.update(impl=impl, M=M, B=B, d=d)
    benchmark(fwd_bwd_of(impl, M, B, d))


SMALL = [(2, 32, 32), (2, 64, 64), (3, 32, 32)]


@pytest.mark.parametrize("impl", ["infonce", "infonce_anchor", "naive_clip_loop"])
@pytest.mark.parametrize("M,B,d", SMALL, ids=[f"M{m}-B{b}-d{d}" for m, b, d in SMALL])
def test_small_batch_vs_naive(benchmark, fwd_bwd_of, impl, M, B, d):
    benchmark.group = f"small batch M={M} B={B} d={d}"
    benchmark.extra_info.update(impl=impl, M=M, B=B, d=d)
    benchmark(fwd_bwd_of(impl, M, B, d))


SMALL_GRAM = [(2, 32, 32), (2, 256, 128), (3, 64, 64), (3, 128, 128), (4, 64, 64), (2, 512, 128)]


@pytest.mark.parametrize("path", ["small", "fused"])
@pytest.mark.parametrize("M,B,d", SMALL_GRAM, ids=[f"M{m}-B{b}-d{d}" for m, b, d in SMALL_GRAM])
def test_gram_small_path_vs_fused(benchmark, fwd_bwd_of, monkeypatch, path, M, B, d):
    """Where GRAM's small-batch path pays (objectives.kernels.volume_small.SMALL_VOLUME_MAX_COLUMNS)."""
    from objectives.kernels import volume_small

    monkeypatch.setattr(volume_small, "SMALL_VOLUME_MAX_COLUMNS", 10**9 if path == "small" else 0)
    benchmark.group = f"gram small path vs fused M={M} B={B} d={d}"
    benchmark.extra_info.update(path=path, M=M, B=B, d=d)
    benchmark(fwd_bwd_of("gram", M, B, d))


SCORING = [(3, 1000, 64), (6, 1000, 64), (3, 2000, 128)]


@pytest.mark.parametrize("how", ["factored", "direct"])
@pytest.mark.parametrize("M,B,d", SCORING, ids=[f"M{m}-B{b}-d{d}" for m, b, d in SCORING])
def test_scoring_volumes_factored_vs_direct(benchmark, how, M, B, d):
    """GRAM's own-rule retrieval scores (no gradient): tuple_volumes against B^2 determinants."""
    import torch

    from objectives.kernels import gram_volumes, tuple_volumes

    gen = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(M, B, d, generator=gen), dim=-1)
    benchmark.group = f"scoring volumes M={M} B={B} d={d}"
    benchmark.extra_info.update(how=how, M=M, B=B, d=d)
    if how == "factored":
        benchmark(tuple_volumes, z[0], z[1:])
    else:
        benchmark(gram_volumes, z[0], z[1:], 0.0)
