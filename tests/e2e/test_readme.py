"""The README works as written: every shell block is either run here, in order, in a fresh
folder, or marked as shown only with a reason.

A block is marked by an HTML comment on the line before its fence (invisible on GitHub)::

    <!-- readme-test: run -->                         run it; it must exit 0
    <!-- readme-test: run expect="champion" -->       ... and print this (repeatable)
    <!-- readme-test: background ready="curl -sf http://127.0.0.1:8000/readyz" -->
                                                      start it (a server); go on once `ready`
                                                      succeeds; stopped with Ctrl-C at the end
    <!-- readme-test: run stop-servers -->            Ctrl-C the background blocks first
    <!-- readme-test: shown reason="needs AWS" -->    not run, and the reason says why

Blocks run with ``bash -e`` in a temporary folder that is also ``$HOME`` (so ``~/.raymlops``
is the test's own), with ``.venv`` linked to this checkout's virtualenv, so the README's
``.venv/bin/raymlops`` lines run as written. The cluster section starts the local multi-node
cluster exactly as the README says; whatever happens, the test ends with ``cluster down``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import wait_for_condition

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
_FENCE = re.compile(
    r"(?:<!--\s*readme-test:(?P<marker>[^\n]*?)-->\s*\n)?^```(?P<lang>bash|sh|shell|console)\n"
    r"(?P<body>.*?)^```",
    re.S | re.M,
)
_BLOCK_TIMEOUT_S = 420


@dataclass
class Block:
    line: int
    body: str
    mode: str
    stop_servers: bool = False
    expect: list[str] = field(default_factory=list)
    ready: str | None = None
    reason: str | None = None

    def where(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every shell block of the README with its marker (mode ``unmarked`` when it has none)."""
    text = README.read_text() if text is None else text
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start("body"))
        marker = match.group("marker")
        if marker is None:
            blocks.append(Block(line, match.group("body"), "unmarked"))
            continue
        words = shlex.split(marker)
        mode, options = (words[0] if words else "unmarked"), words[1:]
        block = Block(line, match.group("body"), mode)
        for option in options:
            key, _, value = option.partition("=")
            if option == "stop-servers":
                block.stop_servers = True
            elif key == "expect":
                block.expect.append(value)
            elif key == "ready":
                block.ready = value
            elif key == "reason":
                block.reason = value
            else:
                raise AssertionError(f"{block.where()}: unknown readme-test option {key!r}")
        blocks.append(block)
    return blocks


def test_every_shell_block_is_run_or_shown_with_a_reason() -> None:
    blocks = readme_blocks()
    assert blocks, "the README has no shell blocks?"
    for block in blocks:
        assert block.mode in ("run", "background", "shown"), (
            f"{block.where()}: mark the block <!-- readme-test: run --> (or background/shown "
            f"reason=...); got {block.mode!r}"
        )
        if block.mode == "shown":
            assert block.reason, f"{block.where()}: a block shown only needs reason=..."
        if block.mode == "background":
            assert block.ready, f"{block.where()}: a background block needs ready=..."
    assert sum(b.mode == "run" for b in blocks) >= 5, "most of the README must actually run"


def test_the_marker_parser_sees_what_it_should() -> None:
    """The harness itself: a block without a marker, options, a background block."""
    sample = (
        "```bash\necho plain\n```\n"
        '<!-- readme-test: run stop-servers expect="a b" expect=c -->\n```bash\necho a b c\n```\n'
        '<!-- readme-test: background ready="true" -->\n```bash\nsleep 100\n```\n'
        '<!-- readme-test: shown reason="needs AWS" -->\n```bash\nray up\n```\n'
        "```python\nprint(1)\n```\n"
    )
    blocks = readme_blocks(sample)
    assert [(b.mode, b.expect, b.ready, b.reason, b.stop_servers) for b in blocks] == [
        ("unmarked", [], None, None, False),
        ("run", ["a b", "c"], None, None, True),
        ("background", [], "true", None, False),
        ("shown", [], None, "needs AWS", False),
    ]
    assert blocks[1].body == "echo a b c\n"


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_", "RAYMLOPS_")) and k != "PYTEST_CURRENT_TEST"
    }
    env.update(
        HOME=str(home),
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),  # this checkout's raymlops, also inside Ray's workers and jobs
        COLUMNS="120",
        NO_COLOR="1",
    )
    return env


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C, as a person stops `raymlops serve`
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.slow
def test_readme_runs_as_written(tmp_path: Path) -> None:
    """Given a fresh folder, when each marked block runs in order, then each exits 0 and prints
    what the README says it does."""
    home = tmp_path
    (home / ".venv").symlink_to(VENV_BIN.parent)
    env = _env(home)
    background: list[tuple[Block, subprocess.Popen[str]]] = []
    try:
        for block in readme_blocks():
            if block.stop_servers:
                for _, process in reversed(background):
                    _stop(process)
                background.clear()
            if block.mode == "run":
                done = subprocess.run(
                    ["bash", "-e", "-o", "pipefail", "-c", block.body],
                    cwd=home,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=_BLOCK_TIMEOUT_S,
                )
                output = done.stdout + done.stderr
                assert done.returncode == 0, (
                    f"{block.where()} exited {done.returncode}:\n{block.body}\n--- output\n"
                    f"{output[-4000:]}"
                )
                for expected in block.expect:
                    assert expected in output, (
                        f"{block.where()} did not print {expected!r}:\n{output[-4000:]}"
                    )
            elif block.mode == "background":
                log = (home / f"background-{block.line}.log").open("w")
                process = subprocess.Popen(
                    ["bash", "-e", "-c", block.body],
                    cwd=home,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
                background.append((block, process))

                def ready(block: Block = block, process: subprocess.Popen[str] = process) -> bool:
                    assert process.poll() is None, (
                        f"{block.where()} ended early:\n"
                        + (home / f"background-{block.line}.log").read_text()[-4000:]
                    )
                    assert block.ready is not None
                    return (
                        subprocess.run(
                            ["bash", "-c", block.ready], cwd=home, env=env, capture_output=True
                        ).returncode
                        == 0
                    )

                wait_for_condition(ready, timeout_s=240, interval_s=1.0, message=block.where())
    finally:
        for _, process in reversed(background):
            _stop(process)
        subprocess.run(
            [str(VENV_BIN / "raymlops"), "cluster", "down"],
            cwd=home,
            env=env,
            capture_output=True,
            timeout=120,
        )
