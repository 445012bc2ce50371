"""No answered request is ever missing from the store: journal when the store is locked, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from heliograph.testing import FakeUpstream

from .conftest import Gateway, start_gateway

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "durable"}]}


async def load(gateway: Gateway, count: int, on_progress: dict[int, threading.Event],
               pace: float = 0.0) -> list[str]:
    """Send `count` calls, 16 at a time; return the Helicone-Id of every answered one."""
    answered: list[str] = []
    semaphore = asyncio.Semaphore(16)
    async with httpx.AsyncClient(timeout=30) as http:
        async def one(n: int) -> None:
            async with semaphore:
                body = {**BODY, "stream": n % 3 == 0}
                r = await http.post(gateway.url + "/openai/v1/chat/completions", json=body,
                                    headers={**gateway.auth, "Authorization": "Bearer k"})
                assert r.status_code == 200, r.text
                answered.append(r.headers["helicone-id"])
                if len(answered) in on_progress:
                    on_progress[len(answered)].set()
                await asyncio.sleep(pace)
        await asyncio.gather(*(one(n) for n in range(count)))
    return answered


def hold_exclusive_lock(db: Path, start: threading.Event, seconds: float, held: threading.Event) -> None:
    start.wait()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    held.set()
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()


def stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM requests")}


def journal_bytes(gateway: Gateway) -> float:
    metrics = httpx.get(gateway.url + "/metrics").text
    line = next(l for l in metrics.splitlines() if l.startswith("heliograph_journal_bytes "))
    return float(line.split()[1])


def test_store_locked_mid_load_then_sigterm_loses_nothing(fake: FakeUpstream, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, fake.url)
    start_lock, held = threading.Event(), threading.Event()
    locker = threading.Thread(target=hold_exclusive_lock, args=(gw.db_path, start_lock, 3.0, held))
    locker.start()
    journal_seen: list[float] = []

    def watch_journal() -> None:
        held.wait()
        time.sleep(0.8)
        journal_seen.append(journal_bytes(gw))
    watcher = threading.Thread(target=watch_journal)
    watcher.start()

    answered = asyncio.run(load(gw, 600, {100: start_lock}, pace=0.1))
    assert gw.stop() in (0, -signal.SIGTERM)  # SIGTERM right after the last answer
    locker.join()
    watcher.join()

    assert journal_seen and journal_seen[0] > 0, "the lock should have sent records to the journal"
    missing = set(answered) - stored_ids(gw.db_path)
    assert not missing, f"{len(missing)} answered requests missing from the store"
    assert len(answered) == 600


def test_store_still_locked_at_shutdown_keeps_records_in_the_journal_until_next_start(
        fake: FakeUpstream, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_DRAIN_TIMEOUT": "1"})
    answered = asyncio.run(load(gw, 50, {}))
    conn = sqlite3.connect(gw.db_path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        more = asyncio.run(load(gw, 50, {}))
        assert gw.stop() in (0, -signal.SIGTERM)
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    journal = list((tmp_path / "journal").glob("*.jsonl"))
    assert journal and sum(p.stat().st_size for p in journal) > 0
    assert set(more) - stored_ids(gw.db_path), "the lock should have kept some records out of the store"

    restarted = start_gateway(tmp_path, fake.url)
    try:
        deadline = time.monotonic() + 10
        while set(answered + more) - stored_ids(gw.db_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not set(answered + more) - stored_ids(gw.db_path)
        assert not [p for p in (tmp_path / "journal").glob("*.jsonl") if p.stat().st_size]
    finally:
        restarted.stop()


@pytest.mark.parametrize("count", [0])
def test_journal_replay_is_idempotent(tmp_path: Path, count: int) -> None:
    from heliograph.recording.journal import Journal
    from heliograph.recording.record import RawRecord

    journal = Journal(tmp_path)
    records = [RawRecord(id=f"id-{n}", created_at=0.0, provider="openai", family="openai", method="POST",
                         path="/v1/chat/completions", target_url="", key_id=None, helicone={},
                         request_body=b"{}", response_body=b"\x00\xff") for n in range(3)]
    journal.append(records)
    written: list[str] = []

    def fail(batch: list[RawRecord]) -> None:
        raise sqlite3.OperationalError("database is locked")
    with pytest.raises(sqlite3.OperationalError):
        journal.replay(fail)
    assert journal.size_bytes() > 0
    assert journal.replay(lambda batch: written.extend(r.id for r in batch)) == 3
    assert written == ["id-0", "id-1", "id-2"] and journal.size_bytes() == 0
    assert journal.replay(lambda batch: written.extend(r.id for r in batch)) == count


def test_a_full_queue_spills_to_the_journal_and_nothing_is_lost(tmp_path: Path) -> None:
    from heliograph.recording.journal import Journal
    from heliograph.recording.record import RawRecord
    from heliograph.recording.process import local_write
    from heliograph.recording.recorder import Recorder

    written: list[str] = []
    store_open = threading.Event()

    def insert(rows: list[dict[str, object]], give_way: object = None) -> None:
        if not store_open.is_set():
            raise sqlite3.OperationalError("database is locked")
        written.extend(str(row["id"]) for row in rows)

    recorder = Recorder(local_write(insert, {}), Journal(tmp_path / "journal"), queue_size=2, batch_size=4,
                        flush_ms=10, drain_timeout=5, unavailable=(sqlite3.OperationalError,))
    recorder.start()
    ids = [f"r{n}" for n in range(50)]
    started = time.perf_counter()
    for request_id in ids:
        recorder.submit(RawRecord(id=request_id, created_at=time.time(), provider="openai", family="openai",
                                  method="POST", path="/v1/chat/completions", target_url="", key_id=None,
                                  helicone={}, request_body=b"{}", status=200, response_body=b"{}"))
    assert time.perf_counter() - started < 1, "submit must never wait for the store"
    deadline = time.monotonic() + 5
    while recorder.journaled == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.journaled > 0
    store_open.set()
    recorder.close()
    assert sorted(written) == sorted(ids)
