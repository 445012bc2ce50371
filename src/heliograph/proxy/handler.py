"""The proxy as an ASGI app: route, authenticate, prepare, forward, relay, record."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from ..budgets import BudgetCache
from ..errors import (BadRequest, BudgetExceeded, GatewayError, NotFound, PayloadTooLarge, RequestTimeout,
                      Unavailable, UpstreamTimeout)
from ..pricing import parse_overrides
from ..prompts import PromptError, PromptRegistry, RegistryUnavailable
from ..prompts import render as prompts
from ..recording.ids import RequestIds, new_request_id
from ..recording.record import MAX_PROPERTIES, UNRECORDED_HEADERS, RawRecord, helicone_problem, redact_url
from ..settings import Settings
from ..state import State
from . import budgets, caching, limiting, routes
from . import forward as forward_
from ..auth import DEFAULT_PROJECT, KEY_PREFIX, KeyCache, KeyInfo
from .metrics import ProxyMetrics
from .context import Call, Receive, Scope, Send
from .relay import relay

log = logging.getLogger("heliograph.proxy")

# Not forwarded: they describe one hop, or the client's connection to us.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length", b"accept-encoding",
})
CREDENTIAL_HEADERS = (b"authorization", b"x-api-key", b"api-key")
PREFIX_BYTES = KEY_PREFIX.encode()
# Encodings the recorder can undo to read usage; others are not offered upstream.
ACCEPTED_ENCODINGS = frozenset({"gzip", "deflate", "identity"})
USAGE_INJECTABLE = (b"/chat/completions", b"/completions")
NO_KEYS: Mapping[str, str] = {}
# allow_unauthenticated on loopback: calls without Helicone-Auth go to the default project.
ANONYMOUS = KeyInfo("", DEFAULT_PROJECT, "proxy")
# An in-process call (the dashboard's prompt playground, app.py) carries its key here; servers never
# put this in a scope, so a client cannot.
KEY_IN_SCOPE = "heliograph.key"
# Refusals named in X-Helicone-Error, as Helicone names them.
SIGNALLED_ERRORS = frozenset({"rate_limited", "budget_exceeded"})


@dataclass(slots=True)
class Route:
    provider: routes.Provider
    upstream_url: str


class Proxy:
    def __init__(self, settings: Settings, keys: KeyCache, submit: Callable[[RawRecord], None],
                 metrics: ProxyMetrics, state: State, ids: RequestIds | None = None,
                 budgets: BudgetCache | None = None,
                 project_keys: Callable[[str], Mapping[str, str]] | None = None,
                 prompts: PromptRegistry | None = None) -> None:
        self.providers = routes.with_overrides(dict(settings.upstreams))
        self.provider_keys = dict(settings.provider_keys)
        # A project's own provider keys (vault.py, in memory), before the deployment's provider_keys.
        self.project_keys = project_keys or (lambda project: NO_KEYS)
        self.gateway_allow = frozenset(settings.gateway_allow)
        self.require_auth = not settings.allow_unauthenticated
        self.tracing = bool(settings.otel_endpoint)     # span ids decided here; the span made by the recorder
        self.body_clock = BodyClock(settings.body_timeout)
        self.max_body = settings.max_request_body_bytes
        self.keys = keys
        self.submit = submit
        self.ids = ids or RequestIds()
        self.metrics = metrics
        self.timeout = aiohttp.ClientTimeout(total=None, connect=settings.upstream_connect_timeout,
                                             sock_read=settings.upstream_read_timeout)
        self.session: aiohttp.ClientSession | None = None
        self.state = state
        self.budgets = budgets or BudgetCache(list)     # none: the stage is one empty-dict lookup
        self.prompts = prompts                          # none: prompt headers are only recorded
        self.overrides = parse_overrides(settings.prices)
        openai = self.providers["openai"]
        self.embedder = caching.Embedder(openai.origin, settings.semantic_cache_model,
                                         self.provider_keys.get("openai"))
        self._tasks: set[asyncio.Task[None]] = set()
        self._body_clock_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        # auto_decompress off: bodies go back to the client byte for byte.
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, timeout=self.timeout,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"))
        self._body_clock_task = asyncio.create_task(self.body_clock.run())

    async def close(self) -> None:
        if self._body_clock_task is not None:
            self._body_clock_task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self.session is not None:
            await self.session.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = Call(scope, receive, send, family=_family_hint(scope["path"]))
        if not await self._authenticate(call):
            return
        try:
            await self._prepare(call)
        except GatewayError as exc:
            await self._refuse(call, exc, "refused")
            self._finish_refused(call, exc.status)
            return
        try:
            if await self._answer_from_cache(call):
                return
            await self._limit(call)
            await self._budget(call)
            await self._forward(call)
        except limiting.RateLimited as exc:
            await self._refuse(call, exc, "rate_limited")
        except BudgetExceeded as exc:
            await self._refuse(call, exc, "budget_exceeded")
        except GatewayError as exc:
            await self._refuse(call, exc, "refused")
        except asyncio.CancelledError:
            self._cut_at_shutdown(call)
            raise
        except Exception as exc:
            await self._internal_error(call, exc)
        finally:
            self._finish(call)

    # -- the stages, in order ------------------------------------------------------------------

    async def _authenticate(self, call: Call) -> bool:
        """Helicone-Auth → key id; from here on the call has a record. False: answered with a 401."""
        scope = call.scope
        call.forward, call.helicone, call.path = _split_headers(scope["headers"], scope["path"])
        call.family = _family_hint(call.path)
        key = ANONYMOUS
        given = scope.get(KEY_IN_SCOPE)
        try:
            if isinstance(given, KeyInfo):      # an in-process call made for a logged-in dashboard user
                key = given
            elif self.require_auth or "helicone-auth" in call.helicone:
                key = await self.keys.authenticate(call.helicone.get("helicone-auth"))
        except GatewayError as exc:
            call.request_id = new_request_id()  # for the client's logs; nothing is recorded
            await call.error(exc)
            self.metrics.observe_refused(exc.status)
            return False
        call.query = ("?" + scope["query_string"].decode("latin-1")) if scope["query_string"] else ""
        call.request_id = await self.ids.claim(call.helicone.get("helicone-request-id"))
        call.record = RawRecord(
            id=call.request_id, created_at=time.time(), provider=_provider_hint(call.path), family=call.family,
            method=scope["method"], path=redact_url(call.path + call.query), target_url="", key_id=key.id or None,
            helicone=call.helicone, request_body=b"", project_id=key.project_id)
        call.key = key
        return True

    async def _prepare(self, call: Call) -> None:
        """Route, check the Helicone-* headers, read the body, plan the cache and the targets."""
        helicone, record = call.helicone, call.record
        assert record is not None
        if self.tracing:
            _trace(call.forward, record)
        replaces_primary = call.path.startswith("/gateway/") and "helicone-fallbacks" in helicone
        route = None if replaces_primary else self._route(call.path, call.query, helicone)
        call.family = record.family = route.provider.family if route else call.family
        if problem := helicone_problem(helicone):
            raise BadRequest(problem + ".")
        call.retry = forward_.parse_retry(helicone)
        body = record.request_body = await _read_body(call.receive, self.body_clock, self.max_body)
        if self.prompts is not None and prompts.wanted(helicone, body, call.path):
            body = await self._render_prompt(call, self.prompts, body)
        upstream_url = route.upstream_url if route else call.path + call.query
        call.body, call.strip_usage = _inject_stream_usage(upstream_url, body, helicone)
        if caching.wants_cache(helicone):
            call.incoming = {**_header_map(call.scope["headers"]), **helicone}
            call.cache_url = _incoming_url(call.scope, call.incoming, call.path + call.query)
            call.cache_plan = caching.plan(call.incoming, call.cache_url, call.body)
        assert call.key is not None
        call.targets = self._targets(route, call.path, call.query, call.forward, call.body, helicone,
                                     not call.strip_usage, self._held_keys(call.key.project_id))
        _unrecord(helicone)     # the auth is in the cache key above; credentials are never in a record
        first = call.targets[0]
        record.provider, record.family, record.target_url = first.provider.name, first.provider.family, redact_url(first.url)
        record.request_body = call.body

    async def _render_prompt(self, call: Call, registry: PromptRegistry, body: bytes) -> bytes:
        """A prompt's version compiled into the body (prompts/render.py); before the cache key, so
        the rendered request is what is cached and sent."""
        assert call.key is not None and call.record is not None
        try:
            rendered = await prompts.render(registry, call.key.project_id, call.key.id or None, call.helicone, body)
        except PromptError as exc:
            raise BadRequest(str(exc)) from None
        except RegistryUnavailable as exc:
            raise Unavailable(f"The prompt registry is unavailable: {exc}; try again shortly.") from None
        if rendered is None:
            return body
        record = call.record
        record.prompt_id, record.prompt_version, record.prompt_inputs = (rendered.prompt_id, rendered.version_id,
                                                                         rendered.inputs)
        if rendered.legacy:     # as Helicone: each input also a property, Helicone-Prompt-Input-<key>
            room = MAX_PROPERTIES - sum(1 for name in call.helicone if name.startswith("helicone-property-"))
            for name, value in list(rendered.inputs.items())[:max(0, room)]:
                call.helicone.setdefault(f"helicone-property-helicone-prompt-input-{name.lower()}", str(value))
        return rendered.body

    async def _answer_from_cache(self, call: Call) -> bool:
        plan = call.cache_plan
        if plan is None or not plan.settings.read:
            return False
        assert call.key is not None
        embed = self._embedder_for(call.incoming, call.targets[0], self._held_keys(call.key.project_id))
        hit = await caching.find(self.state.cache, plan, embed, call.cache_url, call.body, call.incoming)
        if hit is not None:
            assert call.record is not None
            base, body = caching.replay(hit, call.record, call.strip_usage)
            await call.respond(200, call.response_headers(base, success=True, overhead_ms=call.elapsed_ms()), body)
            return True
        call.headers += [(b"helicone-cache", b"MISS"), (b"helicone-cache-hit", b"false")]
        return False

    async def _limit(self, call: Call) -> None:
        if "helicone-ratelimit-policy" in call.helicone:
            assert call.key is not None
            call.limit_plan = await limiting.check(self.state.limiter, call.key.project_id, call.helicone, call.body,
                                                   call.headers)

    async def _budget(self, call: Call) -> None:
        """Refuse a call whose budget is spent; otherwise plan its charge (budgets.py)."""
        assert call.key is not None
        call.budget_plan = await budgets.check(self.budgets, self.state.budgets, call.key, call.helicone, call.body,
                                               call.headers)

    async def _forward(self, call: Call) -> None:
        """Call upstream (retries, fallbacks) and relay the answer."""
        assert self.session is not None and call.record is not None
        record, targets = call.record, call.targets
        sent_at = time.perf_counter()
        if len(targets) == 1 and call.retry is None:
            outcome = await forward_.send_once(self.session, call.scope["method"], targets[0])
        else:
            outcome = await forward_.send(self.session, call.scope["method"], targets, call.retry)
        target = outcome.target
        record.provider, record.family = target.provider.name, target.provider.family
        record.target_url = redact_url(target.url)
        record.fallback_index = target.fallback_index
        record.attempts = outcome.attempts
        if outcome.response is None:
            assert outcome.error is not None
            record.error = "upstream_timeout" if isinstance(outcome.error, UpstreamTimeout) else "upstream_unavailable"
            log.warning("request %s: %s (%s after %d attempts)", call.request_id, outcome.error.message,
                        record.error, max(1, len(outcome.attempts)))
            await call.error(outcome.error)
            return
        answered_at = time.perf_counter()
        record.upstream_ms = (answered_at - sent_at) * 1000
        await relay(call, outcome.response, target, (sent_at - call.started) * 1000, answered_at,
                    call.strip_usage and target.translate is None)
        # An answer in another API family than the client's cannot be replayed to it.
        if target.translate is None:
            call.upstream_headers = list(outcome.response.raw_headers)

    def _finish(self, call: Call) -> None:
        """Exactly one record per call; then, off the client's path, the cache save and cent charge."""
        record = call.record
        assert record is not None
        record.latency_ms = call.elapsed_ms()
        self.submit(record)
        self.metrics.observe(record)
        if call.cache_plan is not None and call.upstream_headers is not None:
            self._background(caching.save(self.state.cache, call.cache_plan, record, call.upstream_headers))
        if call.limit_plan is not None:
            self._background(limiting.charge_cost(self.state.limiter, call.limit_plan, record, self.overrides))
        if call.budget_plan is not None:
            self._background(budgets.charge(self.state.budgets, call.budget_plan, record, self.overrides))

    # -- ways a call ends early ----------------------------------------------------------------

    async def _refuse(self, call: Call, exc: GatewayError, error: str) -> None:
        """A refusal after authentication: answered in the SDK's shape, recorded with its reason."""
        assert call.record is not None
        _unrecord(call.helicone)
        call.record.error = error
        extra = [(b"x-helicone-error", error.encode())] if error in SIGNALLED_ERRORS else []
        if isinstance(exc, BudgetExceeded):     # only the period's end helps: SDKs must not retry
            extra += [(b"x-should-retry", b"false"), (b"retry-after", b"%d" % exc.retry_after_seconds)]
        await call.error(exc, extra=extra)

    def _finish_refused(self, call: Call, status: int) -> None:
        """A call refused before it had a provider: recorded, counted by status only."""
        assert call.record is not None
        call.record.latency_ms = call.elapsed_ms()
        self.submit(call.record)
        self.metrics.observe_refused(status)

    def _cut_at_shutdown(self, call: Call) -> None:
        # Shutdown's grace period is over: the call is recorded as cut, never as a success.
        assert call.record is not None
        call.record.error = call.record.error or "shutdown"
        if call.record.status == 0:
            call.record.status = 503

    async def _internal_error(self, call: Call, exc: Exception) -> None:
        # A bug of ours: counted, logged with its stack, and the client still gets an answer in its
        # SDK's shape if nothing was sent yet; never a bare 500 page.
        assert call.record is not None
        log.exception("internal error while proxying %s", call.request_id)
        call.record.error = "internal_error"
        if call.record.status == 0:
            await call.error(GatewayError(f"Heliograph failed to proxy this request ({type(exc).__name__}); "
                                          f"see the gateway log for {call.request_id}."))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _embedder_for(self, incoming: dict[str, str], target: forward_.Target,
                      held: Mapping[str, str]) -> Callable[[str], Awaitable[list[float]]] | None:
        embedder, session = self.embedder, self.session
        if session is None:
            return None
        # The client's own OpenAI key may pay for the embedding; any other provider's may not. Then
        # the OpenAI key the gateway holds for the project (its own, else the deployment's).
        credential = incoming.get("authorization") if target.provider.name == "openai" else None
        if credential is None and "openai" in held:
            credential = "Bearer " + held["openai"]

        async def embed(text: str) -> list[float]:
            return await embedder.embed(session, text, credential)
        return embed

    def _targets(self, route: Route | None, path: str, query: str, forward: list[tuple[bytes, bytes]],
                 body: bytes, helicone: dict[str, str], client_usage: bool,
                 held: Mapping[str, str]) -> list[forward_.Target]:
        targets: list[forward_.Target] = []
        if route is not None:
            _add_provider_key(route.provider, forward, held)
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in forward]
            targets.append(forward_.Target(route.provider, route.upstream_url, headers, body))
        if "helicone-fallback" in helicone:
            if route is None:
                raise BadRequest("Helicone-Fallback needs a provider route or Helicone-Target-URL.")
            targets += forward_.seed_fallbacks(helicone["helicone-fallback"], targets[0], self.providers,
                                               held, client_usage)
        elif "helicone-fallbacks" in helicone:
            rest = path.removeprefix("/gateway") if path.startswith("/gateway/") else "/" + path.split("/", 2)[-1]
            fallbacks = forward_.helicone_fallbacks(helicone["helicone-fallbacks"], rest + query,
                                                    self.gateway_allow, self.providers)
            forward_.apply_body(fallbacks, body)
            targets += fallbacks
        return targets

    def _route(self, path: str, query_string: str, helicone: dict[str, str]) -> Route:
        prefix, _, rest = path[1:].partition("/")
        rest = "/" + rest
        if prefix == "v1":
            prefix, rest = "openai", path
        if prefix == "gateway":
            target = helicone.get("helicone-target-url")
            if not target:
                raise BadRequest("Missing Helicone-Target-URL header: /gateway/* forwards to the origin it names.")
            found = routes.gateway_provider(target, self.gateway_allow, self.providers)
            if isinstance(found, str):
                raise BadRequest(found)
            provider = found
        elif prefix == "azure" or (prefix == "openai" and "helicone-openai-api-base" in helicone):
            api_base = helicone.get("helicone-openai-api-base", "")
            azure = routes.azure_origin(api_base)
            if not azure:
                raise BadRequest(f"Helicone-OpenAI-Api-Base {api_base!r} is not an Azure OpenAI endpoint "
                                 "(https://<resource>.openai.azure.com and the other Azure domains).")
            # An HELIOGRAPH_UPSTREAM_AZURE override (egress proxy, tests) wins over the resource.
            provider = routes.Provider("azure", self.providers["azure"].origin or azure, "openai")
        else:
            known = self.providers.get(prefix)
            if known is None:
                raise NotFound(routes.no_route(prefix, self.providers))
            provider = known
        return Route(provider, provider.origin + rest + query_string)

    def _held_keys(self, project: str) -> Mapping[str, str]:
        """The provider keys the gateway holds for a call of `project`: its own, then the deployment's."""
        own = self.project_keys(project)
        return {**self.provider_keys, **own} if own else self.provider_keys


