"""``--readme``: put a suite's latest table and plot into the README's Benchmarks section.

Each suite owns one block of ``README.md`` between ``<!-- bench:<suite> -->`` and
``<!-- /bench:<suite> -->``; a run replaces that block with its markdown (title, headline,
table, checks, command and machine) and a link to its plot, copied to
``docs/benchmarks/<suite>.png``. Text outside the markers is never touched, so the prose around
the tables stays the author's.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

__all__ = ["publish", "replace_block"]

ROOT = Path(__file__).resolve().parent.parent


def replace_block(text: str, suite: str, body: str) -> str:
    """``text`` with ``suite``'s marked block replaced by ``body``.

    Raises:
        KeyError: the README has no block for ``suite`` (add the two marker lines first).
    """
    start, end = f"<!-- bench:{suite} -->", f"<!-- /bench:{suite} -->"
    pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise KeyError(f"README has no '{start}' ... '{end}' block for the {suite} suite")
    return pattern.sub(lambda _: f"{start}\n{body.strip()}\n{end}", text, count=1)


def publish(suite: str, table: Path, plot: Path | None, readme: Path = ROOT / "README.md") -> Path:
    """Copy ``plot`` next to the README and put ``table`` (the suite's .md) in its block."""
    body = table.read_text(encoding="utf-8").replace("## ", "#### ", 1)
    if plot is not None and plot.exists():
        target = readme.parent / "docs" / "benchmarks" / f"{suite}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plot, target)
        body += f"\n![{suite} benchmark](docs/benchmarks/{suite}.png)\n"
    readme.write_text(replace_block(readme.read_text(encoding="utf-8"), suite, body), "utf-8")
    return readme
