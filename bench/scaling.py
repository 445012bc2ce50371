"""`--workers 2` on 2 cores against 1 worker on 1 core: throughput, and every call recorded once.

    python bench/scaling.py [--duration 10] [--rounds 2] [--connections 64] [--db postgresql://…]

Issue 14's target: with Redis state and one store, 2 workers give >= 1.8x the throughput of 1. Two
layouts (the machine has 2 cores, so there is no third one for the load):

    dedicated  1 worker on core 1, nginx + wrk on core 0    | 2 workers, nginx and wrk all on cores 0,1
    shared     1 worker, nginx and wrk all on core 1         | 2 workers, nginx and wrk all on cores 0,1

`dedicated` is the usual bench layout for one worker; its 2-worker step has to share the cores with
the load, so its ratio is a lower bound. `shared` gives both steps the load on their own cores: the
fair ratio. Steps are interleaved (per round: dedicated 1, 2, shared 1, 2) so machine noise hits both
alike. Each step starts `heliograph serve` afresh on an empty store (SQLite, or with `--db` a
database created in that PostgreSQL server and dropped after the step) shared by its workers, with
`HELIOGRAPH_REDIS_URL` at the running Redis under this run's own key prefix (deleted at the end);
then a 1 s wrk warm-up, wrk for `--duration` s, SIGTERM (the recorders drain), and the store check.
Each round also measures the bare pass-through (bench/bare_proxy.py, `--workers 1` and `2`) in the
same layouts: its own 2w/1w ratio is what this machine gives a proxy on uvicorn + aiohttp that does
nothing else (`--no-bare` skips it). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs as P
from controls import VARY, bodies
from run import (DIRECT_ROUTE, REQUEST, RESULTS, ROUTE, completeness, headers_for, heliograph_version, loadavg, property_sql,
                 say, store_query, uptime)

# (layout, workers) -> (gateway cores, nginx + wrk cores), as `taskset -c` lists.
LAYOUTS: dict[str, dict[int, tuple[str, str]]] = {
    "dedicated": {1: ("1", "0"), 2: ("0,1", "0,1")},
    "shared": {1: ("1", "1"), 2: ("0,1", "0,1")},
}
TARGET_RATIO = 1.8
# Every request's prompt ends in "(bench <16 characters of its own>)" (wrk's Lua, a tag and a
# counter): a call stored twice would repeat one. Not a property: a value per request would add
# rollup rows per request (rollups are kept per property value) and slow the gateway down.
NONCE = re.compile(rb"\(bench ([0-9A-Z]{%d})\)" % len(VARY))
WARMUP_S = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of wrk per step [%(default)s]")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of 1 worker / 2 workers per layout [%(default)s]")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections [%(default)s]")
    parser.add_argument("--layouts", default="dedicated,shared", help="which layouts [%(default)s]")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0",
                        help="an already running Redis; never started or stopped here [%(default)s]")
    parser.add_argument("--db", default="",
                        help="a PostgreSQL server URL (postgresql://user@host:port/db) to store in instead of "
                             "SQLite: each step gets a database of its own there, created and dropped [SQLite]")
    parser.add_argument("--bare", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the bare pass-through's own 2w/1w in each layout and round [on]")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, SQLite files)")
    args = parser.parse_args(argv)
    args.layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    unknown = set(args.layouts) - set(LAYOUTS)
    if unknown:
        parser.error(f"unknown layouts {sorted(unknown)}; known: {', '.join(LAYOUTS)}")
    if args.db and not args.db.startswith(("postgresql://", "postgres://")):
        parser.error("--db takes a postgresql:// URL (without it every step uses a fresh SQLite file)")
    return args


def cores(spec: str) -> set[int]:
    return {int(c) for c in spec.split(",")}


class Stores:
    """A fresh store per step: a SQLite file in the step's folder, or a PostgreSQL database
    `heliograph_bench_<pid>_<n>` on the `--db` server, dropped after the step (and in `close`)."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: list[str] = []

    def fresh(self, folder: Path) -> Path | str:
        if not self.server_url:
            return folder / "heliograph.db"
        import psycopg
        name = f"heliograph_bench_{os.getpid()}_{len(self.created)}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        parts = urlsplit(self.server_url)
        return urlunsplit(parts._replace(path="/" + name))

    def drop(self, db: Path | str) -> None:
        if isinstance(db, Path):
            return
        import psycopg
        name = urlsplit(db).path.lstrip("/")
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.remove(name)

    def close(self) -> None:
        for name in list(self.created):
            self.drop(urlunsplit(urlsplit(self.server_url)._replace(path="/" + name)))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_pids(pid: int, workers: int) -> list[int]:
    """The processes that serve: the `serve` process itself, or its uvicorn worker children."""
    if workers == 1:
        return [pid]
    return sorted(p for p in P.process_tree(pid)[1:] if "spawn_main" in cmdline(p))


