"""Heliograph's overhead and throughput, side by side with a direct call and a bare proxy, in one run.

    python bench/run.py [--quick] [--rates 100,500,1000] [--duration 10] [--stream] [--controls]

Targets: `direct` (the mock upstream itself), `bare` (bench/bare_proxy.py, the floor on the same
stack) and `heliograph` (`heliograph serve`, logging to a fresh SQLite store). Proxies run on core 1,
the load generator, wrk and the mock upstream on core 0. The controls phase (bench/controls.py) measures
caching and rate limiting, with in-process and with Redis state. See bench/README.md for what each
number means.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import procs as P
from controls import controls
from overload import overload, overload_table
from report import added, checks, controls_summary, table

RESULTS = P.BENCH / "results"
ROUTE = "/openai/v1/chat/completions"
DIRECT_ROUTE = "/v1/chat/completions"
UPSTREAM_KEY = "Bearer sk-bench-not-a-real-key"
REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
STREAM_REQUEST = {"model": "gpt-4o-mini", "stream": True, "messages": [
    {"role": "user", "content": "Count slowly from one to twelve for the benchmark please, one two three"}]}
TARGETS = ("direct", "bare", "heliograph")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short steps (the whole run in about a minute)")
    parser.add_argument("--writer-core", type=int, choices=(0,),
                        help="start Heliograph on both cores, so it records from a writer process "
                             "(recorder_process), then pin the gateway to core 1 and the writer to this core: the "
                             "'gateway core + recorder core' figure (core 0 also runs the load). By default "
                             "Heliograph has core 1 alone and records from a thread (everything on one core)")
    parser.add_argument("--env", action="append", default=[], metavar="HELIOGRAPH_X=value",
                        help="a setting for the measured Heliograph (repeatable), e.g. "
                             "HELIOGRAPH_RECORDER_PROCESS=false for the recorder in a thread")
    parser.add_argument("--rates", default="100,500,1000", help="open-loop rates in req/s [%(default)s]")
    parser.add_argument("--duration", type=float, help="seconds per open-loop and saturation step [10; quick 2.5]")
    parser.add_argument("--stream", action="store_true", help="also measure streaming TTFB and chunk spacing")
    parser.add_argument("--stream-rate", type=float, default=20.0, help="streams opened per second [%(default)s]")
    parser.add_argument("--chunk-delay", type=int, default=20, help="ms the mock waits between SSE chunks [%(default)s]")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections for saturation [%(default)s]")
    parser.add_argument("--saturation-rounds", type=int, default=1,
                        help="saturation steps of bare and heliograph, alternating; the target is judged on the "
                             "median of the rounds' heliograph/bare ratios (bare's own figure drifts by ±20 %% "
                             "on a shared machine) [%(default)s]")
    parser.add_argument("--soak", type=float, help="seconds of the log-completeness run at 80%% of Heliograph's max "
                                                  "[60; quick 3; 0 skips]")
    parser.add_argument("--soak-rate", type=float, help="req/s of the soak [80%% of Heliograph's measured max]")
    parser.add_argument("--profile", dest="profile", action="store_true", default=None,
                        help="py-spy Heliograph during an extra saturation step [on unless --quick]")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--controls", dest="controls", action="store_true", default=None,
                        help="also measure cache hit / cache miss / rate limit, in-process and Redis [on unless --quick]")
    parser.add_argument("--no-controls", dest="controls", action="store_false")
    parser.add_argument("--controls-only", action="store_true",
                        help="only the controls phase (no overhead, soak, profile or streaming steps)")
    parser.add_argument("--controls-rates", default="300,500", help="open-loop rates of the controls phase [%(default)s]")
    parser.add_argument("--controls-duration", type=float, help="seconds per controls step [4; quick 1.5]")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0",
                        help="an already running Redis for the controls phase; never started or stopped here "
                             "[%(default)s]")
    parser.add_argument("--overload", type=float, default=0.0,
                        help="also run open-loop load at this multiple of Heliograph's max, with and without "
                             "max_in_flight (e.g. 2.0; 0 skips) [%(default)s]")
    parser.add_argument("--overload-only", action="store_true", help="only the overload phase (--overload 2 unless given)")
    parser.add_argument("--overload-duration", type=float, help="seconds of each overload step [25; quick 8]")
    parser.add_argument("--overload-prompt-kb", type=int, default=0,
                        help="pad the overload phase's prompt by this many KB (its max is then measured anew) "
                             "[%(default)s]")
    parser.add_argument("--overload-rate", type=float, default=0.0,
                        help="the overload phase's rate in req/s, instead of --overload x the measured max (the "
                             "generator sends at most ~5,000 req/s from its core) [%(default)s]")
    parser.add_argument("--overload-limits", default="",
                        help="more max_in_flight values to measure beside unbounded and the default, e.g. 256,1024")
    parser.add_argument("--overload-connections", type=int, default=4000,
                        help="connections the generator may open in the overload phase [%(default)s]")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = parser.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.controls_rates = [float(r) for r in args.controls_rates.split(",") if r.strip()]
    if args.controls_only:
        args.controls = True
    if args.overload_only:
        args.overload = args.overload or 2.0
        args.controls = False
    args.overload_limits = [int(n) for n in args.overload_limits.split(",") if n.strip()]
    if args.overload_duration is None:
        args.overload_duration = 8.0 if args.quick else 25.0
    if args.controls is None:
        args.controls = not args.quick
    if args.controls_duration is None:
        args.controls_duration = 1.5 if args.quick else 4.0
    if args.duration is None:
        args.duration = 2.5 if args.quick else 10.0
    if args.soak is None:
        args.soak = 3.0 if args.quick else 60.0
    if args.profile is None:
        args.profile = not args.quick
    return args


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def uptime() -> str:
    out = subprocess.run(["uptime"], check=False, capture_output=True, text=True)
    return out.stdout.strip()


def heliograph_version() -> dict[str, Any]:
    """Which Heliograph is measured: the imported package (PYTHONPATH can point at a snapshot)."""
    import heliograph
    source = Path(heliograph.__file__).resolve().parent
    git = ["git", "-C", str(source)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], check=False, capture_output=True, text=True)
    return {"heliograph": str(source), "heliograph_version": getattr(heliograph, "__version__", "?"),
            "git_head": head.stdout.strip() or None,
            "src_dirty": bool(dirty.stdout.strip()) if head.returncode == 0 else None}


def headers_for(key: str, phase: str) -> dict[str, str]:
    # The same headers go to every target; nginx and the bare proxy ignore the Helicone ones.
    return {"Content-Type": "application/json", "Authorization": UPSTREAM_KEY,
            "Helicone-Auth": f"Bearer {key}", "Helicone-Property-Bench": phase}


def say(text: str) -> None:
    print(text, flush=True)


def property_sql(db: Path | str, name: str) -> str:
    """The SQL for a request's `Helicone-Property-<name>` in a SQLite file or a PostgreSQL URL."""
    return f"json_extract(properties, '$.{name}')" if isinstance(db, Path) else f"(properties::jsonb ->> '{name}')"


