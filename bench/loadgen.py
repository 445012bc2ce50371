"""Open-loop load generation with asyncio + aiohttp, free of coordinated omission.

Sends are scheduled on a fixed clock (request i is due at t0 + i / rate) whatever the responses do,
and each latency is measured from the request's *scheduled* time, so a target that stalls is charged
for the queue it causes instead of silently slowing the generator down. How late the generator itself
was (`lag_ms`) is reported beside, so a generator that could not keep up is visible.

`run_open_loop` measures non-streaming calls; `run_streams` measures time to first byte of SSE
streams and the gaps between the events as they arrive (to see whether a proxy batches chunks).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

REQUEST_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 15.0
MAX_CONNECTIONS = 1000


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
    sent: int = 0
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    service_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    gateway_ms: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target, "rate": self.rate, "duration_s": self.duration, "sent": self.sent,
            "ok": self.ok, "errors": self.errors, "error_kinds": self.error_kinds,
            "achieved_rps": round(self.ok / self.elapsed, 1) if self.elapsed else 0.0,
            "latency_ms": summary(self.latencies_ms),
            "service_ms": summary(self.service_ms),
            "generator_lag_ms": summary(self.lag_ms),
        }
        if self.gateway_ms:
            out["server_timing_gateway_ms"] = summary(self.gateway_ms)
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


async def _schedule(rate: float, duration: float, fire: Any) -> tuple[list[asyncio.Task[None]], float]:
    """Call `fire(scheduled_time)` at t0 + i / rate for i < rate * duration; return the tasks and t0."""
    loop = asyncio.get_running_loop()
    total = int(rate * duration)
    interval = 1.0 / rate
    tasks: list[asyncio.Task[None]] = []
    t0 = loop.time() + 0.05
    i = 0
    while i < total:
        now = loop.time()
        while i < total and t0 + i * interval <= now:
            tasks.append(loop.create_task(fire(t0 + i * interval)))
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, t0 + i * interval - loop.time()))
    return tasks, t0


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
                        duration: float) -> StepResult:
    """POST `body` to `url` at a fixed `rate` for `duration` seconds; wait for every answer."""
    result = StepResult(target, rate, duration)
    loop = asyncio.get_running_loop()
    last_done = 0.0

    async with _session() as session:
        async def fire(scheduled: float) -> None:
            nonlocal last_done
            start = loop.time()
            result.sent += 1
            result.lag_ms.append((start - scheduled) * 1000)
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
                    gateway = _server_timing_gateway(resp.headers.get("server-timing"))
            except asyncio.CancelledError:
                result.error("timeout")
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                result.error(type(exc).__name__)
                return
            done = loop.time()
            last_done = max(last_done, done)
            if 200 <= status < 300:
                result.ok += 1
                result.latencies_ms.append((done - scheduled) * 1000)
                result.service_ms.append((done - start) * 1000)
                if gateway is not None:
                    result.gateway_ms.append(gateway)
            else:
                result.error(f"http_{status}")

        tasks, t0 = await _schedule(rate, duration, fire)
        await _drain(tasks)
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

    def report(self) -> dict[str, Any]:
        # A gap far below the upstream's spacing means two events came out of the proxy together.
        batched_below = self.chunk_delay_ms / 4
        batched = sum(1 for gap in self.gaps_ms if gap < batched_below)
        return {
            "target": self.target, "rate": self.rate, "duration_s": self.duration,
            "chunk_delay_ms": self.chunk_delay_ms, "sent": self.sent, "ok": self.ok,
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
    loop = asyncio.get_running_loop()

    async with _session() as session:
        async def fire(scheduled: float) -> None:
            result.sent += 1
            arrivals: list[float] = []
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    got_headers = loop.time()
                    if resp.status != 200:
                        await resp.read()
                        result.errors += 1
                        result.error_kinds[f"http_{resp.status}"] = result.error_kinds.get(f"http_{resp.status}", 0) + 1
                        return
                    async for line in resp.content:
                        if line.startswith(b"data:"):
                            arrivals.append(loop.time())
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                result.errors += 1
                kind = type(exc).__name__
                result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
                return
            done = loop.time()
            if not arrivals:
                result.errors += 1
                result.error_kinds["empty_stream"] = result.error_kinds.get("empty_stream", 0) + 1
                return
            result.ok += 1
            result.headers_ms.append((got_headers - scheduled) * 1000)
            result.ttfb_ms.append((arrivals[0] - scheduled) * 1000)
            result.total_ms.append((done - scheduled) * 1000)
            result.gaps_ms.extend((b - a) * 1000 for a, b in zip(arrivals, arrivals[1:]))
            result.events.append(len(arrivals))

        tasks, _ = await _schedule(rate, duration, fire)
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
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last = exc
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s: {last}")
