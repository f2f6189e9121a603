"""Where Ray's own output goes while a command runs: a log file by default, the terminal on request.

Ray, Ray Data, Tune and Serve write INFO lines, progress bars, trial boxes and their workers'
output to the driver's stdout and stderr, from Python (loggers made at import, print) and from
C++ (the core worker's glog lines go to file descriptor 2). Only a redirection of the file
descriptors themselves catches all of it, so :func:`capture` points fds 1 and 2 at a log file
and gives the CLI's consoles the terminal back; :meth:`RayLog.restore` undoes it.

Inside a Ray job (``raymlops job submit``, the monitor's retrains) nothing is redirected: the
job's log is where a person reads that output.

Example:
    >>> log = capture("train", [out, err])  # doctest: +SKIP
    >>> ...                                  # Ray's lines go to log.path
    >>> log.restore()                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = ["LOG_DIR_ENV", "RayLog", "capture", "in_ray_job", "log_dir", "terminal_fds"]

#: overrides the folder of the command logs (default ``~/.raymlops/logs``)
LOG_DIR_ENV = "RAYMLOPS_LOG_DIR"

# Ray sets it in the environment of every job driver (ray._private.runtime_env.constants)
_RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"

#: the capture in force in this process, if any
_active: list[RayLog] = []


def log_dir() -> Path:
    """``$RAYMLOPS_LOG_DIR``, else ``logs`` in the user's raymlops folder."""
    from raymlops.cluster import raymlops_home

    configured = os.environ.get(LOG_DIR_ENV)
    return Path(configured).expanduser() if configured else raymlops_home() / "logs"


def in_ray_job() -> bool:
    """Whether this process is the driver of a Ray job (its output is the job's log)."""
    return bool(os.environ.get(_RAY_JOB_ENV))


@dataclass
class RayLog:
    """fds 1 and 2 pointed at ``path``; the consoles given to :func:`capture` on the terminal."""

    path: Path
    _saved_fds: tuple[int, int]
    _consoles: list[tuple[Any, Any]] = field(default_factory=list)
    _terminals: list[TextIO] = field(default_factory=list)

    @contextlib.contextmanager
    def terminal_fds(self) -> Iterator[None]:
        """fds 1 and 2 on the terminal again for a while, then back on the log."""
        _flush()
        for fd, saved in zip((1, 2), self._saved_fds, strict=True):
            os.dup2(saved, fd)
        try:
            yield
        finally:
            _flush()
            log_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
            finally:
                os.close(log_fd)

    def restore(self) -> None:
        """Give fds 1 and 2 back to the terminal and the consoles their own streams."""
        if not self._terminals:
            return  # restored already
        if self in _active:
            _active.remove(self)
        _flush()
        for fd, saved in zip((1, 2), self._saved_fds, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        for console, original in self._consoles:
            console.file = original
        for stream in self._terminals:
            with contextlib.suppress(OSError):
                stream.close()
        self._terminals.clear()


def capture(command: str, consoles: Sequence[Any]) -> RayLog:
    """Send everything written to fds 1 and 2 to a new log file for ``command``; the rich
    ``consoles`` keep writing to the terminal (a stderr console to stderr)."""
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{command}-{stamp}-{os.getpid()}.log"
    _flush()
    saved = (os.dup(1), os.dup(2))
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
    finally:
        os.close(log_fd)
    terminals = [
        os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace") for fd in saved
    ]
    log = RayLog(path, saved, _terminals=terminals)
    _active.append(log)
    for console in consoles:
        log._consoles.append((console, console._file))  # None: the console follows sys.std*
        stream = console.file  # its own file, else sys.stderr / sys.stdout now
        if _writes_to_fd(stream):
            console.file = terminals[stream.fileno() - 1]
    return log


def _writes_to_fd(stream: Any) -> bool:
    """Whether ``stream`` writes to fd 1 or 2; not so for a capture made in Python (pytest's
    capsys, a StringIO), which the consoles then keep writing to."""
    try:
        return stream.fileno() in (1, 2)
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def terminal_fds() -> Iterator[None]:
    """While a local Ray starts: its processes inherit fds 1 and 2, and must inherit the
    terminal's, as without a capture (a retrain job that the monitor submitted to a Ray started
    on the log's descriptors hung before its first Ray Data read). No-op without a capture."""
    if not _active:
        yield
        return
    log = _active[-1]
    # Ray's own Python log lines meanwhile (the token notice) still go to the log file
    handlers = logging.getLogger("ray").handlers
    keep = _ToLog(log.path)
    for handler in handlers:
        handler.addFilter(keep)
    try:
        with log.terminal_fds():
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(keep)


class _ToLog(logging.Filter):
    """Writes a record to the log file instead of letting its handler show it."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def filter(self, record: logging.LogRecord) -> bool:
        with contextlib.suppress(OSError), self.path.open("a", encoding="utf-8") as log:
            log.write(f"{record.levelname} {record.name}: {record.getMessage()}\n")
        return False


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