def store_query(db: Path | str, sql: str) -> list[tuple[Any, ...]]:
    """Run a read-only query on the store: a SQLite file, or a PostgreSQL URL."""
    if isinstance(db, Path):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchall()
    import psycopg
    with psycopg.connect(db) as conn:
        return conn.execute(sql).fetchall()


def store_counts(db_path: Path | str) -> dict[str, dict[str, int]]:
    """Rows per bench phase in the `requests` table: all of them, the 2xx ones, the cache hits."""
    rows = store_query(db_path, f"SELECT {property_sql(db_path, 'bench')}, count(*), "
                                "sum(CASE WHEN status BETWEEN 200 AND 299 THEN 1 ELSE 0 END), "
                                "sum(CASE WHEN cache_reference_id IS NOT NULL THEN 1 ELSE 0 END) FROM requests GROUP BY 1")
    return {str(phase): {"rows": n, "rows_2xx": int(ok or 0), "rows_cached": int(hits or 0)}
            for phase, n, ok, hits in rows}


def journal_files(journal: Path) -> list[str]:
    return sorted(str(p.relative_to(journal)) for p in journal.rglob("*") if p.is_file() and p.stat().st_size) \
        if journal.exists() else []


async def stop_heliograph(processes: P.Processes, proc: Any) -> int:
    # SIGTERM: uvicorn finishes in-flight requests, then the recorder drains to the store.
    return await asyncio.to_thread(processes.stop, proc, 120.0)


