"""pytest-benchmark set-up for the loss kernels (kept out of the default run by --benchmark-skip).

Run:      python -m pytest tests/benchmarks --benchmark-only      (warm-up on: see pyproject.toml)
Save:     python -m pytest tests/benchmarks --benchmark-only --benchmark-autosave      (.benchmarks/)
Compare:  python -m pytest tests/benchmarks --benchmark-only --benchmark-compare=0001 --benchmark-compare-fail=min:25%
Saved runs:  pytest-benchmark compare 0001 0002 --group-by=group --columns=min,median,rounds
(docs/benchmarks.md; the `bench` extra installs the histogram dependency for --benchmark-histogram)

Each benchmark times one forward + backward of a loss on raw (B, d) leaf tensors (float32, CPU),
the same callable as ``python -m harness throughput`` (harness.bench.impls.fwd_bwd).
"""

from __future__ import annotations

import pytest
import torch

from harness.bench import impls as tp

D = 64


@pytest.fixture
def fwd_bwd_of():
    """fwd_bwd_of(impl_name, M, B, d=D, **params) -> a no-argument callable (one forward + backward)."""

    def make(name: str, M: int, B: int, d: int = D, **params):
        if name in ("unialign", "cs_aligner") and "bandwidth" not in params:
            params["bandwidth"] = tp.NUMERIC_BANDWIDTH  # the median heuristic would dominate the timing
        impl = tp.Impl(name, tuple(sorted(params.items())))
        zs = tp.make_inputs(M, B, d, torch.float32, torch.device("cpu"))
        return tp.fwd_bwd(tp.make_loss(impl, torch.device("cpu")), zs)

    return make
