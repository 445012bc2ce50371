"""PostgreSQL store: the same queries as SQLite, for several `heliograph serve` processes at once.

Each thread (the recorder's, and the API's `asyncio.to_thread` workers) holds one autocommit
connection, opened on first use and reopened when it breaks; writes run in explicit
transactions, so no connection sits idle inside one. Migrations run under an advisory lock, per
schema, so processes starting together against one database apply each step exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from .filters import POSTGRES
from .schema import MIGRATIONS, run_step
from .executor import Executor
from .sqlstore import SQLStore, now_ms

CONNECT_TIMEOUT_S = 5
_LOCK_KEY = "hashtext('heliograph-migrations:' || coalesce(current_schema(), ''))"


def _without_nul(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL; one such value must not make a whole batch unwritable.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


class PostgresStore(SQLStore):
    dialect = POSTGRES
    unavailable_errors = (psycopg.OperationalError,)
    for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[psycopg.Connection[dict[str, Any]]] = []

    def connection(self) -> psycopg.Connection[dict[str, Any]]:
        conn: psycopg.Connection[dict[str, Any]] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                   connect_timeout=CONNECT_TIMEOUT_S, application_name="heliograph")
            with self._lock:
                self._connections = [c for c in self._connections if not c.closed]
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._unavailable_as_store_error():
            conn = self.connection()
            try:
                return conn.execute(sql, params).fetchall()
            except psycopg.OperationalError:
                if not conn.broken:
                    raise
                # The server dropped this idle connection (restart, failover): a read can go again.
                return self.connection().execute(sql, params).fetchall()

    def _tuple_batches(self, sql: str, params: Sequence[Any] = (), size: int = 10_000) -> Iterator[list[tuple[Any, ...]]]:
        # Plain tuples, in batches: analytics reads many rows, where building dicts would dominate.
        with self._unavailable_as_store_error():
            with self.connection().cursor(row_factory=tuple_row) as cursor:
                cursor.execute(sql, params)
                while batch := cursor.fetchmany(size):
                    yield batch

    @contextmanager
    def _transaction(self, *, ingest: bool = False) -> Iterator[Executor]:
        with self._unavailable_as_store_error():
            conn = self.connection()
            with conn.transaction(), conn.cursor() as cursor:
                yield cursor

    def insert_requests(self, rows: Sequence[Mapping[str, Any]],
                        give_way: Callable[[], None] | None = None) -> list[tuple[str, str]]:
        return super().insert_requests([{k: _without_nul(v) for k, v in row.items()} for row in rows])

    def migrate(self) -> list[str]:
        with self._unavailable_as_store_error():
            conn = self.connection()
            conn.execute(f"SELECT pg_advisory_lock({_LOCK_KEY})")
            try:
                return self._migrate_locked(conn)
            finally:
                if not conn.broken:
                    conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})")

    def _migrate_locked(self, conn: psycopg.Connection[dict[str, Any]]) -> list[str]:
        conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        done = {row["name"] for row in conn.execute("SELECT name FROM migrations").fetchall()}
        applied = []
        for name, step in MIGRATIONS:
            if name in done:
                continue
            with conn.transaction(), conn.cursor() as cursor:
                run_step(cursor, step, "postgres")
                conn.execute("INSERT INTO migrations VALUES (%s, %s)", (name, now_ms()))
            applied.append(name)
        return applied
