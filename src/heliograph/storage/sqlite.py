"""SQLite store: WAL, written by the recorder's one thread, read from any thread.

Every thread gets its own connection; nothing here runs on the event loop.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ..settings import sqlite_path
from .filters import SQLITE, Node, property_equalities
from .schema import MIGRATIONS, run_step
from .executor import Executor
from .sqlstore import SQLStore, now_ms

WRITE_BUSY_TIMEOUT_MS = 500   # past this the recorder journals instead of waiting for a lock
READ_BUSY_TIMEOUT_MS = 5000
WAL_SWITCH_ATTEMPTS = 100
GIVE_WAY_STEPS = 500          # SQLite VM steps between calls of insert_requests' give_way: ~30 µs of work


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row)}


def _use_wal(conn: sqlite3.Connection) -> None:
    # WAL is a property of the file, set once. Switching it takes an exclusive lock and SQLite does
    # not wait for that one: processes opening a new database together retry briefly.
    for attempt in range(WAL_SWITCH_ATTEMPTS):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()["journal_mode"] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_SWITCH_ATTEMPTS - 1:
                raise
            time.sleep(0.02)


class SQLiteStore(SQLStore):
    dialect = SQLITE
    unavailable_errors = (sqlite3.OperationalError,)

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self._local = threading.local()

    def connection(self, busy_timeout_ms: int = READ_BUSY_TIMEOUT_MS) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = _dict_row
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        return conn

    def insert_requests(self, rows: Sequence[Mapping[str, Any]],
                        give_way: Callable[[], None] | None = None) -> list[tuple[str, str]]:
        if give_way is None:
            return super().insert_requests(rows)
        conn = self.connection(WRITE_BUSY_TIMEOUT_MS)
        conn.set_progress_handler(give_way, GIVE_WAY_STEPS)
        try:
            return super().insert_requests(rows)
        finally:
            conn.set_progress_handler(None, 0)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._unavailable_as_store_error():
            rows: list[dict[str, Any]] = self.connection().execute(sql, params).fetchall()
            return rows

    def _tuple_batches(self, sql: str, params: Sequence[Any] = (), size: int = 10_000) -> Iterator[list[tuple[Any, ...]]]:
        # Plain tuples, in batches: analytics reads many rows, where building dicts would dominate.
        with self._unavailable_as_store_error():
            cursor = self.connection().cursor()
            cursor.row_factory = None
            cursor.execute(sql, params)
            while batch := cursor.fetchmany(size):
                yield batch

    @contextmanager
    def _transaction(self, *, ingest: bool = False) -> Iterator[Executor]:
        with self._unavailable_as_store_error():
            conn = self.connection(WRITE_BUSY_TIMEOUT_MS if ingest else READ_BUSY_TIMEOUT_MS)
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def sparse_properties(self, node: Node) -> frozenset[tuple[str, str]]:
        # SQLite keeps no per-value statistics, so it cannot tell a value found in three rows from
        # one found in half the table. A bounded count on the (key, value) index tells it: below
        # about 10·√rows matches, reading those rows beats walking the newest rows until enough match.
        pairs = property_equalities(node)
        if not pairs:
            return frozenset()
        threshold = max(1000, 10 * math.isqrt(self._rows("SELECT max(rowid) AS n FROM requests")[0]["n"] or 0))
        probe = "SELECT count(*) AS n FROM (SELECT 1 FROM request_properties WHERE key = ? AND value = ? LIMIT ?) t"
        return frozenset(pair for pair in pairs if self._rows(probe, (*pair, threshold))[0]["n"] < threshold)

    def migrate(self) -> list[str]:
        conn = self.connection()
        conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        done = {row["name"] for row in conn.execute("SELECT name FROM migrations")}
        applied = []
        for name, step in MIGRATIONS:
            if name in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone():
                    conn.execute("ROLLBACK")  # another process got there first
                    continue
                run_step(conn, step, "sqlite")
                conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, now_ms()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            applied.append(name)
        return applied
