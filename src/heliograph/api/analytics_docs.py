"""OpenAPI paths and schemas of the analytics, session, user and property endpoints.

Merged into the document by openapi.py; kept here so that those routes and their description sit
side by side. It shares only docs_parts.py with openapi.py, so either module can be imported first.
"""

from __future__ import annotations

from typing import Any

from .docs_parts import JSON, SECURITY, errors, ref
from .docs_parts import ok as _ok

from ..storage.analytics import GROUPS, MAX_BUCKETS
from ..storage.histogram import ALPHA
from ..storage.sessions import SESSION_SORTS, USER_SORTS

_ERRORS = {"400": "Bad input; `error` names the bad part.", "401": "Missing or unknown key.",
           "404": "No such session.", "503": "The store is unavailable."}



def _errors(*statuses: str) -> dict[str, Any]:
    return errors(_ERRORS, *statuses)


def _body(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    return {"required": False, "content": {JSON: {"schema": schema, "example": example}}}


def _sort(fields: Any) -> dict[str, Any]:
    return {"type": "object", "maxProperties": 1, "description": "one field → \"asc\" | \"desc\"",
            "properties": {field: {"enum": ["asc", "desc"]} for field in fields}}


def _time_query(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string", "format": "date-time"},
            "description": f"ISO 8601; default: {'the beginning' if name == 'start' else 'no end'}"}


_NUMBER = {"type": "number"}
_NULLABLE = {"type": ["number", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_METRICS: dict[str, Any] = {
    **{name: {"type": "integer"} for name in (
        "requests", "errors", "unpriced_requests", "prompt_tokens", "completion_tokens", "total_tokens",
        "prompt_cache_read_tokens", "prompt_cache_write_tokens", "reasoning_tokens")},
    "error_rate": {"type": "number", "description": "errors / requests (status ≥ 400 or no answer)"},
    "cost": {"type": "number", "description": "USD of the priced requests"},
    "cache_hits": {"type": "integer", "description": "requests answered from the gateway's cache"},
    **{f"{metric}_{stat}": _NULLABLE for metric in ("latency", "ttft") for stat in ("avg", "p50", "p95", "p99")},
}
_TIME_FILTER = {"type": "object", "description": "[start, end); ISO 8601, or Helicone's startTimeUnixMs / "
                "endTimeUnixMs or startTimeUnixSeconds / endTimeUnixSeconds",
                "properties": {"start": _TIME, "end": _TIME, "startTimeUnixMs": _NUMBER, "endTimeUnixMs": _NUMBER,
                               "startTimeUnixSeconds": _NUMBER, "endTimeUnixSeconds": _NUMBER}}

SCHEMAS: dict[str, Any] = {
    "TimeFilter": _TIME_FILTER,
    "Metrics": {"type": "object", "properties": _METRICS},
    "AnalyticsQuery": {"type": "object", "properties": {
        "filter": ref("FilterNode"),
        "timeFilter": {**ref("TimeFilter"), "description": "default: the last 24 hours"},
        "bucket": {"enum": ["minute", "hour", "day", None], "default": "hour",
                   "description": f"UTC buckets; null for totals only; at most {MAX_BUCKETS} buckets"},
        "groupBy": {"type": ["string", "null"], "description": f"one of {', '.join(GROUPS)}, or property:<key>"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100,
                  "description": "most groups kept (largest by requests); the series holds only those"}}},
    "Analytics": {"type": "object", "properties": {
        "start": _TIME, "end": _TIME, "bucket": {"type": ["string", "null"]}, "groupBy": {"type": ["string", "null"]},
        "source": {"enum": ["rollups", "requests", "mixed"], "description":
                   f"rollups: pre-aggregated, percentiles within {ALPHA:.0%} relative error; requests: computed "
                   "from the rows (a filter the rollups cannot answer), exact percentiles"},
        "summary": ref("Metrics"),
        "groups": {"type": "array", "items": {"allOf": [{"type": "object", "properties": {"group": {}}}, ref("Metrics")]}},
        "groups_total": {"type": "integer"},
        "series": {"type": "array", "description": "buckets without requests are left out", "items": {"allOf": [
            {"type": "object", "properties": {"time": _TIME, "group": {}}}, ref("Metrics")]}}},
        "description": "Percentiles are null when grouped by user (not kept per user)."},
    "Session": {"type": "object", "properties": {
        **{name: {"type": ["string", "null"]} for name in ("session", "session_id", "session_name", "user_id")},
        **{name: _TIME for name in ("created_at", "latest_request_created_at", "ended_at")},
        **{name: {"type": "integer"} for name in ("total_requests", "errors", "unpriced_requests", "prompt_tokens",
                                                 "completion_tokens", "total_tokens")},
        "total_cost": _NUMBER, "duration_ms": _NUMBER, "avg_latency": _NULLABLE}},
    "SessionNode": {"type": "object", "properties": {
        "name": {"type": "string"}, "path": {"type": "string"}, "request_count": {"type": "integer"},
        "cost": _NUMBER, "latency_ms": {**_NUMBER, "description": "sum over the subtree"},
        "duration_ms": {**_NUMBER, "description": "first start to last end in the subtree"},
        "started_at": _TIME, "ended_at": _TIME,
        "requests": {"type": "array", "items": {"type": "object"}},
        "children": {"type": "array", "items": ref("SessionNode")}}},
    "User": {"type": "object", "properties": {
        "user_id": {"type": "string"}, "first_active": _TIME, "last_active": _TIME,
        **{name: {"type": "integer"} for name in ("total_requests", "count", "prompt_tokens", "completion_tokens",
                                                 "total_tokens", "errors")},
        "active_for": {"type": "integer", "description": "days with at least one request (UTC)"},
        "cost": _NUMBER, "average_requests_per_day_active": _NUMBER, "average_tokens_per_request": _NUMBER}},
}

PATHS: dict[str, Any] = {
    "/api/v1/analytics/query": {"post": {
        "summary": "Volume, errors, cost, tokens, latency and TTFT percentiles over a filter and time range, "
                   "by time bucket and group.",
        "description": "Served from rollups when the filter only tests what they keep (model, provider, status; "
                       "or the grouped request name, property or user), else computed from the rows.",
        "security": SECURITY,
        "requestBody": _body(ref("AnalyticsQuery"), {
            "filter": {"request_response_rmt": {"provider": {"equals": "openai"}}},
            "timeFilter": {"start": "2025-01-01T00:00:00Z", "end": "2025-01-08T00:00:00Z"},
            "bucket": "day", "groupBy": "model"}),
        "responses": {**_ok(ref("Analytics"), "Summary, groups and series."), **_errors("400", "401", "503")}}},
    "/api/v1/session/query": {"post": {
        "summary": "Sessions overlapping the time range, with totals over the whole session.", "security": SECURITY,
        "requestBody": _body({"type": "object", "properties": {
            "search": {"type": "string", "description": "session id or name contains (any case)"},
            "nameEquals": {"type": "string"}, "timeFilter": ref("TimeFilter"), "sort": _sort(SESSION_SORTS),
            "offset": {"type": "integer", "minimum": 0, "default": 0},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}},
            {"nameEquals": "support-agent", "sort": {"cost": "desc"}, "limit": 20}),
        "responses": {**_ok({"type": "array", "items": ref("Session")}, "Sessions."), **_errors("400", "401", "503")}}},
    "/api/v1/session/{session_id}": {"get": {
        "summary": "One session: totals, and its requests as a tree built from Helicone-Session-Path.",
        "security": SECURITY,
        "parameters": [{"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {**_ok({"allOf": [ref("Session"), {"type": "object", "properties": {
            "tree": {"oneOf": [ref("SessionNode"), {"type": "null"}],
                     "description": "null once retention has removed the session's requests"},
            "truncated": {"type": "boolean", "description": "only the first 10,000 requests are in the tree"}}}]},
            "The session."),
            **_errors("401", "404", "503")}}},
    "/api/v1/user/query": {"post": {
        "summary": "Per user: requests, tokens, cost, first/last active, active days.", "security": SECURITY,
        "requestBody": _body({"type": "object", "properties": {
            "userIds": {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
            "timeFilter": ref("TimeFilter"), "sort": _sort(USER_SORTS),
            "offset": {"type": "integer", "minimum": 0, "default": 0},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}},
            {"timeFilter": {"startTimeUnixSeconds": 1735689600, "endTimeUnixSeconds": 1738368000},
             "sort": {"cost": "desc"}}),
        "responses": {**_ok({"type": "array", "items": ref("User")}, "Users."), **_errors("400", "401", "503")}}},
    "/api/v1/property": {"get": {
        "summary": "Property keys with how many requests carry them and their cost.", "security": SECURITY,
        "parameters": [_time_query("start"), _time_query("end")],
        "responses": {**_ok({"type": "array", "items": {"type": "object", "properties": {
            "property": {"type": "string"}, "requests": {"type": "integer"}, "cost": _NUMBER}}}, "Keys."),
            **_errors("400", "401", "503")}}},
    "/api/v1/property/{key}": {"get": {
        "summary": "Per value of one property: requests, cost, tokens, latency.", "security": SECURITY,
        "parameters": [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "matched case-insensitively"}, _time_query("start"), _time_query("end"),
                       {"name": "limit", "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
        "responses": {**_ok({"type": "array", "items": {"allOf": [
            {"type": "object", "properties": {"value": {"type": "string"}}}, ref("Metrics")]}}, "Values."),
            **_errors("400", "401", "503")}}},
}
