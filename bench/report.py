"""The end of a run: added latency, DESIGN §4 verdicts, and the compact table printed last."""

from __future__ import annotations

import math
from typing import Any

import loadgen


def added(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Via-proxy minus direct, per rate and percentile."""
    by = {(r["target"], r["rate"]): r for r in results.get("open_loop", [])}
    rows = []
    for (target, rate), report in by.items():
        direct = by.get(("direct", rate))
        if target == "direct" or direct is None:
            continue
        rows.append({"target": target, "rate": rate, **{
            q: round(report["latency_ms"][q] - direct["latency_ms"][q], 3) for q in ("p50", "p90", "p99")}})
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
    sat = {r["target"]: r["max_rps"] for r in results.get("saturation", [])}
    if "heliograph" in sat and "bare" in sat:
        share = sat["heliograph"] / sat["bare"] if sat["bare"] else math.nan
        out.append(("max >= 1500 req/s and >= 60% of bare", sat["heliograph"] >= 1500 and share >= 0.6,
                    f"{sat['heliograph']:.0f} req/s = {100 * share:.0f}% of bare"))
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
    lines.append(f"Heliograph {meta['heliograph_version']} from {meta['heliograph']} "
                 f"(git {meta['git_head']}{', uncommitted changes' if meta['src_dirty'] else ''})")
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
                         f"{r['latency_ms']['p50']:>8.2f} {r['latency_ms']['p99']:>8.2f} | {_cpu(r)}")
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
    for mode, prof in results.get("profile", {}).items():
        if not prof.get("top_own"):
            continue
        what = "holding the GIL" if mode == "gil" else "all non-idle samples, GIL waits included"
        lines.append(f"\nHeliograph at saturation, py-spy {mode} ({what}; {prof['samples']} samples)")
        lines.append("  threads: " + ", ".join(f"{name} {pct}%" for name, pct in prof["threads"]))
        lines.extend(f"  {pct:5.1f}%  {name}" for name, pct in prof["top_own"][:10])
    lines.append("\nDESIGN §4 targets (indicative only if the machine was busy; see load avg):")
    for name, ok, detail in judged:
        lines.append(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
    return "\n".join(lines)
