"""Issue 13: the deployment files, and the scale-out topology they describe run as processes.

No container runtime runs here, so `deploy/docker-compose.yml` is checked in two ways: its commands
and environment must be ones `heliograph` accepts, and the same topology, started from the same
commands and environment, must work: two `serve` processes on one PostgreSQL and one Redis behind
a small TCP load balancer written here; every call recorded once, rate limits and budgets shared,
analytics identical from both processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from heliograph.proxy.routes import known_names
from heliograph.settings import load_settings
from heliograph.testing import FakeUpstream

from .conftest import Gateway, free_port, redis_url, run_cli

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def resolved(environment: dict[str, Any]) -> dict[str, str]:
    """Compose's `${VAR:-default}` with nothing set: the defaults."""
    return {name: INTERPOLATION.sub(lambda m: m.group(2) or "", str(value)) for name, value in environment.items()}


def heliograph_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if str(s.get("image", "")).startswith("heliograph")}


def cli_accepts(command: list[str], env: dict[str, str]) -> None:
    assert command[0] == "heliograph", command
    done = run_cli(*command[1:], "--help", env=env)
    assert done.returncode == 0, f"{command}: {done.stderr}"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")}


# -- the files -----------------------------------------------------------------------------------

def test_compose_commands_and_environment_are_accepted_by_heliograph() -> None:
    services = heliograph_services()
    assert {"migrate", "gateway-1", "gateway-2"} <= set(services)
    assert {"postgres", "redis", "lb"} <= set(compose()["services"])
    for service in services.values():
        env = resolved(service.get("environment", {}))
        load_settings(environ=env, providers=known_names())     # raises on an unknown or bad variable
        cli_accepts(service["command"], clean_env() | env)
    gateway = services["gateway-1"]
    env = resolved(gateway["environment"])
    assert env["HELIOGRAPH_DB_URL"].startswith("postgresql://") and env["HELIOGRAPH_REDIS_URL"].startswith("redis://")
    assert env["HELIOGRAPH_HOST"] == "0.0.0.0" and env["HELIOGRAPH_JOURNAL_DIR"]
    assert gateway["command"] == services["gateway-2"]["command"] == ["heliograph", "serve"]
    for name in ("gateway-1", "gateway-2"):     # a persistent journal each
        assert any(str(v).endswith(":" + env["HELIOGRAPH_JOURNAL_DIR"]) for v in services[name]["volumes"])
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "gateway-1:8787" in nginx and "gateway-2:8787" in nginx and "proxy_buffering off" in nginx


def test_dockerfile_is_slim_non_root_with_a_readyz_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim$", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/readyz" in text.split("HEALTHCHECK", 1)[1]
    assert 'CMD ["heliograph", "serve"]' in text
    env_block = text.split("\nENV ", 1)[1].split("\n\n")[0].split("\nVOLUME")[0]
    names = dict(re.findall(r"(HELIOGRAPH_\w+)=(\S+)", env_block))
    assert "HELIOGRAPH_HOST" in names and "HELIOGRAPH_DB_URL" in names
    load_settings(environ=names, providers=known_names())


def test_systemd_unit_uses_accepted_settings() -> None:
    text = (DEPLOY / "heliograph.service").read_text()
    env = dict(re.findall(r"^Environment=(HELIOGRAPH_\w+)=(\S+)$", text, re.M))
    assert env and load_settings(environ=env, providers=known_names()).log_format == "json"
    assert re.search(r"^ExecStart=\S+/heliograph serve$", text, re.M) and "User=heliograph" in text


