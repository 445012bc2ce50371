"""Request ids: ours, or the client's own `Helicone-Request-Id` when it is a fresh UUID.

A client may reuse an id (a retry loop, a seeded generator, an async log of a call already
logged). The store keeps one record per id, so a reused id would silently drop the call's record.
Instead the call gets a fresh id, returned in `Helicone-Id` as for an invalid one, counted and
logged. Ids are checked against the ones this process handed out recently and against the store
(one indexed lookup, in a thread, only for requests that bring their own id). The store's insert
catches what slips through (another process using the same id in the same instant).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import re
import time
from collections.abc import Callable

log = logging.getLogger("heliograph.recorder")

VALID_REQUEST_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.I)
RECENT = 100_000    # ids remembered per process (~10 MB): covers what the recorder has not written yet


def new_request_id() -> str:
    """A UUIDv7 (RFC 9562): the millisecond first, then 74 random bits.

    Time-ordered, so a batch's rows land side by side in the store's id indexes: random ids
    dirtied one index page per row of `requests`, `request_bodies` and `request_properties`, which
    doubled the CPU of each commit (bench/, issue 14). Not uuid4(): os.urandom releases the GIL,
    and with the recorder thread busy the event loop then waits ~50 µs to get it back. Ids need to
    be unique, not secret. Formatted here: uuid.UUID's checks and str() took half of its ~1.5 µs."""
    value = (time.time_ns() // 1_000_000 << 80 | 0x7 << 76 | random.getrandbits(12) << 64
             | 0b10 << 62 | random.getrandbits(62))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class RequestIds:
    def __init__(self, stored: Callable[[str], bool] | None = None) -> None:
        self._stored = stored
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.reused = 0

    async def claim(self, requested: str | None) -> str:
        """The id this call is recorded under."""
        if not requested or not VALID_REQUEST_ID.match(requested):
            return new_request_id()
        if requested in self._recent or await self._in_store(requested):
            fresh = new_request_id()
            self.reused += 1
            log.warning("Helicone-Request-Id %s was already used; this call is recorded as %s", requested, fresh)
            return fresh
        self._recent[requested] = None
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        return requested

    async def _in_store(self, request_id: str) -> bool:
        if self._stored is None:
            return False
        try:
            return await asyncio.to_thread(self._stored, request_id)
        except Exception:
            return False  # the store is down: the insert still keeps both records
