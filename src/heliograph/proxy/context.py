"""One proxied call on its way through the stages (see `proxy/__init__.py`).

`Call` carries what the client asked, what each stage decided and what was answered, so a
stage is a method taking the call rather than a function of ten arguments. It is also the one
place that builds response headers (`response_headers`) and that knows whether the response has
started (`respond`, `error`): after the first byte an error can only end the stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..auth import KeyInfo
from ..errors import GatewayError
from ..recording.record import RawRecord

if TYPE_CHECKING:
    from .budgets import BudgetPlan
    from .caching import CachePlan
    from .forward import RetryPolicy, Target
    from .limiting import LimitPlan

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Header = tuple[bytes, bytes]

log = logging.getLogger("heliograph.proxy")


@dataclass(slots=True)
class Call:
    scope: Scope
    receive: Receive
    send: Send
    started: float = field(default_factory=time.perf_counter)
    family: str = "openai"              # the client's API family: the shape of its errors
    request_id: str = ""
    key: KeyInfo | None = None          # who is calling: its project scopes the record, limits, budgets
    path: str = ""                      # without a key in it
    query: str = ""                     # "?…" or ""
    forward: list[Header] = field(default_factory=list)        # request headers for the upstream
    helicone: dict[str, str] = field(default_factory=dict)     # Helicone-* request headers
    record: RawRecord | None = None     # from authentication on: every answer is recorded
    body: bytes = b""
    strip_usage: bool = False           # the usage chunk was asked for by us, not the client
    retry: RetryPolicy | None = None
    targets: list[Target] = field(default_factory=list)       # primary first, then fallbacks
    incoming: dict[str, str] = field(default_factory=dict)    # all request headers, for the cache key
    cache_url: str = ""
    cache_plan: CachePlan | None = None
    limit_plan: LimitPlan | None = None
    budget_plan: BudgetPlan | None = None                     # the counters to charge once answered
    upstream_headers: list[Header] | None = None              # of an answer that may be cached
    headers: list[Header] = field(default_factory=list)       # response headers added by stages
    responded: bool = False

    def response_headers(self, base: Sequence[Header], *, success: bool, overhead_ms: float,
                         upstream_ms: float = 0.0) -> list[Header]:
        """`base` (the upstream's, filtered, or ours) plus what every proxied answer carries."""
        headers = [*base, *self.headers]
        record = self.record
        if record is not None and record.fallback_index is not None:
            headers.append((b"helicone-fallback-index", str(record.fallback_index).encode()))
        if self.request_id:
            headers.append((b"helicone-id", self.request_id.encode()))
        if success:
            headers.append((b"helicone-status", b"success"))
        headers.append((b"server-timing", f"gateway;dur={overhead_ms:.3f}, upstream;dur={upstream_ms:.3f}".encode()))
        return headers

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    async def respond(self, status: int, headers: list[Header], body: bytes | None = None) -> None:
        """Start the response (and send a whole body, when given)."""
        self.responded = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        if body is not None:
            await self.send({"type": "http.response.body", "body": body})

    async def error(self, exc: GatewayError, *, extra: Sequence[Header] = ()) -> None:
        """Answer `exc` in the client's SDK shape; recorded as the call's answer when there is a record."""
        body = exc.body(self.family)
        if self.record is not None:
            self.record.status, self.record.response_body = exc.status, body
        if self.responded:
            log.warning("%s after the response started for %s; the client sees the stream end",
                        type(exc).__name__, self.request_id)
            return
        base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
        if exc.close_connection:
            base.append((b"connection", b"close"))
        await self.respond(exc.status, self.response_headers(base, success=False, overhead_ms=self.elapsed_ms()),
                           body)
