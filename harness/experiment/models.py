"""Per-modality MLP encoders into a shared, L2-normalised embedding space, and an MLP decoder."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mlp(in_dim: int, out_dim: int, hidden: int, depth: int, dropout: float = 0.0) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden`` (Linear, GELU[, Dropout]) then a Linear to ``out_dim``.

    ``depth = 0`` is a single linear map.
    """
    if depth < 0 or hidden < 1 or in_dim < 1 or out_dim < 1:
        raise ValueError(f"invalid MLP sizes: in={in_dim} out={out_dim} hidden={hidden} depth={depth}")
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.GELU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """MLP encoder of one modality; output rows have unit L2 norm."""

    def __init__(self, in_dim: int, dim: int, hidden: int = 256, depth: int = 2, dropout: float = 0.0):
        super().__init__()
        self.net = mlp(in_dim, dim, hidden, depth, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=-1, eps=1e-12)


class MultiEncoder(nn.Module):
    """One encoder per modality (M of them); ``forward(xs) -> [z_0, ..., z_{M-1}]``."""

    def __init__(self, in_dims: Sequence[int], dim: int, hidden: int = 256, depth: int = 2, dropout: float = 0.0):
        super().__init__()
        self.in_dims = [int(d) for d in in_dims]
        self.dim = int(dim)
        self.encoders = nn.ModuleList(Encoder(d, dim, hidden, depth, dropout) for d in self.in_dims)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        if len(xs) != len(self.encoders):
            raise ValueError(f"expected {len(self.encoders)} modalities, got {len(xs)}")
        return [enc(x) for enc, x in zip(self.encoders, xs)]

    @torch.no_grad()
    def embed(self, xs: Sequence[Tensor], batch_size: int = 4096) -> list[Tensor]:
        """Embeddings of whole arrays in eval mode, in row blocks (no gradients)."""
        was = self.training
        self.eval()
        out = []
        for enc, x in zip(self.encoders, xs):
            out.append(torch.cat([enc(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]))
        self.train(was)
        return out


class Decoder(nn.Module):
    """MLP from an embedding (d) to a flat target (t)."""

    def __init__(self, dim: int, out_dim: int, hidden: int = 256, depth: int = 2):
        super().__init__()
        self.net = mlp(dim, out_dim, hidden, depth)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
