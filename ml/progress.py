"""Step-by-step progress on stderr, so stdout stays free for --json."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


class Steps:
    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.enabled:
            self.stream.write(f"  {name} ...")
            self.stream.flush()
        try:
            yield
        except BaseException:
            if self.enabled:
                self.stream.write(" failed\n")
            raise
        elapsed = time.perf_counter() - start
        self.timings[name] = elapsed
        if self.enabled:
            self.stream.write(f" {elapsed:.1f}s\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"  {text}\n")


def progress_bar(
    stream: TextIO, width: int = 30, every_seconds: float = 10.0
) -> Callable[[int, int], None]:
    """A rows/s bar redrawn in place on a terminal. Elsewhere (CI logs, pipes) plain lines: the
    first batch, then at most one every `every_seconds`, and the last."""
    start = time.perf_counter()
    if not stream.isatty():
        last = [float("-inf")]

        def line(done: int, total: int) -> None:
            now = time.perf_counter() - start
            if done < total and now - last[0] < every_seconds:
                return
            last[0] = now
            # each line ends the one before: the step's timing lands after the last one
            stream.write(f"\n    {done:,}/{total:,} rows written")
            stream.flush()

        return line

    def update(done: int, total: int) -> None:
        frac = done / total if total else 1.0
        rate = done / max(time.perf_counter() - start, 1e-9)
        bar = "#" * int(frac * width)
        stream.write(f"\r  [{bar:<{width}}] {done:,}/{total:,} rows  {rate:,.0f} rows/s")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return update
