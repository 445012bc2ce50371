"""The lifecycle of stored records: streaming them out, expiring them, erasing a user.

    iter_requests   every matching row of one project, oldest first, in keyset pages on (created_at, id)
    prune           bodies older than N days; rows older than M days with everything hanging off them
                    (deployment-wide: retention is an operator's setting, not a project's)
    erase_user      everything keyed to one user id within one project, then an audit line (table and log)

Mixed into SQLStore, so both stores share it. Deletes run in batches of BATCH_ROWS, each its own
short transaction: SQLite has one write lock and the recorder waits at most
sqlite.WRITE_BUSY_TIMEOUT_MS for it before journaling, so on SQLite every batch is followed by a
pause at least as long as the batch held the lock and never below MIN_PAUSE_S: SQLite's busy
handler retries after sleeps of at most 50 ms for its first ~380 ms, so a gap of 50 ms is always
hit by a waiting writer long before its 500 ms are up. (Measured, 40k rows: the recorder's writes
wait 22 ms at most with the pauses, up to 130 ms without.) PostgreSQL locks rows, not the
database; it only needs the transactions kept short.

Which tables to clean is read from the schema at run time, so tables added later (by another
feature's migrations) are covered without touching this module:

* a table with a `request_id` column holds rows belonging to one request: they go with it;
* a table with a `user_id` column holds rows about one user: erasure deletes that user's rows,
  those of the erased project only where the table has a `project_id` column (every table made
  since migration 023 does; one without cannot tell projects apart, and loses the user's rows of
  every project rather than keep any of the erased one's);
* `rollup_*` tables are aggregates: expiry leaves them alone (metrics outlive raw rows), erasure
  deletes their rows that carry the user's id. Aggregates without a user dimension stay, with the
  user's share of their sums; their keys are models, request names and property values, so a
  property value that is personal data outlives the erasure there (README says so; taking the
  user's share out of those sums belongs with the rollup code).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import orjson

from .filters import ALL, Dialect, Node, compile_filter
from .rollups import unroll_requests
from .schema import BOOLEAN_COLUMNS

audit = logging.getLogger("heliograph.audit")
log = logging.getLogger("heliograph.retention")

DAY_MS = 86_400_000
BATCH_ROWS = 500
MIN_PAUSE_S = 0.05
EXPORT_PAGE_ROWS = 500
ROLLUP_PREFIX = "rollup_"
SUBJECT_KEY = "audit_subject_key"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Executor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...


class _SQL(Protocol):
    """What the mixin needs from SQLStore."""

    dialect: ClassVar[Dialect]

    def _rows(self, sql: str, params: Sequence[Any] = ...) -> list[dict[str, Any]]: ...
    def _transaction(self, *, ingest: bool = ...) -> AbstractContextManager[_Executor]: ...
    def scores(self, request_ids: Sequence[str], *, project: str) -> dict[str, dict[str, int]]: ...
    def instance_secret(self, name: str) -> str: ...


@dataclass(frozen=True, slots=True)
class PruneResult:
    bodies: int                     # bodies dropped by body retention (their rows stay)
    deleted: dict[str, int]         # table → rows dropped by metrics retention
    complete: bool = True           # False when asked to stop before the end


@dataclass(frozen=True, slots=True)
class Erasure:
    subject: str                    # keyed hash of the user id, as written to the audit log
    deleted: dict[str, int]         # table → rows deleted


class _Pacer:
    """Gives the write lock back between batches (SQLite); `stop` ends the work early."""

    def __init__(self, dialect: Dialect, stop: threading.Event | None) -> None:
        self.min_pause = MIN_PAUSE_S if dialect.name == "sqlite" else 0.0
        self.stop = stop or threading.Event()

    def pause(self, busy_s: float) -> bool:
        """Wait after a batch that held the lock `busy_s`; False when asked to stop."""
        wait = max(self.min_pause, busy_s) if self.min_pause else 0.0
        return not self.stop.wait(wait) if wait else not self.stop.is_set()


def _normalise(row: dict[str, Any]) -> dict[str, Any]:
    for column in BOOLEAN_COLUMNS:
        if row.get(column) is not None:
            row[column] = bool(row[column])
    return row


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for table, count in more.items():
        total[table] = total.get(table, 0) + count


def tables_with_column(store: _SQL, column: str) -> list[str]:
    if store.dialect.name == "sqlite":
        sql = ("SELECT m.name AS t FROM sqlite_master m, pragma_table_info(m.name) p "
               "WHERE m.type = 'table' AND p.name = ? ORDER BY m.name")
    else:
        sql = ("SELECT table_name AS t FROM information_schema.columns "
               "WHERE table_schema = current_schema() AND column_name = %s ORDER BY table_name")
    # Names come from the schema, not from a client; the check still keeps quoting trivially safe.
    return [row["t"] for row in store._rows(sql, (column,)) if _IDENTIFIER.match(row["t"])]


def _delete_requests(store: _SQL, ids: Sequence[str], children: Sequence[str],
                     unroll: bool = False) -> dict[str, int]:
    """Rows `ids` and everything keyed to them, in one transaction (children first).

    `unroll` also takes them out of the rollups without a user column (erasure: a property value
    or request name may itself identify the person); expiry leaves rollups alone on purpose.
    """
    ph = store.dialect.placeholder
    marks = ", ".join([ph] * len(ids))
    counts: dict[str, int] = {}
    with store._transaction() as tx:
        if unroll:
            stored = tx.execute(f"SELECT * FROM requests WHERE id IN ({marks})", ids).fetchall()
            unroll_requests(tx, store.dialect, stored)
        for table in children:
            counts[table] = tx.execute(f'DELETE FROM "{table}" WHERE request_id IN ({marks})', ids).rowcount
        counts["request_bodies"] = tx.execute(f"DELETE FROM request_bodies WHERE id IN ({marks})", ids).rowcount
        counts["requests"] = tx.execute(f"DELETE FROM requests WHERE id IN ({marks})", ids).rowcount
    return counts


def _delete_request_batches(store: _SQL, condition: str, params: Sequence[Any], children: Sequence[str],
                            pacer: _Pacer, batch: int, unroll: bool = False) -> tuple[dict[str, int], bool]:
    """Delete the requests matching `condition` (over `requests`), batch by batch; (counts, finished)."""
    ph = store.dialect.placeholder
    select = f"SELECT id FROM requests WHERE {condition} LIMIT {ph}"
    counts: dict[str, int] = {table: 0 for table in [*children, "request_bodies", "requests"]}
    while True:
        ids = [row["id"] for row in store._rows(select, [*params, batch])]
        if not ids:
            return counts, True
        started = time.monotonic()
        _add(counts, _delete_requests(store, ids, children, unroll))
        if len(ids) < batch:
            return counts, True
        if not pacer.pause(time.monotonic() - started):
            return counts, False


def _delete_user_rows(store: _SQL, table: str, user_id: str, project: str | None, pacer: _Pacer, batch: int) -> int:
    """Rows of `table` with this user_id (in `project`, unless None), in batches addressed by the
    engine's own row locator."""
    ph = store.dialect.placeholder
    match = f"user_id = {ph}" + ("" if project is None else f" AND project_id = {ph}")
    key = (user_id,) if project is None else (user_id, project)
    if store.dialect.name == "postgres":
        sql = (f'DELETE FROM "{table}" WHERE ctid = ANY(ARRAY('
               f'SELECT ctid FROM "{table}" WHERE {match} LIMIT {ph}))')
    else:
        definition = store._rows("SELECT sql FROM sqlite_master WHERE name = ?", (table,))[0]["sql"] or ""
        if "without rowid" in definition.lower():
            with store._transaction() as tx:       # no row locator to batch by: one statement
                return int(tx.execute(f'DELETE FROM "{table}" WHERE {match}', key).rowcount)
        sql = f'DELETE FROM "{table}" WHERE rowid IN (SELECT rowid FROM "{table}" WHERE {match} LIMIT ?)'
    total = 0
    while True:
        started = time.monotonic()
        with store._transaction() as tx:
            count = int(tx.execute(sql, (*key, batch)).rowcount)
        total += count
        if count < batch or not pacer.pause(time.monotonic() - started):
            return total


