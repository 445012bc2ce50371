"""What an alert rule is, checked: every problem is a ValueError naming the field (the API's 400).

    {"name", "metric", "threshold", "window" (seconds), "comparison": "gt"|"lt", "min_requests",
     "filter", "group_by", "mode": "threshold"|"anomaly", "channels": [...], "enabled"}

Units are the analytics API's, as Helicone's alerts: `error_rate` and `cache_hit_rate` in percent
(0–100), `cost` in USD, latencies and TTFT in ms, `tokens` total tokens, `request_count` requests.
In `anomaly` mode the threshold is a factor: the rule breaches when the metric is more than
`threshold` × its baseline (`gt`), or less than baseline / `threshold` (`lt`); the baseline is the
same metric over the 7 days before the window (sums scaled to the window's length). Percentiles come
from the rollups' histograms (within 5 %) whatever the window; what the edges of windows read and keep
between evaluations is in storage/edges.py.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from typing import Any

from ..storage.analytics import PROPERTY_GROUP, rollup_plan
from ..storage.filters import FilterError, parse_filter

METRICS: dict[str, str] = {
    "error_rate": "percent of requests that failed (HTTP status ≥ 400 or no answer)",
    "cost": "USD",
    "request_count": "requests",
    "tokens": "total tokens",
    "latency_p50": "ms", "latency_p95": "ms", "latency_p99": "ms",
    "ttft_p50": "ms", "ttft_p95": "ms", "ttft_p99": "ms",
    "cache_hit_rate": "percent of requests answered from the cache",
}
PERCENT_METRICS = ("error_rate", "cache_hit_rate")
PERCENTILE_METRICS = tuple(m for m in METRICS if m.startswith(("latency_", "ttft_")))
ADDITIVE_METRICS = ("cost", "request_count", "tokens")   # scaled to the window for an anomaly baseline
GROUPS = ("model", "provider", "user", "request_name")   # and property:<key>
MODES = ("threshold", "anomaly")
COMPARISONS = ("gt", "lt")
CHANNEL_TYPES = ("webhook", "slack", "email")
MIN_WINDOW, MAX_WINDOW = 60, 30 * 86_400
MAX_CHANNELS = 10
MAX_ROW_WINDOW = 3600   # longest window of a rule the rollups cannot answer (read from the rows)
MAX_NAME = 200
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class RuleError(ValueError):
    """A rule that cannot be stored; the message names the field."""


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RuleError(f"'{field}' must be a number, got {value!r}.")
    return float(value)


def _url(value: Any, field: str) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value) or len(value) > 2048:
        raise RuleError(f"'{field}' must be an http:// or https:// URL, got {value!r}.")
    return value


def parse_channel(raw: Any, field: str) -> dict[str, Any]:
    """One notification channel; a webhook without a secret gets one (shown once, on creation)."""
    if not isinstance(raw, dict):
        raise RuleError(f"'{field}' must be an object such as {{\"type\": \"webhook\", \"url\": \"…\"}}.")
    kind = raw.get("type")
    if kind not in CHANNEL_TYPES:
        raise RuleError(f"'{field}.type' must be one of {', '.join(CHANNEL_TYPES)}, got {kind!r}.")
    allowed = {"webhook": {"type", "url", "secret"}, "slack": {"type", "url"}, "email": {"type", "to"}}[kind]
    if unknown := sorted(set(raw) - allowed):
        raise RuleError(f"'{field}.{unknown[0]}' is not a field of a {kind} channel ({', '.join(sorted(allowed))}).")
    if kind == "email":
        to = raw.get("to")
        if isinstance(to, str):
            to = [to]
        if not isinstance(to, list) or not to or len(to) > 50 or not all(
                isinstance(a, str) and _EMAIL.match(a) for a in to):
            raise RuleError(f"'{field}.to' must be a list of email addresses, got {raw.get('to')!r}.")
        return {"type": "email", "to": to}
    channel: dict[str, Any] = {"type": kind, "url": _url(raw.get("url"), f"{field}.url")}
    if kind == "webhook":
        secret = raw.get("secret")
        if secret is None:
            secret = "whsec_" + secrets.token_hex(24)
        if not isinstance(secret, str) or not 8 <= len(secret) <= 256:
            raise RuleError(f"'{field}.secret' must be text of 8 to 256 characters.")
        channel["secret"] = secret
    return channel


def parse_rule(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The rule as stored, with defaults filled in."""
    known = {"name", "metric", "threshold", "window", "comparison", "min_requests", "filter", "group_by",
             "mode", "channels", "enabled"}
    if unknown := sorted(set(raw) - known):
        raise RuleError(f"'{unknown[0]}' is not a field of an alert rule ({', '.join(sorted(known))}).")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise RuleError(f"'name' must be non-empty text of at most {MAX_NAME} characters, got {name!r}.")
    metric = raw.get("metric")
    if metric not in METRICS:
        raise RuleError(f"'metric' must be one of {', '.join(METRICS)}, got {metric!r}.")
    mode = raw.get("mode", "threshold")
    if mode not in MODES:
        raise RuleError(f"'mode' must be \"threshold\" or \"anomaly\", got {mode!r}.")
    comparison = raw.get("comparison", "gt")
    if comparison not in COMPARISONS:
        raise RuleError(f"'comparison' must be \"gt\" or \"lt\", got {comparison!r}.")
    threshold = _number(raw.get("threshold"), "threshold")
    if mode == "anomaly" and threshold <= 1:
        raise RuleError(f"'threshold' of an anomaly rule is a factor above 1 (3 means 3× the baseline), got {threshold}.")
    if mode == "threshold" and metric in PERCENT_METRICS and not 0 <= threshold <= 100:
        raise RuleError(f"'threshold' of {metric} is a percentage from 0 to 100, got {threshold}.")
    if threshold < 0:
        raise RuleError(f"'threshold' cannot be negative, got {threshold}.")
    window = raw.get("window")
    if isinstance(window, float) and window.is_integer():
        window = int(window)
    if isinstance(window, bool) or not isinstance(window, int) or not MIN_WINDOW <= window <= MAX_WINDOW:
        raise RuleError(f"'window' must be whole seconds from {MIN_WINDOW} (1 minute) to {MAX_WINDOW} (30 days), "
                        f"got {window!r}.")
    min_requests = raw.get("min_requests", 0)
    if isinstance(min_requests, bool) or not isinstance(min_requests, int) or min_requests < 0:
        raise RuleError(f"'min_requests' must be a whole number of at least 0, got {min_requests!r}.")
    raw_filter = raw.get("filter", "all")
    try:
        parse_filter(raw_filter)
    except FilterError as exc:
        raise RuleError(f"'filter': {exc}") from None
    group_by = raw.get("group_by")
    if isinstance(group_by, str) and group_by.lower().startswith(PROPERTY_GROUP) and len(group_by) > len(PROPERTY_GROUP):
        group_by = PROPERTY_GROUP + group_by[len(PROPERTY_GROUP):].lower()    # property keys are lower-cased
    elif group_by is not None and group_by not in GROUPS:
        raise RuleError(f"'group_by' must be null, one of {', '.join(GROUPS)}, or \"property:<key>\"; got {group_by!r}.")
    if group_by == "user" and metric in PERCENTILE_METRICS:
        raise RuleError(f"'group_by': per-user percentiles are not kept (users are unbounded); use {metric} "
                        "without grouping, or group by model, provider, request_name or a property.")
    if rollup_plan(parse_filter(raw_filter), group_by) is None:
        # Rollups keep model/provider/status, request names, one property at a time and users apart, so
        # e.g. a property filter on a rule grouped by model is read from the request rows, every interval:
        # allowed over short windows only, never as an anomaly (its baseline would be 7 days of rows).
        if mode == "anomaly" or window > MAX_ROW_WINDOW:
            raise RuleError(f"'filter': with group_by {group_by!r} this filter is answered from the request rows, "
                            f"not the rollups, so such a rule may only be a threshold rule over at most "
                            f"{MAX_ROW_WINDOW} s; filter on model or provider, on the property you group by, "
                            "or on one property without grouping to use any window and the anomaly mode.")
    channels = raw.get("channels", [])
    if not isinstance(channels, list) or len(channels) > MAX_CHANNELS:
        raise RuleError(f"'channels' must be a list of at most {MAX_CHANNELS} channels.")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError(f"'enabled' must be true or false, got {enabled!r}.")
    return {"name": name.strip(), "metric": metric, "threshold": threshold, "window": window,
            "comparison": comparison, "min_requests": min_requests, "filter": raw_filter, "group_by": group_by,
            "mode": mode, "channels": [parse_channel(c, f"channels[{i}]") for i, c in enumerate(channels)],
            "enabled": enabled}


def masked(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The rule as shown after creation: channel secrets hidden."""
    return {**spec, "channels": [{**c, "secret": "****"} if "secret" in c else c for c in spec.get("channels", [])]}
