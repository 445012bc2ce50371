"""One request: `/requests/{id}`, and the admin forms that change its scores, feedback and properties.

    GET  /requests/{id}              the conversation, raw bodies, timing, tokens, cost, retries,
                                     cache, properties, scores, links to its session and user, curl
    POST /requests/{id}/scores       name + integer value         (admin) → back to the page
    POST /requests/{id}/feedback     rating = up | down           (admin)
    POST /requests/{id}/properties   key + value                  (admin)

The record is read with `store.get_request(id, project=)` and rendered by the API's
`render_request`: the page is `GET /api/v1/request/{id}`, rendered. Another project's id is
the same 404 as an unknown one. The forms reuse the API's validation (`parse_scores`,
`parse_properties`), so a value the API refuses is refused here with the same words.
"""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..api import ApiError
from ..api.records import SESSION_HEADERS, render_request
from ..api.requests import parse_properties, parse_scores
from ..storage.filters import FEEDBACK_SCORE
from .conversation import conversation
from .web import Ctx, message, render, view

MAX_RAW_CHARS = 2_000_000        # raw JSON shown in the page; past it, the API has the whole body
SAVED = {"scores": "Score saved.", "feedback": "Feedback saved.", "properties": "Property saved."}
_SESSION_KEYS = frozenset(header for header, _ in SESSION_HEADERS)
# Where the provider's own key goes in a copied curl command, by API family.
_PROVIDER_KEY_HEADER = {"anthropic": "x-api-key: <provider key>"}


def routes(dashboard: Any) -> list[Route]:
    return [
        Route("/requests/{request_id}", request_page, methods=["GET"]),
        Route("/requests/{request_id}/scores", post_score, methods=["POST"]),
        Route("/requests/{request_id}/feedback", post_feedback, methods=["POST"]),
        Route("/requests/{request_id}/properties", post_property, methods=["POST"]),
    ]


def not_found(request: Request, ctx: Ctx, what: str, ident: str) -> Response:
    return message(request, ctx, "Not found", f"No {what} with id {ident!r} in this project.", 404)


async def _record(ctx: Ctx, request_id: str) -> dict[str, Any] | None:
    if "\x00" in request_id:
        return None
    row = await ctx.call(ctx.store.get_request, request_id, project=ctx.project)
    return None if row is None else render_request(row)


@view("read")
async def request_page(request: Request, ctx: Ctx) -> Response:
    request_id: str = request.path_params["request_id"]
    record = await _record(ctx, request_id)
    if record is None:
        return not_found(request, ctx, "request", request_id)
    return _detail(request, ctx, record, notice=SAVED.get(request.query_params.get("saved", "")))


def _detail(request: Request, ctx: Ctx, record: dict[str, Any], *, notice: str | None = None,
            problem: str | None = None, status_code: int = 200) -> Response:
    return render(request, ctx, "request_detail.html", status_code, r=record,
                  **detail_context(record, str(request.base_url)), notice=notice, problem=problem)


def detail_context(record: dict[str, Any], base_url: str) -> dict[str, Any]:
    """What the template shows beyond the record's own fields."""
    scores = dict(record["scores"])
    feedback = scores.pop(FEEDBACK_SCORE, None)
    return {
        "messages": conversation(record["request_body"], record["response_body"], record["request_path"]),
        "request_json": _raw(record["request_body"]),
        "response_json": _raw(record["response_body"]),
        "timing": timing(record),
        "token_rows": token_rows(record),
        "properties": {k: v for k, v in record["properties"].items() if k not in _SESSION_KEYS},
        "scores": scores,
        "feedback": feedback,
        "cache_hit": record["cache_reference_id"] is not None,
        "curl": curl(record, base_url),
    }


def _raw(body: Any) -> str | None:
    if body is None:
        return None
    text = body if isinstance(body, str) else orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
    if len(text) > MAX_RAW_CHARS:
        return text[:MAX_RAW_CHARS] + f"\n… ({len(text) - MAX_RAW_CHARS:,} more characters: see the API)"
    return text


