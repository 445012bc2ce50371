"""The command line, configuration and the ops endpoints."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from heliograph.testing import FakeUpstream

from .conftest import Gateway, run_cli

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")}
    return env | {"HELIOGRAPH_DB_URL": f"sqlite:///{tmp_path / 'cli.db'}"} | extra


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    created = run_cli("keys", "create", "--name", "my-app", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-hg-") and " " not in key

    listed = run_cli("keys", "list", "--json", env=env)
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["my-app"] and rows[0]["revoked_at"] is None
    assert key not in listed.stdout and key not in run_cli("keys", "list", env=env).stdout
    assert key.encode() not in (tmp_path / "cli.db").read_bytes()

    assert run_cli("keys", "revoke", "my-app", env=env).returncode == 0
    assert json.loads(run_cli("keys", "list", "--json", env=env).stdout)[0]["revoked_at"] is not None
    again = run_cli("keys", "revoke", "my-app", env=env)
    assert again.returncode == 1 and "no active key" in again.stderr


def test_revoked_key_is_refused_by_a_running_gateway(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    created = run_cli("keys", "create", "--name", "short-lived", env=gateway.env)
    key = created.stdout.strip().splitlines()[-1]
    headers = {"Helicone-Auth": f"Bearer {key}", "Authorization": "Bearer k"}
    assert httpx.post(gateway.url + "/openai/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    assert run_cli("keys", "revoke", "short-lived", env=gateway.env).returncode == 0
    deadline = time.monotonic() + 10
    while httpx.post(gateway.url + "/openai/v1/chat/completions", json=CHAT, headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "revoked key still accepted after 10 s"
        time.sleep(0.25)


def test_serve_refuses_workers_without_redis(tmp_path: Path) -> None:
    result = run_cli("serve", "--workers", "2", env=env_for(tmp_path))
    assert result.returncode == 2 and "--redis" in result.stderr


def test_serve_refuses_unauthenticated_mode_off_loopback(tmp_path: Path) -> None:
    result = run_cli("serve", "--host", "0.0.0.0", env=env_for(tmp_path, HELIOGRAPH_ALLOW_UNAUTHENTICATED="true"))
    assert result.returncode == 2 and "loopback" in result.stderr


def test_unknown_config_key_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("prot = 9000\n")
    result = run_cli("--config", str(config), "config", "show", env=env_for(tmp_path))
    assert result.returncode == 2 and "unknown key 'prot'" in result.stderr


def test_config_show_resolves_precedence_and_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('port = 9000\nhost = "127.0.0.2"\n[provider_keys]\nopenai = "sk-real-secret"\n')
    env = env_for(tmp_path, HELIOGRAPH_PORT="9100", HELIOGRAPH_DB_URL="postgresql://u:pw@db:5432/x")
    shown = run_cli("--config", str(config), "config", "show", env=env)
    values = json.loads(shown.stdout)
    assert values["port"] == 9100 and values["host"] == "127.0.0.2"
    assert values["provider_keys"] == {"openai": "****"}
    assert "sk-real-secret" not in shown.stdout and "pw" not in values["db_url"]


def test_health_ready_and_metrics(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(gateway.url + "/readyz").status_code == 200
    httpx.post(gateway.url + "/openai/v1/chat/completions", json=CHAT, headers={**gateway.auth, "Authorization": "Bearer k"})
    httpx.post(gateway.url + "/openai/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer k"})
    text = httpx.get(gateway.url + "/metrics").text
    assert 'heliograph_requests_total{provider="openai",status_class="2xx"}' in text
    assert 'heliograph_refused_total{status="401"}' in text
    for name in ("heliograph_request_duration_seconds_bucket", "heliograph_gateway_overhead_seconds_bucket",
                 "heliograph_recorder_queue_depth", "heliograph_journal_bytes"):
        assert name in text
    assert "user" not in text.split("# HELP heliograph_requests")[1].split("# HELP")[0]


def test_api_requires_a_key_and_answers_404_in_its_envelope(gateway: Gateway) -> None:
    r = httpx.get(gateway.url + "/api/v1/request/nope")
    assert r.status_code == 401 and r.json()["data"] is None and "Bearer" in r.json()["error"]
    r = httpx.get(gateway.url + "/api/v1/request/nope", headers={"Authorization": f"Bearer {gateway.key}"})
    assert r.status_code == 404 and r.json() == {"data": None, "error": "No request with id 'nope'."}


def test_demo_sends_varied_traffic_and_records_it(tmp_path: Path) -> None:
    import socket
    import sqlite3
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_cli("demo", "--port", str(port), "--requests", "120", "--exit", env=env_for(tmp_path))
    assert result.returncode == 0 and "Done: 120 requests sent" in result.stdout, result.stdout + result.stderr
    with sqlite3.connect(tmp_path / "cli.db") as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 120
        providers = {r[0] for r in conn.execute("SELECT DISTINCT provider FROM requests")}
        assert {"openai", "anthropic"} <= providers and len(providers) >= 4
        assert conn.execute("SELECT count(*) FROM requests WHERE streamed").fetchone()[0] > 10
        assert conn.execute("SELECT count(*) FROM requests WHERE status >= 400").fetchone()[0] > 0
        assert conn.execute("SELECT count(DISTINCT user_id) FROM requests").fetchone()[0] > 5
        assert conn.execute("SELECT count(*) FROM requests WHERE cost > 0").fetchone()[0] > 50


def test_unauthenticated_mode_on_loopback_proxies_and_records(fake: FakeUpstream, tmp_path: Path) -> None:
    from .conftest import start_gateway
    gw = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_ALLOW_UNAUTHENTICATED": "true"})
    try:
        r = httpx.post(gw.url + "/openai/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer k"})
        assert r.status_code == 200
        assert gw.record(r.headers["helicone-id"])["key_id"] is None
        bad = httpx.post(gw.url + "/openai/v1/chat/completions", json=CHAT,
                         headers={"Authorization": "Bearer k", "Helicone-Auth": "Bearer sk-hg-wrong"})
        assert bad.status_code == 401, "a key that is sent must still be valid"
    finally:
        gw.stop()
