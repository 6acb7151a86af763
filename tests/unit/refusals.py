"""Refused inputs in unit tests: the one-line error a call raises, proved not to hang.
pytest puts this folder on sys.path: `from refusals import refused, unblock`."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml.errors import ConfigError, MLError


def refused(fn: Callable[[], Any], error: type[MLError] = ConfigError, seconds: float = 5) -> str:
    """The one-line message `fn` raises, failing (not hanging) if it takes over `seconds`."""
    outcome: dict[str, BaseException] = {}

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["exc"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds}s"
    exc = outcome.get("exc")
    assert isinstance(exc, error), f"expected {error.__name__}, got {exc!r}"
    message = str(exc)
    assert "\n" not in message and len(message) < 300, message
    return message


def unblock(fifo: Path) -> None:
    """If a reader is stuck opening the FIFO, a writer lets it go (no reader: ENXIO, ignored)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
