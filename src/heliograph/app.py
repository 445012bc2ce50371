"""Composition root: build the store, recorder, proxy and API from settings, once.

Requests under /api, the ops endpoints and the landing page go to a Starlette app; every other
path is a proxied call and goes straight to the proxy's ASGI handler, with no framework between.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .api import api_routes
from .pricing import parse_overrides
from .proxy.auth import KeyCache
from .proxy.handler import Proxy
from .proxy.metrics import ProxyMetrics
from .proxy.relay import Receive, Scope, Send
from .recording.journal import Journal
from .recording.recorder import Recorder
from .retention import RetentionRunner
from .settings import Settings
from .state import open_state
from .storage import Store, open_store

log = logging.getLogger("heliograph")

NOT_PROXIED = ("/api/", "/healthz", "/readyz", "/metrics")

LANDING = """<!doctype html><meta charset="utf-8"><title>Heliograph</title>
<h1>Heliograph</h1><p>The gateway is running. Point an SDK's base URL at
<code>/openai/v1</code>, <code>/anthropic</code> or another provider prefix and send
<code>Helicone-Auth: Bearer &lt;key&gt;</code>.</p>
<ul><li><a href="/healthz">/healthz</a></li><li><a href="/readyz">/readyz</a></li>
<li><a href="/metrics">/metrics</a></li></ul>"""


class Heliograph:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store = open_store(settings.db_url)
        self.registry = CollectorRegistry()
        self.keys = KeyCache(self.store.active_keys)
        self.recorder = Recorder(
            self.store.insert_requests, Journal(settings.journal_path),
            overrides=parse_overrides(settings.prices), queue_size=settings.recorder_queue_size,
            batch_size=settings.recorder_batch_size, flush_ms=settings.recorder_flush_ms,
            drain_timeout=settings.drain_timeout)
        self.state = open_state(settings.redis_url or None, key_prefix=settings.redis_key_prefix)
        self.proxy = Proxy(settings, self.keys, self.recorder.submit, ProxyMetrics(self.registry), self.state)
        Gauge("heliograph_recorder_queue_depth", "Records waiting to be written.",
              registry=self.registry).set_function(lambda: self.recorder.queue_depth)
        Gauge("heliograph_journal_bytes", "Size of the disk journal of records waiting for the store.",
              registry=self.registry).set_function(lambda: self.recorder.journal.size_bytes())
        Gauge("heliograph_recorder_written", "Records written to the store since start.",
              registry=self.registry).set_function(lambda: self.recorder.written)
        Gauge("heliograph_recorder_internal_errors", "Records the recorder could not parse (stored without bodies).",
              registry=self.registry).set_function(lambda: self.recorder.internal_errors)
        self.web = Starlette(routes=[
            Route("/", self.landing),
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", self.metrics),
            *api_routes(self.store, self.keys, self.recorder.submit),
        ])
        self._tasks: list[asyncio.Task[None]] = []
        self.retention = RetentionRunner(
            self.store, body_days=settings.body_retention_days, metrics_days=settings.metrics_retention_days,
            interval_s=settings.retention_interval_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == "/" or path.startswith(NOT_PROXIED):
                await self.web(scope, receive, send)
            else:
                await self.proxy(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.web(scope, receive, send)

    async def startup(self) -> None:
        await asyncio.to_thread(self.store.migrate)
        await self.state.check()
        await self.keys.reload()
        await self.proxy.start()
        self.recorder.start()
        self.retention.start()
        self._tasks.append(asyncio.create_task(self.keys.run_reloads()))

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.proxy.close()
        await asyncio.to_thread(self.retention.stop)     # before the store closes under it
        await asyncio.to_thread(self.recorder.close)
        await self.state.close()
        self.store.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def landing(self, request: Request) -> Response:
        return HTMLResponse(LANDING)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        problems: dict[str, Any] = {}
        try:
            await asyncio.to_thread(self.store.ping)
        except Exception as exc:
            problems["store"] = str(exc)
        try:
            await self.state.check()
        except Exception as exc:
            problems["state"] = str(exc)
        if self.recorder.journal.size_bytes():
            problems["journal"] = "records are waiting for the store"
        status = 503 if "store" in problems or "state" in problems else 200
        return JSONResponse({"status": "ready" if status == 200 else "unavailable", **problems}, status_code=status)

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings) -> Heliograph:
    return Heliograph(settings)
