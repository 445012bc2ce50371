"""Prompts: `/prompts` (the list, with usage) and `/prompts/{id}` (versions compared, environments).

    GET  /prompts?q=&range=                       store.list_prompts + prompt_usage (requests, cost)
    GET  /prompts/{id}?range=&version=&from=&to=  versions with their metrics side by side
                                                  (prompts/manage.metrics, as POST …/query/metrics),
                                                  one version's body, a diff of two, the playground
                                                  (a version rendered with inputs, as POST …/render)
                                                  and the environments with every move
    POST /prompts/{id}/environment                admin: point an environment at a version (promote,
                                                  roll back), as POST …/update/environment
    POST /prompts/{id}/run                        the playground's Run: the version called through the
                                                  gateway (in process, as the logged-in key, with the
                                                  provider key the gateway holds for the project), recorded
                                                  like any call

The requests of one version are the requests page filtered by `prompt` and `version`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..prompts import PromptError, manage
from .request_detail import not_found
from .web import Ctx, Dashboard, render, view

RANGES = {"24h": 86_400_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000, "all": None}
DEFAULT_RANGE = "30d"


def _start(request: Request) -> tuple[str, int]:
    span = request.query_params.get("range", DEFAULT_RANGE)
    span = span if span in RANGES else DEFAULT_RANGE
    width = RANGES[span]
    return span, 0 if width is None else int(time.time() * 1000) - width


@view("read")
async def prompts_page(request: Request, ctx: Ctx) -> Response:
    span, start = _start(request)
    search = (request.query_params.get("q") or "").replace("\x00", "").strip()
    rows = await ctx.call(ctx.store.list_prompts, ctx.project, search=search)
    usage = await ctx.call(ctx.store.prompt_usage, ctx.project, [row["id"] for row in rows], start=start)
    return render(request, ctx, "prompts.html", prompts=rows, usage=usage, search=search, span=span,
                  ranges=list(RANGES))


async def _prompt_page(request: Request, ctx: Ctx, *, error: str = "", status_code: int = 200,
                       run: dict[str, Any] | None = None, form: Any = None) -> Response:
    prompt_id: str = request.path_params["prompt_id"]
    prompt = None if "\x00" in prompt_id else await ctx.call(ctx.store.get_prompt, ctx.project, prompt_id)
    if prompt is None:
        return not_found(request, ctx, "prompt", prompt_id)
    span, start = _start(request)
    params = form if form is not None else request.query_params
    versions = await ctx.call(ctx.store.list_versions, ctx.project, prompt_id, with_bodies=True)
    by_id = {v["id"]: v for v in versions}
    metrics = {row["version_id"]: row for row in await ctx.call(manage.metrics, ctx.store, ctx.project, prompt_id,
                                                                 start=start)}
    moves = await ctx.call(ctx.store.environment_moves, ctx.project, prompt_id)
    numbers = {v["id"]: f"{v['major']}.{v['minor']}" for v in versions}
    selected = by_id.get(params.get("version", "")) or (by_id.get(prompt["environments"].get("production", ""))
                                                         or (versions[0] if versions else None))
    compared = None
    old, new = params.get("from"), params.get("to")
    if old is None and selected is not None:       # by default: the selected version against the one before it
        older = [v for v in versions if (v["major"], v["minor"]) < (selected["major"], selected["minor"])]
        if older:
            old, new = older[0]["id"], selected["id"]
        elif versions[0]["id"] != selected["id"]:   # the oldest: against the latest
            old, new = selected["id"], versions[0]["id"]
    if old and new:
        try:
            compared = await ctx.call(manage.diff_versions, ctx.store, ctx.project, prompt_id, old, new)
        except PromptError as exc:
            error = error or str(exc)
    playground = await _playground(ctx, prompt_id, selected, params)
    return render(request, ctx, "prompt.html", status_code, prompt=prompt, versions=versions, metrics=metrics,
                  moves=moves, numbers=numbers, selected=selected, compared=compared, playground=playground,
                  error=error, span=span, ranges=list(RANGES), best=_best(metrics), run=run,
                  can_run=ctx.dashboard.gateway_call is not None)


async def _playground(ctx: Ctx, prompt_id: str, selected: dict[str, Any] | None, params: Any) -> dict[str, Any]:
    """The selected version rendered with the inputs in the query string (`in.<name>`): the body the
    gateway would send for a call with `prompt_id` and these `inputs`."""
    if selected is None:
        return {}
    inputs = _inputs(selected["variables"], params)
    shown: dict[str, Any] = {"inputs": {k: params.get("in." + k, "") for k in (v["name"] for v in selected["variables"])}}
    if not inputs and not params.get("render"):
        return shown
    try:
        _, body = await ctx.call(manage.render, ctx.store, ctx.project, prompt_id, inputs, version=selected["id"])
    except PromptError as exc:
        return {**shown, "error": str(exc)}
    call = {"prompt_id": prompt_id, "version_id": selected["id"], "inputs": inputs}
    return {**shown, "body": body, "call": call}


def _inputs(declared: list[dict[str, str]], params: Any) -> dict[str, Any]:
    """The playground's inputs (fields `in.<name>`): numbers, booleans, objects and arrays read as JSON."""
    inputs: dict[str, Any] = {}
    for variable in declared:
        raw = params.get("in." + variable["name"])
        if not isinstance(raw, str) or raw == "":
            continue
        try:
            inputs[variable["name"]] = orjson.loads(raw) if variable["type"] in ("number", "boolean", "object",
                                                                                  "array") else raw
        except orjson.JSONDecodeError:
            inputs[variable["name"]] = raw
    return inputs