def _add_provider_key(provider: routes.Provider, forward: list[tuple[bytes, bytes]], held: Mapping[str, str]) -> None:
    """A gateway-held provider key, used only when the request carries no credential of its own."""
    secret = held.get(provider.name)
    if secret is None or any(name in CREDENTIAL_HEADERS for name, _ in forward):
        return
    name, value = forward_.credential_header(provider, secret)
    forward.append((name.encode(), value.encode()))


def _trace(forward: list[tuple[bytes, bytes]], record: RawRecord) -> None:
    """W3C trace context: the client's traceparent (if valid) is our span's parent, and the provider
    gets our span as its parent instead; without one, this call starts a trace."""
    trace_id, parent, flags = "", "", "01"
    for index, (name, value) in enumerate(forward):
        if name == b"traceparent":
            del forward[index]
            parts = value.decode("latin-1").strip().lower().split("-")
            if (len(parts) >= 4 and len(parts[0]) == 2 and parts[0] != "ff" and len(parts[1]) == 32
                    and len(parts[2]) == 16 and len(parts[3]) == 2 and _hex(parts[1]) and _hex(parts[2])
                    and _hex("1" + parts[3])):
                trace_id, parent, flags = parts[1], parts[2], parts[3]
            break
    if not trace_id:
        trace_id = secrets.token_hex(16)
    span_id = secrets.token_hex(8)
    forward.append((b"traceparent", f"00-{trace_id}-{span_id}-{flags}".encode()))
    record.trace = f"{trace_id}-{span_id}-{parent}-{flags}"