def wait_ready(url: str, proc: subprocess.Popen[bytes], workers: int, timeout: float = 60.0) -> None:
    """Every worker started and done with its start-up: with several workers uvicorn listens before
    they exist, so a port that answers says nothing. Wait for the worker processes, then for the
    tree's CPU to go quiet (start-up is CPU-bound), then for /healthz."""
    deadline = time.monotonic() + timeout
    while len(worker_pids(proc.pid, workers)) < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"heliograph did not start {workers} workers (exit code {proc.poll()})")
        time.sleep(0.1)
    last = sum(P.tree_cpu(proc.pid).values())
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = sum(P.tree_cpu(proc.pid).values())
        if now - last < 0.03:
            break
        last = now
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}/healthz did not answer: {exc}") from exc
            time.sleep(0.1)


def settle(pid: int, timeout: float = 30.0) -> float:
    """Wait until `pid`'s tree is quiet (under 10 % of a core over 0.2 s): after a saturation step
    the recorders may still be writing what was answered. Returns the seconds waited."""
    started = time.monotonic()
    last = sum(P.tree_cpu(pid).values())
    while time.monotonic() - started < timeout:
        time.sleep(0.2)
        now = sum(P.tree_cpu(pid).values())
        if now - last < 0.02:
            break
        last = now
    return round(time.monotonic() - started, 1)


def recorded_once(db: Path | str) -> dict[str, Any]:
    """Per phase: rows, distinct nonces (read from the stored request bodies), distinct ids. Every
    row must carry a nonce of its own (ids are the primary key, so they are unique anyway)."""
    from heliograph.bodies import unpack  # the store's own codec: whatever the measured version writes
    phases: dict[str, dict[str, Any]] = {}
    seen: dict[str, tuple[set[bytes], set[str]]] = {}
    for phase, request_id, blob in store_query(db, f"SELECT {property_sql(db, 'bench')}, r.id, b.request FROM requests r "
                                                   "LEFT JOIN request_bodies b ON b.id = r.id"):
        counts = phases.setdefault(str(phase), {"rows": 0, "distinct_calls": 0, "distinct_ids": 0})
        calls, ids = seen.setdefault(str(phase), (set(), set()))
        counts["rows"] += 1
        match = NONCE.search(unpack(bytes(blob))) if blob is not None else None
        if match:
            calls.add(match[1])
        ids.add(request_id)
        counts["distinct_calls"], counts["distinct_ids"] = len(calls), len(ids)
    return {"once": all(p["rows"] == p["distinct_calls"] == p["distinct_ids"] for p in phases.values()),
            "phases": phases}