def completeness(db_path: Path | str, sent: dict[str, dict[str, Any]], exit_code: int,
                 journal: Path | None = None) -> dict[str, Any]:
    """Every request Heliograph received has a row, and every one answered 2xx has a 2xx row.

    For the open-loop phases `on_wire` counts requests actually written to a connection (requests
    still queued in the generator when a step is cut off never reached Heliograph); a request the
    generator gave up on after writing it may still be answered and logged, hence rows_2xx >= answered.
    wrk cuts its in-flight requests at the end; those may be answered and logged too.
    `journal`: the journal folder [beside the SQLite file]; it must hold no records.
    """
    counts = store_counts(db_path)
    phases = {}
    complete = True
    for phase, seen in sent.items():
        got = counts.get(phase, {"rows": 0, "rows_2xx": 0})
        if seen["kind"] == "wrk":
            ok = seen["ok"] <= got["rows_2xx"] <= seen["ok"] + seen["connections"]
        else:
            ok = got["rows"] == seen["on_wire"] and got["rows_2xx"] >= seen["ok"]
        complete &= ok
        phases[phase] = {"answered": seen["ok"], "on_wire": seen.get("on_wire"), **got, "match": ok}
    unknown = {k: v for k, v in counts.items() if k not in sent}
    if journal is None:
        assert isinstance(db_path, Path), "a PostgreSQL store needs its journal folder named"
        journal = db_path.parent / "journal"
    left = journal_files(journal)
    return {"complete": complete and not unknown and not left, "server_exit_code": exit_code,
            "phases": phases, "unexpected_phases": unknown, "journal_files_left": left}