def _hex(text: str) -> bool:
    """A non-zero hexadecimal number (W3C: all-zero ids are invalid)."""
    try:
        return int(text, 16) != 0
    except ValueError:
        return False


def _header_map(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}


def _incoming_url(scope: Scope, headers: dict[str, str], path_and_query: str) -> str:
    return f"{scope.get('scheme', 'http')}://{headers.get('host', '')}{path_and_query}"


def _unrecord(helicone: dict[str, str]) -> None:
    for name in UNRECORDED_HEADERS:
        helicone.pop(name, None)


def _provider_hint(path: str) -> str:
    """The provider a refused request was meant for, as far as its path says."""
    prefix = path[1:].partition("/")[0]
    return "openai" if prefix == "v1" else prefix[:40] or "unknown"


def _family_hint(path: str) -> str:
    return "anthropic" if path.startswith("/anthropic/") else "openai"


def _heliograph_key(value: bytes) -> str | None:
    token = value[7:] if value[:7].lower() == b"bearer " else value
    return token.strip().decode("latin-1") if token.startswith(PREFIX_BYTES) else None


def _split_headers(raw: list[tuple[bytes, bytes]], path: str) -> tuple[list[tuple[bytes, bytes]], dict[str, str], str]:
    """Headers to forward, the Helicone-* ones (lower-cased names), and the path without a key in it.

    A Heliograph key where the SDK puts the provider key (`OpenAI(api_key="sk-hg-…")`, Anthropic's
    x-api-key) is the call's Helicone-Auth and is not forwarded, so an application of a project
    with provider keys held by the gateway needs only its Heliograph key."""
    forward: list[tuple[bytes, bytes]] = []
    helicone: dict[str, str] = {}
    for name, value in raw:
        if name.startswith(b"helicone-"):
            helicone[name.decode("latin-1")] = value.decode("latin-1")
        elif name in CREDENTIAL_HEADERS and (key := _heliograph_key(value)):
            helicone.setdefault("helicone-auth", "Bearer " + key)
        elif name == b"accept-encoding":
            offered = [e for e in value.decode("latin-1").split(",") if e.split(";")[0].strip() in ACCEPTED_ENCODINGS]
            if offered:
                forward.append((name, ",".join(offered).strip().encode()))
        elif name not in HOP_BY_HOP:
            forward.append((name, value))
    if path.startswith("/" + KEY_PREFIX):
        key, _, rest = path[1:].partition("/")
        path = "/" + rest
        helicone.setdefault("helicone-auth", "Bearer " + key)
    return forward, helicone, path


