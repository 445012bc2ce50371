"""/alerts: the project's rules with their state, per-request webhooks and the delivery log;
/alerts/{id}: a rule's states per group, history, deliveries, and (admin) edit, send test, delete.

Reading needs `read`; every form needs `admin` and the session's CSRF token. Rules from the form
are checked by the API's own function (alerts/rules.py), so the same field is named on a mistake.
A webhook channel's secret is shown once, on the page answering its creation.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..alerts.channels import render as render_body
from ..alerts.rules import GROUPS, METRICS, RuleError, masked, parse_rule
from ..storage.outbox import delivery
from .web import Ctx, Dashboard, message, render, view

_WINDOWS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _window(text: str) -> Any:
    text = text.strip()
    if text[-1:] in _WINDOWS and text[:-1].strip().isdigit():
        return int(text[:-1]) * _WINDOWS[text[-1]]
    return int(text) if text.isdigit() else text


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def rule_from_form(form: FormData, old: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rule the form describes, checked; RuleError naming the field otherwise."""
    channels: list[dict[str, Any]] = []
    url = str(form.get("webhook_url") or "").strip()
    if url:
        secret = str(form.get("webhook_secret") or "").strip()
        if not secret and old is not None:       # left blank on edit: keep the secret it had
            secret = next((c["secret"] for c in old["channels"] if c["type"] == "webhook" and c["url"] == url), "")
        channels.append({"type": "webhook", "url": url, **({"secret": secret} if secret else {})})
    if slack := str(form.get("slack_url") or "").strip():
        channels.append({"type": "slack", "url": slack})
    if emails := [a.strip() for a in str(form.get("email_to") or "").replace(";", ",").split(",") if a.strip()]:
        channels.append({"type": "email", "to": emails})
    if old is not None:
        # The form shows the first channel of each type (the API can add more): keep the others.
        shown: set[str] = set()
        for channel in old["channels"]:
            if channel["type"] in shown:
                channels.append(channel)
            shown.add(channel["type"])
    raw_filter: Any = "all"
    if text := str(form.get("filter") or "").strip():
        try:
            raw_filter = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RuleError(f"'filter' is not JSON: {exc}") from None
    group = str(form.get("group_by") or "").strip()
    min_requests = str(form.get("min_requests") or "0").strip()
    return parse_rule({
        "name": str(form.get("name") or ""), "metric": str(form.get("metric") or ""),
        "threshold": _number(str(form.get("threshold") or "")), "window": _window(str(form.get("window") or "")),
        "comparison": str(form.get("comparison") or "gt"), "mode": str(form.get("mode") or "threshold"),
        "min_requests": int(min_requests) if min_requests.isdigit() else min_requests,
        "group_by": group or None, "filter": raw_filter, "channels": channels,
        "enabled": form.get("enabled", "on") == "on"})


def _summary(rule: dict[str, Any], states: list[dict[str, Any]]) -> dict[str, Any]:
    firing = [s["group_key"] or None for s in states if s["state"] == "firing"]
    state = "firing" if firing else (states[0]["state"] if len(states) == 1 else "ok")
    value = states[0]["value"] if len(states) == 1 else None
    return {**rule, "spec": masked(rule["spec"]), "state": state, "firing": firing, "value": value}


def _shown_delivery(row: dict[str, Any]) -> dict[str, Any]:
    try:
        body = json.loads(row["body"])
    except ValueError:
        body = {}
    return {**row, "state": body.get("state") if isinstance(body, dict) else None}


async def _list(request: Request, ctx: Ctx, *, error: str = "", created: dict[str, Any] | None = None,
                status_code: int = 200) -> Response:
    def load() -> dict[str, Any]:
        states: dict[str, list[dict[str, Any]]] = {}
        for state in ctx.store.alert_states(project=ctx.project):
            states.setdefault(state["rule_id"], []).append(state)
        return {"rules": [_summary(r, states.get(r["id"], [])) for r in ctx.store.list_alerts(project=ctx.project)],
                "webhooks": ctx.store.list_webhooks(project=ctx.project),
                "deliveries": [_shown_delivery(d) for d in ctx.store.list_deliveries(project=ctx.project, limit=50)]}
    data = await ctx.call(load)
    form = dict(await request.form()) if request.method == "POST" and error else {}
    return render(request, ctx, "alerts.html", status_code, **data, metrics=METRICS, groups=GROUPS, error=error,
                  created=created, form=form)


@view("read")
async def alerts_page(request: Request, ctx: Ctx) -> Response:
    return await _list(request, ctx)


@view("admin")
async def create(request: Request, ctx: Ctx) -> Response:
    try:
        spec = rule_from_form(await request.form())
    except RuleError as exc:
        return await _list(request, ctx, error=f"Not created: {exc}", status_code=400)
    rule = await ctx.call(ctx.store.create_alert, ctx.project, spec)
    return await _list(request, ctx, created=rule)


