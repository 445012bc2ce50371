"""No answered call is missing from the log, seen from outside through real `heliograph serve`
processes: reused ids, refusals, shutdown, a store that hangs, a journal that can't be written."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.requests import Request

from heliograph.app import JOURNAL_DEGRADED_AFTER, create_app
from heliograph.settings import Settings
from heliograph.testing import FakeUpstream

from .conftest import Gateway, free_port, postgres_base_url, start_gateway

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def chat(gw: Gateway, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + "/openai/v1/chat/completions", json=CHAT,
                      headers={**gw.auth, "Authorization": "Bearer sk-provider", **headers}, timeout=30)


def metric(gw: Gateway, name: str) -> float:
    line = next(l for l in httpx.get(gw.url + "/metrics").text.splitlines() if l.startswith(name + " "))
    return float(line.split()[1])


# -- 7: a reused request id never costs a call its record ---------------------------------------

def test_a_reused_request_id_gets_a_fresh_id_and_both_calls_are_recorded(gateway: Gateway) -> None:
    chosen = str(uuid.uuid4())
    first = chat(gateway, **{"Helicone-Request-Id": chosen})
    assert first.headers["helicone-id"] == chosen
    gateway.record(chosen)
    before = metric(gateway, "heliograph_duplicate_request_ids_total")
    second = chat(gateway, **{"Helicone-Request-Id": chosen})
    assert second.status_code == 200
    fresh = second.headers["helicone-id"]
    assert fresh != chosen
    assert gateway.record(fresh)["request_id"] == fresh
    assert metric(gateway, "heliograph_duplicate_request_ids_total") == before + 1


def test_an_async_log_with_a_used_id_is_recorded_under_a_fresh_one(gateway: Gateway) -> None:
    used = chat(gateway).headers["helicone-id"]
    gateway.record(used)
    body = {"providerRequest": {"url": "https://api.openai.com/v1/chat/completions", "json": CHAT,
                                "meta": {"Helicone-Request-Id": used}},
            "providerResponse": {"json": {"model": "gpt-4o-mini"}, "status": 200, "headers": {}}}
    r = httpx.post(gateway.url + "/api/oai/v1/log", json=body, headers={"Authorization": f"Bearer {gateway.key}"})
    assert r.status_code == 200
    assert r.headers["helicone-id"] != used
    assert gateway.record(r.headers["helicone-id"])["provider"] == "openai"


def test_an_async_log_with_an_impossible_token_count_is_refused_by_name(gateway: Gateway) -> None:
    body = {"providerRequest": {"url": "https://api.openai.com/v1/chat/completions", "json": CHAT, "meta": {}},
            "providerResponse": {"json": {"usage": {"prompt_tokens": 2**63, "completion_tokens": 1}},
                                 "status": 200, "headers": {}}}
    r = httpx.post(gateway.url + "/api/oai/v1/log", json=body, headers={"Authorization": f"Bearer {gateway.key}"})
    assert r.status_code == 400
    assert "usage.prompt_tokens" in r.json()["error"]
    # …and logging goes on.
    assert gateway.record(chat(gateway).headers["helicone-id"])


# -- 8: every refusal after authentication is on the record ----------------------------------------

@pytest.mark.parametrize("headers, says", [
    ({"Helicone-Cache-Enabled": "true", "Helicone-Cache-Bucket-Max-Size": "50"}, "Bucket"),
    ({"Helicone-Fallback": "[{\"modle\": \"gpt-4o\"}]"}, "allback"),
    ({"Helicone-Fallback": "not json"}, "allback"),
])
def test_a_refused_request_is_recorded_with_its_reason(gateway: Gateway, headers: dict[str, str], says: str) -> None:
    r = chat(gateway, **headers)
    assert r.status_code == 400
    assert says in r.json()["error"]["message"]
    record = gateway.record(r.headers["helicone-id"])
    assert record["response_status"] == 400
    assert says in orjson.dumps(record["response_body"]).decode()
    assert record["attempts"] == []


def test_an_unknown_provider_for_a_known_key_is_recorded_too(gateway: Gateway) -> None:
    r = httpx.post(gateway.url + "/nosuchprovider/v1/chat/completions", json=CHAT, headers=gateway.auth)
    assert r.status_code == 404
    assert gateway.record(r.headers["helicone-id"])["response_status"] == 404


def test_an_unauthenticated_request_is_not_recorded_but_answered_like_any_other(gateway: Gateway) -> None:
    r = httpx.post(gateway.url + "/openai/v1/chat/completions", json=CHAT)
    assert r.status_code == 401
    assert r.headers["server-timing"].startswith("gateway;dur=") and "helicone-status" not in r.headers
    unknown = httpx.get(f"{gateway.url}/api/v1/request/{r.headers['helicone-id']}",
                        headers={"Authorization": f"Bearer {gateway.key}"})
    assert unknown.status_code == 404


@pytest.mark.parametrize("headers, status", [({"Helicone-Retry-Num": "x", "Helicone-Retry-Enabled": "true"}, 400),
                                             ({"X-Fake-Scenario": "status=503"}, 503)])
def test_every_error_answer_carries_the_id_and_server_timing(gateway: Gateway, headers: dict[str, str],
                                                             status: int) -> None:
    r = chat(gateway, **headers)
    assert r.status_code == status
    assert "gateway;dur=" in r.headers["server-timing"] and "helicone-status" not in r.headers
    assert gateway.record(r.headers["helicone-id"])["response_status"] == status


# -- 5: shutdown --------------------------------------------------------------------------------

def test_a_stream_cut_by_the_shutdown_grace_is_recorded_as_partial(fake: FakeUpstream, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_SHUTDOWN_TIMEOUT": "4",
                                                      "HELIOGRAPH_DRAIN_TIMEOUT": "1"})
    request_id = str(uuid.uuid4())
    body = {**CHAT, "stream": True}
    headers = {**gw.auth, "Authorization": "Bearer k", "Helicone-Request-Id": request_id,
               "X-Fake-Scenario": "chunk-delay=400,reply=" + "word%20" * 40}
    with httpx.stream("POST", gw.url + "/openai/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
        chunks = r.iter_raw()
        assert next(chunks)
        started = time.monotonic()
        gw.process.send_signal(signal.SIGTERM)
        with pytest.raises(httpx.HTTPError):
            for _ in chunks:
                pass
    assert gw.process.wait(timeout=15) in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 4.5
    with sqlite3.connect(gw.db_path) as conn:
        status, partial, error = conn.execute("SELECT status, partial, error FROM requests WHERE id = ?",
                                              (request_id,)).fetchone()
    assert (status, bool(partial), error) == (200, True, "shutdown")


def test_shutdown_with_the_store_locked_ends_within_the_budget(fake: FakeUpstream, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_SHUTDOWN_TIMEOUT": "5",
                                                      "HELIOGRAPH_DRAIN_TIMEOUT": "2"})
    conn = sqlite3.connect(gw.db_path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        ids = [chat(gw).headers["helicone-id"] for _ in range(20)]
        started = time.monotonic()
        gw.process.send_signal(signal.SIGTERM)
        gw.process.wait(timeout=30)
        took = time.monotonic() - started
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert took < 5.5, f"shutdown took {took:.1f} s with a 5 s budget"
    restarted = start_gateway(tmp_path, fake.url, reuse_key=gw.key)
    try:
        for request_id in ids:
            restarted.record(request_id)
    finally:
        restarted.stop()


# -- 3: the journal must be writable --------------------------------------------------------------

def test_serve_refuses_to_start_with_a_journal_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the journal folder should be")
    env = {"HELIOGRAPH_DB_URL": f"sqlite:///{tmp_path / 'hg.db'}", "HELIOGRAPH_JOURNAL_DIR": str(blocker / "journal"),
           "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "heliograph.cli.main", "serve", "--port", str(free_port())],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "journal" in result.stderr + result.stdout and "HELIOGRAPH_JOURNAL_DIR" in result.stderr + result.stdout


def test_serve_says_where_the_journal_is(fake: FakeUpstream, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_LOG_LEVEL": "info"})
    gw.stop()
    assert f"journal (records waiting for the store): {(tmp_path / 'journal').resolve()}" in gw.log()


# -- 6: /readyz answers fast, and says degraded while records wait ---------------------------------

class Partition:
    """A TCP relay to PostgreSQL that can stop passing bytes, as a network partition does."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            while self.frozen.is_set():
                time.sleep(0.05)    # hold the bytes: neither side hears anything
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.frozen.clear()
        self.listener.close()
        for s in self.sockets:
            s.close()


