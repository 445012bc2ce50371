"""OpenAPI paths and schemas of the alert, webhook and delivery endpoints (api/alerts.py).

Merged into the document by openapi.py, like analytics_docs.py; shares only docs_parts.py with it.
"""

from __future__ import annotations

from typing import Any

from .docs_parts import JSON, SECURITY, errors, ref
from .docs_parts import ok as _ok

from ..alerts.rules import CHANNEL_TYPES, COMPARISONS, GROUPS, MAX_WINDOW, METRICS, MIN_WINDOW, MODES

_ERRORS = {"400": "Bad input; `error` names the bad field.", "401": "Missing or unknown key.",
           "403": "The key's scope is too small; `error` names the scope needed.",
           "404": "No such alert or webhook in this key's project.", "503": "The store is unavailable."}



def _errors(*statuses: str) -> dict[str, Any]:
    return errors(_ERRORS, *statuses)


def _body(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema, "example": example}}}


_CHANNEL = {"type": "object", "required": ["type"], "properties": {
    "type": {"enum": list(CHANNEL_TYPES)},
    "url": {"type": "string", "description": "webhook and slack: where to POST (loopback and private addresses "
                                              "are allowed: admins set them)"},
    "secret": {"type": "string", "description": "webhook: the HMAC key of Helicone-Signature (hex HMAC-SHA256 of "
                                                 "the raw body); generated when absent, shown once, then \"****\""},
    "to": {"type": "array", "items": {"type": "string"}, "description": "email: recipients (SMTP from the settings)"}}}
_RULE_FIELDS: dict[str, Any] = {
    "name": {"type": "string"},
    "metric": {"enum": list(METRICS), "description": "; ".join(f"{k}: {v}" for k, v in METRICS.items())},
    "threshold": {"type": "number", "description": "in the metric's unit; in anomaly mode a factor above 1"},
    "window": {"type": "integer", "minimum": MIN_WINDOW, "maximum": MAX_WINDOW, "description": "seconds"},
    "comparison": {"enum": list(COMPARISONS), "default": "gt"},
    "min_requests": {"type": "integer", "minimum": 0, "default": 0,
                     "description": "a window with fewer requests leaves the state unchanged"},
    "filter": {"description": "the filter tree of POST /api/v1/request/query", "default": "all"},
    "group_by": {"type": ["string", "null"], "description": f"null, {', '.join(GROUPS)} or property:<key>: "
                                                             "one state per group"},
    "mode": {"enum": list(MODES), "default": "threshold",
             "description": "anomaly: breach when the metric is threshold × its baseline, the same metric over "
                            "the 7 days before the window (sums scaled to the window)"},
    "channels": {"type": "array", "items": _CHANNEL},
    "enabled": {"type": "boolean", "default": True}}
_EXAMPLE = {"name": "Error rate above 5 %", "metric": "error_rate", "threshold": 5, "window": 300,
            "comparison": "gt", "min_requests": 10, "group_by": "model",
            "channels": [{"type": "slack", "url": "https://hooks.slack.com/services/T000/B000/XXXX"}]}
