"""Evaluation in bounded memory: the blocked retrieval, uniformity and the seeded instrument sample
against the whole-matrix formulations (exact for ranks, allclose for floats)."""

from __future__ import annotations

import pytest
import torch

from harness.experiment import metrics as hm
from harness.instruments import gap
from harness.instruments._inputs import sample_rows


def _zs(M: int, n: int, d: int, seed: int = 0, ties: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    zs = [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(M)]
    if ties:  # repeated rows: scores tie exactly, and ties count in favour of the true match
        for z in zs:
            z[1::4] = z[0::4][: z[1::4].shape[0]]
    return zs


def _whole_own(zs, rule, anchor=0):
    """The own-rule ranks from the whole (n x n) score matrices (the formulation before blocking)."""
    s = hm.tuple_scores(zs, anchor, rule)
    tasks = {"anchor->tuple": hm.ranks_from_scores(s), "tuple->anchor": hm.ranks_from_scores(s.T)}
    for m in range(len(zs)):
        if m != anchor:
            tasks[f"rest->{m}"] = hm.ranks_from_scores(hm.tuple_scores(zs, m, rule).T)
    return tasks


@pytest.mark.parametrize("block", [1, 3, 7, 37, 1000])
@pytest.mark.parametrize("ties", [False, True])
def test_cosine_ranks_blocked_equal_the_whole_matrix(block, ties):
    q, g = _zs(2, 37, 5, seed=block, ties=ties)
    whole = hm.ranks_from_scores(hm._unit(q) @ hm._unit(g).T)
    assert torch.equal(hm.retrieval_ranks(q, g, block=block), whole)


@pytest.mark.parametrize("rule", ["gram_volume", "symile_mip", "cosine_sum"])
@pytest.mark.parametrize("M", [2, 3, 4])
@pytest.mark.parametrize("block", [1, 5, 64])
def test_own_rule_ranks_blocked_equal_the_whole_matrices(rule, M, block):
    zs = _zs(M, 29, 6, seed=M)
    got = hm.own_retrieval_metrics(zs, rule, block=block)
    ref = hm._summarise(_whole_own(zs, rule), (1, 5, 10))
    for key, v in ref.items():
        assert got[key] == v, key  # ranks are exact, so every statistic of them is too


def test_own_rule_anchor_choice_and_metrics_equal_for_every_block():
    zs = _zs(3, 41, 4, seed=3)
    for rule in ("gram_volume", "symile_mip", "cosine_sum"):
        a = hm.own_retrieval_metrics(zs, rule, anchor=1, block=2)
        b = hm.own_retrieval_metrics(zs, rule, anchor=1, block=10_000)
        assert a == b
    assert hm.retrieval_metrics(zs, block=1) == hm.retrieval_metrics(zs, block=10_000)


def test_blocks_never_exceed_the_block_rows(monkeypatch):
    # the scores are asked for in (<= block) x n pieces: peak memory O(block x n), never n x n
    zs = _zs(3, 50, 4, seed=1)
    shapes = []
    real = hm.blocked_ranks

    def spy(scores_of, n, block=hm.RETRIEVAL_BLOCK):
        def recorded(s0, s1):
            s = scores_of(s0, s1)
            shapes.append(tuple(s.shape))
            return s
        return real(recorded, n, block)

    monkeypatch.setattr(hm, "blocked_ranks", spy)
    hm.retrieval_metrics(zs, block=8)
    hm.own_retrieval_metrics(zs, "gram_volume", block=8)
    assert shapes and max(r for r, _ in shapes) == 8 and {c for _, c in shapes} == {50}
    # 6 ordered pairs + M + 1 own-rule tasks, ceil(50 / 8) = 7 blocks each
    assert len(shapes) == (6 + 4) * 7


def test_blocked_ranks_checks_its_inputs():
    with pytest.raises(ValueError, match="block must be a positive int, got 0"):
        hm.retrieval_ranks(torch.ones(3, 2), torch.ones(3, 2), block=0)
    with pytest.raises(ValueError, match="block must be a positive int"):
        hm.own_retrieval_metrics(_zs(2, 4, 2), "cosine_sum", block=True)
    with pytest.raises(ValueError, match=r"must return shape \(2, 4\)"):
        hm.blocked_ranks(lambda s0, s1: torch.zeros(s1 - s0, 3), 4, block=2)


@pytest.mark.parametrize("block", [1, 4, 13, None])
def test_uniformity_and_gap_blocked_match_whole(block):
    zs = _zs(3, 23, 5, seed=4)
    whole = gap.modality_gap(zs)
    blocked = gap.modality_gap(zs, block=block)
    assert blocked.keys() == whole.keys()
    for k in whole:
        assert blocked[k] == pytest.approx(whole[k], rel=1e-12, abs=1e-12), k
    assert gap.uniformity(zs[0], block=block) == pytest.approx(gap.uniformity(zs[0]), rel=1e-12)
    with pytest.raises(ValueError, match="block must be a positive int or None, got 0"):
        gap.uniformity(zs[0], block=0)


def test_sample_rows_is_seeded_sorted_and_declared():
    a, b = sample_rows(10_000, 2048, 7), sample_rows(10_000, 2048, 7)
    torch.rand(3)  # the global generator does not enter
    assert torch.equal(a, sample_rows(10_000, 2048, 7)) and torch.equal(a, b)
    assert a.numel() == 2048 and torch.equal(a, a.unique()) and int(a.max()) < 10_000
    assert not torch.equal(a, sample_rows(10_000, 2048, 8))
    assert not torch.equal(a, torch.arange(2048))  # a sample, not the first rows
    assert torch.equal(sample_rows(2048, 2048, 7), torch.arange(2048))
    assert torch.equal(sample_rows(5, 2048, 0), torch.arange(5))
    # the same rows as a by-hand draw from a generator seeded alike
    ref = torch.randperm(10_000, generator=torch.Generator().manual_seed(7))[:2048].sort().values
    assert torch.equal(a, ref)
    for args, field in (((10, 0, 0), "max_rows"), ((-1, 5, 0), "n"), ((10, 5, -2), "seed"), ((10, 5.0, 0), "max_rows")):
        with pytest.raises(ValueError, match=f"{field} must be an int"):
            sample_rows(*args)
