"""Implementations that are timed, their minimal matmul FLOPs, inputs and the reference GEMM."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

TEMPERATURE = 0.07
NUMERIC_BANDWIDTH = 0.5
# the losses a user would pick instead of ours, from their PyPI packages (the optional `bench` extra):
# timed where installed, skipped with PEERS' reason where not
PEERS = {"open_clip_loss": "open_clip_torch", "info_nce_pytorch": "info-nce-pytorch"}
BASELINES = ("naive_clip_loop", "symile_package", "gram_direct", *PEERS)

COLUMNS = [
    "mode", "objective", "kind", "variant", "params", "M", "B", "d", "chunk_size", "dtype", "device",
    "device_name", "torch_version", "date", "threads", "loadavg_1m", "clock", "warmup", "repeats", "time_min_s",
    "time_median_s", "samples_per_s", "matmul_flops", "achieved_gflops", "gemm_shape", "gemm_time_min_s",
    "gemm_gflops", "gram_gemms_time_min_s", "roofline_ratio", "speedup_vs_naive", "peak_mem_mb", "peak_rss_total_mb",
    "memory_method", "memory_note", "note",
]


# ----------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class Impl:
    """One thing to time: an objective of the library (kind "ours") or a baseline."""

    objective: str
    params: tuple = ()  # sorted (key, value) pairs
    variant: str = "default"

    @property
    def kind(self) -> str:
        return "baseline" if self.objective in BASELINES else "ours"

    @property
    def label(self) -> str:
        return self.objective if self.variant == "default" else f"{self.objective}[{self.variant}]"

    def kwargs(self) -> dict:
        return dict(self.params)


def default_impls(objective_names: list[str], bandwidths: list[str] | None = None,
                  baselines: bool = True, chunk_size: int | None = None) -> list[Impl]:
    """The objectives with default parameters; numeric bandwidth 0.5 (and/or "median") where they have one."""
    import objectives

    bandwidths = bandwidths or [str(NUMERIC_BANDWIDTH)]
    out: list[Impl] = []
    for name in objective_names:
        if name in BASELINES:
            out.append(Impl(name))
            continue
        known = objectives.parameters(name)
        extra = {"chunk_size": chunk_size} if chunk_size is not None and "chunk_size" in known else {}
        if "bandwidth" in known:
            for bw in bandwidths:
                value: float | str = "median" if bw == "median" else float(bw)
                variant = "default" if bw == bandwidths[0] else f"bandwidth={bw}"
                out.append(Impl(name, tuple(sorted({"bandwidth": value, **extra}.items())), variant))
        else:
            out.append(Impl(name, tuple(sorted(extra.items()))))
    if baselines:
        for b in BASELINES:
            if b not in objective_names and peer_missing(b) is None:
                out.append(Impl(b))
    return out


def matmul_flops(name: str, M: int, B: int, d: int, params: dict | None = None) -> float | None:
    """Minimal matmul FLOPs of one forward + backward (see the module docstring's table): an
    objective's as its registry entry declares them, a baseline's here."""
    from objectives import registry

    params = params or {}
    unit = registry.gemm(B, d)  # one B x B x d product
    if name == "naive_clip_loop" or name in PEERS:  # the same loss: the same minimal work
        return 3 * unit * registry.pair_count(M, "all")
    if name == "symile_package":
        return 3 * unit * M if params.get("negatives", "n") == "n" else None
    if name == "gram_direct":
        return 3 * unit * (M - 1)
    try:
        return registry.get(name).matmul_flops(M, B, d, params)
    except registry.ObjectiveError:
        return None


# ----------------------------------------------------------------------------- the timed callables


def naive_clip_loop(zs: list[torch.Tensor], temperature: float = TEMPERATURE) -> torch.Tensor:
    """Deliberately naive all-pairs CLIP loss: a Python loop, F.cross_entropy on S and S^T, autograd."""
    zs = [F.normalize(z, dim=-1) for z in zs]
    labels = torch.arange(zs[0].shape[0], device=zs[0].device)
    total, n = 0.0, 0
    for m in range(len(zs)):
        for k in range(m + 1, len(zs)):
            s = zs[m] @ zs[k].T / temperature
            total = total + 0.5 * (F.cross_entropy(s, labels) + F.cross_entropy(s.T, labels))
            n += 1
    return total / n


def peer_missing(name: str) -> str | None:
    """Why the peer ``name`` cannot run here (its package is not installed), or None (it can, or
    ``name`` is no peer)."""
    package = PEERS.get(name)
    if package is None:
        return None
    module = "open_clip" if name == "open_clip_loss" else "info_nce"
    if importlib.util.find_spec(module) is None:
        return f"{name} needs the PyPI package {package} (pip install -e '.[bench]')"
    return None


def peer_version(name: str) -> str:
    """The installed version of a peer's package ("" where it is not installed)."""
    try:
        return importlib.metadata.version(PEERS[name])
    except importlib.metadata.PackageNotFoundError:
        return ""


def _open_clip_loss_class():
    """open_clip's ``ClipLoss``. Importing ``open_clip`` loads its whole model zoo (torchvision, timm,
    tokenizers); ``open_clip/loss.py`` itself needs only torch, so it is loaded from its file."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(peer_missing("open_clip_loss") or "open_clip has no package folder")
    path = Path(list(spec.submodule_search_locations)[0]) / "loss.py"
    loader_spec = importlib.util.spec_from_file_location("_open_clip_loss", path)
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    return module.ClipLoss


def pairwise_peer(name: str, device: torch.device) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """A peer's two-modality CLIP loss averaged over all modality pairs (the value of ``infonce`` and
    ``naive_clip_loop``): ``open_clip_loss`` is ``open_clip.loss.ClipLoss()(a, b, 1 / 0.07)`` on
    L2-normalised rows (open_clip normalises in the model, so here inside the timed call);
    ``info_nce_pytorch`` is ``info_nce.InfoNCE(temperature=0.07)``, which normalises itself, taken
    both ways (a, b) and (b, a) and halved (the package's loss is one-directional)."""
    if name == "open_clip_loss":
        clip = _open_clip_loss_class()()
        scales: dict[torch.dtype, torch.Tensor] = {}

        def pair(a, b):
            if a.dtype not in scales:  # built once per dtype
                scales[a.dtype] = torch.tensor(1.0 / TEMPERATURE, dtype=a.dtype, device=device)
            return clip(a, b, scales[a.dtype])

        prepare = True
    elif name == "info_nce_pytorch":
        import info_nce  # the PyPI package info-nce-pytorch

        one_way = info_nce.InfoNCE(temperature=TEMPERATURE)

        def pair(a, b):
            return 0.5 * (one_way(a, b) + one_way(b, a))

        prepare = False
    else:
        raise ValueError(f"no peer named {name!r}; peers: {sorted(PEERS)}")

    def loss(zs):
        if prepare:
            zs = [F.normalize(z, dim=-1) for z in zs]
        total, n = 0.0, 0
        for m in range(len(zs)):
            for k in range(m + 1, len(zs)):
                total = total + pair(zs[m], zs[k])
                n += 1
        return total / n

    return loss


def gram_direct(zs: list[torch.Tensor], temperature: float = TEMPERATURE, eps: float = 1e-6) -> torch.Tensor:
    """GRAM's loss the direct way: every (anchor, tuple) Gram matrix (M x M) built and its determinant
    taken (objectives.kernels.gram_volumes, B^2 of them), F.cross_entropy both ways, autograd (the
    same value as ``gram``, anchor 0)."""
    from objectives.kernels import gram_volumes

    zs = [F.normalize(z, dim=-1) for z in zs]
    logits = -gram_volumes(zs[0], torch.stack(zs[1:]), eps) / temperature
    labels = torch.arange(zs[0].shape[0], device=zs[0].device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def make_loss(impl: Impl, device: torch.device) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """The timed loss. The parameter ``generated_kernels=True`` (not an objective argument) runs the
    objective with objectives.kernels.generated_kernels switched on."""
    if impl.objective == "naive_clip_loop":
        return naive_clip_loop
    if impl.objective == "gram_direct":
        return gram_direct
    if impl.objective in PEERS:
        missing = peer_missing(impl.objective)
        if missing:
            raise ImportError(missing)
        return pairwise_peer(impl.objective, device)
    if impl.objective == "symile_package":
        import symile  # the PyPI peer

        peer = symile.Symile("n")
        scales: dict[torch.dtype, torch.Tensor] = {}

        def run_peer(zs):
            dtype = zs[0].dtype
            if dtype not in scales:  # built once per dtype, exact in that dtype
                scales[dtype] = torch.tensor(1.0 / TEMPERATURE, dtype=dtype, device=device)
            return peer([F.normalize(z, dim=-1) for z in zs], scales[dtype])

        return run_peer
    import objectives
    from objectives.kernels import generated_kernels

    kwargs = impl.kwargs()
    generated = bool(kwargs.pop("generated_kernels", False))
    fn = objectives.build(impl.objective, **kwargs).to(device)
    if not generated:
        return lambda zs: fn(zs).loss

    def run_generated(zs):
        with generated_kernels(True):
            return fn(zs).loss

    return run_generated


def make_inputs(M: int, B: int, d: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(B, d, generator=g).to(device=device, dtype=dtype).requires_grad_(True) for _ in range(M)]


def fwd_bwd(loss_fn, zs) -> Callable[[], None]:
    def step():
        for z in zs:
            z.grad = None
        loss_fn(zs).backward()

    return step


def gemm_call(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device) -> Callable[[], None]:
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    return lambda: torch.mm(a, b, out=out)


def gram_gemm_floor(M: int, B: int, d: int, dtype: torch.dtype, device: torch.device) -> Callable[[], None]:
    """The three GEMMs a GRAM forward + backward cannot avoid, at the fused kernel's shapes: the anchors
    against all (M - 1) B tuple rows (B x d x (M - 1) B), the anchors' gradient ((M - 1) B inner) and
    the tuple rows' gradient ((M - 1) B x B x d). No implementation that forms the volumes' gradient
    through GEMMs is faster than these three products, so direct time / this time bounds any such
    GRAM's speed-up over the direct formulation on the device it is measured on."""
    kn = (M - 1) * B
    a = torch.randn(B, d, device=device).to(dtype)
    rows = torch.randn(kn, d, device=device).to(dtype)
    q = torch.empty(B, kn, device=device, dtype=dtype)
    da = torch.empty(B, d, device=device, dtype=dtype)
    w = torch.empty(kn, d, device=device, dtype=dtype)

    def call() -> None:
        torch.mm(a, rows.T, out=q)
        torch.mm(q, rows, out=da)
        torch.mm(q.T, a, out=w)

    return call
