"""Run several ``python -m harness`` commands as one Snakemake job.

    python -m workflow.scripts.harness_batch [--subprocess] [--python PY] -- "train ... --seed 0" "train ... --seed 1"

(run from the repository root or with it on PYTHONPATH, as the Snakefile arranges).

Each positional argument is one harness command line (shell-quoted, as ``shlex.join`` writes it).
By default they run one after the other in this process through ``harness.cli.main`` with exactly
the argv ``python -m harness`` would get, so torch and the harness are imported once per job rather
than once per run (about 2.5 s each on a small CPU machine).  ``--subprocess`` starts a separate
``PY -m harness ...`` process per command instead.  The first failing command stops the job with
its exit status; every command is echoed (with its wall time) to stdout, i.e. to the job's log.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time


def run_in_process(argv: list[str]) -> int:
    from harness.cli import main

    try:
        return int(main(argv) or 0)
    except SystemExit as exc:  # argparse errors, explicit sys.exit in a command
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subprocess", action="store_true", help="one `PY -m harness` process per command")
    parser.add_argument("--python", default=sys.executable, help="interpreter for --subprocess")
    parser.add_argument("commands", nargs="*", help="harness command lines")
    args = parser.parse_args()
    for index, line in enumerate(args.commands, 1):
        argv = shlex.split(line)
        print(f"[{index}/{len(args.commands)}] $ python -m harness {shlex.join(argv)}", flush=True)
        start = time.perf_counter()
        if args.subprocess:
            rc = subprocess.call([args.python, "-m", "harness", *argv])
        else:
            rc = run_in_process(argv)
        print(f"[{index}/{len(args.commands)}] exit {rc} after {time.perf_counter() - start:.2f} s", flush=True)
        if rc != 0:
            print(f"harness_batch: command {index} failed with exit status {rc}: {line}", file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
