"""Sessions, users and properties: the per-entity pages, read from the rollups.

    sessions      rollup_sessions, one row per session id (totals over the whole session); listed
                  when the session overlaps the time range, filtered by name or a search text
    session       the session's rows (index on session_id) as a tree built from Helicone-Session-Path
    users         rollup_user_{day,hour} and the rows at ragged range ends: per user requests,
                  tokens, cost, first/last active, active days (Helicone's active_for)
    property_*    rollup_dimension_* rows of dimension "property:<key>"

Each reads one project's rows only (the project leads every rollup key; a session id is unique
within its project, not across projects).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .analytics import AnalyticsQuery, segments
from .executor import QueryMixin
from .filters import ALL, Dialect, Node
from .filters import _escape_like as escape_like
from .rollup_schema import ERROR_SQL, LEVEL_MS, USER

FOREVER = 253_402_300_800_000        # 10000-01-01: "no end", and a whole number of days
DAY = LEVEL_MS["day"]
SESSION_SORTS = {"last_seen": "s.last_at", "first_seen": "s.first_at", "requests": "s.requests",
                 "cost": "s.cost_nusd", "duration": "(s.end_at - s.first_at)", "name": "s.session_name",
                 "total_tokens": "s.total_tokens"}
USER_SORTS = ("last_active", "first_active", "total_requests", "cost", "total_tokens", "active_for", "user_id")
MAX_SESSION_REQUESTS = 10_000


@dataclass(frozen=True, slots=True)
class SessionQuery:
    project: str = field(kw_only=True)      # only this project's sessions; required, by name
    start: int = 0
    end: int = FOREVER
    search: str | None = None           # session id or name contains (case-insensitive)
    name: str | None = None             # name equals
    sort: str = "last_seen"
    descending: bool = True
    offset: int = 0
    limit: int = 100


@dataclass(frozen=True, slots=True)
class UserQuery:
    project: str = field(kw_only=True)      # only this project's users; required, by name
    start: int = 0
    end: int = FOREVER
    user_ids: tuple[str, ...] = ()
    sort: str = "last_active"
    descending: bool = True
    offset: int = 0
    limit: int = 100


def _session(row: dict[str, Any]) -> dict[str, Any]:
    requests = row["requests"]
    return {"session": row["session_id"], "session_id": row["session_id"], "session_name": row["session_name"],
            "user_id": row["user_id"], "total_requests": requests, "errors": row["errors"],
            "total_cost": row["cost_nusd"] / 1_000_000_000, "unpriced_requests": row["unpriced"],
            "prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
            "total_tokens": row["total_tokens"], "created_at": row["first_at"],
            "latest_request_created_at": row["last_at"], "ended_at": row["end_at"],
            "duration_ms": row["end_at"] - row["first_at"],
            "avg_latency": round(row["latency_sum_us"] / requests / 1000, 3) if requests else None}


def _node(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "path": path, "requests": [], "children": {}, "request_count": 0, "cost": 0.0,
            "latency_ms": 0.0, "started_at": None, "ended_at": None}


def _finish(node: dict[str, Any]) -> dict[str, Any]:
    """Subtotals of a node and everything under it; children as a list, earliest first."""
    children = [_finish(child) for child in node["children"].values()]
    children.sort(key=lambda child: (child["started_at"], child["path"]))
    starts = [r["created_at"] for r in node["requests"]] + [c["started_at"] for c in children]
    ends = [r["created_at"] + r["latency_ms"] for r in node["requests"]] + [c["ended_at"] for c in children]
    node["children"] = children
    node["request_count"] = len(node["requests"]) + sum(c["request_count"] for c in children)
    node["cost"] = sum(r["cost"] or 0.0 for r in node["requests"]) + sum(c["cost"] for c in children)
    node["latency_ms"] = round(sum(r["latency_ms"] for r in node["requests"])
                               + sum(c["latency_ms"] for c in children), 3)
    node["started_at"], node["ended_at"] = min(starts), max(ends)
    node["duration_ms"] = round(node["ended_at"] - node["started_at"], 3)
    return node




# The tree is rendered as nested JSON, which encoders refuse past ~250 levels. The proxy refuses
# deeper Helicone-Session-Path values (recording/record.py); records stored before that are folded.
MAX_TREE_DEPTH = 64


def path_segments(path: str | None) -> list[str]:
    """`/a/b` → [a, b]; beyond MAX_TREE_DEPTH the rest is one last node."""
    parts = [part for part in (path or "").split("/") if part]
    if len(parts) > MAX_TREE_DEPTH:
        parts[MAX_TREE_DEPTH - 1:] = ["/".join(parts[MAX_TREE_DEPTH - 1:])]
    return parts


def session_tree(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rows of one session → nested nodes by path: "/a/b" is node b under node a under the root."""
    root = _node("", "/")
    for row in rows:
        node = root
        for segment in path_segments(row["session_path"]):
            if segment not in node["children"]:
                node["children"][segment] = _node(segment, node["path"].rstrip("/") + "/" + segment)
            node = node["children"][segment]
        node["requests"].append(row)
    return _finish(root)


