"""Forward + backward of every objective over M and batch size (one group per (M, B): objectives side by side)."""

import pytest

import objectives

MS = (2, 3, 4)
BS = (64, 256)


@pytest.mark.parametrize("B", BS)
@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize("name", objectives.available())
def test_objective_fwd_bwd(benchmark, fwd_bwd_of, name, M, B):
    benchmark.group = f"objectives M={M} B={B} d=64"
    benchmark.extra_info.update(objective=name, M=M, B=B, d=64)
    benchmark(fwd_bwd_of(name, M, B))