def test_grafana_dashboard_queries_use_real_metric_names(gateway: Gateway) -> None:
    exposed: set[str] = set()
    for family in text_string_to_metric_families(httpx.get(gateway.url + "/metrics").text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        exposed |= {family.name + suffix for suffix in suffixes}
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\bheliograph_\w+", target["expr"])}
    assert len(used) >= 15 and not used - exposed, f"not exposed: {sorted(used - exposed)}"
    for family in ("heliograph_requests_total", "heliograph_tokens_total", "heliograph_cost_usd_total",
                   "heliograph_time_to_first_token_seconds_bucket", "heliograph_cache_requests_total"):
        assert family in used


# -- the topology, as processes ------------------------------------------------------------------

class LoadBalancer:
    """Round robin over backends, one TCP connection at a time, bytes copied both ways."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.turn = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.served = [0] * len(backends)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            index = self.turn % len(self.backends)
            self.turn += 1
            self.served[index] += 1
            upstream = socket.create_connection(("127.0.0.1", self.backends[index]))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two three"}]}


@pytest.fixture
def stack(fake: FakeUpstream, tmp_path: Path, fresh_postgres: Callable[[], str]) -> Iterator[dict[str, Any]]:
    services = heliograph_services()
    db_url, redis = fresh_postgres(), redis_url()
    # The compose environment, with what differs between containers and processes on one machine.
    def env_of(service: str, **local: str) -> dict[str, str]:
        env = resolved(services[service].get("environment", {}))
        replaced = {"HELIOGRAPH_DB_URL": db_url}
        if "HELIOGRAPH_REDIS_URL" in env:
            replaced["HELIOGRAPH_REDIS_URL"] = redis
        assert set(replaced) <= set(env)
        return clean_env() | env | replaced | local
    migrate = env_of("migrate")
    command = services["migrate"]["command"]
    done = run_cli(*command[1:], env=migrate)
    assert done.returncode == 0, done.stderr
    admin = run_cli("keys", "create", "--name", "admin", "--scope", "admin", env=migrate).stdout.splitlines()[-1]
    capped = run_cli("keys", "create", "--name", "capped", env=migrate).stdout.splitlines()[-1]
    assert run_cli("budgets", "set", "--key", "capped", "--usd", "0.000001", "--per", "day", env=migrate).returncode == 0
    gateways = []
    prefix = f"hg-deploy-{uuid.uuid4().hex[:8]}:"
    for name in ("gateway-1", "gateway-2"):
        port = free_port()
        env = env_of(name, HELIOGRAPH_HOST="127.0.0.1", HELIOGRAPH_PORT=str(port),
                     HELIOGRAPH_JOURNAL_DIR=str(tmp_path / name / "journal"),
                     # Local only: the fake provider, and Redis keys apart from other tests.
                     HELIOGRAPH_UPSTREAM_OPENAI=fake.url, HELIOGRAPH_REDIS_KEY_PREFIX=prefix,
                     HELIOGRAPH_RECORDER_FLUSH_MS="20")
        log_path = tmp_path / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "heliograph.cli.main",
                                        *services[name]["command"][1:]], env=env, stdout=log, stderr=subprocess.STDOUT)
        gateways.append(Gateway(f"http://127.0.0.1:{port}", db_url, tmp_path, admin, env, process, log_path))
    for gw in gateways:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(gw.url + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and gw.process.poll() is None, gw.log()
            time.sleep(0.1)
    balancer = LoadBalancer([int(gw.url.rsplit(":", 1)[1]) for gw in gateways])
    try:
        yield {"gateways": gateways, "lb": balancer, "admin": admin, "capped": capped, "db_url": db_url}
    finally:
        balancer.close()
        codes = [gw.stop() for gw in gateways]
        # uvicorn re-raises SIGTERM once it has shut down cleanly.
        assert set(codes) <= {0, -signal.SIGTERM}, [gw.log()[-2000:] for gw in gateways]


def test_two_gateways_behind_a_load_balancer_share_one_store_limits_and_budgets(stack: dict[str, Any]) -> None:
    lb, (one, two) = stack["lb"], stack["gateways"]
    auth = {"Helicone-Auth": f"Bearer {stack['admin']}", "Authorization": "Bearer k"}
    run = str(uuid.uuid4())
    ids = []
    for _ in range(30):     # a connection each: the balancer alternates
        r = httpx.post(lb.url + "/openai/v1/chat/completions", json=CHAT, headers={**auth, "Helicone-Property-Run": run})
        assert r.status_code == 200
        ids.append(r.headers["helicone-id"])
    assert lb.served[0] >= 14 and lb.served[1] >= 14 and len(set(ids)) == 30

    # Every call recorded once, whichever process answered it.
    deadline = time.monotonic() + 20
    with psycopg.connect(stack["db_url"]) as conn:
        while True:
            rows = conn.execute("SELECT id FROM requests WHERE id = ANY(%s)", (ids,)).fetchall()
            if len(rows) == 30 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert sorted(r[0] for r in rows) == sorted(ids)
    for gw in (one, two):      # and each process wrote some of them
        assert any(request_id in gw.log() for request_id in ids), "one gateway served nothing"

    # One rate limit across both.
    policy = {"Helicone-RateLimit-Policy": "5;w=3600;s=user", "Helicone-User-Id": str(uuid.uuid4())}
    statuses = [httpx.post(lb.url + "/openai/v1/chat/completions", json=CHAT, headers={**auth, **policy}).status_code
                for _ in range(12)]
    assert statuses.count(200) == 5 and statuses.count(429) == 7

    # One budget across both: once spent through one process, the other refuses too.
    capped = {"Helicone-Auth": f"Bearer {stack['capped']}", "Authorization": "Bearer k"}
    deadline = time.monotonic() + 10
    while httpx.post(lb.url + "/openai/v1/chat/completions", json=CHAT, headers=capped).status_code != 429:
        assert time.monotonic() < deadline, "the budget was never enforced"
        time.sleep(0.1)
    for gw in (one, two):
        refused = httpx.post(gw.url + "/openai/v1/chat/completions", json=CHAT, headers=capped)
        assert refused.status_code == 429 and refused.headers["x-helicone-error"] == "budget_exceeded"

    # The same analytics from either process.
    now = time.time()
    query = {"timeFilter": {"start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600)),
                            "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600))},
             "groupBy": "model", "bucket": "hour"}
    admin = {"Authorization": f"Bearer {stack['admin']}"}
    time.sleep(0.5)     # the last refusals' records
    answers = [httpx.post(gw.url + "/api/v1/analytics/query", json=query, headers=admin) for gw in (one, two)]
    assert answers[0].status_code == 200 and answers[0].json() == answers[1].json()
    assert answers[0].json()["data"]["summary"]["requests"] >= 30 + 12
