"""What a registry prompt adds to a call: the issue-11 target is <= 150 us over the same call without one.

Two measurements, side by side in one run:

    stage       in-process: the prompt stage alone (`prompts.render.render` with a warm registry:
                parse, pick the version, compile with typed inputs, merge, serialise) for a
                body-fields call; for an auto-versioned header call (hash the template, find its
                version, fill); and the test every plain call pays (`wanted`), in us per call
    served      one `heliograph serve` (SQLite, logging on) in front of the fake provider; calls
                alternate plain / prompt-rendered (the same final body upstream), sequentially; the
                gateway's own time is read from each answer's `Server-Timing: gateway;dur=`, so the
                upstream's time is left out; p50 / p90 of each and the difference of the medians

    python bench/prompts.py [--calls 400]

Numbers on a shared 2-core machine are noisy: compare the two columns of the same run only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from heliograph.prompts import PromptRegistry
from heliograph.prompts.render import render, wanted
from heliograph.testing import FakeUpstream

TEMPLATE = {"model": "gpt-4o-mini", "temperature": 0.3, "messages": [
    {"role": "system", "content": "You help {{hc:customer:string}} (age {{hc:age:number}}, vip {{hc:vip:boolean}})."},
    {"role": "user", "content": "{{hc:question:string}}"}]}
INPUTS = {"customer": "Ada", "age": 36, "vip": True, "question": "Where is order 7?"}


class OneVersion:
    """A PromptSource holding one managed prompt with one version, and the auto prompt "auto" once
    a template was written (for the in-process stage timing)."""

    def __init__(self) -> None:
        self.auto_hash: str | None = None

    def get_prompt(self, project: str, prompt_id: str) -> dict[str, Any] | None:
        if prompt_id == "auto":
            return None if self.auto_hash is None else {
                "project_id": project, "id": prompt_id, "kind": "auto", "updated_at": 1, "environments": {},
                "versions": [{"id": "pv_auto", "major": 1, "minor": 0, "body_hash": self.auto_hash}]}
        return {"project_id": project, "id": prompt_id, "kind": "managed", "updated_at": 1,
                "environments": {"production": "pv_1"},
                "versions": [{"id": "pv_1", "major": 1, "minor": 0, "body_hash": "h"}]}

    def get_version(self, project: str, version_id: str) -> dict[str, Any] | None:
        return {"id": version_id, "prompt_id": "p", "major": 1, "minor": 0, "body": TEMPLATE}

    def prompt_stamps(self, keys: Any) -> dict[tuple[str, str], int]:
        return {key: 1 for key in keys}

    def auto_version(self, project: str, prompt_id: str, template: Any, declared: Any, digest: str,
                     key_id: str | None) -> str:
        self.auto_hash = digest
        return "pv_auto"


async def stage(n: int) -> dict[str, float]:
    registry = PromptRegistry(OneVersion())
    body = json.dumps({"prompt_id": "p", "inputs": INPUTS, "messages": [{"role": "user", "content": "Quickly."}]}).encode()
    plain = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Quickly."}]}).encode()
    await render(registry, "default", None, {}, body)      # warm: the one store read happens here
    started = time.perf_counter()
    for _ in range(n):
        await render(registry, "default", None, {}, body)
    rendered_us = (time.perf_counter() - started) / n * 1e6
    headers = {"helicone-prompt-id": "auto", "helicone-prompt-variables": json.dumps({"text": "a report"})}
    auto = json.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You summarise documents for busy people."},
        {"role": "user", "content": "Summarise {{text}} in three sentences."}]}).encode()
    await render(registry, "default", None, headers, auto)     # warm: writes (here: pretends to) the version
    started = time.perf_counter()
    for _ in range(n):
        await render(registry, "default", None, headers, auto)
    auto_us = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    for _ in range(n):
        wanted({}, plain, "/openai/v1/chat/completions")
    plain_us = (time.perf_counter() - started) / n * 1e6
    return {"render_us": round(rendered_us, 2), "auto_header_us": round(auto_us, 2),
            "plain_check_us": round(plain_us, 3), "store_reads": registry.loads}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_ms(response: httpx.Response) -> float:
    timing = response.headers["server-timing"]
    return float(timing.split("gateway;dur=")[1].split(",")[0])


def served(calls: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hg-bench-prompts-"))
    with FakeUpstream() as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")}
        env |= {"HELIOGRAPH_DB_URL": f"sqlite:///{work / 'h.db'}", "HELIOGRAPH_LOG_LEVEL": "warning",
                "HELIOGRAPH_UPSTREAM_OPENAI": fake.url, "HELIOGRAPH_JOURNAL_DIR": str(work / "journal")}
        cli = [sys.executable, "-m", "heliograph.cli.main"]
        key = subprocess.run([*cli, "keys", "create", "--name", "bench", "--scope", "admin"], env=env, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        port = free_port()
        server = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                while True:
                    try:
                        if client.get("/healthz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                auth = {"Helicone-Auth": f"Bearer {key}", "Authorization": "Bearer k"}
                made = client.post("/api/v1/prompt-2025", headers={"Authorization": f"Bearer {key}"},
                                   json={"name": "bench", "promptBody": TEMPLATE})
                prompt_id = made.json()["data"]["id"]
                with_prompt = {"prompt_id": prompt_id, "inputs": INPUTS}
                rendered = client.post("/api/v1/prompt-2025/render", headers={"Authorization": f"Bearer {key}"},
                                       json={"promptId": prompt_id, "inputs": INPUTS}).json()["data"]["body"]
                times: dict[str, list[float]] = {"plain": [], "prompt": []}
                for n in range(calls + 40):
                    for name, body in (("plain", rendered), ("prompt", with_prompt)) if n % 2 else (
                            ("prompt", with_prompt), ("plain", rendered)):
                        r = client.post("/openai/v1/chat/completions", headers=auth, json=body)
                        assert r.status_code == 200, r.text
                        if n >= 40:     # the first calls warm connections, caches and the registry
                            times[name].append(gateway_ms(r))
        finally:
            server.terminate()
            server.wait(timeout=30)
    out: dict[str, Any] = {}
    for name, values in times.items():
        values.sort()
        out[name] = {"p50_ms": round(statistics.median(values), 4),
                     "p90_ms": round(values[int(len(values) * 0.9)], 4), "calls": len(values)}
    out["added_p50_us"] = round((out["prompt"]["p50_ms"] - out["plain"]["p50_ms"]) * 1000, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="calls of each kind through the server")
    parser.add_argument("--stage-calls", type=int, default=20_000)
    args = parser.parse_args()
    result = {"loadavg": Path("/proc/loadavg").read_text().split()[:3],
              "stage": asyncio.run(stage(args.stage_calls)), "served": served(args.calls)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
