"""Run the fake upstream standalone: ``python -m heliograph.testing --host 127.0.0.1 --port 9000``.

Prints the URL, then serves until SIGINT or SIGTERM. Requests are not recorded (nobody could read them, and a
benchmark would grow the list without bound). uvloop is used when installed, for throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

from heliograph.testing.fake_upstream import FakeUpstream


async def _serve(host: str, port: int) -> None:
    fake = await FakeUpstream(host, port, record_requests=False).start_async()
    print(fake.url, flush=True)  # alone on its line so scripts can read it
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await fake.stop_async()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m heliograph.testing", description="Run the fake LLM upstream until SIGINT or SIGTERM."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9000, help="port, 0 for any free one (default: %(default)s)")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
