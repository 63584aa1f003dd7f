"""Embeddings gathered across 2 gloo ranks give the single-process loss and, after DDP's gradient
averaging convention (local gradient = world_size x global-loss gradient), the same gradients."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import objectives
from objectives.kernels import lse

pytestmark = pytest.mark.distributed

WORLD = 2
M, B_LOCAL, D = 3, 6, 5
CASES = [
    ("infonce", {"temperature": 0.1}),
    ("infonce", {"temperature": 0.1, "chunk_size": 4}),
    ("infonce_anchor", {"temperature": 0.2, "anchor": 1}),
    ("dcl", {"temperature": 0.1}),
    ("infonce_reweighted", {"uniformity_weight": 0.3}),
    ("align_uniform", {}),
    ("unialign", {"bandwidth": "median", "tuple": "both", "centroid_bandwidth": "median"}),
    ("unialign", {"bandwidth": 0.6, "uniformity": "union", "alignment": "centroid", "tuple": "centroid",
                  "renormalize_centroid": False, "centroid_bandwidth": 0.5}),
    ("cs_aligner", {"bandwidth": 0.7, "pairs": "all"}),
    ("gram", {"temperature": 0.2}),
    ("gram", {"temperature": 0.2, "anchor": 1, "label_smoothing": 0.1, "chunk_size": 4}),
    ("gram", {"temperature": 0.005, "label_smoothing": 0.1}),  # the shifted log-sum-exp path
    ("symile", {"negatives": "n"}),
    ("symile", {"negatives": "n_squared"}),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1234)
    return torch.randn(M, WORLD * B_LOCAL, D, generator=gen, dtype=torch.float64)


def _worker(rank: int, port: int, out_dir: str) -> None:
    lse.FUSED_MIN_ENTRIES = 0  # exercise the fused kernels even at this tiny size
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        z = _data()[:, rank * B_LOCAL : (rank + 1) * B_LOCAL].clone().requires_grad_(True)
        results = []
        for name, params in CASES:
            torch.manual_seed(7)  # symile "n" draws its permutations from the global generator
            out = objectives.build(name, **params)(z)
            (grad,) = torch.autograd.grad(out.loss, z)
            results.append((out.loss.detach(), {k: v.detach() for k, v in out.terms.items()}, grad))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        # no rank tears its connections down while a peer may still be sending (gloo then aborts)
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_gather_matches_single_process(tmp_path, monkeypatch):
    monkeypatch.setattr(lse, "FUSED_MIN_ENTRIES", 0)
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    z = _data().requires_grad_(True)
    for case_index, (name, params) in enumerate(CASES):
        torch.manual_seed(7)
        out = objectives.build(name, **params)(z)
        (grad,) = torch.autograd.grad(out.loss, z)
        for rank in range(WORLD):
            loss, terms, local_grad = ranks[rank][case_index]
            torch.testing.assert_close(loss, out.loss.detach(), rtol=1e-10, atol=1e-10,
                                       msg=f"{name} {params}: loss on rank {rank}")
            for key, value in out.terms.items():
                torch.testing.assert_close(terms[key], value.detach(), rtol=1e-10, atol=1e-10,
                                           msg=f"{name} {params}: term {key} on rank {rank}")
            expected = grad[:, rank * B_LOCAL : (rank + 1) * B_LOCAL]
            torch.testing.assert_close(local_grad / WORLD, expected, rtol=1e-8, atol=1e-10,
                                       msg=f"{name} {params}: gradient on rank {rank}")
