"""Recorder-thread cost of the operations observer (issue 13), per record, in microseconds.

    python bench/observer.py

The observer runs in the recorder thread, which shares the core with the event loop; so its
cost per record is what logging each call takes from throughput. Measured against `to_row`
(parsing, usage, pricing), which the recorder does for every record anyway.
"""

from __future__ import annotations

import logging
import tempfile
import time

from prometheus_client import CollectorRegistry

from heliograph.ops.logs import ACCESS, setup_logging
from heliograph.ops.metrics import RecordMetrics, RuntimeMetrics
from heliograph.ops.observe import CallObserver
from heliograph.recording.process import to_row
from heliograph.recording.record import RawRecord
from heliograph.settings import Settings

BODY = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello in five words."}]}'
ANSWER = (b'{"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024-08-06", "choices": '
          b'[{"index": 0, "message": {"role": "assistant", "content": "Hello there, how are you?"}, '
          b'"finish_reason": "stop"}], "usage": {"prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21}}')


def record(n: int) -> RawRecord:
    raw = RawRecord(id=f"id-{n}", created_at=time.time(), provider="openai", family="openai", method="POST",
                    path="/openai/v1/chat/completions", target_url="https://api.openai.com/v1/chat/completions",
                    key_id="key_1", helicone={"helicone-user-id": "u1"}, request_body=BODY)
    raw.status, raw.response_body, raw.latency_ms, raw.gateway_overhead_ms = 200, ANSWER, 420.0, 0.4
    return raw


def per_record_us(work: object, rows: list[tuple[RawRecord, dict[str, object]]]) -> float:
    started = time.perf_counter()
    for raw, row in rows:
        work(raw, row)  # type: ignore[operator]
    return (time.perf_counter() - started) / len(rows) * 1e6


def main(count: int = 20_000) -> None:
    rows = [(raw, to_row(raw, {})) for raw in (record(n) for n in range(count))]
    started = time.perf_counter()
    for raw, _ in rows:
        to_row(raw, {})
    print(f"to_row (for scale):                 {(time.perf_counter() - started) / count * 1e6:7.1f} µs")
    with tempfile.NamedTemporaryFile("w", suffix=".log") as sink:
        for fmt in ("text", "json"):
            setup_logging(Settings(log_format=fmt))
            for logger in (logging.getLogger(), logging.getLogger(ACCESS)):   # access lines have their own handler
                logger.handlers[0].setStream(sink)   # type: ignore[attr-defined]
            for access in (False, True):
                registry = CollectorRegistry()
                observer = CallObserver(RecordMetrics(registry), RuntimeMetrics(registry), lambda key: "app",
                                        access=access)
                logging.getLogger(ACCESS).setLevel(logging.INFO)
                cost = per_record_us(observer.recorded, rows)
                observer.batch_observed()       # the access lines are written a batch at a time
                print(f"observer, metrics{' + access line (' + fmt + ')' if access else ' only':<22}: {cost:7.1f} µs")


if __name__ == "__main__":
    main()
