"""The recorder's writes in a process of their own (storage/writer.py): same answers as the store's
own insert, refusals and a dead child told apart, and through `heliograph serve`, a writer killed
mid-traffic costs no record and stores none twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from heliograph.recording.process import to_row
from heliograph.recording.ids import new_request_id
from heliograph.recording.record import RawRecord
from heliograph.storage import StoreUnavailable, open_store
from heliograph.storage.writer import StoreRefused, WriterProcess
from heliograph.testing import FakeUpstream

from .conftest import Gateway, start_gateway

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def row(request_id: str, created_at: float = 1_780_000_000.0) -> dict[str, object]:
    record = RawRecord(id=request_id, created_at=created_at, provider="openai", family="openai", method="POST",
                       path="/v1/chat/completions", target_url="https://api.openai.com/v1/chat/completions",
                       key_id=None, helicone={"helicone-property-team": "a"},
                       request_body=b'{"model": "gpt-4o-mini"}', status=200,
                       response_body=b'{"model": "gpt-4o-mini", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}')
    return to_row(record, {})


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[WriterProcess]:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    open_store(url).migrate()
    process = WriterProcess(url)
    yield process
    process.close()


def test_the_writer_answers_as_the_store_does(writer: WriterProcess) -> None:
    ids = [new_request_id() for _ in range(20)]
    assert writer.insert_requests([row(i) for i in ids]) == []
    assert writer.insert_requests([row(i) for i in ids]) == []           # a replayed batch: nothing twice
    taken = writer.insert_requests([row(ids[0], created_at=1_780_000_999.0)])   # the id of another call
    assert len(taken) == 1 and taken[0][0] == ids[0] and taken[0][1] != ids[0]
    store = open_store(writer.db_url)
    assert store.count_requests(project="default") == 21


def test_a_refused_batch_and_a_dead_writer_are_told_apart(writer: WriterProcess) -> None:
    bad = row(new_request_id()) | {"provider": None}         # NOT NULL: the store refuses what it holds
    with pytest.raises(StoreRefused, match="NOT NULL"):
        writer.insert_requests([bad])
    writer.insert_requests([row(new_request_id())])
    first = writer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    time.sleep(0.2)
    # The next batch finds the child gone and starts another; a child killed while it holds a
    # batch is the store being unavailable (the recorder journals the batch).
    writer.insert_requests([row(new_request_id())])
    assert writer.pid not in (None, first)
    stopped = writer.pid
    assert stopped is not None
    os.kill(stopped, signal.SIGSTOP)         # stuck in the middle of a batch…
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(writer.insert_requests, [row(new_request_id())])
        time.sleep(0.2)
        os.kill(stopped, signal.SIGKILL)     # …then gone before it answered
        with pytest.raises(StoreUnavailable, match="writer process stopped"):
            pending.result(timeout=10)
    assert open_store(writer.db_url).count_requests(project="default") == 2


def writer_pids(gateway: Gateway) -> list[int]:
    """The gateway's writer process (its other child is multiprocessing's resource tracker)."""
    children: list[int] = []
    for task in Path(f"/proc/{gateway.process.pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_a_writer_killed_under_traffic_loses_no_call_and_stores_none_twice(tmp_path: Path,
                                                                          fake: FakeUpstream) -> None:
    gateway = start_gateway(tmp_path, fake.url)
    try:
        def call(_: int) -> str:
            r = httpx.post(gateway.url + "/openai/v1/chat/completions", json=CHAT,
                           headers={**gateway.auth, "Authorization": "Bearer sk-provider"}, timeout=30)
            assert r.status_code == 200
            return r.headers["helicone-id"]

        answered = [call(0)]
        gateway.record(answered[0])
        first = writer_pids(gateway)
        assert len(first) == 1
        with ThreadPoolExecutor(8) as pool:
            calls = [pool.submit(call, n) for n in range(120)]
            time.sleep(0.1)
            os.kill(first[0], signal.SIGKILL)
            answered += [c.result() for c in calls]
        gateway.record(answered[-1], timeout=20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with sqlite3.connect(gateway.db_path) as db:
                stored = [r[0] for r in db.execute("SELECT id FROM requests")]
            if len(stored) >= len(answered):
                break
            time.sleep(0.1)
        assert sorted(stored) == sorted(answered)              # every call once, none twice
        assert writer_pids(gateway) not in ([], first)         # a new writer took over
    finally:
        gateway.stop()
    assert "writer process stopped" in gateway.log()
