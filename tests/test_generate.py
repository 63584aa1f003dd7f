"""Generation metrics: Fréchet distance against closed forms, perfect decoder, conditions, figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.experiment import generate as hg

torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared 2-core machine


def test_frechet_identical_sets_is_zero():
    x = np.random.default_rng(0).normal(size=(200, 5))
    assert hg.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_from_stats_closed_forms():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    a = rng.normal(size=(4, 4))
    cov = a @ a.T + np.eye(4)
    # equal covariances: only the mean shift remains
    assert hg.frechet_from_stats(mu1, cov, mu2, cov) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-6)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2 + |mu1 - mu2|^2
    d1, d2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 1.0, 2.0])
    expect = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert hg.frechet_from_stats(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expect, rel=1e-6)
    # singular covariances do not break it (finite, non-negative)
    z = np.zeros((4, 4))
    assert hg.frechet_from_stats(mu1, z, mu1, z) == pytest.approx(0.0, abs=1e-6)


def test_frechet_of_shifted_gaussian_samples_matches_closed_form():
    rng = np.random.default_rng(2)
    shift = np.array([1.0, -2.0, 0.5])
    x = rng.normal(size=(20000, 3))
    y = rng.normal(size=(20000, 3)) * np.array([1.0, 2.0, 1.0]) + shift
    expect = shift @ shift + (np.sqrt(4.0) - 1.0) ** 2
    assert hg.frechet_distance(x, y) == pytest.approx(expect, rel=0.03)


def test_perfect_decoder_metrics():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 40)
    t_train = rng.normal(size=(120, 10)) + labels[:, None] * 2.0
    t_test = rng.normal(size=(120, 10)) + labels[:, None] * 2.0
    space = hg.FeatureSpace(t_train, labels, n_components=4)
    m = hg.generation_metrics(t_test.copy(), t_test, space, labels)
    assert m["mse"] == 0.0 and m["fd"] == pytest.approx(0.0, abs=1e-8)
    assert m["acc"] == pytest.approx(space.accuracy(t_test, labels)) and m["acc"] > 0.9
    # a constant (mean) output is worse on every metric
    bad = np.repeat(t_train.mean(0, keepdims=True), 120, axis=0)
    mb = hg.generation_metrics(bad, t_test, space, labels)
    assert mb["mse"] > 1.0 and mb["fd"] > 1.0 and mb["acc"] < 0.5
    with pytest.raises(ValueError, match="paired"):
        hg.generation_metrics(t_test[:5], t_test, space, labels)


def test_conditions_names_and_normalised_interpolation():
    zs = [torch.nn.functional.normalize(torch.randn(5, 3), dim=-1) for _ in range(4)]
    c = hg.conditions(zs)
    assert list(c) == ["anchor", "from1", "from2", "from3", "interp1+2", "interp1+3", "interp2+3"]
    assert torch.allclose(c["interp1+3"].norm(dim=-1), torch.ones(5))


def test_decoder_learns_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(200, 4, generator=g), dim=-1)
    target = (z.numpy() @ np.arange(12.0).reshape(4, 3)) + 5.0
    kw = dict(seed=1, epochs=30, hidden=32, depth=1, batch_size=50, lr=1e-2)
    d1, mean, std, mse1 = hg.train_decoder(z, target, **kw)
    d2, _, _, mse2 = hg.train_decoder(z, target, **kw)
    assert mse1 == mse2 and mse1 < 0.05
    out = hg.decode(d1, z, mean, std, float(target.min()), float(target.max()))
    assert out.shape == target.shape and np.mean((out - target) ** 2) < 0.05 * target.var()


@pytest.mark.parametrize("shape", [None, [2, 3]])
def test_samples_png(tmp_path, shape):
    rng = np.random.default_rng(0)
    samples = {"real": rng.normal(size=(4, 6)), "anchor": rng.normal(size=(4, 6))}
    space = hg.FeatureSpace(rng.normal(size=(20, 6)), None, 3)
    hg.save_samples(tmp_path / "s.png", samples, shape, n_cols=3, space=space)
    assert (tmp_path / "s.png").stat().st_size > 1000
