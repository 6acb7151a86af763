"""Waiting for an exclusive lock on a file, for a bounded time: every `ml` lock (the DuckDB file,
the generated dbt sources file, a new MLflow store) waits this way and fails in one line."""

from __future__ import annotations

import fcntl
import time
from typing import IO

from ml.errors import MLError


def wait_for_lock(
    handle: IO[str] | int, deadline: float, timed_out: MLError, poll: float = 0.1
) -> None:
    """Take an exclusive flock on `handle` before `deadline` (time.monotonic()), else raise
    `timed_out`."""
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise timed_out from None
            time.sleep(poll)