def step(args: argparse.Namespace, processes: P.Processes, stores: Stores, mock_url: str, mock_pid: int,
         redis_env: dict[str, str], layout: str, workers: int, round_no: int) -> dict[str, Any]:
    gateway_cores, load_cores = LAYOUTS[layout][workers]
    name = f"{layout}-{workers}w-r{round_no}"
    folder = processes.workdir / name
    folder.mkdir()
    os.sched_setaffinity(mock_pid, cores(load_cores))  # nginx is one process (master_process off)
    db = stores.fresh(folder)
    journal = folder / "journal"
    env = redis_env | {"HELIOGRAPH_JOURNAL_DIR": str(journal)}
    url, proc, key = P.start_heliograph(processes, name, mock_url, db, env, workers=workers, cores=gateway_cores)
    try:
        wait_ready(url, proc, workers)
        body = bodies(REQUEST)[0]
        sent: dict[str, dict[str, Any]] = {}
        warm = P.run_wrk(processes.workdir, url + ROUTE, body, headers_for(key, "warmup"), WARMUP_S,
                         args.connections, VARY, cores=load_cores)
        sent["warmup"] = {"kind": "wrk", "ok": warm["ok"], "connections": args.connections}
        settle(proc.pid)  # the recorders catch up with the warm-up
        serving = worker_pids(proc.pid, workers)
        before = P.tree_cpu(proc.pid)
        meter = P.CpuMeter(proc.pid, tree=True)
        report = P.run_wrk(processes.workdir, url + ROUTE, body, headers_for(key, "wrk"), args.duration,
                           args.connections, VARY, cores=load_cores)
        report |= meter.report(report["ok"])
        after = P.tree_cpu(proc.pid)
        # What the recorders still had to write when wrk stopped: a gateway that answers faster than
        # it records looks faster than it can sustain, and its CPU per request looks lower.
        report["drain_s"] = settle(proc.pid)
        drained = meter.report(report["ok"])
        report["cpu_us_per_req_with_drain"] = drained.get("target_cpu_us_per_req")
        sent["wrk"] = {"kind": "wrk", "ok": report["ok"], "connections": args.connections}
        used = [after.get(p, 0.0) - before.get(p, 0.0) for p in serving]
        exit_code = processes.stop(proc, 120.0)
        check = completeness(db, sent, exit_code, journal)
        once = recorded_once(db)
    finally:
        processes.stop(proc, 120.0)
        stores.drop(db)
    split = [round(100 * u / sum(used)) for u in used] if sum(used) > 0 else []
    ok = check["complete"] and once["once"] and not report["errors"]
    say(f"  {layout:<9} {workers}w round {round_no}: {report['max_rps']:>8.1f} req/s  "
        f"{report.get('target_cpu_us_per_req', 0):>6.0f} us/req ({report['cpu_us_per_req_with_drain'] or 0:.0f} "
        f"with {report['drain_s']:.1f} s of drain)  err {report['errors']:<3} "
        f"p50 {report['latency_ms']['p50']:.2f} p99 {report['latency_ms']['p99']:.2f} ms"
        + (f"  worker CPU split {'/'.join(map(str, split))} %" if workers > 1 else "")
        + f"  recorded once: {'OK' if ok else 'FAIL'}")
    return {"layout": layout, "workers": workers, "round": round_no, "gateway_cores": gateway_cores,
            "load_cores": load_cores, "wrk": report, "warmup_ok": warm["ok"], "worker_cpu_split_pct": split,
            "completeness": check, "recorded_once": once, "ok": ok}


