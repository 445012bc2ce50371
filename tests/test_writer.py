"""The recorder's work in a process of its own (writer.py): the same rows and answers as in the
gateway's process, refusals and a dead child told apart, and through `heliograph serve`, a writer
killed mid-traffic costs no record and stores none twice."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import heliograph.ops

from heliograph.recording.process import build_rows
from heliograph.recording.ids import new_request_id
from heliograph.recording.record import RawRecord
from heliograph.settings import Settings
from heliograph.storage import StoreUnavailable, open_store
from heliograph.ops.logs import log_config
from heliograph.ops.metrics import TOKEN_KINDS
from heliograph.ops.observe import OBSERVED_COLUMNS
from heliograph.writer import StoreRefused, WriterProcess
from heliograph.testing import FakeUpstream

from .conftest import Gateway, start_gateway

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def record(request_id: str, created_at: float = 1_780_000_000.0) -> RawRecord:
    return RawRecord(id=request_id, created_at=created_at, provider="openai", family="openai", method="POST",
                     path="/v1/chat/completions", target_url="https://api.openai.com/v1/chat/completions",
                     key_id=None, helicone={"helicone-property-team": "a"},
                     request_body=b'{"model": "gpt-4o-mini"}', status=200,
                     response_body=b'{"model": "gpt-4o-mini", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}')


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[WriterProcess]:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    open_store(url).migrate()
    process = WriterProcess(url)
    yield process
    process.close()


def test_the_writer_builds_and_stores_as_the_gateway_would(writer: WriterProcess, tmp_path: Path) -> None:
    ids = [new_request_id() for _ in range(20)]
    written = writer.write([record(i) for i in ids])
    assert written.failure is None and written.reassigned == []
    here = build_rows([record(i) for i in ids], {})
    assert written.rows == [{k: row[k] for k in OBSERVED_COLUMNS} for row in here.rows]
    assert written.rows[0]["cost"] > 0 and "response_body" not in written.rows[0]
    assert writer.write([record(i) for i in ids]).reassigned == []          # a replayed batch: nothing twice
    taken = writer.write([record(ids[0], created_at=1_780_000_999.0)]).reassigned    # another call's id
    assert len(taken) == 1 and taken[0][0] == ids[0] and taken[0][1] != ids[0]
    store = open_store(writer.db_url)
    assert store.count_requests(project="default") == 21
    assert store.get_request(ids[3], project="default")["model"] == "gpt-4o-mini"


def test_the_writer_logs_each_call_once(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    open_store(url).migrate()
    writer = WriterProcess(url, log_config=log_config(Settings()), key_name=lambda key_id: f"name-of-{key_id}")
    try:
        batch = [record(new_request_id()) for _ in range(3)]
        batch[1].key_id = "key_7"
        writer.write(batch)
        for r in batch:
            r.observed = True       # what the recorder marks once the gateway's observer has seen them
        writer.write(batch)         # as a batch written again record by record, or replayed: no second line
    finally:
        writer.close()
    lines = [line for line in capfd.readouterr().err.splitlines() if "heliograph.access" in line]
    assert [line.split("id=")[1].split()[0] for line in lines] == [r.id for r in batch]
    assert "key=name-of-key_7" in lines[1] and "model=gpt-4o-mini" in lines[1] and "status=200" in lines[1]


def test_the_writer_gives_way_to_what_shares_its_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its batch no longer runs through before whatever else waits for its core: with the writer
    beside the load (bench --writer-core 0), p99 at 500 req/s 2.2-2.4 ms without, 0.9-1.1 with."""
    import sys
    import threading
    from multiprocessing import Pipe

    from heliograph.recording import process as process_module
    from heliograph.writer import FIELDS, serve

    callers: set[str] = set()
    monkeypatch.setattr(os, "sched_yield", lambda: callers.add(sys._getframe(2).f_code.co_name))
    monkeypatch.setattr(process_module, "GIVE_WAY_S", 60.0)     # however slow this machine is
    url = f"sqlite:///{tmp_path / 'h.db'}"
    open_store(url).migrate()
    ours, theirs = Pipe()
    child = threading.Thread(target=serve, args=(theirs, url, {}))
    child.start()
    batch = [record(new_request_id()) for _ in range(10)]
    ours.send(([FIELDS(r) for r in batch], ["key"] * len(batch)))
    kind, *_ = ours.recv()
    ours.send(None)
    child.join(10)
    assert kind == "ok"
    assert {"build_rows", "_access_lines"} <= callers and callers & {"insert_requests", "_insert_new_requests"}, callers


def test_a_refused_batch_and_a_dead_writer_are_told_apart(writer: WriterProcess) -> None:
    bad = record(new_request_id())
    bad.provider = None  # type: ignore[assignment]     # NOT NULL: the store refuses what it holds
    refused = writer.write([bad])
    assert isinstance(refused.failure, StoreRefused) and "NOT NULL" in str(refused.failure)
    assert len(refused.rows) == 1                                  # the observer still sees the call
    assert writer.write([record(new_request_id())]).failure is None
    first = writer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    time.sleep(0.2)
    # The next batch finds the child gone and starts another; a child killed while it holds a
    # batch is the store being unavailable (the recorder journals the batch).
    assert writer.write([record(new_request_id())]).failure is None
    assert writer.pid not in (None, first)
    stopped = writer.pid
    assert stopped is not None
    os.kill(stopped, signal.SIGSTOP)         # stuck in the middle of a batch…
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(writer.write, [record(new_request_id())])
        time.sleep(0.2)
        os.kill(stopped, signal.SIGKILL)     # …then gone before it answered
        with pytest.raises(StoreUnavailable, match="writer process stopped"):
            pending.result(timeout=10)
    assert open_store(writer.db_url).count_requests(project="default") == 2


def writer_pids(gateway: Gateway) -> list[int]:
    """The gateway's writer process."""
    children: list[int] = []
    for task in Path(f"/proc/{gateway.process.pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [pid for pid in children if b"heliograph.writer" in Path(f"/proc/{pid}/cmdline").read_bytes()]


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


@pytest.mark.parametrize(("cores", "workers", "recorder_process", "expected"), [
    (2, 1, True, True),      # a core the proxy does not fill: the writer gets it
    (1, 1, True, False),     # one core: a thread, no pickling
    (2, 2, True, False),     # the workers fill both cores: a thread each
    (4, 2, True, True),
    (2, 1, False, False),    # turned off
])
def test_a_writer_process_only_where_a_core_is_to_spare(monkeypatch: pytest.MonkeyPatch, cores: int, workers: int,
                                                        recorder_process: bool, expected: bool) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert Settings(workers=workers, recorder_process=recorder_process).writer_process is expected


def test_the_writer_sends_back_every_column_the_observer_reads() -> None:
    """Rows come back from a writer process with OBSERVED_COLUMNS only: a column read in ops/
    (access line, metrics, spans) and missing there would be a KeyError per call."""
    ops = Path(heliograph.ops.__file__).parent
    read = {name for path in ops.glob("*.py") for name in re.findall(r'\brow\["(\w+)"\]', path.read_text())}
    read |= {column for _, column in TOKEN_KINDS}       # metrics read these as row[column]
    assert len(read) > 15 and read <= set(OBSERVED_COLUMNS)
