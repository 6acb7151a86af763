"""The embedded online store: one SQLite file, no server.

Each materialization writes its rows under a new generation number, then one transaction points
the (model, context) row of `online_sets` at it; the old generation's rows are deleted after.
Readers read the pointer and the rows in one read transaction (WAL mode: readers never wait for
the writer), so they see one generation, old or new. Writers take a lock file, so a crashed
writer's rows (a generation no set points at) are removed by the next one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from ml.errors import OnlineStoreError, one_line
from ml.locks import wait_for_lock
from ml.online.base import Found, StoredSet, decode_row

_SCHEMA = """
create table if not exists online_sets (
    model text not null, context text not null, generation integer not null, meta text not null,
    primary key (model, context)
);
create table if not exists online_generations (
    generation integer primary key autoincrement, model text not null, context text not null
);
create table if not exists online_rows (
    generation integer not null, entity text not null, features text not null,
    primary key (generation, entity)
) without rowid;
"""
_MAX_VARIABLES = 900  # entities per IN (...) query, under SQLite's host-parameter limit


class SQLiteStore:
    def __init__(self, path: Path, timeout_seconds: float) -> None:
        self.path = path
        self.timeout = timeout_seconds
        self._con: sqlite3.Connection | None = None
        self._meta: dict[tuple[str, str], tuple[int, StoredSet]] = {}
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"online store {self.path}"

    def _existing(self) -> sqlite3.Connection | None:
        """The connection, or None while no file exists (nothing materialized yet: every
        context is unknown)."""
        if self._con is None and not self.path.exists():
            return None
        return self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self._con is not None:
            return self._con
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            con.execute("pragma journal_mode=wal")
            con.execute("pragma synchronous=normal")
            con.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise OnlineStoreError(f"{self.where}: cannot open ({one_line(exc, 200)})") from None
        self._con = con
        return con

    def ping(self) -> None:
        with self._lock:
            con = self._existing()
            if con is None:
                return
            try:
                con.execute("select count(*) from online_sets").fetchone()
            except sqlite3.Error as exc:
                raise OnlineStoreError(f"{self.where}: {one_line(exc, 200)}") from None

    def writer(self, model: str, context: str, stored: StoredSet) -> _Writer:
        return _Writer(self, self._connect(), model, context, stored)

    def lookup(self, model: str, context: str, entities: Sequence[str]) -> Found | None:
        with self._lock:
            con = self._existing()
            if con is None:
                return None
            try:
                return self._read(con, model, context, entities)
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("rollback")
                raise OnlineStoreError(f"{self.where}: {one_line(exc, 200)}") from None

    def _read(
        self, con: sqlite3.Connection, model: str, context: str, entities: Sequence[str]
    ) -> Found | None:
        con.execute("begin")
        try:
            row = con.execute(
                "select generation, meta from online_sets where model = ? and context = ?",
                (model, context),
            ).fetchone()
            if row is None:
                return None
            generation = int(row[0])
            cached = self._meta.get((model, context))
            if cached is None or cached[0] != generation:  # parsed once per generation
                cached = (generation, StoredSet.from_json(row[1]))
                self._meta[(model, context)] = cached
            found: dict[str, str] = {}
            unique = list(dict.fromkeys(entities))
            for start in range(0, len(unique), _MAX_VARIABLES):
                part = unique[start : start + _MAX_VARIABLES]
                marks = ",".join("?" * len(part))
                found.update(
                    con.execute(
                        "select entity, features from online_rows "  # noqa: S608 - placeholders only
                        f"where generation = ? and entity in ({marks})",
                        (generation, *part),
                    ).fetchall()
                )
        finally:
            con.execute("commit")
        rows = [decode_row(found[e]) if e in found else None for e in entities]
        return Found(cached[1], rows)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


class _Writer:
    def __init__(
        self,
        store: SQLiteStore,
        con: sqlite3.Connection,
        model: str,
        context: str,
        stored: StoredSet,
    ) -> None:
        self.store, self.con, self.model, self.context = store, con, model, context
        self.stored = stored
        self.rows = 0
        self.generation = 0
        self._lock_file: int | None = None

    def __enter__(self) -> _Writer:
        lock_path = f"{self.store.path}.lock"
        self._lock_file = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(self.store.timeout, 60.0)
        wait_for_lock(
            self._lock_file,
            deadline,
            OnlineStoreError(f"{self.store.where}: another `ml materialize` holds {lock_path}"),
        )
        try:
            with self._transaction():
                # rows of generations no set points at: a writer that died before its swap
                self.con.execute(
                    "delete from online_rows where generation not in "
                    "(select generation from online_sets)"
                )
                cursor = self.con.execute(
                    "insert into online_generations (model, context) values (?, ?)",
                    (self.model, self.context),
                )
                self.generation = int(cursor.lastrowid or 0)
        except BaseException:
            self._unlock()
            raise
        return self

    def write(self, entities: Sequence[str], rows: Sequence[str]) -> None:
        with self._transaction():
            self.con.executemany(
                "insert into online_rows (generation, entity, features) values (?, ?, ?)",
                ((self.generation, e, r) for e, r in zip(entities, rows, strict=True)),
            )
        self.rows += len(entities)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._swap()
            else:
                with contextlib.suppress(sqlite3.Error):
                    self.con.execute(
                        "delete from online_rows where generation = ?", (self.generation,)
                    )
        finally:
            self._unlock()

    def _swap(self) -> None:
        from dataclasses import replace

        meta = replace(self.stored, rows=self.rows).to_json()
        with self._transaction():
            old = self.con.execute(
                "select generation from online_sets where model = ? and context = ?",
                (self.model, self.context),
            ).fetchone()
            self.con.execute(
                "insert or replace into online_sets (model, context, generation, meta) "
                "values (?, ?, ?, ?)",
                (self.model, self.context, self.generation, meta),
            )
        if old is not None:
            with self._transaction():
                self.con.execute("delete from online_rows where generation = ?", (int(old[0]),))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self.con.execute("begin immediate")
            try:
                yield
            except BaseException:
                self.con.execute("rollback")
                raise
            self.con.execute("commit")
        except sqlite3.Error as exc:
            raise OnlineStoreError(f"{self.store.where}: {one_line(exc, 200)}") from None

    def _unlock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None
