"""``make bench`` refreshes only the README's marked benchmark blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.readme import publish, replace_block

README = """# x
prose before
<!-- bench:data -->
old table
<!-- /bench:data -->
prose between
<!-- bench:drift -->
drift table
<!-- /bench:drift -->
"""


def test_only_the_suites_block_changes() -> None:
    text = replace_block(README, "data", "| new | table |\n")
    assert "old table" not in text
    assert "| new | table |" in text
    assert text.replace("| new | table |", "old table") == README


def test_a_missing_block_names_the_markers() -> None:
    with pytest.raises(KeyError, match="bench:serving"):
        replace_block(README, "serving", "x")


def test_publish_copies_the_plot_and_links_it(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README)
    table = tmp_path / "data-1.md"
    table.write_text("## Data preparation\n\nheadline\n\n| a |\n|---|\n| 1 |\n")
    plot = tmp_path / "data-1.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n")
    publish("data", table, plot, readme=readme)
    text = readme.read_text()
    assert "#### Data preparation" in text
    assert "![data benchmark](docs/benchmarks/data.png)" in text
    assert (tmp_path / "docs" / "benchmarks" / "data.png").read_bytes() == plot.read_bytes()
    assert "drift table" in text
