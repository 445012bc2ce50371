"""Alert rules, per-request webhooks and the delivery log over the API, in the key's own project.

    POST   /v1/alerts                    a rule (admin) → 201; a webhook channel's secret is shown once
    GET    /v1/alerts                    rules with their current state (read)
    GET    /v1/alerts/{alert_id}         the rule, its states per group, history and deliveries (read)
    PUT    /v1/alerts/{alert_id}         replace the rule (admin); a secret sent back as "****" is kept
    DELETE /v1/alerts/{alert_id}         (admin)
    POST   /v1/alerts/{alert_id}/test    queue a "test" notification to each channel (admin)
    POST   /v1/webhooks                  {"url", "sample_rate", "property_filters", "include_data"} → {"id", "secret"}
    GET    /v1/webhooks                  (read; secrets never shown again)
    DELETE /v1/webhooks/{webhook_id}     (admin)
    POST   /v1/webhooks/{webhook_id}/test  (admin)
    GET    /v1/deliveries                the project's delivery log, newest first (read)

Another project's rule or webhook is a 404, exactly like an unknown one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..alerts.channels import render
from ..alerts.rules import RuleError, masked, parse_channel, parse_rule
from ..auth import KeyCache
from ..storage import Store
from ..storage.outbox import delivery
from . import ApiError, envelope, json_object, route
from .records import iso

MAX_FILTERS = 20


def _shown_rule(rule: dict[str, Any], states: list[dict[str, Any]], *, secrets: bool = False) -> dict[str, Any]:
    spec = rule["spec"] if secrets else masked(rule["spec"])
    firing = [s for s in states if s["state"] == "firing"]
    return {"id": rule["id"], "project_id": rule["project_id"], **spec,
            "state": "firing" if firing else (states[0]["state"] if len(states) == 1 else "ok"),
            "firing_groups": [s["group_key"] or None for s in firing],
            "created_at": iso(rule["created_at"]), "updated_at": iso(rule["updated_at"])}


def _state(row: dict[str, Any]) -> dict[str, Any]:
    return {"group": row["group_key"] or None, "state": row["state"], "value": row["value"],
            "baseline": row["baseline"], "requests": row["requests"], "since": iso(row["since"]),
            "evaluated_at": iso(row["evaluated_at"])}


def _delivery(row: dict[str, Any]) -> dict[str, Any]:
    shown = {k: row[k] for k in ("id", "source", "source_id", "channel", "status", "attempts", "last_status",
                                  "last_error")}
    shown |= {"created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
              "next_attempt_at": iso(row["next_at"]) if row["status"] == "pending" else None}
    try:
        body = orjson.loads(row["body"])
        shown["state"] = body.get("state") if isinstance(body, dict) else None
    except orjson.JSONDecodeError:
        shown["state"] = None
    return shown


def parse(body: dict[str, Any]) -> dict[str, Any]:
    try:
        return parse_rule(body)
    except RuleError as exc:
        raise ApiError(str(exc)) from None


def keep_secrets(body: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """The body with each webhook secret sent back masked ("****") replaced by the secret that
    webhook (same URL) had, so a rule read with GET can be changed and PUT back as it is."""
    channels = body.get("channels")
    if not isinstance(channels, list):
        return body
    secrets = {c["url"]: c["secret"] for c in old["channels"] if c["type"] == "webhook"}
    kept = []
    for channel in channels:
        if isinstance(channel, dict) and channel.get("type") == "webhook" and channel.get("secret") == "****":
            if channel.get("url") not in secrets:
                raise ApiError(f"'channels': the webhook {channel.get('url')!r} is new, so its secret cannot be \"****\".")
            channel = {**channel, "secret": secrets[channel["url"]]}
        kept.append(channel)
    return {**body, "channels": kept}


def _test_notification(rule_id: str, name: str, project: str) -> dict[str, Any]:
    at = int(time.time() * 1000)
    return {"rule": {"id": rule_id, "name": name}, "state": "test", "metric": None, "value": None,
            "threshold": None, "group": None, "project_id": project, "at": iso(at)}


def _property_filters(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, list):     # Helicone's shape: [{"key": …, "value": …}]
        if not all(isinstance(i, dict) and isinstance(i.get("key"), str) and isinstance(i.get("value"), str)
                   for i in raw):
            raise ApiError("'property_filters' must be an object of property → value, or a list of {\"key\", \"value\"}.")
        raw = {i["key"]: i["value"] for i in raw}
    if not isinstance(raw, dict) or len(raw) > MAX_FILTERS or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in raw.items()):
        raise ApiError(f"'property_filters' must be an object of at most {MAX_FILTERS} property → text value.")
    return {k.lower(): v for k, v in raw.items()}


def alert_routes(store: Store, keys: KeyCache) -> list[Route]:
    async def create(request: Request) -> Response:
        spec = parse(await json_object(request))
        rule = await asyncio.to_thread(store.create_alert, request.state.key.project_id, spec)
        return envelope(_shown_rule(rule, [], secrets=True), status=201)

    async def list_rules(request: Request) -> Response:
        project = request.state.key.project_id

        def load() -> list[dict[str, Any]]:
            states: dict[str, list[dict[str, Any]]] = {}
            for state in store.alert_states(project=project):
                states.setdefault(state["rule_id"], []).append(state)
            return [_shown_rule(rule, states.get(rule["id"], [])) for rule in store.list_alerts(project=project)]
        return envelope(await asyncio.to_thread(load))

    async def get(request: Request) -> Response:
        project, rule_id = request.state.key.project_id, request.path_params["alert_id"]

        def load() -> dict[str, Any] | None:
            rule = store.get_alert(rule_id, project=project)
            if rule is None:
                return None
            states = store.alert_states(project=project, rule_id=rule_id)
            return {**_shown_rule(rule, states), "states": [_state(s) for s in states],
                    "history": [{**e, "at": iso(e["at"]), "group": e["group_key"] or None}
                                for e in store.alert_events(rule_id, project=project)],
                    "deliveries": [_delivery(d) for d in store.list_deliveries(project=project, source_id=rule_id)]}
        found = await asyncio.to_thread(load)
        if found is None:
            raise ApiError(f"No alert {rule_id!r}.", 404)
        return envelope(found)

    async def update(request: Request) -> Response:
        project, rule_id = request.state.key.project_id, request.path_params["alert_id"]
        body = await json_object(request)
        old = await asyncio.to_thread(store.get_alert, rule_id, project=project)
        if old is None:
            raise ApiError(f"No alert {rule_id!r}.", 404)
        spec = parse(keep_secrets(body, old["spec"]))
        if not await asyncio.to_thread(store.update_alert, rule_id, spec, project=project):
            raise ApiError(f"No alert {rule_id!r}.", 404)
        rule = await asyncio.to_thread(store.get_alert, rule_id, project=project)
        assert rule is not None
        return envelope(_shown_rule(rule, []))

    async def delete(request: Request) -> Response:
        rule_id = request.path_params["alert_id"]
        if not await asyncio.to_thread(store.delete_alert, rule_id, project=request.state.key.project_id):
            raise ApiError(f"No alert {rule_id!r}.", 404)
        return envelope({"id": rule_id, "deleted": True})

    async def test(request: Request) -> Response:
        project, rule_id = request.state.key.project_id, request.path_params["alert_id"]
        rule = await asyncio.to_thread(store.get_alert, rule_id, project=project)
        if rule is None:
            raise ApiError(f"No alert {rule_id!r}.", 404)
        channels = rule["spec"]["channels"]
        which = (await json_object(request, empty_ok=True)).get("channel")
        if which is not None:
            if isinstance(which, bool) or not isinstance(which, int) or not 0 <= which < len(channels):
                raise ApiError(f"'channel' must be the index of one of the rule's {len(channels)} channels, "
                               f"got {which!r}.")
            channels = [channels[which]]
        notification = _test_notification(rule_id, rule["spec"]["name"], project)
        rows = [delivery(project, "alert", rule_id, channel, render(channel, notification)) for channel in channels]
        await asyncio.to_thread(store.enqueue_deliveries, rows)
        return envelope({"queued": [row[0] for row in rows]}, status=202)

    async def create_webhook(request: Request) -> Response:
        body = await json_object(request)
        try:
            url = parse_channel({"type": "slack", "url": body.get("url")}, "url")["url"]
        except RuleError:
            raise ApiError(f"'url' must be an http:// or https:// URL, got {body.get('url')!r}.") from None
        rate = body.get("sample_rate", 100)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 100:
            raise ApiError(f"'sample_rate' must be a percentage from 0 to 100, got {rate!r}.")
        include = body.get("include_data", True)
        if not isinstance(include, bool):
            raise ApiError(f"'include_data' must be true or false, got {include!r}.")
        filters = _property_filters(body.get("property_filters"))
        hook = await asyncio.to_thread(store.create_webhook, request.state.key.project_id, url, float(rate),
                                       filters, include)
        return envelope({**hook, "created_at": iso(hook["created_at"])}, status=201)

    async def list_webhooks(request: Request) -> Response:
        hooks = await asyncio.to_thread(store.list_webhooks, project=request.state.key.project_id)
        return envelope([{**{k: v for k, v in h.items() if k != "secret"}, "created_at": iso(h["created_at"])}
                         for h in hooks])

    async def delete_webhook(request: Request) -> Response:
        webhook_id = request.path_params["webhook_id"]
        if not await asyncio.to_thread(store.delete_webhook, webhook_id, project=request.state.key.project_id):
            raise ApiError(f"No webhook {webhook_id!r}.", 404)
        return envelope({"id": webhook_id, "deleted": True})

    async def test_webhook(request: Request) -> Response:
        project, webhook_id = request.state.key.project_id, request.path_params["webhook_id"]
        hook = await asyncio.to_thread(store.get_webhook, webhook_id, project=project)
        if hook is None:
            raise ApiError(f"No webhook {webhook_id!r}.", 404)
        payload = {"request_id": "test", "user_id": None, "model": None, "provider": None, "test": True,
                   "metadata": {"cost": None, "promptTokens": None, "completionTokens": None, "totalTokens": None,
                                "latencyMs": None}}
        row = delivery(project, "request", webhook_id, {"type": "webhook", "url": hook["url"], "secret": hook["secret"]},
                       orjson.dumps(payload))
        await asyncio.to_thread(store.enqueue_deliveries, [row])
        return envelope({"queued": [row[0]]}, status=202)

    async def deliveries(request: Request) -> Response:
        rows = await asyncio.to_thread(store.list_deliveries, project=request.state.key.project_id, limit=100)
        return envelope([_delivery(row) for row in rows])

    return [
        route(keys, "/v1/alerts", create, "POST", scope="admin"),
        route(keys, "/v1/alerts", list_rules, "GET", scope="read"),
        route(keys, "/v1/alerts/{alert_id}", get, "GET", scope="read"),
        route(keys, "/v1/alerts/{alert_id}", update, "PUT", scope="admin"),
        route(keys, "/v1/alerts/{alert_id}", delete, "DELETE", scope="admin"),
        route(keys, "/v1/alerts/{alert_id}/test", test, "POST", scope="admin"),
        route(keys, "/v1/webhooks", create_webhook, "POST", scope="admin"),
        route(keys, "/v1/webhooks", list_webhooks, "GET", scope="read"),
        route(keys, "/v1/webhooks/{webhook_id}", delete_webhook, "DELETE", scope="admin"),
        route(keys, "/v1/webhooks/{webhook_id}/test", test_webhook, "POST", scope="admin"),
        route(keys, "/v1/deliveries", deliveries, "GET", scope="read"),
    ]
