"""Read queries over the request log, shared by the API and the dashboard.

A `RequestQuery` is what a client asked for, already checked (see `filters.parse_filter` and
`filters.parse_sort`); `select_requests` turns it into one SELECT for a dialect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .filters import ALL, DEFAULT_SORT, Dialect, Node, SortKey, compile_where_order

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class RequestQuery:
    project: str = field(kw_only=True)     # only this project's requests; required, by name
    filter: Node = ALL
    sort: tuple[SortKey, ...] = DEFAULT_SORT
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    include_bodies: bool = True


def select_requests(query: RequestQuery, dialect: Dialect,
                    sparse: frozenset[tuple[str, str]] = frozenset()) -> tuple[str, list[Any]]:
    where, order, params = compile_where_order(query.filter, query.sort, dialect, sparse)
    columns, join = "r.*", ""
    if query.include_bodies:
        columns += ", b.request AS request_body, b.response AS response_body"
        join = " LEFT JOIN request_bodies b ON b.id = r.id"
    ph = dialect.placeholder
    sql = (f"SELECT {columns} FROM requests r{join} WHERE r.project_id = {ph} AND ({where}) "
           f"ORDER BY {order} LIMIT {ph} OFFSET {ph}")
    return sql, [query.project, *params, query.limit, query.offset]
