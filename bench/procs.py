"""The processes a benchmark run starts, and the one place that stops them.

Every child is started in its own session (a Ctrl-C in the terminal reaches only the harness, which
then stops the children in order) and pinned to a core with `taskset`. `Processes.stop_all` runs in a
`finally`, so an exception or Ctrl-C never leaves a server behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stages

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
LOAD_CORE = 0   # load generator, wrk and the mock upstream
PROXY_CORE = 1  # the proxy under test, alone

# A fixed OpenAI chat completion with usage, as the nginx mock answers every POST.
COMPLETION = {
    "id": "chatcmpl-bench0000000000000000000000", "object": "chat.completion", "created": 1730000000,
    "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?",
                                          "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23,
              "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
}

NGINX_CONF = """\
master_process off;
daemon off;
worker_processes 1;
worker_rlimit_nofile 40000;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server_tokens off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all its threads, so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (e.g. `serve --workers N`: the supervisor and its workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))  # ppid
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of every live process in `pid`'s tree."""
    return {p: cpu for p in process_tree(pid) if (cpu := cpu_seconds(p)) is not None}


def pin_children(pid: int, core: int) -> list[int]:
    """Move `pid`'s descendants (Heliograph's writer process) to `core`; their pids."""
    moved = [child for child in process_tree(pid) if child != pid]
    for child in moved:
        subprocess.run(["taskset", "-p", "-c", str(core), str(child)], check=True, capture_output=True)
    return moved


def pin_threads(pid: int, core: int) -> None:
    """Move every thread of `pid` (not its children) to `core`."""
    subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)], check=True, capture_output=True)


class CpuMeter:
    """CPU used by the target process during a step: a busy core at ~100 % while the rate falls
    behind means the target is the limit; CPU per answered request is less sensitive to noise
    from other processes than latency or throughput.

    `tree`: the process and all its descendants (worker processes); a child that exits during the
    step takes its CPU time with it, so meter only steps where the tree is stable."""

    def __init__(self, pid: int | None, tree: bool = False) -> None:
        self.pid = pid
        self.read = (lambda p: sum(tree_cpu(p).values())) if tree else cpu_seconds
        self.cpu = self.read(pid) if pid else None
        self.wall = time.monotonic()

    def report(self, answered: int) -> dict[str, float]:
        if self.pid is None or self.cpu is None:
            return {}
        cpu = self.read(self.pid)
        if cpu is None:
            return {}
        used, wall = cpu - self.cpu, time.monotonic() - self.wall
        out = {"target_cpu_pct": round(100 * used / wall, 1)}
        if answered:
            out["target_cpu_us_per_req"] = round(1e6 * used / answered, 1)
        return out


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], core: int | str, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        """`core`: one core, or a `taskset -c` list such as "0,1"."""
        with open(self.workdir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(["taskset", "-c", str(core), *argv], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.running.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.running = [(n, p) for n, p in self.running if p is not proc]
        return proc.returncode

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.running)):
            self.stop(proc, timeout=60.0)

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def guarded(what: str, processes: Processes, keep: bool, body: Callable[[], None],
            cleanup: Callable[[], None] = lambda: None) -> int:
    """Run a bench's `body`; on Ctrl-C or an error say so, with every server's log tail. Then stop
    every process, `cleanup`, and remove the work directory (kept with --keep or after a failure).
    The exit status: 0, 1 (failed) or 130 (interrupted)."""
    status = 0
    try:
        body()
    except KeyboardInterrupt:
        print("interrupted; stopping everything", flush=True)
        status = 130
    except Exception as exc:  # noqa: BLE001 - report, show the servers' logs, and still clean up
        print(f"{what} failed: {type(exc).__name__}: {exc}", flush=True)
        for name, _ in processes.running:
            print(f"--- {name} log tail ---\n{processes.log_tail(name)}", flush=True)
        status = 1
    finally:
        processes.stop_all()
        cleanup()
        if keep or status:
            print(f"work directory kept: {processes.workdir}", flush=True)
        else:
            shutil.rmtree(processes.workdir, ignore_errors=True)
    return status


