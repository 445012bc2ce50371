"""A fake LLM provider: a real aiohttp server on loopback speaking the OpenAI and Anthropic APIs.

Routing is by path suffix, so one server stands in for every provider at any prefix
(``/v1/chat/completions``, ``/openai/v1/…`` for Groq, ``/v1beta/openai/…`` for Gemini,
``/openai/deployments/<dep>/chat/completions?api-version=…`` for Azure)::

    POST */chat/completions       OpenAI chat completions, JSON or SSE, tool calls
    POST */completions            legacy completions, JSON or SSE
    POST */embeddings             hashed bag-of-words vectors, float or base64
    POST */responses              OpenAI Responses API, JSON or SSE
    GET */models                  model list (Anthropic's shape when ``anthropic-version`` is sent)
    POST */messages               Anthropic Messages, JSON or SSE, tool use, prompt caching
    POST */messages/count_tokens  Anthropic token counting
    anything else                 404 in OpenAI's error shape

OpenAI-style routes want ``Authorization: Bearer <anything>`` or ``api-key`` (Azure);
``*/messages`` wants ``x-api-key`` or ``Authorization``. A missing key is a 401 in that API's
error shape. Content and token counts are deterministic: see :mod:`heliograph.testing.content`
(formulas) and :mod:`heliograph.testing.anthropic_api` (prompt caching).

Failures are scripted per request with the ``X-Fake-Scenario`` header (comma-separated items,
values URL-decoded; unknown items are a 400):

    status=<code>        answer that status with a provider-shaped error body; a 429 also
                         sends ``retry-after: 1`` unless ``retry-after`` is given
    fail-times=<n>       fail only the first n requests with the same ``X-Fake-Key`` header
                         (or, without one, the same scenario string); status defaults to 500
    retry-after=<s>      ``retry-after`` header on the error response
    retry-after-ms=<ms>  ``retry-after-ms`` header on the error response (the SDKs prefer it)
    delay=<ms>           wait before sending the response headers
    chunk-delay=<ms>     wait between stream chunks
    stall-after=<n>      after n stream chunks, pause ``stall=<ms>`` (default 60000)
    drop-after=<n>       after n stream chunks, close the connection mid-body
    no-usage             leave usage out everywhere, streamed or not
    cached=<n>           n cached prompt tokens (OpenAI cached_tokens, Anthropic cache reads)
    cache-write=<n>      n cache-creation tokens (Anthropic; Responses cache_write_tokens)
    model=<name>         answer as this model
    reply=<text>         reply exactly this text
    gzip                 gzip a JSON answer when the request's accept-encoding allows it

A stream chunk is one SSE event, ``data: [DONE]`` included.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from heliograph.testing import anthropic_api, openai_api, responses_api
from heliograph.testing.content import RequestError, make_answer
from heliograph.testing.replies import (
    Call,
    authorized,
    default_model,
    error,
    include_usage,
    json_response,
    scripted_error,
    stream,
)
from heliograph.testing.scenario import Scenario, ScenarioError, parse_scenario

__all__ = ["FakeUpstream", "ReceivedRequest"]

# A stalled stream must not hold up stop() for long; clients see the connection close.
SHUTDOWN_TIMEOUT = 1.0
MAX_BODY = 64 * 1024 * 1024


@dataclass(slots=True)
class ReceivedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # parsed body, or None when empty or not JSON


_Handler = Callable[[Call], Awaitable[web.StreamResponse]]


class FakeUpstream:
    """The fake provider. ``start()`` serves from a background thread; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, record_requests: bool = True) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self.requests: list[ReceivedRequest] = []
        self._record = record_requests
        self._lock = threading.Lock()
        self._fail_counts: dict[str, int] = {}
        self._cache_seen: set[bytes] = set()
        self._ids = itertools.count(1)
        # Keeps ids unique across instances, e.g. two fakes behind one gateway.
        self._tag = secrets.token_hex(3)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Suffix → (method, handler, Anthropic-shaped errors). "/chat/completions" must come
        # before "/completions" since both end the same way.
        self._routes: tuple[tuple[str, str, _Handler, bool], ...] = (
            ("/chat/completions", "POST", self._chat, False),
            ("/completions", "POST", self._completions, False),
            ("/embeddings", "POST", self._embeddings, False),
            ("/responses", "POST", self._responses, False),
            ("/models", "GET", self._models, False),
            ("/messages", "POST", self._messages, True),
            ("/messages/count_tokens", "POST", self._count_tokens, True),
        )

    # --- lifecycle --------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application, e.g. for ``aiohttp.web.run_app(fake.app())``."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start_async(self) -> FakeUpstream:
        """Serve on the running event loop (for async code); ``start()`` is the threaded twin."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        host = f"[{self.host}]" if family == socket.AF_INET6 else self.host
        self.url = f"http://{host}:{self.port}"
        # handler_cancellation: a client hanging up on a stalled stream ends its handler too.
        runner = web.AppRunner(
            self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        await web.SockSite(runner, sock, backlog=1024).start()
        self._runner = runner
        return self

    async def stop_async(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def start(self) -> FakeUpstream:
        """Serve from a background thread with its own event loop; returns once listening."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already started")
        # Even the start-up runs in the thread, so start() also works from async code whose
        # own loop is running in the calling thread.
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._serve_forever, args=(loop, ready, failure), name="fake-upstream", daemon=True
        )
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._loop, self._thread = loop, thread
        return self

    def _serve_forever(
        self, loop: asyncio.AbstractEventLoop, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = self._loop = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def clear(self) -> None:
        """Forget received requests, ``fail-times`` counters and the Anthropic prompt cache."""
        with self._lock:
            self.requests.clear()
            self._fail_counts.clear()
            self._cache_seen.clear()

    # --- dispatch ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        parsed: Any = None
        bad_json = False
        if raw:
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad_json = True
        if self._record:
            received = ReceivedRequest(
                method=request.method,
                path=request.path,
                query=request.query_string,
                headers={name.lower(): value for name, value in request.headers.items()},
                body=raw,
                json=parsed,
            )
            with self._lock:
                self.requests.append(received)

        request_id = f"{self._tag}{next(self._ids):010d}"
        path = request.path.rstrip("/")
        route = next((r for r in self._routes if path.endswith(r[0])), None)
        if route is None:
            return error(False, 404, f"Unknown request URL: {request.method} {request.path}", request_id)
        _, method, handler, anthropic = route
        headers = request.headers
        if method == "GET" and "anthropic-version" in headers:
            anthropic = True
        if request.method != method:
            return error(anthropic, 405, f"Method {request.method} not allowed on {request.path}", request_id)
        if not authorized(headers, anthropic):
            message = (
                "x-api-key header is required"
                if anthropic
                else "You didn't provide an API key. Provide it in an Authorization header using Bearer auth."
            )
            return error(anthropic, 401, message, request_id)

        scenario = None
        scenario_header = headers.get("x-fake-scenario")
        if scenario_header:
            try:
                scenario = parse_scenario(scenario_header)
            except ScenarioError as exc:
                return error(anthropic, 400, str(exc), request_id)
            if scenario.delay_ms:
                await asyncio.sleep(scenario.delay_ms / 1000)
            if scenario.fails and self._should_fail(headers.get("x-fake-key") or scenario_header, scenario):
                return scripted_error(anthropic, scenario, request_id)

        if method == "POST" and not isinstance(parsed, dict):
            reason = "is not valid JSON" if bad_json else "must be a JSON object"
            return error(anthropic, 400, f"The request body {reason}.", request_id)
        call = Call(request, parsed or {}, raw, scenario, request_id, anthropic)
        try:
            return await handler(call)
        except RequestError as exc:
            return error(anthropic, 400, str(exc), request_id)

    def _should_fail(self, key: str, scenario: Scenario) -> bool:
        if scenario.fail_times is None:
            return True
        with self._lock:
            count = self._fail_counts.get(key, 0) + 1
            self._fail_counts[key] = count
        return count <= scenario.fail_times

    # --- routes -----------------------------------------------------------------------------

    async def _chat(self, call: Call) -> web.StreamResponse:
        answer = make_answer(openai_api.chat_prompt(call.body, default_model(call.request)), call.scenario)
        created = int(time.time())
        if call.body.get("stream") is True:
            frames = openai_api.chat_frames(answer, call.request_id, created, include_usage(call.body))
            return await stream(call, frames)
        return json_response(call, openai_api.chat_body(answer, call.request_id, created))

    async def _completions(self, call: Call) -> web.StreamResponse:
        answer = make_answer(openai_api.completion_prompt(call.body, default_model(call.request)), call.scenario)
        created = int(time.time())
        if call.body.get("stream") is True:
            frames = openai_api.completion_frames(answer, call.request_id, created, include_usage(call.body))
            return await stream(call, frames)
        return json_response(call, openai_api.completion_body(answer, call.request_id, created))

    async def _embeddings(self, call: Call) -> web.StreamResponse:
        scenario = call.scenario
        model_override = scenario.model if scenario is not None else None
        body = openai_api.embeddings_body(call.body, default_model(call.request), model_override)
        if scenario is not None and scenario.no_usage:
            del body["usage"]
        return json_response(call, body)

    async def _responses(self, call: Call) -> web.StreamResponse:
        answer = make_answer(responses_api.response_prompt(call.body, default_model(call.request)), call.scenario)
        created = int(time.time())
        if call.body.get("stream") is True:
            return await stream(call, responses_api.response_frames(answer, call.request_id, created, call.body))
        return json_response(call, responses_api.response_body(answer, call.request_id, created, call.body))

    async def _models(self, call: Call) -> web.StreamResponse:
        return json_response(call, openai_api.models_body(call.anthropic))

    async def _messages(self, call: Call) -> web.StreamResponse:
        answer = make_answer(anthropic_api.message_prompt(call.body), call.scenario, preamble=True)
        scripted = call.scenario is not None and (
            call.scenario.cached is not None or call.scenario.cache_write is not None
        )
        # The substring test keeps hashing off the path of requests that do not cache.
        if not scripted and b"cache_control" in call.raw:
            prefix = anthropic_api.cache_prefix(call.body)
            if prefix is not None:
                key, tokens = prefix
                with self._lock:
                    seen = key in self._cache_seen
                    self._cache_seen.add(key)
                if seen:
                    answer.cache_read = tokens
                else:
                    answer.cache_write = tokens
        if call.body.get("stream") is True:
            return await stream(call, anthropic_api.message_frames(answer, call.request_id))
        return json_response(call, anthropic_api.message_body(answer, call.request_id))


    async def _count_tokens(self, call: Call) -> web.StreamResponse:
        prompt = anthropic_api.message_prompt(call.body, counting=True)
        return json_response(call, {"input_tokens": prompt.prompt_tokens})