def _answer_text(body: bytes) -> str:
    """The answer's text (OpenAI chat or Anthropic messages), else the body as text."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")[:4000]
    if isinstance(answer, dict):
        choices = answer.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            return str((choices[0].get("message") or {}).get("content") or "")
        content = answer.get("content")
        if isinstance(content, list):
            return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        if isinstance(answer.get("error"), dict):
            return str(answer["error"].get("message", ""))
    return body.decode("utf-8", "replace")[:4000]


@view("read")
async def run_version(request: Request, ctx: Ctx) -> Response:
    prompt_id: str = request.path_params["prompt_id"]
    form = await request.form()
    version_id = str(form.get("version") or "")
    version = await ctx.call(ctx.store.get_version, ctx.project, version_id)
    if version is None or version["prompt_id"] != prompt_id:
        return not_found(request, ctx, "prompt version", version_id)
    if ctx.dashboard.gateway_call is None:
        return await _prompt_page(request, ctx, error="This dashboard runs without a gateway.", status_code=503,
                                  form=form)
    call = orjson.dumps({"prompt_id": prompt_id, "version_id": version_id,
                         "inputs": _inputs(version["variables"], form)})
    model = str(version["body"].get("model") or "")
    path = "/anthropic/v1/messages" if model.startswith("claude") else "/openai/v1/chat/completions"
    status, headers, answer = await ctx.dashboard.gateway_call(ctx.key, path, call)
    return await _prompt_page(request, ctx, form=form, run={
        "status": status, "request_id": headers.get("helicone-id"), "text": _answer_text(answer)})


def _best(metrics: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """Per compared column, the version id with the best value among versions with calls."""
    used = [m for m in metrics.values() if m["requests"]]
    if len(used) < 2:
        return {}
    return {"cost": min(used, key=lambda m: m["cost"] / m["requests"])["version_id"],
            "latency": min(used, key=lambda m: m["avg_latency_ms"] or 0)["version_id"],
            "errors": min(used, key=lambda m: m["error_rate"])["version_id"]}


@view("read")
async def prompt_page(request: Request, ctx: Ctx) -> Response:
    return await _prompt_page(request, ctx)


@view("admin")
async def move_environment(request: Request, ctx: Ctx) -> Response:
    prompt_id: str = request.path_params["prompt_id"]
    form = await request.form()
    environment = str(form.get("environment") or "").strip()
    version = str(form.get("version") or "")
    try:
        await ctx.call(manage.promote, ctx.store, ctx.project, prompt_id, version, environment, key_id=ctx.key.id)
    except manage.PromptNotFound:
        return not_found(request, ctx, "prompt version", version)
    except PromptError as exc:
        return await _prompt_page(request, ctx, error=f"Not moved: {exc}", status_code=400)
    return RedirectResponse(f"/prompts/{prompt_id}?version={version}", status_code=303)


def routes(dashboard: Dashboard) -> list[BaseRoute]:
    return [
        Route("/prompts", prompts_page),
        Route("/prompts/{prompt_id}/environment", move_environment, methods=["POST"]),
        Route("/prompts/{prompt_id}/run", run_version, methods=["POST"]),
        Route("/prompts/{prompt_id}", prompt_page),
    ]