class SessionQueries(QueryMixin):
    """Mixed into SQLStore: sessions, users and properties."""

    dialect: ClassVar[Dialect]

    def analytics(self, query: AnalyticsQuery) -> dict[str, Any]:
        raise NotImplementedError

    def sessions(self, query: SessionQuery) -> list[dict[str, Any]]:
        conditions = ["s.project_id = ?", "s.first_at < ?", "s.last_at >= ?"]
        params: list[Any] = [query.project, query.end, query.start]
        if query.name is not None:
            conditions.append("s.session_name = ?")
            params.append(query.name)
        if query.search:
            pattern = "%" + escape_like(query.search.lower()) + "%"
            conditions.append("(lower(s.session_id) LIKE ? ESCAPE '\\' OR lower(s.session_name) LIKE ? ESCAPE '\\')")
            params += [pattern, pattern]
        direction = "DESC" if query.descending else "ASC"
        sql = (f"SELECT * FROM rollup_sessions s WHERE {' AND '.join(conditions)} "
               f"ORDER BY {SESSION_SORTS[query.sort]} {direction} NULLS LAST, s.session_id {direction} LIMIT ? OFFSET ?")
        return [_session(row) for row in self._rows(self.dialect.sql(sql), [*params, query.limit, query.offset])]

    def session(self, session_id: str, *, project: str) -> dict[str, Any] | None:
        summary = self._rows(self.dialect.sql("SELECT * FROM rollup_sessions WHERE project_id = ? AND session_id = ?"),
                             (project, session_id))
        rows = self._rows(self.dialect.sql(
            "SELECT id AS request_id, created_at, latency_ms, ttft_ms, cost, status, provider, model, "
            "prompt_tokens, completion_tokens, total_tokens, request_name, user_id, session_path "
            "FROM requests WHERE session_id = ? AND project_id = ? ORDER BY created_at, id LIMIT ?"),
            (session_id, project, MAX_SESSION_REQUESTS))
        if not rows and not summary:
            return None
        session: dict[str, Any] = _session(summary[0]) if summary else {"session": session_id, "session_id": session_id}
        # The totals outlive the rows (retention keeps rollups): then there is no tree to show.
        session["tree"] = session_tree(rows) if rows else None
        session["truncated"] = len(rows) == MAX_SESSION_REQUESTS
        return session

    # -- users ---------------------------------------------------------------------------------------

    def users(self, query: UserQuery) -> list[dict[str, Any]]:
        # Per user: requests, prompt, completion, total tokens, cost (nano-USD), errors, first,
        # last, days counted (whole-day rows: one per active day), days seen (edges: a set, since
        # the raw and hourly pieces of one edge can share a day; edges never share one with whole days).
        found: dict[str, list[Any]] = {}
        only = ""
        if query.user_ids:
            only = f" AND r.user_id IN ({', '.join('?' * len(query.user_ids))})"
        sums = ", ".join(f"CAST(SUM(r.{c}) AS BIGINT)" for c in (
            "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_nusd", "errors"))
        for level, start, end in segments(query.start, query.end, USER.levels):
            if level is None:
                sql = (f"SELECT r.user_id, (r.created_at / {DAY}) * {DAY}, count(*), COALESCE(SUM(r.prompt_tokens), 0), "
                       "COALESCE(SUM(r.completion_tokens), 0), COALESCE(SUM(r.total_tokens), 0), "
                       "CAST(COALESCE(SUM(CAST(ROUND(r.cost * 1000000000) AS BIGINT)), 0) AS BIGINT), "
                       f"SUM(CASE WHEN {ERROR_SQL} THEN 1 ELSE 0 END), MIN(r.created_at), MAX(r.created_at), 0 "
                       "FROM requests r WHERE r.project_id = ? AND r.created_at >= ? AND r.created_at < ? "
                       f"AND r.user_id IS NOT NULL{only} "
                       "GROUP BY 1, 2")
            elif level == "hour":
                sql = (f"SELECT r.user_id, (r.bucket / {DAY}) * {DAY}, {sums}, MIN(r.first_at), MAX(r.last_at), 0 "
                       f"FROM {USER.table(level)} r WHERE r.project_id = ? AND r.bucket >= ? AND r.bucket < ? "
                       f"AND r.user_id <> ''{only} "
                       "GROUP BY 1, 2")
            else:
                sql = (f"SELECT r.user_id, NULL, {sums}, MIN(r.first_at), MAX(r.last_at), count(*) "
                       f"FROM {USER.table(level)} r WHERE r.project_id = ? AND r.bucket >= ? AND r.bucket < ? "
                       f"AND r.user_id <> ''{only} "
                       "GROUP BY 1")
            params = [query.project, start, end, *query.user_ids]
            for user_id, day, *totals, first, last, days in self._tuples(self.dialect.sql(sql), params):
                entry = found.get(user_id)
                if entry is None:
                    entry = found[user_id] = [0, 0, 0, 0, 0, 0, first, last, 0, set()]
                for i in range(6):
                    entry[i] += totals[i]
                entry[6], entry[7], entry[8] = min(entry[6], first), max(entry[7], last), entry[8] + days
                if day is not None:
                    entry[9].add(day)
        users = [_user(user_id, entry) for user_id, entry in found.items()]
        users.sort(key=lambda u: (u[query.sort], u["user_id"]), reverse=query.descending)
        return users[query.offset:query.offset + query.limit]

    # -- properties ---------------------------------------------------------------------------------

    def property_keys(self, *, project: str, start: int = 0, end: int = FOREVER) -> list[dict[str, Any]]:
        totals: dict[str, list[int]] = {}
        for level, seg_start, seg_end in segments(start, end, ("day", "hour")):
            if level is None:
                sql = ("SELECT p.key, count(*), CAST(COALESCE(SUM(CAST(ROUND(r.cost * 1000000000) AS BIGINT)), 0) AS BIGINT) "
                       "FROM request_properties p JOIN requests r ON r.id = p.request_id "
                       "WHERE r.project_id = ? AND r.created_at >= ? AND r.created_at < ? GROUP BY p.key")
                params: list[Any] = [project, seg_start, seg_end]
            else:
                # "property;" is the first text after every "property:…": a range on the key's prefix.
                sql = (f"SELECT substr(r.dimension, 10), CAST(SUM(r.requests) AS BIGINT), CAST(SUM(r.cost_nusd) AS BIGINT) "
                       f"FROM rollup_dimension_{level} r WHERE r.project_id = ? AND r.dimension >= ? "
                       "AND r.dimension < ? AND r.bucket >= ? AND r.bucket < ? GROUP BY r.dimension")
                params = [project, "property:", "property;", seg_start, seg_end]
            for key, requests, cost in self._tuples(self.dialect.sql(sql), params):
                entry = totals.setdefault(key, [0, 0])
                entry[0] += requests
                entry[1] += cost
        keys: list[dict[str, Any]] = [{"property": key, "requests": n, "cost": cost / 1_000_000_000}
                                      for key, (n, cost) in totals.items()]
        keys.sort(key=lambda k: (-k["requests"], k["property"]))
        return keys

    def property_values(self, key: str, *, project: str, start: int = 0, end: int = FOREVER, limit: int = 100,
                        node: Node | None = None) -> list[dict[str, Any]]:
        result = self.analytics(AnalyticsQuery(start, end, node or ALL, None, "property:" + key.lower(), limit,
                                               project=project))
        return [{"value": group.pop("group"), **group} for group in result["groups"]]


def _user(user_id: str, entry: list[Any]) -> dict[str, Any]:
    requests, prompt, completion, total, cost, errors, first, last, whole_days, edge_days = entry
    days = whole_days + len(edge_days)
    return {"user_id": user_id, "total_requests": requests, "count": requests, "prompt_tokens": prompt,
            "completion_tokens": completion, "total_tokens": total, "cost": cost / 1_000_000_000,
            "errors": errors, "first_active": first, "last_active": last, "active_for": days,
            "average_requests_per_day_active": round(requests / days, 3),
            "average_tokens_per_request": round(total / requests, 3) if requests else 0.0}
