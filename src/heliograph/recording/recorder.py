"""The recorder: a bounded queue, one writer thread, batches, and the journal when the store fails.

`submit` is called on the request path: it never blocks, never does file I/O and never raises.
When the queue is full the record waits in an overflow list that the writer moves to the disk
journal first thing. Only the writer thread touches the journal.

The queue is a deque the request path appends to without waking anyone: the writer wakes every
`flush_ms`, takes what arrived (up to `batch_size` records a batch; a backlog is taken at once,
batch after batch) and hands it to `write`. A queue.Queue woke the writer for each record, and each
wake took the GIL from the event loop (one core at saturation: 8 % more calls a second without it,
issue 14). A record still waits at most `flush_ms` plus one write. `write` turns the batch into
rows and stores them in one transaction: in a process of its own (writer.py, where there is a core
to spare) or in this thread (process.local_write). Two kinds of failure are told apart:

* the store is unavailable (locked, down: `unavailable` exceptions): the batch goes to the
  journal, which is replayed every second while the process runs;
* the store refuses a record for what it holds (a number out of range…): the batch is written
  record by record, a refused record is written again with its numbers clamped, and if even that
  fails it is moved to `journal/rejected/`, counted and logged at ERROR. It never blocks the rest.

On the event loop's core the writer gives way early in each batch (process.GiveWay): the loop
runs first, and the batch after it.

`close` (on SIGTERM) writes everything still queued, trying the store for up to
`drain_timeout` seconds; what is left stays in the journal for the next start.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .journal import Journal
from .process import GiveWay, Write, Written
from .record import RawRecord

log = logging.getLogger("heliograph.recorder")

RETRY_EVERY = 1.0
SCAN_EVERY = 10.0     # look for journal files left by processes that are gone

def _ids(batch: Sequence[RawRecord], shown: int = 5) -> str:
    """The request ids of a batch for a log line: the first few, and how many more."""
    more = f" and {len(batch) - shown} more" if len(batch) > shown else ""
    return ", ".join(record.id for record in batch[:shown]) + more


class Observer(Protocol):
    """Told of each call once, when its row is first built (access line, metrics, spans), when a
    batch's rows are built (what it kept of their calls goes out then), and of each batch written.
    Runs in the writer thread; an exception is logged and counted, never fatal."""

    def recorded(self, record: RawRecord, row: Mapping[str, Any]) -> None: ...
    def batch_observed(self) -> None: ...
    def batch_written(self, size: int, seconds: float) -> None: ...


class Recorder:
    def __init__(self, write: Write, journal: Journal, *, queue_size: int, batch_size: int, flush_ms: int,
                 drain_timeout: float, unavailable: tuple[type[BaseException], ...],
                 observer: Observer | None = None) -> None:
        self._store_batch = write
        self._observer = observer
        self.journal = journal
        self._unavailable = unavailable
        # append/popleft are thread-safe; len() may be a record behind, which only moves the bound by one
        self._queue: collections.deque[RawRecord] = collections.deque()
        self._queue_size = queue_size
        self._overflow: collections.deque[RawRecord] = collections.deque()
        self._stop = threading.Event()
        self._batch_size = batch_size
        self._flush = flush_ms / 1000
        self._drain_timeout = drain_timeout
        self._thread = threading.Thread(target=self._run, name="heliograph-recorder", daemon=True)
        self._journal_pending = True  # a previous run may have left records behind
        self._next_retry = 0.0
        self._next_scan = 0.0
        self.give_way = GiveWay()     # for the write to call between pieces of a batch
        self._closed = False
        self.journal_since: float | None = None   # monotonic time records started waiting in the journal
        self.last_store_error: str | None = None
        self.written = 0
        self.journaled = 0
        self.internal_errors = 0
        self.clamped = 0
        self.reassigned = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: RawRecord) -> None:
        # After close (a request that finished late) the writer's last pass journals the overflow.
        if self._closed or len(self._queue) >= self._queue_size:
            self._overflow.append(record)
        else:
            self._queue.append(record)

    @property
    def queue_depth(self) -> int:
        return len(self._queue) + len(self._overflow)

    @property
    def rejected(self) -> int:
        return self.journal.rejected

    def journal_wait_seconds(self) -> float:
        """How long records have been waiting in the journal (0 when none are)."""
        since = self.journal_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._closed = True
        while self._queue:      # submitted while the writer was finishing: journaled with the overflow
            self._overflow.append(self._queue.popleft())
        self._spill_overflow()

    # -- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        self._replay_journal()
        while not self._stop.is_set():
            self._spill_overflow()
            batch = self._next_batch()
            if batch:
                self._write_or_journal(batch)
            if len(self._queue) < self._batch_size:     # no backlog: the next records a flush away
                self._stop.wait(self._flush)
            now = time.monotonic()
            if now >= self._next_scan:
                self._next_scan = now + SCAN_EVERY
                self._journal_pending = self._journal_pending or self.journal.pending()
            if self._journal_pending and now >= self._next_retry:
                self._replay_journal()
        self._drain()

    def _next_batch(self) -> list[RawRecord]:
        pending = self._queue
        return [pending.popleft() for _ in range(min(len(pending), self._batch_size))]

    def _spill_overflow(self) -> None:
        spilled: list[RawRecord] = []
        while self._overflow:
            spilled.append(self._overflow.popleft())
        if spilled:
            log.warning("recorder queue full: %d records go to the journal (request ids %s)", len(spilled),
                        _ids(spilled))
            self._to_journal(spilled)

    def _build_and_store(self, batch: list[RawRecord], count: bool = True) -> Written:
        """The batch's rows built and stored (process.local_write, or the writer process); the
        observer told of each call the first time. Raises only when the store is unavailable."""
        try:
            written = self._store_batch(batch)
        except self._unavailable:
            raise
        except Exception as exc:   # the write itself failed, not the store: as a refused batch
            written = Written([], failure=exc)
        if count:       # a refused batch written again one by one is not counted twice
            self.internal_errors += written.internal_errors
            self.clamped += written.clamped
        if self._observer is not None and written.rows:
            self._observe(batch, written.rows, self._observer)
        if isinstance(written.failure, self._unavailable):
            raise written.failure
        return written

    def _observe(self, batch: list[RawRecord], rows: Sequence[Mapping[str, Any]], observer: Observer) -> None:
        for record, row in zip(batch, rows):
            if record.observed:
                continue
            self.give_way()
            record.observed = True      # a batch journaled after this is not counted again at replay
            try:
                observer.recorded(record, row)
            except Exception:
                self.internal_errors += 1
                log.exception("could not log or count record %s", record.id)
        try:
            observer.batch_observed()
        except Exception:
            self.internal_errors += 1
            log.exception("could not write the access lines of a batch")

    def _write(self, batch: list[RawRecord]) -> None:
        """Store the batch; raises only when the store is unavailable."""
        started = time.perf_counter()
        self.give_way.begin()
        written = self._build_and_store(batch)
        if written.failure is not None:
            log.error("the store refused a batch of %d records (%s); writing them one by one", len(batch),
                      written.failure)
            self._write_one_by_one(batch)
            return
        self.written += len(batch)
        if self._observer is not None:
            self._observer.batch_written(len(batch), time.perf_counter() - started)
        self._reassigned(written.reassigned)

    def _reassigned(self, pairs: list[tuple[str, str]] | None) -> None:
        for old, new in pairs or ():
            self.reassigned += 1
            log.warning("request id %s was already stored for another call; this one is stored as %s", old, new)

    def _write_one_by_one(self, batch: list[RawRecord]) -> None:
        for record in batch:
            written = self._build_and_store([record], count=False)
            if written.failure is not None:
                self.internal_errors += 1
                self.journal.reject([record.to_json()], f"the store refused record {record.id}: {written.failure}")
                continue
            self.written += 1
            self._reassigned(written.reassigned)

    def _write_or_journal(self, batch: list[RawRecord]) -> None:
        if self._journal_pending:
            # Keep order simple: while the journal is not empty, new records queue up behind it.
            self._to_journal(batch)
            return
        try:
            self._write(batch)
        except self._unavailable as exc:
            self._store_failed(exc)
            log.warning("store unavailable (%s); %d records go to the journal (request ids %s)", exc, len(batch),
                        _ids(batch))
            self._to_journal(batch)

    def _to_journal(self, batch: list[RawRecord]) -> None:
        try:
            self.journal.append(batch)
        except OSError:
            # The journal is the last place a record can go; with it gone, say so loudly.
            self.internal_errors += len(batch)
            log.exception("could not write %d records to the journal in %s; they are lost (request ids %s)",
                          len(batch), self.journal.directory, _ids(batch))
            return
        self.journaled += len(batch)
        if self.journal_since is None:
            self.journal_since = time.monotonic()
        if not self._journal_pending:
            self._journal_pending = True
            self._next_retry = time.monotonic() + RETRY_EVERY

    def _store_failed(self, exc: BaseException) -> None:
        self.last_store_error = f"{type(exc).__name__}: {exc}"

    def _replay_journal(self) -> bool:
        try:
            replayed = self.journal.replay(self._write, self._batch_size)
        except self._unavailable as exc:
            self._store_failed(exc)
            log.info("journal replay deferred: store unavailable (%s)", exc)
            self._next_retry = time.monotonic() + RETRY_EVERY
            return False
        except Exception:
            self.internal_errors += 1
            log.exception("journal replay failed; trying again in %.0f s", RETRY_EVERY)
            self._next_retry = time.monotonic() + RETRY_EVERY
            return False
        if replayed:
            log.info("replayed %d journaled records into the store", replayed)
        self._journal_pending = False
        self.journal_since = None
        self.last_store_error = None
        return True

    def _drain(self) -> None:
        deadline = time.monotonic() + self._drain_timeout
        leftover: list[RawRecord] = []
        for pending in (self._overflow, self._queue):
            while pending:
                leftover.append(pending.popleft())
        for start in range(0, len(leftover), self._batch_size):
            batch = leftover[start:start + self._batch_size]
            if time.monotonic() >= deadline:
                self._to_journal(batch)
            else:
                self._write_or_journal(batch)
        while self._journal_pending and not self._replay_journal():
            if time.monotonic() >= deadline:
                log.error("store still unavailable at shutdown; %d bytes of records stay in %s "
                          "and are written at the next start", self.journal.size_bytes(), self.journal.directory)
                return
            time.sleep(0.2)
