"""What SQLite and PostgreSQL stores share: every query, written once with `?` placeholders.

A dialect provides `_rows` (a read, outside any transaction), `_transaction` (a write
transaction yielding something with `execute` / `executemany`), `migrate`, `close`, and the
driver errors that mean "the database is unavailable". Rows come back as dicts with booleans
normalised (`_normalise`), so callers never see SQLite's 0/1.

Properties are written twice: as the JSON column the record renders, and one row per key in
`request_properties` (index on key, value) for filtering. Measured on 100k rows (5 properties
each; this 2-core machine), a property `equals` filter with `ORDER BY created_at DESC LIMIT 100`,
median ms, value found in 50 % / 0.1 % of rows:

                                     SQLite          PostgreSQL
    JSON (json_extract / ->>)        0.8 / 72        1.1 / 96      scans every row when rare
    table, EXISTS per row            0.9 / 97        1.7 / 1.2
    table, IN (index-driven)         141 / 0.8       1.7 / 1.7
    table, as query_requests runs    1.3 / 0.9       2.3 / 2.7     (incl. fetching scores)

PostgreSQL picks the plan from its statistics; SQLite has none per value, so it probes the index
first (`SQLiteStore.sparse_properties`). The JSON path only grows worse with the table.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

import orjson

from .executor import Executor
from .filters import Dialect, Node
from .alerts import AlertStore
from .analytics import AnalyticsQueries
from .budgets import BudgetStore
from .prompts import PromptStore
from .cache_stats import CacheStats
from .credentials import ProviderCredentials
from .lifecycle import Lifecycle
from .outbox import Outbox
from .queries import RequestQuery, select_requests
from .rollups import RollupUpkeep, unique_by_id
from .schema import BOOLEAN_COLUMNS, REQUEST_COLUMNS
from .sessions import SessionQueries


_request_values = operator.itemgetter(*REQUEST_COLUMNS)  # row → tuple in column order, in C


class StoreUnavailable(Exception):
    """The database could not be reached or is locked; the operation may succeed later."""


def now_ms() -> int:
    return int(time.time() * 1000)


def _normalise(row: dict[str, Any]) -> dict[str, Any]:
    for column in BOOLEAN_COLUMNS:
        if column in row and row[column] is not None:
            row[column] = bool(row[column])
    return row


def property_rows(request_id: str, properties_json: str) -> list[tuple[str, str, str]]:
    properties = orjson.loads(properties_json)
    return [(request_id, str(key).lower(), value if isinstance(value, str) else orjson.dumps(value).decode())
            for key, value in properties.items() if value is not None]


def _side_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]]:
    """The request_bodies and request_properties rows of these requests."""
    bodies = [(row["id"], row["request_body"], row["response_body"], row.get("response_stream"), row["created_at"])
              for row in rows]
    return bodies, [p for row in rows for p in property_rows(row["id"], row["properties"])]


_INSERT_REQUEST = (f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(REQUEST_COLUMNS))}) ON CONFLICT DO NOTHING")
_INSERT_BODY = ("INSERT INTO request_bodies (id, request, response, response_stream, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_INSERT_PROPERTY = "INSERT INTO request_properties (request_id, key, value) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
_UPSERT_PROPERTY = ("INSERT INTO request_properties (request_id, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (request_id, key) DO UPDATE SET value = excluded.value")
_UPSERT_SCORE = ("INSERT INTO request_scores (request_id, name, value, created_at) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT (request_id, name) DO UPDATE SET value = excluded.value, created_at = excluded.created_at")
_GET_REQUEST = ("SELECT r.*, b.request AS request_body, b.response AS response_body, b.response_stream "
                "FROM requests r LEFT JOIN request_bodies b ON b.id = r.id WHERE r.id = ? AND r.project_id = ?")
_SCORES_CHUNK = 500


class SQLStore(Lifecycle, RollupUpkeep, AnalyticsQueries, SessionQueries, ProviderCredentials, BudgetStore,
               PromptStore, CacheStats, AlertStore, Outbox):
    dialect: ClassVar[Dialect]
    unavailable_errors: ClassVar[tuple[type[Exception], ...]] = ()
    for_update: ClassVar[str] = ""      # row lock for read-modify-write, where the dialect has one

    # -- provided by each dialect ------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _transaction(self, *, ingest: bool = False) -> AbstractContextManager[Executor]:
        """`ingest`: the recorder's batch write, which should fail fast (it has a journal)."""
        raise NotImplementedError

    @contextmanager
    def _unavailable_as_store_error(self) -> Iterator[None]:
        try:
            yield
        except self.unavailable_errors as exc:
            raise StoreUnavailable(f"{self.dialect.name}: {exc}".strip()) from exc

    def _q(self, sql: str) -> str:
        return self.dialect.sql(sql)

    # -- writing -------------------------------------------------------------------------------------

    def insert_requests(self, rows: Sequence[Mapping[str, Any]],
                        give_way: Callable[[], None] | None = None) -> list[tuple[str, str]]:
        """Idempotent on (id, arrival): a batch replayed from the journal changes nothing already stored.

        A row whose id is stored already for another call is stored under a fresh id; the
        (old, new) ids are returned. The rollups (storage/rollups.py) are updated in the same
        transaction, from the new rows only, and so are the calls of per-request webhooks
        (storage/outbox.py): a replayed batch queues none twice. `give_way` (recording.process.GiveWay) is
        called every few hundred steps by SQLite; PostgreSQL's work is in its own process."""
        rows = unique_by_id(rows)
        bodies, properties = _side_rows(rows)    # built before the write lock is taken
        with self._transaction(ingest=True) as tx:
            fresh, reassigned = self._insert_new_requests(tx, self._q(_INSERT_REQUEST), rows, _request_values)
            if len(fresh) != len(rows) or reassigned:
                bodies, properties = _side_rows(fresh)
            if bodies:
                tx.executemany(self._q(_INSERT_BODY), bodies)
            if properties:
                tx.executemany(self._q(_INSERT_PROPERTY), properties)
            self._write_rollups(tx, fresh)
            self._enqueue_request_webhooks(tx, fresh)
        return reassigned

    def set_scores(self, request_id: str, scores: Mapping[str, int], *, project: str) -> bool:
        """Upsert scores by name; False when `project` has no such request (another project's is unknown)."""
        with self._transaction() as tx:
            if tx.execute(self._q("SELECT 1 FROM requests WHERE id = ? AND project_id = ?"),
                          (request_id, project)).fetchone() is None:
                return False
            at = now_ms()
            tx.executemany(self._q(_UPSERT_SCORE), [(request_id, name, int(value), at) for name, value in scores.items()])
        return True

    def set_properties(self, request_id: str, properties: Mapping[str, str], *, project: str) -> bool:
        """Add or replace properties (keys lower-cased); False when `project` has no such request."""
        lowered = {key.lower(): value for key, value in properties.items()}
        with self._transaction() as tx:
            row = tx.execute(self._q("SELECT properties FROM requests WHERE id = ? AND project_id = ?"
                                     + self.for_update), (request_id, project)).fetchone()
            if row is None:
                return False
            old = orjson.loads(row["properties"])
            tx.execute(self._q("UPDATE requests SET properties = ? WHERE id = ?"),
                       (orjson.dumps(old | lowered).decode(), request_id))
            tx.executemany(self._q(_UPSERT_PROPERTY), [(request_id, k, v) for k, v in lowered.items()])
            self._rollup_properties_changed(tx, request_id, old, lowered)
        return True

    # -- keys ------------------------------------------------------------------------------------------

    def create_key(self, key_id: str, name: str, key_hash: str, prefix: str, *, project_id: str = "default",
                   scope: str = "proxy", expires_at: int | None = None) -> None:
        with self._transaction() as tx:
            tx.execute(self._q("INSERT INTO keys (id, name, key_hash, prefix, created_at, project_id, scope, expires_at) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                       (key_id, name, key_hash, prefix, now_ms(), project_id, scope, expires_at))

    def list_keys(self, *, project: str | None = None) -> list[dict[str, Any]]:
        """Keys (never their hashes), of one project or of all."""
        where, params = ("WHERE project_id = ? ", (project,)) if project is not None else ("", ())
        return self._rows(self._q("SELECT id, name, prefix, project_id, scope, created_at, expires_at, revoked_at "
                                  f"FROM keys {where}ORDER BY created_at, id"), params)

    def revoke_key(self, id_or_name: str, *, project: str | None = None) -> int:
        """Revoke by id or name (within `project` when given); how many keys were revoked."""
        scoped = " AND project_id = ?" if project is not None else ""
        with self._transaction() as tx:
            cur = tx.execute(self._q("UPDATE keys SET revoked_at = ? WHERE (id = ? OR name = ?) AND revoked_at IS NULL"
                                     + scoped),
                             (now_ms(), id_or_name, id_or_name, *((project,) if project is not None else ())))
            return int(cur.rowcount)

    # -- projects ----------------------------------------------------------------------------------

    def create_project(self, project_id: str, name: str) -> None:
        with self._transaction() as tx:
            tx.execute(self._q("INSERT INTO projects (id, name, created_at) VALUES (?, ?, ?)"), (project_id, name, now_ms()))

    def list_projects(self) -> list[dict[str, Any]]:
        return self._rows("SELECT id, name, created_at FROM projects ORDER BY created_at, id")

    def rename_project(self, project_id: str, name: str) -> None:
        with self._transaction() as tx:
            tx.execute(self._q("UPDATE projects SET name = ? WHERE id = ?"), (name, project_id))

    def active_keys(self) -> dict[str, dict[str, Any]]:
        """Key hash → the key (id, name, project_id, scope, expires_at), for every key not revoked."""
        rows = self._rows("SELECT key_hash, id, name, project_id, scope, expires_at FROM keys WHERE revoked_at IS NULL")
        return {row.pop("key_hash"): row for row in rows}

    # -- reading ---------------------------------------------------------------------------------------

    def get_request(self, request_id: str, *, project: str) -> dict[str, Any] | None:
        """The request if it is `project`'s; another project's answers None, as an unknown id does."""
        rows = self._rows(self._q(_GET_REQUEST), (request_id, project))
        if not rows:
            return None
        row = _normalise(rows[0])
        row["scores"] = self.scores([request_id], project=project).get(request_id, {})
        return row

    def request_exists(self, request_id: str) -> bool:
        """In any project: ids are unique store-wide (the recorder asks before reusing one)."""
        return bool(self._rows(self._q("SELECT 1 AS found FROM requests WHERE id = ?"), (request_id,)))

    def sparse_properties(self, node: Node) -> frozenset[tuple[str, str]]:
        """Property values rare enough to start a query from; PostgreSQL's planner knows by itself."""
        return frozenset()

    def query_requests(self, query: RequestQuery) -> list[dict[str, Any]]:
        sql, params = select_requests(query, self.dialect, self.sparse_properties(query.filter))
        rows = [_normalise(row) for row in self._rows(sql, params)]
        scores = self.scores([row["id"] for row in rows], project=query.project)
        for row in rows:
            row["scores"] = scores.get(row["id"], {})
        return rows

    def scores(self, request_ids: Sequence[str], *, project: str) -> dict[str, dict[str, int]]:
        """Scores of those of `request_ids` that are `project`'s requests."""
        found: dict[str, dict[str, int]] = {}
        for start in range(0, len(request_ids), _SCORES_CHUNK):
            chunk = request_ids[start:start + _SCORES_CHUNK]
            # EXISTS: each score's request is probed by its primary key. As a join, a planner may
            # read the project's requests instead, every one of them (measured: 230 ms at 300k rows).
            sql = self._q(f"SELECT s.request_id, s.name, s.value FROM request_scores s "
                          f"WHERE s.request_id IN ({', '.join('?' * len(chunk))}) AND EXISTS "
                          "(SELECT 1 FROM requests r WHERE r.id = s.request_id AND r.project_id = ?) ORDER BY s.name")
            for row in self._rows(sql, [*chunk, project]):
                found.setdefault(row["request_id"], {})[row["name"]] = int(row["value"])
        return found

    def count_requests(self, *, project: str | None = None) -> int:
        """Requests of `project`, or of every project (None: for operators)."""
        if project is None:
            return int(self._rows("SELECT count(*) AS n FROM requests")[0]["n"])
        return int(self._rows(self._q("SELECT count(*) AS n FROM requests WHERE project_id = ?"), (project,))[0]["n"])

    def request_ids(self) -> list[str]:
        return [row["id"] for row in self._rows("SELECT id FROM requests")]

    def ping(self) -> None:
        self._rows("SELECT 1 AS ok")
