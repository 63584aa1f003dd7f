"""Retrieval metrics against a hand-computed case; evaluate on a tiny trained run."""

from __future__ import annotations

import json

import pytest
import torch

from harness.experiment import keys
from harness.experiment.metrics import (
    own_retrieval_metrics,
    recall_stats,
    retrieval_metrics,
    retrieval_ranks,
    tuple_scores,
)


def unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_retrieval_hand_computed():
    # cosine matrix q_i . g_j (query i's true match is gallery i):
    #        g0=(1,0) g1=(.6,.8) g2=(0,1) g3=(0,1)
    # q0=(1,0)    1     .6        0        0      -> rank 1
    # q1=(0,1)    0     .8        1        1      -> two strictly higher: rank 3
    # q2=(-1,0)  -1    -.6        0        0      -> g3 ties g2 (not counted): rank 1
    # q3=(0,1)    0     .8        1        1      -> g2 ties: rank 1
    q = unit([1, 0], [0, 1], [-1, 0], [0, 1])
    g = unit([1, 0], [0.6, 0.8], [0, 1], [0, 1])
    ranks = retrieval_ranks(q, g)
    assert ranks.tolist() == [1, 3, 1, 1]
    s = recall_stats(ranks, ks=(1, 2, 5))
    assert s["R1"] == 75.0 and s["R2"] == 75.0 and s["R5"] == 100.0 and s["MedR"] == 1.0
    # the reverse direction uses the transposed matrix: g2 -> q2 has 0 while q1 and q3 have 1: rank 3
    assert retrieval_ranks(g, q).tolist() == [1, 1, 3, 1]


def test_retrieval_metrics_keys_and_aggregates():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    perfect = retrieval_metrics([a, a.clone(), a.clone()])
    assert perfect["R1/mean"] == 100.0 and perfect["MedR/0->2"] == 1.0
    assert perfect["true_pair_cosine/mean"] == pytest.approx(1.0)
    rev = a.flip(0)  # modality 1 paired with the wrong rows
    r = retrieval_metrics([a, rev, a.clone()])
    assert r["R1/0->2"] == 100.0 and r["R1/2->0"] == 100.0
    assert r["R1/0->1"] < 100.0
    ordered = [k for k in r if k.startswith("R1/") and "->" in k and k[3].isdigit()]
    assert len(ordered) == 6
    assert r["R1/anchor->others"] == pytest.approx((r["R1/0->1"] + r["R1/0->2"]) / 2)
    assert r["R1/others->anchor"] == pytest.approx((r["R1/1->0"] + r["R1/2->0"]) / 2)
    assert r["R1/mean"] == pytest.approx(sum(r[k] for k in ordered) / 6)
    with pytest.raises(ValueError, match="paired"):
        retrieval_ranks(a, a[:5])


def test_gram_rule_scores_a_negated_true_pair_first():
    # anchor a, other modality b (M = 2); b0 = -a0: cosine -1 (worst), volume 0 (best)
    a = unit([1, 0], [0, 1])
    b = unit([-1, 0], [0.6, 0.8])
    # volumes: |a0 x b0| = 0, |a0 x b1| = 0.8, |a1 x b0| = 1, |a1 x b1| = 0.6
    assert torch.allclose(tuple_scores([a, b], 0, "gram_volume"),
                          -torch.tensor([[0.0, 0.8], [1.0, 0.6]], dtype=torch.float64), atol=1e-6)
    gram = own_retrieval_metrics([a, b], "gram_volume")
    cos = own_retrieval_metrics([a, b], "cosine_sum")
    assert gram["R1/anchor->tuple"] == 100.0 and gram["R1/tuple->anchor"] == 100.0
    assert cos["R1/anchor->tuple"] == 50.0  # a0 ranks b0 (cos -1) below b1 (cos 0.6)
    assert retrieval_metrics([a, b])["R1/0->1"] == 50.0
    # negating a whole modality leaves every volume unchanged
    assert gram == own_retrieval_metrics([a, -b], "gram_volume")


def test_own_rule_query_and_gallery_directions_differ():
    # cosine-sum scores S = A B^T (M = 2):   b0=(.5,-.866)  b1=(.6,.8)  b2=(-1,0)
    #   a0=(1,0)                               .5             .6         -1     -> rank 2 (b1 is a hub)
    #   a1=(0,1)                              -.866           .8          0     -> rank 1
    #   a2=(-1,0)                             -.5            -.6          1     -> rank 1
    # columns (tuple -> anchor): b0 .5 > -.866, -.5; b1 .8 > .6; b2 1 > 0: all rank 1
    a = unit([1, 0], [0, 1], [-1, 0])
    b = unit([0.5, -0.8660254], [0.6, 0.8], [-1, 0])
    r = own_retrieval_metrics([a, b], "cosine_sum")
    assert r["R1/anchor->tuple"] == pytest.approx(200 / 3) and r["R1/tuple->anchor"] == 100.0
    assert r["MedR/anchor->tuple"] == 1.0 and r["R5/anchor->tuple"] == 100.0
    # M = 2: rest->one is tuple->anchor and rest->1 (= 0 -> 1 as a query from the tuple {0})
    assert r["R1/rest->1"] == pytest.approx(200 / 3)
    assert r["R1/rest->one"] == pytest.approx((100 + 200 / 3) / 2)
    assert r["R1/mean"] == pytest.approx((200 / 3 + 100 + 200 / 3) / 3)


