#!/usr/bin/env python3
"""Run Snakemake with profiles/slurm under a watchdog, so that a run cannot wait forever in silence.

    python tools/slurm/snakemake_slurm.py --configfile config/tiny.yaml       # any snakemake args
    python tools/slurm/snakemake_slurm.py --confirm-timeout 600 -- --configfile config/paper.yaml

snakemake-executor-plugin-slurm 2.x has no time limit on a job it cannot confirm: when its status
query (`sacct` or `squeue`) fails several times in a row it drops the jobs it was waiting for, and
a job that the query no longer lists (squeue forgets finished jobs after MinJobAge) stays "running"
for ever; either way Snakemake then waits without printing anything (and ignores SIGTERM).

This wrapper starts `snakemake --profile profiles/slurm ARGS` (unless ARGS name a --profile), reads
its log for the run's SLURM jobs ("Job N has been submitted with SLURM jobid J") and for Snakemake's
confirmation of each ("Finished jobid: N", or an error naming SLURM-job J), and asks squeue, every
--poll seconds, for the state of the jobs not confirmed yet. A job that SLURM has finished (an end
state, or no longer listed at all) and that Snakemake has not confirmed within --confirm-timeout
seconds (default 300: more than the plugin's longest pause between status checks, 180 s) ends the
run: Snakemake is stopped (SIGINT, then SIGTERM, then SIGKILL), the run's jobs still queued or
running are cancelled, and the error names the jobs, what sacct and squeue say about them and the
switch to use (UNIALIGN_SLURM_STATUS_COMMAND). Exit status 3 then; otherwise Snakemake's own.
SIGINT/SIGTERM/SIGHUP to the wrapper stop Snakemake the same way. While jobs run and Snakemake is
quiet, one line of job states is printed every --heartbeat seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles" / "slurm"
EXIT_UNCONFIRMED = 3
# squeue %T end states; PREEMPTED and REQUEUED are left out (SLURM may run the job again)
END_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
              "TIMEOUT", "REVOKED", "SPECIAL_EXIT"}

RUN_ID = re.compile(r"SLURM run ID: (\S+)")
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\S+?)[ .]")
FINISHED = re.compile(r"Finished jobid: (\d+)\b|Job (\d+) completed successfully, but some output files are missing")
ERROR = re.compile(r"^Error in rule \S+:")
ERROR_JOBID = re.compile(r"^\s+jobid: (\d+)\s*$")
SLURM_JOB = re.compile(r"SLURM-job '([^']+)'|external_jobid: (\S+)")


def say(msg: str) -> None:
    print(f"[snakemake_slurm] {msg}", file=sys.stderr, flush=True)


def run_quiet(cmd: list[str], timeout: float = 30) -> tuple[int, str, str]:
    if shutil.which(cmd[0]) is None:
        return 127, "", f"{cmd[0]}: command not found"
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "", f"{' '.join(cmd)}: no answer within {timeout:.0f} s"
    except OSError as exc:
        return 126, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


class Watch:
    """What the Snakemake log has said so far (filled by the reader threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.run_id: str | None = None
        self.pending: dict[str, str] = {}  # SLURM job id -> Snakemake job id, not confirmed yet
        self.last_output = time.monotonic()

    def _confirm(self, smk_jobid: str) -> None:
        for slurm_id in [s for s, j in self.pending.items() if j == smk_jobid]:
            del self.pending[slurm_id]

    def feed(self, line: str, state: dict) -> None:
        with self.lock:
            self.last_output = time.monotonic()
            if m := RUN_ID.search(line):
                self.run_id = m.group(1)
            if m := SUBMITTED.search(line):
                self.pending[m.group(2)] = m.group(1)
            if m := FINISHED.search(line):
                self._confirm(m.group(1) or m.group(2))
            for m in SLURM_JOB.finditer(line):
                self.pending.pop(m.group(1) or m.group(2), None)
            # an error block: "Error in rule R:", maybe "    message: ...", then "    jobid: N"
            if ERROR.match(line):
                state["error"] = True
            elif state.get("error") and (m := ERROR_JOBID.match(line)):
                self._confirm(m.group(1))
                state["error"] = False


def pump(stream, out, watch: Watch) -> None:
    state: dict = {}
    for line in stream:
        out.write(line)
        out.flush()
        watch.feed(line, state)


def squeue_states(run_id: str) -> dict[str, str] | None:
    rc, out, _ = run_quiet(["squeue", f"--name={run_id}", "--states=all", "--noheader", "--format=%i|%T"])
    if rc != 0:
        return None
    states = {}
    for row in out.splitlines():
        job, _, state = row.strip().partition("|")
        if job:
            states[job] = state.split()[0] if state else "UNKNOWN"
    return states


def diagnose(jobs: dict[str, str]) -> str:
    ids = ",".join(jobs)
    rc, out, err = run_quiet(["sacct", "-X", "--noheader", "--parsable2", "--format=JobIdRaw,State", "-j", ids])
    if rc == 0 and out.strip():
        sacct = "sacct reports them: " + "; ".join(out.split())
    else:
        sacct = "sacct cannot report them" + (f" ({(err or out).strip().splitlines()[0]})" if (err or out).strip() else "")
    rc, out, err = run_quiet(["scontrol", "show", "config"])
    storage = next((line.split("=", 1)[1].strip() for line in out.splitlines()
                    if line.split("=", 1)[0].strip() == "AccountingStorageType"), "unknown")
    min_age = next((line.split("=", 1)[1].strip() for line in out.splitlines()
                    if line.split("=", 1)[0].strip() == "MinJobAge"), "unknown")
    return (f"{sacct}. Cluster: AccountingStorageType={storage}, MinJobAge={min_age}. The status command is "
            "chosen in profiles/slurm/config.yaml (sacct with slurmdbd accounting, squeue otherwise); "
            "override it with UNIALIGN_SLURM_STATUS_COMMAND=squeue (no accounting; keep MinJobAge >= 180 s) "
            "or =sacct (accounting).")


def stop(proc: subprocess.Popen, grace: float) -> None:
    """SIGINT (Snakemake cancels its SLURM jobs), then SIGTERM, then SIGKILL, to the process group."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        say(f"sending {signal.Signals(sig).name} to Snakemake (pid {proc.pid})")
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def cancel_leftovers(watch: Watch) -> None:
    with watch.lock:
        run_id = watch.run_id
    if not run_id:
        return
    states = squeue_states(run_id) or {}
    active = [j for j, s in states.items() if s not in END_STATES]
    if active:
        say(f"cancelling the run's jobs still queued or running: {', '.join(active)}")
        run_quiet(["scancel", *active])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="snakemake --profile profiles/slurm, with a bound on jobs SLURM has finished but "
                    "Snakemake has not confirmed. Arguments it does not know go to snakemake.",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--confirm-timeout", type=float, default=300.0,
                        help="seconds a finished SLURM job may stay unconfirmed (default 300)")
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between squeue queries (default 10)")
    parser.add_argument("--grace", type=float, default=30.0,
                        help="seconds Snakemake gets after SIGINT before SIGTERM/SIGKILL (default 30)")
    parser.add_argument("--heartbeat", type=float, default=600.0,
                        help="print the jobs' states after this many quiet seconds (default 600)")
    parser.add_argument("--snakemake", default=None, help="snakemake executable (default: next to this Python)")
    args, rest = parser.parse_known_args(argv)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    exe = args.snakemake or str(Path(sys.executable).parent / "snakemake")
    if not Path(exe).exists():
        exe = shutil.which("snakemake") or "snakemake"
    cmd = [exe, *rest]
    if not any(a == "--profile" or a.startswith("--profile=") for a in rest):
        cmd[1:1] = ["--profile", str(PROFILE)]
    say("running: " + " ".join(cmd))

    watch = Watch()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                            start_new_session=True)
    pumps = [threading.Thread(target=pump, args=(proc.stdout, sys.stdout, watch), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr, sys.stderr, watch), daemon=True)]
    for t in pumps:
        t.start()

    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    finished_since: dict[str, float] = {}  # SLURM job id -> when squeue first showed it finished
    next_check = time.monotonic() + args.poll
    last_beat = time.monotonic()
    query_failing_since: float | None = None
    last_query_warning = 0.0
    exit_code: int | None = None
    while proc.poll() is None:
        time.sleep(min(args.poll, 1.0))
        if received:
            say(f"got {signal.Signals(received[0]).name}: stopping Snakemake")
            stop(proc, args.grace)
            cancel_leftovers(watch)
            exit_code = 128 + received[0]
            break
        now = time.monotonic()
        if now < next_check:
            continue
        next_check = now + args.poll
        with watch.lock:
            run_id, pending, last_output = watch.run_id, dict(watch.pending), watch.last_output
        if not run_id or not pending:
            finished_since.clear()
            continue
        states = squeue_states(run_id)
        if states is None:
            query_failing_since = query_failing_since or now
            if now - last_query_warning >= 60:
                last_query_warning = now
                say(f"squeue does not answer (for {now - query_failing_since:.0f} s); "
                    f"{len(pending)} SLURM job(s) not confirmed by Snakemake yet: {', '.join(pending)}")
            continue
        query_failing_since = None
        for job in list(finished_since):
            if job not in pending:
                del finished_since[job]
        for job in pending:
            state = states.get(job)
            if state is None or state in END_STATES:
                finished_since.setdefault(job, now)
            else:
                finished_since.pop(job, None)
        overdue = {job: states.get(job, "no longer listed by squeue") for job, t in finished_since.items()
                   if now - t > args.confirm_timeout}
        if overdue:
            listing = ", ".join(f"{job} (Snakemake job {pending[job]}: {state})" for job, state in overdue.items())
            say(f"ERROR: SLURM finished job(s) {listing} of run {run_id} more than "
                f"{args.confirm_timeout:.0f} s ago, but Snakemake has not registered them: its SLURM status "
                f"queries do not see them, and it would wait for ever. {diagnose(overdue)}")
            stop(proc, args.grace)
            cancel_leftovers(watch)
            say("stopped. Restart the same command: rerun-incomplete (profiles/default) redoes unconfirmed jobs; "
                "if Snakemake had to be killed, run `snakemake --unlock` (same arguments) first.")
            exit_code = EXIT_UNCONFIRMED
            break
        if now - max(last_output, last_beat) >= args.heartbeat:
            last_beat = now
            counts: dict[str, int] = {}
            for job in pending:
                label = states.get(job, "not listed")
                counts[label] = counts.get(label, 0) + 1
            say(f"waiting for {len(pending)} SLURM job(s) of run {run_id}: "
                + ", ".join(f"{n} {label}" for label, n in sorted(counts.items())))
    if exit_code is None:
        exit_code = proc.wait()
    for t in pumps:
        t.join(timeout=5)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