def bare_step(args: argparse.Namespace, processes: P.Processes, mock_url: str, mock_pid: int, layout: str,
              workers: int, round_no: int) -> dict[str, Any]:
    """The bare pass-through in the same layout: the machine's own ceiling for the ratio."""
    gateway_cores, load_cores = LAYOUTS[layout][workers]
    os.sched_setaffinity(mock_pid, cores(load_cores))
    url, proc = P.start_bare(processes, f"bare-{layout}-{workers}w-r{round_no}", mock_url, workers=workers,
                             cores=gateway_cores)
    try:
        while len(worker_pids(proc.pid, workers)) < workers:
            time.sleep(0.1)
        body = bodies(REQUEST)[0]
        P.run_wrk(processes.workdir, url + DIRECT_ROUTE, body, headers_for("-", "warmup"), WARMUP_S,
                  args.connections, VARY, cores=load_cores)
        meter = P.CpuMeter(proc.pid, tree=True)
        report = P.run_wrk(processes.workdir, url + DIRECT_ROUTE, body, headers_for("-", "wrk"), args.duration,
                           args.connections, VARY, cores=load_cores)
        report |= meter.report(report["ok"])
        report["drain_s"], report["cpu_us_per_req_with_drain"] = 0.0, report.get("target_cpu_us_per_req")
    finally:
        processes.stop(proc)
    say(f"  {layout:<9} {workers}w round {round_no}: {report['max_rps']:>8.1f} req/s  "
        f"{report.get('target_cpu_us_per_req', 0):>6.0f} us/req  err {report['errors']:<3} (bare pass-through)")
    return {"target": "bare", "layout": layout, "workers": workers, "round": round_no, "gateway_cores": gateway_cores,
            "load_cores": load_cores, "wrk": report, "ok": not report["errors"]}


