"""The pieces every OpenAPI module of the API builds its paths from (openapi.py and the *_docs.py
modules it merges), in a module of their own so none of them imports another."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

JSON = "application/json"
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def ok(schema: dict[str, Any], description: str, status: str = "200") -> dict[str, Any]:
    """A success answer: Helicone's `{data, error: null}` around `schema`."""
    return {status: {"description": description, "content": {JSON: {"schema": {
        "type": "object", "required": ["data", "error"], "properties": {"data": schema, "error": {"type": "null"}}}}}}}


def errors(descriptions: Mapping[str, str], *statuses: str) -> dict[str, Any]:
    """Error answers for `statuses`, each described by the module's own `descriptions`."""
    return {s: {"description": descriptions[s], "content": {JSON: {"schema": ref("Error")}}} for s in statuses}
