"""The OpenAPI 3.1 document served at /api/openapi.json, written as data.

Filter columns are listed from the filter compiler's own tables, so the document cannot drift
from what the query endpoint accepts. Add every new /api route to PATHS: a test checks.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..storage.filters import OPERATORS, PROPERTIES_TABLE, SORT_COLUMNS, TABLES, Kind
from ..storage.queries import DEFAULT_LIMIT, MAX_LIMIT
from .alerts_docs import PATHS as ALERT_PATHS
from .alerts_docs import SCHEMAS as ALERT_SCHEMAS
from .analytics_docs import PATHS as ANALYTICS_PATHS
from .analytics_docs import SCHEMAS as ANALYTICS_SCHEMAS
from .asynclog import ROUTES as ASYNC_LOG_ROUTES
from .prompts_docs import PATHS as PROMPT_PATHS
from .docs_parts import JSON, SECURITY, errors, ref
from .docs_parts import ok as _ok
from .prompts_docs import SCHEMAS as PROMPT_SCHEMAS

_ERRORS = {"400": "Bad input; `error` names the bad part.", "401": "Missing, unknown or expired key.",
           "403": "The key's scope is too small; `error` names the scope needed.",
           "404": "No such request (after waiting briefly for the recorder).",
           "503": "The store is unavailable."}


def _errors(*statuses: str) -> dict[str, Any]:
    return errors(_ERRORS, *statuses)


def _body(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema, "example": example}}}


REQUEST_ID = {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "The request's id (its Helicone-Id response header)."}
CREATED = _ok({"type": "null"}, "Stored.", "201")

_OPERATOR_SCHEMA = {"text": "TextOperators", "property": "TextOperators", "number": "NumberOperators",
                    "score": "NumberOperators", "timestamp": "TimestampOperators",
                    "boolean": "BooleanOperators", "feedback": "BooleanOperators"}
_OPERATOR_VALUE = {"TextOperators": {"type": "string"}, "NumberOperators": {"type": "number"},
                   "TimestampOperators": {"type": "string", "format": "date-time"},
                   "BooleanOperators": {"type": "boolean"}}
_KIND_FOR_SCHEMA: dict[str, Kind] = {"TextOperators": "text", "NumberOperators": "number",
                    "TimestampOperators": "timestamp", "BooleanOperators": "boolean"}


def _table_schema(table: str) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for name, column in TABLES[table].items():
        if column.kind in ("property", "score"):
            columns[name] = {"type": "object", "description": f"{column.kind} name → operators",
                             "additionalProperties": ref(_OPERATOR_SCHEMA[column.kind])}
        else:
            columns[name] = ref(_OPERATOR_SCHEMA[column.kind])
    return {"type": "object", "properties": columns, "additionalProperties": False}


def _operators(schema: str) -> dict[str, Any]:
    value = _OPERATOR_VALUE[schema]
    ops = OPERATORS[_KIND_FOR_SCHEMA[schema]]
    return {"type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {op: value for op in ops}}


_RECORD_FIELDS: dict[str, Any] = {
    **{name: {"type": ["string", "null"]} for name in (
        "request_id", "request_path", "target_url", "request_method", "request_user_id", "request_model",
        "response_model", "model", "provider", "pricing_status", "prompt_id", "prompt_version", "cache_reference_id",
        "request_name", "session_id", "session_path", "session_name", "error", "key_id")},
    **{name: {"type": ["string", "null"], "format": "date-time"}
       for name in ("request_created_at", "response_created_at")},
    **{name: {"type": ["integer", "null"]} for name in (
        "response_status", "prompt_tokens", "completion_tokens", "total_tokens", "prompt_cache_read_tokens",
        "prompt_cache_write_tokens", "reasoning_tokens", "fallback_index")},
    **{name: {"type": ["number", "null"]} for name in (
        "delay_ms", "time_to_first_token", "gateway_overhead_ms")},
    "prompt_inputs": {"type": ["object", "null"], "description": "the variables the prompt was rendered with"},
    "cost": {"type": ["number", "null"], "description": "USD; null when the model has no known price"},
    "pricing_status": {"enum": ["priced", "unpriced", "not_billable"],
                       "description": "unpriced: usage without a known price (cost null); not_billable: "
                                      "nothing to bill (reads, model lists, token counting, refused calls; cost 0)"},
    **{name: {"type": "boolean"} for name in ("cache_enabled", "streamed", "partial")},
    **{name: {"type": "object", "additionalProperties": {"type": "string"}}
       for name in ("properties", "request_properties")},
    "scores": {"type": "object", "additionalProperties": {"type": "integer"}},
    "attempts": {"type": "array", "items": {"type": "object"}},
    "request_body": {"description": "the request as sent (JSON, or text); absent when includeInputs is false"},
    "response_body": {"description": "the response as received (a streamed one assembled in the provider's "
                                     "non-stream shape); absent when includeInputs is false"},
    "response_stream": {"type": ["string", "null"],
                        "description": "a streamed response's SSE as received (null if not streamed); "
                                       "only with includeRawStream=true"},
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["data", "error"],
              "properties": {"data": {"type": "null"}, "error": {"type": "string"}}},
    "FilterNode": {"oneOf": [{"const": "all"}, ref("FilterLeaf"), ref("FilterBranch")]},
    "FilterBranch": {"type": "object", "required": ["left", "operator", "right"], "additionalProperties": False,
                     "properties": {"left": ref("FilterNode"), "operator": {"enum": ["and", "or"]},
                                    "right": ref("FilterNode")}},
    "FilterLeaf": {
        "type": "object", "additionalProperties": False,
        "description": "table → column → operator → value; several entries are ANDed. Property keys "
                       "match case-insensitively; text negations also match rows without the value.",
        "properties": {**{table: ref(f"Table_{table}") for table in TABLES},
                       PROPERTIES_TABLE: {"type": "object", "additionalProperties": ref("TextOperators")}}},
    **{f"Table_{table}": _table_schema(table) for table in TABLES},
    **{name: _operators(name) for name in _OPERATOR_VALUE},
    "Sort": {"type": "object", "description": "applied in the order given; ties broken by id",
             "properties": {**{name: {"enum": ["asc", "desc"]} for name in SORT_COLUMNS},
                            "properties": {"type": "object", "additionalProperties": {"enum": ["asc", "desc"]}}},
             "additionalProperties": False},
    "RequestQuery": {"type": "object", "properties": {
        "filter": ref("FilterNode"),
        "offset": {"type": "integer", "minimum": 0, "default": 0},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "sort": ref("Sort"),
        "includeInputs": {"type": "boolean", "default": True, "description": "false leaves the bodies out"},
        "isCached": {"type": "boolean", "description": "true: only cache hits"},
        "isScored": {"type": "boolean", "description": "true: only requests with a score"}}},
    "Request": {"type": "object", "properties": _RECORD_FIELDS},
    "UnixTime": {"type": "object", "required": ["seconds", "milliseconds"],
                 "properties": {"seconds": {"type": "number"}, "milliseconds": {"type": "number"}}},
    "AsyncLog": {"type": "object", "required": ["providerRequest", "providerResponse"], "properties": {
        "providerRequest": {"type": "object", "required": ["url", "json"], "properties": {
            "url": {"type": "string", "description": "the provider URL called, or any name (custom-model-nopath)"},
            "json": {"description": "the request body sent to the provider"},
            "meta": {"type": "object", "additionalProperties": {"type": "string"},
                     "description": "Helicone-* headers, applied as on proxied calls: Helicone-User-Id, "
                                    "Helicone-Property-*, Helicone-Session-*, Helicone-Request-Id, Helicone-Omit-*"}}},
        "providerResponse": {"type": "object", "required": ["status"], "properties": {
            "json": {"description": "the response body; usage is read from it (OpenAI, Anthropic, Google shapes)"},
            "textBody": {"type": "string", "description": "the response body when it is not JSON"},
            "status": {"type": "integer"},
            "headers": {"type": "object"},
            "cost": {"type": "number", "minimum": 0, "description": "USD; replaces the computed cost"}}},
        "timing": {"type": "object", "required": ["startTime", "endTime"],
                   "description": "absent: start = now, end = now + 1 s (Helicone's behaviour)",
                   "properties": {"startTime": ref("UnixTime"), "endTime": ref("UnixTime"),
                                  "timeToFirstToken": {"type": "number", "minimum": 0, "description": "ms"}}}}},
    "Erasure": {"type": "object", "properties": {
        "subject": {"type": "string", "description": "keyed hash of the user id, as in the audit log"},
        "deleted": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "table → rows"},
        "total": {"type": "integer"}}},
}

PATHS: dict[str, Any] = {
    "/api/v1/request/query": {"post": {
        "summary": "Query recorded requests (Helicone's filter tree).", "security": SECURITY,
        "requestBody": _body(ref("RequestQuery"), {
            "filter": {"left": {"request_response_rmt": {"model": {"equals": "gpt-4o-mini"}}}, "operator": "and",
                       "right": {"request_response_rmt": {"properties": {"feature": {"equals": "support"}}}}},
            "sort": {"created_at": "desc"}, "limit": 10, "offset": 0}),
        "responses": {**_ok({"type": "array", "items": ref("Request")}, "Matching records."),
                      **_errors("400", "401", "503")}}},
    "/api/v1/request/{request_id}": {"get": {
        "summary": "One recorded request.", "security": SECURITY, "parameters": [REQUEST_ID, {
            "name": "includeRawStream", "in": "query", "required": False,
            "schema": {"type": "boolean", "default": False},
            "description": "true adds `response_stream`, a streamed response's SSE as received."}],
        "responses": {**_ok(ref("Request"), "The record."), **_errors("400", "401", "404", "503")}}},
    "/api/v1/request/{request_id}/feedback": {"post": {
        "summary": "Rate a request; stored as score helicone-score-feedback = 1 or 0.", "security": SECURITY,
        "parameters": [REQUEST_ID],
        "requestBody": _body({"type": "object", "required": ["rating"],
                              "properties": {"rating": {"type": "boolean"}}}, {"rating": True}),
        "responses": {**CREATED, **_errors("400", "401", "404", "503")}}},
    "/api/v1/request/{request_id}/score": {"post": {
        "summary": "Add or replace named scores (integers; booleans become 1/0; floats are refused).",
        "security": SECURITY, "parameters": [REQUEST_ID],
        "requestBody": _body({"type": "object", "required": ["scores"], "properties": {"scores": {
            "type": "object", "minProperties": 1,
            "additionalProperties": {"oneOf": [{"type": "integer"}, {"type": "boolean"}]}}}},
            {"scores": {"accuracy": 92, "helpful": True}}),
        "responses": {**CREATED, **_errors("400", "401", "404", "503")}}},
    "/api/v1/request/{request_id}/property": {"put": {
        "summary": "Add or replace properties; keys are stored lower-cased.", "security": SECURITY,
        "parameters": [REQUEST_ID],
        "requestBody": _body({"oneOf": [
            {"type": "object", "required": ["key", "value"],
             "properties": {"key": {"type": "string"}, "value": {"type": "string"}}},
            {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}}]},
            {"key": "environment", "value": "production"}),
        "responses": {**CREATED, **_errors("400", "401", "404", "503")}}},
    **{f"/api{path}": {"post": {
        "summary": f"Log a call made without the proxy (Helicone's async logging); provider "
                   f"{provider or 'custom (usage read as OpenAI or Anthropic, by shape)'}.",
        "description": "Recorded like a proxied call: usage, cost, Helicone-* meta. Bodies over 10 MB are "
                       "refused (400 Payload too large). The record's id is in the helicone-id header.",
        "security": SECURITY,
        "requestBody": _body(ref("AsyncLog"), {
            "providerRequest": {"url": "https://api.openai.com/v1/chat/completions",
                                "json": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
                                "meta": {"Helicone-User-Id": "alice", "Helicone-Property-Feature": "chat"}},
            "providerResponse": {"json": {"model": "gpt-4o-mini", "usage": {
                "prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20}}, "status": 200, "headers": {}},
            "timing": {"startTime": {"seconds": 1735689600, "milliseconds": 0},
                       "endTime": {"seconds": 1735689601, "milliseconds": 250}}}),
        "responses": {**_ok({"type": "object", "properties": {"request_id": {"type": "string"}}}, "Accepted for recording."),
                      **_errors("400", "401", "503")}}} for path, provider in ASYNC_LOG_ROUTES.items()},
    "/api/v1/keys": {
        "post": {"summary": "Create a key in this key's project; the key is shown once, in `key`.",
                 "security": SECURITY,
                 "requestBody": _body({"type": "object", "required": ["name"], "properties": {
                     "name": {"type": "string"}, "scope": {"enum": ["proxy", "read", "admin"], "default": "proxy"},
                     "expires": {"type": "string", "description": "30d, 12h, 2w or an ISO date; absent: never"}}},
                     {"name": "billing-service", "scope": "proxy", "expires": "90d"}),
                 "responses": {**_ok(ref("NewKey"), "The key, shown this once.", "201"), **_errors("400", "401", "403")}},
        "get": {"summary": "This project's keys (never their secrets).", "security": SECURITY,
                "responses": {**_ok({"type": "array", "items": ref("Key")}, "Keys, oldest first."),
                              **_errors("401", "403")}}},
    "/api/v1/keys/{key_id}": {"delete": {
        "summary": "Revoke a key of this project (refused by every gateway within 5 s).", "security": SECURITY,
        "parameters": [{"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {**_ok({"type": "object"}, "Revoked."), **_errors("401", "403", "404")}}},
    "/api/v1/projects": {
        "post": {"summary": "Create a project; answers it with its first admin key, shown once.",
                 "security": SECURITY,
                 "requestBody": _body({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
                                      {"name": "search"}),
                 "responses": {**_ok({"type": "object", "properties": {
                     "id": {"type": "string"}, "name": {"type": "string"}, "admin_key": ref("NewKey")}},
                     "The project.", "201"), **_errors("400", "401", "403")}},
        "get": {"summary": "This key's project.", "security": SECURITY,
                "responses": {**_ok({"type": "array", "items": {"type": "object"}}, "The project."),
                              **_errors("401", "403")}}},
    "/api/v1/user/{user_id}": {"delete": {
        "summary": "Erase everything recorded about one user id (GDPR): requests, bodies, properties, "
                   "scores, per-user rollups. Audited under a keyed hash of the id.",
        "security": SECURITY,
        "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "the Helicone-User-Id; may contain '/'"}],
        "responses": {**_ok(ref("Erasure"), "Rows deleted per table (zero for an unknown id)."),
                      **_errors("400", "401", "503")}}},
    "/api/openapi.json": {"get": {
        "summary": "This document.",
        "responses": {"200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}}}}},
}

_KEY_FIELDS = {"id": {"type": "string"}, "name": {"type": "string"}, "scope": {"enum": ["proxy", "read", "admin"]},
               "project_id": {"type": "string"}, "expires_at": {"type": ["string", "null"], "format": "date-time"}}
SCHEMAS["Key"] = {"type": "object", "properties": {
    **_KEY_FIELDS, "prefix": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
    "revoked_at": {"type": ["string", "null"], "format": "date-time"}}}
SCHEMAS["NewKey"] = {"type": "object", "properties": {**_KEY_FIELDS, "key": {"type": "string"}}}

SCHEMAS["Budget"] = {"type": "object", "properties": {
    "id": {"type": "string"}, "project_id": {"type": "string"}, "target": {"enum": ["key", "project", "user"]},
    "key": {"type": "string", "description": "target key: the key's id"}, "key_name": {"type": ["string", "null"]},
    "user": {"type": "string", "description": "target user: the user id (Helicone-User-Id, else the body's `user`)"},
    "usd": {"type": "number"}, "period": {"enum": ["day", "week", "month"]},
    "created_at": {"type": "string", "format": "date-time"},
    "period_start": {"type": "string", "format": "date-time", "description": "UTC; a week starts on Monday"},
    "resets_at": {"type": "string", "format": "date-time"},
    "spend": {"type": "number", "description": "USD recorded this period (unpriced calls count 0)"},
    "remaining": {"type": "number", "description": "USD left this period, never below 0"},
    "unpriced_calls": {"type": "integer", "description": "calls this period whose model has no known price"}}}
_NO_BUDGET = {"404": {"description": "No such budget in this key's project.", "content": {JSON: {"schema": ref("Error")}}}}
PATHS["/api/v1/budgets"] = {
    "post": {"summary": "Set the budget of a key, this project or a user of this project for a period (UTC); "
                        "setting it again replaces the amount. Over budget, proxied calls get a 429 with "
                        "X-Helicone-Error: budget_exceeded, before the provider is called.",
             "security": SECURITY,
             "requestBody": _body({"type": "object", "required": ["target", "usd", "period"], "properties": {
                 "target": {"enum": ["key", "project", "user"]},
                 "key": {"type": "string", "description": "target key: its id or name (in this project)"},
                 "user": {"type": "string", "description": "target user: the user id"},
                 "usd": {"type": "number", "exclusiveMinimum": 0},
                 "period": {"enum": ["day", "week", "month"]}}},
                 {"target": "user", "user": "alice", "usd": 5, "period": "day"}),
             "responses": {**_ok(ref("Budget"), "The budget, with its spend this period.", "201"),
                           **_errors("400", "401", "403", "503")}},
    "get": {"summary": "This project's budgets, with the spend recorded this period, what remains, when each "
                       "resets and how many calls were unpriced.", "security": SECURITY,
            "responses": {**_ok({"type": "array", "items": ref("Budget")}, "Budgets, oldest first."),
                          **_errors("401", "403", "503")}}}
PATHS["/api/v1/budgets/{budget_id}"] = {"delete": {
    "summary": "Delete a budget of this project (every gateway stops enforcing it within 5 s).", "security": SECURITY,
    "parameters": [{"name": "budget_id", "in": "path", "required": True, "schema": {"type": "string"}}],
    "responses": {**_ok({"type": "object"}, "Deleted."), **_errors("401", "403", "503"), **_NO_BUDGET}}}

SCHEMAS["ProviderKey"] = {"type": "object", "properties": {
    "provider": {"type": "string"},
    "fingerprint": {"type": "string", "description": "first 3 and last 4 characters, e.g. sk-…abcd; the key "
                                                     "itself is never returned"},
    "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"}}}
_PROVIDER = {"name": "provider", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "openai, anthropic, azure or another provider of the route table (a 400 lists them)"}
_NO_PROVIDER_KEY = {"404": {"description": "This project holds no key for the provider.",
                            "content": {JSON: {"schema": ref("Error")}}}}
PATHS["/api/v1/provider-keys"] = {"get": {
    "summary": "The provider keys the gateway holds for this project: fingerprints only.", "security": SECURITY,
    "responses": {**_ok({"type": "array", "items": ref("ProviderKey")}, "By provider."),
                  **_errors("401", "403", "503")}}}
PATHS["/api/v1/provider-keys/{provider}"] = {
    "put": {"summary": "Store (or replace) this project's key for a provider, encrypted with the gateway's "
                       "secret_key. The project's calls that carry no credential of their own use it, before "
                       "the deployment's HELIOGRAPH_PROVIDER_KEY_<PROVIDER>; so do cross-provider fallbacks and "
                       "semantic-cache embeddings (openai).",
            "security": SECURITY, "parameters": [_PROVIDER],
            "requestBody": _body({"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}},
                                 {"key": "sk-proj-0123456789abcdef"}),
            "responses": {**_ok(ref("ProviderKey"), "Stored; only its fingerprint is answered."),
                          **_errors("400", "401", "403", "503")}},
    "delete": {"summary": "Delete this project's key for a provider (every gateway stops using it within 5 s).",
               "security": SECURITY, "parameters": [_PROVIDER],
               "responses": {**_ok({"type": "object"}, "Deleted."), **_errors("400", "401", "403", "503"),
                             **_NO_PROVIDER_KEY}}}

# Analytics, sessions, users and properties are documented beside their handlers.
PATHS.update(ANALYTICS_PATHS)
SCHEMAS.update(ANALYTICS_SCHEMAS)
PATHS.update(PROMPT_PATHS)
SCHEMAS.update(PROMPT_SCHEMAS)
PATHS.update(ALERT_PATHS)
SCHEMAS.update(ALERT_SCHEMAS)

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Heliograph API", "version": __version__,
             "description": "Management API of the Heliograph gateway, following Helicone's REST paths. "
                            "Every answer is {\"data\": …, \"error\": null} or {\"data\": null, \"error\": \"…\"}."},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                  "description": "a key from `heliograph keys create`"}},
                   "schemas": SCHEMAS},
    "paths": PATHS,
}


def document_scopes(routes: list[tuple[str, str, str]]) -> None:
    """Each operation says the key scope it needs (`x-scope`), from the routes as mounted."""
    for path, method, scope in routes:
        operation = PATHS.get(path, {}).get(method.lower())
        if operation is not None:
            operation["x-scope"] = scope


def openapi_route() -> Route:
    document = orjson.dumps(OPENAPI)

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")
    return Route("/openapi.json", openapi, methods=["GET"])
