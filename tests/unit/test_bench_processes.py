"""The one /proc walker the benchmarks share (drift's worker memory, tune's Ray daemons' CPU,
serving's process tree)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from benchmarks.report import Process, descendants, processes

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc (Linux)")


def test_descendants_are_the_tree_below_a_process_and_nothing_else() -> None:
    # a child that starts a grandchild and waits for it
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"  # noqa: E501
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            tree = descendants(os.getpid())
            grandchildren = [p for p in tree.values() if p.ppid == child.pid]
            if grandchildren:
                break
            time.sleep(0.05)
        assert child.pid in tree
        [grandchild] = grandchildren
        assert b"time.sleep(30)" in grandchild.cmdline
        assert os.getpid() not in tree  # the root itself is not its own descendant
        assert os.getppid() not in tree
        assert set(descendants(child.pid)) == {grandchild.pid}
    finally:
        for process in descendants(child.pid).values():
            os.kill(process.pid, 9)
        child.kill()
        child.wait()


def test_a_process_has_its_cpu_time_and_resident_memory() -> None:
    me = processes()[os.getpid()]
    assert isinstance(me, Process)
    assert me.ppid == os.getppid()
    times = os.times()
    assert 0 < me.cpu_s <= times.user + times.system + 0.05
    with open("/proc/self/status") as status:
        vm_rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    assert abs(me.rss_bytes - vm_rss) < 16 * 2**20  # read a moment apart
