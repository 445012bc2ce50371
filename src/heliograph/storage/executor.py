"""What a write transaction looks like to the shared queries: sqlite3's and psycopg's cursors both fit."""

from __future__ import annotations

from collections.abc import Sequence
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
    """What a query mixin of SQLStore (budgets.py, credentials.py) uses; the dialects provide it."""

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _transaction(self, *, ingest: bool = False) -> AbstractContextManager[Executor]:
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        raise NotImplementedError
