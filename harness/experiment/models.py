"""Per-modality MLP encoders into a shared embedding space, and an MLP decoder.

Encoder heads (``head``):

* ``"linear"`` (default): the MLP's last Linear, rows L2-normalised (unit sphere, as CLIP);
* ``"layernorm"``: the last Linear followed by ``LayerNorm(d)`` (elementwise affine), no L2
  normalisation, as Symile's encoders (rows have norm about sqrt(d)). Objectives with
  ``normalize=True`` normalise such rows themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

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


HEADS = ("linear", "layernorm")


def check_head(head: str) -> str:
    if head not in HEADS:
        raise ValueError(f"head must be one of {list(HEADS)}, got {head!r}")
    return head


class Encoder(nn.Module):
    """MLP encoder of one modality; ``head="linear"``: unit L2 rows, ``"layernorm"``: LayerNorm rows."""

    def __init__(self, in_dim: int, dim: int, hidden: int = 256, depth: int = 2, dropout: float = 0.0,
                 head: str = "linear"):
        super().__init__()
        self.head = check_head(head)
        self.net = mlp(in_dim, dim, hidden, depth, dropout)
        # registered only for the layernorm head: linear-head state dicts keep their keys
        if self.head == "layernorm":
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.head == "layernorm":
            return self.norm(self.net(x))
        return F.normalize(self.net(x), dim=-1, eps=1e-12)


class MultiEncoder(nn.Module):
    """One encoder per modality (M of them); ``forward(xs) -> [z_0, ..., z_{M-1}]``."""

    def __init__(self, in_dims: Sequence[int], dim: int, hidden: int = 256, depth: int = 2, dropout: float = 0.0,
                 head: str = "linear"):
        super().__init__()
        self.in_dims = [int(d) for d in in_dims]
        self.dim = int(dim)
        self.head = check_head(head)
        self.encoders = nn.ModuleList(Encoder(d, dim, hidden, depth, dropout, head) for d in self.in_dims)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        if len(xs) != len(self.encoders):
            raise ValueError(f"expected {len(self.encoders)} modalities, got {len(xs)}")
        return [enc(x) for enc, x in zip(self.encoders, xs)]

    @torch.no_grad()
    def embed(self, xs: Sequence[Tensor], batch_size: int = 4096) -> list[Tensor]:
        """Embeddings of whole arrays in eval mode, in row blocks (no gradients); rows as the head
        gives them (unit rows only for the linear head)."""
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