def test_symile_rule_uses_the_product_not_the_sum():
    # M = 3; tuple j of modalities (1, 2): product j0 = (1, 0), j1 = (0, -1); sum j0 = (2, 0), j1 = (0, 0)
    z0 = unit([1, 0], [0, 1])
    z1 = unit([1, 0], [0, 1])
    z2 = unit([1, 0], [0, -1])
    assert torch.allclose(tuple_scores([z0, z1, z2], 0, "symile_mip"),
                          torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64))
    sym = own_retrieval_metrics([z0, z1, z2], "symile_mip")
    cos = own_retrieval_metrics([z0, z1, z2], "cosine_sum")
    assert sym["R1/tuple->anchor"] == 50.0  # tuple j1 scores anchor 1 at -1, anchor 0 at 0
    assert cos["R1/tuple->anchor"] == 100.0  # the sum (0, 0) ties: counted for the true match
    with pytest.raises(ValueError, match="rule"):
        tuple_scores([z0, z1], 0, "volume")


def test_r1_standard_error_over_queries():
    from scipy import stats

    a = unit([1, 0], [0, 1], [-1, 0])
    b = unit([0.5, -0.8660254], [0.6, 0.8], [-1, 0])
    r = retrieval_metrics([a, b])
    # per-query hits averaged over the ordered pairs (0->1, 1->0): q0 (0 + 1)/2, q1 1, q2 1
    assert r["R1/mean_se"] == pytest.approx(stats.sem([50.0, 100.0, 100.0]))
    assert keys.retrieval_rule("gram") == "gram_volume" and keys.retrieval_rule("symile") == "symile_mip"
    assert keys.retrieval_rule("unialign") == "cosine_sum"


def test_evaluate_and_generate_end_to_end(tmp_path):
    from harness.cli import main
    from harness.experiment import data as hd

    hd.build_synthetic(tmp_path / "d", hd.SyntheticConfig(n_modalities=3, n_samples=200, n_classes=4,
                                                          latent_dim=4, dims=[10, 6, 5], seed=2))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "d"), "--objective", "unialign", "--n-modalities", "3",
                 "--epochs", "1", "--batch-size", "32", "--dim", "8", "--hidden", "16", "--depth", "1",
                 "--out", str(run), "--quiet", "--param", "bandwidth=median"]) == 0
    assert main(["evaluate", "--run", str(run), "--out", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    for key in ["retrieval/R1/mean", "retrieval/R10/1->2", "retrieval/MedR/others->anchor", "probe/acc/0",
                "probe/acc/mean", "gap/centroid_distance_pairs", "divergence/holder",
                "divergence/cs_pairwise_mean", "divergence/proxy/bound", "conflict/zeta/mean",
                "conflict/zeta/q25", "conflict/projection_ratio/mean", "conflict/chi/mean",
                "conflict/grad/cos_align_unif_anchor/mean", "conflict/grad/pull_cos/mean",
                keys.R1_MEAN_SE, keys.OWN_R1_MEAN, keys.OWN_R1_MEAN_SE, keys.OWN_R1_A2T, keys.OWN_R1_T2A,
                keys.OWN_R1_REST, "retrieval_own/MedR/rest->2", keys.HOLDER_FIXED, keys.HOLDER_FIXED_NULL_MEAN,
                keys.HOLDER_FIXED_NULL_SD, keys.HOLDER_FIXED_EXCESS, keys.HOLDER_FIXED_H]:
        assert key in m and isinstance(m[key], (int, float)), key
    assert m[keys.HOLDER_FIXED_EXCESS] == pytest.approx(m[keys.HOLDER_FIXED] - m[keys.HOLDER_FIXED_NULL_MEAN])
    assert m[keys.META_RETRIEVAL_RULE] == "cosine_sum" and m[keys.META_SPLIT_SEED] == 2
    assert m["meta/objective"] == "unialign" and m["meta/n_modalities"] == 3 and m["meta/split"] == "test"
    assert m["meta/param/bandwidth"] == "median" and m["meta/n_eval"] == json.loads((tmp_path / "d" / "dataset.json").read_text())["split_sizes"]["test"]
    assert main(["generate", "--run", str(run), "--out", str(tmp_path / "g"), "--decoder-epochs", "3"]) == 0
    g = json.loads((tmp_path / "g" / "generation.json").read_text())
    for c in ("anchor", "from1", "from2", "interp1+2"):
        assert {f"gen/{c}/mse", f"gen/{c}/fd", f"gen/{c}/acc"} <= set(g)
    assert g["gen/real/mse"] == 0.0 and g["gen/real/fd"] == pytest.approx(0.0, abs=1e-8)
    assert (tmp_path / "g" / "samples.png").stat().st_size > 1000
