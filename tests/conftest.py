"""Shared fixtures: the fake provider and real `heliograph serve` processes on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from heliograph.proxy.routes import PROVIDERS
from heliograph.testing import FakeUpstream


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "heliograph.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@dataclass
class Gateway:
    url: str
    db_url: str
    db_path: Path
    key: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Helicone-Auth": f"Bearer {self.key}"}

    def record(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The stored record, waiting for the recorder's next flush."""
        deadline = time.monotonic() + timeout
        while True:
            r = httpx.get(f"{self.url}/api/v1/request/{request_id}",
                          headers={"Authorization": f"Bearer {self.key}"})
            if r.status_code == 200:
                data: dict[str, Any] = r.json()["data"]
                return data
            if time.monotonic() > deadline:
                raise AssertionError(f"record {request_id} never appeared: {r.status_code} {r.text}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def cores_of(pid: int) -> set[str]:
    """The cores each thread of `pid` may run on, as /proc lists them ("0", "0-1")."""
    return {(task / "status").read_text().split("Cpus_allowed_list:")[1].split()[0]
            for task in Path(f"/proc/{pid}/task").iterdir()}


def start_gateway(tmp_path: Path, upstream_url: str, *, extra_env: dict[str, str] | None = None,
                  db_name: str = "heliograph.db", reuse_key: str | None = None) -> Gateway:
    port = free_port()
    db_path = tmp_path / db_name
    db_url = f"sqlite:///{db_path}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")}
    env |= {f"HELIOGRAPH_UPSTREAM_{name.upper()}": upstream_url for name in PROVIDERS}
    env |= {"HELIOGRAPH_DB_URL": db_url, "HELIOGRAPH_RECORDER_FLUSH_MS": "20",
            "HELIOGRAPH_UPSTREAM_READ_TIMEOUT": "5", "HELIOGRAPH_LOG_LEVEL": "warning"}
    env |= extra_env or {}
    key = reuse_key
    if key is None:
        created = run_cli("keys", "create", "--name", "tests", "--scope", "admin", env=env)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
    log_path = tmp_path / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "heliograph.cli.main", "serve", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    gateway = Gateway(f"http://127.0.0.1:{port}", db_url, db_path, key, env, process, log_path)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(gateway.url + "/healthz").status_code == 200:
                return gateway
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gateway did not start:\n{gateway.log()}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="session")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), fake.url)
    yield gw
    gw.stop()


@pytest.fixture
def fresh_fake(fake: FakeUpstream) -> FakeUpstream:
    fake.clear()
    return fake


# -- PostgreSQL (DESIGN §5): a fresh schema per use, so runs never see each other's rows ----------

def service_url(variable: str, example: str, what: str) -> str:
    """A test service's URL from the environment; skips the test when unset, fails it when CI is set."""
    url = os.environ.get(variable)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {variable} is not: {what} must be tested in CI")
        pytest.skip(f"{variable} not set (e.g. {example}): {what} not tested")
    return url


def postgres_base_url() -> str:
    return service_url("HELIOGRAPH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test",
                       "the PostgreSQL store")


def redis_url() -> str:
    return service_url("HELIOGRAPH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", "the Redis backend")


def with_search_path(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture
def fresh_postgres() -> Iterator[Callable[[], str]]:
    """Factory: each call creates an empty schema and returns a database URL whose search_path is
    that schema; every schema made is dropped after the test."""
    import uuid

    import psycopg
    base = postgres_base_url()
    made: list[str] = []

    def make() -> str:
        schema = f"hg_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        made.append(schema)
        return with_search_path(base, schema)

    yield make
    if made:
        with psycopg.connect(base, autocommit=True) as conn:
            for schema in made:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
