"""Command line entry point: ``python -m harness COMMAND --help``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``main(args) -> int``;
modules are imported lazily so ``--help`` stays fast and one broken command cannot hide the others.

Every command reports a bad input or an OS error (disk full, read-only folder, a file where a
folder is expected) as one ``error: ...`` line on stderr naming the path or option, with a
non-zero exit code: 2 for argument errors, 1 for the rest, 128 + N when killed by signal N
(SIGTERM, SIGINT: partial files are removed first). Help texts show every default.
"""

from __future__ import annotations

import argparse
import importlib
import math
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
    "tuning-saturation": ("harness.report.tuning", "best validation score so far per trial, and what doubling the trials buys"),
    "claims": ("harness.report.claims", "judge each claim of the paper: interval, p value and verdict per row"),
}


# ----------------------------------------------------------------------------- argument types


def _number(kind, test, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if math.isnan(value) or not test(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} {what}"
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")
nonneg_float = _number(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
fraction = _number(float, lambda v: 0 <= v < 1, "in [0, 1)")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """--threads, shared by every command that runs torch."""
    parser.add_argument("--threads", type=nonneg_int, default=1,
                        help="torch intra-op CPU threads (1: small models, the workflow runs jobs "
                             "in parallel; 0 = torch default)")


def apply_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)


# ----------------------------------------------------------------------------- parsers


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: ``PROG: error: MESSAGE`` (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in every option's help (not "None": such an option's help says what its absence
    means); descriptions keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m harness",
        description="Reproducibility harness for contrastive objectives with M >= 2 modalities.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """(parser, module) of one command."""
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = OneLineParser(prog=f"python -m harness {name}", description=help_text, formatter_class=HelpFormatter)
    module.add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS,
                        help="messages of the harness's loggers on stderr at this level and above "
                             "(--quiet, where a command has it, keeps warnings only)")
    return parser, module


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(args: argparse.Namespace) -> None:
    """``logging.basicConfig``-style set-up: timestamped lines on stderr at ``--log-level``."""
    import logging

    level = getattr(logging, args.log_level)
    if getattr(args, "quiet", False):
        level = max(level, logging.WARNING)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S",
                            stream=sys.stderr)
    logging.getLogger("harness").setLevel(level)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        parser = build_parser()
        parser.parse_args(argv)  # prints help or "invalid choice" naming the command, exits 2
        return 2
    from harness.files import ContentError, Interrupted, describe_os_error, interruptible

    name, rest = argv[0], argv[1:]
    parser, module = command_parser(name)
    args = parser.parse_args(rest)
    configure_logging(args)
    try:
        with interruptible():
            return int(module.main(args) or 0)
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ContentError as exc:  # a result file that is truncated, changed or not the plan's: one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
