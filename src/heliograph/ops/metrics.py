"""Prometheus metrics that stay right with several worker processes.

With `--workers N` each worker is a process with its own counters, and a scrape reaches one of
them; so `serve` points PROMETHEUS_MULTIPROC_DIR at an emptied folder before the workers start
(`prepare_multiprocess`), every worker's metrics live in memory-mapped files there, and `/metrics`
answers the sum over all of them (prometheus_client's multiprocess mode). A worker keeps its values
in memory and writes the changed ones to its file every second and before it answers a scrape
(`buffer_values`), as a write at each change cost ~5 µs a call. Gauges are `livesum`
(or `livemax` for what workers share, like the journal folder), and a gone worker's gauges are
dropped at the next scrape; its counters stay, as a counter must never go down.

Names follow Prometheus' conventions: counters end in `_total`, units are in the name (`_seconds`,
`_usd`, `_bytes`). Labels are bounded: provider, model (at most MAX_MODELS distinct per process,
then "other"), status, token kind, never user, key or property.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest,
                               multiprocess, values)

from .. import __version__
from ..recording.record import RawRecord
from ..settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series double what a scrape carries; Prometheus does not need them
MAX_MODELS = 200
MAX_PROVIDERS = 64
# LLM calls take from a cached tens of milliseconds to minutes for long generations.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
# Time to first token: interactive chat is judged in hundreds of milliseconds.
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
TOKEN_KINDS = (("input", "prompt_tokens"), ("output", "completion_tokens"), ("cache_read", "prompt_cache_read_tokens"),
               ("cache_write", "prompt_cache_write_tokens"), ("reasoning", "reasoning_tokens"))
REFUSALS = frozenset({"rate_limited", "budget_exceeded"})


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess(settings: Settings) -> Path:
    """Before the workers start: an empty folder for their metric files, named in the environment
    the workers inherit (prometheus_client reads it when it is first imported there). The operator's
    PROMETHEUS_MULTIPROC_DIR if set, else one per user and port in the temporary folder."""
    given = os.environ.get(MULTIPROC_ENV)
    directory = Path(given) if given else Path(tempfile.gettempdir()) / f"heliograph-metrics-{os.getuid()}-{settings.port}"
    if directory.exists():
        shutil.rmtree(directory)     # counters of a previous run must not be added to this one's
    directory.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


class ValueBuffer:
    """prometheus_client's multiprocess values, written to the worker's file by `flush` instead of
    at each change.

    Its own value takes a lock, calls getpid (a system call, to notice a fork) and packs the number
    into the memory map at every `inc`, `set` and histogram `observe`: 2.5-3 times what an
    in-memory value costs, ~5 µs a proxied call in all (issue 14). Here a change only marks the value;
    `flush` (every second in each worker, before a scrape and at shutdown) writes what changed, so
    the sum a scrape shows lags another worker by a second at most. Workers are started afresh,
    never forked, so the fork check has nothing to notice.
    """

    def __init__(self) -> None:
        self._changed: set[Any] = set()
        self._lock = threading.Lock()   # the files too: values are created (labels()) in several threads
        self.installed = False

    def install(self) -> None:
        """Metrics made after this keep buffered values (call it before the app makes its metrics).
        Once per process: each install would open the worker's files again."""
        if self.installed:
            return
        self.installed = True
        changed, lock = self._changed, self._lock
        mmaped: Any = values.MultiProcessValue()   # type: ignore[no-untyped-call]

        class Buffered(mmaped):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                with lock:      # reads (and may grow) the file flush writes to
                    super().__init__(*args, **kwargs)

            def inc(self, amount: float) -> None:
                with lock:
                    self._value += amount
                    self._timestamp = 0.0
                    changed.add(self)

            def set(self, value: float, timestamp: float | None = None) -> None:
                with lock:
                    self._value = value
                    self._timestamp = timestamp or 0.0
                    changed.add(self)

            def get(self) -> float:
                with lock:
                    return float(self._value)

        values.ValueClass = Buffered

    def flush(self) -> None:
        with self._lock:
            for value in self._changed:
                value._file.write_value(value._key, value._value, value._timestamp)
            self._changed.clear()


VALUES = ValueBuffer()


def buffer_values() -> None:
    """In a worker of several: metric values kept in memory, flushed to its file (ValueBuffer)."""
    if multiprocess_dir() is not None:
        VALUES.install()


def forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of workers that are gone (a crash, a restart), so they stop counting."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = int(path.rsplit("_", 1)[1].removesuffix(".db"))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            forget_worker(pid, directory)
        except PermissionError:
            pass


def forget_worker(pid: int, directory: str) -> None:
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


