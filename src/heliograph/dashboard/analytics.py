"""/analytics: cost, volume, errors, latency, tokens, top spenders and cache savings, as SVG charts.

Everything comes from `store.analytics` (rollups; the same query as POST /api/v1/analytics/query)
and the small `store.cache_savings` join, always for the logged-in key's project. The view's
state is its query string, with the requests table's names:

    range=1h|6h|24h|7d|14d|30d|90d (default 24h), or from= / to= (ISO 8601, UTC unless it says)
    model= provider= user= status=(429|2xx|4xx|5xx|success|error) name=(request name) prop=key=value (repeatable)
    group=model|provider|user|request_name|status|prompt_version|property:<key>   what the cost chart is split by
    bucket=minute|hour|day   overrides the bucket chosen from the range (minute ≤ 6 h, hour ≤ 14 d, else day)

The queries run concurrently, each on its own thread (SQLite serves reads in parallel under WAL).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..storage.cache_stats import SAMPLE as CACHE_SAMPLE
from ..storage.analytics import GROUPS, MAX_BUCKETS, PROPERTY_GROUP, AnalyticsQuery, rollup_plan
from ..storage.filters import FilterError, Node, iso_ms, parse_filter
from ..storage.rollup_schema import LEVEL_MS
from ..storage.sessions import UserQuery
from .charts import Bar, Series, Unit, bar_chart, line_chart, sparkline
from .web import Ctx, Dashboard, render, url_with, view

RANGES = {"1h": 3_600_000, "6h": 21_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000,
          "14d": 14 * 86_400_000, "30d": 30 * 86_400_000, "90d": 90 * 86_400_000}
DEFAULT_RANGE = "24h"
TOP = 8                 # series in the cost chart (the rest is "other")
TOP_LIST = 10           # rows in the top-N bars
MAX_GROUPS = 1000       # groups asked of the store for a top-N (it ranks by requests; we rank by cost)
RAW_BUDGET = 20_000     # row reads a page may make in `requests` when the rollups cannot answer (~10 µs each)
TABLE = "request_response_rmt"
SPARKS: tuple[tuple[str, str, Unit, str], ...] = (     # stat tile, metric, unit, title
    ("cost", "cost", "usd", "Cost per bucket"), ("requests", "requests", "count", "Requests per bucket"),
    ("errors", "error_rate", "pct", "Error rate"), ("latency", "latency_p95", "ms", "Latency p95"),
    ("tokens", "total_tokens", "tokens", "Tokens per bucket"))
GROUP_LABELS = {"model": "Model", "provider": "Provider", "user": "User", "request_name": "Request name",
                "status": "Status", "prompt_version": "Prompt version"}


@dataclass(slots=True)
class PageFilter:
    """The filter and time range of a dashboard view, from its query string."""

    start: int
    end: int
    range: str                  # a RANGES key, or "custom"
    node: Node
    fields: dict[str, str] = field(default_factory=dict)     # the plain filters as given, for the form
    props: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _leaf(column: str, op: str, value: Any) -> dict[str, Any]:
    return {TABLE: {column: {op: value}}}


def _and(nodes: list[Any]) -> Any:
    tree: Any = "all"
    for node in nodes:
        tree = node if tree == "all" else {"left": tree, "operator": "and", "right": node}
    return tree


def parse_page_filter(request: Request, now_ms: int | None = None) -> PageFilter:
    """The requests table's filter names → a checked filter tree and [start, end). Bad values are
    reported in `errors` and left out, never a 500."""
    params = request.query_params
    now = int(time.time() * 1000) if now_ms is None else now_ms
    errors: list[str] = []
    chosen = params.get("range") or DEFAULT_RANGE
    if chosen not in RANGES:
        errors.append(f"Unknown time range {chosen!r}; showing the last {DEFAULT_RANGE}.")
        chosen = DEFAULT_RANGE
    start, end = now - RANGES[chosen], now
    given_from, given_to = params.get("from") or params.get("start"), params.get("to") or params.get("end")
    custom_start, custom_end = iso_ms(given_from), iso_ms(given_to)
    for edge, raw_time, parsed in (("from", given_from, custom_start), ("to", given_to, custom_end)):
        if raw_time and parsed is None:
            errors.append(f"'{edge}' must be a time such as 2025-01-31T12:00:00Z.")
    if custom_start is not None or custom_end is not None:
        start = custom_start if custom_start is not None else (custom_end or now) - RANGES[chosen]
        end = custom_end if custom_end is not None else now
        chosen = "custom"
        if start >= end:
            errors.append("The start of the time range must be before its end; showing the last 24 hours.")
            start, end, chosen = now - RANGES[DEFAULT_RANGE], now, DEFAULT_RANGE
    leaves: list[Any] = []
    fields: dict[str, str] = {}
    for name, column in (("model", "model"), ("provider", "provider"), ("user", "user_id"), ("name", "request_name")):
        given = params.get(name, "").strip()
        if given:
            fields[name] = given
            leaves.append(_leaf(column, "equals", given))
    status = params.get("status", "").strip().lower()
    if status:
        fields["status"] = status
        if status in ("2xx", "3xx", "4xx", "5xx"):
            low = int(status[0]) * 100
            leaves.append({"left": _leaf("status", "gte", low), "operator": "and", "right": _leaf("status", "lt", low + 100)})
        elif status == "error":
            leaves.append({"left": _leaf("status", "lt", 200), "operator": "or", "right": _leaf("status", "gte", 400)})
        elif status in ("success", "ok"):
            leaves.append({"left": _leaf("status", "gte", 200), "operator": "and", "right": _leaf("status", "lt", 300)})
        elif status.isdigit() and len(status) <= 3:
            leaves.append(_leaf("status", "equals", int(status)))
        else:
            errors.append(f"Unknown status filter {status!r}: use a code such as 429, 2xx, 4xx, 5xx, success or error.")
    props: list[tuple[str, str]] = []
    for raw in params.getlist("prop"):
        key, sep, value = raw.partition("=" if "=" in raw else ":")     # key=value, as /requests; key:value too
        if not sep or not key.strip():
            if raw.strip():
                errors.append(f"A property filter is key=value, got {raw!r}.")
            continue
        props.append((key.strip().lower(), value.strip()))
        leaves.append({TABLE: {"properties": {key.strip().lower(): {"equals": value.strip()}}}})
    try:
        node = parse_filter(_and(leaves))
    except FilterError as exc:
        errors.append(str(exc))
        node = parse_filter("all")
    return PageFilter(start, end, chosen, node, fields, props, errors)


def choose_bucket(start: int, end: int, asked: str | None = None) -> str:
    span = end - start
    if asked in LEVEL_MS and span / LEVEL_MS[asked] <= MAX_BUCKETS:
        return asked
    if span <= RANGES["6h"]:
        return "minute"
    return "hour" if span <= RANGES["14d"] else "day"


def _group(value: str | None) -> str:
    if value in GROUPS or (value and value.startswith(PROPERTY_GROUP) and len(value) > len(PROPERTY_GROUP)):
        return value.lower() if value.startswith(PROPERTY_GROUP) else value
    return "model"


def _label(group: Any, group_by: str) -> str:
    if group is None or group == "":
        return {"user": "(no user)", "request_name": "(no name)", "prompt_version": "(no prompt)"}.get(group_by, "(none)")
    return str(group)


def _times(start: int, end: int, bucket_ms: int) -> list[int]:
    return list(range(start // bucket_ms * bucket_ms, end, bucket_ms))


def _by_time(series: list[dict[str, Any]], times: list[int], metric: str, group: Any = None,
             grouped: bool = False) -> list[float | None]:
    index = {t: i for i, t in enumerate(times)}
    values: list[float | None] = [None] * len(times)
    for row in series:
        if grouped and row["group"] != group:
            continue
        i = index.get(row["time"])
        if i is not None and row.get(metric) is not None:
            values[i] = (values[i] or 0) + row[metric] if grouped else row[metric]
    return values


def cache_summary(rows: list[dict[str, Any]], models: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """Hits, hit rate and savings. Exact for the sampled hits whose original is in the store; a hit
    whose original is gone counts its model's average cost and latency per uncached request in the
    range; hits past the sample (store.cache_savings) are scaled from the sample, per model."""
    per_model = {m["group"]: m for m in models}
    hits = sum(r["hits"] for r in rows)
    saved_cost = saved_ms = 0.0
    exact = 0
    for r in rows:
        sampled = r["sampled"] or r["hits"]     # none sampled: every hit is estimated from its model
        cost, ms = r["saved_cost"], max(r["saved_ms"], 0.0)
        model = per_model.get(r["model"])
        if model is not None and sampled > r["matched"]:
            uncached = max(model["requests"] - r["hits"], 1)
            cost += (sampled - r["matched"]) * model["cost"] / uncached
            ms += (sampled - r["matched"]) * (model.get("latency_avg") or 0.0)
        scale = r["hits"] / sampled
        saved_cost += cost * scale
        saved_ms += ms * scale
        exact += r["matched"]
    requests = summary.get("requests") or 0
    return {"hits": hits, "rate": hits / requests if requests else 0.0, "saved_cost": saved_cost,
            "saved_ms": saved_ms, "estimated": hits - exact, "exact": exact}


def _window(span_ms: int, rows: int) -> int:
    """A window of the range's end whose row reads fit RAW_BUDGET: a standard range when one fits, else minutes."""
    fits = span_ms * RAW_BUDGET // max(rows, 1)
    standard = [ms for ms in RANGES.values() if ms <= fits]
    return max(standard) if standard else max(fits // 60_000 * 60_000, 300_000)


def _span_text(ms: int) -> str:
    name = next((k for k, v in RANGES.items() if v == ms), None)
    return f"last {name}" if name else f"last {ms // 60_000} minutes"


async def analytics_page(request: Request, ctx: Ctx) -> Response:
    pf = parse_page_filter(request)
    group_by = _group(request.query_params.get("group"))
    store, project = ctx.store, ctx.project
    notices: list[str] = []
    skipped: dict[str, str] = {}        # panel → why it is not shown
    prop_keys = await ctx.call(store.property_keys, project=project, start=pf.start, end=pf.end)
    top_prop = (request.query_params.get("top_prop") or (
        group_by[len(PROPERTY_GROUP):] if group_by.startswith(PROPERTY_GROUP) else
        (prop_keys[0]["property"] if prop_keys else None)) or "").lower() or None
    panels: dict[str, tuple[str | None, bool, int]] = {    # panel → (group, bucketed, limit)
        "total": (None, True, TOP_LIST), "split": (group_by, True, TOP), "models": ("model", False, MAX_GROUPS),
        "users": ("user", False, MAX_GROUPS)}
    if top_prop:
        panels["props"] = (PROPERTY_GROUP + top_prop, False, MAX_GROUPS)
    if group_by == "user":
        # One pass over the user rollup instead of two: the split's groups are the top users
        # (by requests, then shown by cost), and the page stays fast with thousands of users.
        panels["split"] = ("user", True, TOP_LIST)
        del panels["users"]
    # A panel the rollups cannot answer for this filter reads the rows: fine for a few thousand,
    # not for a month of traffic. Past RAW_BUDGET rows the page narrows (the totals) or leaves out
    # (the other panels) what would read them, and says so.
    raw = [name for name, (group, _, _) in panels.items() if rollup_plan(pf.node, group) is None]
    if raw:
        everything = await ctx.call(store.analytics, AnalyticsQuery(pf.start, pf.end, bucket=None, project=project))
        rows = everything["summary"]["requests"]
        if "user" in pf.fields:
            # One user's rows are an index range of their own: count those (user rollup) instead.
            found = await ctx.call(store.users, UserQuery(project=project, start=pf.start, end=pf.end,
                                                          user_ids=(pf.fields["user"],), limit=1))
            rows = min(rows, int(found[0]["total_requests"]) if found else 0)
        # Each raw panel reads its rows once for the summary, once more for its groups, once more for its series.
        passes = sum(1 + (panels[name][0] is not None) + panels[name][1] for name in raw)
        if rows * passes > RAW_BUDGET:
            window = _window(pf.end - pf.start, rows * passes)
            if "total" in raw:
                pf.start, pf.range = pf.end - window, "custom"
                notices.append(f"These filters are not kept in the rollups, so the page reads the requests "
                               f"themselves: showing the {_span_text(window)} ({rows:,} requests in the range "
                               f"asked would take too long).")
            else:
                for name in raw:
                    skipped[name] = "not kept in the rollups for these filters"
                    del panels[name]
                if skipped:
                    notices.append(f"Some panels combine a filter and a split the rollups do not keep; "
                                   f"they are left out over {rows:,} requests. A range of the "
                                   f"{_span_text(window)} shows them.")
    bucket = choose_bucket(pf.start, pf.end, request.query_params.get("bucket"))
    bucket_ms = LEVEL_MS[bucket]

    def query(group: str | None, with_bucket: bool, limit: int) -> AnalyticsQuery:
        # Only the totals need tokens, percentiles and a summary; the splits and top lists show cost.
        return AnalyticsQuery(pf.start, pf.end, pf.node, bucket if with_bucket else None, group, limit, project=project,
                              brief=group is not None)

    calls: dict[str, Any] = {name: ctx.call(store.analytics, query(*spec)) for name, spec in panels.items()}
    calls["cache"] = ctx.call(store.cache_savings, project=project, start=pf.start, end=pf.end, node=pf.node)
    done = dict(zip(calls, await asyncio.gather(*calls.values())))
    total = done["total"]
    split = done.get("split", {"groups": [], "series": []})
    summary = total["summary"]
    times = _times(pf.start, pf.end, bucket_ms)
    context: dict[str, Any] = {
        "pf": pf, "group_by": group_by, "bucket": bucket, "ranges": list(RANGES), "summary": summary,
        "group_labels": GROUP_LABELS, "prop_keys": [k["property"] for k in prop_keys], "top_prop": top_prop,
        "empty": not summary["requests"], "notices": notices, "skipped": skipped,
        "sources": sorted({str(r["source"]) for r in done.values() if isinstance(r, dict) and "source" in r}),
    }
    if context["empty"]:
        return render(request, ctx, "analytics.html", **context)
    groups = [g["group"] for g in split.get("groups", [])]
    cost_series = [Series(_label(g, group_by), _by_time(split["series"], times, "cost", g, grouped=True))
                   for g in groups]
    if "split" in skipped:
        cost_series = [Series("all", _by_time(total["series"], times, "cost"))]
    if split.get("groups_total", 0) > len(groups):
        shown = [sum(v or 0 for v in vals) for vals in zip(*(s.values for s in cost_series))] if cost_series else []
        overall = _by_time(total["series"], times, "cost")
        other = [None if o is None else max(o - (shown[i] if shown else 0), 0.0) for i, o in enumerate(overall)]
        cost_series.append(Series(f"other ({split['groups_total'] - len(groups)})", other))
    ts = total["series"]
    ok = [None if r is None else r - (e or 0) for r, e in zip(_by_time(ts, times, "requests"), _by_time(ts, times, "errors"))]
    title_by = GROUP_LABELS.get(group_by) or "property " + group_by[len(PROPERTY_GROUP):]
    context["sparks"] = {name: sparkline(_by_time(ts, times, metric), unit=unit, title=title)
                         for name, metric, unit, title in SPARKS}
    context["charts"] = {
        "cost": line_chart(cost_series, times, unit="usd", title=f"Cost by {title_by.lower()}", bucket_ms=bucket_ms,
                           stacked=True, width=1000, height=260),
        "volume": line_chart([Series("succeeded", ok), Series("errors", _by_time(ts, times, "errors"))], times,
                             unit="count", title="Requests", bucket_ms=bucket_ms, stacked=True, width=480, height=200),
        "errors": line_chart([Series("error rate", _by_time(ts, times, "error_rate"))], times, unit="pct",
                             title="Error rate", bucket_ms=bucket_ms, width=480, height=200),
        "latency": line_chart([Series(f"p{q}", _by_time(ts, times, f"latency_p{q}")) for q in (50, 95, 99)], times,
                              unit="ms", title="Latency", bucket_ms=bucket_ms, width=480, height=200),
        "ttft": line_chart([Series(f"p{q}", _by_time(ts, times, f"ttft_p{q}")) for q in (50, 95, 99)], times,
                           unit="ms", title="Time to first token", bucket_ms=bucket_ms, width=480, height=200),
        "tokens": line_chart([Series(label, _by_time(ts, times, metric)) for label, metric in (
            ("prompt", "prompt_tokens"), ("completion", "completion_tokens"), ("cache read", "prompt_cache_read_tokens"),
            ("reasoning", "reasoning_tokens"))], times, unit="tokens", title="Tokens", bucket_ms=bucket_ms, stacked=True, width=480, height=200),
    }

    def bars(result: dict[str, Any], by: str, param: str) -> list[Bar]:
        return [Bar(_label(g["group"], by), g["cost"], href=None if g["group"] in (None, "") else
                    _narrowed(request, param, str(g["group"])),
                    note=f"{g['requests']:,} requests" + (f", {g['unpriced_requests']:,} unpriced"
                                                           if g["unpriced_requests"] else ""))
                for g in _by_cost(result)]

    if group_by == "user" and "split" in done:
        done["users"] = done["split"]
    elif group_by == "user" and "split" in skipped:
        skipped["users"] = skipped["split"]
    context["tops"] = {name: bar_chart(bars(done[name], by, by), unit="usd", title=f"Top {by}s by cost")
                       for name, by in (("models", "model"), ("users", "user")) if name in done}
    if "props" in done:
        prop_bars = [Bar(_label(g["group"], "property"), g["cost"], note=f"{g['requests']:,} requests",
                         href=None if g["group"] in (None, "") else _narrowed(request, "prop", f"{top_prop}={g['group']}"))
                     for g in _by_cost(done["props"])]
        context["tops"]["props"] = bar_chart(prop_bars, unit="usd", title=f"Top {top_prop} values by cost")
    context["cache"] = cache_summary(done["cache"], done.get("models", {}).get("groups", []), summary)
    context["cache_sample"] = CACHE_SAMPLE
    return render(request, ctx, "analytics.html", **context)


def _by_cost(result: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(result.get("groups", []), key=lambda g: (-g["cost"], -g["requests"]))[:TOP_LIST]


def _narrowed(request: Request, name: str, value: str) -> str:
    """This page with one more filter (prop adds to the list; others replace)."""
    if name == "prop":
        current = [p for p in request.query_params.getlist("prop") if p != value]
        return url_with(request, prop=[*current, value])
    return url_with(request, **{name: value})


def routes(dashboard: Dashboard) -> list[BaseRoute]:
    return [Route("/analytics", view("read")(analytics_page), methods=["GET"])]
