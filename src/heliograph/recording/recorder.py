"""The recorder: a bounded queue, one writer thread, batches, and the journal when the store fails.

`submit` is called on the request path: it never blocks on the store and never raises. The
writer takes up to `batch_size` records or whatever arrived within `flush_ms`, turns them into
rows and writes them in one transaction. If the store refuses (locked, down), the batch goes to
the disk journal and the writer retries the journal every second. `close` (on SIGTERM) writes
everything still queued and replays the journal, for up to `drain_timeout` seconds; what is
left stays in the journal for the next start. No answered request is lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..pricing import PriceOverride
from .journal import Journal
from .process import to_row
from .record import RawRecord

log = logging.getLogger("heliograph.recorder")

RETRY_EVERY = 1.0
_STOP = object()


class Recorder:
    def __init__(self, insert: Callable[[Sequence[Mapping[str, Any]]], None], journal: Journal, *,
                 overrides: Mapping[str, PriceOverride], queue_size: int, batch_size: int,
                 flush_ms: int, drain_timeout: float) -> None:
        self._insert = insert
        self.journal = journal
        self._overrides = overrides
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._flush = flush_ms / 1000
        self._drain_timeout = drain_timeout
        self._thread = threading.Thread(target=self._run, name="heliograph-recorder", daemon=True)
        self._journal_pending = True  # a previous run may have left records behind
        self._next_retry = 0.0
        self.written = 0
        self.journaled = 0
        self.internal_errors = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: RawRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._to_journal([record])

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    # -- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        self._replay_journal()
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            if batch:
                self._write_or_journal(batch)
            if self._journal_pending and time.monotonic() >= self._next_retry:
                self._replay_journal()
        self._drain()

    def _next_batch(self) -> tuple[list[RawRecord], bool]:
        try:
            first = self._queue.get(timeout=RETRY_EVERY)
        except queue.Empty:
            return [], False
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self._flush
        while len(batch) < self._batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _rows(self, batch: list[RawRecord]) -> list[dict[str, Any]]:
        rows = []
        for record in batch:
            try:
                rows.append(to_row(record, self._overrides))
            except Exception:
                # A record we cannot parse is still stored, with what the hot path knew.
                self.internal_errors += 1
                log.exception("could not process record %s", record.id)
                record.response_body = b""
                record.request_body = b""
                rows.append(to_row(record, self._overrides))
        return rows

    def _write(self, batch: list[RawRecord]) -> None:
        self._insert(self._rows(batch))
        self.written += len(batch)

    def _write_or_journal(self, batch: list[RawRecord]) -> None:
        if self._journal_pending:
            # Keep order simple: while the journal is not empty, new records queue up behind it.
            self._to_journal(batch)
            return
        try:
            self._write(batch)
        except Exception as exc:
            log.warning("store unavailable (%s); %d records go to the journal", exc, len(batch))
            self._to_journal(batch)

    def _to_journal(self, batch: list[RawRecord]) -> None:
        self.journal.append(batch)
        self.journaled += len(batch)
        if not self._journal_pending:
            self._journal_pending = True
            self._next_retry = time.monotonic() + RETRY_EVERY

    def _replay_journal(self) -> bool:
        try:
            replayed = self.journal.replay(self._write, self._batch_size)
        except Exception as exc:
            log.debug("journal replay deferred: %s", exc)
            self._next_retry = time.monotonic() + RETRY_EVERY
            return False
        if replayed:
            log.info("replayed %d journaled records into the store", replayed)
        self._journal_pending = False
        return True

    def _drain(self) -> None:
        leftover: list[RawRecord] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftover.append(item)
        for start in range(0, len(leftover), self._batch_size):
            self._write_or_journal(leftover[start:start + self._batch_size])
        deadline = time.monotonic() + self._drain_timeout
        while self._journal_pending and not self._replay_journal():
            if time.monotonic() >= deadline:
                log.error("store still unavailable at shutdown; %d bytes of records stay in %s "
                          "and are written at the next start", self.journal.size_bytes(), self.journal.directory)
                return
            time.sleep(0.2)
