"""Turning answers into aiohttp responses: JSON, provider-shaped errors, and SSE streams paced
and broken as the request's scenario says."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from heliograph.testing import anthropic_api, openai_api
from heliograph.testing.scenario import Scenario

__all__ = [
    "Call",
    "authorized",
    "default_model",
    "error",
    "include_usage",
    "json_response",
    "scripted_error",
    "stream",
]

# What a request without a model (an Azure deployment path aside) is answered as.
DEFAULT_MODEL = "fake-model"


@dataclass(slots=True)
class Call:
    """One request being answered: what every route handler needs."""

    request: web.Request
    body: dict[str, Any]
    raw: bytes
    scenario: Scenario | None
    request_id: str
    anthropic: bool


def authorized(headers: Any, anthropic: bool) -> bool:
    if anthropic and headers.get("x-api-key"):
        return True
    if headers.get("api-key"):
        return not anthropic
    authorization: str = headers.get("authorization", "")
    if anthropic:
        return bool(authorization.strip())
    return authorization[:7].lower() == "bearer " and bool(authorization[7:].strip())


def default_model(request: web.Request) -> str:
    # Azure names the model by deployment in the path and may omit it from the body.
    _, found, rest = request.path.partition("/deployments/")
    return rest.split("/", 1)[0] if found and rest else DEFAULT_MODEL


def include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _id_header(anthropic: bool, request_id: str) -> tuple[str, str]:
    return ("request-id" if anthropic else "x-request-id", f"req_{request_id}")


def error(
    anthropic: bool, status: int, message: str, request_id: str, extra: dict[str, str] | None = None
) -> web.Response:
    body = anthropic_api.error_body(status, message, f"req_{request_id}") if anthropic else openai_api.error_body(
        status, message
    )
    name, value = _id_header(anthropic, request_id)
    headers = {"Content-Type": "application/json", name: value, **(extra or {})}
    return web.Response(status=status, body=body, headers=headers)


def scripted_error(anthropic: bool, scenario: Scenario, request_id: str) -> web.Response:
    status = scenario.error_status
    extra: dict[str, str] = {}
    if scenario.retry_after is not None:
        extra["retry-after"] = scenario.retry_after
    elif status == 429:
        extra["retry-after"] = "1"
    if scenario.retry_after_ms is not None:
        extra["retry-after-ms"] = str(scenario.retry_after_ms)
    return error(anthropic, status, f"Fake upstream scenario: HTTP {status}", request_id, extra)


def json_response(call: Call, payload: dict[str, Any]) -> web.Response:
    data = orjson.dumps(payload)
    name, value = _id_header(call.anthropic, call.request_id)
    headers = {"Content-Type": "application/json", name: value}
    scenario = call.scenario
    if scenario is not None and scenario.gzip and "gzip" in call.request.headers.get("accept-encoding", ""):
        data = gzip.compress(data, compresslevel=5, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=data, headers=headers)


async def stream(call: Call, frames: list[bytes]) -> web.StreamResponse:
    """Send SSE frames one write each, applying the scenario's pacing and failures."""
    name, value = _id_header(call.anthropic, call.request_id)
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", name: value}
    response = web.StreamResponse(headers=headers)
    await response.prepare(call.request)
    scenario = call.scenario
    if scenario is None:
        for frame in frames:
            await response.write(frame)
        return response
    sent = 0
    while True:
        if sent == scenario.drop_after:
            transport = call.request.transport
            # close() flushes what was written, then FIN: the client gets n whole chunks and
            # then a chunked body that never ends. aiohttp's own write_eof on the closed
            # transport afterwards is treated as a client disconnect and not logged.
            if transport is not None:
                transport.close()
            return response
        if sent == scenario.stall_after:
            await asyncio.sleep(scenario.stall_ms / 1000)
        if sent == len(frames):
            return response
        if sent and scenario.chunk_delay_ms:
            await asyncio.sleep(scenario.chunk_delay_ms / 1000)
        await response.write(frames[sent])
        sent += 1
