"""OpenAPI paths and schemas of the prompt endpoints (api/prompts.py), merged by openapi.py.

Shares only docs_parts.py with openapi.py, so either module can be imported first.
"""

from __future__ import annotations

from typing import Any

from .docs_parts import JSON, SECURITY, errors, ref
from .docs_parts import ok as _ok

_ERRORS = {"400": "Bad input; `error` names the bad part.", "401": "Missing or unknown key.",
           "403": "The key's scope is too small; `error` names the scope needed.",
           "404": "No such prompt or version in this key's project.", "503": "The store is unavailable."}
BASE = "/api/v1/prompt-2025"
BODY_EXAMPLE = {"model": "gpt-4o-mini", "temperature": 0.2, "messages": [
    {"role": "system", "content": "You help {{hc:customer:string}} with their order."},
    {"role": "user", "content": "Order {{hc:order:number}}: where is it?"}]}



def _errors(*statuses: str) -> dict[str, Any]:
    return errors(_ERRORS, *statuses)


def _body(properties: dict[str, Any], required: list[str], example: Any) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": {"type": "object", "required": required,
                                                            "properties": properties}, "example": example}}}


def _post(summary: str, properties: dict[str, Any], required: list[str], example: Any, answer: dict[str, Any],
          description: str, status: str = "200") -> dict[str, Any]:
    return {"post": {"summary": summary, "security": SECURITY, "requestBody": _body(properties, required, example),
                     "responses": {**_ok(answer, description, status), **_errors("400", "401", "403", "404", "503")}}}


_ID = {"type": "string", "description": "the prompt's id"}
_STR = {"type": "string"}
_PATH_ID = {"name": "promptId", "in": "path", "required": True, "schema": _STR}
_VERSION_ID = {"name": "versionId", "in": "path", "required": True, "schema": _STR}
_VERSIONS = {"type": "array", "items": ref("PromptVersion")}

SCHEMAS: dict[str, Any] = {
    "Prompt": {"type": "object", "properties": {
        "id": _STR, "name": _STR, "tags": {"type": "array", "items": _STR}, "description": _STR,
        "kind": {"enum": ["managed", "auto"], "description": "auto: versioned by the gateway from the requests that "
                 "name it (Helicone-Prompt-Id); managed: made or pushed, rendered by the gateway"},
        "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"},
        "versions_count": {"type": "integer"},
        "environments": {"type": "object", "additionalProperties": _STR, "description": "name → version id"}}},
    "PromptVersion": {"type": "object", "properties": {
        "id": _STR, "prompt_id": _STR, "major_version": {"type": "integer"}, "minor_version": {"type": "integer"},
        "version": {"type": "string", "description": "major.minor"}, "commit_message": _STR,
        "source": {"enum": ["api", "cli", "dashboard", "auto"]}, "created_by": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"}, "model": {"type": ["string", "null"]},
        "variables": {"type": "array", "items": {"type": "object", "properties": {"name": _STR, "type": _STR}}},
        "environments": {"type": "array", "items": _STR},
        "prompt_body": {"type": "object", "description": "the whole request body template"}}},
    "PromptVersionMetrics": {"type": "object", "properties": {
        "version_id": {"type": ["string", "null"]}, "version": {"type": ["string", "null"]},
        "environments": {"type": "array", "items": _STR}, "requests": {"type": "integer"},
        "errors": {"type": "integer"}, "error_rate": {"type": "number", "description": "percent, 0-100"},
        "cost": {"type": "number", "description": "USD"}, "unpriced": {"type": "integer"},
        "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"},
        "avg_latency_ms": {"type": ["number", "null"]}, "p50_latency_ms": {"type": ["number", "null"]},
        "p95_latency_ms": {"type": ["number", "null"]},
        "scores": {"type": "object", "additionalProperties": {"type": "number"}, "description": "mean per score name"}}},
}

