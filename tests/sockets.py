"""Which sockets a process tree listens on (Linux: ``ss`` and ``/proc``), for the network tests.

Every process of the tree counts: the descendants of the root and every process of its session
(Ray's daemons are children of the driver or of the raylet; a ``ray start --block`` node leads
its own session).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Listener", "listeners", "process_tree"]

_USERS = re.compile(r'\("([^"]*)",pid=(\d+),')


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket or bound UDP socket: protocol, local address, process."""

    proto: str
    address: str
    port: int
    pid: int
    process: str

    def __str__(self) -> str:
        return f"{self.proto} {self.address}:{self.port} {self.process}[{self.pid}]"


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of ``pid``, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[3])


def process_tree(roots: set[int]) -> set[int]:
    """``roots``, their descendants, and every process in the sessions they lead or belong to."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = info
    sessions = {table[r][1] for r in roots if r in table}
    found = set(roots) | {pid for pid, (_, sid) in table.items() if sid in sessions}
    changed = True
    while changed:
        children = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        found |= children
        changed = bool(children)
    return found


def _split(local: str) -> tuple[str, int]:
    host, _, port = local.rpartition(":")
    host = host.strip("[]").split("%", 1)[0]
    return host, int(port)


def listeners(pids: set[int]) -> list[Listener]:
    """Every TCP listener and UDP socket that one of ``pids`` holds."""
    text = subprocess.run(
        ["ss", "-H", "-l", "-t", "-u", "-n", "-p"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6:
            continue
        host, port = _split(parts[4])
        for process, pid in _USERS.findall(line):
            if int(pid) in pids:
                found.append(Listener(parts[0], host, port, int(pid), process))
    return sorted(set(found), key=str)


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")
