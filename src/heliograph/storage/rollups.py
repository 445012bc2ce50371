"""Rollup upkeep: every batch the recorder writes updates the rollups in the same transaction.

A batch is first summed in memory, per table and key (`_aggregate`), so a transaction issues one
upsert per distinct key, not per row: live traffic touches a few dozen keys per batch, plus one
per distinct user and session. On PostgreSQL each table's upserts are one statement over column
arrays (rollup_schema.upsert_sql). Only rows that were really new count: a batch
replayed from the journal finds its ids stored and adds nothing (see `_insert_new_requests`).
A property set after the fact moves the request from its old value's rollups to the new one's.
Every key starts with the row's project (rollup_schema.py).
"""

from __future__ import annotations

import operator
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import accumulate
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from .filters import POSTGRES, SQLITE, Dialect
from .histogram import BINS, bin_of
from .rollup_schema import (
    DIMENSION,
    LEVEL_MS,
    MAIN,
    MODEL,
    SUMS,
    USER,
    Family,
    session_upsert_sql,
    unscoped,
    upsert_sql,
)

if TYPE_CHECKING:
    from .executor import Executor

_ID_CHUNK = 500
_BACKFILL_PAGE = 5000
_N = len(SUMS)


class Acc:
    """Sums, histograms (sparse: bin → count) and first/last time of the rows under one rollup key."""

    __slots__ = ("first", "last", "latency", "sums", "ttft")

    def __init__(self) -> None:
        self.sums = [0] * _N
        self.latency: dict[int, int] = {}
        self.ttft: dict[int, int] = {}
        self.first: int | None = None
        self.last: int | None = None

    def add_row(self, sums: Sequence[int], latency_bin: int, ttft_bin: int | None, at: int, sign: int = 1) -> None:
        # map(operator.…) keeps the per-row work in C: the recorder shares a core with the proxy.
        self.sums = list(map(operator.add if sign > 0 else operator.sub, self.sums, sums))
        self.latency[latency_bin] = self.latency.get(latency_bin, 0) + sign
        if ttft_bin is not None:
            self.ttft[ttft_bin] = self.ttft.get(ttft_bin, 0) + sign
        if self.first is None or at < self.first:
            self.first = at
        if self.last is None or at > self.last:
            self.last = at

    def merge(self, other: Acc) -> None:
        self.sums = [a + b for a, b in zip(self.sums, other.sums)]
        for mine, theirs in ((self.latency, other.latency), (self.ttft, other.ttft)):
            for index, count in theirs.items():
                mine[index] = mine.get(index, 0) + count
        if other.first is not None:
            self.first = other.first if self.first is None else min(self.first, other.first)
        if other.last is not None:
            self.last = other.last if self.last is None else max(self.last, other.last)


def _dense(sparse: Mapping[int, int]) -> list[int]:
    counts = [0] * BINS
    for index, count in sparse.items():
        counts[index] = count
    return counts


def contribution(row: Mapping[str, Any]) -> tuple[list[int], int, int | None]:
    """One request's sums (integers: nano-USD, µs) and its histogram bins."""
    status, cost, ttft = row["status"], row["cost"], row["ttft_ms"]
    latency = float(row["latency_ms"])
    sums = [1, 1 if status >= 400 or status < 100 else 0,
            0 if cost is None else round(cost * 1_000_000_000), 1 if cost is None else 0,
            row["prompt_tokens"] or 0, row["completion_tokens"] or 0, row["total_tokens"] or 0,
            row["prompt_cache_read_tokens"] or 0, row["prompt_cache_write_tokens"] or 0,
            row["reasoning_tokens"] or 0, round(latency * 1000),
            0 if ttft is None else round(ttft * 1000), 0 if ttft is None else 1,
            0 if row["cache_reference_id"] is None else 1]
    return sums, bin_of(latency), None if ttft is None else bin_of(float(ttft))