def token_rows(record: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [("Prompt", record["prompt_tokens"]), ("Completion", record["completion_tokens"]),
            ("Cache read", record["prompt_cache_read_tokens"]), ("Cache write", record["prompt_cache_write_tokens"]),
            ("Reasoning", record["reasoning_tokens"]), ("Total", record["total_tokens"])]


BAR_WIDTH = 600


def timing(record: dict[str, Any]) -> dict[str, Any]:
    """The timing bar: gateway overhead then upstream along the total, with a TTFT marker.

    Widths are SVG user units out of BAR_WIDTH (the page's CSP forbids inline styles)."""
    total = max(float(record["delay_ms"] or 0.0), 0.0)
    overhead = min(max(float(record["gateway_overhead_ms"] or 0.0), 0.0), total)
    upstream = total - overhead
    ttft = record["time_to_first_token"]
    scale = BAR_WIDTH / total if total > 0 else 0.0
    return {"total": total, "overhead": overhead, "upstream": upstream, "ttft": ttft, "width": BAR_WIDTH,
            "overhead_w": round(overhead * scale, 2), "upstream_w": round(upstream * scale, 2),
            "ttft_x": None if ttft is None else round(min(float(ttft), total) * scale, 2)}


def curl(record: dict[str, Any], base_url: str) -> str:
    """The call as a curl command against this gateway, with placeholders for both keys."""
    path = record["request_path"] or "/"
    lines = [f"curl {shlex.quote(base_url.rstrip('/') + path)}",
             f"  -X {shlex.quote(record['request_method'] or 'POST')}",
             "  -H 'Content-Type: application/json'",
             "  -H 'Helicone-Auth: Bearer <your key>'",
             "  -H " + shlex.quote(_PROVIDER_KEY_HEADER.get(record["provider"] or "",
                                                            "Authorization: Bearer <provider key>"))]
    body = record["request_body"]
    if body is not None and record["request_method"] != "GET":
        text = body if isinstance(body, str) else orjson.dumps(body).decode()
        lines.append(f"  -d {shlex.quote(text)}")
    return " \\\n".join(lines)


# -- admin forms ------------------------------------------------------------------------------------

def _back(request_id: str, saved: str) -> Response:
    return RedirectResponse(f"/requests/{quote(request_id, safe='')}?saved={saved}#annotations", status_code=303)


async def _change(request: Request, ctx: Ctx, change: str, build: Any) -> Response:
    """Apply a form; a value the API would refuse re-renders the page with the API's words (400)."""
    request_id: str = request.path_params["request_id"]
    form = await request.form()
    fields = {k: v for k, v in form.items() if k != "csrf" and isinstance(v, str)}
    try:
        payload = build(fields)
    except ApiError as exc:
        record = await _record(ctx, request_id)
        if record is None:
            return not_found(request, ctx, "request", request_id)
        return _detail(request, ctx, record, problem=exc.message, status_code=400)
    method = ctx.store.set_scores if change == "scores" else ctx.store.set_properties
    if "\x00" in request_id or not await ctx.call(method, request_id, payload, project=ctx.project):
        return not_found(request, ctx, "request", request_id)
    return _back(request_id, "feedback" if build is _feedback_form else change)


def _score_form(form: dict[str, str]) -> dict[str, int]:
    raw = form.get("value", "").strip()
    value: Any = {"true": True, "false": False}.get(raw.lower(), raw)
    for number in (int, float):      # a float is refused by parse_scores, with the API's words
        try:
            value = number(raw)
            break
        except ValueError:
            continue
    return parse_scores({"scores": {form.get("name", "").strip(): value}})


def _feedback_form(form: dict[str, str]) -> dict[str, int]:
    rating = form.get("rating")
    if rating not in ("up", "down"):
        raise ApiError("Choose a rating: up or down.")
    return {FEEDBACK_SCORE: int(rating == "up")}


def _property_form(form: dict[str, str]) -> dict[str, str]:
    return parse_properties({form.get("key", "").strip(): form.get("value", "")})


@view("admin")
async def post_score(request: Request, ctx: Ctx) -> Response:
    return await _change(request, ctx, "scores", _score_form)


@view("admin")
async def post_feedback(request: Request, ctx: Ctx) -> Response:
    return await _change(request, ctx, "scores", _feedback_form)


@view("admin")
async def post_property(request: Request, ctx: Ctx) -> Response:
    return await _change(request, ctx, "properties", _property_form)
