"""`heliograph requests export`: every matching record, as JSON Lines or CSV, in constant memory.

Records are rendered exactly as the API renders them (`api/records.py`), so an export and a
`POST /api/v1/request/query` answer agree field for field. Rows come from the store's keyset
pages (`Store.iter_requests`) and are written as they arrive: memory holds one page, whatever the
size of the export.

CSV has a fixed header (`CSV_FIELDS`, the same for every export, so files from different days
concatenate); nested values (properties, scores, attempts, bodies) are JSON text in their cell,
booleans are `true`/`false`, and null is an empty cell. Bodies are left out unless asked for.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import IO, Any, Literal

import orjson

from .api.records import render_request
from .storage import FilterError, Store
from .storage.filters import ALL, Branch, Node, parse_filter

Format = Literal["jsonl", "csv"]
BODY_FIELDS = ("request_body", "response_body")

# The record's fields in the order render_request gives them (a test keeps the two in step).
CSV_FIELDS = (
    "request_id", "request_created_at", "response_created_at", "request_path", "target_url",
    "request_method", "request_user_id", "request_model", "response_model", "model",
    "request_properties", "properties", "request_body", "response_body", "response_status", "provider",
    "delay_ms", "time_to_first_token", "prompt_tokens", "completion_tokens", "total_tokens",
    "prompt_cache_read_tokens", "prompt_cache_write_tokens", "reasoning_tokens", "cost", "pricing_status",
    "prompt_id", "prompt_version", "prompt_inputs", "scores", "cache_enabled", "cache_reference_id", "request_name",
    "session_id", "session_path", "session_name", "streamed", "partial", "error", "attempts",
    "fallback_index", "gateway_overhead_ms", "key_id", "project_id",
)


def build_filter(filter_json: str | None = None, *, since: str | None = None, until: str | None = None,
                 user: str | None = None, model: str | None = None) -> Node:
    """One filter tree from the command line's options; FilterError names a bad part.

    The shorthands are spelled as Helicone filter leaves, so they are checked and compiled by the
    same code as the query API's filters (`since` inclusive, `until` exclusive).
    """
    leaves: list[Any] = []
    if filter_json:
        try:
            leaves.append(orjson.loads(filter_json))
        except orjson.JSONDecodeError as exc:
            raise FilterError(f"--filter is not valid JSON: {exc}") from None
    columns: dict[str, dict[str, Any]] = {}
    if since:
        columns.setdefault("request_created_at", {})["gte"] = since
    if until:
        columns.setdefault("request_created_at", {})["lt"] = until
    if user is not None:
        columns["user_id"] = {"equals": user}
    if model is not None:
        columns["model"] = {"equals": model}
    if columns:
        leaves.append({"request_response_rmt": columns})
    node: Node = ALL
    for leaf in leaves:
        parsed = parse_filter(leaf)
        node = parsed if node == ALL else Branch(node, "and", parsed)
    return node


def records(store: Store, node: Node = ALL, *, project: str, with_bodies: bool = False,
            limit: int | None = None) -> Iterator[dict[str, Any]]:
    for row in store.iter_requests(node, project=project, with_bodies=with_bodies, limit=limit):
        record = render_request(row)
        if not with_bodies:
            for name in BODY_FIELDS:
                del record[name]
        yield record


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def write_jsonl(rendered: Iterable[dict[str, Any]], out: IO[bytes]) -> int:
    count = 0
    for record in rendered:
        out.write(orjson.dumps(record) + b"\n")
        count += 1
    return count


def write_csv(rendered: Iterable[dict[str, Any]], out: IO[bytes], *, with_bodies: bool) -> int:
    fields = [f for f in CSV_FIELDS if with_bodies or f not in BODY_FIELDS]
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        writer = csv.writer(text)
        writer.writerow(fields)
        count = 0
        for record in rendered:
            writer.writerow([_cell(record.get(name)) for name in fields])
            count += 1
        text.flush()
    finally:
        text.detach()       # the caller owns `out`; closing the wrapper would close it
    return count


def export(store: Store, out: IO[bytes], fmt: Format, node: Node = ALL, *, project: str, with_bodies: bool = False,
           limit: int | None = None) -> int:
    """Write every matching record of `project` to `out`; returns how many."""
    rendered = records(store, node, project=project, with_bodies=with_bodies, limit=limit)
    if fmt == "csv":
        return write_csv(rendered, out, with_bodies=with_bodies)
    return write_jsonl(rendered, out)


def iter_export(store: Store, fmt: Format, node: Node = ALL, *, project: str, with_bodies: bool = False,
                limit: int | None = None, rows_per_chunk: int = 200) -> Iterator[bytes]:
    """The same output as `export`, as chunks of bytes for a streamed HTTP response (one page of
    the store in memory at a time)."""
    rendered = records(store, node, project=project, with_bodies=with_bodies, limit=limit)
    return iter_write(rendered, fmt, with_bodies=with_bodies, rows_per_chunk=rows_per_chunk)


def iter_write(rendered: Iterable[dict[str, Any]], fmt: Format, *, with_bodies: bool,
               rows_per_chunk: int = 200) -> Iterator[bytes]:
    """Rendered records as CSV or JSONL, in chunks of bytes."""
    fields = [f for f in CSV_FIELDS if with_bodies or f not in BODY_FIELDS]
    text = io.StringIO()
    writer = csv.writer(text)
    if fmt == "csv":
        writer.writerow(fields)
    chunk: list[bytes] = []
    for count, record in enumerate(rendered, 1):
        if fmt == "csv":
            writer.writerow([_cell(record.get(name)) for name in fields])
        else:
            chunk.append(orjson.dumps(record) + b"\n")
        if count % rows_per_chunk == 0:
            yield text.getvalue().encode() + b"".join(chunk)
            text.seek(0)
            text.truncate()
            chunk.clear()
    rest = text.getvalue().encode() + b"".join(chunk)
    if rest:
        yield rest
