"""Run the app under uvicorn (uvloop + httptools), with graceful SIGTERM handling.

On SIGTERM uvicorn stops accepting, lets in-flight requests finish, then runs the lifespan
shutdown, where the recorder drains to the store (or the journal). With several workers each
process has its own recorder and journal; shared state lives in Redis.

uvicorn's httptools protocol waits forever for a request's headers and has no bound on open
connections, so idle or slow clients could use up the open-file limit; `GuardedHttpToolsProtocol`
adds a header timeout and `max_connections`. (Body stalls are timed out by the proxy itself.)
"""

from __future__ import annotations

import dataclasses
import asyncio
import logging
import os
import resource
import time
from pathlib import Path
from typing import Any, ClassVar

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from .app import Heliograph, create_app
from .errors import BadRequest, Overloaded, RequestTimeout
from .ops.banner import print_banner
from .ops.logs import log_config, setup_logging
from .ops.metrics import MULTIPROC_ENV, prepare_multiprocess
from .ops.tuning import claim_core
from .settings import Settings

log = logging.getLogger("heliograph.server")

SETTINGS_ENV = "HELIOGRAPH_RESOLVED_SETTINGS"


def run(settings: Settings) -> None:
    setup_logging(settings)
    print_banner(settings)
    GuardedHttpToolsProtocol.configure(settings)
    # uvicorn's own access log is off: Heliograph writes one line per proxied call from the recorder.
    common = dict(host=settings.host, port=settings.port, loop="uvloop", http=GuardedHttpToolsProtocol,
                  lifespan="on", timeout_keep_alive=settings.keep_alive_timeout, log_config=log_config(settings),
                  access_log=False, log_level=settings.log_level, timeout_graceful_shutdown=graceful_seconds(settings),
                  server_header=False, date_header=False, proxy_headers=False)
    if settings.workers == 1:
        uvicorn.Server(uvicorn.Config(create_app(settings), **common)).run()  # type: ignore[arg-type]
        return
    # Every worker's metrics in files, summed at each scrape (ops/metrics.py).
    prepare_multiprocess(settings)
    # Worker processes rebuild the app from the settings resolved here, so they all agree.
    os.environ[SETTINGS_ENV] = orjson.dumps(dataclasses.asdict(settings)).decode()
    uvicorn.run("heliograph.server:app_from_environment", factory=True, workers=settings.workers,
                **common)  # type: ignore[arg-type]


def graceful_seconds(settings: Settings) -> int:
    """What in-flight calls get of the shutdown budget; the recorder's drain takes the rest."""
    return max(1, int(settings.shutdown_timeout - settings.drain_timeout - 1))


def app_from_environment() -> Heliograph:
    values = orjson.loads(os.environ[SETTINGS_ENV])
    values["gateway_allow"] = tuple(values["gateway_allow"])
    values["custom_providers"] = tuple(values["custom_providers"])
    settings = Settings(**values)
    if settings.pinned_workers:     # before the app starts its threads, so they inherit the core
        claim_core(Path(os.environ[MULTIPROC_ENV]) / "cores", settings.workers)
    GuardedHttpToolsProtocol.configure(settings)  # in this worker process, where it serves
    return create_app(settings)


# Descriptors kept for everything but connections: the store, the journal, Redis, logs, DNS.
RESERVED_FILES = 128


