"""The retention pass, every `retention_interval_seconds`, in a thread of its own.

A thread rather than an asyncio task: each pass is a sequence of blocking deletes, and the pauses
between them (storage/lifecycle.py) are waits on the stop event, so shutdown interrupts a long
pass at the next batch instead of waiting for it to finish. Several processes sharing one
PostgreSQL each run it; their deletes overlap harmlessly (deleting a deleted row is a no-op).
"""

from __future__ import annotations

import logging
import threading

from .storage import Store
from .storage.lifecycle import PruneResult

log = logging.getLogger("heliograph.retention")

STOP_TIMEOUT_S = 10.0


def describe(result: PruneResult, body_days: float, metrics_days: float) -> str:
    """One human line per kind of expiry, as `heliograph db prune` prints it."""
    lines = []
    if body_days > 0:
        lines.append(f"bodies older than {body_days:g} days: {result.bodies} removed (their metrics stay)")
    else:
        lines.append("bodies: kept forever (body_retention_days = 0)")
    if metrics_days > 0:
        tables = ", ".join(f"{table} {count}" for table, count in result.deleted.items() if table != "requests")
        lines.append(f"requests older than {metrics_days:g} days: {result.deleted.get('requests', 0)} removed"
                     + (f" ({tables})" if tables else ""))
    else:
        lines.append("requests: kept forever (metrics_retention_days = 0)")
    if not result.complete:
        lines.append("stopped before the end; the next pass continues")
    return "\n".join(lines)


class RetentionRunner:
    def __init__(self, store: Store, *, body_days: float, metrics_days: float, interval_s: float) -> None:
        self.store = store
        self.body_days = body_days
        self.metrics_days = metrics_days
        self.interval_s = interval_s
        self.passes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heliograph-retention", daemon=True)

    @property
    def enabled(self) -> bool:
        return self.body_days > 0 or self.metrics_days > 0

    def start(self) -> None:
        if self.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_S)

    def _run(self) -> None:
        # First pass right away: a gateway restarted daily would otherwise never reach the interval.
        while not self._stop.is_set():
            try:
                result = self.store.prune(body_days=self.body_days, metrics_days=self.metrics_days,
                                          stop=self._stop)
            except Exception as exc:    # store locked or down: the next pass tries again
                log.warning("retention pass failed (%s); retrying in %g s", exc, self.interval_s)
            else:
                self.passes += 1
                if result.bodies or result.deleted.get("requests"):
                    log.info("retention: %s", describe(result, self.body_days, self.metrics_days).replace("\n", "; "))
            self._stop.wait(self.interval_s)
