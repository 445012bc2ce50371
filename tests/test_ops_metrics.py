"""Issue 13: Prometheus metrics by provider and model, named by Prometheus' conventions, and right
with several worker processes (scraped again and again, any worker answering)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from heliograph.testing import FakeUpstream

from .conftest import Gateway, cores_of, free_port, redis_url, run_cli, start_gateway

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three"}]}
CLIENT = {"Authorization": "Bearer sk-client"}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, l), v in samples(text).items() if n == name and wanted <= l)


def scrape_until(url: str, name: str, expected: float, timeout: float = 15, **labels: str) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(url + "/metrics").text
        if value(text, name, **labels) == expected:
            return text
        assert time.monotonic() < deadline, f"{name}{labels} = {value(text, name, **labels)}, not {expected}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("metrics"), fake.url)
    yield gateway
    gateway.stop()


def test_families_by_provider_and_model(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    url = gw.url + "/openai/v1/chat/completions"
    post = lambda body, **headers: httpx.post(url, json=body, headers={**gw.auth, **CLIENT, **headers})  # noqa: E731
    assert post(CHAT).status_code == 200
    assert post({**CHAT, "model": "gpt-4o-mini", "stream": True}).status_code == 200
    cache = {"Helicone-Cache-Enabled": "true", "Helicone-Property-Run": str(uuid.uuid4())}
    body = {**CHAT, "messages": [{"role": "user", "content": str(uuid.uuid4())}]}
    assert post(body, **cache).headers["helicone-cache"] == "MISS"
    deadline = time.monotonic() + 10
    while post(body, **cache).headers["helicone-cache"] != "HIT":   # the entry is saved after the answer
        assert time.monotonic() < deadline
        time.sleep(0.05)
    policy = {"Helicone-RateLimit-Policy": "1;w=60;s=user", "Helicone-User-Id": str(uuid.uuid4())}
    assert post(CHAT, **policy).status_code == 200
    assert post(CHAT, **policy).status_code == 429
    retry = {"Helicone-Retry-Enabled": "true", "Helicone-Retry-Num": "3", "Helicone-Retry-Min-Timeout": "10",
             "Helicone-Retry-Max-Timeout": "50", "X-Fake-Scenario": "fail-times=2,status=500",
             "X-Fake-Key": str(uuid.uuid4())}
    assert post(CHAT, **retry).status_code == 200
    fallback = {"Helicone-Fallback": json.dumps([{"model": "gpt-4o-mini"}]),
                "X-Fake-Scenario": "fail-times=1,status=503", "X-Fake-Key": str(uuid.uuid4())}
    assert post(CHAT, **fallback).headers["helicone-fallback-index"] == "0"

    before_hits = 2     # the polling above may have made more than one call; count what the gateway saw
    text = scrape_until(gw.url, "heliograph_refusals_total", 1, reason="rate_limited")
    text = scrape_until(gw.url, "heliograph_fallbacks_total", 1, model="gpt-4o-mini")
    assert value(text, "heliograph_model_requests_total", provider="openai", model="gpt-4o", status="200") >= 4
    assert value(text, "heliograph_model_requests_total", model="gpt-4o", status="429") == 1
    assert value(text, "heliograph_tokens_total", model="gpt-4o", kind="input") > 0
    assert value(text, "heliograph_tokens_total", model="gpt-4o-mini", kind="output") > 0
    assert value(text, "heliograph_cost_usd_total", model="gpt-4o") > 0
    assert value(text, "heliograph_time_to_first_token_seconds_count", model="gpt-4o-mini") == 1
    assert value(text, "heliograph_model_request_duration_seconds_count", model="gpt-4o") >= 4
    assert value(text, "heliograph_cache_requests_total", result="miss") >= 1
    assert value(text, "heliograph_cache_requests_total", result="hit") >= before_hits - 1
    assert value(text, "heliograph_retries_total", model="gpt-4o") == 2
    assert value(text, "heliograph_records_written_total") >= 8
    assert value(text, "heliograph_recorder_batch_duration_seconds_count") >= 1
    assert value(text, "heliograph_build_info") == 1
    for name in ("heliograph_recorder_queue_depth", "heliograph_journal_bytes", "heliograph_in_flight",
                 "heliograph_duplicate_request_ids_total", "heliograph_requests_total",
                 "heliograph_request_duration_seconds_bucket", "heliograph_gateway_overhead_seconds_bucket"):
        assert name in text, name


def test_names_follow_prometheus_conventions(gw: Gateway) -> None:
    for family in text_string_to_metric_families(httpx.get(gw.url + "/metrics").text):
        assert family.name.startswith("heliograph_"), family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        labels = {label for s in family.samples for label in s.labels}
        assert not labels & {"user", "user_id", "key", "key_id", "session", "property"}, family.name


def test_two_workers_report_every_call_at_every_scrape(fake: FakeUpstream, tmp_path: Path) -> None:
    redis = redis_url()
    multiproc = tmp_path / "prom"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")}
    env |= {"HELIOGRAPH_DB_URL": f"sqlite:///{tmp_path / 'w.db'}", "HELIOGRAPH_UPSTREAM_OPENAI": fake.url,
            "HELIOGRAPH_REDIS_KEY_PREFIX": f"hg-test-{uuid.uuid4()}:", "HELIOGRAPH_RECORDER_FLUSH_MS": "20",
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    multiproc.mkdir()
    (multiproc / "counter_1.db").write_bytes(b"left by an earlier run")     # must be cleared at start
    key = run_cli("keys", "create", "--name", "w", env=env).stdout.strip().splitlines()[-1]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    cores = sorted(os.sched_getaffinity(0))[:2]     # as on a 2-core machine: no core to spare for 2 workers
    with open(log, "wb") as out:
        process = subprocess.Popen(["taskset", "-c", ",".join(map(str, cores)), sys.executable, "-m", "heliograph.cli.main",
                                    "serve", "--port", str(port), "--workers", "2", "--redis", redis, "--log-format",
                                    "json"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            time.sleep(0.1)
        calls = 40
        for _ in range(calls):     # a new connection each: the kernel spreads them over both workers
            r = httpx.post(base + "/openai/v1/chat/completions", json=CHAT,
                           headers={"Helicone-Auth": f"Bearer {key}", **CLIENT})
            assert r.status_code == 200
        pids = {p.name.split("_")[-1].removesuffix(".db") for p in multiproc.glob("counter_*.db")}
        assert len(pids) >= 2, f"one worker served everything ({pids}); the test proves nothing"
        # No core to spare: each worker, all its threads, on a core of its own (one core: both on it).
        pinned = {pid: cores_of(int(pid)) for pid in pids}
        assert sorted(core for threads in pinned.values() for core in threads) == sorted(
            str(cores[slot % len(cores)]) for slot in range(2)), pinned
        # Records are counted by the recorder once written, and totals synced every second.
        scrape_until(base, "heliograph_records_written_total", calls)
        for _ in range(25):
            text = httpx.get(base + "/metrics").text
            assert value(text, "heliograph_requests_total", provider="openai", status_class="2xx") == calls
            assert value(text, "heliograph_model_requests_total", model="gpt-4o") == calls
            assert value(text, "heliograph_request_duration_seconds_count") == calls
            assert value(text, "heliograph_records_written_total") == calls
            assert value(text, "heliograph_in_flight") <= 1     # this scrape is not a proxied call
    finally:
        process.terminate()
        process.wait(timeout=60)
    # One log setup for the supervisor and both workers: every line JSON, the banner once.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    banner = [line["message"] for line in lines if line["logger"] == "heliograph.banner"]
    assert banner.count(f"listening on {base} (2 workers, one core each)") == 1
    assert len([line for line in lines if line["logger"] == "heliograph.access"]) == calls
    assert len({line["message"] for line in lines if line["message"].startswith("Started server process")}) >= 2


BUFFERED = """
import sys
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from heliograph.ops.metrics import VALUES, buffer_values, exposition

def on_file(name):
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined, sys.argv[1])
    return [line for line in generate_latest(combined).decode().splitlines() if line.startswith(name)]

buffer_values()
registry = CollectorRegistry()
calls = Counter("calls", "c", ("provider",), registry=registry).labels("openai")
seconds = Histogram("seconds", "s", buckets=(1,), registry=registry)
calls.inc(3)
seconds.observe(0.5)
print(on_file("calls_total"), on_file("seconds_count"))
VALUES.flush()
print(on_file("calls_total"), on_file("seconds_count"))
calls.inc()
print([line for line in exposition(registry).decode().splitlines() if line.startswith("calls_total")])
"""


def test_a_worker_writes_its_metric_values_to_its_file_when_flushed(tmp_path: Path) -> None:
    """Several workers: values change in memory, and reach the worker's file (what every scrape
    sums) at a flush: every second, and before this worker answers a scrape itself."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", BUFFERED, str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert out == ["['calls_total{provider=\"openai\"} 0.0'] ['seconds_count 0.0']",
                   "['calls_total{provider=\"openai\"} 3.0'] ['seconds_count 1.0']",
                   "['calls_total{provider=\"openai\"} 4.0']"], out
