"""`heliograph demo`: it proves its traffic went through its own gateway into its own store."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from heliograph.demo import DemoFailed, exercise
from heliograph.keys import create_key
from heliograph.settings import Settings
from heliograph.storage import open_store
from heliograph.testing import FakeUpstream

from .conftest import free_port, run_cli

COUNT = 20
RECORD_URL = re.compile(r"curl -s (http://127\.0\.0\.1:(\d+))/api/v1/request/([0-9a-f-]{36}) "
                        r"-H 'Authorization: Bearer (sk-hg-[\w-]+)'")


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")}
    return env | {"HELIOGRAPH_DB_URL": f"sqlite:///{tmp_path / 'demo.db'}", "HELIOGRAPH_RECORDER_FLUSH_MS": "20"}


def stored(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "demo.db") as conn:
        return list(conn.execute(sql))


class ForeignServer(ThreadingHTTPServer):
    """Another program on the port: answers everything with 200 and counts what it got."""

    hits = 0


class _Answer(BaseHTTPRequestHandler):
    def _ok(self) -> None:
        assert isinstance(self.server, ForeignServer)
        self.server.hits += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _ok

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def foreign() -> Iterator[ForeignServer]:
    server = ForeignServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_demo_verifies_itself_and_prints_a_readable_record_id(tmp_path: Path) -> None:
    port = free_port()
    env = demo_env(tmp_path)
    result = run_cli("demo", "--port", str(port), "--requests", str(COUNT), "--exit", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Done: {COUNT} requests sent" in result.stdout and f"all {COUNT} recorded" in result.stdout
    assert "in use" not in result.stdout and "Ctrl+C" not in result.stdout
    match = RECORD_URL.search(result.stdout)
    assert match, result.stdout
    assert int(match[2]) == port
    record_id, key = match[3], match[4]
    assert key in result.stdout.split("Your demo key (shown once): ")[1]
    rows = stored(tmp_path, f"SELECT key_id FROM requests WHERE id = '{record_id}'")
    assert len(rows) == 1 and rows[0][0] is not None
    assert stored(tmp_path, "SELECT count(*) FROM requests") == [(COUNT,)]
    # A managed prompt for /prompts: two versions of one template, each with its calls.
    versions = stored(tmp_path, "SELECT prompt_version, count(*) FROM requests WHERE prompt_id = 'support-answer' "
                                "GROUP BY prompt_version")
    assert len(versions) == 2 and all(version and calls for version, calls in versions), versions

    export = re.search(r"requests export --db (\S+) --since (\S+) --limit 5", result.stdout)
    assert export, result.stdout
    exported = run_cli("requests", "export", "--db", export[1], "--since", export[2], "--limit", "5", env=env)
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 5, exported.stderr


def test_demo_moves_off_a_port_another_program_holds(tmp_path: Path, foreign: ForeignServer) -> None:
    taken = foreign.server_address[1]
    result = run_cli("demo", "--port", str(taken), "--requests", str(COUNT), "--exit", env=demo_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Port {taken} is in use by another program, so the demo uses port" in result.stdout
    match = RECORD_URL.search(result.stdout)
    assert match and int(match[2]) != taken, result.stdout
    assert foreign.hits == 0, "demo traffic reached the other program"
    assert stored(tmp_path, "SELECT count(*) FROM requests") == [(COUNT,)]


def test_demo_traffic_answered_by_another_program_is_a_failure(tmp_path: Path, foreign: ForeignServer) -> None:
    """The check behind the port move: answers that did not come from our gateway never count."""
    store = open_store(f"sqlite:///{tmp_path / 'demo.db'}")
    store.migrate()
    key = create_key(store, "demo", scope="admin")
    base = f"http://127.0.0.1:{foreign.server_address[1]}"
    with FakeUpstream() as fake, pytest.raises(DemoFailed) as failed:
        asyncio.run(exercise(base, key, COUNT, fake, store, Settings()))
    assert failed.value.message.startswith("the first request did not go through this demo's gateway")
    assert "pass --port" in failed.value.message and foreign.hits >= 1
    store.close()


def test_two_demo_runs_on_one_db_keep_every_record(tmp_path: Path) -> None:
    port, env = free_port(), demo_env(tmp_path)
    ids = []
    for _ in range(2):
        result = run_cli("demo", "--port", str(port), "--requests", str(COUNT), "--exit", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "in use" not in result.stdout, "the previous run's closed connections must not hold the port"
        match = RECORD_URL.search(result.stdout)
        assert match, result.stdout
        ids.append(match[3])
    assert ids[0] != ids[1]
    assert stored(tmp_path, "SELECT count(*), count(DISTINCT id), count(DISTINCT key_id) FROM requests") == [
        (2 * COUNT, 2 * COUNT, 2)]
