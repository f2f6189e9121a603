"""Stage bookkeeping shared by the training stages: timings and progress events.

Example:
    >>> log = StageLog()
    >>> with log.stage("split") as note:
    ...     note["detail"] = "80/20"
    >>> list(log.seconds)
    ['split']
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["StageLog", "peak_rss"]


@dataclass
class StageLog:
    """Timings of the pipeline's stages; ``on_start``/``on_end`` let a CLI show progress, and
    ``on_progress(stage, done, total, text)`` how far a long stage has got (the search's
    trials finished of all, with the best score so far)."""

    on_start: Callable[[str], None] | None = None
    on_end: Callable[[str, float, str], None] | None = None
    on_progress: Callable[[str, int, int, str], None] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def progress(self, name: str, done: int, total: int, text: str = "") -> None:
        if self.on_progress:
            self.on_progress(name, done, total, text)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, str]]:
        note: dict[str, str] = {"detail": ""}
        if self.on_start:
            self.on_start(name)
        started = time.perf_counter()
        yield note
        elapsed = time.perf_counter() - started
        self.seconds[name] = elapsed
        if self.on_end:
            self.on_end(name, elapsed, note["detail"])


def peak_rss() -> int:
    """This process's peak resident memory so far, in bytes (``getrusage``; Linux counts
    KiB). A trial's or Train worker's peak: what it held of the data. A worker process that
    Ray reused also counts what it held before, so this can only overstate a trial's share."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
