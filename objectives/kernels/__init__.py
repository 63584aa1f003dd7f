"""Shared similarity and kernel computations (one implementation of each concept).

Every objective and every divergence estimator calls these; nothing re-derives them.

- :mod:`objectives.kernels.distances`: squared distances, Gaussian log-kernels, the log-mean
  kernel and the median bandwidth heuristic on plain (B, d) samples;
- :mod:`objectives.kernels.forms`: fused L2 normalisation of all modalities and quadratic forms
  over modalities (sums of pair dot products and of squared pair distances);
- :mod:`objectives.kernels.total`: the log-sum-exp of a whole block and of every modality's
  self-similarity block; :mod:`objectives.kernels.small`: small batches of the InfoNCE family in one
  node;
- :mod:`objectives.kernels.lse`: the fused log-sum-exp kernels over similarity blocks (pair,
  group of pairs, total, self-similarity of every modality);
- :mod:`objectives.kernels.volume`: Gram-determinant volumes of (anchor, tuple) pairs by the base
  volume x height factorisation (``tuple_volumes`` for scoring) and GRAM's fused log-sum-exp over them;
  :mod:`objectives.kernels.volume_small`: the same sums for small batches of up to four modalities
  (closed-form adjugate, plain autograd);
- :mod:`objectives.kernels.workspace`: reusable CPU scratch memory for those blocks;
- :mod:`objectives.kernels.plain`: the same sums as plain log-sum-exp blocks, used while
  ``torch.compile`` traces (no host reads, no scratch memory);
- :mod:`objectives.kernels.device`: small values between host and device without synchronising.

Bandwidth convention: ``bandwidth`` is the width ``s`` of ``k_s(u, v) = exp(-|u - v|^2 / (2 s^2))``.
A Gaussian KDE with bandwidth ``h`` has cross terms of width ``s = sqrt(2) h`` (see
``harness.instruments.divergence``).
"""

from objectives.kernels.distances import (
    log_kernel_matrix,
    log_mean_kernel,
    median_bandwidth,
    median_bandwidth_tensor,
    resolve_bandwidth,
    sq_dists,
)
from objectives.kernels.forms import modality_quadratic, pair_laplacian, unit_rows
from objectives.kernels.lse import (
    generated_kernels,
    generated_kernels_info,
    group_lse,
    pair_lse,
)
from objectives.kernels.total import sphere_log_mean_kernel, sphere_self_log_mean_kernels, total_lse
from objectives.kernels.plain import gram_volumes
from objectives.kernels.volume import tuple_volumes, volume_lse
from objectives.kernels.volume_small import small_volume_fits, small_volume_lse
from objectives.kernels.workspace import WORKSPACE_MAX_BYTES, release_workspace

__all__ = [
    "WORKSPACE_MAX_BYTES",
    "generated_kernels",
    "generated_kernels_info",
    "gram_volumes",
    "group_lse",
    "log_kernel_matrix",
    "log_mean_kernel",
    "median_bandwidth",
    "median_bandwidth_tensor",
    "modality_quadratic",
    "pair_laplacian",
    "pair_lse",
    "release_workspace",
    "resolve_bandwidth",
    "small_volume_fits",
    "small_volume_lse",
    "sphere_log_mean_kernel",
    "sphere_self_log_mean_kernels",
    "sq_dists",
    "total_lse",
    "tuple_volumes",
    "unit_rows",
    "volume_lse",
]
