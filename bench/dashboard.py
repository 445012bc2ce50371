"""Time every dashboard page over a large SQLite store: the median of 5 server renders per page.

    python bench/dashboard.py --rows 1000000                 # generates ./bench/results/dash-1000000.db once
    python bench/dashboard.py --rows 1000000 --db /tmp/x.db  # reuse (or fill) a given file

Fills the store with `heliograph db generate --rows N` (30 days, the recorder's insert path, rollups
included) unless it already holds that many rows, creates a `read` key, starts `heliograph serve`,
logs in through the form as a person would and GETs each page once to warm up, then `--runs` times.
Time is the wall time of the GET on loopback (the page is rendered before its first byte is sent,
so this is the server's time plus a fraction of a millisecond). Pages that answer 404 (not built yet)
are listed as such. Weight = the HTML plus every /static CSS and JS file it links, uncompressed.
Target (issue 10): < 300 ms per page at 1 M rows, < 200 KB per page.
"""

from __future__ import annotations

import argparse
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
PAGES = (
    "/requests",
    "/sessions",
    "/users",
    "/analytics",
    "/analytics?range=7d",
    "/analytics?range=30d",
    "/analytics?range=30d&group=user",
    "/analytics?range=30d&group=property:feature",
    "/analytics?range=30d&group=status",
    "/analytics?range=14d&group=request_name",
    "/analytics?range=30d&group=provider&model=gpt-4o",
    "/analytics?range=30d&user=user-00001",
    "/analytics?range=30d&user=user-00500",
    "/analytics?range=14d&group=request_name&prop=environment=production",
    "/analytics?range=30d&bucket=hour",
    "/analytics?range=6h",
)


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "heliograph.cli.main", *args], capture_output=True, text=True,
                          check=True, timeout=3600)
    return done.stdout


def rows_in(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM requests").fetchone()[0])
    except sqlite3.Error:
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def login(client: httpx.Client, key: str) -> None:
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    if not csrf:
        raise SystemExit(f"no login form at /login: {form.status_code}")
    done = client.post("/login", data={"key": key, "csrf": csrf.group(1), "next": "/requests"})
    if done.status_code != 303:
        raise SystemExit(f"login refused: {done.status_code} {done.text[:300]}")


def weight(client: httpx.Client, html: str, cache: dict[str, int]) -> int:
    total = len(html.encode())
    for asset in sorted(set(re.findall(r'(?:href|src)="(/static/[^"]+\.(?:css|js))"', html))):
        if asset not in cache:
            cache[asset] = len(client.get(asset).content)
        total += cache[asset]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pages", nargs="*", default=list(PAGES))
    args = parser.parse_args()
    db = args.db or BENCH / "results" / f"dash-{args.rows}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{db.resolve()}"
    have = rows_in(db)
    if have < args.rows:
        print(f"generating {args.rows - have:,} rows into {db} …", flush=True)
        started = time.monotonic()
        cli("db", "generate", "--rows", str(args.rows - have), "--db", url)
        print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
    key = cli("keys", "create", "--name", f"bench-{int(time.time())}", "--scope", "read", "--db", url).strip().splitlines()[-1]
    port = free_port()
    log = open(db.with_suffix(".serve.log"), "wb")
    server = subprocess.Popen([sys.executable, "-m", "heliograph.cli.main", "serve", "--port", str(port), "--db", url],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("serve did not start; see " + str(db.with_suffix(".serve.log")))
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=120) as client:
            login(client, key)
            assets: dict[str, int] = {}
            print(f"\n{rows_in(db):,} rows, SQLite, median of {args.runs} (ms)\n")
            print(f"{'page':<66} {'median':>7} {'min':>7} {'max':>7} {'KB':>6}")
            for page in args.pages:
                first = client.get(page)
                if first.status_code != 200:
                    print(f"{page:<66} {'(' + str(first.status_code) + ')':>7}")
                    continue
                times = []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    r = client.get(page)
                    times.append((time.perf_counter() - started) * 1000)
                    r.raise_for_status()
                kb = weight(client, first.text, assets) / 1024
                print(f"{page:<66} {statistics.median(times):7.0f} {min(times):7.0f} {max(times):7.0f} {kb:6.0f}",
                      flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
