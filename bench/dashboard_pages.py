"""Server-side time of dashboard pages over a generated store (issue 10's "fast" budget).

    heliograph db generate --rows 1000000 --db sqlite:////tmp/h.db
    python bench/dashboard_pages.py sqlite:////tmp/h.db [PATH ...]

Starts `heliograph serve` on that store, logs in with a new read key, and prints the median of
five loads of each page (time to the last byte, on loopback) and its size.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time

import httpx

PAGES = [
    "/requests", "/requests?model=gpt-4o", "/requests?prop=feature%3Dsearch", "/requests?status=error",
    "/requests?range=24h&sort=cost&dir=desc", "/requests?user=user-00001", "/requests?sort=latency", "/requests?sort=latency&page=200",
    "/requests?cursor=1700000000000.x", "/requests?status=429&provider=anthropic&range=7d", "/requests?cost_min=0.01&latency_max=500",
    "/requests?q=refund", "/keys", "/static/app.css", "/static/app.js",
]


def main() -> None:
    db = sys.argv[1]
    paths = sys.argv[2:] or PAGES
    env = {**os.environ, "HELIOGRAPH_DB_URL": db, "HELIOGRAPH_LOG_LEVEL": "warning"}
    created = subprocess.run([sys.executable, "-m", "heliograph.cli.main", "keys", "create", "--name",
                              f"bench-{int(time.time())}", "--scope", "admin"], env=env, capture_output=True, text=True,
                             check=True)
    key = created.stdout.strip().splitlines()[-1]
    port = 8799
    server = subprocess.Popen([sys.executable, "-m", "heliograph.cli.main", "serve", "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=60) as client:
            form = client.get("/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
            client.post("/login", data={"key": key, "csrf": csrf})
            print(f"{'page':58} {'median ms':>10} {'KB':>7}")
            for path in paths:
                times, size = [], 0
                for _ in range(5):
                    started = time.perf_counter()
                    answer = client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    size = len(answer.content)
                    assert answer.status_code == 200, (path, answer.status_code)
                print(f"{path:58} {statistics.median(times):10.1f} {size / 1024:7.1f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