@pytest.fixture
def partition() -> Iterator[Partition]:
    base = httpx.URL(postgres_base_url().replace("postgresql://", "http://"))
    relay = Partition((base.host, base.port or 5432))
    yield relay
    relay.close()


def test_readyz_answers_within_a_second_while_postgres_is_partitioned(
        fake: FakeUpstream, tmp_path: Path, partition: Partition, fresh_postgres: object) -> None:
    url = fresh_postgres()  # type: ignore[operator]
    schema_part = url.split("?", 1)[1]
    user = httpx.URL(postgres_base_url().replace("postgresql://", "http://")).username or "postgres"
    db_url = f"postgresql://{user}@127.0.0.1:{partition.port}/test?{schema_part}"
    gw = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_DB_URL": db_url})
    try:
        assert httpx.get(gw.url + "/readyz").status_code == 200
        partition.frozen.set()
        for _ in range(3):
            started = time.monotonic()
            r = httpx.get(gw.url + "/readyz", timeout=10)
            assert time.monotonic() - started < 1.5
            assert r.status_code == 503 and "store" in r.json()
        partition.frozen.clear()
    finally:
        partition.frozen.clear()
        gw.stop(signal.SIGKILL)


def test_readyz_is_degraded_while_records_wait_in_the_journal(tmp_path: Path) -> None:
    app = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'hg.db'}", journal_dir=str(tmp_path / "journal")))
    scope = {"type": "http", "method": "GET", "path": "/readyz", "headers": []}
    ready = asyncio.run(app.readyz(Request(scope)))
    assert ready.status_code == 200 and orjson.loads(ready.body)["status"] == "ready"
    app.recorder.journal_since = time.monotonic() - JOURNAL_DEGRADED_AFTER - 1
    app.recorder.last_store_error = "OperationalError: database is locked"
    degraded = asyncio.run(app.readyz(Request(scope)))
    body = orjson.loads(degraded.body)
    assert degraded.status_code == 200 and body["status"] == "degraded"
    assert "database is locked" in body["journal"] and "31 s" in body["journal"]
    app.store.close()
