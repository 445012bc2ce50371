"""The recorder's writes in a process of their own, so the store's work runs beside the event loop.

Writing a batch (the rows, their bodies and properties, nine rollup tables, the webhook outbox,
the commit) is about half of what recording a call costs, and in the gateway's process it shares
one core with the proxy through the GIL. `WriterProcess` moves it to a child process: the
recorder calls `insert_requests(rows)` as it calls the store's, the rows cross a pipe, the child
writes them with its own connection and answers. Everything else stays where it was: the queue,
the journal and its no-loss rules are the recorder's, in the gateway's process (recording/).

The answer is what `Store.insert_requests` returned, or why it did not:

* the store is unavailable: raised here as StoreUnavailable, so the recorder journals the batch;
* the store refused the batch for what it holds: StoreRefused, so it writes record by record;
* the child is gone (killed, crashed): StoreUnavailable too. The batch is journaled and replayed
  through a new child; inserts are idempotent, so a batch the child committed just before dying
  is not stored twice.

The child ignores SIGINT and SIGTERM (sent to a whole process group or cgroup they would stop it
before the recorder drains) and exits when the gateway closes the pipe, or dies.
"""

from __future__ import annotations

import logging
import logging.config
import multiprocessing
import signal
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from . import open_store
from .sqlstore import StoreUnavailable

log = logging.getLogger("heliograph.recorder")

STOP_SECONDS = 10.0


class StoreRefused(Exception):
    """The store refused a batch for what it holds (the writer process's error, as text)."""


class WriterProcess:
    """`insert_requests` and `request_calls_queued` of a store, served by a child process.

    Called from one thread at a time (the recorder's)."""

    def __init__(self, db_url: str, log_config: Mapping[str, Any] | None = None) -> None:
        self.db_url = db_url
        self.log_config = log_config
        self.request_calls_queued = 0      # per-request webhook calls the child's writes queued
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    def insert_requests(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
        conn = self._connection()
        try:
            conn.send(list(rows))
            kind, value, queued = conn.recv()
        except (EOFError, OSError) as exc:
            code = self._stopped()
            raise StoreUnavailable(f"the writer process stopped (exit code {code}); it is started again") from exc
        if kind == "unavailable":
            raise StoreUnavailable(value)
        if kind == "refused":
            raise StoreRefused(value)
        self.request_calls_queued += queued
        return [tuple(pair) for pair in value]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _connection(self) -> Connection:
        if self._process is None or self._conn is None or not self._process.is_alive():
            if self._process is not None:
                log.warning("the writer process stopped (exit code %s); starting another", self._stopped())
            context = multiprocessing.get_context("spawn")
            ours, theirs = context.Pipe()
            self._process = context.Process(target=serve, args=(theirs, self.db_url, self.log_config),
                                            name="heliograph-writer", daemon=True)
            self._process.start()
            theirs.close()
            self._conn = ours
        return self._conn

    def _stopped(self) -> int | None:
        """Forget a child that is gone (or going); its exit code."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join()
        return process.exitcode

    def close(self) -> None:
        """Let the child finish the batch it has (there is none: calls wait for their answer) and exit."""
        if self._process is None:
            return
        process = self._process
        try:
            if self._conn is not None:
                self._conn.send(None)
        except OSError:
            pass
        process.join(STOP_SECONDS)
        self._stopped()


def serve(conn: Connection, db_url: str, log_config: Mapping[str, Any] | None) -> None:
    """The child: write each batch received, answer, until the pipe closes or None arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if log_config is not None:
        logging.config.dictConfig(dict(log_config))
    store = open_store(db_url)
    try:
        while True:
            try:
                rows = conn.recv()
            except (EOFError, OSError):
                return          # the gateway is gone
            if rows is None:
                return
            before = getattr(store, "request_calls_queued", 0)
            try:
                reassigned = store.insert_requests(rows)
            except StoreUnavailable as exc:
                conn.send(("unavailable", str(exc), 0))
                continue
            except Exception as exc:
                conn.send(("refused", f"{type(exc).__name__}: {exc}", 0))
                continue
            conn.send(("ok", reassigned, getattr(store, "request_calls_queued", 0) - before))
    finally:
        store.close()
