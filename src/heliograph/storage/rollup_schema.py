"""The rollup tables: what they hold, their DDL, their upsert, and the backfill from existing rows.

Four families of time-bucketed sums, each kept at several bucket sizes (UTC minute/hour/day), plus
one row per session:

    rollup_{minute,hour,day}             bucket × provider × model × status, with latency and TTFT
                                         histograms (histogram.py: ≤ 5 % relative error)
    rollup_model_{hour,day}              bucket × provider × model, same columns (no status)
    rollup_dimension_{hour,day}          dimension × bucket × value, same columns; the dimension is
                                         "request_name" or "property:<key>" (keys lower-cased)
    rollup_user_{hour,day}               bucket × user_id, sums and first/last request time, no
                                         histograms (users are unbounded; see analytics.py)
    rollup_sessions                      session_id → name, user_id, first/last/end time, sums

Every key starts with `project_id` (issue 9): a project's rows are one contiguous range of each
primary key, so a query of one project reads that range by the index, as a whole table was read
before. Tables made by migration 010 had no project; 024 (`rollups_by_project_sql`) rebuilds them
with what they held under project `default`. `unscoped` gives the families as 010 made them, for
010 itself and the backfill of 011, which write those tables before 024 runs.

Histogram columns hold *cumulative* counts (l{i}: requests with latency ≤ the bound of bin i), so
they still add up across rows and batches, and a percentile is a binary search over one row's
columns, which SQL can do itself (analytics.py) instead of shipping ~300 numbers per row to Python.

Sizes are bounded by time × the distinct keys seen, not by requests: 10 M requests over 30 days with
10 models make ~36 k hour rows. The sums (SUMS) are requests, errors, cost, tokens by kind, latency,
TTFT and cache hits (so a cache hit rate comes from rollups like any other metric). Every sum is an
integer (cost in nano-USD, times in µs), so adding batches never drifts and rollups equal sums over
the rows exactly. NULL keys are stored as '' (a primary key cannot hold NULL usefully) and read back
with NULLIF. Every table whose rows are per user has a `user_id` column, so erasing a project's user
is `DELETE … WHERE user_id = ? AND project_id = ?` on each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache

from .histogram import BINS

# The sums as migration 010 made them; 031 added cache_hits (requests answered from the gateway's
# cache), so the steps before it (010, 011, 024) still make and write the columns they knew.
SUMS_BEFORE_031 = ("requests", "errors", "cost_nusd", "unpriced", "prompt_tokens", "completion_tokens",
                   "total_tokens", "prompt_cache_read_tokens", "prompt_cache_write_tokens", "reasoning_tokens",
                   "latency_sum_us", "ttft_sum_us", "ttft_count")
SUMS = (*SUMS_BEFORE_031, "cache_hits")
LATENCY_BINS = tuple(f"l{i}" for i in range(BINS))
TTFT_BINS = tuple(f"t{i}" for i in range(BINS))
LEVEL_MS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}
# An error is what Helicone counts as one: an HTTP error status, or no answer at all (status 0 or below).
ERROR_SQL = "(r.status >= 400 OR r.status < 100)"


@dataclass(frozen=True, slots=True)
class Family:
    prefix: str
    keys: tuple[tuple[str, str], ...]      # (column, type) in primary-key order
    levels: tuple[str, ...]                # coarsest first
    histograms: bool
    extremes: bool                         # first_at / last_at
    sums: tuple[str, ...] = SUMS

    def table(self, level: str) -> str:
        return f"{self.prefix}_{level}"

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.keys)

    @property
    def value_columns(self) -> tuple[str, ...]:
        return (self.sums + (("first_at", "last_at") if self.extremes else ())
                + ((LATENCY_BINS + TTFT_BINS) if self.histograms else ()))


PROJECT = ("project_id", "TEXT")
MAIN = Family("rollup", (PROJECT, ("bucket", "BIGINT"), ("provider", "TEXT"), ("model", "TEXT"),
                         ("status", "INTEGER")), ("day", "hour", "minute"), histograms=True, extremes=False)
# The same without status: 4-5x fewer rows, for the common queries that neither filter nor group
# by status (hourly series by model over a month: 720 × models rows instead of × statuses too).
MODEL = Family("rollup_model", (PROJECT, ("bucket", "BIGINT"), ("provider", "TEXT"), ("model", "TEXT")),
               ("day", "hour"), histograms=True, extremes=False)
DIMENSION = Family("rollup_dimension", (PROJECT, ("dimension", "TEXT"), ("bucket", "BIGINT"), ("value", "TEXT")),
                   ("day", "hour"), histograms=True, extremes=False)
USER = Family("rollup_user", (PROJECT, ("bucket", "BIGINT"), ("user_id", "TEXT")), ("day", "hour"),
              histograms=False, extremes=True)
FAMILIES = (MAIN, MODEL, DIMENSION, USER)

SESSION_SUMS = ("requests", "errors", "cost_nusd", "unpriced", "prompt_tokens", "completion_tokens",
                "total_tokens", "latency_sum_us")
SESSION_COLUMNS = ("project_id", "session_id", "session_name", "user_id", "first_at", "last_at", "end_at",
                   *SESSION_SUMS)
_SESSION_TEXT = 4           # the first four columns are text


def unscoped(family: Family) -> Family:
    """The family as migration 010 made it: the same keys without the leading project_id."""
    return replace(family, keys=family.keys[1:], sums=SUMS_BEFORE_031)


def before_031(family: Family) -> Family:
    """The family as migration 024 made it: keyed by project, without cache_hits."""
    return replace(family, sums=SUMS_BEFORE_031)


def rollup_tables() -> list[str]:
    return [family.table(level) for family in FAMILIES for level in family.levels] + ["rollup_sessions"]


# -- upserts (the recorder's path) -----------------------------------------------------------------

def _upsert(table: str, columns: Sequence[tuple[str, str]], conflict: Sequence[str], sets: Sequence[str],
            dialect: str) -> str:
    """SQLite: one row of placeholders, run per row (executemany of one prepared statement).
    PostgreSQL: one array per column, unnested: a batch of keys in one statement with a few
    parameters (binding thousands of scalars cost more than the upsert itself, measured)."""
    names = ", ".join(name for name, _ in columns)
    if dialect == "sqlite":
        rows = f"VALUES ({', '.join(['?'] * len(columns))})"
    else:
        rows = f"SELECT * FROM unnest({', '.join(f'?::{kind}[]' for _, kind in columns)})"
    return f"INSERT INTO {table} ({names}) {rows} ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {', '.join(sets)}"


@cache
def upsert_sql(family: Family, level: str, dialect: str) -> str:
    table = family.table(level)
    sets = [f"{c} = {table}.{c} + excluded.{c}"
            for c in family.sums + (LATENCY_BINS + TTFT_BINS if family.histograms else ())]
    if family.extremes:
        least, greatest = ("min", "max") if dialect == "sqlite" else ("LEAST", "GREATEST")
        sets += [f"first_at = {least}({table}.first_at, excluded.first_at)",
                 f"last_at = {greatest}({table}.last_at, excluded.last_at)"]
    columns = [*family.keys, *((c, "BIGINT") for c in family.sums), *((c, "BIGINT") for c in ("first_at", "last_at")
                                                                if family.extremes)]
    if family.histograms:
        columns += [(c, "INTEGER") for c in LATENCY_BINS + TTFT_BINS]
    return _upsert(table, columns, family.key_names, sets, dialect)


@cache
def session_upsert_sql(dialect: str, by_project: bool = True) -> str:
    """`by_project` False: for rollup_sessions as migration 010 made it (keyed by session_id alone)."""
    least, greatest = ("min", "max") if dialect == "sqlite" else ("LEAST", "GREATEST")
    t = "rollup_sessions"
    sets = [f"session_name = COALESCE(excluded.session_name, {t}.session_name)",
            f"user_id = COALESCE(excluded.user_id, {t}.user_id)",
            f"first_at = {least}({t}.first_at, excluded.first_at)",
            f"last_at = {greatest}({t}.last_at, excluded.last_at)",
            f"end_at = {greatest}({t}.end_at, excluded.end_at)",
            *(f"{c} = {t}.{c} + excluded.{c}" for c in SESSION_SUMS)]
    columns = [(c, "TEXT" if i < _SESSION_TEXT else "BIGINT") for i, c in enumerate(SESSION_COLUMNS)]
    if not by_project:
        return _upsert(t, columns[1:], ("session_id",), sets, dialect)
    return _upsert(t, columns, ("project_id", "session_id"), sets, dialect)


# -- DDL ---------------------------------------------------------------------------------------------

def _create(family: Family, level: str, name: str | None = None) -> str:
    columns = [f"{column} {kind} NOT NULL" for column, kind in family.keys]
    columns += [f"{c} BIGINT NOT NULL" for c in family.sums]
    if family.extremes:
        columns += ["first_at BIGINT NOT NULL", "last_at BIGINT NOT NULL"]
    if family.histograms:
        columns += [f"{c} INTEGER NOT NULL" for c in LATENCY_BINS + TTFT_BINS]
    # No DEFAULTs: every write names every column, and on PostgreSQL ~300 column defaults make
    # creating and dropping the table ~50x slower (a fresh schema per test). Ordinary rowid tables
    # on SQLite: a row of cumulative counts can pass the ~1 kB a WITHOUT ROWID row keeps in its page.
    return (f"CREATE TABLE {name or family.table(level)} ({', '.join(columns)}, "
            f"PRIMARY KEY ({', '.join(family.key_names)}))")


_SESSION_VALUES = ("session_name TEXT, user_id TEXT, first_at BIGINT NOT NULL, last_at BIGINT NOT NULL, "
                   "end_at BIGINT NOT NULL, " + ", ".join(f"{c} BIGINT NOT NULL" for c in SESSION_SUMS))


def _indexes(by_project: bool) -> list[str]:
    """The secondary indexes: per-user reads and erasure, and the sessions list's sort orders."""
    p = "project_id, " if by_project else ""
    return [*(f"CREATE INDEX {USER.table(level)}_user ON {USER.table(level)} ({p}user_id, bucket)"
              for level in USER.levels),
            f"CREATE INDEX rollup_sessions_last ON rollup_sessions ({p}last_at)",
            f"CREATE INDEX rollup_sessions_name ON rollup_sessions ({p}session_name, last_at)",
            f"CREATE INDEX rollup_sessions_user ON rollup_sessions ({p}user_id)"]


