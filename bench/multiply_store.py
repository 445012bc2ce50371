"""Make a SQLite store N× larger in SQL, fast: how the 10 M-row store of bench/alerts_eval.py is built.

    heliograph db generate --rows 1000000 --db sqlite:////tmp/h1m.db     # ~4 min
    cp /tmp/h1m.db /tmp/h10m.db && python bench/multiply_store.py /tmp/h10m.db --times 10

Every request row (and its request_properties rows) is copied times-1 more times under the id
`<id>-<k>`, with the same time and fields, so each millisecond holds `times` requests; bodies are
not copied. Every rollup table's sums and histogram counts are multiplied by `times` (not its
keys, names or first/last times), so rollups stay equal to sums over the rows. Generic over the
columns, so it works on a store of any schema version; run `heliograph db migrate` after it.
"""

from __future__ import annotations

import argparse
import sqlite3
import time

from heliograph.storage.rollup_schema import rollup_tables

UNSCALED = ("first_at", "last_at", "end_at")


def columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, str, int]]:
    return [(row[1], row[2].upper(), row[5]) for row in conn.execute(f"PRAGMA table_info({table})")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--times", type=int, default=10)
    args = parser.parse_args()
    conn = sqlite3.connect(args.path, isolation_level=None)
    conn.execute("PRAGMA cache_size=-2000000")      # 2 GB: the id index takes random inserts
    conn.execute("PRAGMA synchronous=OFF")
    started = time.perf_counter()
    last_request = conn.execute("SELECT max(rowid) FROM requests").fetchone()[0]
    last_property = conn.execute("SELECT max(rowid) FROM request_properties").fetchone()[0]
    names = [name for name, _, _ in columns(conn, "requests") if name != "id"]
    for k in range(1, args.times):
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO requests (id, {', '.join(names)}) SELECT id || '-{k}', {', '.join(names)} "
                     f"FROM requests WHERE rowid <= ?", (last_request,))
        conn.execute(f"INSERT INTO request_properties (request_id, key, value) SELECT request_id || '-{k}', key, value "
                     f"FROM request_properties WHERE rowid <= ?", (last_property,))
        conn.execute("COMMIT")
        print(f"copy {k}/{args.times - 1} done at {time.perf_counter() - started:.0f} s", flush=True)
    conn.execute("BEGIN")
    for table in rollup_tables():
        scaled = [name for name, kind, key in columns(conn, table)
                  if not key and kind in ("BIGINT", "INTEGER") and name not in UNSCALED]
        conn.execute(f"UPDATE {table} SET {', '.join(f'{c} = {c} * {args.times}' for c in scaled)}")
    conn.execute("COMMIT")
    total = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
    print(f"{total:,} requests; rollups scaled ×{args.times}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
