"""Synthetic request records for benchmarks and demos: `heliograph db generate --rows N`.

Rows look like what the recorder writes (recording/process.py) and go through the same
`store.insert_requests`, so rollups, properties and sessions are built exactly as in production.
What varies, with fixed weights so that runs are comparable (seeded):

* 11 models on 7 providers with their list prices, one unpriced fine-tune (cost NULL);
* latency log-normal around each model's median, TTFT on the 40 % that stream, 3 % cache hits;
* status 200 for 94 %, then 429, 500, 400, 503 and 0 (no answer);
* 5,000 users with a Zipf-like share (15 % of requests have none), 35 % of requests in sessions of
  2–20 requests following agent-like paths, request names, 2–4 properties per request;
* times spread evenly over the last `days` days, written oldest first (the recorder's order);
* all in one project (`default` unless asked), as if sent with that project's keys.

Bodies are drawn from a small pool of realistic chat requests and responses, compressed once.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson

from .bodies import pack
from .storage import Store

# provider, model, $/M prompt tokens, $/M completion tokens (None: unpriced), median latency ms, share
MODELS: tuple[tuple[str, str, float | None, float | None, float, float], ...] = (
    ("openai", "gpt-4o", 2.5, 10.0, 1800, 0.15),
    ("openai", "gpt-4o-mini", 0.15, 0.6, 900, 0.28),
    ("openai", "o3-mini", 1.1, 4.4, 6000, 0.05),
    ("openai", "text-embedding-3-small", 0.02, 0.0, 120, 0.08),
    ("anthropic", "claude-3-5-sonnet-20241022", 3.0, 15.0, 2500, 0.12),
    ("anthropic", "claude-3-5-haiku-20241022", 0.8, 4.0, 1100, 0.08),
    ("gemini", "gemini-1.5-flash", 0.075, 0.3, 700, 0.06),
    ("groq", "llama-3.1-70b-versatile", 0.59, 0.79, 400, 0.05),
    ("mistral", "mistral-large-latest", 2.0, 6.0, 1500, 0.04),
    ("deepseek", "deepseek-chat", 0.27, 1.1, 2000, 0.07),
    ("vllm", "acme-support-ft-v3", None, None, 800, 0.02),
)
ERROR_STATUSES = (429, 500, 400, 503, 0)       # 6 % of requests, in these proportions
ERROR_WEIGHTS = (2.5, 1.2, 1.0, 0.8, 0.5)
WORKFLOWS = {
    "support-agent": ("/triage", "/triage/lookup", "/triage/lookup/answer", "/answer", "/answer/verify"),
    "research-agent": ("/plan", "/plan/search", "/plan/search/read", "/plan/summarize", "/report"),
    "code-review": ("/diff", "/diff/file", "/diff/file/comment", "/summary"),
    "onboarding": ("/welcome", "/welcome/profile", "/tips"),
}
REQUEST_NAMES = ("chat", "summarize", "classify", "extract", "rewrite", None, None)
FEATURES = ("support", "search", "billing", "onboarding", "reports", "chat")
PATHS = {"openai": "/openai/v1/chat/completions", "anthropic": "/anthropic/v1/messages"}
USERS = 5000
OPEN_SESSIONS = 300


@dataclass(frozen=True, slots=True)
class Generated:
    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def _bodies(rnd: random.Random) -> list[tuple[bytes, bytes]]:
    topics = ["reset my password", "the invoice total looks wrong", "summarise this contract", "translate to German",
              "why does the deploy fail", "write a SQL query for monthly revenue", "classify this ticket"]
    pool = []
    for n in range(48):
        question = f"{rnd.choice(topics)} (case {n}). " + " ".join(rnd.choice(topics) for _ in range(rnd.randint(2, 30)))
        request = orjson.dumps({"model": "m", "messages": [
            {"role": "system", "content": "You are a helpful assistant for Acme Corp. Answer briefly."},
            {"role": "user", "content": question}], "temperature": 0.2})
        answer = " ".join(rnd.choice(topics) for _ in range(rnd.randint(5, 80)))
        response = orjson.dumps({"id": f"chatcmpl-{n}", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]})
        pool.append((pack(request), pack(response)))
    return pool


class _Traffic:
    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.models = [m[:5] for m in MODELS]
        self.model_weights = list(accumulate(m[5] for m in MODELS))
        self.users = [f"user-{n:05d}" for n in range(USERS)]
        self.user_weights = list(accumulate(1 / (k + 1) ** 1.1 for k in range(USERS)))
        self.bodies = _bodies(self.rnd)
        self.sessions: list[list[Any]] = []      # [id, name, user, remaining, step]

    def _session(self, user: str | None) -> tuple[str, str, str] | None:
        rnd = self.rnd
        if rnd.random() >= 0.35:
            return None
        if len(self.sessions) < OPEN_SESSIONS or rnd.random() < 0.05:
            name = rnd.choice(tuple(WORKFLOWS))
            self.sessions.append([str(uuid.UUID(int=rnd.getrandbits(128), version=4)), name, user,
                                  rnd.randint(2, 20), 0])
        index = rnd.randrange(len(self.sessions))
        session = self.sessions[index]
        steps = WORKFLOWS[session[1]]
        path = steps[min(session[4], len(steps) - 1)]
        session[3] -= 1
        session[4] += 1
        if session[3] <= 0:
            self.sessions[index] = self.sessions[-1]
            self.sessions.pop()
        return session[0], session[1], path

    def row(self, at: int, project: str = "default") -> dict[str, Any]:
        rnd = self.rnd
        provider, model, prompt_price, completion_price, median = rnd.choices(self.models, cum_weights=self.model_weights)[0]
        status = 200 if rnd.random() < 0.94 else rnd.choices(ERROR_STATUSES, ERROR_WEIGHTS)[0]
        user = rnd.choices(self.users, cum_weights=self.user_weights)[0] if rnd.random() > 0.15 else None
        session = self._session(user)
        streamed = model != "text-embedding-3-small" and rnd.random() < 0.4
        cache_hit = status == 200 and rnd.random() < 0.03
        latency = rnd.lognormvariate(0, 0.6) * median
        prompt = int(rnd.lognormvariate(6.4, 1.0))
        completion = 0 if "embedding" in model else int(rnd.lognormvariate(5.5, 0.9))
        reasoning = int(completion * rnd.uniform(1, 4)) if model == "o3-mini" else 0
        cached = int(prompt * rnd.uniform(0.2, 0.8)) if rnd.random() < 0.2 else 0
        cost: float | None
        if status != 200:
            latency = rnd.uniform(20, 300) if status in (429, 400) else latency * rnd.uniform(0.05, 1.0)
            prompt = completion = reasoning = cached = 0
            cost = 0.0
        elif cache_hit:
            latency, cost = rnd.uniform(0.5, 4.0), 0.0
        elif prompt_price is None or completion_price is None:
            cost = None
        else:
            cost = ((prompt + cached * 0.5) * prompt_price + (completion + reasoning) * completion_price) / 1e6
        properties = {"environment": rnd.choices(("production", "staging", "dev"), (85, 10, 5))[0],
                      "feature": rnd.choice(FEATURES)}
        if rnd.random() < 0.7:
            properties["app_version"] = f"1.4.{rnd.randint(0, 4)}"
        if rnd.random() < 0.5:
            properties["customer_tier"] = rnd.choices(("free", "pro", "enterprise"), (60, 30, 10))[0]
        request_body, response_body = rnd.choice(self.bodies)
        tokens = status == 200
        return {
            "id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)), "created_at": at, "provider": provider,
            "method": "POST", "path": PATHS.get(provider, f"/{provider}/v1/chat/completions"),
            "target_url": f"https://api.{provider}.example/v1/chat/completions", "status": status,
            "request_model": model, "response_model": model if tokens else None, "model": model,
            "user_id": user, "session_id": session[0] if session else None,
            "session_path": session[2] if session else None, "session_name": session[1] if session else None,
            "request_name": "embed" if "embedding" in model else rnd.choice(REQUEST_NAMES),
            "properties": orjson.dumps(properties).decode(), "key_id": "key_synthetic",
            "prompt_tokens": prompt if tokens else None, "completion_tokens": completion if tokens else None,
            "total_tokens": prompt + cached + completion + reasoning if tokens else None,
            "prompt_cache_read_tokens": cached, "prompt_cache_write_tokens": 0, "reasoning_tokens": reasoning,
            "cost": cost, "pricing_status": "unpriced" if cost is None else "priced",
            "latency_ms": round(latency, 3), "ttft_ms": round(latency * rnd.uniform(0.1, 0.35), 3) if streamed else None,
            "gateway_overhead_ms": round(rnd.uniform(0.2, 0.9), 3), "streamed": streamed, "partial": False,
            "error": None if status == 200 else ("upstream_unavailable" if status == 0 else f"http_{status}"),
            "cache_enabled": cache_hit, "cache_reference_id": str(uuid.UUID(int=rnd.getrandbits(128))) if cache_hit else None,
            "prompt_id": None, "prompt_version": None, "prompt_inputs": None, "attempts": "[]", "fallback_index": None, "project_id": project,
            "request_body": request_body, "response_body": response_body,
        }


def generate(store: Store, rows: int, *, days: float = 30.0, end_ms: int | None = None, seed: int = 0,
             batch_size: int = 5000, progress: Callable[[int], None] | None = None,
             project: str = "default") -> Generated:
    """Write `rows` synthetic records of `project` spread evenly over the `days` before `end_ms` (default now)."""
    traffic = _Traffic(seed)
    end = int(time.time() * 1000) if end_ms is None else end_ms
    span = days * 86_400_000
    start = end - span
    began = time.perf_counter()
    written = 0
    while written < rows:
        count = min(batch_size, rows - written)
        # Evenly spaced with jitter, never out of order: the recorder writes oldest first too.
        batch = [traffic.row(int(start + (written + i + traffic.rnd.random()) * span / rows), project)
                 for i in range(count)]
        store.insert_requests(batch)
        written += count
        if progress is not None:
            progress(written)
    return Generated(written, time.perf_counter() - began)