def create_rollups_sql() -> str:
    """Migration 010: the tables and indexes as they were first made, without projects (024
    rebuilds them); like the step itself, this never changes."""
    statements = [_create(unscoped(family), level) for family in FAMILIES for level in family.levels]
    statements.append(f"CREATE TABLE rollup_sessions (session_id TEXT PRIMARY KEY, {_SESSION_VALUES})")
    return ";\n".join(statements + _indexes(False))


_SESSIONS_BY_PROJECT = (f"CREATE TABLE rollup_sessions_by_project (project_id TEXT NOT NULL, session_id TEXT NOT NULL, "
                        f"{_SESSION_VALUES}, PRIMARY KEY (project_id, session_id))")


def rollups_by_project_sql(dialect: str) -> str:
    """Migration 024: every rollup table keyed by project first, what it held going to `default`.

    SQLite cannot change a primary key: each table is created anew, filled with INSERT … SELECT,
    the old one dropped (its indexes with it) and the new one renamed. PostgreSQL adds the column
    (a constant default costs no rewrite), drops the default (writes name every column) and
    swaps the primary key. Then the secondary indexes are made again with project_id first.
    """
    tables = [(before_031(family), family.table(level)) for family in FAMILIES for level in family.levels]
    statements: list[str] = []
    if dialect == "sqlite":
        for family, table in tables:
            old = [*unscoped(family).key_names, *family.value_columns]
            statements += [_create(family, "", f"{table}_by_project"),
                           f"INSERT INTO {table}_by_project (project_id, {', '.join(old)}) "
                           f"SELECT 'default', {', '.join(old)} FROM {table}",
                           f"DROP TABLE {table}", f"ALTER TABLE {table}_by_project RENAME TO {table}"]
        statements += [_SESSIONS_BY_PROJECT,
                       f"INSERT INTO rollup_sessions_by_project ({', '.join(SESSION_COLUMNS)}) "
                       f"SELECT 'default', {', '.join(SESSION_COLUMNS[1:])} FROM rollup_sessions",
                       "DROP TABLE rollup_sessions", "ALTER TABLE rollup_sessions_by_project RENAME TO rollup_sessions"]
    else:
        keyed = [*((table, family.key_names) for family, table in tables),
                 ("rollup_sessions", ("project_id", "session_id"))]
        for table, keys in keyed:
            statements += [f"ALTER TABLE {table} ADD COLUMN project_id TEXT NOT NULL DEFAULT 'default'",
                           f"ALTER TABLE {table} ALTER COLUMN project_id DROP DEFAULT",
                           f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
                           f"ALTER TABLE {table} ADD PRIMARY KEY ({', '.join(keys)})"]
        statements += [f"DROP INDEX {name}" for name in
                       [*(f"{USER.table(level)}_user" for level in USER.levels),
                        "rollup_sessions_last", "rollup_sessions_name", "rollup_sessions_user"]]
    return ";\n".join(statements + _indexes(True))
