"""What a write transaction looks like to the shared queries: sqlite3's and psycopg's cursors both fit."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Executor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...


class QueryMixin:
    """What a query mixin of SQLStore uses; the dialects provide it."""

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _tuple_batches(self, sql: str, params: Sequence[Any] = (), size: int = 10_000) -> Iterator[list[tuple[Any, ...]]]:
        raise NotImplementedError

    def _tuples(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [row for batch in self._tuple_batches(sql, params) for row in batch]

    def _transaction(self, *, ingest: bool = False) -> AbstractContextManager[Executor]:
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        raise NotImplementedError
