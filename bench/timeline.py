"""When are the slow calls? Each call's send time and latency at a fixed rate, and the slow ones grouped.

    python bench/timeline.py [--rate 500] [--calls 5000] [--src /tmp/build/src] [--env HELIOGRAPH_X=value]

A tail (p99) made by something periodic shows as groups of slow calls at a steady spacing: the
recorder's cycle (`recorder_flush_ms` plus the write) is ~55 ms at 500 req/s, a reload every 1 s.
Heliograph runs alone on core 1 (one core, the recorder a thread) unless `--cores 0,1`; run this
script under `taskset -c 0` so the load stays off it. See issue 14's notes: at 500 req/s on one
core the slow calls came once per recorder cycle, 1–3 calls of 3–6 ms each, until the recorder
gave way to the event loop early in each batch (recording/recorder.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import procs as P
from run import REQUEST, ROUTE, headers_for, say

GROUP_GAP_S = 0.02      # slow calls closer than this are one event


async def timeline(url: str, key: str, rate: float, calls: int) -> list[tuple[float, float]]:
    """(send time in s from the first, latency in ms) of every call, sent open-loop at `rate`."""
    body = json.dumps(REQUEST).encode()
    await loadgen.run_open_loop("warmup", url, body, headers_for(key, "warmup"), 200, 1.0)
    client = loadgen.RawClient(url, body, {**headers_for(key, "timeline"), "Content-Type": "application/json"}, 200)
    calls_seen: list[tuple[float, float]] = []
    start = time.perf_counter()

    async def one() -> None:
        sent = time.perf_counter()
        await client.send()
        calls_seen.append((sent - start, (time.perf_counter() - sent) * 1000))

    tasks = []
    for n in range(calls):
        if (wait := start + n / rate - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks)
    client.close()
    return sorted(calls_seen)


def report(calls: list[tuple[float, float]]) -> None:
    q = statistics.quantiles([latency for _, latency in calls], n=100)
    say(f"{len(calls)} calls: p50 {q[49]:.3f}  p90 {q[89]:.3f}  p99 {q[98]:.3f} ms")
    groups: list[list[float]] = []      # [first, last, count, worst]
    for sent, latency in calls:
        if latency <= q[97]:
            continue
        if groups and sent - groups[-1][1] < GROUP_GAP_S:
            groups[-1][1:] = [sent, groups[-1][2] + 1, max(groups[-1][3], latency)]
        else:
            groups.append([sent, sent, 1, latency])
    spacing = [b[0] - a[0] for a, b in zip(groups, groups[1:])]
    say(f"slowest 2 % (> {q[97]:.2f} ms): {len(groups)} groups"
        + (f", median spacing {1000 * statistics.median(spacing):.0f} ms" if spacing else ""))
    say("  " + "  ".join(f"{first:.3f}s×{count:.0f}≤{worst:.1f}ms" for first, _, count, worst in groups))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--src", help="a build's src folder, first on PYTHONPATH (default: the installed one)")
    parser.add_argument("--cores", default=str(P.PROXY_CORE), help="Heliograph's cores [%(default)s]")
    parser.add_argument("--env", action="append", default=[], metavar="HELIOGRAPH_X=value")
    args = parser.parse_args()
    processes = P.Processes(Path(tempfile.mkdtemp(prefix="heliograph-timeline-")))

    def measure() -> None:
        mock_url, _ = P.start_nginx(processes)
        url, _, key = P.start_heliograph(processes, "heliograph", mock_url, processes.workdir / "h.db",
                                         dict(item.split("=", 1) for item in args.env), cores=args.cores, src=args.src)
        report(asyncio.run(timeline(url + ROUTE, key, args.rate, args.calls)))

    if status := P.guarded("bench/timeline.py", processes, False, measure):
        sys.exit(status)


if __name__ == "__main__":
    main()
