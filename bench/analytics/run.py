"""Analytics at 1 M / 10 M records: generation, query latency, and recorder ingest rate.

    python bench/analytics/run.py --rows 1000000 --sqlite /work/bench-data/1m.db
    python bench/analytics/run.py --rows 1000000 --postgres postgresql://postgres@127.0.0.1:5432/bench
    python bench/analytics/run.py --ingest-only --sqlite /tmp/ingest.db

Records are written by `heliograph.synthetic.generate` (the store's own insert path, rollups
included) over the 30 days before 2026-01-01T00:00Z, unless the store already holds them (reused).
Each query runs once to warm the caches, then `--repeat` times; the median and the slowest are
reported. Results go to bench/analytics/results/<name>.json (not committed) and are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from heliograph.recording.process import to_row
from heliograph.recording.record import RawRecord
from heliograph.storage import RequestQuery, Store, open_store
from heliograph.storage.analytics import AnalyticsQuery
from heliograph.storage.filters import parse_filter
from heliograph.storage.sessions import SessionQuery, UserQuery
from heliograph.synthetic import generate

END = 1_767_225_600_000                      # 2026-01-01T00:00:00Z
DAYS = 30
START = END - DAYS * 86_400_000
HOUR = 3_600_000
RESULTS = Path(__file__).parent / "results"


def timed(repeat: int, run: Callable[[], Any]) -> dict[str, float]:
    run()                                    # warm the page cache and the statement cache
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append((time.perf_counter() - began) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def queries(store: Store) -> dict[str, Callable[[], Any]]:
    slow_gpt4o = parse_filter({"request_response_rmt": {"model": {"equals": "gpt-4o"}, "latency": {"gt": 5000}}})
    ragged = (END - 24 * HOUR - 17 * 60_000 - 1234, END - 3 * 60_000 - 12_345)
    p = "default"                            # synthetic records are all the default project's
    return {
        "summary, whole range": lambda: store.analytics(AnalyticsQuery(START, END, bucket=None, project=p)),
        "summary, last 24 h (ragged edges)": lambda: store.analytics(AnalyticsQuery(*ragged, bucket=None, project=p)),
        "series by hour, grouped by model": lambda: store.analytics(
            AnalyticsQuery(START, END, bucket="hour", group_by="model", project=p)),
        "series by hour, no grouping": lambda: store.analytics(AnalyticsQuery(START, END, bucket="hour", project=p)),
        "series by minute, last 24 h": lambda: store.analytics(AnalyticsQuery(*ragged, bucket="minute", project=p)),
        "series by day, grouped by status": lambda: store.analytics(
            AnalyticsQuery(START, END, bucket="day", group_by="status", project=p)),
        "series by day, property:feature": lambda: store.analytics(
            AnalyticsQuery(START, END, bucket="day", group_by="property:feature", project=p)),
        "series by day, top 20 users": lambda: store.analytics(
            AnalyticsQuery(START, END, bucket="day", group_by="user", limit=20, project=p)),
        "request query: gpt-4o, latency > 5 s, newest 100": lambda: store.query_requests(
            RequestQuery(project=p, filter=slow_gpt4o, limit=100)),
        "  same, without bodies": lambda: store.query_requests(
            RequestQuery(project=p, filter=slow_gpt4o, limit=100, include_bodies=False)),
        "sessions, newest 50": lambda: store.sessions(SessionQuery(project=p, limit=50)),
        "users, top 100 by cost": lambda: store.users(UserQuery(project=p, sort="cost", limit=100)),
        "property values: feature": lambda: store.property_values("feature", project=p, start=START, end=END),
    }


def raw_records(n: int, seed: int = 1) -> list[RawRecord]:
    """Proxied OpenAI chat completions as the hot path hands them over: headers, bodies, usage."""
    rnd = random.Random(seed)
    now = time.time()
    words = ["the", "invoice", "total", "looks", "wrong", "please", "check", "order", "1234", "and", "refund",
             "the", "customer", "today"]
    records = []
    for i in range(n):
        prompt = " ".join(rnd.choice(words) for _ in range(rnd.randint(20, 200)))
        answer = " ".join(rnd.choice(words) for _ in range(rnd.randint(20, 300)))
        model = rnd.choice(["gpt-4o", "gpt-4o-mini"])
        request = orjson.dumps({"model": model, "messages": [{"role": "system", "content": "Be brief."},
                                                             {"role": "user", "content": prompt}]})
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(answer) // 4,
                 "total_tokens": (len(prompt) + len(answer)) // 4}
        response = orjson.dumps({"id": f"chatcmpl-{i}", "object": "chat.completion", "model": model + "-2024-08-06",
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                              "finish_reason": "stop"}], "usage": usage})
        headers = {"helicone-user-id": f"user-{rnd.randint(1, 500)}", "helicone-property-feature": rnd.choice(
            ["support", "search", "billing"]), "helicone-property-environment": "production"}
        if rnd.random() < 0.4:
            headers |= {"helicone-session-id": f"s-{rnd.randint(1, 2000)}", "helicone-session-path": "/plan/act",
                        "helicone-session-name": "agent"}
        records.append(RawRecord(
            id=str(uuid.uuid4()), created_at=now + i / 2000, provider="openai",
            family="openai", method="POST", path="/openai/v1/chat/completions",
            target_url="https://api.openai.com/v1/chat/completions", key_id="key_bench", helicone=headers,
            request_body=request, status=200, response_body=response, latency_ms=rnd.lognormvariate(6.5, 0.7),
            gateway_overhead_ms=0.4))
    return records


def ingest(store: Store, count: int, batch: int) -> dict[str, Any]:
    """The recorder's work for `count` proxied calls: to_row (parse, usage, price, compress), then
    insert_requests in batches of the recorder's default size. Each batch is also written again
    (new ids) with the rollup upkeep switched off, interleaved, so that both see the same store."""
    records = raw_records(count)
    began = time.perf_counter()
    rows = [to_row(record, {}) for record in records]
    processing = time.perf_counter() - began
    body_bytes = sum(len(r.request_body) + len(r.response_body) for r in records) / count
    bare_rows = [row | {"id": row["id"] + "-bare"} for row in rows]
    writing = bare = 0.0
    for start in range(0, count, batch):
        began = time.perf_counter()
        store.insert_requests(rows[start:start + batch])
        writing += time.perf_counter() - began
        store._write_rollups = lambda tx, rows: None  # type: ignore[attr-defined]
        began = time.perf_counter()
        store.insert_requests(bare_rows[start:start + batch])
        bare += time.perf_counter() - began
        del store._write_rollups  # type: ignore[attr-defined]
    return {"records": count, "batch": batch, "avg_body_bytes": round(body_bytes),
            "insert_records_per_s": round(count / writing), "to_row_records_per_s": round(count / processing),
            "recorder_records_per_s": round(count / (writing + processing)),
            "insert_without_rollups_records_per_s": round(count / bare)}


def size_of(url: str, store: Store) -> str:
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        total = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        return f"{total / 2**30:.2f} GiB"
    rows = store._rows("SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) AS s FROM pg_class c "  # type: ignore[attr-defined]
                       "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                       "AND c.relkind = 'r'")
    return str(rows[0]["s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sqlite", help="SQLite file (created if missing)")
    parser.add_argument("--postgres", help="PostgreSQL URL (its current schema is used)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batch", type=int, default=5000, help="records per transaction while generating")
    parser.add_argument("--ingest", type=int, default=50_000, help="records for the ingest-rate run (0: skip)")
    parser.add_argument("--ingest-only", action="store_true")
    parser.add_argument("--name", help="results file name (default: from rows and store)")
    args = parser.parse_args()
    if bool(args.sqlite) == bool(args.postgres):
        parser.error("give exactly one of --sqlite PATH or --postgres URL")
    url = f"sqlite:///{os.path.abspath(args.sqlite)}" if args.sqlite else args.postgres
    store = open_store(url)
    store.migrate()
    name = args.name or f"{'sqlite' if args.sqlite else 'postgres'}-{args.rows // 1000}k"
    result: dict[str, Any] = {"store": store.dialect.name, "rows_requested": args.rows, "days": DAYS,
                              "python": sys.version.split()[0], "git": _git()}
    if not args.ingest_only:
        if store.count_requests() == 0:
            print(f"generating {args.rows:,} records into {url} …", flush=True)
            made = generate(store, args.rows, days=DAYS, end_ms=END, batch_size=args.batch)
            result["generate_records_per_s"] = round(made.rows_per_second)
            print(f"  {made.rows:,} in {made.seconds:.0f} s: {made.rows_per_second:,.0f} records/s", flush=True)
        else:
            print(f"reusing the {store.count_requests():,} records in {url}", flush=True)
        result["rows"] = store.count_requests()
        result["size"] = size_of(url, store)
        result["queries"] = {}
        for label, run in queries(store).items():
            result["queries"][label] = timed(args.repeat, run)
            print(f"  {label:<52} {result['queries'][label]['median_ms']:>8.1f} ms "
                  f"(max {result['queries'][label]['max_ms']:.1f})", flush=True)
    if args.ingest:
        if args.sqlite:
            fresh = Path(os.path.abspath(args.sqlite)).with_suffix(".ingest.db")
            for old in fresh.parent.glob(fresh.name + "*"):
                old.unlink()
            target = open_store(f"sqlite:///{fresh}")
        else:
            target = store
        target.migrate()
        result["ingest"] = ingest(target, args.ingest, 500)
        print(f"  ingest: {result['ingest']}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))


def _git() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10, check=False).stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