def connection_budget(wanted: int) -> int:
    """`wanted` connections (0: as many as possible), lowered to what the open-file limit allows.

    Each connection may hold two descriptors (the client's and one to the provider). The soft
    limit is raised toward the hard one first, as far as needed: many systems start services
    with a soft limit of 1,024 and a far higher hard one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard if hard != resource.RLIM_INFINITY else 1 << 20  # Linux's default fs.nr_open
    needed = 2 * wanted + RESERVED_FILES if wanted else ceiling
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = min(needed, ceiling)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    usable = ceiling if soft == resource.RLIM_INFINITY else soft
    allowed = max(1, (usable - RESERVED_FILES) // 2)
    if wanted and allowed < wanted:
        # A warning only when it matters: a hard limit a little under the default is common.
        log.log(logging.WARNING if allowed < wanted // 2 else logging.INFO,
                "max_connections lowered from %d to %d: the open-file limit is %d (raise it with ulimit -n "
                "or LimitNOFILE=)", wanted, allowed, soft)
    return min(wanted, allowed) if wanted else allowed


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a header timeout and a bound on open connections.

    A connection is *idle* while no request of it is being served: just opened, kept alive
    between requests, or still sending headers. Idle connections are kept oldest first, and
    when `max_connections` are open the oldest is closed to make room for a new one; only when
    every connection is busy with a request is the new one refused (503). So idle sockets can
    neither exhaust the open files nor lock out real calls. The header clock starts when a
    connection opens, or at the first byte of a later request (before that, uvicorn's keep-alive
    timeout applies).
    """

    header_timeout: ClassVar[float] = 10.0
    max_header_bytes: ClassVar[int] = 65_536
    max_connections: ClassVar[int] = 10_000
    idle: ClassVar[dict[GuardedHttpToolsProtocol, None]] = {}  # insertion order = idle since
    _warned_at: ClassVar[float] = 0.0

    @classmethod
    def configure(cls, settings: Settings) -> None:
        cls.header_timeout = settings.header_timeout
        cls.max_header_bytes = settings.max_header_bytes
        cls.max_connections = connection_budget(settings.max_connections)

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_deadline: asyncio.TimerHandle | None = None
        self.request_begun = False
        self.header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            self._refuse()
            return
        self._become_idle()
        self._start_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._become_busy()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Bytes on an idle connection start the header clock (a new request, or the rest of a
        # body the gateway already answered without reading).
        if self.header_deadline is None and self in self.idle:
            self._start_header_clock()
        waiting_for_headers = self.header_deadline is not None
        super().data_received(data)
        if waiting_for_headers and self.header_deadline is not None:     # headers still incomplete
            self.header_bytes += len(data)
            if self.max_header_bytes and self.header_bytes > self.max_header_bytes:
                self._headers_too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.request_begun = True
        self.header_bytes = 0

    def on_headers_complete(self) -> None:
        self.request_begun = False
        self._become_busy()
        if self.max_header_bytes and sum(len(k) + len(v) for k, v in self.headers) > self.max_header_bytes:
            self._headers_too_large()
            return
        super().on_headers_complete()

    def _headers_too_large(self) -> None:
        self._become_busy()
        family = "anthropic" if self.url.startswith(b"/anthropic/") else "openai"
        error = BadRequest(f"The request headers are larger than {self.max_header_bytes} bytes "
                           "(max_header_bytes).", code="request_header_fields_too_large")
        self._write_and_close(431, b"Request Header Fields Too Large", error.body(family))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # waiting for the next request
            self._become_idle()

    def _become_idle(self) -> None:
        self.idle[self] = None

    def _become_busy(self) -> None:
        self.idle.pop(self, None)
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _start_header_clock(self) -> None:
        self.header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_late)

    def _headers_too_late(self) -> None:
        self.header_deadline = None
        if self.transport.is_closing():
            return
        if self.request_begun:
            family = "anthropic" if self.url.startswith(b"/anthropic/") else "openai"
            error = RequestTimeout(f"The request headers were not complete within {self.header_timeout:g} s.")
            self._write_and_close(error.status, b"Request Timeout", error.body(family))
        else:
            self.transport.close()

    def _make_room(self) -> bool:
        self._warn(f"max_connections ({self.max_connections}) reached: closing the longest-idle connections")
        while self.idle:
            oldest = next(iter(self.idle))
            oldest._become_busy()
            if not oldest.transport.is_closing():
                oldest.transport.close()
                return True
        return False

    def _refuse(self) -> None:
        self._warn(f"max_connections ({self.max_connections}) reached and every connection is in a request: "
                   "refusing new connections")
        error = Overloaded("The gateway has too many open connections; retry shortly.")
        self._write_and_close(error.status, b"Service Unavailable", error.body("openai"),
                              b"retry-after: %d\r\n" % error.retry_after_seconds)

    def _write_and_close(self, status: int, reason: bytes, body: bytes, extra: bytes = b"") -> None:
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"%sconnection: close\r\n\r\n%s" % (status, reason, len(body), extra, body))
        self.transport.close()

    @classmethod
    def _warn(cls, message: str) -> None:
        now = time.monotonic()
        if now - cls._warned_at > 60:
            cls._warned_at = now
            log.warning(message)
