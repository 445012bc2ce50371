"""The delivery worker: drains the outbox (storage/outbox.py), in every gateway, off the request path.

It keeps up to SENDERS sends in flight: whenever one finishes it claims more due deliveries (a claim
is exclusive across gateways and lasts the send's timeout and a margin, so a gateway that dies
mid-send leaves the row to be retried) and starts each as its own task, with `delivery_timeout`.
Outcomes are written back: delivered on a 2xx (250 for SMTP), else retried after
`delivery_retry_base` seconds, doubling up to 5 minutes apart, until `delivery_give_up` seconds
after the notification was queued, when it is marked failed.

Slow receivers cannot starve the rest: per-request webhook calls (one per recorded request, the
bulk) may hold at most REQUEST_SENDERS of the slots, so alert, budget and test notifications always
have some; and a slow send only ever holds its own slot, never the next claim. The evaluator and the
recorder only write rows and never wait for any of this.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import aiohttp

from ..settings import Settings
from ..storage import Store, StoreUnavailable
from ..storage.outbox import DELIVERED, FAILED, PENDING
from .channels import Outcome, send_email, send_http

log = logging.getLogger("heliograph.alerts")

BATCH = 50
SENDERS = 32
REQUEST_SENDERS = 24    # of SENDERS, at most this many per-request webhook calls at once
IDLE_POLL = 0.25        # seconds between looks at an empty outbox (a wake() cuts it short)
MAX_BACKOFF = 300.0


def next_attempt_ms(settings: Settings, attempts: int, now_ms: int) -> int:
    delay = min(MAX_BACKOFF, settings.delivery_retry_base * 2 ** max(0, attempts - 1))
    return now_ms + int(delay * 1000)


class DeliveryWorker:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._requests_sending = 0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed_attempts = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        for task in list(self._sending):     # their claims expire: sent again by the next gateway to look
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        self._session = aiohttp.ClientSession()
        while True:
            try:
                claimed = await self.drain_once()
            except StoreUnavailable as exc:
                log.warning("delivery worker: store unavailable: %s", exc)
                claimed = 0
            except Exception:
                log.exception("delivery worker pass failed")
                claimed = 0
            if not claimed:
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL)
                except TimeoutError:
                    pass
                self._wake.clear()

    async def drain_once(self) -> int:
        """Claim what the free slots allow and start sending it; how many were claimed."""
        free = SENDERS - len(self._sending)
        if free <= 0:
            return 0
        hold_ms = int((self.settings.delivery_timeout + 30) * 1000)

        def claim() -> list[dict[str, Any]]:
            # Notifications first, then per-request calls within their share of the slots.
            rows = self.store.claim_deliveries(min(free, BATCH), hold_ms, other_than="request")
            room = min(free - len(rows), REQUEST_SENDERS - self._requests_sending, BATCH)
            return rows + self.store.claim_deliveries(room, hold_ms, source="request")
        rows = await asyncio.to_thread(claim)
        for row in rows:
            task = asyncio.create_task(self._deliver(row))
            self._sending.add(task)
            if row["source"] == "request":
                self._requests_sending += 1
            task.add_done_callback(functools.partial(self._done, source=row["source"]))
        return len(rows)

    def _done(self, task: asyncio.Task[None], source: str) -> None:
        self._sending.discard(task)
        if source == "request":
            self._requests_sending -= 1
        self._wake.set()

    async def _deliver(self, row: dict[str, Any]) -> None:
        outcome = await self.send(row["channel"], row["body"].encode())
        now = int(time.time() * 1000)
        if outcome.ok:
            status, next_at = DELIVERED, None
            self.sent += 1
        else:
            self.failed_attempts += 1
            gave_up = now - int(row["created_at"]) >= self.settings.delivery_give_up * 1000
            status, next_at = (FAILED, None) if gave_up else (PENDING, next_attempt_ms(self.settings, row["attempts"], now))
            log.info("delivery %s to %s failed (attempt %s): %s", row["id"], row["channel"].get("type"),
                     row["attempts"], outcome.error)
        try:
            await asyncio.to_thread(self.store.finish_delivery, row["id"], status=status, next_at=next_at,
                                    last_status=outcome.status, last_error=outcome.error)
        except Exception:       # the claim expires and the delivery is tried again: at-least-once
            log.warning("could not record the outcome of delivery %s", row["id"], exc_info=True)

    async def send(self, channel: dict[str, Any], body: bytes) -> Outcome:
        timeout = self.settings.delivery_timeout
        if channel["type"] == "email":
            try:
                return await asyncio.wait_for(asyncio.to_thread(send_email, self.settings, body, timeout),
                                              timeout * 3)
            except TimeoutError:
                return Outcome(False, None, "SMTP server too slow")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return await send_http(self._session, channel, body, timeout)
