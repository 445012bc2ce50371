"""The recorder: a bounded queue, one writer thread, batches, and the journal when the store fails.

`submit` is called on the request path: it never blocks, never does file I/O and never raises.
When the queue is full the record waits in an overflow list that the writer moves to the disk
journal first thing. Only the writer thread touches the journal.

The writer takes up to `batch_size` records or whatever arrived within `flush_ms`, turns them
into rows and writes them in one transaction. Two kinds of failure are told apart:

* the store is unavailable (locked, down: `unavailable` exceptions): the batch goes to the
  journal, which is replayed every second while the process runs;
* the store refuses a record for what it holds (a number out of range…): the batch is written
  record by record, a refused record is written again with its numbers clamped, and if even that
  fails it is moved to `journal/rejected/`, counted and logged at ERROR. It never blocks the rest.

`close` (on SIGTERM) writes everything still queued, trying the store for up to
`drain_timeout` seconds; what is left stays in the journal for the next start.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..pricing import PriceOverride
from .journal import Journal
from .process import to_row
from .record import RawRecord

log = logging.getLogger("heliograph.recorder")

RETRY_EVERY = 1.0
SCAN_EVERY = 10.0     # look for journal files left by processes that are gone
_STOP = object()

# Writes rows; returns the (old, new) ids of rows stored under a fresh id (their id was taken).
Insert = Callable[[Sequence[Mapping[str, Any]]], "list[tuple[str, str]] | None"]

# Bounds of a stored number. Rollups add records up in 64-bit integers (nano-USD, µs, tokens),
# so one absurd value from an upstream or an async-log caller would make every later batch that
# touches its rollup row unwritable. No real call comes near these; beyond them a value is clamped
# (a cost beyond them is dropped: the call is then `unpriced`, never a made-up figure).
MAX_TOKENS = 2**40                  # ~10^12 tokens
MAX_COST_USD = 1_000_000.0
MAX_MS = 10**10                     # ~116 days
BOUNDS: dict[str, float] = {
    "status": 999, "fallback_index": 1_000, "created_at": 2**53,
    "prompt_tokens": MAX_TOKENS, "completion_tokens": MAX_TOKENS, "total_tokens": MAX_TOKENS,
    "prompt_cache_read_tokens": MAX_TOKENS, "prompt_cache_write_tokens": MAX_TOKENS, "reasoning_tokens": MAX_TOKENS,
    "cost": MAX_COST_USD, "latency_ms": MAX_MS, "ttft_ms": MAX_MS, "gateway_overhead_ms": MAX_MS,
}
FLOATS = frozenset({"cost", "latency_ms", "ttft_ms", "gateway_overhead_ms"})


def clamp_numbers(row: dict[str, Any]) -> bool:
    """Bring every number of the row within BOUNDS; whether anything changed."""
    changed = False
    for column, bound in BOUNDS.items():
        value = row.get(column)
        if value is None:
            continue
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")
        if 0 <= number <= bound:
            continue
        changed = True
        if column == "cost":
            row["cost"], row["pricing_status"] = None, "unpriced"
        elif number != number:      # NaN, or not a number at all
            row[column] = None if column != "latency_ms" else 0.0
        else:
            clamped = min(max(number, 0), bound)
            row[column] = float(clamped) if column in FLOATS else int(clamped)
    return changed


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
    def __init__(self, insert: Insert, journal: Journal, *, overrides: Mapping[str, PriceOverride],
                 queue_size: int, batch_size: int, flush_ms: int, drain_timeout: float,
                 unavailable: tuple[type[BaseException], ...], observer: Observer | None = None) -> None:
        self._insert = insert
        self._observer = observer
        self.journal = journal
        self._overrides = overrides
        self._unavailable = unavailable
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._overflow: collections.deque[RawRecord] = collections.deque()  # append/popleft are thread-safe
        self._batch_size = batch_size
        self._flush = flush_ms / 1000
        self._drain_timeout = drain_timeout
        self._thread = threading.Thread(target=self._run, name="heliograph-recorder", daemon=True)
        self._journal_pending = True  # a previous run may have left records behind
        self._next_retry = 0.0
        self._next_scan = 0.0
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
        if self._closed:
            self._overflow.append(record)  # a request that finished after close: the writer's last pass journals it
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._overflow.append(record)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() + len(self._overflow)

    @property
    def rejected(self) -> int:
        return self.journal.rejected

    def journal_wait_seconds(self) -> float:
        """How long records have been waiting in the journal (0 when none are)."""
        since = self.journal_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        self._closed = True
        self._spill_overflow()  # anything submitted while the writer was finishing

    # -- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        self._replay_journal()
        stopping = False
        while not stopping:
            self._spill_overflow()
            batch, stopping = self._next_batch()
            if batch:
                self._write_or_journal(batch)
            now = time.monotonic()
            if now >= self._next_scan:
                self._next_scan = now + SCAN_EVERY
                self._journal_pending = self._journal_pending or self.journal.pending()
            if self._journal_pending and now >= self._next_retry:
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

    def _spill_overflow(self) -> None:
        spilled: list[RawRecord] = []
        while self._overflow:
            spilled.append(self._overflow.popleft())
        if spilled:
            log.warning("recorder queue full: %d records go to the journal (request ids %s)", len(spilled),
                        _ids(spilled))
            self._to_journal(spilled)

    def _rows(self, batch: list[RawRecord]) -> list[dict[str, Any]]:
        rows = []
        for record in batch:
            try:
                row = to_row(record, self._overrides)
            except Exception:
                # A record we cannot parse is still stored, with what the hot path knew.
                self.internal_errors += 1
                log.exception("could not process record %s", record.id)
                record.response_body = b""
                record.request_body = b""
                row = to_row(record, self._overrides)
            if clamp_numbers(row):
                self.clamped += 1
                log.error("record %s had numbers out of range (tokens, cost or times); stored clamped", record.id)
            if self._observer is not None and not record.observed:
                record.observed = True      # a batch journaled after this is not counted again at replay
                try:
                    self._observer.recorded(record, row)
                except Exception:
                    self.internal_errors += 1
                    log.exception("could not log or count record %s", record.id)
            rows.append(row)
        if self._observer is not None:
            try:
                self._observer.batch_observed()
            except Exception:
                self.internal_errors += 1
                log.exception("could not write the access lines of a batch")
        return rows

    def _write(self, batch: list[RawRecord]) -> None:
        """Store the batch; raises only when the store is unavailable."""
        rows = self._rows(batch)
        started = time.perf_counter()
        try:
            reassigned = self._insert(rows)
        except self._unavailable:
            raise
        except Exception as exc:
            log.error("the store refused a batch of %d records (%s); writing them one by one", len(batch), exc)
            self._write_one_by_one(batch, rows)
            return
        self.written += len(batch)
        if self._observer is not None:
            self._observer.batch_written(len(batch), time.perf_counter() - started)
        self._reassigned(reassigned)

    def _reassigned(self, pairs: list[tuple[str, str]] | None) -> None:
        for old, new in pairs or ():
            self.reassigned += 1
            log.warning("request id %s was already stored for another call; this one is stored as %s", old, new)

    def _write_one_by_one(self, batch: list[RawRecord], rows: list[dict[str, Any]]) -> None:
        for record, row in zip(batch, rows):
            try:
                self._reassigned(self._insert([row]))
            except self._unavailable:
                raise
            except Exception as exc:
                self.internal_errors += 1
                self.journal.reject([record.to_json()], f"the store refused record {record.id}: {exc}")
                continue
            self.written += 1

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
        leftover: list[RawRecord] = list(self._overflow)
        self._overflow.clear()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftover.append(item)
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
