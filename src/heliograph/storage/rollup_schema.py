"""The rollup tables: what they hold, their DDL, their upsert, and the backfill from existing rows.

Four families of time-bucketed sums, each kept at several bucket sizes (UTC minute/hour/day), plus
one row per session:

    rollup_{minute,hour,day}             bucket × provider × model × status, with latency and TTFT
                                         histograms (histogram.py: ≤ 5 % relative error)
    rollup_model_{hour,day}              bucket × provider × model, same columns (no status)
    rollup_dimension_{hour,day}          bucket × dimension × value, same columns; the dimension is
                                         "request_name" or "property:<key>" (keys lower-cased)
    rollup_user_{hour,day}               bucket × user_id, sums and first/last request time, no
                                         histograms (users are unbounded; see analytics.py)
    rollup_sessions                      session_id → name, user_id, first/last/end time, sums

Histogram columns hold *cumulative* counts (l{i}: requests with latency ≤ the bound of bin i), so
they still add up across rows and batches, and a percentile is a binary search over one row's
columns, which SQL can do itself (analytics.py) instead of shipping ~300 numbers per row to Python.

Sizes are bounded by time × the distinct keys seen, not by requests: 10 M requests over 30 days with
10 models make ~36 k hour rows. Every sum is an integer (cost in nano-USD, times in µs), so adding
batches never drifts and rollups equal sums over the rows exactly. NULL keys are stored as '' (a
primary key cannot hold NULL usefully) and read back with NULLIF. Every table whose rows are per
user has a `user_id` column, so erasing a user is `DELETE … WHERE user_id = ?` on each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from .histogram import BINS

SUMS = ("requests", "errors", "cost_nusd", "unpriced", "prompt_tokens", "completion_tokens", "total_tokens",
        "prompt_cache_read_tokens", "prompt_cache_write_tokens", "reasoning_tokens", "latency_sum_us",
        "ttft_sum_us", "ttft_count")
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

    def table(self, level: str) -> str:
        return f"{self.prefix}_{level}"

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.keys)

    @property
    def value_columns(self) -> tuple[str, ...]:
        return (SUMS + (("first_at", "last_at") if self.extremes else ())
                + ((LATENCY_BINS + TTFT_BINS) if self.histograms else ()))


MAIN = Family("rollup", (("bucket", "BIGINT"), ("provider", "TEXT"), ("model", "TEXT"), ("status", "INTEGER")),
              ("day", "hour", "minute"), histograms=True, extremes=False)
# The same without status: 4-5x fewer rows, for the common queries that neither filter nor group
# by status (hourly series by model over a month: 720 × models rows instead of × statuses too).
MODEL = Family("rollup_model", (("bucket", "BIGINT"), ("provider", "TEXT"), ("model", "TEXT")),
               ("day", "hour"), histograms=True, extremes=False)
DIMENSION = Family("rollup_dimension", (("dimension", "TEXT"), ("bucket", "BIGINT"), ("value", "TEXT")),
                   ("day", "hour"), histograms=True, extremes=False)
USER = Family("rollup_user", (("bucket", "BIGINT"), ("user_id", "TEXT")), ("day", "hour"),
              histograms=False, extremes=True)
FAMILIES = (MAIN, MODEL, DIMENSION, USER)

SESSION_SUMS = ("requests", "errors", "cost_nusd", "unpriced", "prompt_tokens", "completion_tokens",
                "total_tokens", "latency_sum_us")
SESSION_COLUMNS = ("session_id", "session_name", "user_id", "first_at", "last_at", "end_at", *SESSION_SUMS)


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
    sets = [f"{c} = {table}.{c} + excluded.{c}" for c in SUMS + (LATENCY_BINS + TTFT_BINS if family.histograms else ())]
    if family.extremes:
        least, greatest = ("min", "max") if dialect == "sqlite" else ("LEAST", "GREATEST")
        sets += [f"first_at = {least}({table}.first_at, excluded.first_at)",
                 f"last_at = {greatest}({table}.last_at, excluded.last_at)"]
    columns = [*family.keys, *((c, "BIGINT") for c in SUMS), *((c, "BIGINT") for c in ("first_at", "last_at")
                                                                if family.extremes)]
    if family.histograms:
        columns += [(c, "INTEGER") for c in LATENCY_BINS + TTFT_BINS]
    return _upsert(table, columns, family.key_names, sets, dialect)


@cache
def session_upsert_sql(dialect: str) -> str:
    least, greatest = ("min", "max") if dialect == "sqlite" else ("LEAST", "GREATEST")
    t = "rollup_sessions"
    sets = [f"session_name = COALESCE(excluded.session_name, {t}.session_name)",
            f"user_id = COALESCE(excluded.user_id, {t}.user_id)",
            f"first_at = {least}({t}.first_at, excluded.first_at)",
            f"last_at = {greatest}({t}.last_at, excluded.last_at)",
            f"end_at = {greatest}({t}.end_at, excluded.end_at)",
            *(f"{c} = {t}.{c} + excluded.{c}" for c in SESSION_SUMS)]
    columns = [(c, "TEXT" if i < 3 else "BIGINT") for i, c in enumerate(SESSION_COLUMNS)]
    return _upsert(t, columns, ("session_id",), sets, dialect)


# -- DDL ---------------------------------------------------------------------------------------------

def _create(family: Family, level: str) -> str:
    columns = [f"{name} {kind} NOT NULL" for name, kind in family.keys]
    columns += [f"{c} BIGINT NOT NULL" for c in SUMS]
    if family.extremes:
        columns += ["first_at BIGINT NOT NULL", "last_at BIGINT NOT NULL"]
    if family.histograms:
        columns += [f"{c} INTEGER NOT NULL" for c in LATENCY_BINS + TTFT_BINS]
    # No DEFAULTs: every write names every column, and on PostgreSQL ~300 column defaults make
    # creating and dropping the table ~50x slower (a fresh schema per test). Ordinary rowid tables
    # on SQLite: a row of cumulative counts can pass the ~1 kB a WITHOUT ROWID row keeps in its page.
    return f"CREATE TABLE {family.table(level)} ({', '.join(columns)}, PRIMARY KEY ({', '.join(family.key_names)}))"


def create_rollups_sql() -> str:
    statements = [_create(family, level) for family in FAMILIES for level in family.levels]
    statements += [f"CREATE INDEX {USER.table(level)}_user ON {USER.table(level)} (user_id, bucket)"
                   for level in USER.levels]
    statements.append(
        "CREATE TABLE rollup_sessions (session_id TEXT PRIMARY KEY, session_name TEXT, user_id TEXT, "
        "first_at BIGINT NOT NULL, last_at BIGINT NOT NULL, end_at BIGINT NOT NULL, "
        + ", ".join(f"{c} BIGINT NOT NULL" for c in SESSION_SUMS) + ")")
    statements += ["CREATE INDEX rollup_sessions_last ON rollup_sessions (last_at)",
                   "CREATE INDEX rollup_sessions_name ON rollup_sessions (session_name, last_at)",
                   "CREATE INDEX rollup_sessions_user ON rollup_sessions (user_id)"]
    return ";\n".join(statements)