async def nonstreaming(args: argparse.Namespace, processes: P.Processes, results: dict[str, Any],
                       mock_url: str, mock_proc: Any) -> None:
    work = processes.workdir
    bare_url, bare_proc = P.start_bare(processes, "bare", mock_url)
    db_path = work / "plain" / "heliograph.db"
    db_path.parent.mkdir()
    hg_url, hg_proc, key = P.start_heliograph(processes, "heliograph", mock_url, db_path,
                                              dict(item.split("=", 1) for item in args.env),
                                              cores=P.PROXY_CORE if args.writer_core is None else "0,1")
    await loadgen.wait_http(hg_url + "/healthz")
    urls = {"direct": mock_url + DIRECT_ROUTE, "bare": bare_url + DIRECT_ROUTE, "heliograph": hg_url + ROUTE}
    pids = {"direct": mock_proc.pid, "bare": bare_proc.pid, "heliograph": hg_proc.pid}
    body = json.dumps(REQUEST).encode()
    sent: dict[str, dict[str, Any]] = {}  # heliograph traffic per phase, for the completeness check
    rss = {"start_kib": P.rss_kib(hg_proc.pid)}
    say(f"mock upstream (nginx) {mock_url}, bare {bare_url}, heliograph {hg_url}; work dir {work}")

    warm = 0.5 if args.quick else 1.0
    for target in TARGETS:
        step = await loadgen.run_open_loop(target, urls[target], body, headers_for(key, "warmup"), 200, warm)
        if target == "heliograph":
            sent["warmup"] = {"kind": "open", "ok": step.ok, "on_wire": step.on_wire}
        if step.errors:
            raise RuntimeError(f"warm-up of {target} failed: {step.error_kinds}\n{processes.log_tail(target)}")
    if args.writer_core is not None:
        writers = P.pin_children(hg_proc.pid, args.writer_core)
        if not writers:
            raise RuntimeError("--writer-core: Heliograph started no writer process (recorder_process off?)")
        P.pin_threads(hg_proc.pid, P.PROXY_CORE)
        results["writer_core"] = {"core": args.writer_core, "pids": writers}
        say(f"  gateway pinned to core {P.PROXY_CORE}, writer process(es) {writers} to core {args.writer_core}")

    results["open_loop"] = []
    for rate in args.rates:
        phase = f"open-{rate:g}"
        for target in TARGETS:
            gc.collect()
            await asyncio.sleep(0.5)  # let the previous target settle (Heliograph flushes its recorder)
            meter = P.CpuMeter(pids[target], tree=target == "heliograph")
            step = await loadgen.run_open_loop(target, urls[target], body, headers_for(key, phase), rate, args.duration)
            report = step.report() | meter.report(step.ok)
            results["open_loop"].append(report)
            if target == "heliograph":
                sent[phase] = {"kind": "open", "ok": step.ok, "on_wire": step.on_wire}
            lat = report["latency_ms"]
            say(f"  open {rate:>6g}/s {target:<10} achieved {report['achieved_rps']:>7.1f}/s  err {step.errors:<4} "
                f"p50 {lat['p50']:7.3f}  p90 {lat['p90']:7.3f}  p99 {lat['p99']:7.3f} ms")

    results["saturation"] = []
    sent["wrk"] = {"kind": "wrk", "ok": 0, "connections": 0}
    # bare and heliograph alternate for --saturation-rounds: the machine's drift hits both alike.
    steps = [("direct", 1)] + [(t, n) for n in range(1, args.saturation_rounds + 1) for t in TARGETS[1:]]
    for target, round_ in steps:
        await asyncio.sleep(0.5)
        meter = P.CpuMeter(pids[target], tree=target == "heliograph")
        report = await asyncio.to_thread(P.run_wrk, work, urls[target], body, headers_for(key, "wrk"),
                                         args.duration, args.connections)
        report |= {"target": target, "round": round_, **meter.report(report["ok"])}
        results["saturation"].append(report)
        if target == "heliograph":
            sent["wrk"]["ok"] += report["ok"]
            sent["wrk"]["connections"] += args.connections      # each wrk may leave that many unanswered
        say(f"  saturation {target:<10} {report['max_rps']:>8.1f} req/s  err {report['errors']:<4} "
            f"p50 {report['latency_ms']['p50']:.2f}  p99 {report['latency_ms']['p99']:.2f} ms "
            f"({args.connections} connections, round {round_})")
    rss["after_saturation_kib"] = P.rss_kib(hg_proc.pid)

    hg_max = next(r["max_rps"] for r in results["saturation"] if r["target"] == "heliograph")
    if args.soak > 0:
        rate = args.soak_rate or max(10.0, round(0.8 * hg_max))
        await asyncio.sleep(1.0)
        meter = P.CpuMeter(hg_proc.pid, tree=True)
        step = await loadgen.run_open_loop("heliograph", urls["heliograph"], body, headers_for(key, "soak"),
                                           rate, args.soak)
        results["soak"] = step.report() | meter.report(step.ok)
        sent["soak"] = {"kind": "open", "ok": step.ok, "on_wire": step.on_wire}
        lat = results["soak"]["latency_ms"]
        say(f"  soak: {rate:g}/s for {args.soak:g} s, achieved {results['soak']['achieved_rps']}/s, "
            f"err {step.errors}, p50 {lat['p50']:.3f} p99 {lat['p99']:.3f} ms")
    rss["end_kib"] = P.rss_kib(hg_proc.pid)
    results["heliograph_rss"] = rss

    if args.profile:
        results["profile"] = await profile(args, processes, hg_proc.pid, urls["heliograph"], body, key, sent)

    exit_code = await stop_heliograph(processes, hg_proc)
    results["completeness"] = completeness(db_path, sent, exit_code)
    say(f"  log completeness: {'OK' if results['completeness']['complete'] else 'MISMATCH'} "
        f"{json.dumps(results['completeness']['phases'])}")
    processes.stop(bare_proc)