def summarise(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for target, layout in dict.fromkeys((s.get("target", "heliograph"), s["layout"]) for s in steps):
        mine = [s for s in steps if s.get("target", "heliograph") == target and s["layout"] == layout]
        one = [s for s in mine if s["workers"] == 1]
        two = [s for s in mine if s["workers"] == 2]
        for workers, group in ((1, one), (2, two)):
            if not group:
                continue
            rps = [s["wrk"]["max_rps"] for s in group]
            us = [s["wrk"]["cpu_us_per_req_with_drain"] for s in group if s["wrk"]["cpu_us_per_req_with_drain"]]
            row: dict[str, Any] = {
                "target": target, "layout": layout, "workers": workers, "gateway_cores": group[0]["gateway_cores"],
                "load_cores": group[0]["load_cores"], "rps": rps, "rps_mean": round(statistics.mean(rps), 1),
                "cpu_us_per_req": round(statistics.mean(us), 1) if us else None,
                "drain_s": max(s["wrk"]["drain_s"] for s in group),
                "p50_ms": round(statistics.mean(s["wrk"]["latency_ms"]["p50"] for s in group), 2),
                "p99_ms": round(statistics.mean(s["wrk"]["latency_ms"]["p99"] for s in group), 2),
                "recorded_once": all(s["ok"] for s in group) if target == "heliograph" else None}
            if workers == 2 and one:
                mean_one = statistics.mean(s["wrk"]["max_rps"] for s in one)
                row["ratio"] = round(row["rps_mean"] / mean_one, 2) if mean_one else None
                # Round by round (1w and 2w of the same round ran back to back).
                row["ratio_by_round"] = [round(b["wrk"]["max_rps"] / a["wrk"]["max_rps"], 2)
                                         for a, b in zip(one, two) if a["wrk"]["max_rps"]]
                row["lower_bound"] = layout == "dedicated"
            rows.append(row)
    return rows


def table(results: dict[str, Any]) -> str:
    lines = [f"\nScaling: --workers 2 on 2 cores vs 1 worker on 1 core; Redis state, one "
             f"{'PostgreSQL' if results['meta']['db'] else 'SQLite'} store; {results['meta']['rounds']} round(s) of "
             f"{results['meta']['duration_s']:g} s, {results['meta']['connections']} connections "
             f"(target >= {TARGET_RATIO}x, issue 14)",
             f"{'target':<11}{'layout':<10} {'workers':>7} {'gateway/load cores':>19} {'req/s':>9} {'2w/1w':>7} "
             f"{'CPU us/req':>10} {'drain s':>7} {'p50 ms':>7} {'p99 ms':>7}  recorded once"]
    for row in results["summary"]:
        ratio = row.get("ratio")
        ratio_text = "" if ratio is None else f"{ratio:.2f}x" + ("*" if row.get("lower_bound") else "")
        cpu = "-" if row["cpu_us_per_req"] is None else f"{row['cpu_us_per_req']:.0f}"
        once = {True: "OK", False: "FAIL", None: "-"}[row["recorded_once"]]
        lines.append(f"{row['target']:<11}{row['layout']:<10} {row['workers']:>7} {row['gateway_cores'] + ' / ' + row['load_cores']:>19} "
                     f"{row['rps_mean']:>9.0f} {ratio_text:>7} {cpu:>10} {row['drain_s']:>7.1f} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f}  "
                     f"{once}")
    if any(row.get("lower_bound") for row in results["summary"]):
        lines += ["* lower bound: the 1-worker step has core 0 to itself for nginx + wrk; the 2-worker step shares",
                  "  both cores with them (there is no third core). `shared` puts the load beside the gateway in both",
                  "  steps: the fair ratio."]
    lines += [
        "CPU us/req: the gateway's own (the serve process and its workers), including its drain: the seconds",
        "  after wrk stopped while it still worked (recorders catching up). A drain that is not small against the",
        "  step's duration means req/s is more than it could sustain. nginx, wrk, Redis and PostgreSQL are not in",
        "  it, yet they use the same 2 cores (Redis and PostgreSQL unpinned).",
        f"load average before {results['meta']['loadavg_before']}, after {results['meta']['loadavg_after']}"
        + ("  (above ~0.3 before: someone else is using the cores; the numbers are noisy)"
           if results["meta"]["loadavg_before"][0] > 0.3 else "")]
    return "\n".join(lines)


def run(args: argparse.Namespace, processes: P.Processes, stores: Stores, results: dict[str, Any]) -> None:
    info, why = P.redis_probe(args.redis_url)
    if info is None:
        raise RuntimeError(f"Redis at {args.redis_url} does not answer ({why}); --workers 2 needs it")
    prefix = f"heliograph-bench-scaling-{os.getpid()}-{int(time.time())}:"
    results["redis"] = info | {"key_prefix": prefix}
    redis_env = {"HELIOGRAPH_REDIS_URL": args.redis_url, "HELIOGRAPH_REDIS_KEY_PREFIX": prefix}
    mock_url, mock_proc = P.start_nginx(processes)
    say(f"mock upstream (nginx) {mock_url}; Redis {info['version']} key prefix {prefix}; work dir {processes.workdir}")
    try:
        for round_no in range(1, args.rounds + 1):
            for layout in args.layouts:
                for workers in (1, 2):
                    results["steps"].append(step(args, processes, stores, mock_url, mock_proc.pid, redis_env,
                                                 layout, workers, round_no))
                if args.bare:
                    for workers in (1, 2):
                        results["steps"].append(bare_step(args, processes, mock_url, mock_proc.pid, layout,
                                                          workers, round_no))
    finally:
        results["redis"]["keys_deleted"] = P.redis_forget(args.redis_url, prefix)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores")

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)

    workdir = Path(tempfile.mkdtemp(prefix="heliograph-scaling-"))
    processes = P.Processes(workdir)
    stores = Stores(args.db)
    results: dict[str, Any] = {"meta": {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "duration_s": args.duration, "rounds": args.rounds,
        "connections": args.connections, "layouts": {name: LAYOUTS[name] for name in args.layouts},
        "db": "postgresql" if args.db else "", "loadavg_before": loadavg(), "uptime_before": uptime(),
        "cpus": os.cpu_count(), **heliograph_version()}, "steps": []}
    say(f"uptime before: {results['meta']['uptime_before']}")
    status = P.guarded("scaling bench", processes, args.keep, lambda: run(args, processes, stores, results),
                       stores.close)
    results["meta"]["loadavg_after"] = loadavg()
    results["meta"]["uptime_after"] = uptime()
    results["summary"] = summarise(results["steps"])
    if any(not s["ok"] for s in results["steps"]):
        status = status or 1
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    say(f"uptime after: {results['meta']['uptime_after']}")
    if results["summary"]:
        say(table(results))
    say(f"\nJSON: {RESULTS / 'scaling.json'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
