"""Provider keys held by the gateway per project, through real `heliograph serve` processes: which key
goes upstream (the request's own, the project's, the deployment's), under which header, for whom;
what the API and CLI show (fingerprints); that no key is ever written in the clear; start-up refusals."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from heliograph.storage import open_store
from heliograph.testing import FakeUpstream

from .conftest import Gateway, free_port, run_cli, start_gateway

SECRET_KEY = Fernet.generate_key().decode()
OPENAI_A = "sk-proj-MARKEROPENAIALPHA0001"
ANTHROPIC_A = "sk-ant-MARKERANTHROPICALPHA02"
AZURE_A = "MARKERAZUREALPHA000000000003"
OPENAI_B = "sk-proj-MARKEROPENAIBETA00004"
GROQ_B = "gsk_MARKERGROQBETA0000000005"
DEPLOY_OPENAI = "sk-MARKERDEPLOYMENTOPENAI06"
DEPLOY_GROQ = "gsk_MARKERDEPLOYMENTGROQ07"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
MESSAGES = {"model": "claude-haiku-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]}
AZURE_PATH = "/azure/openai/deployments/my-gpt4o/chat/completions?api-version=2024-06-01"
AZURE_BASE = {"Helicone-OpenAI-Api-Base": "https://res.openai.azure.com"}


def admin_call(gw: Gateway, key: str, method: str, path: str, body: Any = None) -> httpx.Response:
    """An /api call with a key perhaps created a moment ago (unknown keys are looked up once a second)."""
    deadline = time.monotonic() + 5
    while True:
        r = httpx.request(method, gw.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        if r.status_code != 401 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def new_key(gw: Gateway, project: str, scope: str) -> str:
    created = run_cli("keys", "create", "--name", f"{project}-{scope}-{uuid.uuid4().hex[:6]}", "--project", project,
                      "--scope", scope, env=gw.env)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


def held(gw: Gateway, admin: str, provider: str, secret: str) -> dict[str, Any]:
    r = admin_call(gw, admin, "PUT", f"/api/v1/provider-keys/{provider}", {"key": secret})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def send(gw: Gateway, key: str, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    r = httpx.post(gw.url + path, json=body, headers={"Helicone-Auth": f"Bearer {key}", **headers}, timeout=30)
    assert r.status_code == 200, r.text
    return r


def received(fake: FakeUpstream, path_end: str) -> dict[str, str]:
    """The headers of the one request the fake received on a path ending so."""
    found = [r.headers for r in fake.requests if r.path.endswith(path_end)]
    assert len(found) == 1, [r.path for r in fake.requests]
    return found[0]


@pytest.fixture(scope="module")
def world(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, dict[str, str]]]:
    """A gateway with a secret key and deployment-wide OpenAI and Groq keys; projects default (alpha),
    beta and gamma, each with an admin and a proxy key."""
    gw = start_gateway(tmp_path_factory.mktemp("provider-keys"), fake.url, extra_env={
        "HELIOGRAPH_SECRET_KEY": SECRET_KEY, "HELIOGRAPH_PROVIDER_KEY_OPENAI": DEPLOY_OPENAI,
        "HELIOGRAPH_PROVIDER_KEY_GROQ": DEPLOY_GROQ})
    for name in ("beta", "gamma"):
        assert run_cli("projects", "create", name, env=gw.env).returncode == 0
    keys = {"alpha-admin": gw.key, "alpha": new_key(gw, "default", "proxy"), "beta-admin": new_key(gw, "beta", "admin"),
            "beta": new_key(gw, "beta", "proxy"), "gamma": new_key(gw, "gamma", "proxy")}
    held(gw, keys["alpha-admin"], "openai", OPENAI_A)
    held(gw, keys["alpha-admin"], "anthropic", ANTHROPIC_A)
    held(gw, keys["alpha-admin"], "azure", AZURE_A)
    held(gw, keys["beta-admin"], "openai", OPENAI_B)
    yield gw, keys
    gw.stop()


# -- the store: ciphertext and fingerprints, one project at a time ------------------------------------

@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_store_keeps_ciphertext_per_project_and_shows_fingerprints(backend: str, tmp_path: Path,
                                                                      request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'hg.db'}" if backend == "sqlite" else request.getfixturevalue("fresh_postgres")()
    store = open_store(url)
    try:
        store.migrate()
        first = store.put_provider_credential("openai", "sealed-1", "sk-…0001", project="default")
        again = store.put_provider_credential("openai", "sealed-2", "sk-…0002", project="default")
        assert again["created_at"] == first["created_at"] and again["fingerprint"] == "sk-…0002"
        store.put_provider_credential("openai", "sealed-b", "sk-…000b", project="beta")
        assert store.provider_credentials(project="default") == [again]
        assert "ciphertext" not in again
        assert sorted((r["project_id"], r["ciphertext"]) for r in store.sealed_provider_credentials()) == [
            ("beta", "sealed-b"), ("default", "sealed-2")]
        assert not store.delete_provider_credential("anthropic", project="default")
        assert store.delete_provider_credential("openai", project="beta")
        assert store.provider_credentials(project="beta") == []
        assert len(store.provider_credentials(project="default")) == 1
    finally:
        store.close()


# -- which key goes upstream ------------------------------------------------------------------------

def test_the_projects_openai_key_is_sent_when_the_client_sends_none(
        world: tuple[Gateway, dict[str, str]], fresh_fake: FakeUpstream) -> None:
    gw, keys = world
    send(gw, keys["alpha"], "/openai/v1/chat/completions", CHAT)
    assert received(fresh_fake, "/chat/completions")["authorization"] == f"Bearer {OPENAI_A}"


def test_the_clients_own_key_always_wins(world: tuple[Gateway, dict[str, str]], fresh_fake: FakeUpstream) -> None:
    gw, keys = world
    send(gw, keys["alpha"], "/openai/v1/chat/completions", CHAT, Authorization="Bearer sk-the-clients-own")
    send(gw, keys["alpha"], "/anthropic/v1/messages", MESSAGES, **{"x-api-key": "sk-ant-clients-own",
                                                                  "anthropic-version": "2023-06-01"})
    send(gw, keys["alpha"], AZURE_PATH, CHAT, **AZURE_BASE, **{"api-key": "azure-clients-own"})
    assert received(fresh_fake, "/v1/chat/completions")["authorization"] == "Bearer sk-the-clients-own"
    anthropic = received(fresh_fake, "/messages")
    assert anthropic["x-api-key"] == "sk-ant-clients-own" and "authorization" not in anthropic
    azure = received(fresh_fake, "/my-gpt4o/chat/completions")
    assert azure["api-key"] == "azure-clients-own" and "authorization" not in azure


def test_another_projects_key_is_never_used_and_the_deployments_comes_after_the_projects(
        world: tuple[Gateway, dict[str, str]], fresh_fake: FakeUpstream) -> None:
    gw, keys = world
    sent = {}
    for project in ("alpha", "beta", "gamma"):
        fresh_fake.clear()
        send(gw, keys[project], "/openai/v1/chat/completions", CHAT)
        sent[project] = received(fresh_fake, "/chat/completions")["authorization"]
    assert sent == {"alpha": f"Bearer {OPENAI_A}", "beta": f"Bearer {OPENAI_B}", "gamma": f"Bearer {DEPLOY_OPENAI}"}
    fresh_fake.clear()      # alpha holds no Groq key: the deployment's
    send(gw, keys["alpha"], "/groq/openai/v1/chat/completions", CHAT)
    assert received(fresh_fake, "/chat/completions")["authorization"] == f"Bearer {DEPLOY_GROQ}"
    fresh_fake.clear()      # beta holds no Anthropic key and the deployment neither: nothing is added
    r = httpx.post(gw.url + "/anthropic/v1/messages", json=MESSAGES, timeout=30,
                   headers={"Helicone-Auth": f"Bearer {keys['beta']}", "anthropic-version": "2023-06-01"})
    assert r.status_code == 401
    assert "x-api-key" not in received(fresh_fake, "/messages")


def test_anthropic_gets_x_api_key_and_azure_api_key(world: tuple[Gateway, dict[str, str]], fresh_fake: FakeUpstream) -> None:
    gw, keys = world
    send(gw, keys["alpha"], "/anthropic/v1/messages", MESSAGES, **{"anthropic-version": "2023-06-01"})
    send(gw, keys["alpha"], AZURE_PATH, CHAT, **AZURE_BASE)
    anthropic = received(fresh_fake, "/messages")
    assert anthropic["x-api-key"] == ANTHROPIC_A and "authorization" not in anthropic
    azure = received(fresh_fake, "/my-gpt4o/chat/completions")
    assert azure["api-key"] == AZURE_A and "authorization" not in azure


def test_a_cross_provider_fallback_uses_the_projects_key(
        world: tuple[Gateway, dict[str, str]], fresh_fake: FakeUpstream) -> None:
    gw, keys = world
    fallback = json.dumps([{"model": "claude-haiku-4-5", "provider": "anthropic"}])
    r = send(gw, keys["alpha"], "/openai/v1/chat/completions", CHAT, **{
        "Authorization": "Bearer sk-the-clients-openai", "Helicone-Fallback": fallback,
        "X-Fake-Scenario": "fail-times=1,status=500", "X-Fake-Key": str(uuid.uuid4())})
    assert r.headers["helicone-fallback-index"] == "0"
    first, second = fresh_fake.requests
    assert first.headers["authorization"] == "Bearer sk-the-clients-openai"
    assert second.path.endswith("/v1/messages") and second.headers["x-api-key"] == ANTHROPIC_A
    assert "authorization" not in second.headers


def test_semantic_cache_embeddings_use_the_projects_openai_key(
        world: tuple[Gateway, dict[str, str]], fresh_fake: FakeUpstream) -> None:
    gw, keys = world
    send(gw, keys["alpha"], "/anthropic/v1/messages", MESSAGES, **{
        "anthropic-version": "2023-06-01", "x-api-key": "sk-ant-clients-own", "Helicone-Cache-Semantic": "true"})
    assert received(fresh_fake, "/embeddings")["authorization"] == f"Bearer {OPENAI_A}"


# -- the API and the CLI show fingerprints only -----------------------------------------------------

def test_the_api_answers_fingerprints_only_for_the_keys_own_project(world: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = world
    stored = held(gw, keys["alpha-admin"], "deepseek", "sk-MARKERDEEPSEEKALPHA00abcd")
    assert stored["provider"] == "deepseek" and stored["fingerprint"] == "sk-…abcd" and stored["created_at"]
    listed = admin_call(gw, keys["alpha-admin"], "GET", "/api/v1/provider-keys")
    assert [k["provider"] for k in listed.json()["data"]] == ["anthropic", "azure", "deepseek", "openai"]
    assert {k["fingerprint"] for k in listed.json()["data"]} == {"sk-…abcd", "sk-…HA02", "MAR…0003", "sk-…0001"}
    beta = admin_call(gw, keys["beta-admin"], "GET", "/api/v1/provider-keys")
    assert [k["provider"] for k in beta.json()["data"]] == ["openai"]
    for text in (listed.text, beta.text):
        assert "MARKER" not in text
    # Beta cannot delete alpha's: a 404 as for none, and alpha's stays.
    assert admin_call(gw, keys["beta-admin"], "DELETE", "/api/v1/provider-keys/deepseek").status_code == 404
    assert admin_call(gw, keys["alpha-admin"], "DELETE", "/api/v1/provider-keys/deepseek").json()["data"] == {
        "provider": "deepseek", "deleted": True}
    assert admin_call(gw, keys["alpha-admin"], "DELETE", "/api/v1/provider-keys/deepseek").status_code == 404
    unknown = admin_call(gw, keys["alpha-admin"], "PUT", "/api/v1/provider-keys/openia", {"key": "sk-x" * 5})
    assert unknown.status_code == 400 and "openai" in unknown.json()["error"] and "anthropic" in unknown.json()["error"]
    for bad in ({}, {"key": 12}, {"key": "  "}, {"key": "sk-line\r\nInjected: yes"}):
        r = admin_call(gw, keys["alpha-admin"], "PUT", "/api/v1/provider-keys/groq", bad)
        assert r.status_code == 400, bad
    proxy = admin_call(gw, keys["alpha"], "GET", "/api/v1/provider-keys")
    assert proxy.status_code == 403 and "'admin'" in proxy.json()["error"]


def test_storing_over_the_api_needs_a_secret_key(gateway: Gateway) -> None:
    r = admin_call(gateway, gateway.key, "PUT", "/api/v1/provider-keys/openai", {"key": OPENAI_A})
    assert r.status_code == 400 and "HELIOGRAPH_SECRET_KEY" in r.json()["error"]
    assert admin_call(gateway, gateway.key, "GET", "/api/v1/provider-keys").json()["data"] == []


def test_the_cli_reads_the_key_from_stdin_and_shows_only_its_fingerprint(
        world: tuple[Gateway, dict[str, str]], fresh_fake: FakeUpstream) -> None:
    gw, keys = world
    helped = run_cli("provider-keys", "set", "--help", env=gw.env)
    assert "shell history" in helped.stdout and "--key" not in helped.stdout
    stored = subprocess.run([sys.executable, "-m", "heliograph.cli.main", "provider-keys", "set", "--provider", "groq",
                             "--project", "beta"], input=GROQ_B + "\n", env=gw.env, capture_output=True, text=True,
                            timeout=60)
    assert stored.returncode == 0, stored.stderr
    assert "gsk…0005" in stored.stdout and GROQ_B not in stored.stdout + stored.stderr
    listed = run_cli("provider-keys", "list", "--project", "beta", "--json", env=gw.env)
    assert [(k["provider"], k["fingerprint"]) for k in json.loads(listed.stdout)] == [
        ("groq", "gsk…0005"), ("openai", "sk-…0004")]
    assert "MARKER" not in listed.stdout
    deadline = time.monotonic() + 10       # a running gateway picks it up within 5 s
    while True:
        fresh_fake.clear()
        send(gw, keys["beta"], "/groq/openai/v1/chat/completions", CHAT)
        if received(fresh_fake, "/chat/completions")["authorization"] == f"Bearer {GROQ_B}":
            break
        assert time.monotonic() < deadline, "the gateway never used the key stored by the CLI"
        time.sleep(0.5)
    deleted = run_cli("provider-keys", "delete", "--provider", "groq", "--project", "beta", env=gw.env)
    assert deleted.returncode == 0 and "Deleted" in deleted.stdout
    again = run_cli("provider-keys", "delete", "--provider", "groq", "--project", "beta", env=gw.env)
    assert again.returncode != 0 and "holds no groq key" in again.stderr
    unknown = run_cli("provider-keys", "delete", "--provider", "nope", env=gw.env)
    assert unknown.returncode != 0 and "known: " in unknown.stderr


def test_the_cli_refuses_to_store_without_a_secret_key(tmp_path: Path) -> None:
    env = {"HELIOGRAPH_DB_URL": f"sqlite:///{tmp_path / 'hg.db'}", "PATH": "/usr/bin:/bin"}
    refused = subprocess.run([sys.executable, "-m", "heliograph.cli.main", "provider-keys", "set", "--provider",
                              "openai"], input=OPENAI_A, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "HELIOGRAPH_SECRET_KEY" in refused.stderr
    assert "Fernet" in refused.stderr and OPENAI_A not in refused.stderr
    short = subprocess.run([sys.executable, "-m", "heliograph.cli.main", "provider-keys", "set", "--provider",
                            "openai"], input=OPENAI_A, env={**env, "HELIOGRAPH_SECRET_KEY": "too-short"},
                           capture_output=True, text=True, timeout=60)
    assert short.returncode != 0 and "16" in short.stderr
    listed = run_cli("provider-keys", "list", env=env)
    assert listed.returncode == 0 and "No provider keys" in listed.stdout


# -- start-up -----------------------------------------------------------------------------------------

def serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "heliograph.cli.main", "serve", "--port", str(free_port())],
                          env=env, capture_output=True, text=True, timeout=60)


def test_serve_refuses_to_start_with_stored_keys_it_cannot_decrypt(tmp_path: Path) -> None:
    env = {"HELIOGRAPH_DB_URL": f"sqlite:///{tmp_path / 'hg.db'}", "PATH": "/usr/bin:/bin"}
    passphrase = "a long passphrase, stretched by scrypt"
    stored = subprocess.run([sys.executable, "-m", "heliograph.cli.main", "provider-keys", "set", "--provider",
                             "anthropic"], input=ANTHROPIC_A, env={**env, "HELIOGRAPH_SECRET_KEY": passphrase},
                            capture_output=True, text=True, timeout=60)
    assert stored.returncode == 0, stored.stderr
    unset = serve(env)
    assert unset.returncode != 0
    assert "1 provider key(s) are stored in the database but HELIOGRAPH_SECRET_KEY is not set" in unset.stderr
    wrong = serve({**env, "HELIOGRAPH_SECRET_KEY": Fernet.generate_key().decode()})
    assert wrong.returncode != 0 and "anthropic of project default cannot be decrypted" in wrong.stderr
    for result in (unset, wrong):
        assert ANTHROPIC_A not in result.stdout + result.stderr and "Traceback" not in result.stderr


# -- never written in the clear -----------------------------------------------------------------------

def every_file(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_no_held_key_is_written_to_the_database_the_journal_or_the_log(fake: FakeUpstream, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, fake.url, extra_env={
        "HELIOGRAPH_SECRET_KEY": SECRET_KEY, "HELIOGRAPH_PROVIDER_KEY_GROQ": DEPLOY_GROQ,
        "HELIOGRAPH_LOG_LEVEL": "debug", "HELIOGRAPH_DRAIN_TIMEOUT": "1"})
    markers = {"openai": OPENAI_A, "anthropic": ANTHROPIC_A, "azure": AZURE_A}
    stopped = False
    try:
        for provider, secret in markers.items():
            held(gw, gw.key, provider, secret)
        fallback = json.dumps([{"model": "claude-haiku-4-5", "provider": "anthropic"}])

        def traffic() -> list[str]:
            answers = [
                httpx.post(gw.url + "/openai/v1/chat/completions", json={**CHAT, "stream": True}, headers=gw.auth),
                httpx.post(gw.url + "/anthropic/v1/messages", json=MESSAGES,
                           headers={**gw.auth, "anthropic-version": "2023-06-01", "Helicone-Cache-Semantic": "true"}),
                httpx.post(gw.url + AZURE_PATH, json=CHAT, headers={**gw.auth, **AZURE_BASE}),
                httpx.post(gw.url + "/groq/openai/v1/chat/completions", json=CHAT, headers=gw.auth),
                httpx.post(gw.url + "/openai/v1/chat/completions", json=CHAT, timeout=30, headers={
                    **gw.auth, "Helicone-Fallback": fallback, "X-Fake-Scenario": "fail-times=1,status=500",
                    "X-Fake-Key": str(uuid.uuid4())}),
                httpx.post(gw.url + "/openai/v1/chat/completions", json=CHAT,      # refused, recorded
                           headers={**gw.auth, "Helicone-Retry-Enabled": "true", "Helicone-Retry-Num": "x"}),
                httpx.post(gw.url + "/openai/v1/chat/completions", json=CHAT,      # the upstream refuses
                           headers={**gw.auth, "X-Fake-Scenario": "status=401"}),
            ]
            return [a.headers["helicone-id"] for a in answers]

        for request_id in traffic():
            gw.record(request_id)
        conn = sqlite3.connect(gw.db_path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")      # the next records wait in the journal
        try:
            traffic()
            assert gw.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
            stopped = True
            assert any((tmp_path / "journal").glob("*.jsonl")), "the lock should have sent records to the journal"
        finally:
            conn.execute("ROLLBACK")
            conn.close()
    finally:
        if not stopped:
            gw.stop()
    written = every_file(tmp_path)        # the database, its WAL, the journal, the log: all closed now
    for where, secret in {**markers, "deployment groq": DEPLOY_GROQ}.items():
        assert secret.encode() not in written, f"the {where} key was written to disk"
    with sqlite3.connect(gw.db_path) as db:
        rows = dict(db.execute("SELECT provider, ciphertext FROM provider_credentials").fetchall())
    assert rows.keys() == markers.keys()
    box = Fernet(SECRET_KEY.encode())
    for provider, ciphertext in rows.items():
        assert ciphertext != markers[provider] and box.decrypt(ciphertext.encode()).decode() == markers[provider]


def test_an_sdk_given_only_its_heliograph_key_works_and_the_key_never_reaches_the_provider(
        world: tuple[Gateway, dict[str, str]], fake: FakeUpstream) -> None:
    """OpenAI(api_key="sk-hg-…") and Anthropic(api_key="sk-hg-…"): no Helicone-Auth, no provider key."""
    from anthropic import Anthropic
    from openai import OpenAI
    gw, keys = world
    fake.clear()
    OpenAI(api_key=keys["alpha"], base_url=gw.url + "/openai/v1", max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert received(fake, "/chat/completions")["authorization"] == f"Bearer {OPENAI_A}"
    Anthropic(api_key=keys["alpha"], base_url=gw.url + "/anthropic", max_retries=0).messages.create(
        model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert received(fake, "/messages")["x-api-key"] == ANTHROPIC_A
    assert not any(keys["alpha"] in str(r.headers) for r in fake.requests)
