"""Read queries over the request log, shared by the API and the dashboard.

A `RequestQuery` is what a client asked for, already checked (see `filters.parse_filter` and
`filters.parse_sort`); `select_requests` turns it into one SELECT for a dialect.

Keyset paging (`cursor`): with the default order (created_at, then id), a page starts after the
(created_at, id) of the previous page's last row, so page 1000 costs what page 1 does; `offset`
stays for Helicone's API.
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
    cursor: tuple[int, str] | None = None   # (created_at ms, id) of the last row seen; created_at order only


def select_requests(query: RequestQuery, dialect: Dialect,
                    sparse: frozenset[tuple[str, str]] = frozenset()) -> tuple[str, list[Any]]:
    where, order, params = compile_where_order(query.filter, query.sort, dialect, sparse)
    columns, join = "r.*", ""
    if query.include_bodies:
        columns += ", b.request AS request_body, b.response AS response_body"
        join = " LEFT JOIN request_bodies b ON b.id = r.id"
    ph = dialect.placeholder
    keyset, keyset_params = "", []
    if query.cursor is not None:
        if len(query.sort) != 1 or query.sort[0].expr != "r.created_at":
            raise ValueError("a cursor pages only the created_at order")
        cmp = "<" if query.sort[0].descending else ">"
        # The first conjunct alone is index-friendly; the second breaks ties on id.
        keyset = f" AND r.created_at {cmp}= {ph} AND (r.created_at {cmp} {ph} OR r.id {cmp} {ph})"
        keyset_params = [query.cursor[0], query.cursor[0], query.cursor[1]]
    sql = (f"SELECT {columns} FROM requests r{join} WHERE r.project_id = {ph}{keyset} AND ({where}) "
           f"ORDER BY {order} LIMIT {ph} OFFSET {ph}")
    return sql, [query.project, *keyset_params, *params, query.limit, query.offset]