SCHEMAS: dict[str, Any] = {
    "AlertRule": {"type": "object", "properties": {
        "id": {"type": "string"}, "project_id": {"type": "string"}, **_RULE_FIELDS,
        "state": {"enum": ["ok", "firing", "resolved"], "description": "firing when any group is"},
        "firing_groups": {"type": "array", "items": {"type": ["string", "null"]}},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"}}},
    "Webhook": {"type": "object", "properties": {
        "id": {"type": "string"}, "url": {"type": "string"},
        "secret": {"type": "string", "description": "only in the answer to its creation"},
        "sample_rate": {"type": "number"}, "property_filters": {"type": "object"},
        "include_data": {"type": "boolean"}, "created_at": {"type": "string", "format": "date-time"}}},
    "Delivery": {"type": "object", "properties": {
        "id": {"type": "string"}, "source": {"enum": ["alert", "request", "budget"]},
        "source_id": {"type": "string"}, "channel": {"type": "object", "description": "type, url or to; no secret"},
        "state": {"type": ["string", "null"]}, "status": {"enum": ["pending", "delivered", "failed"]},
        "attempts": {"type": "integer"}, "last_status": {"type": ["integer", "null"], "description": "HTTP or SMTP code"},
        "last_error": {"type": ["string", "null"]}, "next_attempt_at": {"type": ["string", "null"]},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
}
_ALERT_ID = {"name": "alert_id", "in": "path", "required": True, "schema": {"type": "string"}}
_WEBHOOK_ID = {"name": "webhook_id", "in": "path", "required": True, "schema": {"type": "string"}}
_QUEUED = _ok({"type": "object", "properties": {"queued": {"type": "array", "items": {"type": "string"}}}},
              "Queued: the delivery log (GET /api/v1/deliveries) shows the outcome.", "202")
PATHS: dict[str, Any] = {
    "/api/v1/alerts": {
        "post": {"summary": "Create an alert rule, evaluated every alert_interval seconds from the rollups.",
                 "security": SECURITY,
                 "requestBody": _body({"type": "object", "required": ["name", "metric", "threshold", "window"],
                                       "properties": _RULE_FIELDS}, _EXAMPLE),
                 "responses": {**_ok(ref("AlertRule"), "The rule, secrets shown this once.", "201"),
                               **_errors("400", "401", "403", "503")}},
        "get": {"summary": "This project's alert rules with their current state.", "security": SECURITY,
                "responses": {**_ok({"type": "array", "items": ref("AlertRule")}, "Oldest first."),
                              **_errors("401", "403", "503")}}},
    "/api/v1/alerts/{alert_id}": {
        "get": {"summary": "A rule with its state per group, its history of transitions and its deliveries.",
                "security": SECURITY, "parameters": [_ALERT_ID],
                "responses": {**_ok(ref("AlertRule"), "The rule."), **_errors("401", "403", "404", "503")}},
        "put": {"summary": "Replace a rule (its states start again); a webhook secret sent back as \"****\" is kept.",
                "security": SECURITY, "parameters": [_ALERT_ID],
                "requestBody": _body({"type": "object", "properties": _RULE_FIELDS}, _EXAMPLE),
                "responses": {**_ok(ref("AlertRule"), "The rule."), **_errors("400", "401", "403", "404", "503")}},
        "delete": {"summary": "Delete a rule, its states and history.", "security": SECURITY,
                   "parameters": [_ALERT_ID],
                   "responses": {**_ok({"type": "object"}, "Deleted."), **_errors("401", "403", "404", "503")}}},
    "/api/v1/alerts/{alert_id}/test": {"post": {
        "summary": "Send a notification with state \"test\" to each of the rule's channels, or to one.",
        "security": SECURITY, "parameters": [_ALERT_ID],
        "requestBody": {"required": False, "content": {JSON: {"schema": {"type": "object", "properties": {
            "channel": {"type": "integer", "minimum": 0, "description": "index in `channels`; absent: all"}}}}}},
        "responses": {**_QUEUED, **_errors("401", "403", "404", "503")}}},
    "/api/v1/webhooks": {
        "post": {"summary": "A per-request webhook: after each recorded request of this project (matching every "
                            "property filter, sampled), a POST with Helicone's payload, signed in Helicone-Signature.",
                 "security": SECURITY,
                 "requestBody": _body({"type": "object", "required": ["url"], "properties": {
                     "url": {"type": "string"}, "sample_rate": {"type": "number", "minimum": 0, "maximum": 100},
                     "property_filters": {"type": "object", "additionalProperties": {"type": "string"}},
                     "include_data": {"type": "boolean", "default": True,
                                      "description": "request_body and response_body (truncated to 10 KB)"}}},
                     {"url": "https://example.com/helicone-webhook", "sample_rate": 100,
                      "property_filters": {"environment": "production"}, "include_data": True}),
                 "responses": {**_ok(ref("Webhook"), "The webhook and its secret (shown this once).", "201"),
                               **_errors("400", "401", "403", "503")}},
        "get": {"summary": "This project's webhooks (without secrets).", "security": SECURITY,
                "responses": {**_ok({"type": "array", "items": ref("Webhook")}, "Oldest first."),
                              **_errors("401", "403", "503")}}},
    "/api/v1/webhooks/{webhook_id}": {"delete": {
        "summary": "Delete a webhook.", "security": SECURITY, "parameters": [_WEBHOOK_ID],
        "responses": {**_ok({"type": "object"}, "Deleted."), **_errors("401", "403", "404", "503")}}},
    "/api/v1/webhooks/{webhook_id}/test": {"post": {
        "summary": "Send a test payload (request_id \"test\") to the webhook.", "security": SECURITY,
        "parameters": [_WEBHOOK_ID], "responses": {**_QUEUED, **_errors("401", "403", "404", "503")}}},
    "/api/v1/deliveries": {"get": {
        "summary": "The delivery log of this project's notifications and webhook calls, newest first (100).",
        "security": SECURITY,
        "responses": {**_ok({"type": "array", "items": ref("Delivery")}, "Newest first."),
                      **_errors("401", "403", "503")}}},
}
