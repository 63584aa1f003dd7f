"""Atomic writes, output checks, signal clean-up and the one-writer lock of a folder.

A result file is either complete or absent, never half written: data goes to a temporary file
``.{name}.XXXX.tmp`` in the same folder, is fsynced, then renamed over the target. SIGTERM and
SIGINT raise :class:`Interrupted` (inside :func:`interruptible`), so a write in progress
removes its temporary file before the process exits; temporary files of a process killed with
SIGKILL are removed by the next writer of the folder (:func:`remove_stale_tmp`, under the lock).
OS errors are reported as :class:`OutputError`: one line naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"


class OutputError(OSError):
    """An output path cannot be written; ``str()`` is one line naming the path and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str, err: int | None = None):
        super().__init__(err or errno.EIO, reason)
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"


class LockedError(OutputError):
    """Another process holds the folder's writer lock."""

    def __str__(self) -> str:
        return f"{self.path} is being written by another process ({self.reason}); wait for it or use another folder"


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived; raised in the main thread so that writers clean up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}; partial files removed, rerun the command to resume"


def describe_os_error(exc: OSError) -> str:
    """One line naming the path of an OS error (``OutputError`` already does)."""
    if isinstance(exc, OutputError):
        return str(exc)
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return reason


def _as_output_error(path: Path, exc: OSError) -> OutputError:
    if isinstance(exc, OutputError):
        return exc
    where = exc.filename if exc.filename not in (None, str(path)) else None
    reason = exc.strerror or str(exc)
    if where is not None:
        reason = f"{reason} ({where})"
    return OutputError(path, reason, exc.errno)


# ----------------------------------------------------------------------------- signals


def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block SIGTERM/SIGINT raise :class:`Interrupted`; the previous handlers come back after.

    Only the main thread can set handlers; elsewhere the block runs unchanged.
    """
    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _raise_interrupted)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- checks


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse (without writing) an output folder that is a file or cannot be created/written."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputError(path, f"{option} {path} is a file; a folder is expected", errno.ENOTDIR)
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(path, "the folder is not writable", errno.EACCES)
        return path
    base = _nearest_existing(path.absolute().parent)
    if not base.is_dir():
        raise OutputError(path, f"{base} is a file, so the folder cannot be created", errno.ENOTDIR)
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(path, f"{base} is not writable", errno.EACCES)
    return path


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse (without writing) an output file that is a folder or whose folder cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, f"{option} {path} is a folder; a file is expected", errno.EISDIR)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(path, "the file is not writable", errno.EACCES)
    check_output_dir(path.absolute().parent, option=f"the folder of {option}")
    return path


# ----------------------------------------------------------------------------- relocatable paths


def relative_path(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` relative to the folder ``base`` (POSIX separators), so both can move together."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def resolve_recorded_path(recorded: str | os.PathLike, base: str | os.PathLike) -> Path:
    """A path recorded by :func:`relative_path` (or an absolute one from older files) read from ``base``."""
    p = Path(recorded)
    return p if p.is_absolute() else (Path(base) / p).resolve()


# ----------------------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file in the same folder, fsync it, then rename over ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give results the usual umask-governed mode
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise _as_output_error(path, exc) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- sealed JSON records
# A result record carries the sha256 of its own content (canonical JSON of every other key), so a
# changed value -- a flipped bit, an edit -- is refused by whoever reads it, not aggregated as is.
CONTENT_KEY = "meta/content_sha256"


class ContentError(ValueError):
    """A result file is unreadable, truncated, or changed after it was written; one line naming it."""


def content_sha256(obj: dict, key: str = CONTENT_KEY) -> str:
    body = {k: v for k, v in obj.items() if k != key}
    return sha256_bytes(json.dumps(body, sort_keys=True, allow_nan=True, separators=(",", ":")).encode("utf-8"))


def seal(obj: dict, key: str = CONTENT_KEY) -> dict:
    """``obj`` with its content hash under ``key``."""
    return {**obj, key: content_sha256(obj, key)}


def write_json_sealed(path: str | os.PathLike, obj: dict, key: str = CONTENT_KEY) -> Path:
    return write_json(path, seal(obj, key))


def check_seal(obj: dict, path: str | os.PathLike, key: str = CONTENT_KEY, required: bool = True) -> dict:
    """``obj`` (read from ``path``) if its recorded content hash matches; a missing one only if not ``required``."""
    recorded = obj.get(key)
    if recorded is None:
        if required:
            raise ContentError(f"{path} records no {key} (written by an older version, or edited); "
                               "rerun the step that writes it")
        return obj
    actual = content_sha256(obj, key)
    if actual != recorded:
        raise ContentError(f"{path} changed after it was written: content sha256 {actual} != recorded {recorded}; "
                           "rerun the step that writes it")
    return obj


def read_json_sealed(path: str | os.PathLike, key: str = CONTENT_KEY, required: bool = True) -> dict:
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContentError(f"{path} is unreadable (truncated or corrupted?): {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise ContentError(f"{path} holds a JSON {type(obj).__name__}, not a record")
    return check_seal(obj, path, key, required)


def check_csv_complete(path: str | os.PathLike, text: str) -> None:
    """Refuse a CSV whose last line is cut or whose rows have another field count than the header."""
    import csv
    import io

    if text and not text.endswith("\n"):
        raise ContentError(f"{path} is truncated: its last line has no line end")
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    for number, row in enumerate(rows, start=2):
        if header is not None and len(row) != len(header):
            raise ContentError(f"{path} line {number} has {len(row)} fields, the header {len(header)}: "
                               "the file is truncated or corrupted; rerun the step that writes it")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.*.tmp`` files an atomic writer left in ``folder`` (call under the lock)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(f".*{TMP_SUFFIX}"):
        if p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


# ----------------------------------------------------------------------------- one writer per folder


class FolderLock:
    """Exclusive ``fcntl.flock`` on ``FOLDER/.lock``, holding ``pid host`` of the writer.

    ``acquire`` creates the folder, fails at once with :class:`LockedError` naming the holder
    when another process holds it, then removes stale temporary files. The kernel drops the lock
    when the process dies, so a killed writer never blocks the next one. ``release`` removes the
    lock file, and the folders ``acquire`` created, when nothing else was written there (a
    refused input leaves no trace).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created: list[Path] = []
        self._new_lock = False

    def acquire(self) -> FolderLock:
        import fcntl

        check_output_dir(self.folder)
        p = self.folder.absolute()
        self._created = []
        while not p.exists():
            self._created.append(p)
            p = p.parent
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._new_lock = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _as_output_error(self.folder, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 256).decode("utf-8", "replace").strip() or "unknown holder"
            finally:
                os.close(fd)
            raise LockedError(self.folder, f"lock {self.path} held by {holder}", errno.EBUSY) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        except OSError as exc:
            os.close(fd)
            raise _as_output_error(self.path, exc) from exc
        self._fd = fd
        remove_stale_tmp(self.folder)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        try:
            if self._new_lock and [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
                self.path.unlink()
                for p in self._created:  # innermost first; stops at the first one not empty
                    p.rmdir()
        except OSError:
            pass
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
