"""The alert evaluator: every `alert_interval` seconds, in one gateway, from the rollups.

Each rule is one analytics query (storage/analytics.py, the API's own; rollups plus the raw rows
of the window's ragged edges), grouped when the rule is, and for an anomaly rule a second one over
the 7 days before the window. The edges' rows are summed by whole minute and kept from one
evaluation to the next (storage/edges.py), so each evaluation reads the rows of the minutes it has
not seen yet rather than up to an hour at each end of every window. Each (rule, group) moves between states:

    ok ──breach──▶ firing ──no breach for alert_cooldown──▶ resolved ──breach──▶ firing …

A window with fewer than `min_requests` requests, a percentile with no data, or an anomaly rule
with no baseline leaves the state as it is. Every transition is an event (the rule's history) and
one notification per channel, queued in the outbox with the new state in the same transaction.

Grouped rules keep state rows only for groups that have left `ok`, so a rule grouped by user costs
nothing per quiet user. Budgets (heliograph/budgets.py) are checked on the same tick: a budget
reaching 80 % and 100 % of its period's amount notifies once per period through every channel of
its project's alert rules.

One evaluator across gateways: a lease row in the store (storage/alerts.py) held for 1.5 intervals
and renewed every interval; the others look every half interval, so one takes over within two
intervals of the holder stopping (at once when it shuts down cleanly: it gives the lease up).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from ..budgets import statuses
from ..settings import Settings
from ..storage import Store, StoreUnavailable
from ..storage.analytics import AnalyticsQuery
from ..storage.edges import EdgeMemo
from ..storage.filters import ALL, parse_filter
from ..storage.outbox import delivery, new_id
from .channels import render
from .rules import ADDITIVE_METRICS, PERCENT_METRICS, PERCENTILE_METRICS

log = logging.getLogger("heliograph.alerts")

LEASE = "alert-evaluator"
BASELINE_MS = 7 * 86_400_000
HOUR_MS = 3_600_000
MAX_GROUPS = 1_000_000      # every group: a quiet user spending 5× their usual must not be cut off
DELIVERY_LOG_DAYS = 7       # delivered and failed notifications are forgotten after this
PRUNE_EVERY = 3600.0
BUDGET_LEVELS = (80, 100)
OK, FIRING, RESOLVED = "ok", "firing", "resolved"


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def metric_value(metric: str, metrics: Mapping[str, Any]) -> float | None:
    """The rule's metric from an analytics answer (one group's or the summary), in the rule's units."""
    requests = int(metrics.get("requests") or 0)
    if metric == "error_rate":
        return 100.0 * float(metrics.get("error_rate") or 0.0)
    if metric == "cache_hit_rate":
        return 100.0 * int(metrics.get("cache_hits") or 0) / requests if requests else 0.0
    if metric == "request_count":
        return float(requests)
    if metric == "tokens":
        return float(metrics.get("total_tokens") or 0)
    value = metrics.get(metric)
    return None if value is None else float(value)


EMPTY: dict[str, Any] = {"requests": 0, "error_rate": 0.0, "cost": 0.0, "total_tokens": 0}