async def _detail(request: Request, ctx: Ctx, rule_id: str, *, error: str = "", notice: str = "",
                  status_code: int = 200) -> Response:
    def load() -> dict[str, Any] | None:
        rule = ctx.store.get_alert(rule_id, project=ctx.project)
        if rule is None:
            return None
        states = ctx.store.alert_states(project=ctx.project, rule_id=rule_id)
        return {"rule": _summary(rule, states), "states": states,
                "history": ctx.store.alert_events(rule_id, project=ctx.project),
                "deliveries": [_shown_delivery(d) for d in ctx.store.list_deliveries(project=ctx.project,
                                                                                      source_id=rule_id)]}
    data = await ctx.call(load)
    if data is None:
        return message(request, ctx, "No such alert", f"This project has no alert {rule_id}.", 404)
    return render(request, ctx, "alert.html", status_code, **data, metrics=METRICS, groups=GROUPS, error=error,
                  notice=notice, filter_json=json.dumps(data["rule"]["spec"]["filter"]))


@view("read")
async def detail(request: Request, ctx: Ctx) -> Response:
    return await _detail(request, ctx, request.path_params["rule_id"])


@view("admin")
async def update(request: Request, ctx: Ctx) -> Response:
    rule_id = request.path_params["rule_id"]
    old = await ctx.call(ctx.store.get_alert, rule_id, project=ctx.project)
    if old is None:
        return message(request, ctx, "No such alert", f"This project has no alert {rule_id}.", 404)
    try:
        spec = rule_from_form(await request.form(), old["spec"])
    except RuleError as exc:
        return await _detail(request, ctx, rule_id, error=f"Not saved: {exc}", status_code=400)
    await ctx.call(ctx.store.update_alert, rule_id, spec, project=ctx.project)
    return RedirectResponse(f"/alerts/{rule_id}", status_code=303)


@view("admin")
async def delete(request: Request, ctx: Ctx) -> Response:
    await ctx.call(ctx.store.delete_alert, request.path_params["rule_id"], project=ctx.project)
    return RedirectResponse("/alerts", status_code=303)


@view("admin")
async def test(request: Request, ctx: Ctx) -> Response:
    rule_id = request.path_params["rule_id"]
    rule = await ctx.call(ctx.store.get_alert, rule_id, project=ctx.project)
    if rule is None:
        return message(request, ctx, "No such alert", f"This project has no alert {rule_id}.", 404)
    notification = {"rule": {"id": rule_id, "name": rule["spec"]["name"]}, "state": "test", "metric": None,
                    "value": None, "threshold": None, "group": None, "project_id": ctx.project}
    channels = rule["spec"]["channels"]
    which = str((await request.form()).get("channel") or "")
    if which.isdigit() and int(which) < len(channels):
        channels = [channels[int(which)]]
    rows = [delivery(ctx.project, "alert", rule_id, c, render_body(c, notification)) for c in channels]
    await ctx.call(ctx.store.enqueue_deliveries, rows)
    return await _detail(request, ctx, rule_id, notice=f"Test queued to {len(rows)} channel(s); the delivery log "
                                                       "below shows each answer (reload in a moment).")


@view("admin")
async def create_webhook(request: Request, ctx: Ctx) -> Response:
    form = await request.form()
    url = str(form.get("url") or "").strip()
    try:
        rate = float(str(form.get("sample_rate") or "100"))
    except ValueError:
        rate = -1
    filters: dict[str, str] = {}
    for line in str(form.get("property_filters") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            filters[key.strip().lower()] = value.strip()
    if not url.startswith(("http://", "https://")) or not 0 <= rate <= 100:
        return await _list(request, ctx, error="Webhook not created: 'url' must be an http(s) URL and "
                                               "'sample_rate' a percentage from 0 to 100.", status_code=400)
    hook = await ctx.call(ctx.store.create_webhook, ctx.project, url, rate, filters, form.get("include_data") == "on")
    return await _list(request, ctx, created={"webhook": hook})


@view("admin")
async def delete_webhook(request: Request, ctx: Ctx) -> Response:
    await ctx.call(ctx.store.delete_webhook, request.path_params["webhook_id"], project=ctx.project)
    return RedirectResponse("/alerts", status_code=303)


def routes(dashboard: Dashboard) -> list[BaseRoute]:
    return [
        Route("/alerts", alerts_page),
        Route("/alerts/create", create, methods=["POST"]),
        Route("/alerts/webhooks/create", create_webhook, methods=["POST"]),
        Route("/alerts/webhooks/{webhook_id}/delete", delete_webhook, methods=["POST"]),
        Route("/alerts/{rule_id}", detail),
        Route("/alerts/{rule_id}/edit", update, methods=["POST"]),
        Route("/alerts/{rule_id}/delete", delete, methods=["POST"]),
        Route("/alerts/{rule_id}/test", test, methods=["POST"]),
    ]
