"""The delivery worker: drains the outbox (storage/outbox.py), in every gateway, off the request path.

Each pass claims up to BATCH due deliveries (a claim is exclusive across gateways and lasts the
send's timeout and a margin, so a gateway that dies mid-send leaves the row to be retried), sends
them concurrently with a timeout each, and writes the outcome back: delivered on a 2xx (250 for
SMTP), else retried after `delivery_retry_base` seconds, doubling up to 5 minutes apart, until
`delivery_give_up` seconds after the notification was queued, when it is marked failed. A slow or
failing receiver only ever holds one of SENDERS slots for at most `delivery_timeout`; the
evaluator and the recorder only write rows and never wait for it.
"""

from __future__ import annotations

import asyncio
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
SENDERS = 16
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
        self._slots = asyncio.Semaphore(SENDERS)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed_attempts = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
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
            if claimed < BATCH:
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL)
                except TimeoutError:
                    pass
                self._wake.clear()

    async def drain_once(self) -> int:
        """Claim and send one batch; how many were claimed."""
        hold_ms = int((self.settings.delivery_timeout + 30) * 1000)
        rows = await asyncio.to_thread(self.store.claim_deliveries, BATCH, hold_ms)
        if rows:
            await asyncio.gather(*(self._deliver(row) for row in rows))
        return len(rows)

    async def _deliver(self, row: dict[str, Any]) -> None:
        async with self._slots:
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
        await asyncio.to_thread(self.store.finish_delivery, row["id"], status=status, next_at=next_at,
                                last_status=outcome.status, last_error=outcome.error)

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
