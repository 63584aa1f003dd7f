"""Our symile objective against the PyPI symile package on the same inputs (same group per size)."""

import pytest

pytest.importorskip("symile")

SIZES = [(3, 64, 64), (3, 256, 64), (4, 256, 128), (6, 512, 64)]


@pytest.mark.parametrize("impl", ["symile", "symile_package"])
@pytest.mark.parametrize("M,B,d", SIZES, ids=[f"M{m}-B{b}-d{d}" for m, b, d in SIZES])
def test_symile_vs_package(benchmark, fwd_bwd_of, impl, M, B, d):
    benchmark.group = f"symile vs package M={M} B={B} d={d}"
    benchmark.extra_info.update(impl=impl, M=M, B=B, d=d)
    benchmark(fwd_bwd_of(impl, M, B, d))
