"""Where the saturated gateway's CPU goes, by stage: py-spy samples classified by one rule table.

A sample is one collapsed stack (the thread first, the leaf last). Its stage is that of the first
frame, walking from the leaf upward, that a rule of the sample's thread matches; rules are tried in
table order for each frame, so specific rules come before broad ones. Library frames without a rule
of their own (asyncio, sqlite3, psycopg, threading…) are charged to the nearest caller that has one:
the time `_upsert_rows` spends in psycopg is rollups, the time `_insert_new_requests` spends there is
insert. The walk stops at a thread's outer frames (the event loop's `Runner.run`, the thread
bootstrap): reaching one means no rule matched, and the sample is `other (<innermost library>)`;
a sample whose leaf *is* `Runner.run` is the event loop's own time (uvloop and httptools are C,
invisible to py-spy, so their work shows as `Runner.run` itself).

Threads: `main` is MainThread (the event loop), `recorder` is heliograph-recorder and the writer
process (`heliograph.writer`, recorder_process: the rows are built and stored there; run.py samples
it with py-spy's --subprocesses); any other thread is its own stage (`thread <name>`). Stacks
py-spy could not read at all are `other (no Python frame)`.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

# (stage, thread, regex on the raw frame "function (path:line)"). Paths may be short
# ("aiohttp/client.py") or absolute, hence `[(/]` before a package name.
STAGE_RULES: tuple[tuple[str, str, str], ...] = (
    # The event loop thread: the order of a call.
    ("ASGI server", "main", r"[(/]uvicorn/|[(/]httptools/|[(/]uvloop/|heliograph/server\.py|^Runner\.run \("),
    ("metrics", "main", r"[(/]prometheus_client/|heliograph/proxy/metrics\.py|heliograph/ops/"),
    ("upstream client", "main", r"[(/]aiohttp/|[(/]yarl/|[(/]multidict/|heliograph/proxy/forward\.py"),
    ("relay", "main", r"heliograph/proxy/relay\.py|^Call\.respond \("),
    ("record building / hand-off", "main", r"heliograph/recording/|^Queue\.put(_nowait)? \([^)]*queue\.py"),
    ("state client (Redis)", "main", r"[(/]redis/|heliograph/state/"),
    ("proxy handler", "main",
     r"heliograph/(proxy/|app\.py|auth\.py|keys\.py|controls/|budgets\.py|prompts/|errors\.py|usage\.py|pricing/)"),
    # The recorder thread: a batch, record by record, then one transaction.
    ("parse", "recorder", r"^(_json_object|decode_body) \(|[(/]orjson/"),
    ("usage", "recorder", r"heliograph/usage\.py"),
    ("price", "recorder", r"heliograph/pricing/"),
    ("stream assembly", "recorder", r"heliograph/recording/assemble\.py|heliograph/proxy/sse\.py"),
    ("compress", "recorder", r"heliograph/bodies\.py|^pack \(|[(/]zstandard/|[(/]zlib"),
    ("insert", "recorder", r"^RollupUpkeep\._insert_new_requests|^Heliograph\._insert \("),
    ("rollups", "recorder", r"heliograph/storage/(rollups|rollup_schema|histogram|cells)\.py"),
    # The rest of the store's write: the requests/properties INSERTs, the outbox, COMMIT in _transaction.
    ("insert", "recorder", r"heliograph/storage/"),
    ("observer: access line, metrics, spans", "recorder",
     r"heliograph/ops/|[(/]logging/|[(/]prometheus_client/|[(/]opentelemetry/"),
    # to_row's own lines: the row dict, properties, the JSON of attempts; clamping numbers.
    ("row building (to_row)", "recorder", r"heliograph/recording/(process|record)\.py|^clamp_numbers \("),
    ("batching", "recorder", r"heliograph/recording/(recorder|journal)\.py|^Queue\.get(_nowait)? \("),
    # Batches to and rows from the writer process: pickling and the pipe, on both sides.
    ("hand-off to the writer process", "recorder", r"heliograph/writer\.py|[(/]multiprocessing/|[(/]pickle"),
)
THREADS = {"MainThread": "main", "heliograph-recorder": "recorder", "writer": "recorder"}
# A thread's outer frames: the walk stops there (see the module docstring).
OUTER = re.compile(r"^Runner\.run \(|^asyncio_run \(|^Server\.run \([^)]*uvicorn/|^Thread\.(run|_bootstrap\w*) \("
                   r"|^Recorder\._run \(|^run \([^)]*heliograph/server\.py|^serve \(|[(/]click/|^<module> \(")
_RULES = tuple((stage, thread, re.compile(regex)) for stage, thread, regex in STAGE_RULES)
ORDER = tuple(dict.fromkeys(stage for stage, _, _ in STAGE_RULES))
_PATH = re.compile(r"\(([^()]*?)(?::\d+)?\)$")


def _library(frame: str) -> str:
    """The innermost library of a frame: `aiohttp`, `asyncio`, `threading`, or Heliograph's file."""
    match = _PATH.search(frame)
    path = match[1] if match else frame
    if "heliograph/" in path:
        return "heliograph/" + path.rsplit("heliograph/", 1)[1]
    path = path.rsplit("site-packages/", 1)[-1]
    parts = re.sub(r"^/.*?/lib/python3[.\d]*/", "", path).split("/")
    return parts[0].removesuffix(".py")


def classify(thread: str, frames: list[str]) -> str:
    """The stage of one sample: `frames` from the root to the leaf, without the thread."""
    kind = THREADS.get(thread)
    if kind is None:
        return "thread " + (re.sub(r"\d+$", "N", thread) or "?")
    if not frames:
        return "other (no Python frame)"
    for depth, frame in enumerate(reversed(frames)):
        if depth and OUTER.search(frame):
            break
        for stage, rule_thread, regex in _RULES:
            if rule_thread == kind and regex.search(frame):
                return stage
    return f"other ({_library(frames[-1])})"


def breakdown(samples: list[tuple[str, list[str], int]], *, rps: float | None = None,
              cpu_us_per_req: float | None = None, examples: int = 3) -> dict[str, Any]:
    """Percent of all samples per stage and, given the CPU per request measured with the profile,
    µs per request per stage (its share of that CPU). `samples`: (thread, frames, count).
    The top leaf functions of each stage come along, to check the rules against."""
    stages: Counter[str] = Counter()
    leaves: dict[str, Counter[str]] = {}
    for thread, frames, count in samples:
        stage = classify(thread, frames)
        stages[stage] += count
        leaves.setdefault(stage, Counter())[frames[-1] if frames else "-"] += count
    total = sum(stages.values())
    known = [s for s in ORDER if s in stages]
    rest = [s for s, _ in stages.most_common() if s not in ORDER]
    rows = []
    for stage in known + rest:
        share = stages[stage] / total
        rows.append({"stage": stage, "pct": round(100 * share, 1),
                     "us_per_req": round(share * cpu_us_per_req, 1) if cpu_us_per_req else None,
                     "top_leaves": [[leaf, round(100 * n / total, 1)] for leaf, n in leaves[stage].most_common(examples)]})
    return {"samples": total, "rps": rps, "cpu_us_per_req": cpu_us_per_req, "stages": rows}
