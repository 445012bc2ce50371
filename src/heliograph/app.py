"""Composition root: build the store, recorder, proxy and API from settings, once.

Requests under /api, the ops endpoints and the dashboard (dashboard.PREFIXES and /) go to a Starlette app; every other
path is a proxied call and goes straight to the proxy's ASGI handler, with no framework between.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .alerts.delivery import DeliveryWorker
from .alerts.evaluator import AlertRunner
from .api import api_routes
from .dashboard import PREFIXES as DASHBOARD_PREFIXES
from .dashboard import Dashboard, dashboard_routes
from .errors import Overloaded
from .ops.metrics import VALUES, RecordMetrics, RuntimeMetrics, buffer_values, exposition, forget_worker, multiprocess_dir
from .ops.logs import log_config
from .ops.observe import CallObserver, SpanExporter
from .ops.tuning import settle_collector
from .pricing import parse_overrides
from .auth import KeyCache, KeyInfo
from .budgets import BudgetCache
from .prompts import PromptRegistry
from .proxy.handler import KEY_IN_SCOPE, Proxy
from .proxy.metrics import ProxyMetrics
from .proxy.context import Receive, Scope, Send
from .recording.ids import RequestIds, new_request_id
from .recording.journal import Journal
from .recording.process import Written, local_write
from .recording.record import RawRecord
from .recording.recorder import Recorder
from .retention import RetentionRunner
from .settings import Settings
from .state import open_state
from .storage import Store, StoreUnavailable, open_store
from .vault import ProviderKeys, VaultError, known_providers
from .writer import WriterProcess

log = logging.getLogger("heliograph")

READYZ_TIMEOUT = 0.9
JOURNAL_DEGRADED_AFTER = 30.0
NOT_PROXIED = ("/api/", "/healthz", "/readyz", "/metrics", *DASHBOARD_PREFIXES)


SWITCH_INTERVAL = 0.0005    # seconds a thread may hold the GIL while another waits for it (Python's default: 0.005)


class StartupError(Exception):
    """A reason not to start that a person can act on: said in one line, without a stack trace."""


class Heliograph:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store = open_store(settings.db_url)
        self.registry = CollectorRegistry()
        self.keys = KeyCache(self.store.active_keys)
        self.budgets = BudgetCache(self.store.list_budgets, self.store.budget_spend)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.runtime_metrics = RuntimeMetrics(self.registry)
        spans: SpanExporter | None = None
        if settings.otel_endpoint:
            from .ops.otel import OtelSpans     # the SDK is imported only when it is used
            spans = OtelSpans(settings.otel_endpoint, settings.otel_service_name)
        # Rows built and stored in a child process (writer.py): another core than the proxy's, another
        # GIL. It writes the access lines too; metrics and spans stay here.
        self.writer = (WriterProcess(settings.db_url, settings.prices, log_config(settings),
                                     key_name=self.keys.name_of if settings.access_log else None)
                       if settings.writer_process else None)
        self.observer = CallObserver(RecordMetrics(self.registry), self.runtime_metrics, self.keys.name_of,
                                     access=settings.access_log and self.writer is None, spans=spans)
        self.recorder = Recorder(
            self._write, Journal(settings.journal_path), queue_size=settings.recorder_queue_size,
            batch_size=settings.recorder_batch_size, flush_ms=settings.recorder_flush_ms,
            drain_timeout=settings.drain_timeout, unavailable=(StoreUnavailable,), observer=self.observer)
        # Written here, the rows are built and stored on the event loop's core: the recorder gives way.
        self._store_batch = (self.writer.write if self.writer is not None
                             else local_write(self.store.insert_requests, parse_overrides(settings.prices),
                                              self.recorder.give_way))
        self.state = open_state(settings.redis_url or None, key_prefix=settings.redis_key_prefix,
                                timeout=settings.redis_timeout_ms / 1000)
        self.ids = RequestIds(self.store.request_exists)
        self.proxy_metrics = ProxyMetrics(self.registry)
        # Provider keys projects store, decrypted in memory: the proxy reads them, never the store.
        self.provider_keys = ProviderKeys(self.store, settings.secret_key, known_providers(settings.upstreams))
        # Prompt versions in memory, refreshed from the store every second (prompts/registry.py).
        self.prompts = PromptRegistry(self.store)
        self.proxy = Proxy(settings, self.keys, self.recorder.submit, self.proxy_metrics, self.state,
                           self.ids, self.budgets, project_keys=self.provider_keys.keys_of, prompts=self.prompts)
        self.in_flight = 0
        self.max_in_flight = settings.max_in_flight or sys.maxsize
        # Alerts: every gateway sends from the outbox; the one holding the lease evaluates.
        self.deliveries = DeliveryWorker(self.store, settings)
        self.alerts = AlertRunner(self.store, settings, on_queued=self.deliveries.wake)
        self._runtime_metrics()
        self.dashboard = Dashboard(self.store, self.keys, settings, gateway_call=self.call_proxy)
        self.web = Starlette(routes=[
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", self.metrics),
            *api_routes(self.store, self.keys, self.recorder.submit, self.ids, provider_keys=self.provider_keys),
            *dashboard_routes(self.dashboard),
        ])
        self.web.state.dashboard = self.dashboard
        self._tasks: list[asyncio.Task[None]] = []
        self._ping: asyncio.Future[None] | None = None
        self.retention = RetentionRunner(
            self.store, body_days=settings.body_retention_days, metrics_days=settings.metrics_retention_days,
            interval_s=settings.retention_interval_seconds)

    def _runtime_metrics(self) -> None:
        m, recorder = self.runtime_metrics, self.recorder
        m.gauge("heliograph_in_flight", "Proxied requests in progress (max_in_flight bounds it, per worker).",
                lambda: self.in_flight)
        m.gauge("heliograph_recorder_queue_depth", "Records waiting to be written.", lambda: recorder.queue_depth)
        # Workers may share one journal folder: the largest any reports, not the sum.
        m.gauge("heliograph_journal_bytes", "Size of the disk journal of records waiting for the store.",
                recorder.journal.size_bytes, mode="livemax")
        m.counter("heliograph_records_written", "Records written to the store.", lambda: recorder.written)
        m.counter("heliograph_records_journaled", "Records that went to the disk journal (store down or slow).",
                  lambda: recorder.journaled)
        m.counter("heliograph_duplicate_request_ids", "Calls whose Helicone-Request-Id was already used; "
                  "each was recorded under a fresh id.", lambda: self.ids.reused + recorder.reassigned)
        m.counter("heliograph_records_rejected", "Records the store refused even clamped, kept in journal/rejected/.",
                  lambda: recorder.rejected)
        m.counter("heliograph_records_clamped", "Records stored with numbers clamped into range.",
                  lambda: recorder.clamped)
        # Alerts: one gateway holds the evaluator's lease (livesum: 1 across workers); every one sends.
        m.gauge("heliograph_alert_evaluator_leader", "1 while this process holds the lease of the alert evaluator.",
                lambda: int(self.alerts.leader))
        m.gauge("heliograph_alert_evaluation_seconds", "How long the last evaluation of every alert rule took.",
                lambda: self.alerts.last_duration, mode="livemax")
        m.counter("heliograph_notifications_sent", "Notifications and webhook calls delivered.",
                  lambda: self.deliveries.sent)
        m.counter("heliograph_notification_failures", "Failed attempts to deliver a notification or webhook call.",
                  lambda: self.deliveries.failed_attempts)
        m.counter("heliograph_recorder_internal_errors", "Records the recorder could not parse (stored without "
                  "bodies) or could not log or count.", lambda: recorder.internal_errors)

    async def _sync_metrics(self) -> None:
        """With several workers, each brings its gauges and totals up to date every second, so a
        scrape answered by any worker sees every worker's state within a second."""
        while True:
            await asyncio.sleep(1.0)
            self.runtime_metrics.sync()
            VALUES.flush()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == "/" or path.startswith(NOT_PROXIED):
                await self.web(scope, receive, send)
            elif self.in_flight >= self.max_in_flight:
                await self._shed(path, send)
            else:
                self.in_flight += 1
                try:
                    await self.proxy(scope, receive, send)
                finally:
                    self.in_flight -= 1
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.web(scope, receive, send)

    async def call_proxy(self, key: KeyInfo, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """A POST through the proxy, in process, as `key` (no Helicone-Auth needed): recorded like any
        call. The provider credential is the one the gateway holds for the key's project."""
        scope: dict[str, Any] = {
            "type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
            "raw_path": path.encode(), "root_path": "", "query_string": b"", "server": ("127.0.0.1", 0),
            "client": ("127.0.0.1", 0), "headers": [(b"content-type", b"application/json")], KEY_IN_SCOPE: key}
        delivered = False
        status, headers, chunks = 0, {}, []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()        # never disconnects; the proxy stops listening when done
            raise AssertionError("unreachable")

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers.update({k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])})
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.proxy(scope, receive, send)
        return status, headers, b"".join(chunks)

    async def _shed(self, path: str, send: Send) -> None:
        """Refuse at once rather than queue: past max_in_flight, every admitted call would only get
        slower. Before authentication, so nothing is recorded; counted in heliograph_shed."""
        self.proxy_metrics.shed.inc()
        error = Overloaded(f"The gateway is at capacity ({self.max_in_flight} requests in flight); "
                           f"retry in {Overloaded.retry_after_seconds} s.")
        body = error.body("anthropic" if path.startswith("/anthropic/") else "openai")
        await send({"type": "http.response.start", "status": error.status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
            (b"retry-after", b"%d" % error.retry_after_seconds), (b"helicone-id", new_request_id().encode())]})
        await send({"type": "http.response.body", "body": body})

    def _write(self, batch: Sequence[RawRecord]) -> Written:
        """The recorder's write (its thread); when the batch queued per-request webhook calls, the
        delivery worker is woken to send them now rather than at its next look."""
        target = self.writer or self.store
        before = getattr(target, "request_calls_queued", 0)
        written = self._store_batch(batch)
        if self._loop is not None and getattr(target, "request_calls_queued", 0) != before:
            try:
                self._loop.call_soon_threadsafe(self.deliveries.wake)
            except RuntimeError:        # the loop has closed (a drain at exit): the worker looks at start
                pass
        return written

    async def startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        journal = self.recorder.journal.directory.resolve()
        try:
            self.recorder.journal.check_writable()
        except OSError as exc:
            raise StartupError(f"the journal folder {journal} cannot be written ({exc.strerror or exc}); "
                               "records wait there when the store is unavailable, so Heliograph does not "
                               "start without it: set HELIOGRAPH_JOURNAL_DIR to a writable folder") from None
        log.info("journal (records waiting for the store): %s", journal)
        if not self.settings.journal_dir and not self.settings.db_url.startswith("sqlite:"):
            log.warning("the journal is in %s by default: a container loses it on redeploy, and with it any "
                        "records waiting for the store; set HELIOGRAPH_JOURNAL_DIR to a persistent volume", journal)
        await asyncio.to_thread(self.store.migrate)
        await self.state.check()
        await self.keys.reload()
        await self.budgets.reload()
        try:
            await self.provider_keys.reload()
        except VaultError as exc:       # a secret key too short to be one
            raise StartupError(str(exc)) from None
        if self.provider_keys.problem:  # stored keys and no secret key, or not the one they were stored with
            raise StartupError(self.provider_keys.problem)
        await self.proxy.start()
        self.recorder.start()
        self.retention.start()
        self.deliveries.start()
        self.alerts.start()
        self._tasks.append(asyncio.create_task(self.keys.run_reloads()))
        self._tasks.append(asyncio.create_task(self.budgets.run_reloads()))
        self._tasks.append(asyncio.create_task(self.provider_keys.run_reloads()))
        self._tasks.append(asyncio.create_task(self.prompts.run_refreshes()))
        if multiprocess_dir() is not None:
            self._tasks.append(asyncio.create_task(self._sync_metrics()))
        settle_collector()
        # The recorder thread takes the GIL back after each read of the writer's answer and for the
        # access lines; the event loop then waited up to the 5 ms default before it got it back, a
        # stall per batch that batched streamed chunks and added tens of ms to TTFB at 500 streams/s
        # while the core was 60 % busy (bench/, issue 14). 0.5 ms bounds each wait.
        sys.setswitchinterval(SWITCH_INTERVAL)

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.proxy.close()
        await self.alerts.close()
        await asyncio.to_thread(self.retention.stop)     # before the store closes under it
        await asyncio.to_thread(self.recorder.close)
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)
        await self.deliveries.close()      # after the recorder: its last batch may have queued webhook calls
        await asyncio.to_thread(self.observer.close)     # the last spans
        await self.state.close()
        self.store.close()
        if (directory := multiprocess_dir()) is not None:
            self.runtime_metrics.sync()     # the last totals; then this worker's gauges stop counting
            VALUES.flush()
            forget_worker(os.getpid(), directory)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except StartupError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Within READYZ_TIMEOUT whatever the store does; degraded while records wait in the journal."""
        problems: dict[str, Any] = {}
        checks = {"store": self._ping_store(), "state": self.state.check()}
        outcomes = await asyncio.gather(*(asyncio.wait_for(c, READYZ_TIMEOUT) for c in checks.values()),
                                        return_exceptions=True)
        for name, outcome in zip(checks, outcomes):
            if isinstance(outcome, TimeoutError):
                problems[name] = f"no answer within {READYZ_TIMEOUT:.1f} s"
            elif isinstance(outcome, Exception):
                problems[name] = str(outcome) or type(outcome).__name__
        waiting = self.recorder.journal_wait_seconds()
        if waiting > JOURNAL_DEGRADED_AFTER:
            reason = self.recorder.last_store_error or "the store has not taken them yet"
            problems["journal"] = (f"records have been waiting in the journal for {waiting:.0f} s "
                                   f"({self.recorder.journal.size_bytes()} bytes): {reason}")
        if "store" in problems or "state" in problems:
            status, code = "unavailable", 503
        else:
            status, code = ("degraded" if problems else "ready"), 200
        return JSONResponse({"status": status, **problems}, status_code=code)

    async def _ping_store(self) -> None:
        # One ping at a time: a store that hangs (a network partition) must not pile up threads.
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(asyncio.to_thread(self.store.ping))
        await asyncio.shield(self._ping)

    async def metrics(self, request: Request) -> Response:
        self.runtime_metrics.sync()
        return Response(exposition(self.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings) -> Heliograph:
    buffer_values()     # before the app makes its metrics
    return Heliograph(settings)