def start_nginx(procs: Processes, cores: int | str = LOAD_CORE) -> tuple[str, subprocess.Popen[bytes]]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx not found: apt-get install -y nginx (the mock upstream)")
    port = free_port()
    ndir = procs.workdir / "nginx"
    ndir.mkdir()
    body = json.dumps(COMPLETION, separators=(",", ":"))
    assert "'" not in body
    (ndir / "nginx.conf").write_text(NGINX_CONF.format(dir=ndir, port=port, body=body))
    proc = procs.start("nginx", [nginx, "-p", str(ndir), "-c", str(ndir / "nginx.conf")], cores)
    wait_port(port, proc)
    return f"http://127.0.0.1:{port}", proc


def start_fake_upstream(procs: Processes) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = procs.start("fake-upstream", [PYTHON, "-m", "heliograph.testing", "--port", str(port)], LOAD_CORE)
    wait_port(port, proc)
    return f"http://127.0.0.1:{port}", proc


def start_bare(procs: Processes, name: str, upstream: str, *, workers: int = 1,
               cores: int | str = PROXY_CORE) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = procs.start(name, [PYTHON, str(BENCH / "bare_proxy.py"), "--port", str(port), "--upstream", upstream,
                              "--workers", str(workers)], cores)
    wait_port(port, proc)
    return f"http://127.0.0.1:{port}", proc


def heliograph_cmd() -> list[str]:
    script = Path(PYTHON).parent / "heliograph"
    return [str(script)] if script.exists() else [PYTHON, "-m", "heliograph.cli.main"]


def create_key(db_url: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([*heliograph_cmd(), "keys", "create", "--name", "bench", "--db", db_url],
                         check=False, capture_output=True, text=True, timeout=60, env=env)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"heliograph keys create failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return out.stdout.strip().splitlines()[-1].strip()


def start_heliograph(procs: Processes, name: str, upstream: str, db_path: Path | str,
                     extra_env: dict[str, str] | None = None, *, workers: int = 1,
                     cores: int | str = PROXY_CORE, src: str | None = None) -> tuple[str, subprocess.Popen[bytes], str]:
    """A fresh store, a key in it, and `heliograph serve` on the proxy core. Returns url, process, key.

    `db_path`: a SQLite file, or a database URL as is (e.g. an empty PostgreSQL database).
    `extra_env`: more `HELIOGRAPH_*` settings (e.g. `HELIOGRAPH_REDIS_URL`); any others in the
    harness's own environment are dropped. `workers` > 1 needs `HELIOGRAPH_REDIS_URL` in it.
    `src`: another build's `src` folder, first on PYTHONPATH (for the key and the server alike)."""
    db_url = db_path if isinstance(db_path, str) else f"sqlite:///{db_path}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")}
    if src is not None:
        env["PYTHONPATH"] = str(Path(src).resolve())
    key = create_key(db_url, env)
    port = free_port()
    env |= {"HELIOGRAPH_UPSTREAM_OPENAI": upstream, "HELIOGRAPH_LOG_LEVEL": "warning", **(extra_env or {})}
    argv = [*heliograph_cmd(), "serve", "--port", str(port), "--db", db_url]
    if workers != 1:
        argv += ["--workers", str(workers)]
    proc = procs.start(name, argv, cores, env)
    wait_port(port, proc)
    return f"http://127.0.0.1:{port}", proc, key


WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
{dynamic}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

# With `vary`: every request gets a body of its own (a per-call tag plus a counter in place of the
# placeholder, same length). wrk then calls this function per request instead of reusing one buffer.
WRK_VARY = """\
local head, tail = [==[{head}]==], [==[{tail}]==]
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, head .. string.format("{tag}%0{digits}d", n) .. tail)
end
"""
_wrk_calls = 0