class Evaluation:
    """One pass over every rule: computes new states, events and notifications; the caller saves them."""

    def __init__(self, store: Store, settings: Settings, now_ms: int, edges: EdgeMemo | None = None) -> None:
        """`edges`: the memo of the evaluation before, if any (AlertRunner keeps one)."""
        self.store = store
        self.settings = settings
        self.now = now_ms
        self.states: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.deliveries: list[tuple[Any, ...]] = []
        self.forget: list[tuple[str, str]] = []
        self._answers: dict[tuple[Any, ...], dict[Any, dict[str, Any]]] = {}
        self._edges = EdgeMemo() if edges is None else edges
        self._edges.next_evaluation()
        self.link_base = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")

    def measure(self, rule: Mapping[str, Any], start: int, end: int) -> dict[Any, tuple[float | None, int]]:
        """Group → (metric value, requests) over [start, end) for this rule. Rules asking the same
        question (filter, grouping, range) in one pass share one answer."""
        spec = rule["spec"]
        group_by = spec["group_by"]
        percentiles = spec["metric"] in PERCENTILE_METRICS
        key = (rule["project_id"], orjson.dumps(spec["filter"], option=orjson.OPT_SORT_KEYS), group_by, start, end,
               percentiles)
        groups = self._answers.get(key)
        if groups is None:
            query = AnalyticsQuery(start, end, parse_filter(spec["filter"]), None, group_by, MAX_GROUPS,
                                   project=rule["project_id"])
            groups = self._answers[key] = self.store.group_metrics(query, percentiles=percentiles, memo=self._edges)
        return {group: (metric_value(spec["metric"], metrics), int(metrics["requests"]))
                for group, metrics in groups.items() if group is not None or group_by is None}

    def rule(self, rule: Mapping[str, Any], known: Mapping[str, dict[str, Any]]) -> None:
        spec = rule["spec"]
        window_ms = int(spec["window"]) * 1000
        current = self.measure(rule, self.now - window_ms, self.now)
        baselines: dict[Any, tuple[float | None, int]] = {}
        if spec["mode"] == "anomaly":
            # Whole hours: every rollup keeps hours, so the 7 days are read from rollups alone (the
            # baseline moves by at most an hour in 7 days, 0.6 %).
            end = (self.now - window_ms) // HOUR_MS * HOUR_MS
            baselines = self.measure(rule, end - BASELINE_MS, end)
        keys: dict[str, Any] = {"" if group is None else str(group): group for group in current}
        for key in known:      # a group that was alerting and has no requests now still resolves
            keys.setdefault(key, key if spec["group_by"] is not None else None)
        for key, group in keys.items():
            value, requests = current.get(group, (metric_value(spec["metric"], EMPTY), 0))
            baseline: float | None = None
            if spec["mode"] == "anomaly":
                base_value, base_requests = baselines.get(group, (None, 0))
                if base_value is not None and base_requests > 0:
                    scale = window_ms / BASELINE_MS if spec["metric"] in ADDITIVE_METRICS else 1.0
                    baseline = base_value * scale
            self.step(rule, key, group, value, requests, baseline, known.get(key))

    def step(self, rule: Mapping[str, Any], key: str, group: Any, value: float | None, requests: int,
             baseline: float | None, previous: dict[str, Any] | None) -> None:
        spec = rule["spec"]
        state = dict(previous) if previous else {
            "rule_id": rule["id"], "group_key": key, "project_id": rule["project_id"], "state": OK,
            "since": self.now, "last_breach_at": None}
        state |= {"value": value, "baseline": baseline, "requests": requests, "evaluated_at": self.now}
        anomaly = spec["mode"] == "anomaly"
        unknown = value is None or requests < spec["min_requests"] or (anomaly and not baseline)
        if not unknown:
            assert value is not None
            limit = spec["threshold"] * baseline if anomaly and baseline else spec["threshold"]
            if anomaly and spec["comparison"] == "lt" and baseline:
                limit = baseline / spec["threshold"]
            breach = value > limit if spec["comparison"] == "gt" else value < limit
            if breach:
                state["last_breach_at"] = self.now
                if state["state"] != FIRING:
                    self.transition(rule, state, FIRING, group)
            elif state["state"] == FIRING and \
                    self.now - int(state["last_breach_at"] or state["since"]) >= self.settings.alert_cooldown * 1000:
                self.transition(rule, state, RESOLVED, group)
        quiet = (spec["group_by"] is not None and state["state"] != FIRING and requests == 0
                 and self.now - int(state["since"]) > int(spec["window"]) * 1000)
        if quiet and previous is not None:
            self.forget.append((rule["id"], key))      # a group long resolved and gone: back to ok, no row
        elif previous is not None or spec["group_by"] is None or state["state"] != OK:
            self.states.append(state)

    def transition(self, rule: Mapping[str, Any], state: dict[str, Any], to: str, group: Any) -> None:
        spec = rule["spec"]
        state["state"], state["since"] = to, self.now
        self.events.append({"id": new_id("evt"), "rule_id": rule["id"], "project_id": rule["project_id"],
                            "group_key": state["group_key"], "state": to, "value": state["value"],
                            "threshold": spec["threshold"], "baseline": state["baseline"], "at": self.now})
        notification = self.notification(rule, to, value=state["value"], group=group, baseline=state["baseline"],
                                         requests=state["requests"])
        self.notify(rule["project_id"], "alert", rule["id"], spec["channels"], notification)

    def notification(self, rule: Mapping[str, Any], state: str, *, value: float | None, group: Any,
                     baseline: float | None, requests: int | None) -> dict[str, Any]:
        spec = rule["spec"]
        return {"rule": {"id": rule["id"], "name": spec["name"]}, "state": state, "metric": spec["metric"],
                "value": None if value is None else round(value, 6), "threshold": spec["threshold"],
                "comparison": spec["comparison"], "mode": spec["mode"],
                "baseline": None if baseline is None else round(baseline, 6), "window": spec["window"],
                "group_by": spec["group_by"], "group": group, "requests": requests,
                "unit": "percent" if spec["metric"] in PERCENT_METRICS else None,
                "project_id": rule["project_id"], "at": iso(self.now),
                "url": f"{self.link_base}/alerts/{rule['id']}"}

    def notify(self, project: str, source: str, source_id: str, channels: Sequence[Mapping[str, Any]],
               notification: Mapping[str, Any]) -> None:
        for channel in channels:
            self.deliveries.append(delivery(project, source, source_id, channel, render(channel, notification),
                                            at=self.now))


