"""One look for every figure of the harness: colours, markers, names, symbols, sizes and the writer.

Every figure (``harness.report.figures``, the throughput figure of ``harness.bench.grid`` and the
estimator figure of ``harness.instruments.validation``) draws through this module, so an objective
keeps its colour and marker in every figure:

- :func:`series_style` gives the colour, marker and line style of an objective or a workflow
  variant: a fixed entry for the known names, otherwise a stable choice from the name's CRC-32
  (the same name gets the same style on every machine and in every run);
- :func:`display_name` gives a readable name for an objective or kernel code name;
- :data:`SYMBOLS` holds the mathtext of the instrument symbols (ζ, χ, Φ_a, V_a);
- :func:`pyplot` returns ``matplotlib.pyplot`` on the Agg backend with the shared rcParams;
- :func:`save` writes PNG and PDF atomically (``harness.files.atomic_write_bytes``) without
  timestamps, so a redraw from the same data gives the same bytes.
"""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

from harness.files import atomic_write_bytes

# colour-blind-safe base colours (Okabe-Ito, then the tab10 colours it lacks)
_BLUE, _SKY, _GREEN, _VERMILION = "#0072B2", "#56B4E9", "#009E73", "#D55E00"
_ORANGE, _PURPLE, _PINK, _YELLOW, _GREY, _BLACK = "#E69F00", "#7B4F9E", "#CC79A7", "#B8A000", "#7F7F7F", "#000000"
_WINE, _OLIVE, _TEAL, _INDIGO = "#882255", "#6B8E23", "#44AA99", "#332288"

# name -> (colour, marker) of workflow variants and benchmark baselines; an objective's own colour
# and marker are declared beside its class (objectives.registry)
_FIXED: dict[str, tuple[str, str]] = {
    "infonce_anchor1": (_SKY, "<"),
    "unialign_default": (_PINK, "d"),
    "infonce_clip": ("#A6761D", "o"),
    "symile_original": ("#66A61E", "h"),
    "unialign_tuple": (_WINE, "^"),
    "unialign_full": (_ORANGE, "v"),
    "symile_package": (_OLIVE, "p"),
    "naive_clip_loop": (_BLACK, "o"),
    "gram_direct": (_GREY, "x"),
}
_FALLBACK_COLOURS = ("#1B9E77", "#D95F02", "#7570B3", "#E7298A", "#66A61E", "#A6761D", "#E6AB02", "#1F78B4",
                     "#B2DF8A", "#FB9A99", "#CAB2D6", "#6A3D9A")
_FALLBACK_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "h", "<", ">")

# readable names of the benchmark baselines (an objective's label is in objectives.registry; figures
# with a configuration use its labels)
_NAMES = {
    "symile_package": "Symile (reference package)",
    "naive_clip_loop": "per-pair CLIP loop (naive reference)",
    "gram_direct": "GRAM, direct determinants (reference)",
}

# mathtext of the instruments' symbols
SYMBOLS = {
    "zeta": r"$\zeta$",
    "chi": r"$\chi$",
    "Phi_a": r"$\Phi_a$",
    "V_a": r"$V_a$",
    "D_H": r"$D_H$",
}

BASE_FONT = 10
RC = {
    "font.size": BASE_FONT,
    "axes.titlesize": BASE_FONT + 1,
    "axes.labelsize": BASE_FONT,
    "xtick.labelsize": BASE_FONT - 1,
    "ytick.labelsize": BASE_FONT - 1,
    "legend.fontsize": BASE_FONT - 1,
    "figure.titlesize": BASE_FONT + 2,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "pdf.compression": 6,
    "svg.hashsalt": "unialign",
}
HIGHLIGHT_WIDTH = 2.6  # line width of the two objectives a figure compares


def _objective(name: str):
    """The registry entry of ``name`` when it names an objective, else None."""
    from objectives import registry

    return registry.find(name)


def series_style(name: str) -> dict:
    """Colour and marker of an objective or variant (``color``, ``marker`` keyword arguments): the
    fixed table, then the objective's declaration, then a stable palette default by the name."""
    h = zlib.crc32(name.encode("utf-8"))
    colour = _FALLBACK_COLOURS[h % len(_FALLBACK_COLOURS)]
    marker = _FALLBACK_MARKERS[(h // len(_FALLBACK_COLOURS)) % len(_FALLBACK_MARKERS)]
    if name in _FIXED:
        colour, marker = _FIXED[name]
    elif (entry := _objective(name)) is not None:
        colour, marker = entry.colour or colour, entry.marker or marker
    return {"color": colour, "marker": marker}


def display_name(name: str) -> str:
    """A readable name for an objective or kernel code name (``name[variant]`` keeps its variant)."""
    base, _, variant = name.partition("[")
    entry = None if base in _NAMES else _objective(base)
    label = _NAMES.get(base) or (entry.label if entry is not None else base)
    return f"{label} [{variant}" if variant else label


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend with the shared rcParams applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(RC)
    return plt


def chance_recall(k: int, n: int) -> float:
    """R@k (percent) of a random ranking of a gallery of ``n`` items."""
    if n < 1:
        raise ValueError(f"gallery size must be >= 1, got {n}")
    return 100.0 * min(k, n) / n


def save(fig, path: str | os.PathLike, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` as ``path`` with each suffix in ``formats``, atomically, without timestamps; close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    meta = {"pdf": {"CreationDate": None, "ModDate": None}, "png": {"Software": None}}
    written = []
    try:
        for ext in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, bbox_inches="tight", metadata=meta.get(ext))
            written.append(atomic_write_bytes(path.with_suffix(f".{ext}"), buf.getvalue()))
    finally:
        plt.close(fig)
    return written


def legend_below(fig, handles, labels, ncol: int = 4) -> None:
    """One legend for the whole figure, under the panels (constrained layout keeps room for it)."""
    # no wider than the figure: as many columns as the longest label allows (~0.06 in per character)
    width_in = fig.get_size_inches()[0]
    longest = max((len(str(lab)) for lab in labels), default=1)
    fits = max(1, int(width_in // (0.06 * longest + 0.6)))
    fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, fits, max(1, len(labels))), frameon=False)