class Bounded:
    """A label value from an open set (model names come from clients): the first `limit` seen are
    kept, later ones become "other", so a client sending random names cannot grow /metrics."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return "unknown"
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return "other"
        self.seen.add(value)
        return value


class RecordMetrics:
    """What the recorder learns of each call (model, tokens, cost, cache, retries), counted once per
    call when its row is first built."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("provider", "model")
        self.models = Bounded(MAX_MODELS)
        self.providers = Bounded(MAX_PROVIDERS)
        self.requests = Counter("heliograph_model_requests", "Recorded calls by provider, model and HTTP status.",
                                (*labels, "status"), registry=registry)
        self.duration = Histogram("heliograph_model_request_duration_seconds",
                                  "Total time of a recorded call, by provider and model.", labels,
                                  buckets=DURATION_BUCKETS, registry=registry)
        self.ttft = Histogram("heliograph_time_to_first_token_seconds",
                              "Time to the first streamed token, by provider and model.", labels,
                              buckets=TTFT_BUCKETS, registry=registry)
        self.tokens = Counter("heliograph_tokens", "Tokens by kind: input (not cached), output (not reasoning), "
                              "cache_read, cache_write, reasoning.", (*labels, "kind"), registry=registry)
        self.cost = Counter("heliograph_cost_usd", "Cost of the recorded calls in USD (priced calls only).",
                            labels, registry=registry)
        self.unpriced = Counter("heliograph_unpriced_requests", "Calls whose model has no known price.",
                                labels, registry=registry)
        self.cache = Counter("heliograph_cache_requests", "Calls with caching on, by result (hit or miss).",
                             (*labels, "result"), registry=registry)
        self.refusals = Counter("heliograph_refusals", "Calls refused by a rate limit or a budget.",
                                ("provider", "reason"), registry=registry)
        self.retries = Counter("heliograph_retries", "Extra attempts at the same target (Helicone-Retry-*).",
                               labels, registry=registry)
        self.fallbacks = Counter("heliograph_fallbacks", "Calls answered by a fallback instead of the primary.",
                                 labels, registry=registry)
        self._series: dict[tuple[str, str | None], _Series] = {}     # bounded by Bounded: ≤ 64 × 201

    def observe(self, record: RawRecord, row: Mapping[str, Any]) -> None:
        key = (row["provider"], row["model"])
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._children(*key)
        status = row["status"]
        requests = series.requests.get(status)
        if requests is None:
            requests = series.requests[status] = self.requests.labels(series.provider, series.model, str(status))
        requests.inc()
        if record.error in REFUSALS:
            self.refusals.labels(series.provider, record.error).inc()
            return
        series.duration.observe(row["latency_ms"] / 1000)
        if row["ttft_ms"] is not None:
            series.ttft.observe(row["ttft_ms"] / 1000)
        for counter, column in series.tokens:
            if row[column]:
                counter.inc(row[column])
        if row["cost"]:
            series.cost.inc(row["cost"])
        elif row["pricing_status"] == "unpriced":
            series.unpriced.inc()
        if row["cache_enabled"]:
            (series.hits if record.cache_hit else series.misses).inc()
        if record.attempts:
            retries = len(record.attempts) - len({a.get("fallback_index") for a in record.attempts})
            if retries:
                series.retries.inc(retries)
        if record.fallback_index is not None:
            series.fallbacks.inc()

    def _children(self, provider_name: str, model_name: str | None) -> _Series:
        """A (provider, model)'s metric children, looked up once: `labels()` costs a few µs a call."""
        provider, model = self.providers(provider_name), self.models(model_name)
        labels = (provider, model)
        return _Series(
            provider=provider, model=model, requests={},
            duration=self.duration.labels(*labels), ttft=self.ttft.labels(*labels),
            tokens=[(self.tokens.labels(*labels, kind), column) for kind, column in TOKEN_KINDS],
            cost=self.cost.labels(*labels), unpriced=self.unpriced.labels(*labels),
            hits=self.cache.labels(*labels, "hit"), misses=self.cache.labels(*labels, "miss"),
            retries=self.retries.labels(*labels), fallbacks=self.fallbacks.labels(*labels))


@dataclass(slots=True)
class _Series:
    provider: str
    model: str
    requests: dict[int, Counter]
    duration: Histogram
    ttft: Histogram
    tokens: list[tuple[Counter, str]]
    cost: Counter
    unpriced: Counter
    hits: Counter
    misses: Counter
    retries: Counter
    fallbacks: Counter


class Mirrored:
    """A counter fed from a running total kept elsewhere (the recorder's plain ints): each sync adds
    what the total grew by since the last one."""

    def __init__(self, counter: Counter, total: Callable[[], int]) -> None:
        self.counter, self.total, self.last = counter, total, 0

    def sync(self) -> None:
        now = self.total()
        if now > self.last:
            self.counter.inc(now - self.last)
            self.last = now


class RuntimeMetrics:
    """The process's state (in flight, queue, journal) and the recorder's totals, read when synced:
    at each scrape, and every second in every worker when there are several."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.gauges: list[tuple[Gauge, Callable[[], float]]] = []
        self.mirrored: list[Mirrored] = []
        self.batch = Histogram("heliograph_recorder_batch_duration_seconds",
                               "Time to write one batch of records to the store.", buckets=BATCH_BUCKETS,
                               registry=registry)
        Gauge("heliograph_build_info", "Always 1; the version in a label.", ("version",),
              multiprocess_mode="max", registry=registry).labels(__version__).set(1)

    def gauge(self, name: str, help: str, read: Callable[[], float],
              mode: Literal["livesum", "livemax"] = "livesum") -> None:
        self.gauges.append((Gauge(name, help, multiprocess_mode=mode, registry=self.registry), read))

    def counter(self, name: str, help: str, total: Callable[[], int]) -> None:
        self.mirrored.append(Mirrored(Counter(name, help, registry=self.registry), total))

    def sync(self) -> None:
        for gauge, read in self.gauges:
            gauge.set(read())
        for mirrored in self.mirrored:
            mirrored.sync()


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text of this process, or of every worker in multiprocess mode."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(registry)
    VALUES.flush()
    forget_dead_workers(directory)
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined, directory)  # type: ignore[no-untyped-call]
    return generate_latest(combined)
