"""Opening a DuckDB file: one `ml` process writes it at a time, and its memory is bounded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any

from ml.config import DuckDBSettings
from ml.errors import ConfigError, WarehouseError, one_line
from ml.locks import wait_for_lock

PATH = "warehouse.duckdb.path (ML_DUCKDB_PATH)"


class Connection:
    """The file lock and the DuckDB connection, held together and released together. The file
    must exist unless `create` (`ml demo-data`; dbt creates it too): a command that only reads
    or adds to a warehouse refuses a missing one rather than leave a new, empty file behind."""

    def __init__(self, path: Path, settings: DuckDBSettings, *, create: bool = False) -> None:
        self.path = path
        self.settings = settings
        self.create = create
        self._lock: IO[str] | None = None
        self.raw: Any = None

    def open(self) -> Any:
        """Wait (bounded) for other `ml` processes, then for anything else holding the file."""
        import duckdb

        self._check_path()
        timeout = self.settings.lock_timeout_seconds
        deadline = time.monotonic() + timeout
        self._lock = _acquire_file_lock(self.path.with_name(self.path.name + ".lock"), deadline)
        while True:
            try:
                con = duckdb.connect(str(self.path))
                _configure(con, self.settings)
                self.raw = con
                return con
            except Exception as exc:  # noqa: BLE001 - duckdb raises one class for many faults
                locked = "lock" in str(exc).lower()
                if locked and time.monotonic() < deadline:
                    time.sleep(0.25)
                    continue
                self.close()
                if isinstance(exc, ConfigError):
                    raise
                if locked:
                    raise WarehouseError(
                        f"{self.path}: locked by another process for {timeout:g}s "
                        f"({one_line(exc)}); retry when it has finished"
                    ) from None
                raise WarehouseError(
                    f"{self.path}: cannot open the DuckDB file ({one_line(exc)})"
                ) from None

    def _check_path(self) -> None:
        """Before the lock file or any folder is created beside it."""
        if self.path.exists():
            if not self.path.is_file():
                raise WarehouseError(
                    f"{PATH}: {self.path} is not a regular file (expected a DuckDB database file)"
                )
            return
        if not self.create:
            raise WarehouseError(
                f"{PATH}: {self.path} does not exist (`ml demo-data` or `dbt build` creates it)"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WarehouseError(
                f"{PATH}: cannot create {self.path.parent} ({exc.strerror or one_line(exc)})"
            ) from None

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()
            self.raw = None
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None


def _configure(con: Any, duck: DuckDBSettings) -> None:
    """UTC, no Python-variable scans, and DuckDB's cache bounded: with a memory limit, scoring's
    memory follows the batch size, not the table size."""
    con.execute("set timezone = 'UTC'")
    con.execute("set python_enable_replacements = false")
    if duck.memory_limit:  # checked where settings load: a number and a unit, nothing else
        con.execute(f"set memory_limit = '{duck.memory_limit}'")
    if duck.threads:
        con.execute(f"set threads = {int(duck.threads)}")


def _acquire_file_lock(lock_path: Path, deadline: float) -> IO[str]:
    handle = open(lock_path, "a+")  # noqa: SIM115 - held until Connection.close()
    db = lock_path.with_name(lock_path.name.removesuffix(".lock"))
    busy = WarehouseError(
        f"{db}: in use by another ml process (waited for {lock_path.name}); "
        "retry when it has finished"
    )
    try:
        wait_for_lock(handle, deadline, busy)
    except WarehouseError:
        handle.close()
        raise
    return handle
