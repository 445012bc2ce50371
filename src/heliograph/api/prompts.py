"""Prompts over the API, on Helicone's prompts 2025 paths, in the key's own project (prompts/manage.py).

    POST   /v1/prompt-2025                                {name, tags, promptBody, id?, description?}
                                                          → {id, versionId}; the version is production
    POST   /v1/prompt-2025/update                         {promptId, promptVersionId, newMajorVersion,
                                                          environment?, commitMessage, promptBody} → {id}
    POST   /v1/prompt-2025/update/environment             {promptId, promptVersionId, environment}
    POST   /v1/prompt-2025/query                          {search?, tagsFilter?} → prompts
    POST   /v1/prompt-2025/query/versions                 {promptId, majorVersion?} → versions, newest first
    POST   /v1/prompt-2025/query/version                  {promptVersionId} → the version with its body
    POST   /v1/prompt-2025/query/environment-version      {promptId, environment}
    POST   /v1/prompt-2025/query/production-version       {promptId}
    GET    /v1/prompt-2025/id/{promptId}                  the prompt, its environments and their moves
    DELETE /v1/prompt-2025/{promptId}                     the prompt and all its versions
    DELETE /v1/prompt-2025/{promptId}/{versionId}         one version (environments on it are removed)
  Heliograph's own:
    POST   /v1/prompt-2025/render                         {promptId, versionId?|environment?, inputs, request?}
                                                          → the body the gateway would send; no model called
    POST   /v1/prompt-2025/diff                           {promptId, from, to} → a unified diff of the bodies
    POST   /v1/prompt-2025/query/metrics                  {promptId, start?, end?} → per version: requests,
                                                          errors, error rate, cost, tokens, latency, scores

Writing needs an admin key, reading a read key. Gateways use a change within about a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import KeyCache
from ..prompts import PromptError
from ..prompts import manage
from ..storage import Store
from . import ApiError, envelope, json_object, route

T = TypeVar("T")


async def _run(work: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(work)
    except manage.PromptNotFound as exc:
        raise ApiError(str(exc), 404) from None
    except PromptError as exc:
        raise ApiError(str(exc)) from None


def _string(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(f"'{name}' must be a non-empty string.")
    return value


def _millis(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(f"'{name}' must be epoch milliseconds.")
    return int(value)


def prompt_routes(store: Store, keys: KeyCache) -> list[Route]:
    def project(request: Request) -> str:
        return str(request.state.key.project_id)

    def key_id(request: Request) -> str | None:
        return request.state.key.id or None

    async def create(request: Request) -> Response:
        body = await json_object(request)
        prompt_id, version = await _run(lambda: manage.create(
            store, project(request), name=body.get("name"), body=body.get("promptBody"), tags=body.get("tags"),
            description=body.get("description") or "", prompt_id=body.get("id"), key_id=key_id(request)))
        return envelope({"id": prompt_id, "versionId": version["id"]}, status=201)

    async def update(request: Request) -> Response:
        body = await json_object(request)
        version = await _run(lambda: manage.update(
            store, project(request), body.get("promptId"), body=body.get("promptBody"),
            based_on=body.get("promptVersionId"), new_major=body.get("newMajorVersion", False),
            environment=body.get("environment"), commit_message=body.get("commitMessage") or "",
            key_id=key_id(request)))
        return envelope({"id": version["id"], "version": f"{version['major']}.{version['minor']}"}, status=201)

    async def update_environment(request: Request) -> Response:
        body = await json_object(request)
        moved = await _run(lambda: manage.promote(store, project(request), body.get("promptId"),
                                                  body.get("promptVersionId"), body.get("environment"),
                                                  key_id=key_id(request)))
        return envelope(moved)

    async def query(request: Request) -> Response:
        body = await json_object(request, empty_ok=True)
        search = body.get("search") or ""
        tags = body.get("tagsFilter") or []
        if not isinstance(search, str) or not isinstance(tags, list):
            raise ApiError("'search' must be a string and 'tagsFilter' a list of tags.")
        rows = await _run(lambda: store.list_prompts(project(request), search=search, tags=tags))
        return envelope([manage.prompt_json(row) for row in rows])

    async def versions(request: Request) -> Response:
        body = await json_object(request)
        prompt_id = _string(body, "promptId")
        assert prompt_id is not None
        major = body.get("majorVersion")

        def work() -> list[dict[str, Any]]:
            prompt = manage.get_prompt(store, project(request), prompt_id)
            rows = store.list_versions(project(request), prompt_id, with_bodies=True)
            return [manage.version_json(row, prompt["environments"]) for row in rows
                    if major is None or row["major"] == major]
        return envelope(await _run(work))

    async def version(request: Request) -> Response:
        body = await json_object(request)
        version_id = _string(body, "promptVersionId")
        assert version_id is not None

        def work() -> dict[str, Any]:
            row = store.get_version(project(request), version_id)
            if row is None:
                raise manage.PromptNotFound(f"No prompt version '{version_id}' in this project.")
            return manage.shown_version(store, project(request), row["prompt_id"], version=version_id)
        return envelope(await _run(work))

    async def environment_version(request: Request) -> Response:
        body = await json_object(request)
        prompt_id, environment = _string(body, "promptId"), _string(body, "environment")
        assert prompt_id is not None
        return envelope(await _run(lambda: manage.shown_version(store, project(request), prompt_id,
                                                                environment=environment)))

    async def production_version(request: Request) -> Response:
        body = await json_object(request)
        prompt_id = _string(body, "promptId")
        assert prompt_id is not None
        return envelope(await _run(lambda: manage.shown_version(store, project(request), prompt_id,
                                                                environment="production")))

    async def get_prompt(request: Request) -> Response:
        prompt_id: str = request.path_params["promptId"]

        def work() -> dict[str, Any]:
            row = manage.get_prompt(store, project(request), prompt_id)
            moves = store.environment_moves(project(request), prompt_id)
            return {**manage.prompt_json(row), "environment_moves": [
                {**move, "moved_at": manage.iso(move["moved_at"])} for move in moves]}
        return envelope(await _run(work))

    async def delete_prompt(request: Request) -> Response:
        prompt_id: str = request.path_params["promptId"]
        if not await _run(lambda: store.delete_prompt(project(request), prompt_id)):
            raise ApiError(f"No prompt '{prompt_id}' in this project.", 404)
        return envelope({"id": prompt_id, "deleted": True})

    async def delete_version(request: Request) -> Response:
        prompt_id, version_id = request.path_params["promptId"], request.path_params["versionId"]
        if not await _run(lambda: store.delete_version(project(request), prompt_id, version_id)):
            raise ApiError(f"No version '{version_id}' of a prompt '{prompt_id}' in this project.", 404)
        return envelope({"id": version_id, "deleted": True})

    async def render(request: Request) -> Response:
        body = await json_object(request)
        prompt_id = _string(body, "promptId")
        inputs, extra = body.get("inputs") or {}, body.get("request") or {}
        if not isinstance(inputs, dict) or not isinstance(extra, dict):
            raise ApiError("'inputs' and 'request' must be JSON objects.")
        assert prompt_id is not None
        found, rendered = await _run(lambda: manage.render(
            store, project(request), prompt_id, inputs, version=_string(body, "versionId", required=False),
            environment=_string(body, "environment", required=False), request=extra))
        return envelope({"promptId": prompt_id, "versionId": found["id"],
                         "version": f"{found['major']}.{found['minor']}", "body": rendered})

    async def diff(request: Request) -> Response:
        body = await json_object(request)
        prompt_id, old, new = _string(body, "promptId"), _string(body, "from"), _string(body, "to")
        assert prompt_id is not None and old is not None and new is not None
        return envelope(await _run(lambda: manage.diff_versions(store, project(request), prompt_id, old, new)))

    async def metrics(request: Request) -> Response:
        body = await json_object(request)
        prompt_id = _string(body, "promptId")
        assert prompt_id is not None
        start, end = _millis(body, "start") or 0, _millis(body, "end")
        return envelope(await _run(lambda: manage.metrics(store, project(request), prompt_id, start=start, end=end)))

    base = "/v1/prompt-2025"
    return [
        route(keys, base, create, "POST", scope="admin"),
        route(keys, base + "/update", update, "POST", scope="admin"),
        route(keys, base + "/update/environment", update_environment, "POST", scope="admin"),
        route(keys, base + "/query", query, "POST", scope="read"),
        route(keys, base + "/query/versions", versions, "POST", scope="read"),
        route(keys, base + "/query/version", version, "POST", scope="read"),
        route(keys, base + "/query/environment-version", environment_version, "POST", scope="read"),
        route(keys, base + "/query/production-version", production_version, "POST", scope="read"),
        route(keys, base + "/query/metrics", metrics, "POST", scope="read"),
        route(keys, base + "/render", render, "POST", scope="read"),
        route(keys, base + "/diff", diff, "POST", scope="read"),
        route(keys, base + "/id/{promptId}", get_prompt, "GET", scope="read"),
        route(keys, base + "/{promptId}", delete_prompt, "DELETE", scope="admin"),
        route(keys, base + "/{promptId}/{versionId}", delete_version, "DELETE", scope="admin"),
    ]
