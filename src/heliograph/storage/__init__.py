"""Where records live: one protocol, a SQLite implementation (default) and PostgreSQL.

    schema.py     tables and indexes as ordered, named migration steps
    filters.py    Helicone's filter tree → checked tree → parameterised SQL (both dialects)
    queries.py    RequestQuery and the SELECT built from it
    sqlstore.py   every query, shared by both stores
    sqlite.py     SQLite (WAL, connection per thread)
    postgres.py   PostgreSQL (psycopg 3, connection per thread, advisory-locked migrations)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from .filters import Dialect, FilterError
from .queries import RequestQuery
from .sqlstore import StoreUnavailable

__all__ = ["FilterError", "RequestQuery", "Store", "StoreUnavailable", "open_store"]


class Store(Protocol):
    dialect: ClassVar[Dialect]

    def migrate(self) -> list[str]: ...
    def close(self) -> None: ...
    def ping(self) -> None: ...
    def insert_requests(self, rows: Sequence[Mapping[str, Any]]) -> None: ...
    def create_key(self, key_id: str, name: str, key_hash: str, prefix: str) -> None: ...
    def list_keys(self) -> list[dict[str, Any]]: ...
    def revoke_key(self, id_or_name: str) -> int: ...
    def active_keys(self) -> dict[str, str]: ...
    def get_request(self, request_id: str) -> dict[str, Any] | None: ...
    def query_requests(self, query: RequestQuery) -> list[dict[str, Any]]: ...
    def scores(self, request_ids: Sequence[str]) -> dict[str, dict[str, int]]: ...
    def set_scores(self, request_id: str, scores: Mapping[str, int]) -> bool: ...
    def set_properties(self, request_id: str, properties: Mapping[str, str]) -> bool: ...
    def count_requests(self) -> int: ...


def open_store(url: str) -> Store:
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore
        return SQLiteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore
        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path.db or postgresql://user@host:port/db")