PATHS: dict[str, Any] = {
    BASE: _post("Create a prompt and its first version, which becomes production.",
                {"name": _STR, "tags": {"type": "array", "items": _STR}, "promptBody": {"type": "object"},
                 "id": {"type": "string", "description": "the id to give it (default: 6 random characters)"},
                 "description": _STR},
                ["name", "promptBody"], {"name": "Order help", "tags": ["support"], "promptBody": BODY_EXAMPLE},
                {"type": "object", "properties": {"id": _STR, "versionId": _STR}}, "Created.", "201"),
    BASE + "/update": _post(
        "Add a version (minor, or major with newMajorVersion); optionally point an environment at it.",
        {"promptId": _ID, "promptVersionId": {"type": "string", "description": "the version it is based on"},
         "newMajorVersion": {"type": "boolean"}, "environment": _STR, "commitMessage": _STR,
         "promptBody": {"type": "object"}},
        ["promptId", "promptBody"], {"promptId": "greeting", "promptVersionId": "pv_0", "newMajorVersion": False,
                                     "commitMessage": "Friendlier", "promptBody": BODY_EXAMPLE},
        {"type": "object", "properties": {"id": _STR, "version": _STR}}, "The new version.", "201"),
    BASE + "/update/environment": _post(
        "Point an environment (production, staging, development or any name) at a version: promote or roll "
        "back. Every move is kept (GET …/id/{promptId} lists them); gateways use it within about a second.",
        {"promptId": _ID, "promptVersionId": {"type": "string", "description": "a version id or a number such as 1.2"},
         "environment": _STR},
        ["promptId", "promptVersionId", "environment"],
        {"promptId": "greeting", "promptVersionId": "1.0", "environment": "staging"},
        {"type": "object", "properties": {"prompt_id": _STR, "environment": _STR, "version_id": _STR,
                                          "version": _STR, "previous_version_id": {"type": ["string", "null"]}}},
        "Moved."),
    BASE + "/query": _post("This project's prompts, last changed first.",
                           {"search": _STR, "tagsFilter": {"type": "array", "items": _STR}}, [],
                           {"search": "order"}, {"type": "array", "items": ref("Prompt")}, "Prompts."),
    BASE + "/query/versions": _post("A prompt's versions, newest first.",
                                    {"promptId": _ID, "majorVersion": {"type": "integer"}}, ["promptId"],
                                    {"promptId": "greeting"}, _VERSIONS, "Versions."),
    BASE + "/query/version": _post("One version with its body.", {"promptVersionId": _STR}, ["promptVersionId"],
                                   {"promptVersionId": "pv_0"}, ref("PromptVersion"), "The version."),
    BASE + "/query/environment-version": _post(
        "The version an environment points at.", {"promptId": _ID, "environment": _STR}, ["promptId", "environment"],
        {"promptId": "greeting", "environment": "staging"}, ref("PromptVersion"), "The version."),
    BASE + "/query/production-version": _post(
        "The production version.", {"promptId": _ID}, ["promptId"], {"promptId": "greeting"},
        ref("PromptVersion"), "The version."),
    BASE + "/query/metrics": _post(
        "Per version of a prompt, from the calls recorded with it: requests, errors, error rate, cost, tokens, "
        "latency (mean, p50, p95) and mean scores; so versions can be compared side by side.",
        {"promptId": _ID, "start": {"type": "integer", "description": "epoch ms (inclusive)"},
         "end": {"type": "integer", "description": "epoch ms (exclusive)"}}, ["promptId"], {"promptId": "greeting"},
        {"type": "array", "items": ref("PromptVersionMetrics")}, "Metrics by version, newest version first."),
    BASE + "/render": _post(
        "The body the gateway would send for a version with these inputs (and request fields), without calling "
        "a model. Inputs of the wrong type are a 400 naming each.",
        {"promptId": _ID, "versionId": {"type": "string", "description": "an id or a number such as 1.2"},
         "environment": _STR, "inputs": {"type": "object"},
         "request": {"type": "object", "description": "request fields merged as a call's are"}},
        ["promptId"], {"promptId": "greeting", "inputs": {"customer": "Ada", "order": 42}},
        {"type": "object", "properties": {"promptId": _STR, "versionId": _STR, "version": _STR,
                                          "body": {"type": "object"}}}, "The rendered body."),
    BASE + "/diff": _post(
        "A unified diff of two versions' bodies (pretty-printed JSON, keys sorted).",
        {"promptId": _ID, "from": {"type": "string", "description": "a version id or number"},
         "to": {"type": "string", "description": "a version id or number"}},
        ["promptId", "from", "to"], {"promptId": "greeting", "from": "1.0", "to": "1.1"},
        {"type": "object", "properties": {"from": _STR, "to": _STR, "from_version": _STR, "to_version": _STR,
                                          "diff": _STR}}, "The diff (empty when the bodies are equal)."),
    BASE + "/id/{promptId}": {"get": {
        "summary": "A prompt, its environments and the history of their moves.", "security": SECURITY,
        "parameters": [_PATH_ID],
        "responses": {**_ok(ref("Prompt"), "The prompt."), **_errors("401", "403", "404", "503")}}},
    BASE + "/{promptId}": {"delete": {
        "summary": "Delete a prompt and all its versions (records keep naming them).", "security": SECURITY,
        "parameters": [_PATH_ID],
        "responses": {**_ok({"type": "object"}, "Deleted."), **_errors("401", "403", "404", "503")}}},
    BASE + "/{promptId}/{versionId}": {"delete": {
        "summary": "Delete one version; environments pointing at it are removed.", "security": SECURITY,
        "parameters": [_PATH_ID, _VERSION_ID],
        "responses": {**_ok({"type": "object"}, "Deleted."), **_errors("401", "403", "404", "503")}}},
}