def property_value(value: Any) -> str:
    """As `request_properties` stores it (sqlstore.property_rows)."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _rekeyed(accs: Mapping[tuple[Any, ...], Acc], bucket_at: int, size: int, width: int | None = None
             ) -> dict[tuple[Any, ...], Acc]:
    """Accumulators re-keyed to a coarser bucket (the key's `bucket_at` element), keeping the first
    `width` elements of the key (all by default), merged where keys meet."""
    out: dict[tuple[Any, ...], Acc] = {}
    for key, acc in accs.items():
        coarse = list(key[:width])
        coarse[bucket_at] = key[bucket_at] // size * size
        target = out.get(tuple(coarse))
        if target is None:
            target = out[tuple(coarse)] = Acc()
        target.merge(acc)
    return out


def _values(family: Family, key: tuple[Any, ...], acc: Acc) -> tuple[Any, ...]:
    values: list[Any] = [*key, *acc.sums[:len(family.sums)]]     # fewer for the steps before 031
    if family.extremes:
        values += [acc.first, acc.last]
    if family.histograms:
        values += list(accumulate(_dense(acc.latency))) + list(accumulate(_dense(acc.ttft)))   # cumulative
    return tuple(values)


def write_rollups(tx: Executor, dialect: Dialect, rows: Sequence[Mapping[str, Any]], *,
                  by_project: bool = True) -> None:
    """Add `rows` (new requests) to every rollup, one upsert per distinct key.

    `by_project` False writes the tables as migration 010 made them, without the project."""
    if not rows:
        return
    tables, sessions = _aggregate(rows, 1)
    for (family, level), accs in tables.items():
        _upsert(tx, dialect, family, level, accs, by_project)
    if sessions:
        skip = 0 if by_project else 1
        _upsert_rows(tx, dialect, session_upsert_sql(dialect.name, by_project),
                     [(*key[skip:], *values) for key, values in sorted(sessions.items())])


def unroll_requests(tx: Executor, dialect: Dialect, rows: Sequence[Mapping[str, Any]]) -> None:
    """Take stored `rows` back out of the rollups that have no user column (time × model ×
    status, request name, property values), deleting rows left with no request — for erasure,
    where a property value may itself identify the person. Rollups with a user_id column
    (rollup_user_*, rollup_sessions) are for the caller to delete by project and user id."""
    if not rows:
        return
    tables, _ = _aggregate(rows, -1)
    for (family, level), accs in tables.items():
        if family is USER:
            continue
        _upsert(tx, dialect, family, level, accs)
        where = " AND ".join(f"{name} = ?" for name in family.key_names)
        tx.executemany(dialect.sql(f"DELETE FROM {family.table(level)} WHERE {where} AND requests = 0"),
                       sorted(accs))


_TABLES = ((MAIN, "minute"), (MAIN, "hour"), (MAIN, "day"), (MODEL, "hour"), (MODEL, "day"),
           (DIMENSION, "hour"), (DIMENSION, "day"), (USER, "hour"), (USER, "day"))   # the upsert order


def _aggregate(rows: Sequence[Mapping[str, Any]], sign: int
               ) -> tuple[dict[tuple[Family, str], dict[tuple[Any, ...], Acc]], dict[tuple[str, str], list[Any]]]:
    """Per rollup table, the rows' contributions summed by key (`sign` -1 to take them out).

    Per row the Python work is only its keys: each table collects row numbers per key, and each
    group is then summed at once in C (zip/map/Counter). The recorder shares a core with the proxy.
    """
    hour_ms, day_ms = LEVEL_MS["hour"], LEVEL_MS["day"]
    parts = [contribution(row) for row in rows]
    groups: dict[tuple[Family, str], dict[tuple[Any, ...], list[int]]] = {table: {} for table in _TABLES}
    main_m, main_h, main_d, model_h, model_d, dim_h, dim_d, user_h, user_d = groups.values()
    sessions: dict[tuple[str, str], list[Any]] = {}
    for i, row in enumerate(rows):
        at = row["created_at"]
        minute, hour, day = at // 60_000 * 60_000, at // hour_ms * hour_ms, at // day_ms * day_ms
        project, provider, model, status = row["project_id"], row["provider"], row["model"] or "", row["status"]
        name, user = row["request_name"] or "", row["user_id"] or ""
        main_m.setdefault((project, minute, provider, model, status), []).append(i)
        main_h.setdefault((project, hour, provider, model, status), []).append(i)
        main_d.setdefault((project, day, provider, model, status), []).append(i)
        model_h.setdefault((project, hour, provider, model), []).append(i)
        model_d.setdefault((project, day, provider, model), []).append(i)
        dim_h.setdefault((project, "request_name", hour, name), []).append(i)
        dim_d.setdefault((project, "request_name", day, name), []).append(i)
        user_h.setdefault((project, hour, user), []).append(i)
        user_d.setdefault((project, day, user), []).append(i)
        for key, value in _properties(row["properties"]):
            dim_h.setdefault((project, f"property:{key}", hour, value), []).append(i)
            dim_d.setdefault((project, f"property:{key}", day, value), []).append(i)
        if row["session_id"] is not None and sign > 0:
            _add_session(sessions, row, parts[i][0])
    times = [row["created_at"] for row in rows]
    tables = {(family, level): {key: _summed(parts, times, members, family, sign) for key, members in keyed.items()}
              for (family, level), keyed in groups.items()}
    return tables, sessions


def _summed(parts: Sequence[tuple[list[int], int, int | None]], times: Sequence[int], members: list[int],
            family: Family, sign: int) -> Acc:
    """One Acc for the rows `members` of `parts` (their contributions)."""
    acc = Acc()
    if len(members) == 1:       # most keys of a batch (users, sessions' hours): no summing at all
        sums, latency, ttft = parts[members[0]]
        acc.sums = list(sums) if sign > 0 else [-value for value in sums]
        if family.histograms:
            acc.latency = {latency: sign}
            acc.ttft = {} if ttft is None else {ttft: sign}
        acc.first = acc.last = times[members[0]]
        return acc
    chosen = [parts[i] for i in members]
    acc.sums = list(map(sum, zip(*[part[0] for part in chosen])))
    if sign < 0:
        acc.sums = [-value for value in acc.sums]
    if family.histograms:
        acc.latency = {index: sign * count for index, count in Counter([part[1] for part in chosen]).items()}
        acc.ttft = {index: sign * count for index, count in Counter(
            [part[2] for part in chosen if part[2] is not None]).items()}
    if family.extremes:
        acc.first, acc.last = min([times[i] for i in members]), max([times[i] for i in members])
    return acc


def _upsert(tx: Executor, dialect: Dialect, family: Family, level: str, accs: Mapping[tuple[Any, ...], Acc],
            by_project: bool = True) -> None:
    # Sorted keys: concurrent writers (several processes on PostgreSQL) lock rows in one order.
    if accs:
        target, skip = (family, 0) if by_project else (unscoped(family), 1)
        _upsert_rows(tx, dialect, upsert_sql(target, level, dialect.name),
                     [_values(target, key[skip:], acc) for key, acc in sorted(accs.items())])


def _upsert_rows(tx: Executor, dialect: Dialect, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows as upsert_sql expects them: one by one on SQLite, as column arrays on PostgreSQL. The
    keys of one call are distinct, as an ON CONFLICT DO UPDATE statement requires."""
    if dialect.name == "sqlite":
        tx.executemany(sql, rows)
    else:
        tx.execute(dialect.sql(sql), [list(column) for column in zip(*rows)])


def backfill_rollups(tx: Executor, dialect_name: str) -> None:
    """Migration step 011: roll up the rows stored before the rollups existed, page by page, with
    the recorder's own aggregation (an empty store costs one query). It runs on the tables as 010
    made them, before requests had a project (023) and the rollups one (024)."""
    dialect = SQLITE if dialect_name == "sqlite" else POSTGRES
    page = dialect.sql("SELECT * FROM requests WHERE created_at > ? OR (created_at = ? AND id > ?) "
                       "ORDER BY created_at, id LIMIT ?")
    after: tuple[int, str] = (-1, "")
    while rows := tx.execute(page, (after[0], after[0], after[1], _BACKFILL_PAGE)).fetchall():
        # 010's tables have no project: the key's project part is left out, whatever it holds.
        write_rollups(tx, dialect, [{**row, "project_id": ""} for row in rows], by_project=False)
        after = (rows[-1]["created_at"], rows[-1]["id"])


def backfill_cache_hits(tx: Executor, dialect_name: str) -> None:
    """Migration step 031: a cache_hits sum in every rollup table, counted from the rows stored so far.

    The column defaults to 0, so a gateway of the previous version still running while the store is
    migrated keeps writing (its hits are not counted until it is restarted on this version). The hits
    are read through the partial index of 028 (a few % of the rows), page by page, keyed by the
    recorder's own aggregation, and added to the rollup rows that already hold their requests. Hits
    whose rows retention has already pruned cannot be counted any more and stay 0, as they were
    when cache_hit_rate was counted from the rows.

    The alerts' index of hits (030_alerts_cache_hits) has no reader left on this version, but stays
    for now: a gateway of the previous version names it (SQLite's INDEXED BY), and its evaluator would
    stop altogether without it. A later step can drop it once no such gateway runs."""
    dialect = SQLITE if dialect_name == "sqlite" else POSTGRES
    for family, level in _TABLES:
        tx.execute(f"ALTER TABLE {family.table(level)} ADD COLUMN cache_hits BIGINT NOT NULL DEFAULT 0")
    projects = [row["project_id"] for row in tx.execute(
        "SELECT DISTINCT project_id FROM requests WHERE cache_reference_id IS NOT NULL").fetchall()]
    # Keyset pages in the index's order; `created_at >= ?` alone bounds the index range.
    page = dialect.sql("SELECT * FROM requests WHERE project_id = ? AND cache_reference_id IS NOT NULL "
                       "AND created_at >= ? AND (created_at > ? OR id > ?) ORDER BY created_at, id LIMIT ?")
    for project in projects:
        after: tuple[int, str] = (-1, "")
        while rows := tx.execute(page, (project, after[0], after[0], after[1], _BACKFILL_PAGE)).fetchall():
            tables, _ = _aggregate(rows, 1)
            for (family, level), accs in tables.items():
                _add_cache_hits(tx, dialect, family, level, accs)
            after = (rows[-1]["created_at"], rows[-1]["id"])


def _add_cache_hits(tx: Executor, dialect: Dialect, family: Family, level: str,
                    accs: Mapping[tuple[Any, ...], Acc]) -> None:
    """Add each key's cache hits to its rollup row (which exists: it counts the same requests)."""
    table, keys = family.table(level), family.key_names
    rows = [(acc.sums[-1], *key) for key, acc in sorted(accs.items())]
    if dialect.name == "sqlite":
        where = " AND ".join(f"{name} = ?" for name in keys)
        tx.executemany(f"UPDATE {table} SET cache_hits = cache_hits + ? WHERE {where}", rows)
        return
    arrays = ", ".join(["?::bigint[]", *(f"?::{kind}[]" for _, kind in family.keys)])
    where = " AND ".join(f"t.{name} = v.{name}" for name in keys)
    tx.execute(dialect.sql(f"UPDATE {table} t SET cache_hits = t.cache_hits + v.hits FROM unnest({arrays}) "
                           f"AS v(hits, {', '.join(keys)}) WHERE {where}"), [list(column) for column in zip(*rows)])


class RollupUpkeep:
    """Mixed into SQLStore: the write side of the rollups."""

    dialect: ClassVar[Dialect]

    def _insert_new_requests(self, tx: Executor, insert_sql: str, rows: Sequence[Mapping[str, Any]],
                             to_values: Callable[[Mapping[str, Any]], Sequence[Any]],
                             ) -> tuple[list[Mapping[str, Any]], list[tuple[str, str]]]:
        """Insert the rows (ON CONFLICT DO NOTHING); those that were not stored yet, and the ids reassigned.

        The common case costs nothing extra: every row was new when the insert's count says so.
        Otherwise the insert is undone and the stored ids looked up with their arrival time: a row
        stored already with the same arrival time is a journal replay and is skipped; one with
        another is a different call that reused an id, and is stored under a fresh id.
        """
        tx.execute("SAVEPOINT hg_new_requests")
        values = [to_values(row) for row in rows]
        result = tx.executemany(insert_sql, values)
        # sqlite3's executemany returns its cursor; psycopg's returns None and counts on the cursor.
        inserted: int = (result if result is not None else tx).rowcount  # type: ignore[union-attr]
        reassigned: list[tuple[str, str]] = []
        if inserted != len(values):
            tx.execute("ROLLBACK TO SAVEPOINT hg_new_requests")
            stored: dict[str, int] = {}
            ids = [row["id"] for row in rows]
            for start in range(0, len(ids), _ID_CHUNK):
                chunk = ids[start:start + _ID_CHUNK]
                sql = self.dialect.sql(f"SELECT id, created_at FROM requests WHERE id IN ({', '.join('?' * len(chunk))})")
                stored.update((found["id"], found["created_at"]) for found in tx.execute(sql, chunk).fetchall())
            fresh: list[Mapping[str, Any]] = []
            for row in rows:
                if row["id"] not in stored:
                    fresh.append(row)
                elif stored[row["id"]] != row["created_at"]:
                    new_id = str(uuid.uuid4())
                    reassigned.append((row["id"], new_id))
                    fresh.append({**row, "id": new_id})
            if fresh:
                tx.executemany(insert_sql, [to_values(row) for row in fresh])
            rows = fresh
        tx.execute("RELEASE SAVEPOINT hg_new_requests")
        return list(rows), reassigned

    def _write_rollups(self, tx: Executor, rows: Sequence[Mapping[str, Any]]) -> None:
        write_rollups(tx, self.dialect, rows)

    def _rollup_properties_changed(self, tx: Executor, request_id: str, old: Mapping[str, Any],
                                   new: Mapping[str, str]) -> None:
        """Move one request's contribution from each replaced property value to its new value."""
        old = {str(key).lower(): value for key, value in old.items()}
        changed = {key: value for key, value in new.items()
                   if key not in old or old[key] is None or property_value(old[key]) != value}
        if not changed:
            return
        row = tx.execute(self.dialect.sql("SELECT * FROM requests WHERE id = ?"), (request_id,)).fetchone()
        sums, lb, tb = contribution(row)
        at = row["created_at"]
        hour = at // LEVEL_MS["hour"] * LEVEL_MS["hour"]
        project = row["project_id"]
        moves: dict[tuple[Any, ...], Acc] = {}
        for key, value in changed.items():
            if key in old and old[key] is not None:
                _acc(moves, (project, f"property:{key}", hour, property_value(old[key]))).add_row(sums, lb, tb, at, -1)
            _acc(moves, (project, f"property:{key}", hour, value)).add_row(sums, lb, tb, at)
        _upsert(tx, self.dialect, DIMENSION, "hour", moves)
        _upsert(tx, self.dialect, DIMENSION, "day", _rekeyed(moves, 2, LEVEL_MS["day"]))


def _acc(accs: dict[tuple[Any, ...], Acc], key: tuple[Any, ...]) -> Acc:
    acc = accs.get(key)
    if acc is None:
        acc = accs[key] = Acc()
    return acc


def _properties(properties_json: str) -> Iterable[tuple[str, str]]:
    if properties_json in ("{}", ""):
        return ()
    return [(str(key).lower(), property_value(value))
            for key, value in orjson.loads(properties_json).items() if value is not None]


def _add_session(sessions: dict[tuple[str, str], list[Any]], row: Mapping[str, Any], sums: Sequence[int]) -> None:
    at = row["created_at"]
    end = at + round(float(row["latency_ms"]))
    key = (row["project_id"], row["session_id"])
    entry = sessions.get(key)
    if entry is None:
        # name, user, first, last, end, then SESSION_SUMS in order
        sessions[key] = [row["session_name"], row["user_id"], at, at, end,
                                       *sums[:7], sums[10]]
        return
    if row["session_name"] is not None and at >= entry[3]:
        entry[0] = row["session_name"]
    if row["user_id"] is not None and (entry[1] is None or at >= entry[3]):
        entry[1] = row["user_id"]
    entry[2], entry[3], entry[4] = min(entry[2], at), max(entry[3], at), max(entry[4], end)
    for i in range(7):
        entry[5 + i] += sums[i]
    entry[12] += sums[10]


def unique_by_id(rows: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """One row per call: a row repeated (a replay) is kept once; another call under a used id gets a fresh one."""
    first: dict[str, Mapping[str, Any]] = {}
    renamed: list[Mapping[str, Any]] = []
    for row in rows:
        seen = first.setdefault(row["id"], row)
        if seen is not row and seen["created_at"] != row["created_at"]:
            renamed.append({**row, "id": str(uuid.uuid4())})
    if len(first) == len(rows):
        return rows
    return [*first.values(), *renamed]
