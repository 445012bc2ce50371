"""SQLite store: WAL, written by the recorder's one thread, read from any thread.

Every thread gets its own connection; nothing here runs on the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..settings import sqlite_path
from .schema import MIGRATIONS, REQUEST_COLUMNS

WRITE_BUSY_TIMEOUT_MS = 500   # past this the recorder journals instead of waiting for a lock
READ_BUSY_TIMEOUT_MS = 5000

_INSERT_REQUEST = (f"INSERT OR IGNORE INTO requests ({', '.join(REQUEST_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})")
_INSERT_BODY = "INSERT OR IGNORE INTO request_bodies (id, request, response) VALUES (?, ?, ?)"


class SQLiteStore:
    dialect = "sqlite"

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self._local = threading.local()

    def connection(self, busy_timeout_ms: int = READ_BUSY_TIMEOUT_MS) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def migrate(self) -> list[str]:
        conn = self.connection()
        conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        done = {row[0] for row in conn.execute("SELECT name FROM migrations")}
        applied = []
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone():
                    conn.execute("ROLLBACK")  # another process got there first
                    continue
                for statement in sql.split(";"):
                    conn.execute(statement)
                conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, int(time.time() * 1000)))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            applied.append(name)
        return applied

    # -- writing (recorder thread) -------------------------------------------------------------

    def insert_requests(self, rows: Sequence[Mapping[str, Any]]) -> None:
        conn = self.connection(WRITE_BUSY_TIMEOUT_MS)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT_REQUEST, [tuple(row[c] for c in REQUEST_COLUMNS) for row in rows])
            conn.executemany(_INSERT_BODY, [(row["id"], row["request_body"], row["response_body"]) for row in rows])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- keys ------------------------------------------------------------------------------------

    def create_key(self, key_id: str, name: str, key_hash: str, prefix: str) -> None:
        self.connection().execute(
            "INSERT INTO keys (id, name, key_hash, prefix, created_at) VALUES (?, ?, ?, ?, ?)",
            (key_id, name, key_hash, prefix, int(time.time() * 1000)))

    def list_keys(self) -> list[dict[str, Any]]:
        rows = self.connection().execute(
            "SELECT id, name, prefix, created_at, revoked_at FROM keys ORDER BY created_at")
        return [dict(row) for row in rows]

    def revoke_key(self, id_or_name: str) -> int:
        cur = self.connection().execute(
            "UPDATE keys SET revoked_at = ? WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
            (int(time.time() * 1000), id_or_name, id_or_name))
        return cur.rowcount

    def active_keys(self) -> dict[str, str]:
        rows = self.connection().execute("SELECT key_hash, id FROM keys WHERE revoked_at IS NULL")
        return {row[0]: row[1] for row in rows}

    # -- reading ----------------------------------------------------------------------------------

    def get_request(self, request_id: str) -> dict[str, Any] | None:
        row = self.connection().execute(
            "SELECT r.*, b.request AS request_body, b.response AS response_body "
            "FROM requests r LEFT JOIN request_bodies b ON b.id = r.id WHERE r.id = ?", (request_id,)).fetchone()
        return dict(row) if row else None

    def count_requests(self) -> int:
        return int(self.connection().execute("SELECT count(*) FROM requests").fetchone()[0])

    def request_ids(self) -> Iterable[str]:
        return [row[0] for row in self.connection().execute("SELECT id FROM requests")]

    def ping(self) -> None:
        self.connection().execute("SELECT 1").fetchone()