def run_wrk(workdir: Path, url: str, body: bytes, headers: dict[str, str], duration: float,
            connections: int, vary: bytes | None = None, *, cores: int | str = LOAD_CORE) -> dict[str, Any]:
    """Closed-loop saturation with wrk (one thread, on the load core, or `cores`). Returns its numbers.

    `vary`: a placeholder in `body` replaced by a unique value on every request (see WRK_VARY)."""
    global _wrk_calls
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install -y wrk (the saturation load generator)")
    lua_headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    dynamic = ""
    if vary is not None:
        _wrk_calls += 1
        tag = f"W{_wrk_calls:03d}"  # the open-loop generator's nonces are all digits: never the same body
        head, sep, tail = body.decode().partition(vary.decode())
        if not sep or vary.decode() in tail or len(vary) <= len(tag):
            raise ValueError(f"the vary placeholder {vary!r} must occur once in the body")
        dynamic = WRK_VARY.format(head=head, tail=tail, tag=tag, digits=len(vary) - len(tag))
    script = workdir / "wrk.lua"
    script.write_text(WRK_SCRIPT.format(body=body.decode(), headers=lua_headers, dynamic=dynamic))
    argv = ["taskset", "-c", str(cores), wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s",
            "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(line[len("WRKJSON "):])
    seconds = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["status"]
    errors = raw["status"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "connections": connections, "duration_s": round(seconds, 2), "requests": raw["requests"], "ok": ok,
        "errors": errors, "error_kinds": {k: raw[k] for k in ("status", "connect", "read", "write", "timeout") if raw[k]},
        "max_rps": round(ok / seconds, 1),
        "latency_ms": {f"p{q}": raw[f"p{q}_us"] / 1000 for q in (50, 90, 99)} | {"max": raw["max_us"] / 1000},
    }


def redis_probe(url: str) -> tuple[dict[str, Any] | None, str | None]:
    """Does the (already running) Redis at `url` answer PING? Returns (info, None) or (None, why).

    The bench never starts or stops Redis; it only uses it, under a key prefix of its own.
    `pid` is set only when that process is visible here as a redis-server (then its CPU is metered)."""
    try:
        import redis
    except ImportError as exc:
        return None, f"redis-py not importable: {exc}"
    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        if not client.ping():
            return None, "PING did not answer PONG"
        info = client.info("server")
    except Exception as exc:  # noqa: BLE001 - any failure means "skip the Redis rows"
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    pid = info.get("process_id")
    try:
        visible = Path(f"/proc/{pid}/comm").read_text().strip().startswith("redis")
    except (OSError, TypeError):
        visible = False
    return {"url": url, "version": info.get("redis_version"), "pid": pid if visible else None}, None


def redis_forget(url: str, prefix: str) -> int:
    """Delete this run's keys (every key under `prefix`, nothing else). Returns how many."""
    import redis
    client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix.replace("*", r"\*") + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
    finally:
        client.close()
    return deleted


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
THREAD = re.compile(r"^thread \(\d+\): ?")
# Inclusive time is listed for Heliograph's own functions only; the entry points include everything.
HELIOGRAPH_FRAME = re.compile(r"\((src/)?heliograph/")
ENTRY_FRAME = re.compile(r"heliograph/(cli/main|server)\.py|\(heliograph\)$")


def _frame_name(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    if "site-packages/" in path or "/lib/python" in path:
        path = "/".join(path.split("/")[-2:])
    return f"{match['func']} ({path.replace(str(BENCH.parent) + '/', '')})"


def profile_summary(raw_path: Path, top: int = 15, *, rps: float | None = None,
                    cpu_us_per_req: float | None = None) -> dict[str, Any]:
    """Samples per thread, the time by stage (bench/stages.py; µs per request when given the CPU per
    request measured while sampling), the top functions by own samples, and Heliograph's functions by
    inclusive samples, from py-spy's `--threads -f raw` output (one collapsed stack per line, the
    thread first, the count last)."""
    samples: list[tuple[str, list[str], int]] = []
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        thread = "?"
        process = ""
        while frames and frames[0].startswith("process "):     # py-spy --subprocesses: the writer's samples
            process, frames = frames[0], frames[1:]
        if "heliograph.writer" in process:
            thread = "writer"
            threads[thread] += count
            frames = frames[1:] if frames and THREAD.match(frames[0]) else frames
        elif frames and THREAD.match(frames[0]):
            thread = THREAD.sub("", frames[0]) or "thread"
            threads[thread] += count
            frames = frames[1:]
        samples.append((thread, frames, count))
        names = [_frame_name(f) for f in frames]
        if names:
            own[names[-1]] += count
            for name in set(names):
                if HELIOGRAPH_FRAME.search(name) and not ENTRY_FRAME.search(name):
                    inclusive[name] += count

    def pct(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0
    return {"samples": total,
            "threads": [[name, pct(n)] for name, n in threads.most_common()],
            "stages": stages.breakdown(samples, rps=rps, cpu_us_per_req=cpu_us_per_req),
            "top_own": [[name, pct(n)] for name, n in own.most_common(top)],
            "top_inclusive": [[name, pct(n)] for name, n in inclusive.most_common(top)]}
