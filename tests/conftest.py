"""Shared test set-up: make the repository root and tests/ importable, pin torch's CPU threads, and
the tiny synthetic dataset the training tests share."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (os.path.dirname(_HERE), _HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A 300-row, 3-modality synthetic dataset folder (5 classes)."""
    from harness.experiment import data as hd

    out = tmp_path_factory.mktemp("data")
    cfg = hd.SyntheticConfig(n_modalities=3, n_samples=300, n_classes=5, latent_dim=4, dims=[12, 8, 6], seed=0)
    hd.build_synthetic(out, cfg)
    return out