def evaluate(store: Store, settings: Settings, now_ms: int | None = None, edges: EdgeMemo | None = None) -> Evaluation:
    """Evaluate every enabled rule once and save the outcome; blocking (run it in a thread). `edges`:
    kept from one call to the next by the caller, so windows' edges are read once (storage/edges.py)."""
    evaluation = Evaluation(store, settings, int(time.time() * 1000) if now_ms is None else now_ms, edges)
    known: dict[str, dict[str, dict[str, Any]]] = {}
    for state in store.alert_states():
        known.setdefault(state["rule_id"], {})[state["group_key"]] = state
    rules = store.list_alerts()
    for gone in known.keys() - {rule["id"] for rule in rules}:     # a rule deleted while it was evaluated
        evaluation.forget += [(gone, key) for key in known[gone]]
    for rule in rules:
        if not rule["spec"].get("enabled", True):
            continue
        try:
            evaluation.rule(rule, known.get(rule["id"], {}))
        except StoreUnavailable:
            raise
        except Exception:
            log.exception("alert rule %s could not be evaluated", rule["id"])
    store.save_evaluation(evaluation.states, evaluation.events, evaluation.deliveries, evaluation.forget)
    check_budgets(store, evaluation)
    return evaluation


def rollup_spend(store: Store) -> Callable[[str, str, int, int, Sequence[str]], dict[str, dict[str, Any]]]:
    """Recorded spend per budget target, as `store.budget_spend` answers it, but from the rollups for
    project and user budgets (a month of a busy project's rows is too much to sum every interval);
    key budgets, which no rollup keeps, from the rows."""
    def spend(project: str, kind: str, start: int, end: int, targets: Sequence[str]) -> dict[str, dict[str, Any]]:
        if kind == "key":
            return store.budget_spend(project, kind, start, end, targets)
        query = AnalyticsQuery(start, end, ALL, None, None if kind == "project" else "user", MAX_GROUPS,
                               project=project)
        found = store.group_metrics(query, percentiles=False)
        if kind == "project":
            found = {project: found[None]} if None in found else {}
        return {target: {"spend": float(found[target]["cost"]), "unpriced_calls": int(found[target]["unpriced_requests"])}
                for target in targets if target in found and found[target]["requests"]}
    return spend


