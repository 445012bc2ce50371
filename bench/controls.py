"""The controls phase: what caching and rate limiting add to a Heliograph call, in-process and on Redis.

Two `heliograph serve` processes on the proxy core, each logging to a fresh SQLite store:
`memory` (in-process cache and limiter) and `redis` (`HELIOGRAPH_REDIS_URL` at an already running
Redis, under a key prefix of this run's own; skipped with a message when Redis does not answer PING).
Each variant is the same chat completion with other headers:

    baseline    no control headers
    cache-hit   Helicone-Cache-Enabled, one identical body, stored before measuring: every answer a HIT
    cache-miss  Helicone-Cache-Enabled, a unique body per request: lookup + upstream call + store, every time
    ratelimit   Helicone-RateLimit-Policy: 1000000;w=3600 (a token per request, never refused)

Open loop at each `--controls-rates` rate (for each rate: direct, then every backend x variant,
interleaved so machine noise hits them alike), then wrk at saturation per backend x variant.
Added latency is the variant minus the baseline of the same backend at the same rate, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import loadgen
import procs as P

VARY = b"################"  # replaced by a unique number per request in cache-miss steps
FIXED = b"0" * len(VARY)     # what the other variants send in its place: same body length
CACHE_HEADERS = {"Helicone-Cache-Enabled": "true",
                 # The key ignores Cache-Control; a short TTL bounds what a run leaves in Redis.
                 "Cache-Control": "max-age=900"}
POLICY = "1000000;w=3600"
VARIANTS: dict[str, dict[str, str]] = {
    "baseline": {},
    "cache-hit": CACHE_HEADERS,
    "cache-miss": CACHE_HEADERS,
    "ratelimit": {"Helicone-RateLimit-Policy": POLICY},
}
WATCH = ("Helicone-Cache", "Helicone-RateLimit-Limit")
HIT = "helicone-cache: HIT"
LIMITED = f"helicone-ratelimit-limit: {POLICY.split(';')[0]}"


def bodies(request: dict[str, Any]) -> tuple[bytes, bytes]:
    """(template with the VARY placeholder in the prompt, the same with FIXED in its place)."""
    varied = json.loads(json.dumps(request))
    varied["messages"][-1]["content"] += " (bench " + VARY.decode() + ")"
    template = json.dumps(varied).encode()
    return template, template.replace(VARY, FIXED)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


async def controls(args: argparse.Namespace, processes: P.Processes, results: dict[str, Any], mock_url: str,
                   mock_pid: int, *, request: dict[str, Any], route: str, direct_route: str,
                   headers_for: Callable[[str, str], dict[str, str]],
                   completeness: Callable[[Path, dict[str, dict[str, Any]], int], dict[str, Any]],
                   say: Callable[[str], None]) -> None:
    work = processes.workdir
    out: dict[str, Any] = {"rates": args.controls_rates, "duration_s": args.controls_duration,
                           "connections": args.connections, "policy": POLICY,
                           "variants": {name: dict(h) for name, h in VARIANTS.items()},
                           "loadavg_before": loadavg()}
    results["controls"] = out
    started = time.monotonic()

    backends: dict[str, dict[str, str]] = {"memory": {}}
    info, why = await asyncio.to_thread(P.redis_probe, args.redis_url)
    prefix = f"heliograph-bench-{os.getpid()}-{int(time.time())}:"
    if info is None:
        out["redis"] = {"url": args.redis_url, "skipped": why}
        say(f"controls: Redis at {args.redis_url} does not answer PING ({why}): the Redis rows are skipped")
    else:
        out["redis"] = info | {"key_prefix": prefix}
        backends["redis"] = {"HELIOGRAPH_REDIS_URL": args.redis_url, "HELIOGRAPH_REDIS_KEY_PREFIX": prefix}

    servers: dict[str, dict[str, Any]] = {}
    try:
        for backend, env in backends.items():
            db_path = work / f"controls-{backend}" / "heliograph.db"
            db_path.parent.mkdir()
            url, proc, key = P.start_heliograph(processes, f"heliograph-{backend}", mock_url, db_path, env)
            servers[backend] = {"url": url + route, "proc": proc, "key": key, "db": db_path, "sent": {}}
        for server in servers.values():
            await loadgen.wait_http(server["url"].removesuffix(route) + "/healthz")
        where = ", ".join(f"{name} {server['url'].removesuffix(route)}" for name, server in servers.items())
        say(f"controls: heliograph {where}"
            + (f"; Redis {info['version']} at {args.redis_url}, key prefix {prefix}" if info else ""))
        await _measure(args, processes, out, servers, mock_url + direct_route, mock_pid, request, headers_for,
                       info["pid"] if info else None, say)
        for backend, server in servers.items():
            exit_code = await asyncio.to_thread(processes.stop, server["proc"], 120.0)
            out.setdefault("completeness", {})[backend] = completeness(server["db"], server["sent"], exit_code)
    finally:
        if "redis" in backends:
            try:
                out["redis"]["keys_deleted"] = await asyncio.to_thread(P.redis_forget, args.redis_url, prefix)
            except Exception as exc:  # noqa: BLE001 - they expire anyway (cache 900 s, buckets once full)
                out["redis"]["cleanup_failed"] = f"{type(exc).__name__}: {exc}"
    out["loadavg_after"] = loadavg()
    out["wall_s"] = round(time.monotonic() - started, 1)
    complete = all(c["complete"] for c in out.get("completeness", {}).values())
    say(f"  controls done in {out['wall_s']:.0f} s; log completeness {'OK' if complete else 'MISMATCH'}"
        + (f"; {out['redis'].get('keys_deleted', 0)} Redis keys of this run deleted" if "redis" in backends else ""))


async def _measure(args: argparse.Namespace, processes: P.Processes, out: dict[str, Any],
                   servers: dict[str, dict[str, Any]], direct_url: str, mock_pid: int, request: dict[str, Any],
                   headers_for: Callable[[str, str], dict[str, str]], redis_pid: int | None,
                   say: Callable[[str], None]) -> None:
    template, fixed = bodies(request)
    any_key = next(iter(servers.values()))["key"]

    def hdrs(server: dict[str, Any], variant: str, phase: str) -> dict[str, str]:
        return headers_for(server["key"], phase) | VARIANTS[variant]

    def step_args(variant: str) -> tuple[bytes, bytes | None]:
        return (template, VARY) if variant == "cache-miss" else (fixed, None)

    # Prime the cache-hit entry (one request, then a second that must be a HIT), then open the
    # connections of every target and variant.
    out["warmup"] = {}
    for backend, server in servers.items():
        prime = []
        for _ in range(2):
            step = await loadgen.run_open_loop(backend, server["url"], fixed, hdrs(server, "cache-hit", "ctl-warmup"),
                                               10, 0.1, WATCH)
            server["sent"].setdefault("ctl-warmup", {"kind": "open", "ok": 0, "on_wire": 0})
            server["sent"]["ctl-warmup"]["ok"] += step.ok
            server["sent"]["ctl-warmup"]["on_wire"] += step.on_wire
            prime.append(step.headers_seen)
        out["warmup"][backend] = {"prime": prime}
        if prime[-1].get(HIT) != 1:
            raise RuntimeError(f"{backend}: the second identical cached request was not a HIT: {prime}\n"
                               f"{processes.log_tail('heliograph-' + backend)}")
    warm = 0.5 if args.quick else 1.0
    step = await loadgen.run_open_loop("direct", direct_url, fixed, headers_for(any_key, "ctl-warmup"), 200, warm)
    for backend, server in servers.items():
        for variant in VARIANTS:
            body, vary = step_args(variant)
            step = await loadgen.run_open_loop(backend, server["url"], body, hdrs(server, variant, "ctl-warmup"),
                                               200, warm, WATCH, vary)
            server["sent"]["ctl-warmup"]["ok"] += step.ok
            server["sent"]["ctl-warmup"]["on_wire"] += step.on_wire
            if step.errors:
                raise RuntimeError(f"controls warm-up of {backend}/{variant} failed: {step.error_kinds}\n"
                                   f"{processes.log_tail('heliograph-' + backend)}")

    out["open_loop"] = []
    for rate in args.controls_rates:
        gc.collect()
        await asyncio.sleep(0.5)
        meter = P.CpuMeter(mock_pid)
        step = await loadgen.run_open_loop("direct", direct_url, fixed, headers_for(any_key, f"ctl-{rate:g}"),
                                           rate, args.controls_duration)
        report = {"backend": "direct", "variant": "direct"} | step.report() | meter.report(step.ok)
        out["open_loop"].append(report)
        _say_step(say, report)
        for backend, server in servers.items():
            for variant in VARIANTS:
                phase = f"ctl-{variant}-{rate:g}"
                body, vary = step_args(variant)
                gc.collect()
                await asyncio.sleep(0.5)  # let the previous step settle (the recorder flushes)
                meter = P.CpuMeter(server["proc"].pid)
                redis_meter = P.CpuMeter(redis_pid) if backend == "redis" and redis_pid else None
                step = await loadgen.run_open_loop(backend, server["url"], body, hdrs(server, variant, phase),
                                                   rate, args.controls_duration, WATCH, vary)
                report = ({"backend": backend, "variant": variant} | step.report() | meter.report(step.ok)
                          | _redis_cpu(redis_meter, step.ok))
                out["open_loop"].append(report)
                server["sent"][phase] = {"kind": "open", "ok": step.ok, "on_wire": step.on_wire}
                _say_step(say, report)

    out["saturation"] = []
    for backend, server in servers.items():
        for variant in VARIANTS:
            phase = f"ctl-{variant}-wrk"
            body, vary = step_args(variant)
            await asyncio.sleep(0.5)
            meter = P.CpuMeter(server["proc"].pid)
            redis_meter = P.CpuMeter(redis_pid) if backend == "redis" and redis_pid else None
            report = await asyncio.to_thread(P.run_wrk, processes.workdir, server["url"], body,
                                             hdrs(server, variant, phase), args.controls_duration,
                                             args.connections, vary)
            report = ({"backend": backend, "variant": variant, "phase": phase} | report | meter.report(report["ok"])
                      | _redis_cpu(redis_meter, report["ok"]))
            out["saturation"].append(report)
            server["sent"][phase] = {"kind": "wrk", "ok": report["ok"], "connections": args.connections}
            say(f"  ctl saturation {backend:<7} {variant:<11}{report['max_rps']:>8.1f} req/s  err {report['errors']:<4} "
                f"p50 {report['latency_ms']['p50']:.2f}  p99 {report['latency_ms']['p99']:.2f} ms")


def _redis_cpu(meter: P.CpuMeter | None, answered: int) -> dict[str, float]:
    if meter is None:
        return {}
    return {f"redis_{k.removeprefix('target_')}": v for k, v in meter.report(answered).items()}


def _say_step(say: Callable[[str], None], report: dict[str, Any]) -> None:
    lat = report["latency_ms"]
    seen = report.get("headers_seen", {})
    marks = f"  HIT {seen.get(HIT, 0)}" if report["variant"].startswith("cache") else ""
    say(f"  ctl open {report['rate']:>5g}/s {report['backend']:<7} {report['variant']:<11}"
        f"achieved {report['achieved_rps']:>6.1f}/s  err {report['errors']:<3} p50 {lat['p50']:7.3f}  "
        f"p90 {lat['p90']:7.3f}  p99 {lat['p99']:7.3f} ms{marks}")