PROFILE_MODES: tuple[tuple[str, list[str]], ...] = (
    # Who holds the GIL: where the CPU goes, by thread.
    ("gil", ["--gil"]),
    # Every non-idle sample, GIL holder or not: shows where the event loop waits for the GIL.
    ("all", []),
)


async def profile(args: argparse.Namespace, processes: P.Processes, pid: int, url: str, body: bytes,
                  key: str, sent: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """py-spy Heliograph during extra saturation steps (not the ones whose numbers are reported)."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():  # noqa: ASYNC240 (once, before profiling starts)
        say("  (py-spy not installed: pip install py-spy to profile Heliograph at saturation)")
        return {"skipped": "py-spy not installed"}
    seconds = max(3, round(min(args.duration, 8)))
    rate = 250  # samples a second
    out: dict[str, Any] = {}
    RESULTS.mkdir(exist_ok=True)
    for mode, flags in PROFILE_MODES:
        raw = processes.workdir / f"heliograph-profile-{mode}.txt"
        spy = processes.start(f"py-spy-{mode}", [pyspy, "record", "--nonblocking", "--threads", "--subprocesses",
                                                 *flags, "-r", str(rate),
                                                 "-d", str(seconds + 1), "-f", "raw", "-o", str(raw), "-p", str(pid)],
                              P.LOAD_CORE)
        window = P.CpuMeter(pid, tree=True)  # py-spy's window, to compare with how often a GIL was held
        try:
            await asyncio.sleep(0.5)
            meter = P.CpuMeter(pid, tree=True)  # wrk's window: the CPU per request the stages share
            report = await asyncio.to_thread(P.run_wrk, processes.workdir, url, body,
                                             headers_for(key, f"profile-{mode}"), seconds,
                                             args.connections)
            report |= meter.report(report["ok"])
            sent[f"profile-{mode}"] = {"kind": "wrk", "ok": report["ok"], "connections": args.connections}
            await asyncio.to_thread(spy.wait, 60)
            sampled = window.report(0)
        finally:
            processes.stop(spy)
        if not raw.exists():
            out[mode] = {"skipped": f"py-spy failed: {processes.log_tail(f'py-spy-{mode}')}"}
            continue
        shutil.copy(raw, RESULTS / raw.name)
        # Only GIL samples are CPU: the `all` mode also counts threads waiting for the GIL.
        out[mode] = P.profile_summary(raw, rps=report["max_rps"],
                                      cpu_us_per_req=report.get("target_cpu_us_per_req") if mode == "gil" else None)
        out[mode] |= {"rps_while_profiled": report["max_rps"], "cpu_pct_while_sampled": sampled.get("target_cpu_pct")}
        if mode == "gil":
            # One sample per tick while some thread held the GIL: CPU beyond that ran without it.
            out[mode]["gil_held_pct"] = round(100 * out[mode]["samples"] / (rate * (seconds + 1)), 1)
        say(f"  py-spy ({mode}) {seconds} s at saturation ({report['max_rps']} req/s while sampled), "
            f"{out[mode]['samples']} samples -> bench/results/{raw.name}")
    return out


async def streaming(args: argparse.Namespace, processes: P.Processes, results: dict[str, Any]) -> None:
    work = processes.workdir
    fake_url, fake_proc = P.start_fake_upstream(processes)
    bare_url, bare_proc = P.start_bare(processes, "bare-stream", fake_url)
    db_path = work / "stream" / "heliograph.db"
    db_path.parent.mkdir()
    hg_url, hg_proc, key = P.start_heliograph(processes, "heliograph-stream", fake_url, db_path)
    await loadgen.wait_http(hg_url + "/healthz")
    urls = {"direct": fake_url + DIRECT_ROUTE, "bare": bare_url + DIRECT_ROUTE, "heliograph": hg_url + ROUTE}
    body = json.dumps(STREAM_REQUEST).encode()
    sent: dict[str, dict[str, Any]] = {}
    say(f"mock upstream (heliograph.testing, chunk-delay={args.chunk_delay} ms) {fake_url}")

    def hdrs(phase: str) -> dict[str, str]:
        return headers_for(key, phase) | {"X-Fake-Scenario": f"chunk-delay={args.chunk_delay}"}

    for target in TARGETS:  # warm-up: open the connections
        step = await loadgen.run_streams(target, urls[target], body, hdrs("warmup"), 10, 0.5, args.chunk_delay)
        if target == "heliograph":
            sent["warmup"] = {"kind": "open", "ok": step.ok, "on_wire": step.on_wire}
        if step.errors:
            raise RuntimeError(f"stream warm-up of {target} failed: {step.error_kinds}")
    results["streaming"] = []
    for target in TARGETS:
        await asyncio.sleep(0.5)
        step = await loadgen.run_streams(target, urls[target], body, hdrs("stream"), args.stream_rate,
                                         args.duration, args.chunk_delay)
        report = step.report()
        results["streaming"].append(report)
        if target == "heliograph":
            sent["stream"] = {"kind": "open", "ok": step.ok, "on_wire": step.on_wire}
        say(f"  stream {target:<10} ok {step.ok:<5} err {step.errors:<3} TTFB p50 {report['ttfb_ms']['p50']:.3f} "
            f"p90 {report['ttfb_ms']['p90']:.3f} ms; gaps min {report['gap_ms']['min']:.2f} ms, "
            f"batched {report['batched_gaps']}/{report['gaps']}")
    exit_code = await stop_heliograph(processes, hg_proc)
    results["stream_completeness"] = completeness(db_path, sent, exit_code)
    say(f"  stream log completeness: {'OK' if results['stream_completeness']['complete'] else 'MISMATCH'}")
    processes.stop(bare_proc)
    processes.stop(fake_proc)


async def bench(args: argparse.Namespace, processes: P.Processes, results: dict[str, Any]) -> None:
    mock_url, mock_proc = P.start_nginx(processes)
    if not args.controls_only and not args.overload_only:
        await nonstreaming(args, processes, results, mock_url, mock_proc)
    if args.controls:
        await controls(args, processes, results, mock_url, mock_proc.pid, request=REQUEST, route=ROUTE,
                       direct_route=DIRECT_ROUTE, headers_for=headers_for, completeness=completeness, say=say)
    if args.overload:
        await overload(args, processes, results, mock_url, request=REQUEST, route=ROUTE, headers_for=headers_for,
                       store_counts=store_counts, say=say)
    processes.stop(mock_proc)
    if args.stream and not args.controls_only and not args.overload_only:
        await streaming(args, processes, results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores: the proxy on core 1, load and mock on core 0")
    os.sched_setaffinity(0, {P.LOAD_CORE})  # the harness is the load generator

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)

    workdir = Path(tempfile.mkdtemp(prefix="heliograph-bench-"))
    processes = P.Processes(workdir)
    results: dict[str, Any] = {"meta": {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick, "rates": args.rates,
        "duration_s": args.duration, "stream": args.stream, "controls": args.controls,
        "controls_only": args.controls_only, "loadavg_before": loadavg(), "uptime_before": uptime(),
        "python": platform.python_version(), "cpus": os.cpu_count(), **heliograph_version()}}
    wall_start = time.monotonic()

    def body() -> None:
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(bench(args, processes, results))
    status = P.guarded("bench", processes, args.keep, body)
    results["meta"]["loadavg_after"] = loadavg()
    results["meta"]["uptime_after"] = uptime()
    results["meta"]["wall_s"] = round(time.monotonic() - wall_start, 1)
    results["added"] = added(results)
    if "controls" in results:
        results["controls"] |= controls_summary(results["controls"])
    judged = checks(results)
    results["checks"] = [{"check": n, "pass": ok, "detail": d} for n, ok, d in judged]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    say(table(results, judged))
    say(overload_table(results))
    say(f"\nJSON: {RESULTS / 'latest.json'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
