"""The overload phase (`--overload 2.0`): open-loop load beyond what Heliograph can serve.

One `heliograph serve` per variant on the proxy core, measured one after the other: `unbounded`
(`HELIOGRAPH_MAX_IN_FLIGHT=0`: every request admitted and queued), `default` (the default
`max_in_flight`: past it new requests get 503 + Retry-After at once) and one per
`--overload-limits` value. The generator opens `--overload-connections` keep-alive connections
before the step (more than `max_in_flight`, as many clients with warm pools would; opening
thousands during the step would overflow the listen backlog and measure SYN retries instead), so
the gateway, not the generator, decides what queues. The rate is `--overload` x Heliograph's max
(wrk), or `--overload-rate`; the generator sends at most ~5,000 req/s from its core, so on a fast
machine 2x may be out of reach: `generator_sent_rps` and its lag are in the JSON.

Reported per variant: goodput (2xx per second during the load), p50/p99 of the admitted (2xx)
requests from their scheduled send, the 503s, other errors, Heliograph's CPU and RSS (start, peak,
end), and whether every 2xx answer has a row in the store (shed requests have none: they are
refused before authentication).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
from collections.abc import Callable
from typing import Any

import loadgen
import procs as P

def variants(extra_limits: list[int]) -> dict[str, dict[str, str]]:
    """unbounded, the default max_in_flight, and any other limits asked for."""
    out: dict[str, dict[str, str]] = {"unbounded": {"HELIOGRAPH_MAX_IN_FLIGHT": "0"}, "default": {}}
    for limit in extra_limits:
        out[f"max {limit}"] = {"HELIOGRAPH_MAX_IN_FLIGHT": str(limit)}
    return out


async def _sample_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], P.rss_kib(pid) or 0)
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except TimeoutError:
            pass


async def overload(args: argparse.Namespace, processes: P.Processes, results: dict[str, Any], mock_url: str, *,
                   request: dict[str, Any], route: str, headers_for: Callable[[str, str], dict[str, str]],
                   store_counts: Callable[[Any], dict[str, dict[str, int]]], say: Callable[[str], None]) -> None:
    if args.overload_prompt_kb:
        # A bigger prompt costs Heliograph (recording, compression) far more than the generator or
        # nginx, so 2x its max stays within what one generator core can send.
        filler = "lorem ipsum " * (args.overload_prompt_kb * 1024 // 12)
        request = {**request, "messages": [*request["messages"], {"role": "user", "content": filler}]}
    body = json.dumps(request).encode()
    servers = {}
    for name, env in variants(args.overload_limits).items():
        db_path = processes.workdir / f"overload-{name.replace(' ', '-')}" / "heliograph.db"
        db_path.parent.mkdir()
        url, proc, key = P.start_heliograph(processes, f"overload-{name.replace(' ', '-')}", mock_url, db_path, env)
        servers[name] = (url + route, proc, key, db_path)
    for url, _, key, _ in servers.values():
        await loadgen.wait_http(url.removesuffix(route) + "/healthz")
        await loadgen.run_open_loop("warmup", url, body, headers_for(key, "warmup"), 200, 1.0)

    saturation = next((r["max_rps"] for r in results.get("saturation", []) if r["target"] == "heliograph"), None)
    if saturation is None or args.overload_prompt_kb:
        url, proc, key, _ = servers["default"]
        wrk = await asyncio.to_thread(P.run_wrk, processes.workdir, url, body, headers_for(key, "wrk"),
                                      args.duration, args.connections)
        saturation = wrk["max_rps"]
    rate = args.overload_rate or round(args.overload * saturation)
    say(f"overload: Heliograph's max {saturation:.0f} req/s (wrk), sending {rate} req/s ({rate / saturation:.2g}x) "
        f"for {args.overload_duration:g} s per variant, {args.overload_connections} connections")

    out: dict[str, Any] = {"max_rps": saturation, "factor": round(rate / saturation, 2), "rate": rate,
                           "body_bytes": len(body),
                           "connections": args.overload_connections, "loadavg_before": _loadavg(), "steps": []}
    for name, (url, proc, key, db_path) in servers.items():
        gc.collect()
        await asyncio.sleep(1.0)
        rss_start = P.rss_kib(proc.pid) or 0
        peak, stop = [rss_start], asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(proc.pid, peak, stop))
        meter = P.CpuMeter(proc.pid)
        step = await loadgen.run_open_loop(name, url, body, headers_for(key, "overload"), rate,
                                           args.overload_duration, connections=args.overload_connections,
                                           preopen=True)
        cpu = meter.report(step.ok)
        stop.set()
        await sampler
        report = step.report() | cpu
        in_window = sum(step.per_second.get(i, 0) for i in range(int(args.overload_duration)))
        shed = step.error_kinds.get("http_503", 0)
        report |= {"goodput_rps": round(in_window / int(args.overload_duration), 1),
                   "goodput_pct_of_max": round(100 * in_window / int(args.overload_duration) / saturation, 1),
                   "shed_503": shed, "other_errors": step.errors - shed,
                   "rss_kib": {"start": rss_start, "peak": peak[0], "end": P.rss_kib(proc.pid)}}
        exit_code = await asyncio.to_thread(processes.stop, proc, 120.0)
        rows = store_counts(db_path).get("overload", {"rows": 0, "rows_2xx": 0})
        # Every 2xx answer has a row; a request still unread in a socket buffer when the generator
        # gave up (15 s after the step) never reached Heliograph, hence rows <= on_wire - shed.
        report["store"] = {**rows, "on_wire_not_shed": step.on_wire - shed, "server_exit_code": exit_code,
                           "complete": step.ok <= rows["rows_2xx"] and rows["rows"] <= step.on_wire - shed}
        out["steps"].append(report)
        report["generator_sent_rps"] = round(step.on_wire / args.overload_duration, 1)
        lat = report["latency_ms"]
        say(f"  overload {name:<10} goodput {report['goodput_rps']:>7.1f}/s ({report['goodput_pct_of_max']:.0f} %)  "
            f"503 {shed:<6} other err {report['other_errors']:<5} p50 {lat['p50']:9.1f}  p99 {lat['p99']:9.1f} ms  "
            f"RSS {rss_start // 1024}->{peak[0] // 1024}->{(report['rss_kib']['end'] or 0) // 1024} MiB  "
            f"rows {'OK' if report['store']['complete'] else 'MISMATCH'}")
    out["loadavg_after"] = _loadavg()
    results["overload"] = out


def _loadavg() -> list[float]:
    with open("/proc/loadavg") as fh:
        return [float(x) for x in fh.read().split()[:3]]


def overload_table(results: dict[str, Any]) -> str:
    ov = results.get("overload")
    if not ov:
        return ""
    lines = [f"\nOverload: {ov['rate']} req/s = {ov['factor']:g} x Heliograph's max ({ov['max_rps']:.0f} req/s, wrk), "
             f"open loop, {ov['connections']} warm connections; loadavg before {ov['loadavg_before']}, "
             f"after {ov['loadavg_after']}",
             f"{'variant':<10} {'goodput/s':>9} {'% max':>6} {'p50 ms':>8} {'p99 ms':>8} {'503':>6} {'err':>5} "
             f"{'cpu%':>5} {'RSS start/peak/end MiB':>23} rows"]
    for r in ov["steps"]:
        rss = r["rss_kib"]
        lines.append(f"{r['target']:<10} {r['goodput_rps']:>9.1f} {r['goodput_pct_of_max']:>6.1f} "
                     f"{r['latency_ms']['p50']:>8.1f} {r['latency_ms']['p99']:>8.1f} {r['shed_503']:>6} "
                     f"{r['other_errors']:>5} {r.get('target_cpu_pct', 0):>5.0f} "
                     f"{rss['start'] // 1024:>7}/{rss['peak'] // 1024}/{(rss['end'] or 0) // 1024:<8} "
                     f"{'OK' if r['store']['complete'] else 'MISMATCH'}")
    return "\n".join(lines)
