"""`heliograph demo`: the whole product with no internet and no provider key.

Starts the built-in fake provider, points every provider at it, creates a demo key, serves the
gateway, and sends a few hundred varied calls through it (several providers, users, sessions,
properties, streaming and not, some errors) so that the store has something to look at.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
import uuid
from typing import Any

import aiohttp
import click

from .keys import create_key
from .proxy.routes import PROVIDERS
from .settings import Settings
from .storage import open_store
from .testing import FakeUpstream

USERS = [f"user-{n:02d}" for n in range(1, 13)]
FEATURES = ["support-bot", "summarizer", "search", "code-review"]
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


def run_demo(settings: Settings, count: int, exit_after: bool) -> None:
    fake = FakeUpstream().start()
    upstreams = {name: fake.url for name in PROVIDERS}
    settings = dataclasses.replace(settings, upstreams=upstreams, provider_keys={})
    store = open_store(settings.db_url)
    store.migrate()
    key = create_key(store, f"demo-{time.strftime('%Y%m%d-%H%M%S')}").key
    base = f"http://{settings.host}:{settings.port}"

    def traffic() -> None:
        sent, failed = asyncio.run(send_traffic(base, key, count))
        click.echo(f"\nDemo traffic done: {sent} requests sent through Heliograph ({failed} answered with errors "
                   f"on purpose).\nLook at one: curl -H 'Authorization: Bearer {key}' {base}/api/v1/request/<Helicone-Id>\n"
                   f"Your demo key: {key}")
        if exit_after:
            import os
            import signal
            time.sleep(settings.recorder_flush_ms / 1000 + 0.5)
            os.kill(os.getpid(), signal.SIGTERM)

    click.echo(f"Fake provider at {fake.url}; gateway at {base}; store {settings.db_url}")
    threading.Thread(target=traffic, daemon=True).start()
    from .server import run
    try:
        run(settings)
    finally:
        fake.stop()


async def send_traffic(base: str, key: str, count: int, concurrency: int = 8) -> tuple[int, int]:
    rng = random.Random(7)
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(base + "/healthz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        calls = [_one_call(rng, n) for n in range(count)]
        semaphore = asyncio.Semaphore(concurrency)
        failed = 0

        async def send(call: tuple[str, dict[str, str], dict[str, Any]]) -> None:
            nonlocal failed
            path, headers, body = call
            async with semaphore:
                async with http.post(base + path, json=body,
                                     headers={"Helicone-Auth": f"Bearer {key}", **headers}) as response:
                    await response.read()
                    failed += response.status >= 400

        await asyncio.gather(*(send(call) for call in calls))
    return count, failed


def _one_call(rng: random.Random, n: int) -> tuple[str, dict[str, str], dict[str, Any]]:
    user = rng.choice(USERS)
    headers = {
        "Helicone-User-Id": user,
        "Helicone-Property-Feature": rng.choice(FEATURES),
        "Helicone-Property-Environment": rng.choice(["production", "production", "staging"]),
        "Helicone-Request-Id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    }
    if rng.random() < 0.4:
        session = f"session-{user}-{n // 20}"
        headers |= {"Helicone-Session-Id": session, "Helicone-Session-Name": "Support conversation",
                    "Helicone-Session-Path": rng.choice(["/", "/plan", "/plan/search", "/answer"])}
    if rng.random() < 0.1:
        headers["X-Fake-Scenario"] = rng.choice(["status=429", "status=500", "status=400"])
    stream = rng.random() < 0.3
    prompt = rng.choice(PROMPTS)
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
    return prefix + "/chat/completions", headers, {
        "model": rng.choice(models), "stream": stream,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": prompt}]}
