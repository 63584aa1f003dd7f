"""UnCLIP-style generation: ``python -m harness generate --run RUN_DIR --out DIR``.

A decoder (MLP) is trained on the *frozen* anchor embeddings of the training split to reconstruct
the anchor's raw observation (UCI: the pix view, a 16 x 15 image with values 0..6; synthetic:
modality 0's observation; features: ``target`` or modality_0). Targets are standardised with
training statistics for the fit; outputs are mapped back to raw units and clipped to the training
range of the target. At test time the decoder is conditioned on

- ``anchor``: the anchor's own embedding (upper bound, the paper's * rows);
- ``from{n}``: modality n's embedding (cross-modal: text-to-image / audio-to-image analogue);
- ``interp{m}+{n}``: ``normalize(z_m + z_n)`` for every pair of non-anchor modalities m < n;
- ``real``: the real test targets themselves (reference: the metric values of perfect samples).

Metrics per condition ``c`` in ``DIR/generation.json`` (flat):

- ``gen/{c}/mse``: mean squared error to the paired raw target (per element, raw units);
- ``gen/{c}/fd``: Fréchet distance between the generated and the real test sets in a fixed
  feature space: PCA (``--fd-components``, default 16, whitened = False) fitted on standardised
  real *training* targets;
- ``gen/{c}/acc``: accuracy, w.r.t. the paired labels, of a fixed classifier (multinomial logistic
  regression on standardised real training targets, lbfgs, deterministic) applied to the samples
  (only when the dataset has labels);
- ``gen/decoder/train_mse``; meta keys as in evaluate (``meta/...``).

``DIR/samples.png``: rows = conditions, columns = test samples, the first of each class (images for image
targets; a heat strip of the standardised target vector otherwise).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from harness.cli import add_threads_argument, apply_threads, positive_int
from harness.experiment.data import DataError
from harness.experiment.models import Decoder
from harness.experiment.runs import TrainError, embed_split, load_run, run_meta
from harness.files import check_output_dir, write_json_sealed

# ----------------------------------------------------------------------------- Fréchet distance


def frechet_from_stats(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray,
                       eps: float = 1e-6) -> float:
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^{1/2}) with a guarded matrix square root."""
    import scipy.linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular products are handled below
        covmean = scipy.linalg.sqrtm(cov1 @ cov2)
        if not np.all(np.isfinite(covmean)):
            offset = np.eye(cov1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        # numerical noise only; large imaginary parts mean a badly conditioned product
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * max(1.0, np.abs(covmean).max())):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                covmean = scipy.linalg.sqrtm((cov1 + eps * np.eye(len(mu1))) @ (cov2 + eps * np.eye(len(mu1))))
        covmean = covmean.real
    value = float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between the Gaussian fits (mean, covariance) of two sample sets (rows)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need (n, k) arrays with equal k, got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("need at least 2 samples per set")
    return frechet_from_stats(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))


class FeatureSpace:
    """Fixed feature space for FD and the fixed classifier, fitted on real training targets only."""

    def __init__(self, train_targets: np.ndarray, labels: np.ndarray | None, n_components: int = 16,
                 seed: int = 0):
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression

        t = np.asarray(train_targets, np.float64)
        self.mean = t.mean(0)
        std = t.std(0)
        self.std = np.where(std < 1e-8, 1.0, std)
        s = (t - self.mean) / self.std
        k = int(min(n_components, s.shape[1], s.shape[0] - 1))
        self.pca = PCA(n_components=k, svd_solver="full", random_state=seed).fit(s)
        self.classifier = None
        if labels is not None:
            self.classifier = LogisticRegression(max_iter=3000, random_state=seed).fit(s, labels)

    def standardize(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.mean) / self.std

    def features(self, x: np.ndarray) -> np.ndarray:
        return self.pca.transform(self.standardize(x))

    def accuracy(self, x: np.ndarray, labels: np.ndarray) -> float:
        if self.classifier is None:
            return float("nan")
        return float((self.classifier.predict(self.standardize(x)) == labels).mean())


