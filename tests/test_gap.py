"""harness.instruments.gap on constructed inputs whose answers are known in closed form."""

import math

import pytest
import torch
import torch.nn.functional as F

from harness.instruments import gap

F64 = torch.float64


def unit(x):
    return F.normalize(x, dim=-1)


def test_identical_modalities_have_no_gap():
    gen = torch.Generator().manual_seed(0)
    z = unit(torch.randn(200, 16, generator=gen, dtype=F64))
    for M in (2, 3):
        r = gap.modality_gap([z] * M)
        assert r["centroid_distance_pairs"] == pytest.approx(0.0, abs=1e-12)
        assert r["mean_paired_distance_pairs"] == pytest.approx(0.0, abs=1e-12)
        assert r["relative_gap_anchor"] == pytest.approx(0.0, abs=1e-12)
        assert r["true_pair_cosine_pairs"] == pytest.approx(1.0, abs=1e-12)
        assert r["alignment_anchor"] == pytest.approx(0.0, abs=1e-12)
        # split by tuple: every held-out point appears once per modality with one prediction
        assert r["linear_separability"] == pytest.approx(1.0 / M, abs=1e-12)
        assert r["separability_chance"] == pytest.approx(1.0 / M)


def test_shifted_clusters_known_centroid_distance_and_full_separability():
    # modality 0 at +e1 + small noise, modality 1 at -e1: unit-normalised centroids ~ +-e1
    gen = torch.Generator().manual_seed(1)
    B, d = 300, 8
    e1 = torch.zeros(d, dtype=F64)
    e1[0] = 1.0
    noise = 0.05
    z0 = e1 + noise * torch.randn(B, d, generator=gen, dtype=F64)
    z1 = -e1 + noise * torch.randn(B, d, generator=gen, dtype=F64)
    r = gap.modality_gap([z0, z1])
    assert r["centroid_distance_pairs"] == pytest.approx(2.0, rel=0.01)
    assert r["mean_paired_distance_pairs"] == pytest.approx(2.0, rel=0.01)
    assert r["true_pair_cosine_pairs"] == pytest.approx(-1.0, abs=0.02)
    assert r["alignment_pairs"] == pytest.approx(4.0, rel=0.02)
    assert r["linear_separability"] == 1.0
    # spread r_m = sqrt(E|noise projected|^2) ~ noise * sqrt(d - 1) -> relative gap ~ 2 / (0.05 sqrt 7)
    assert r["relative_gap_pairs"] == pytest.approx(2.0 / (noise * math.sqrt(d - 1)), rel=0.1)
    # unnormalised version sees the raw centroids at +-e1 too
    assert gap.centroid_distance([z0, z1], normalize=False) == pytest.approx(2.0, rel=0.01)


def test_pairs_versus_anchor_averages():
    # three modalities on a line: centroids at 0, 1, 3 (unnormalised)
    base = torch.zeros(10, 2, dtype=F64)
    zs = [base + torch.tensor([c, 0.0], dtype=F64) for c in (0.0, 1.0, 3.0)]
    zs = [z + 0.01 * torch.randn(10, 2, dtype=F64) for z in zs]
    assert gap.centroid_distance(zs, normalize=False) == pytest.approx((1 + 3 + 2) / 3, abs=0.02)
    assert gap.centroid_distance(zs, anchor=0, normalize=False) == pytest.approx((1 + 3) / 2, abs=0.02)
    assert gap.centroid_distance(zs, anchor=2, normalize=False) == pytest.approx((3 + 2) / 2, abs=0.02)


def test_partial_shift_gives_intermediate_separability():
    gen = torch.Generator().manual_seed(2)
    B, d = 400, 4
    z0 = torch.randn(B, d, generator=gen, dtype=F64)
    z1 = torch.randn(B, d, generator=gen, dtype=F64)
    z1[:, 0] += 1.0  # means 1 sd apart on one axis: Bayes accuracy Phi(0.5) = 0.69
    acc = gap.linear_separability([z0, z1], normalize=False)
    assert 0.6 < acc < 0.78
    # deterministic: same seed, same answer
    assert gap.linear_separability([z0, z1], normalize=False) == acc


@pytest.mark.parametrize("k", [1, 3, 8])
def test_effective_rank_of_rank_k_data(k):
    gen = torch.Generator().manual_seed(k)
    B, d = 500, 32
    basis = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=F64))[0]  # orthonormal (d, k)
    coeff = torch.randn(B, k, generator=gen, dtype=F64)
    z = coeff @ basis.T
    er = gap.effective_rank(z, normalize=False)
    assert k * 0.9 <= er <= k + 1e-9, er
    # exactly k for k equal singular values
    eq = torch.linalg.qr(torch.randn(B, k, generator=gen, dtype=F64))[0] @ basis.T
    assert gap.effective_rank(eq, normalize=False) == pytest.approx(k, rel=1e-9)


def test_effective_rank_full_for_isotropic_noise():
    gen = torch.Generator().manual_seed(5)
    er = gap.effective_rank(torch.randn(4000, 16, generator=gen, dtype=F64))
    assert 15.0 < er <= 16.0


def test_uniformity_matches_wang_isola_formula():
    gen = torch.Generator().manual_seed(6)
    z = unit(torch.randn(40, 5, generator=gen, dtype=F64))
    d2 = torch.cdist(z, z) ** 2
    mask = ~torch.eye(40, dtype=torch.bool)
    ref = torch.log(torch.exp(-2 * d2[mask]).mean())
    assert gap.uniformity(z) == pytest.approx(float(ref), rel=1e-10)
    # collapse: all points equal -> log 1 = 0, the maximum
    assert gap.uniformity(z[:1].repeat(10, 1)) == pytest.approx(0.0, abs=1e-12)


def test_unequal_counts_give_nan_paired_metrics():
    gen = torch.Generator().manual_seed(7)
    r = gap.modality_gap([torch.randn(30, 4, generator=gen), torch.randn(40, 4, generator=gen)])
    assert math.isnan(r["mean_paired_distance_pairs"]) and math.isnan(r["true_pair_cosine_anchor"])
    assert math.isfinite(r["centroid_distance_pairs"]) and math.isfinite(r["linear_separability"])
    with pytest.raises(ValueError, match="equal B"):
        gap.mean_paired_distance([torch.randn(30, 4), torch.randn(40, 4)])


def test_modality_gap_keys_and_types():
    gen = torch.Generator().manual_seed(8)
    r = gap.modality_gap(torch.randn(3, 50, 6, generator=gen), anchor=1)
    for m in range(3):
        assert f"uniformity_m{m}" in r and f"effective_rank_m{m}" in r
    assert all(isinstance(v, float) for v in r.values())


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: gap.modality_gap([torch.randn(5, 3)]), "M=2"),
        (lambda: gap.modality_gap([torch.randn(5, 3), torch.randn(5, 4)]), r"zs\[1\] has dimension d=4"),
        (lambda: gap.modality_gap([torch.randn(5, 3), torch.full((5, 3), float("nan"))]), r"zs\[1\].*non-finite"),
        (lambda: gap.modality_gap([torch.randn(5, 3)] * 2, anchor=3), "anchor.*3"),
        (lambda: gap.linear_separability([torch.randn(5, 3)] * 2, test_fraction=1.5), "test_fraction.*1.5"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