class BodyClock:
    """The deadlines of the request bodies being read, checked by one task every `tick` seconds.

    A timer per request (`asyncio.timeout`) cost ~6 µs a call on the event loop; here a call pays
    for two dictionary writes, and a stalled body is cut between `timeout` and `timeout + tick`."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(1.0, timeout / 4)
        self.deadlines: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            for task, deadline in list(self.deadlines.items()):
                if deadline <= now:
                    del self.deadlines[task]
                    self.expired.add(task)
                    task.cancel()


async def _read_body(receive: Receive, clock: BodyClock, limit: int) -> bytes:
    """The whole request body: 408 when the client sends none of it for `clock.timeout` seconds
    (before the first chunk or between two), 413 past `limit` bytes, 400 when it hangs up half-way
    (a cut body is never forwarded)."""
    parts: list[bytes] = []
    size = 0
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    clock.deadlines[task] = loop.time() + clock.timeout
    try:
        while True:
            message = await receive()
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if limit and size > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit} bytes (max_request_body_bytes; "
                                      "HELIOGRAPH_MAX_REQUEST_BODY_BYTES allows more).")
            parts.append(chunk)
            if not message.get("more_body"):
                break
            clock.deadlines[task] = loop.time() + clock.timeout
    except asyncio.CancelledError:
        if task not in clock.expired:
            raise
        clock.expired.discard(task)
        task.uncancel()
        raise RequestTimeout("The request body stopped arriving: nothing was received for "
                             f"{clock.timeout:g} s.") from None
    finally:
        clock.deadlines.pop(task, None)
    if message["type"] == "http.disconnect":
        raise BadRequest("The client closed the connection before sending the whole request body.")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _inject_stream_usage(url: str, body: bytes, helicone: dict[str, str]) -> tuple[bytes, bool]:
    """Ask OpenAI-style streams for usage; say whether the client must not see the usage chunk.

    Only bodies that mention "stream" on completion endpoints are parsed at all.
    """
    forced = helicone.get("helicone-stream-usage", "").lower() == "true"
    if b'"stream"' not in body and not forced:
        return body, False
    path = url.split("?", 1)[0].encode()
    if not path.endswith(USAGE_INJECTABLE):
        return body, False
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body, False
    if not isinstance(payload, dict) or (payload.get("stream") is not True and not forced):
        return body, False
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return body, False
    payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps(payload), not forced and payload.get("stream") is True