class Lifecycle:
    """Mixed into SQLStore: streaming export, retention and erasure for both dialects."""

    def iter_requests(self: _SQL, node: Node = ALL, *, project: str, with_bodies: bool = False,
                      limit: int | None = None, page_size: int = EXPORT_PAGE_ROWS) -> Iterator[dict[str, Any]]:
        """Rows of `project` matching `node`, oldest first, each with `scores` (and bodies when asked).

        Keyset pages on (created_at, id) rather than OFFSET: each page is an index range read, so
        the millionth row costs what the first did, and memory holds one page. Rows recorded while
        the export runs appear if they sort after the page being read.
        """
        ph = self.dialect.placeholder
        where, params = compile_filter(node, self.dialect)
        # The project's (project_id, created_at) index serves both the filter and the keyset order.
        where, params = f"r.project_id = {ph} AND ({where})", [project, *params]
        columns, join = "r.*", ""
        if with_bodies:
            columns += ", b.request AS request_body, b.response AS response_body"
            join = " LEFT JOIN request_bodies b ON b.id = r.id"
        after: tuple[int, str] | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            size = page_size if remaining is None else min(page_size, remaining)
            keyset: list[Any] = []
            condition = where
            if after is not None:
                # The first conjunct alone is index-friendly; the second breaks ties on id.
                condition = f"{where} AND r.created_at >= {ph} AND (r.created_at > {ph} OR r.id > {ph})"
                keyset = [after[0], after[0], after[1]]
            sql = f"SELECT {columns} FROM requests r{join} WHERE {condition} ORDER BY r.created_at, r.id LIMIT {ph}"
            rows = self._rows(sql, [*params, *keyset, size])
            scores = self.scores([row["id"] for row in rows], project=project)
            for row in rows:
                row["scores"] = scores.get(row["id"], {})
                yield _normalise(row)
            if len(rows) < size:
                return
            after = (rows[-1]["created_at"], rows[-1]["id"])
            if remaining is not None:
                remaining -= len(rows)

    def prune(self: _SQL, *, body_days: float, metrics_days: float, now_ms: int | None = None,
              stop: threading.Event | None = None, batch: int = BATCH_ROWS) -> PruneResult:
        """One retention pass. 0 days keeps forever. Rollups are never touched."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        pacer = _Pacer(self.dialect, stop)
        deleted: dict[str, int] = {}
        finished = True
        if metrics_days > 0:
            children = [t for t in tables_with_column(self, "request_id") if not t.startswith(ROLLUP_PREFIX)]
            deleted, finished = _delete_request_batches(
                self, f"created_at < {self.dialect.placeholder}", [now - int(metrics_days * DAY_MS)],
                children, pacer, batch)
        bodies = 0
        if body_days > 0 and finished:
            ph = self.dialect.placeholder
            # Bodies carry their own created_at (migration 020): the range read starts at the oldest
            # body still there, never re-reading rows whose bodies are already gone.
            select = f"SELECT id FROM request_bodies WHERE created_at < {ph} LIMIT {ph}"
            cutoff = now - int(body_days * DAY_MS)
            # A read first: most passes find nothing, and then never take SQLite's write lock.
            expired = self._rows(f"SELECT 1 AS x FROM request_bodies WHERE created_at < {ph} LIMIT 1", (cutoff,))
            while expired:
                started = time.monotonic()
                with self._transaction() as tx:
                    ids = [row["id"] for row in tx.execute(select, (cutoff, batch)).fetchall()]
                    marks = ", ".join([ph] * len(ids))
                    # A rendered prompt's inputs are request content too: they go with the body.
                    if ids:
                        tx.execute(f"UPDATE requests SET prompt_inputs = NULL WHERE prompt_inputs IS NOT NULL "
                                   f"AND id IN ({marks})", ids)
                    count = int(tx.execute(f"DELETE FROM request_bodies WHERE id IN ({marks})", ids).rowcount) if ids else 0
                bodies += count
                if count < batch:
                    break
                if not pacer.pause(time.monotonic() - started):
                    finished = False
                    break
        return PruneResult(bodies, deleted, finished)

    def instance_secret(self: _SQL, name: str) -> str:
        """A random secret named `name`, made on first use and kept in this database, so that every
        process of a deployment (workers, replicas) agrees on it."""
        ph = self.dialect.placeholder
        select = f"SELECT value FROM instance_secrets WHERE name = {ph}"
        rows = self._rows(select, (name,))
        if not rows:
            with self._transaction() as tx:
                tx.execute(f"INSERT INTO instance_secrets (name, value) VALUES ({ph}, {ph}) ON CONFLICT DO NOTHING",
                           (name, secrets.token_hex(32)))
            rows = self._rows(select, (name,))
        return str(rows[0]["value"])

    def audit_subject(self: _SQL, user_id: str) -> str:
        """The keyed hash an erasure of `user_id` is audited under.

        Keyed with a random secret kept in this database, so the audit trail (and logs shipped
        elsewhere) cannot be reversed by hashing guesses, while an operator with the database can
        still answer "was this user erased?" by computing it.
        """
        key = self.instance_secret(SUBJECT_KEY).encode()
        return "hmac-sha256:" + hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()

    def erase_user(self: _SQL, user_id: str, *, project: str, actor: str, batch: int = BATCH_ROWS) -> Erasure:
        """Delete every row keyed to `user_id` in `project` (GDPR erasure), then audit it.

        Guarantee, within the project: no request whose user_id is `user_id`, nothing keyed to such
        a request (body, properties, scores, any table with a request_id column), no row of any
        table with a user_id column equal to it, and none of its share of the other rollups (per
        model, request name, property value — a rollup key left with no request goes too) remains.
        The same user id in another project is another person's, and stays (see the module's
        docstring for a table without a project_id column). Not covered: free text in *other*
        users' requests that happens to mention the id (that is their record), and records still on
        their way to the store (recorder queue, or the disk journal while the store was down) —
        erase again once they are written.
        """
        pacer = _Pacer(self.dialect, None)
        ph = self.dialect.placeholder
        children = tables_with_column(self, "request_id")
        deleted, _ = _delete_request_batches(self, f"user_id = {ph} AND project_id = {ph}", [user_id, project],
                                             children, pacer, batch, unroll=True)
        by_project = set(tables_with_column(self, "project_id"))
        for table in tables_with_column(self, "user_id"):
            if table != "requests":
                deleted[table] = _delete_user_rows(self, table, user_id, project if table in by_project else None,
                                                   pacer, batch)
        subject = Lifecycle.audit_subject(self, user_id)
        with self._transaction() as tx:
            tx.execute(f"INSERT INTO audit_log (id, at, action, subject, actor, details) "
                       f"VALUES ({ph}, {ph}, {ph}, {ph}, {ph}, {ph})",
                       (str(uuid.uuid4()), int(time.time() * 1000), "erase_user", subject, actor,
                        orjson.dumps({"project": project, "deleted": deleted}).decode()))
        # WARNING, not INFO: a destructive operation that must show at the usual server log levels.
        audit.warning("erase_user subject=%s project=%s actor=%s deleted=%s", subject, project, actor,
                      orjson.dumps(deleted).decode())
        return Erasure(subject, deleted)

    def audit_entries(self: _SQL, limit: int = 100) -> list[dict[str, Any]]:
        """The newest audit lines first."""
        rows = self._rows(f"SELECT id, at, action, subject, actor, details FROM audit_log "
                          f"ORDER BY at DESC, id LIMIT {self.dialect.placeholder}", (limit,))
        for row in rows:
            row["details"] = orjson.loads(row["details"])
        return rows
