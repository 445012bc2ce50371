"""The recorder's work in a process of its own, so it runs beside the event loop, not under its GIL.

Building a call's row (parse, usage, price, stream assembly, compression) and storing it (the row,
its body and properties, nine rollup tables, the webhook outbox, the commit) cost the saturated
gateway about as much CPU as proxying the call, and in the gateway's process that work takes the
GIL from the event loop thousands of times a second. `WriterProcess.write` hands the recorder's
batch of raw records to a child process, which builds the rows (recording/process.py), stores them
with its own connection, writes their access lines and answers with the columns of the rows the
gateway's observer reads (metrics and spans stay in the gateway: its /metrics and its exporter).
The queue, the journal and their no-loss rules stay where they were: the recorder's, in the
gateway's process (recording/recorder.py).

The answer is what the store returned, or why it did not:

* the store is unavailable: raised here as StoreUnavailable, so the recorder journals the batch;
* the store refused the batch for what it holds: StoreRefused, so it writes record by record;
* the child is gone (killed, crashed): StoreUnavailable too. The batch is journaled and replayed
  through a new child; inserts are idempotent, so a batch the child committed just before dying
  is not stored twice.

The child (`python -m heliograph.writer`, not multiprocessing's spawn, which would import
the gateway's `__main__` again) ignores SIGINT and SIGTERM and exits when the gateway closes the
pipe, or dies.
"""

from __future__ import annotations

import dataclasses
import logging
import logging.config
import operator
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

import orjson

from .ops.observe import OBSERVED_COLUMNS, flush_access, log_access
from .ops.tuning import settle_collector
from .pricing import parse_overrides
from .recording.process import GiveWay, Written, build_rows
from .recording.record import RawRecord
from .storage import StoreUnavailable, open_store

log = logging.getLogger("heliograph.recorder")

STOP_SECONDS = 10.0
# How the child learns its store and log setup: in its environment, not its command line (which
# any local user can read, and a PostgreSQL URL may hold a password).
CONFIG_ENV = "HELIOGRAPH_WRITER_CONFIG"


# Records cross the pipe as tuples of their fields, rows come back as tuples of the observed
# columns: a third of the pickling of dataclasses and whole dicts (the gateway's side of it is on its core).
FIELDS = operator.attrgetter(*(field.name for field in dataclasses.fields(RawRecord)))
OBSERVED = operator.itemgetter(*OBSERVED_COLUMNS)


class StoreRefused(Exception):
    """The store refused a batch for what it holds (the writer process's error, as text)."""


class WriterProcess:
    """The recorder's `write` (recording.process.Write), done by a child process.

    Called from one thread at a time (the recorder's). The child is `python -m heliograph.writer`,
    started at the first batch and again after it dies. `prices` are the settings' price overrides;
    with `key_name` (the key's name by id) the child writes the calls' access lines."""

    def __init__(self, db_url: str, prices: Mapping[str, Any] | None = None,
                 log_config: Mapping[str, Any] | None = None,
                 key_name: Callable[[str | None], str] | None = None) -> None:
        self.db_url = db_url
        self.prices = dict(prices or {})
        self.log_config = log_config
        self.key_name = key_name
        self.request_calls_queued = 0      # per-request webhook calls the child's writes queued
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    def write(self, batch: Sequence[RawRecord]) -> Written:
        conn = self._connection()
        try:
            names = None if self.key_name is None else [self.key_name(record.key_id) for record in batch]
            conn.send(([FIELDS(record) for record in batch], names))
            kind, value, queued, values, internal_errors, clamped = conn.recv()
        except (EOFError, OSError) as exc:
            code = self._stopped()
            raise StoreUnavailable(f"the writer process stopped (exit code {code}); it is started again") from exc
        rows: list[Mapping[str, Any]] = [dict(zip(OBSERVED_COLUMNS, row)) for row in values]
        written = Written(rows, internal_errors=internal_errors, clamped=clamped)
        if kind == "unavailable":
            written.failure = StoreUnavailable(value)
        elif kind == "refused":
            written.failure = StoreRefused(value)
        else:
            self.request_calls_queued += queued
            written.reassigned = [tuple(pair) for pair in value]
        return written

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _connection(self) -> Connection:
        if self._process is None or self._conn is None or self._process.poll() is not None:
            if self._process is not None:
                log.warning("the writer process stopped (exit code %s); starting another", self._stopped())
            ours, theirs = socket.socketpair()
            config = orjson.dumps({"db_url": self.db_url, "prices": self.prices, "log_config": self.log_config})
            with theirs:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "heliograph.writer", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env={**os.environ, CONFIG_ENV: config.decode()})
            self._conn = Connection(ours.detach())
        return self._conn

    def _stopped(self) -> int | None:
        """Forget a child that is gone (or going); its exit code."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        try:
            return process.wait(1.0)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def close(self) -> None:
        """Tell the child to exit (it holds no batch: every call waits for its answer)."""
        if self._process is None:
            return
        try:
            if self._conn is not None:
                self._conn.send(None)
            self._process.wait(STOP_SECONDS)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._stopped()


def serve(conn: Connection, db_url: str, prices: Mapping[str, Any]) -> None:
    """Build and store each batch received and answer, until the pipe closes or None arrives."""
    store = open_store(db_url)
    overrides = parse_overrides(prices)
    give_way = GiveWay()        # to whatever else runs on this core
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return          # the gateway is gone
            if message is None:
                return
            fields, names = message
            records = [RawRecord(*values) for values in fields]
            give_way.begin()
            written = build_rows(records, overrides, give_way)
            if names is not None:
                _access_lines(records, written.rows, names, give_way)
            before = getattr(store, "request_calls_queued", 0)
            kind = "ok"
            value: Any = None
            try:
                value = store.insert_requests(written.rows, give_way)
            except StoreUnavailable as exc:
                kind, value = "unavailable", str(exc)
            except Exception as exc:
                kind, value = "refused", f"{type(exc).__name__}: {exc}"
            conn.send((kind, value, getattr(store, "request_calls_queued", 0) - before,
                       list(map(OBSERVED, written.rows)), written.internal_errors, written.clamped))
    finally:
        store.close()


def _access_lines(records: list[RawRecord], rows: list[Mapping[str, Any]], names: list[str],
                  give_way: Callable[[], None]) -> None:
    """The access lines of the calls not logged before (a batch written again record by record,
    or replayed from the journal, was), written together; never fatal to the batch."""
    try:
        for record, row, name in zip(records, rows, names):
            if not record.observed:
                give_way()
                log_access(record, row, name)
        flush_access()
    except Exception:
        log.exception("could not write the access lines of a batch")


def main() -> None:
    # SIGINT and SIGTERM sent to a whole process group (Ctrl-C) or cgroup (systemd) would stop the
    # child before the recorder drains through it: the gateway says when, by closing the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Throughput work beside a latency-sensitive proxy: where they share a core, a batch that wakes
    # the writer does not preempt the gateway mid-request (its fair share of the core is unchanged).
    if hasattr(os, "SCHED_BATCH"):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    config = orjson.loads(os.environ.pop(CONFIG_ENV))
    if config["log_config"] is not None:
        logging.config.dictConfig(config["log_config"])
    settle_collector()         # as the gateway does: rows are built from many short-lived objects
    serve(Connection(int(sys.argv[1])), config["db_url"], config["prices"])


if __name__ == "__main__":
    main()
