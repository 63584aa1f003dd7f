"""The fused all-pairs InfoNCE against the deliberately naive per-pair CLIP loop (same group per size).

Small, overhead-bound batches are included: the fused path must not lose there either.
"""

import pytest

SIZES = [(2, 32, 64), (2, 256, 64), (3, 64, 32), (4, 256, 64), (4, 1024, 128)]


@pytest.mark.parametrize("impl", ["infonce", "naive_clip_loop"])
@pytest.mark.parametrize("M,B,d", SIZES, ids=[f"M{m}-B{b}-d{d}" for m, b, d in SIZES])
def test_infonce_vs_naive(benchmark, fwd_bwd_of, impl, M, B, d):
    benchmark.group = f"infonce vs naive M={M} B={B} d={d}"
    benchmark.extra_info.update(impl=impl, M=M, B=B, d=d)
    benchmark(fwd_bwd_of(impl, M, B, d))
