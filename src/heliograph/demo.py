"""`heliograph demo`: the whole product with no internet and no provider key.

    1. bind the port before anything else (a free one, said out loud, when it is taken), so the
       demo's traffic can only reach the gateway this process serves on that socket;
    2. start the built-in fake provider, point every provider at it, create a demo key, serve;
    3. from a thread: send one probe carrying a per-run nonce and check it arrived at *our* fake
       provider, then a few hundred varied calls (several providers, users, sessions, properties,
       streaming and not, some errors on purpose), each with a fresh Helicone-Request-Id;
    4. wait until every one of them is in the store under the demo key, read one back through
       the API, then print the key, real ids and commands to look at the data;
    5. keep serving until Ctrl+C, or stop at once with --exit.

Any step that fails stops the gateway and exits non-zero with one sentence: the demo never reports
success for traffic it cannot prove went through its own gateway into its own store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import random
import secrets
import shlex
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import click
import uvicorn

from .auth import DEFAULT_PROJECT
from .app import create_app
from .export import build_filter
from .alerts.rules import parse_rule
from .keys import NewKey, create_key
from .proxy.routes import PROVIDERS
from .server import graceful_seconds
from .settings import Settings
from .storage import Store, open_store
from .testing import FakeUpstream

USERS = [f"user-{n:02d}" for n in range(1, 13)]
FEATURES = ["support-bot", "summarizer", "search", "code-review"]
SUPPORT_PROMPT = ("You answer support questions for Acme in two sentences.",
                  "You answer support questions for Acme briefly and kindly, naming the customer.")
PROMPTS = [
    "Summarize the quarterly report in three bullet points",
    "Write a friendly reply to a customer asking about refunds",
    "Explain the difference between TCP and UDP to a new engineer",
    "Suggest a name for a coffee shop near the harbour",
    "Translate 'good morning, how are you' into French and Spanish",
    "List three risks of deploying on a Friday afternoon",
]
OPENAI_STYLE = [  # (provider prefix + API base path, models)
    ("/openai/v1", ["gpt-4o", "gpt-4o-mini", "o3-mini"]),
    ("/groq/openai/v1", ["llama-3.3-70b-versatile"]),
    ("/together/v1", ["meta-llama/Llama-3.3-70B-Instruct-Turbo"]),
    ("/mistral/v1", ["mistral-small-latest"]),
    ("/deepseek/v1", ["deepseek-chat"]),
    ("/gemini/v1beta/openai", ["gemini-2.0-flash"]),
]
ANTHROPIC_MODELS = ["claude-sonnet-4-6", "claude-haiku-4-5"]

NONCE_HEADER = "x-heliograph-demo-nonce"
STARTUP_SECONDS = 15.0
RECORD_WAIT_SECONDS = 5.0   # on top of the recorder's flush interval
CONCURRENCY = 8

Call = tuple[str, dict[str, str], dict[str, Any]]


class DemoFailed(click.ClickException):
    """One sentence saying why the demo cannot vouch for its traffic; exits 1."""


@dataclass(slots=True)
class Traffic:
    ids: list[str] = field(default_factory=list)
    errors: int = 0               # answered with an error status, most of them on purpose
    unreachable: int = 0          # never answered by the gateway
    sample_id: str = ""           # a call to show, successful when any was
    sample_model: str = ""
    sample_failed: bool = False


def run_demo(settings: Settings, count: int, exit_after: bool) -> None:
    wanted = settings.port
    sock = listen(settings.host, wanted)
    port = int(sock.getsockname()[1])
    base = client_url(sock)
    fake = FakeUpstream().start()
    settings = dataclasses.replace(settings, port=port, workers=1, provider_keys={},
                                   alert_interval=min(settings.alert_interval, 5.0),
                                   upstreams={name: fake.url for name in PROVIDERS})
    store = open_store(settings.db_url)
    outcome: list[DemoFailed | None] = []
    try:
        store.migrate()
        key = create_key(store, f"demo-{time.strftime('%Y%m%d-%H%M%S')}", scope="admin")
        example_alerts(store)
        server = uvicorn.Server(uvicorn.Config(
            create_app(settings), loop="uvloop", http="httptools", lifespan="on", access_log=False,
            log_level="warning", timeout_graceful_shutdown=graceful_seconds(settings),
            server_header=False, date_header=False, proxy_headers=False))
        store_url = str(settings.masked()["db_url"])
        click.echo(f"Heliograph demo: no internet or provider key needed.\n"
                   f"  gateway   {base}\n"
                   f"  provider  a built-in fake at {fake.url}, standing in for every provider\n"
                   f"  store     {store_url}")
        if wanted and port != wanted:
            click.echo(f"Port {wanted} is in use by another program, so the demo uses port {port} "
                       "(pass --port to choose one).")
        click.echo(f"Sending {count} requests through the gateway…")

        def drive() -> None:
            try:
                traffic, since = asyncio.run(exercise(base, key, count, fake, store, settings))
                click.echo(report(traffic, base, key, store_url, since, exit_after))
                outcome.append(None)
            except DemoFailed as exc:
                outcome.append(exc)
            except Exception as exc:    # any surprise must still stop the gateway, and say why
                outcome.append(DemoFailed(f"the demo traffic failed: {exc!r}"))
            if outcome[0] is not None or exit_after:
                server.should_exit = True

        threading.Thread(target=drive, name="demo-traffic", daemon=True).start()
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:   # uvicorn re-raises the Ctrl+C it handled; that is the normal way out
            pass
    finally:
        fake.stop()
        store.close()
        sock.close()
    if not outcome:
        raise DemoFailed("the gateway stopped before the demo traffic finished.")
    if outcome[0] is not None:
        raise outcome[0]


EXAMPLE_ALERTS = (
    {"name": "Error rate above 5 % (per model)", "metric": "error_rate", "threshold": 5, "window": 3600,
     "min_requests": 5, "group_by": "model"},
    {"name": "Spend above $5 an hour", "metric": "cost", "threshold": 5, "window": 3600},
    {"name": "A user spending 5x their usual", "metric": "cost", "mode": "anomaly", "threshold": 5,
     "window": 3600, "group_by": "user", "min_requests": 3},
)


def example_alerts(store: Store) -> None:
    """Alert rules (without channels) so that /alerts shows states from the demo's traffic."""
    names = {rule["spec"]["name"] for rule in store.list_alerts(project=DEFAULT_PROJECT)}
    for raw in EXAMPLE_ALERTS:
        if raw["name"] not in names:
            store.create_alert(DEFAULT_PROJECT, parse_rule(raw))


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on `port`, or on a free port when another program holds it."""
    try:
        return _listen(host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise DemoFailed(f"cannot listen on {host}:{port}: {exc.strerror}.") from None
    return _listen(host, 0)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        # As uvicorn does: a previous run's connections in TIME_WAIT must not make the port look taken.
        # A port another program listens on still is.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def client_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def exercise(base: str, key: NewKey, count: int, fake: FakeUpstream, store: Store,
                   settings: Settings) -> tuple[Traffic, str]:
    """Send the traffic and prove it all went through this process's gateway into its store."""
    since = datetime.fromtimestamp(int(time.time()), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rng = random.Random(7)          # varied but repeatable content; ids and sessions are per run
    run = secrets.token_hex(3)
    calls = [_one_call(rng, n, run) for n in range(count)]
    traffic = Traffic()
    auth = {"Helicone-Auth": f"Bearer {key.key}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        await _wait_healthy(http, base)
        path, headers, body = calls[0]
        nonce = secrets.token_hex(16)
        status = await _send(http, base, (path, headers | auth | {NONCE_HEADER: nonce}, body), traffic)
        if status is None:
            raise DemoFailed(f"could not reach the gateway at {base}.")
        if not any(r.headers.get(NONCE_HEADER) == nonce for r in fake.requests):
            raise DemoFailed(f"the first request did not go through this demo's gateway to its fake provider "
                             f"({base} answered {status}); if another program holds that port, "
                             "pass --port with a free one.")
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def send(call: Call) -> None:
            async with semaphore:
                await _send(http, base, (call[0], call[1] | auth, call[2]), traffic)

        await asyncio.gather(*(send(call) for call in calls[1:]))
        if traffic.unreachable:
            raise DemoFailed(f"{traffic.unreachable} of {count} demo requests could not reach the gateway at {base}.")
        wait = settings.recorder_flush_ms / 1000 + RECORD_WAIT_SECONDS
        stored = await asyncio.to_thread(_wait_recorded, store, key.id, traffic.ids, since, wait)
        if stored < count:
            raise DemoFailed(f"only {stored} of the {count} demo requests were recorded within {wait:.0f} s.")
        async with http.get(f"{base}/api/v1/request/{traffic.sample_id}",
                            headers={"Authorization": f"Bearer {key.key}"}) as response:
            if response.status != 200:
                raise DemoFailed(f"GET /api/v1/request/{traffic.sample_id} answered {response.status}, "
                                 "though the record is in the store.")
    return traffic, since


async def _wait_healthy(http: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        try:
            async with http.get(base + "/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise DemoFailed(f"the gateway at {base} did not become healthy within {STARTUP_SECONDS:.0f} s.")


async def _send(http: aiohttp.ClientSession, base: str, call: Call, traffic: Traffic) -> int | None:
    """The status the gateway answered, or None when it could not be reached."""
    path, headers, body = call
    try:
        async with http.post(base + path, json=body, headers=headers) as response:
            await response.read()
    except (aiohttp.ClientError, TimeoutError):
        traffic.unreachable += 1
        return None
    traffic.ids.append(headers["Helicone-Request-Id"])
    traffic.errors += response.status >= 400
    if not traffic.sample_id or (traffic.sample_failed and response.status < 400):
        traffic.sample_id, traffic.sample_model = headers["Helicone-Request-Id"], str(body["model"])
        traffic.sample_failed = response.status >= 400
    return response.status


def _wait_recorded(store: Store, key_id: str, ids: list[str], since: str, wait: float) -> int:
    """How many of `ids` are stored under this run's key, polling until all are or `wait` runs out."""
    wanted, node = set(ids), build_filter(since=since)
    deadline = time.monotonic() + wait
    while True:
        stored = sum(1 for row in store.iter_requests(node, project=DEFAULT_PROJECT)
                     if row["id"] in wanted and row["key_id"] == key_id)
        if stored >= len(wanted) or time.monotonic() > deadline:
            return stored
        time.sleep(0.1)


def report(traffic: Traffic, base: str, key: NewKey, store_url: str, since: str, exit_after: bool) -> str:
    auth = f"-H 'Authorization: Bearer {key.key}'"
    query = json.dumps({"filter": {"request_response_rmt": {"model": {"equals": traffic.sample_model}}},
                        "limit": 5})
    ending = ("Stopping the gateway (--exit)." if exit_after
              else f"The gateway keeps running at {base}; press Ctrl+C to stop it.")
    return (f"Done: {len(traffic.ids)} requests sent ({traffic.errors} answered with an error, on purpose), "
            f"all {len(traffic.ids)} recorded.\n\n"
            f"Your demo key (shown once): {key.key}\n"
            f"Dashboard: {base}/login (paste the key above to log in)\n"
            f"Look at the data:\n"
            f"  curl -s {base}/api/v1/request/{traffic.sample_id} {auth}\n"
            f"  curl -s {base}/api/v1/request/query {auth} -d '{query}'\n"
            f"  {_command()} requests export --db {shlex.quote(store_url)} --since {since} --limit 5\n\n"
            f"{ending}")


def _command() -> str:
    """This program as the user typed it (say `.venv/bin/heliograph`), so printed commands work."""
    return sys.argv[0] if Path(sys.argv[0]).name == "heliograph" else "heliograph"


def _one_call(rng: random.Random, n: int, run: str) -> Call:
    user = rng.choice(USERS)
    headers = {
        "Helicone-User-Id": user,
        "Helicone-Property-Feature": rng.choice(FEATURES),
        "Helicone-Property-Environment": rng.choice(["production", "production", "staging"]),
        # Fresh on every run (os.urandom): a repeated id would be dropped as a duplicate record.
        "Helicone-Request-Id": str(uuid.uuid4()),
    }
    if rng.random() < 0.4:
        headers |= {"Helicone-Session-Id": f"session-{run}-{user}-{n // 20}",
                    "Helicone-Session-Name": "Support conversation",
                    "Helicone-Session-Path": rng.choice(["/", "/plan", "/plan/search", "/answer"])}
    if rng.random() < 0.1:
        headers["X-Fake-Scenario"] = rng.choice(["status=429", "status=500", "status=400"])
    stream = rng.random() < 0.3
    prompt = rng.choice(PROMPTS)
    if n % 7 == 3:
        # A managed prompt on every 7th call: the template is versioned by the gateway (a reworded
        # system message every other time makes version 2), so /prompts compares two versions.
        # One model, unstreamed: the template is the whole body, so each would be a version of its own.
        headers |= {"Helicone-Prompt-Id": "support-answer",
                    "Helicone-Prompt-Variables": json.dumps({"customer": user, "question": prompt}),
                    "Authorization": "Bearer demo-provider-key"}
        return OPENAI_STYLE[0][0] + "/chat/completions", headers, {
            "model": OPENAI_STYLE[0][1][0],
            "messages": [{"role": "system", "content": SUPPORT_PROMPT[n // 7 % 2]},
                         {"role": "user", "content": "{{customer}} asks: {{question}}"}]}
    if rng.random() < 0.25:
        model = rng.choice(ANTHROPIC_MODELS)
        headers |= {"x-api-key": "demo-provider-key", "anthropic-version": "2023-06-01"}
        return "/anthropic/v1/messages", headers, {
            "model": model, "max_tokens": 256, "stream": stream,
            "messages": [{"role": "user", "content": prompt}]}
    prefix, models = rng.choice(OPENAI_STYLE)
    headers["Authorization"] = "Bearer demo-provider-key"
    if rng.random() < 0.08:
        return prefix + "/embeddings", headers, {"model": "text-embedding-3-small", "input": prompt}
    # The gateway's controls, so every dashboard page has them: a flaky first attempt retried, a
    # failing model replaced by a fallback, and repeated prompts answered from the cache.
    control = rng.random()
    if control < 0.05 and "X-Fake-Scenario" not in headers:
        headers |= {"Helicone-Retry-Enabled": "true", "Helicone-Retry-Num": "2", "Helicone-Retry-Min-Timeout": "10",
                    "Helicone-Retry-Max-Timeout": "50", "X-Fake-Scenario": "fail-times=1", "X-Fake-Key": str(uuid.uuid4())}
    elif control < 0.09 and "X-Fake-Scenario" not in headers:
        headers |= {"Helicone-Fallback": '[{"model": "gpt-4o-mini"}]', "X-Fake-Scenario": "fail-times=1",
                    "X-Fake-Key": str(uuid.uuid4())}
    elif control < 0.3:
        headers["Helicone-Cache-Enabled"] = "true"
        stream = False      # same prompt, same body: later ones are hits
    return prefix + "/chat/completions", headers, {
        "model": rng.choice(models), "stream": stream,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": prompt}]}
