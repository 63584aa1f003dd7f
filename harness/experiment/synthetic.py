"""The synthetic any-M generator: a class-structured shared latent seen through random maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.experiment.dataset import DataError

DEFAULT_SYNTHETIC_DIMS = (32, 24, 16, 40, 20, 12, 28, 36)


@dataclass
class SyntheticConfig:
    n_modalities: int = 3
    n_samples: int = 2000
    n_classes: int = 10
    latent_dim: int = 8
    noise: float = 0.1
    imbalance: float = 0.0
    dims: Sequence[int] | None = None
    class_sep: float = 2.5
    within_class_std: float = 1.0
    nuisance_dim: int = 2
    nuisance_scale: float = 0.5
    map_hidden: int = 64
    seed: int = 0

    def modality_dims(self) -> list[int]:
        dims = list(self.dims) if self.dims else []
        while len(dims) < self.n_modalities:
            dims.append(DEFAULT_SYNTHETIC_DIMS[len(dims) % len(DEFAULT_SYNTHETIC_DIMS)])
        return [int(d) for d in dims[: self.n_modalities]]

    def visible_dims(self, m: int) -> int:
        """Latent dims seen by modality m: ceil(latent_dim * (1 - imbalance)^m), at least 1."""
        return max(1, int(np.ceil(self.latent_dim * (1.0 - self.imbalance) ** m - 1e-9)))

    def noise_std(self, m: int) -> float:
        """Observation noise of modality m: noise * (1 + imbalance * m)."""
        return float(self.noise * (1.0 + self.imbalance * m))


def generate_synthetic(cfg: SyntheticConfig) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, dict]:
    """Class-structured shared latent, mapped into each modality by a random 2-layer tanh MLP.

    Definition (all randomness from ``numpy.random.Generator(PCG64(.))``, never the global RNG):

    1. ``children = SeedSequence(seed).spawn(64)``: labels, class means and latents use
       ``PCG64(children[0])``; modality m's map, nuisance and noise use ``PCG64(children[m + 1])``, so
       they do not depend on M: the first M modalities of an M' > M draw equal an M-modality draw
       (paired comparisons across M). At most 63 modalities.
    2. Labels ``y_i = i mod K``, then permuted; class means ``mu_k ~ N(0, class_sep^2 I_L)``;
       latent ``s_i = mu_{y_i} + within_class_std * N(0, I_L)`` (L = latent_dim).
    3. Modality m sees the first ``L_m = ceil(L (1 - imbalance)^m)`` latent coordinates (the
       anchor sees all), plus its own nuisance ``u_i^m ~ nuisance_scale * N(0, I_nuis)``.
    4. ``h = [s_i[:L_m], u_i^m]``; ``x_i^m = W2 tanh(W1 h / sqrt(dim h) + b1) + b2`` with W1, W2,
       b1 standard normal (W2 scaled by 1/sqrt(map_hidden)), b2 = 0; then additive noise
       ``noise * (1 + imbalance * m) * N(0, I_{d_m})``.
    5. The anchor's raw observation (the generation target) is ``x^0`` itself.
    """
    if cfg.n_modalities < 2:
        raise DataError(f"synthetic data needs n_modalities >= 2, got {cfg.n_modalities}")
    if cfg.n_modalities > 63:
        raise DataError(f"synthetic data supports at most 63 modalities, got {cfg.n_modalities}")
    if cfg.n_samples < cfg.n_classes or cfg.n_classes < 1:
        raise DataError(f"n_samples={cfg.n_samples} must be >= n_classes={cfg.n_classes} >= 1")
    if not 0 <= cfg.imbalance < 1:
        raise DataError(f"imbalance must be in [0, 1), got {cfg.imbalance}")
    if cfg.noise < 0:
        raise DataError(f"noise must be >= 0, got {cfg.noise}")
    children = np.random.SeedSequence(int(cfg.seed)).spawn(64)
    shared = np.random.Generator(np.random.PCG64(children[0]))
    n, k, L = cfg.n_samples, cfg.n_classes, cfg.latent_dim
    labels = shared.permutation(np.arange(n) % k).astype(np.int64)
    means = shared.normal(0.0, cfg.class_sep, size=(k, L))
    latent = means[labels] + cfg.within_class_std * shared.normal(size=(n, L))
    views = []
    dims = cfg.modality_dims()
    for m in range(cfg.n_modalities):
        rng = np.random.Generator(np.random.PCG64(children[m + 1]))
        lm = cfg.visible_dims(m)
        nuis = cfg.nuisance_scale * rng.normal(size=(n, cfg.nuisance_dim))
        h = np.concatenate([latent[:, :lm], nuis], axis=1)
        w1 = rng.normal(size=(h.shape[1], cfg.map_hidden))
        b1 = rng.normal(size=(cfg.map_hidden,))
        w2 = rng.normal(size=(cfg.map_hidden, dims[m])) / np.sqrt(cfg.map_hidden)
        x = np.tanh(h @ w1 / np.sqrt(h.shape[1]) + b1) @ w2
        x = x + cfg.noise_std(m) * rng.normal(size=x.shape)
        views.append(x.astype(np.float32))
    params = {
        k2: (list(v) if isinstance(v, (list, tuple)) else v)
        for k2, v in cfg.__dict__.items()
        if k2 != "dims"
    }
    params["dims"] = dims
    params["visible_latent_dims"] = [cfg.visible_dims(m) for m in range(cfg.n_modalities)]
    params["noise_std"] = [cfg.noise_std(m) for m in range(cfg.n_modalities)]
    return views, views[0].copy(), labels, params
