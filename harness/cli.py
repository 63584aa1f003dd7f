"""Command line entry point: ``python -m harness COMMAND --help``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``main(args) -> int``;
modules are imported lazily so ``--help`` stays fast and one broken command cannot hide the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("harness.experiment.data", "prepare a dataset (synthetic, uci, features) into an output folder"),
    "train": ("harness.experiment.train", "train per-modality encoders with one objective"),
    "evaluate": ("harness.experiment.evaluate", "retrieval, probes, gap, divergence and conflicts on the test split"),
    "generate": ("harness.experiment.generate", "UnCLIP-style decoding from other modalities' embeddings"),
    "compare": ("harness.experiment.compare", "train UniAlign and InfoNCE on each dataset and print them side by side"),
    "validate-estimators": ("harness.instruments.validation", "divergence estimators vs closed forms"),
    "throughput": ("harness.bench.cli", "time, memory and roofline ratio of every loss kernel"),
    "aggregate": ("harness.report.aggregate", "merge per-run metrics into tidy tables"),
    "tables": ("harness.report.tables", "write the paper-analogue tables (CSV, Markdown, LaTeX)"),
    "figures": ("harness.report.figures", "draw the figures (PDF and PNG)"),
    "claims": ("harness.report.claims", "judge each claim of the paper with a 95%% interval"),
}


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """--threads, shared by the commands that run torch."""
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op CPU threads (default 1: small models; the workflow runs jobs "
                             "in parallel; 0 = torch default)")


def apply_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="Reproducibility harness for contrastive objectives with M >= 2 modalities.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        parser = build_parser()
        parser.parse_args(argv)  # prints help or "invalid choice" naming the command, exits 2
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m harness {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.main(args) or 0)
