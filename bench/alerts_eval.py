"""Time one evaluation of 100 alert rules over a large store (issue 12: < 1 s at 10 M rows).

    heliograph db generate --rows 1000000 --db sqlite:////tmp/big.db   # 10 M: bench/multiply_store.py
    python bench/alerts_eval.py --db sqlite:////tmp/big.db [--rules 100] [--runs 5] [--evict]

The rules mix every metric, windows from 5 minutes to 7 days, ungrouped and grouped by model,
provider, user, request name and a property, a filter on a model or a property, and one rule in
five in anomaly mode (a second query over the 7 days before the window). They are replaced in
project `default` on each run; the evaluation is the gateway's own (`alerts.evaluator.Evaluation`),
as a dry run: states and notifications are computed, not stored.

Evaluations run as a gateway's would, one `--interval` apart, ending at the store's newest request
(whenever the store was generated, every window holds requests up to its end), keeping the rows of
windows' edges from one to the next as AlertRunner does (storage/edges.py). The first one, in a
process that has just opened the store, is reported apart as *cold*; `--evict` also drops the SQLite
file from the OS page cache first (posix_fadvise), as after a reboot; the median is of the others.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from heliograph.alerts.evaluator import Evaluation
from heliograph.alerts.rules import METRICS, parse_rule
from heliograph.settings import Settings
from heliograph.settings import sqlite_path
from heliograph.storage import open_store

try:
    from heliograph.storage.edges import EdgeMemo
except ImportError:         # a commit before the edge memo, measured for comparison
    EdgeMemo = None  # type: ignore[assignment, misc]

WINDOWS = (300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400)
GROUPS = (None, "model", "provider", "user", "request_name", "property:feature", None)
FILTERS: tuple[Any, ...] = ("all", {"request_response_rmt": {"model": {"equals": "gpt-4o-mini"}}}, "all",
                            {"properties": {"environment": {"equals": "production"}}})


def _filter(n: int, group: str | None) -> Any:
    """The rule's filter, among those the rollups answer with this grouping (a model filter grouped by
    nothing, model or provider; a property filter ungrouped): rules needing the rows are refused
    beyond 1 hour, see alerts/rules.py."""
    chosen = FILTERS[n % len(FILTERS)]
    if chosen != "all" and group not in (None, "model", "provider"):
        return "all"
    if "properties" in chosen and group is not None:
        return "all"
    return chosen


def rules(count: int) -> list[dict[str, Any]]:
    made = []
    metrics = list(METRICS)
    for n in range(count):
        metric = metrics[n % len(metrics)]
        group = GROUPS[n % len(GROUPS)]
        if group == "user" and metric.startswith(("latency_", "ttft_")):
            group = "model"
        anomaly = n % 5 == 4
        made.append(parse_rule({
            "name": f"bench {n}", "metric": metric, "window": WINDOWS[n % len(WINDOWS)],
            "threshold": 3 if anomaly else (50 if metric in ("error_rate", "cache_hit_rate") else 1000),
            "mode": "anomaly" if anomaly else "threshold", "group_by": group,
            "filter": _filter(n, group)}))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5, help="warm evaluations, after the cold one")
    parser.add_argument("--interval", type=int, default=60, help="seconds between evaluations")
    parser.add_argument("--evict", action="store_true", help="drop the SQLite file from the OS page cache first")
    args = parser.parse_args()
    if args.evict and args.db.startswith("sqlite:"):
        for path in (sqlite_path(args.db), *(sqlite_path(args.db + s) for s in ("-wal", "-shm"))):
            if path.exists():
                fd = os.open(path, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
    store = open_store(args.db)
    store.migrate()
    for rule in store.list_alerts(project="default"):
        if rule["spec"]["name"].startswith("bench "):
            store.delete_alert(rule["id"], project="default")
    for spec in rules(args.rules):
        store.create_alert("default", spec)
    listed = [r for r in store.list_alerts(project="default") if r["spec"]["name"].startswith("bench ")]
    settings = Settings()
    newest = store._rows(store.dialect.sql(  # type: ignore[attr-defined]
        "SELECT max(created_at) AS t FROM requests WHERE project_id = ?"), ("default",))[0]["t"]
    first = newest - args.runs * args.interval * 1000
    times: list[float] = []
    took: list[dict[str, float]] = []       # per run: rule name → seconds
    edges = EdgeMemo() if EdgeMemo is not None else None
    for run in range(args.runs + 1):
        at = first + run * args.interval * 1000
        evaluation = Evaluation(store, settings, at, edges) if edges is not None else Evaluation(store, settings, at)
        took.append({})
        started = time.perf_counter()
        for rule in listed:
            begun = time.perf_counter()
            evaluation.rule(rule, {})
            took[-1][rule["spec"]["name"]] = time.perf_counter() - begun
        times.append(time.perf_counter() - started)
    rows = store.count_requests(project="default")     # after: counting reads a whole index into the caches
    from heliograph.storage.analytics import rollup_plan
    from heliograph.storage.filters import parse_filter
    from_rows = sum(rollup_plan(parse_filter(r["spec"]["filter"]), r["spec"]["group_by"]) is None for r in listed)
    print(f"{from_rows} of the rules need the rows (a filter the rollups cannot answer with their grouping)")
    cold, warm = times[0], times[1:]
    print(f"{len(listed)} rules over {rows:,} rows ({args.db.split(':')[0]}): cold (first, "
          f"{'OS cache evicted' if args.evict else 'new process'}) {cold * 1000:.0f} ms; warm median "
          f"{statistics.median(warm) * 1000:.0f} ms, min {min(warm) * 1000:.0f} ms, max {max(warm) * 1000:.0f} ms "
          f"over {len(warm)} runs {args.interval} s apart")
    by_name = {r["spec"]["name"]: r["spec"] for r in listed}
    worst_warm = {name: max(run[name] for run in took[1:]) for name in by_name} if args.runs else {}
    for label, seconds in (("cold", took[0]), ("warm", worst_warm)):
        for name, spent in sorted(seconds.items(), key=lambda item: -item[1])[:5]:
            spec = by_name[name]
            print(f"  slowest {label}: {spent * 1000:7.1f} ms  {spec['metric']} window {spec['window']} s "
                  f"group {spec['group_by']} mode {spec['mode']} filter {spec['filter']}")
    store.close()


if __name__ == "__main__":
    main()
