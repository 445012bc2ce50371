"""The end of a run: added latency, DESIGN §4 verdicts, and the compact table printed last."""

from __future__ import annotations

import math
import statistics
from typing import Any

import loadgen


def added(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Via-proxy minus direct, per rate and percentile, from the moment each request was written.

    Measured from the actual send (`service_ms`), like the controls phase: the generator's own timer
    lag (0-1 ms, its median fixed per step) is noise of the size being measured. Sends still follow
    the fixed schedule whatever the answers do, so a proxy that stalls is still charged for it.
    """
    by = {(r["target"], r["rate"]): r for r in results.get("open_loop", [])}
    rows = []
    for (target, rate), report in by.items():
        direct = by.get(("direct", rate))
        if target == "direct" or direct is None:
            continue
        rows.append({"target": target, "rate": rate, **{
            q: round(report["service_ms"][q] - direct["service_ms"][q], 3) for q in ("p50", "p90", "p99")}})
    return rows


def checks(results: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """DESIGN §4 targets, judged on this run."""
    out: list[tuple[str, bool | None, str]] = []
    add = {(r["target"], r["rate"]): r for r in results.get("added", [])}
    hg, bare = add.get(("heliograph", 500.0)), add.get(("bare", 500.0))
    if hg and bare:
        out.append(("added p50 at 500 req/s <= 1.5 ms", hg["p50"] <= 1.5, f"{hg['p50']:.3f} ms"))
        out.append(("added p99 at 500 req/s <= 1.5x bare's", hg["p99"] <= 1.5 * max(bare["p99"], 0.0),
                    f"{hg['p99']:.3f} vs bare {bare['p99']:.3f} ms"))
    if share := saturation_share(results.get("saturation", [])):
        rps, ratio, ratios = share
        rounds = f" (median of {', '.join(f'{100 * r:.0f}' for r in ratios)} %)" if len(ratios) > 1 else ""
        out.append(("max >= 1500 req/s and >= 60% of bare", rps >= 1500 and ratio >= 0.6,
                    f"{rps:.0f} req/s = {100 * ratio:.0f}% of bare{rounds}"))
    if "streaming" in results:
        st = {r["target"]: r for r in results["streaming"]}
        ttfb = st["heliograph"]["ttfb_ms"]["p50"] - st["direct"]["ttfb_ms"]["p50"]
        out.append(("streaming added TTFB p50 <= 1 ms", ttfb <= 1.0, f"{ttfb:.3f} ms"))
        out.append(("streamed chunks never batched", st["heliograph"]["batched_gaps"] == 0,
                    (f"{st['heliograph']['batched_gaps']} of {st['heliograph']['gaps']} gaps "
                     f"< {st['heliograph']['batched_below_ms']:g} ms")))
    for key in ("completeness", "stream_completeness"):
        if key in results:
            out.append((f"log {key.replace('_', ' ')}: rows/2xx rows/answered per phase", results[key]["complete"],
                        "; ".join(f"{p} {v['rows']}/{v['rows_2xx']}/{v['answered']}" for p, v in results[key]["phases"].items())))
    return out


def saturation_share(steps: list[dict[str, Any]]) -> tuple[float, float, list[float]] | None:
    """Heliograph's median max req/s, the median of its ratio to bare's in the same round, the ratios."""
    rounds: dict[int, dict[str, float]] = {}
    for step in steps:
        rounds.setdefault(step.get("round", 1), {})[step["target"]] = step["max_rps"]
    pairs = [(r["heliograph"], r["heliograph"] / r["bare"]) for r in rounds.values()
             if "heliograph" in r and r.get("bare")]
    if not pairs:
        return None
    return (statistics.median(rps for rps, _ in pairs), statistics.median(ratio for _, ratio in pairs),
            [ratio for _, ratio in pairs])


def _cpu(report: dict[str, Any]) -> str:
    """The target's CPU use during a step: % of one core, and microseconds per answered request."""
    if "target_cpu_pct" not in report:
        return ""
    return f"{report['target_cpu_pct']:>5.0f} {report.get('target_cpu_us_per_req', math.nan):>6.0f}"


def table(results: dict[str, Any], judged: list[tuple[str, bool | None, str]]) -> str:
    lines = []
    meta = results["meta"]
    lines.append(f"\nHeliograph bench {meta['started']}  ({'quick' if meta['quick'] else 'full'}; "
                 f"load avg before {meta['loadavg_before']}, after {meta.get('loadavg_after')})")
    lines.append(f"uptime before: {meta.get('uptime_before')}\nuptime after:  {meta.get('uptime_after')}")
    lines.append(f"Heliograph {meta['heliograph_version']} from {meta['heliograph']} "
                 f"(git {meta['git_head']}{', uncommitted changes' if meta['src_dirty'] else ''})")
    if results.get("open_loop"):
        lines.append("\nOpen loop: latency in ms from the scheduled send; added = target - direct at the same rate")
        lines.append(f"{'rate':>6} {'target':<11}{'achieved':>9} {'err':>5} {'p50':>8} {'p90':>8} {'p99':>8}"
                     f" | {'+p50':>7} {'+p90':>7} {'+p99':>7} | {'cpu%':>5} {'us/req':>6}")
    add = {(r["target"], r["rate"]): r for r in results.get("added", [])}
    for r in results.get("open_loop", []):
        lat = r["latency_ms"]
        extra = add.get((r["target"], r["rate"]))
        tail = (f" | {extra['p50']:>7.3f} {extra['p90']:>7.3f} {extra['p99']:>7.3f}" if extra else f" | {'':>23}")
        lines.append(f"{r['rate']:>6g} {r['target']:<11}{r['achieved_rps']:>9.1f} {r['errors']:>5} "
                     f"{lat['p50']:>8.3f} {lat['p90']:>8.3f} {lat['p99']:>8.3f}{tail} | {_cpu(r)}")
    gateway = [r for r in results.get("open_loop", []) if "server_timing_gateway_ms" in r]
    if gateway:
        lines.append("Heliograph's own Server-Timing gateway;dur (ms) p50/p99: " + ", ".join(
            f"{r['rate']:g}/s {r['server_timing_gateway_ms']['p50']:.3f}/{r['server_timing_gateway_ms']['p99']:.3f}"
            for r in gateway))
    if results.get("saturation"):
        lines.append(f"\nSaturation (wrk, closed loop, {results['saturation'][0]['connections']} connections)")
        lines.append(f"{'target':<11}{'max req/s':>10} {'err':>5} {'p50 ms':>8} {'p99 ms':>8} | {'cpu%':>5} {'us/req':>6}")
        for r in results["saturation"]:
            lines.append(f"{r['target']:<11}{r['max_rps']:>10.1f} {r['errors']:>5} "
                         f"{r['latency_ms']['p50']:>8.2f} {r['latency_ms']['p99']:>8.2f} | {_cpu(r)}"
                         + (f"  round {r['round']}" if r.get("round", 1) > 1 else ""))
    if rss := results.get("heliograph_rss"):
        lines.append("Heliograph RSS (MiB): " + ", ".join(
            f"{k.removesuffix('_kib')} {v / 1024:.0f}" for k, v in rss.items() if v))
    if "soak" in results:
        s = results["soak"]
        lines.append(f"\nSoak (log completeness): {s['rate']:g}/s for {s['duration_s']:g} s, achieved "
                     f"{s['achieved_rps']}/s, err {s['errors']} {s['error_kinds'] or ''}, p50 {s['latency_ms']['p50']:.3f} "
                     f"p99 {s['latency_ms']['p99']:.3f} ms; {s['sent'] - s.get('on_wire', s['sent'])} never left the generator "
                     f"(queued behind {loadgen.MAX_CONNECTIONS} busy connections); Heliograph CPU {_cpu(s)}")
        per_second = s.get("answered_per_second", [])
        if len(per_second) >= 4:
            lines.append("  answered per second, by 10 s window: " + " ".join(
                str(round(sum(per_second[i:i + 10]) / len(per_second[i:i + 10])))
                for i in range(0, len(per_second), 10)))
    if results.get("streaming"):
        st = {r["target"]: r for r in results["streaming"]}
        lines.append(f"\nStreaming at {results['streaming'][0]['rate']:g} streams/s, chunks "
                     f"{results['streaming'][0]['chunk_delay_ms']} ms apart (ms; added = target - direct)")
        lines.append(f"{'target':<11}{'ok':>6} {'err':>4} {'TTFB p50':>9} {'p90':>7} {'p99':>7} {'+p50':>7} "
                     f"{'gap min':>8} {'gap p50':>8} {'batched':>8}")
        for name, r in st.items():
            plus = r["ttfb_ms"]["p50"] - st["direct"]["ttfb_ms"]["p50"]
            lines.append(f"{name:<11}{r['ok']:>6} {r['errors']:>4} {r['ttfb_ms']['p50']:>9.3f} {r['ttfb_ms']['p90']:>7.3f} "
                         f"{r['ttfb_ms']['p99']:>7.3f} {plus:>7.3f} {r['gap_ms']['min']:>8.2f} {r['gap_ms']['p50']:>8.2f} "
                         f"{r['batched_gaps']:>4}/{r['gaps']}")
    if "controls" in results:
        lines.extend(controls_table(results["controls"]))
    for mode, prof in results.get("profile", {}).items():
        if not prof.get("top_own"):
            continue
        what = "holding the GIL" if mode == "gil" else "all non-idle samples, GIL waits included"
        lines.append(f"\nHeliograph at saturation, py-spy {mode} ({what}; {prof['samples']} samples)")
        lines.append("  threads: " + ", ".join(f"{name} {pct}%" for name, pct in prof["threads"]))
        lines.extend(stage_lines(prof))
        lines.append("  top functions (own samples):")
        lines.extend(f"  {pct:5.1f}%  {name}" for name, pct in prof["top_own"][:10])
    lines.append("\nDESIGN §4 targets (indicative only if the machine was busy; see load avg):")
    for name, ok, detail in judged:
        lines.append(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
    return "\n".join(lines)


def stage_lines(prof: dict[str, Any]) -> list[str]:
    """The stage breakdown (bench/stages.py): % of samples, and µs per request from the CPU per
    request measured during the sampled wrk step."""
    stages = prof.get("stages")
    if not stages or not stages["stages"]:
        return []
    us = stages.get("cpu_us_per_req")
    head = f"  by stage ({stages['samples']} samples"
    if us:
        head += f"; us/req = share x {us:.0f} us of CPU per request at {stages['rps']:.0f} req/s while sampled"
    lines = [head + "):"]
    if "gil_held_pct" in prof and prof.get("cpu_pct_while_sampled"):
        lines.append(f"  (the GIL was held {prof['gil_held_pct']:.0f} % of the sampled time, the process used "
                     f"{prof['cpu_pct_while_sampled']:.0f} % of a core: CPU without the GIL (kernel, SQLite's C, "
                     f"compression) is spread over the stages pro rata)")
    for row in stages["stages"]:
        per_req = f"{row['us_per_req']:7.1f} us" if row["us_per_req"] is not None else ""
        lines.append(f"  {row['pct']:5.1f}%  {per_req:>10}  {row['stage']}")
    return lines


# --- the controls phase (bench/controls.py) ---------------------------------------------------

CONTROL_VARIANTS = ("cache-hit", "cache-miss", "ratelimit")
# The controls compare latency from the moment each request was actually written (`service_ms`),
# not from its scheduled time: the generator's timer lag (0-1 ms, its median set per step by the
# sub-millisecond phase of the step's start) is noise of the same size as what a control adds.
# Sends still go out on the fixed schedule, whatever the answers do, so a stall is still charged.
METRIC = "service_ms"
HIT = "helicone-cache: HIT"
MISS = "helicone-cache: MISS"


def controls_summary(ctl: dict[str, Any]) -> dict[str, Any]:
    """Added latency vs the baseline of the same backend and rate (from the actual send, METRIC;
    `*_from_due` from the scheduled send), throughput vs baseline, the cache hit against the direct
    call, and whether every step got the answers it was meant to."""
    by = {(r["backend"], r["variant"], r["rate"]): r for r in ctl.get("open_loop", [])}
    added_rows = []
    hit_vs_direct = []
    for (backend, variant, rate), r in by.items():
        base, direct = by.get((backend, "baseline", rate)), by.get(("direct", "direct", rate))
        if backend == "direct":
            continue
        row: dict[str, Any] = {"backend": backend, "variant": variant, "rate": rate}
        for name, ref in (("vs_baseline", base), ("vs_direct", direct)):
            if ref is not None:
                row[name] = {q: round(r[METRIC][q] - ref[METRIC][q], 3) for q in ("p50", "p90", "p99")}
                row[f"{name}_from_due"] = {q: round(r["latency_ms"][q] - ref["latency_ms"][q], 3)
                                           for q in ("p50", "p90", "p99")}
        added_rows.append(row)
        if variant == "cache-hit" and base and direct:
            hit_vs_direct.append({"backend": backend, "rate": rate, **{
                f"{who}_{q}": src[METRIC][q] for who, src in (("hit", r), ("direct", direct), ("baseline", base))
                for q in ("p50", "p99")}})
    sat = {(r["backend"], r["variant"]): r for r in ctl.get("saturation", [])}
    sat_rows = []
    for (backend, variant), r in sat.items():
        base = sat.get((backend, "baseline"))
        row = {"backend": backend, "variant": variant, "max_rps": r["max_rps"], "errors": r["errors"],
               "cpu_us_per_req": r.get("target_cpu_us_per_req")}
        if base and base["max_rps"]:
            row["pct_of_baseline"] = round(100 * r["max_rps"] / base["max_rps"], 1)
            if r.get("target_cpu_us_per_req") is not None and base.get("target_cpu_us_per_req") is not None:
                row["added_cpu_us_per_req"] = round(r["target_cpu_us_per_req"] - base["target_cpu_us_per_req"], 1)
        if "redis_cpu_us_per_req" in r:
            row["redis_cpu_us_per_req"] = r["redis_cpu_us_per_req"]
        sat_rows.append(row)
    return {"added": added_rows, "saturation_summary": sat_rows, "hit_vs_direct": hit_vs_direct,
            "checks": [{"check": n, "pass": ok, "detail": d} for n, ok, d in _controls_checks(ctl, by)]}


def _controls_checks(ctl: dict[str, Any], by: dict[tuple[str, str, float], dict[str, Any]]) -> list[tuple[str, bool, str]]:
    out: list[tuple[str, bool, str]] = []
    for (backend, variant, rate), r in by.items():
        seen, ok = r.get("headers_seen", {}), r["ok"]
        where = f"{backend} {variant} at {rate:g}/s"
        if variant == "cache-hit":
            out.append((f"{where}: every answer a HIT", ok > 0 and seen.get(HIT, 0) == ok and not r["errors"],
                        f"{seen.get(HIT, 0)} HIT of {ok} answered, {r['errors']} errors"))
        elif variant == "cache-miss":
            out.append((f"{where}: every answer a MISS", ok > 0 and seen.get(MISS, 0) == ok and not r["errors"],
                        f"{seen.get(MISS, 0)} MISS, {seen.get(HIT, 0)} HIT of {ok}, {r['errors']} errors"))
        elif variant == "ratelimit":
            limited = sum(v for k, v in seen.items() if k.startswith("helicone-ratelimit-limit"))
            out.append((f"{where}: limit headers on every answer, none refused", ok > 0 and limited == ok
                        and not r["errors"], f"{limited} of {ok} with the limit headers, {r['errors']} errors"))
        elif variant == "baseline" and seen:
            out.append((f"{where}: no control headers", False, str(seen)))
    for backend, comp in ctl.get("completeness", {}).items():
        phases = comp["phases"]
        for variant in CONTROL_VARIANTS + ("baseline",):
            wrk = next((s for s in ctl.get("saturation", []) if s["backend"] == backend and s["variant"] == variant), None)
            p = phases.get(f"ctl-{variant}-wrk")
            if wrk is None or p is None:
                continue
            if variant == "cache-hit":
                out.append((f"{backend} cache-hit at saturation: every logged row a hit",
                            p["rows"] > 0 and p["rows_cached"] == p["rows"] and not wrk["errors"],
                            f"{p['rows_cached']} of {p['rows']} rows, wrk errors {wrk['errors']}"))
            elif variant == "cache-miss":
                out.append((f"{backend} cache-miss at saturation: no logged row a hit",
                            p["rows_cached"] == 0 and not wrk["errors"],
                            f"{p['rows_cached']} of {p['rows']} rows, wrk errors {wrk['errors']}"))
            elif variant == "ratelimit":
                out.append((f"{backend} ratelimit at saturation: nothing refused", not wrk["errors"],
                            f"wrk errors {wrk['errors']} {wrk['error_kinds'] or ''}"))
        out.append((f"{backend}: log completeness (rows/2xx rows/answered per phase)", comp["complete"],
                     "; ".join(f"{p} {v['rows']}/{v['rows_2xx']}/{v['answered']}" for p, v in phases.items())))
    return out


def controls_table(ctl: dict[str, Any]) -> list[str]:
    title = (f"\nControls: cache and rate limit, in-process ('memory') vs Redis state "
             f"({ctl['duration_s']:g} s per step; load avg {ctl['loadavg_before']} -> {ctl.get('loadavg_after')})")
    lines = [title]
    redis = ctl.get("redis", {})
    if "skipped" in redis:
        lines.append(f"  Redis rows SKIPPED: {redis['url']} did not answer PING ({redis['skipped']})")
    lines.append("Open loop: ms from the actual send to the last byte (sends on a fixed schedule; from the scheduled "
                 "send in the JSON); +base = variant - baseline, same backend and rate")
    lines.append(f"{'rate':>5} {'backend':<8}{'variant':<11}{'achieved':>9} {'err':>4} {'p50':>7} {'p90':>7} {'p99':>7}"
                 f" | {'+p50':>7} {'+p90':>7} {'+p99':>7} | {'cpu%':>5} {'us/req':>6} | {'redis us':>8}")
    add = {(r["backend"], r["variant"], r["rate"]): r for r in ctl.get("added", [])}
    for r in ctl.get("open_loop", []):
        lat = r[METRIC]
        a = add.get((r["backend"], r["variant"], r["rate"]), {}).get("vs_baseline")
        tail = f" | {a['p50']:>7.3f} {a['p90']:>7.3f} {a['p99']:>7.3f}" if a and r["variant"] != "baseline" \
            else f" | {'':>23}"
        redis_us = f"{r['redis_cpu_us_per_req']:>8.0f}" if "redis_cpu_us_per_req" in r else ""
        lines.append(f"{r['rate']:>5g} {r['backend']:<8}{r['variant']:<11}{r['achieved_rps']:>9.1f} {r['errors']:>4} "
                     f"{lat['p50']:>7.3f} {lat['p90']:>7.3f} {lat['p99']:>7.3f}{tail} | {_cpu(r):>12} | {redis_us}")
    if ctl.get("saturation_summary"):
        lines.append(f"Saturation (wrk, {ctl['connections']} connections): max req/s (2xx), % of the same backend's "
                     f"baseline, Heliograph CPU us/req and added vs baseline, Redis CPU us/req")
        lines.append(f"{'backend':<8}{'variant':<11}{'max req/s':>10} {'% base':>7} {'err':>5} {'us/req':>7} "
                     f"{'+us/req':>8} {'redis us':>9}")
        def num(value: float | None, width: int, digits: int = 0) -> str:
            return f"{value:>{width}.{digits}f}" if value is not None else " " * width
        for r in ctl["saturation_summary"]:
            lines.append(f"{r['backend']:<8}{r['variant']:<11}{r['max_rps']:>10.1f} {num(r.get('pct_of_baseline'), 7, 1)} "
                         f"{r['errors']:>5} {num(r.get('cpu_us_per_req'), 7)} "
                         f"{num(r.get('added_cpu_us_per_req'), 8)} {num(r.get('redis_cpu_us_per_req'), 9)}")
    # The summary asked for: per control and backend, added p50/p99 at each rate and max req/s.
    rates = sorted({r["rate"] for r in ctl.get("added", [])})
    backends = list(dict.fromkeys(r["backend"] for r in ctl.get("added", [])))
    sat = {(r["backend"], r["variant"]): r for r in ctl.get("saturation_summary", [])}
    if rates and backends:
        lines.append("Summary: added vs baseline, ms (+p50/+p99 at each rate); max req/s (% of baseline)")
        head = "".join(f"{f'@{rate:g}/s':>16}" for rate in rates)
        lines.append(f"{'variant':<11}{'backend':<8}{head} {'max req/s':>17}")
        for variant in ("baseline", *CONTROL_VARIANTS):
            for backend in backends:
                cells = []
                for rate in rates:
                    a = add.get((backend, variant, rate), {}).get("vs_baseline")
                    cells.append(f"{a['p50']:+.3f}/{a['p99']:+.3f}" if a and variant != "baseline" else "")
                s = sat.get((backend, variant))
                max_cell = f"{s['max_rps']:.0f} ({s.get('pct_of_baseline', math.nan):.0f}%)" if s else ""
                lines.append(f"{variant:<11}{backend:<8}" + "".join(f"{c:>16}" for c in cells) + f" {max_cell:>17}")
    if ctl.get("hit_vs_direct"):
        lines.append("Cache hit vs going upstream, p50/p99 ms from the send: the hit; the same call through Heliograph to "
                     "the upstream (baseline); straight to the mock upstream (nginx on localhost: ~0.1 ms, a real "
                     "provider takes 100s of ms)")
    for h in ctl.get("hit_vs_direct", []):
        lines.append(f"  {h['backend']:<7} at {h['rate']:>4g}/s: hit {h['hit_p50']:.3f}/{h['hit_p99']:.3f}; "
                     f"via Heliograph {h['baseline_p50']:.3f}/{h['baseline_p99']:.3f} (hit "
                     f"{h['hit_p50'] - h['baseline_p50']:+.3f} at p50); direct {h['direct_p50']:.3f}/{h['direct_p99']:.3f}")
    if redis.get("keys_deleted") is not None:
        lines.append(f"Redis {redis.get('version')} ({redis['url']}), key prefix '{redis['key_prefix']}': "
                     f"{redis['keys_deleted']} keys of this run deleted afterwards")
    failed = [c for c in ctl.get("checks", []) if not c["pass"]]
    lines.append(f"Controls checks: {len(ctl.get('checks', [])) - len(failed)} of {len(ctl.get('checks', []))} pass")
    lines.extend(f"  [FAIL] {c['check']}: {c['detail']}" for c in failed)
    return lines
