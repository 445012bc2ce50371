"""Open-loop load generation with asyncio + aiohttp, free of coordinated omission.

Sends are scheduled on a fixed clock (request i is due at t0 + i / rate) whatever the responses do,
and each latency is measured from the request's *scheduled* time, so a target that stalls is charged
for the queue it causes instead of silently slowing the generator down. How late the generator itself
was (`lag_ms`) is reported beside, so a generator that could not keep up is visible.

`run_open_loop` measures non-streaming calls with a minimal keep-alive client (asyncio protocol +
httptools, the parser uvicorn uses), cheap enough to push a few thousand calls a second from one core;
it can count the values of chosen response headers (`watch`, e.g. `Helicone-Cache: HIT`) and give
every request a body of its own (`vary`: a placeholder replaced by a unique number of the same width);
`run_streams` (aiohttp) measures time to first byte of SSE streams and the gaps between the events as
they arrive, to see whether a proxy batches chunks. All times come from `time.perf_counter()` (the
event loop's clock only has millisecond resolution under uvloop).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httptools

REQUEST_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 15.0
MAX_CONNECTIONS = 1000
# Unique across every varied request of this process, so no two steps ever repeat a body.
_NONCE = itertools.count(1)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an already sorted list; NaN when empty."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {f"p{q}": round(percentile(ordered, q), 3) for q in (50, 90, 99)} | {
        "max": round(ordered[-1], 3) if ordered else math.nan}


@dataclass(slots=True)
class StepResult:
    target: str
    rate: float
    duration: float
    sent: int = 0     # scheduled and started
    on_wire: int = 0  # written to a connection (the rest waited for a free connection)
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    service_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    gateway_ms: list[float] = field(default_factory=list)
    per_second: dict[int, int] = field(default_factory=dict)  # answers by second since t0
    headers_seen: dict[str, int] = field(default_factory=dict)  # "name: value" of watched headers, 2xx answers
    elapsed: float = 0.0

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target, "rate": self.rate, "duration_s": self.duration, "sent": self.sent,
            "on_wire": self.on_wire, "ok": self.ok, "errors": self.errors, "error_kinds": self.error_kinds,
            "achieved_rps": round(self.ok / self.elapsed, 1) if self.elapsed else 0.0,
            "latency_ms": summary(self.latencies_ms),
            "service_ms": summary(self.service_ms),
            "generator_lag_ms": summary(self.lag_ms),
        }
        if self.gateway_ms:
            out["server_timing_gateway_ms"] = summary(self.gateway_ms)
        if self.headers_seen:
            out["headers_seen"] = dict(sorted(self.headers_seen.items()))
        if self.per_second:
            out["answered_per_second"] = [self.per_second.get(i, 0) for i in range(max(self.per_second) + 1)]
        return out


def _server_timing_gateway(header: str | None) -> float | None:
    """`gateway;dur=0.123` from Heliograph's Server-Timing header."""
    if not header:
        return None
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        if name == "gateway" and params.startswith("dur="):
            try:
                return float(params[4:])
            except ValueError:
                return None
    return None


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; httptools parses the answers, bodies are dropped."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.timing: bytes | None = None
        self.watched: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"server-timing":
            self.timing = value
        elif lower in self.client.watch:
            self.watched.append(lower + b": " + value)

    def on_message_complete(self) -> None:
        done = time.perf_counter()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), self.timing, done, self.watched))
        if self.parser.should_keep_alive():
            self.client.release(self)
        else:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client.connections.discard(self)
        self._fail(exc or ConnectionResetError("server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(f"{type(exc).__name__}: {exc}"))
        if self.transport is not None:
            self.transport.close()


Answer = tuple[int, bytes | None, float, list[bytes]]  # status, Server-Timing, completion time, watched headers


class RawClient:
    """A minimal keep-alive pool that sends one prebuilt request: cheap enough per call that the
    generator, not the target, is rarely what limits or colours a measurement.

    With `vary`, the placeholder (once in the body) is replaced on every send by a unique decimal
    number of the same width, so every request has a body of its own and the same length.
    """

    def __init__(self, url: str, body: bytes, headers: Mapping[str, str], max_connections: int,
                 watch: tuple[str, ...] = (), vary: bytes | None = None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self.watch = frozenset(name.lower().encode("latin-1") for name in watch)
        self.vary_width = 0
        if vary is not None:
            if body.count(vary) != 1:
                raise ValueError(f"the vary placeholder {vary!r} must occur exactly once in the body")
            self.vary_width = len(vary)
            self.head, _, self.tail = self.request.rpartition(vary)
        self.max_connections = max_connections
        self.idle: list[_Connection] = []
        self.waiting: deque[asyncio.Future[_Connection]] = deque()
        self.connections: set[_Connection] = set()
        self.opening = 0
        self.written = 0

    async def _acquire(self) -> _Connection:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        if len(self.connections) + self.opening >= self.max_connections:
            future: asyncio.Future[_Connection] = asyncio.get_running_loop().create_future()
            self.waiting.append(future)
            return await future
        self.opening += 1
        try:
            _, conn = await asyncio.get_running_loop().create_connection(lambda: _Connection(self), self.host, self.port)
        finally:
            self.opening -= 1
        self.connections.add(conn)
        return conn

    async def open_idle(self, count: int, batch: int = 200) -> None:
        """Open `count` keep-alive connections now, `batch` at a time (a burst of thousands of
        connects would overflow the target's listen backlog and measure SYN retries instead)."""
        loop = asyncio.get_running_loop()
        while len(self.connections) < count:
            made = await asyncio.gather(*(loop.create_connection(lambda: _Connection(self), self.host, self.port)
                                          for _ in range(min(batch, count - len(self.connections)))))
            for _, conn in made:
                self.connections.add(conn)
                self.idle.append(conn)

    def release(self, conn: _Connection) -> None:
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_result(conn)
                return
        self.idle.append(conn)

    async def send(self) -> Answer:
        """Send the request once; returns status, Server-Timing header, the completion time and
        the watched headers (`name: value`, name lower-cased)."""
        conn = await self._acquire()
        assert conn.transport is not None
        waiter = asyncio.get_running_loop().create_future()
        conn.waiter, conn.timing = waiter, None
        if self.watch:
            conn.watched = []
        if self.vary_width:
            nonce = b"%0*d" % (self.vary_width, next(_NONCE))
            conn.transport.write(self.head + nonce + self.tail)
        else:
            conn.transport.write(self.request)
        self.written += 1
        try:
            answer: Answer = await waiter
        except BaseException:
            self.connections.discard(conn)
            conn.closed = True
            conn.transport.close()
            raise
        return answer

    def close(self) -> None:
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        self.connections.clear()


def _start_time() -> float:
    return time.perf_counter() + 0.05  # a moment to set up, so the first sends are not already late


async def _schedule(rate: float, duration: float, fire: Any, t0: float) -> list[asyncio.Task[None]]:
    """Start `fire(due)` at t0 + i / rate (perf_counter seconds) for i < rate * duration; return the tasks.

    The event loop's timers have millisecond resolution, so a send may start up to about a
    millisecond late; latency is still measured from `due`.
    """
    loop = asyncio.get_running_loop()
    total = int(rate * duration)
    interval = 1.0 / rate
    tasks: list[asyncio.Task[None]] = []
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and t0 + i * interval <= now:
            tasks.append(loop.create_task(fire(t0 + i * interval)))
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
    return tasks


async def _drain(tasks: list[asyncio.Task[None]]) -> int:
    """Wait for outstanding requests; cancel what is still running after DRAIN_TIMEOUT_S."""
    if not tasks:
        return 0
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    return len(pending)


def _session(connections: int = MAX_CONNECTIONS) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S), auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"))


async def run_open_loop(target: str, url: str, body: bytes, headers: Mapping[str, str], rate: float,
                        duration: float, watch: tuple[str, ...] = (), vary: bytes | None = None,
                        connections: int = MAX_CONNECTIONS, preopen: bool = False) -> StepResult:
    """POST `body` to `url` at a fixed `rate` for `duration` seconds; wait for every answer.

    `watch`: response headers whose values are counted over the 2xx answers (`headers_seen`);
    `vary`: a placeholder in `body` replaced by a unique number on every request; `connections`:
    the most open at once (more requests queue in the generator); `preopen`: open them all before
    the first send, as many clients with warm keep-alive pools would have them.
    """
    result = StepResult(target, rate, duration)
    client = RawClient(url, body, {**headers, "Content-Type": "application/json"}, connections, watch, vary)
    last_done = 0.0
    if preopen:
        await client.open_idle(connections)
    t0 = _start_time()

    async def fire(due: float) -> None:
        nonlocal last_done
        start = time.perf_counter()
        result.sent += 1
        result.lag_ms.append((start - due) * 1000)
        try:
            status, timing, done, watched = await client.send()
        except asyncio.CancelledError:
            result.error("timeout")
            raise
        except OSError as exc:
            result.error(type(exc).__name__)
            return
        last_done = max(last_done, done)
        if 200 <= status < 300:
            result.ok += 1
            second = int(done - t0)
            result.per_second[second] = result.per_second.get(second, 0) + 1
            result.latencies_ms.append((done - due) * 1000)
            result.service_ms.append((done - start) * 1000)
            gateway = _server_timing_gateway(timing.decode("latin-1") if timing else None)
            if gateway is not None:
                result.gateway_ms.append(gateway)
            for seen in watched:
                text = seen.decode("latin-1")
                result.headers_seen[text] = result.headers_seen.get(text, 0) + 1
        else:
            result.error(f"http_{status}")

    try:
        tasks = await _schedule(rate, duration, fire, t0)
        await _drain(tasks)
    finally:
        client.close()
    result.on_wire = client.written
    result.elapsed = max(last_done - t0, duration) if last_done else duration
    return result


@dataclass(slots=True)
class StreamResult:
    target: str
    rate: float
    duration: float
    chunk_delay_ms: int
    sent: int = 0
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    headers_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    events: list[int] = field(default_factory=list)

    @property
    def on_wire(self) -> int:
        return self.sent  # aiohttp, no connection cap at these rates: every stream is sent

    def report(self) -> dict[str, Any]:
        # A gap far below the upstream's spacing means two events came out of the proxy together.
        batched_below = self.chunk_delay_ms / 4
        batched = sum(1 for gap in self.gaps_ms if gap < batched_below)
        return {
            "target": self.target, "rate": self.rate, "duration_s": self.duration,
            "chunk_delay_ms": self.chunk_delay_ms, "sent": self.sent, "on_wire": self.on_wire, "ok": self.ok,
            "errors": self.errors, "error_kinds": self.error_kinds,
            "headers_ms": summary(self.headers_ms), "ttfb_ms": summary(self.ttfb_ms),
            "total_ms": summary(self.total_ms),
            "events_per_stream": sorted(set(self.events)),
            "gap_ms": summary(self.gaps_ms) | {"min": round(min(self.gaps_ms), 3) if self.gaps_ms else math.nan},
            "gaps": len(self.gaps_ms), "batched_gaps": batched, "batched_below_ms": batched_below,
        }


async def run_streams(target: str, url: str, body: bytes, headers: Mapping[str, str], rate: float,
                      duration: float, chunk_delay_ms: int) -> StreamResult:
    """Open streams at a fixed rate; time headers, first event, each event's arrival, and the end.

    TTFB is the time from the scheduled send to the first SSE `data:` line read off the socket.
    """
    result = StreamResult(target, rate, duration, chunk_delay_ms)

    async with _session() as session:
        async def fire(scheduled: float) -> None:
            result.sent += 1
            arrivals: list[float] = []
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    got_headers = time.perf_counter()
                    if resp.status != 200:
                        await resp.read()
                        result.errors += 1
                        result.error_kinds[f"http_{resp.status}"] = result.error_kinds.get(f"http_{resp.status}", 0) + 1
                        return
                    async for line in resp.content:
                        if line.startswith(b"data:"):
                            arrivals.append(time.perf_counter())
            except (TimeoutError, aiohttp.ClientError) as exc:
                result.errors += 1
                kind = type(exc).__name__
                result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
                return
            done = time.perf_counter()
            if not arrivals:
                result.errors += 1
                result.error_kinds["empty_stream"] = result.error_kinds.get("empty_stream", 0) + 1
                return
            result.ok += 1
            result.headers_ms.append((got_headers - scheduled) * 1000)
            result.ttfb_ms.append((arrivals[0] - scheduled) * 1000)
            result.total_ms.append((done - scheduled) * 1000)
            result.gaps_ms.extend((b - a) * 1000 for a, b in itertools.pairwise(arrivals))
            result.events.append(len(arrivals))

        tasks = await _schedule(rate, duration, fire, _start_time())
        await _drain(tasks)
    return result


async def wait_http(url: str, timeout: float = 30.0) -> None:
    """Wait until `url` answers any HTTP status."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    return
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = exc
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s: {last}")