def check_budgets(store: Store, evaluation: Evaluation) -> None:
    """Notify once per period when a budget's spend reaches 80 % and 100 %."""
    budgets = store.list_budgets()
    if not budgets:
        return
    channels_of: dict[str, list[dict[str, Any]]] = {}
    for rule in store.list_alerts():
        for channel in rule["spec"]["channels"]:
            found = channels_of.setdefault(rule["project_id"], [])
            if channel not in found:
                found.append(channel)
    for shown in statuses(budgets, rollup_spend(store), now=evaluation.now / 1000):
        channels = channels_of.get(shown["project_id"], [])
        for level in BUDGET_LEVELS:
            if shown["spend"] < shown["usd"] * level / 100:
                continue
            target = shown.get("key_name") or shown.get("key") or shown.get("user") or shown["project_id"]
            name = f"budget of {shown['target']} {target}: {shown['usd']} USD per {shown['period']}"
            notification = {"rule": {"id": shown["id"], "name": name}, "kind": "budget", "state": FIRING,
                            "level": level, "metric": "cost", "value": shown["spend"],
                            "threshold": round(shown["usd"] * level / 100, 9), "comparison": "gt", "mode": "threshold",
                            "window": None, "group_by": shown["target"], "group": target,
                            "period_start": shown["period_start"], "resets_at": shown["resets_at"],
                            "project_id": shown["project_id"], "at": iso(evaluation.now),
                            "url": f"{evaluation.link_base}/alerts"}
            rows = [delivery(shown["project_id"], "budget", shown["id"], channel, render(channel, notification),
                             at=evaluation.now) for channel in channels]
            store.note_budget_level(shown["id"], shown["period_start"], level, rows)


class AlertRunner:
    """The evaluator's loop in a gateway: hold the lease, evaluate every interval, wake the sender."""

    def __init__(self, store: Store, settings: Settings, on_queued: Callable[[], None] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.on_queued = on_queued
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.leader = False
        self.evaluations = 0
        self.last_duration = 0.0
        self.edges = EdgeMemo()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.leader:     # so another gateway takes over at once; if the store is locked, it expires
            try:
                await asyncio.wait_for(asyncio.to_thread(self.store.release_lease, LEASE, self.holder), 1.0)
            except Exception:
                log.warning("could not give up the alert evaluator's lease; it expires by itself", exc_info=True)

    async def _run(self) -> None:
        interval = self.settings.alert_interval
        ttl_ms = int(interval * 1500)
        last = pruned = 0.0
        while True:
            try:
                self.leader = await asyncio.to_thread(self.store.take_lease, LEASE, self.holder, ttl_ms)
                if self.leader and time.monotonic() - last >= interval * 0.95:
                    last = time.monotonic()
                    evaluation = await asyncio.to_thread(evaluate, self.store, self.settings, None, self.edges)
                    self.evaluations += 1
                    self.last_duration = time.monotonic() - last
                    if self.on_queued is not None:
                        self.on_queued()
                    if evaluation.events:
                        log.info("alerts: %d transitions", len(evaluation.events))
                    if time.monotonic() - pruned >= PRUNE_EVERY:
                        pruned = time.monotonic()
                        before = int(time.time() * 1000) - DELIVERY_LOG_DAYS * 86_400_000
                        await asyncio.to_thread(self.store.prune_deliveries, before)
            except StoreUnavailable as exc:
                log.warning("alert evaluator: store unavailable: %s", exc)
            except Exception:
                log.exception("alert evaluation failed")
            await asyncio.sleep(interval / 2 if not self.leader else max(0.05, interval - (time.monotonic() - last)))