def generation_metrics(generated: np.ndarray, target: np.ndarray, space: FeatureSpace,
                       labels: np.ndarray | None, real_features: np.ndarray | None = None) -> dict[str, float]:
    """MSE to the paired targets, FD to the real set in the fixed space, fixed-classifier accuracy."""
    generated, target = np.asarray(generated, np.float64), np.asarray(target, np.float64)
    if generated.shape != target.shape:
        raise ValueError(f"generated {generated.shape} and target {target.shape} must be paired")
    real_features = space.features(target) if real_features is None else real_features
    out = {
        "mse": float(np.mean((generated - target) ** 2)),
        "fd": frechet_distance(space.features(generated), real_features),
    }
    if labels is not None and space.classifier is not None:
        out["acc"] = space.accuracy(generated, labels)
    return out


# ----------------------------------------------------------------------------- decoder


#: decoder training epochs of every entry point (generate, compare, the workflow's default)
DECODER_EPOCHS = 150


def train_decoder(z: torch.Tensor, target: np.ndarray, seed: int = 0, epochs: int = DECODER_EPOCHS, batch_size: int = 256,
                  lr: float = 2e-3, hidden: int = 256, depth: int = 2) -> tuple[Decoder, np.ndarray, np.ndarray, float]:
    """Decoder on frozen embeddings -> standardised targets (deterministic given the seed)."""
    t = np.asarray(target, np.float32)
    mean, std = t.mean(0), t.std(0)
    std = np.where(std < 1e-8, 1.0, std).astype(np.float32)
    y = torch.from_numpy((t - mean) / std)
    torch.manual_seed(seed)
    dec = Decoder(z.shape[1], y.shape[1], hidden, depth)
    opt = torch.optim.AdamW(dec.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator()
    g.manual_seed(seed)
    z = z.detach()
    n = z.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            rows = perm[i : i + batch_size]
            loss = torch.mean((dec(z[rows]) - y[rows]) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        train_mse = float(torch.mean((dec(z) - y) ** 2))
    dec.eval()
    return dec, mean, std, train_mse


def decode(dec: Decoder, z: torch.Tensor, mean: np.ndarray, std: np.ndarray, lo: float, hi: float) -> np.ndarray:
    with torch.no_grad():
        out = dec(z).numpy() * std + mean
    return np.clip(out, lo, hi)


def conditions(zs: list[torch.Tensor], anchor: int = 0) -> dict[str, torch.Tensor]:
    M = len(zs)
    others = [n for n in range(M) if n != anchor]
    out = {"anchor": zs[anchor]}
    for n in others:
        out[f"from{n}"] = zs[n]
    for i, m in enumerate(others):
        for n in others[i + 1 :]:
            out[f"interp{m}+{n}"] = torch.nn.functional.normalize(zs[m] + zs[n], dim=-1)
    return out


# ----------------------------------------------------------------------------- figure


def save_samples(path: Path, samples: dict[str, np.ndarray], target_shape, n_cols: int = 10,
                 space: FeatureSpace | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(samples)
    n_cols = min(n_cols, len(next(iter(samples.values()))))
    image = target_shape is not None and len(target_shape) == 2
    fig, axes = plt.subplots(len(names), n_cols, figsize=(1.1 * n_cols + 1.2, 1.2 * len(names) if image else 0.6 * len(names)),
                             squeeze=False)
    for r, name in enumerate(names):
        x = samples[name]
        for c in range(n_cols):
            ax = axes[r, c]
            if image:
                ax.imshow(x[c].reshape(target_shape), cmap="gray_r", vmin=samples["real"].min(),
                          vmax=samples["real"].max())
            else:
                v = space.standardize(x[c : c + 1]) if space is not None else x[c : c + 1]
                ax.imshow(v, aspect="auto", cmap="RdBu_r", vmin=-2.5, vmax=2.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("rows: conditions; columns: test samples", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# ----------------------------------------------------------------------------- run


def generate_run(run_dir, out_dir, epochs: int = DECODER_EPOCHS, fd_components: int = 16, n_show: int = 10) -> dict:

    cfg, model, _loss, ds = load_run(run_dir)
    M = cfg["n_modalities"]
    seed = cfg["seed"]
    tr, te = ds.split("train"), ds.split("test")
    z_tr = embed_split(model, ds, tr, M)[0]
    zs_te = embed_split(model, ds, te, M)
    t_tr, t_te = ds.target[tr], ds.target[te]
    lo, hi = float(t_tr.min()), float(t_tr.max())
    dec, mean, std, train_mse = train_decoder(z_tr, t_tr, seed=seed, epochs=epochs)
    labels_tr = None if ds.labels is None else ds.labels[tr]
    labels_te = None if ds.labels is None else ds.labels[te]
    space = FeatureSpace(t_tr, labels_tr, fd_components, seed)
    real_feat = space.features(t_te)
    out: dict = {"gen/decoder/train_mse": train_mse}
    samples = {"real": t_te}
    for name, z in conditions(zs_te).items():
        gen = decode(dec, z, mean, std, lo, hi)
        samples[name] = gen
        for k, v in generation_metrics(gen, t_te, space, labels_te, real_feat).items():
            out[f"gen/{name}/{k}"] = v
    for k, v in generation_metrics(t_te, t_te, space, labels_te, real_feat).items():
        out[f"gen/real/{k}"] = v
    out["gen/real_train_vs_test/fd"] = frechet_distance(space.features(t_tr), real_feat)
    out.update({
        "meta/dataset": ds.meta.get("dataset"),
        "meta/objective": cfg["objective"],
        "meta/n_modalities": M,
        "meta/seed": seed,
        "meta/params": json.dumps(cfg["params"], sort_keys=True),
        "meta/decoder_epochs": epochs,
        "meta/fd_components": int(space.pca.n_components_),
        "meta/target_shape": json.dumps(ds.meta.get("target_shape")),
    })
    out.update(run_meta(cfg))  # weight and data hashes, provenance
    out_dir = Path(out_dir)
    write_json_sealed(out_dir / "generation.json", out)  # its content hash: aggregation refuses an edited file
    order = ["real", "anchor"] + [k for k in samples if k not in ("real", "anchor")]
    # columns: the first test sample of each class (then evenly spaced rows), not the first rows
    n_te = len(te)
    if labels_te is not None:
        show = [int(np.flatnonzero(labels_te == c)[0]) for c in np.unique(labels_te)][:n_show]
    else:
        show = []
    extra = [i for i in np.linspace(0, n_te - 1, num=min(n_show, n_te)).astype(int).tolist() if i not in show]
    show = (show + extra)[: min(n_show, n_te)]
    save_samples(out_dir / "samples.png", {k: samples[k][show] for k in order}, ds.meta.get("target_shape"),
                 n_show, space)
    save_sample_arrays(out_dir / "samples.npz", {k: samples[k][show] for k in order}, ds.meta.get("target_shape"),
                       space, {"dataset": ds.meta.get("dataset"), "modality_names": ds.names[:M],
                               "n_modalities": M, "seed": seed})
    return out


def save_sample_arrays(path: Path, samples: dict[str, np.ndarray], target_shape, space, meta: dict) -> None:
    """The shown samples for the report's figure (``harness figures``): ``samples`` (conditions, columns,
    features; raw units for image targets, standardised otherwise), ``conditions``, ``target_shape``
    and the run's ``dataset``, ``modality_names``, ``n_modalities``, ``seed``."""
    import io

    from harness.files import atomic_write_bytes

    image = target_shape is not None and len(target_shape) == 2
    arrays = np.stack([v if image else space.standardize(v) for v in samples.values()])
    buf = io.BytesIO()
    np.savez(buf, samples=arrays, conditions=np.array(list(samples)), target_shape=np.array(target_shape or [], dtype=int),
             dataset=np.array(str(meta["dataset"])), modality_names=np.array(meta["modality_names"]),
             n_modalities=np.array(meta["n_modalities"]), seed=np.array(meta["seed"]))
    atomic_write_bytes(path, buf.getvalue())


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, help="run folder from `python -m harness train`")
    p.add_argument("--out", required=True, help="output folder (generation.json, samples.png)")
    p.add_argument("--decoder-epochs", type=positive_int, default=DECODER_EPOCHS, help="decoder training epochs (batch 256, AdamW lr 2e-3)")
    p.add_argument("--fd-components", type=positive_int, default=16, help="PCA dims of the Fréchet-distance space")
    p.add_argument("--n-show", type=positive_int, default=10, help="test samples shown in samples.png")
    add_threads_argument(p)


def main(args) -> int:
    apply_threads(args)
    check_output_dir(args.out)
    try:
        out = generate_run(args.run, args.out, args.decoder_epochs, args.fd_components, args.n_show)
    except (TrainError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {Path(args.out) / 'generation.json'}: "
          + ", ".join(f"{k}={v:.3g}" for k, v in out.items() if k.endswith("/mse") and k.startswith("gen/")))
    return 0
