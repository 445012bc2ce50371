"""Two builds of Heliograph at saturation, side by side: which is faster, on a machine that drifts.

    python bench/ab.py /tmp/before/src /tmp/after/src [--rounds 16] [--duration 3] [--writer-core 0 | --workers 2]

Each argument is a `src` folder (e.g. `git archive <commit> src | tar -x -C /tmp/before`), put first
on PYTHONPATH of its own `heliograph serve`. Both run at once on fresh SQLite stores, idle but for
their turn, and take turns under wrk (A B, then B A, …) so that the machine's drift, often ±20 %
within minutes on a shared host, hits both alike. Reported: each round's req/s and CPU per call
(the whole process tree), their medians, and the median of the rounds' B/A ratios: the figure to
believe. Layouts as bench/run.py (`--writer-core 0`: gateway core 1, writer core 0) and
bench/scaling.py (`--workers 2`: both cores, Redis state, the load beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs as P
from run import REQUEST, ROUTE, headers_for, say


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the first build's src folder")
    parser.add_argument("b", help="the second build's src folder")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of wrk per turn [%(default)s]")
    parser.add_argument("--connections", type=int, default=64)
    layout = parser.add_mutually_exclusive_group()
    layout.add_argument("--writer-core", type=int, choices=[0], help="gateway core + recorder core")
    layout.add_argument("--workers", type=int, choices=[2], help="2 workers on both cores with the load")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="for --workers 2")
    args = parser.parse_args()

    two = args.workers == 2
    gateway_cores = "0,1" if (two or args.writer_core is not None) else P.PROXY_CORE
    load_cores = "0,1" if two else P.LOAD_CORE
    processes = P.Processes(Path(tempfile.mkdtemp(prefix="heliograph-ab-")))
    body = json.dumps(REQUEST).encode()
    results: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    prefixes = {name: f"heliograph-ab-{os.getpid()}-{name}:" for name in results}

    def measure() -> None:
        mock_url, _ = P.start_nginx(processes, load_cores)
        builds = {}
        for name, src in (("A", args.a), ("B", args.b)):
            env = {"HELIOGRAPH_REDIS_URL": args.redis_url, "HELIOGRAPH_REDIS_KEY_PREFIX": prefixes[name]} if two else {}
            url, proc, key = P.start_heliograph(processes, name, mock_url, processes.workdir / f"{name}.db", env,
                                                workers=args.workers or 1, cores=gateway_cores, src=src)
            P.run_wrk(processes.workdir, url + ROUTE, body, headers_for(key, "warmup"), 2, args.connections,
                      cores=load_cores)
            if args.writer_core is not None:
                if not P.pin_children(proc.pid, args.writer_core):
                    raise RuntimeError(f"build {name} started no writer process")
                P.pin_threads(proc.pid, P.PROXY_CORE)
            builds[name] = (url, proc, key)
        for round_ in range(args.rounds):
            for name in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                url, proc, key = builds[name]
                time.sleep(0.5)
                meter = P.CpuMeter(proc.pid, tree=True)
                report = P.run_wrk(processes.workdir, url + ROUTE, body, headers_for(key, "wrk"), args.duration,
                                   args.connections, cores=load_cores)
                us = meter.report(report["ok"]).get("target_cpu_us_per_req", float("nan"))
                results[name].append((report["max_rps"], us))
                say(f"  round {round_ + 1:>2} {name}: {report['max_rps']:8.1f} req/s  {us:6.1f} µs a call")

    def forget() -> None:
        if two:
            for prefix in prefixes.values():
                P.redis_forget(args.redis_url, prefix)

    if status := P.guarded("bench/ab.py", processes, False, measure, forget):
        sys.exit(status)
    for name, src in (("A", args.a), ("B", args.b)):
        rows = results[name]
        say(f"{name} {src}: median {statistics.median(r for r, _ in rows):.0f} req/s, "
            f"{statistics.median(u for _, u in rows):.0f} µs a call")
    ratios = [b[0] / a[0] for a, b in zip(results["A"], results["B"])]
    say(f"B/A by round: {' '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.3f}, "
        f"B faster in {sum(r > 1 for r in ratios)} of {len(ratios)}")


if __name__ == "__main__":
    main()
