"""What a kill -9 loses: calls answered before the kill that are not in the store after a restart.

    python bench/kill9.py [--rate 200] [--seconds 6] [--stream-share 0.33] [--runs 3]

Starts the fake provider and `heliograph serve` on SQLite in a temporary folder, sends an
open-loop load (a share of it streamed), kills the gateway with SIGKILL in the middle of it,
restarts it (which replays the journal) and counts: answers fully delivered before the kill,
streams the kill cut, and how many of each are in the store. Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_gateway  # noqa: E402  (the same start-up the tests use)

from heliograph.settings import Settings  # noqa: E402
from heliograph.testing import FakeUpstream  # noqa: E402


async def load(url: str, key: str, rate: float, seconds: float, stream_share: float,
               delivered: list[str], cut: list[str]) -> None:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=2000)) as http:
        async def one(n: int) -> None:
            streamed = (n % 100) < stream_share * 100
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"kill9 {n}"}], "stream": streamed}
            headers = {"Helicone-Auth": f"Bearer {key}", "Authorization": "Bearer k",
                       "X-Fake-Scenario": "chunk-delay=20" if streamed else "delay=5"}
            request_id = None
            try:
                async with http.stream("POST", url + "/openai/v1/chat/completions", json=body, headers=headers) as r:
                    request_id = r.headers.get("helicone-id")
                    async for _ in r.aiter_raw():
                        pass
                if request_id:
                    delivered.append(request_id)
            except httpx.HTTPError:
                if request_id:
                    cut.append(request_id)

        tasks = []
        started = time.monotonic()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks, return_exceptions=True)


def run_once(fake: FakeUpstream, rate: float, seconds: float, stream_share: float,
             flush_ms: int) -> tuple[int, int, int, int]:
    with tempfile.TemporaryDirectory() as folder:
        # The default flush window (the tests' own start-up shortens it).
        gw = start_gateway(Path(folder), fake.url, extra_env={"HELIOGRAPH_RECORDER_FLUSH_MS": str(flush_ms)})
        delivered: list[str] = []
        cut: list[str] = []

        def kill_later() -> None:
            time.sleep(seconds / 2)
            os.kill(gw.process.pid, signal.SIGKILL)
        threading.Thread(target=kill_later, daemon=True).start()
        asyncio.run(load(gw.url, gw.key, rate, seconds, stream_share, delivered, cut))
        gw.process.wait()
        restarted = start_gateway(Path(folder), fake.url, reuse_key=gw.key)
        time.sleep(2)
        restarted.stop()
        with sqlite3.connect(gw.db_path) as conn:
            stored = {row[0] for row in conn.execute("SELECT id FROM requests")}
        return len(delivered), len(set(delivered) - stored), len(cut), len(set(cut) - stored)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--stream-share", type=float, default=0.33)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flush-ms", type=int, default=Settings().recorder_flush_ms)
    args = parser.parse_args()
    with FakeUpstream() as fake:
        for run in range(args.runs):
            delivered, lost, cut, cut_lost = run_once(fake, args.rate, args.seconds, args.stream_share, args.flush_ms)
            print(f"run {run + 1}: {delivered} answers delivered before the kill, {lost} missing after restart; "
                  f"{cut} streams cut by the kill, {cut_lost} of them missing")


if __name__ == "__main__":
    main()
