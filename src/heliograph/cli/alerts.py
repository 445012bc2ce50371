"""`heliograph alerts …` and `heliograph webhooks …`: parse options, call the library.

Rules are checked by the same function as the API's (alerts/rules.py), so the CLI refuses exactly
what a 400 would, naming the field. `alerts test` sends at once from this process and prints each
channel's outcome; a running gateway sends everything else from its outbox.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import click

from .common import _project_id, _settings, _store, store_options

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_window(text: str) -> int:
    match = _DURATION.match(text)
    if not match:
        raise click.BadParameter(f"expected seconds or a duration such as 5m, 1h, 7d; got {text!r}", param_hint="--window")
    return int(float(match.group(1)) * _SECONDS[match.group(2)])


def _open(ctx: click.Context, db_url: str | None, project: str | None) -> tuple[Any, str]:
    store = _store(ctx, db_url)
    return store, _project_id(store, project or "default")


def _line(rule: dict[str, Any], states: list[dict[str, Any]]) -> str:
    spec = rule["spec"]
    firing = [s["group_key"] or "-" for s in states if s["state"] == "firing"]
    state = f"FIRING ({', '.join(firing)})" if firing else (states[0]["state"] if len(states) == 1 else "ok")
    op = ">" if spec["comparison"] == "gt" else "<"
    limit = f"{spec['threshold']:g}× baseline" if spec["mode"] == "anomaly" else f"{spec['threshold']:g}"
    group = f" by {spec['group_by']}" if spec["group_by"] else ""
    channels = ", ".join(c["type"] for c in spec["channels"]) or "no channels"
    return f"{spec['name']}: {spec['metric']} {op} {limit} over {spec['window']} s{group} → {channels} [{state}]"


@click.group()
def alerts() -> None:
    """Alert rules on error rate, cost, volume, tokens, latency, TTFT and cache hits (threshold or anomaly)."""


@alerts.command("create")
@click.option("--name", required=True)
@click.option("--metric", required=True, help="error_rate, cost, request_count, tokens, latency_p50|p95|p99, "
                                             "ttft_p50|p95|p99, cache_hit_rate.")
@click.option("--threshold", type=float, required=True, help="In the metric's unit (percent, USD, ms); anomaly: a factor.")
@click.option("--window", required=True, help="Seconds, or 5m, 1h, 7d (1 minute to 30 days).")
@click.option("--comparison", type=click.Choice(["gt", "lt"]), default="gt", show_default=True)
@click.option("--min-requests", type=int, default=0, show_default=True)
@click.option("--filter", "filter_json", help="The query API's filter tree, as JSON.")
@click.option("--group-by", help="model, provider, user, request_name or property:<key>.")
@click.option("--mode", type=click.Choice(["threshold", "anomaly"]), default="threshold", show_default=True)
@click.option("--webhook", "webhooks", multiple=True, help="A webhook URL (signed; repeatable).")
@click.option("--secret", help="The webhooks' signing secret [generated].")
@click.option("--slack", "slacks", multiple=True, help="A Slack incoming-webhook URL (repeatable).")
@click.option("--email", "emails", multiple=True, help="An email address (repeatable; SMTP from the settings).")
@store_options()
def alerts_create(ctx: click.Context, name: str, metric: str, threshold: float, window: str, comparison: str,
                  min_requests: int, filter_json: str | None, group_by: str | None, mode: str,
                  webhooks: tuple[str, ...], secret: str | None, slacks: tuple[str, ...], emails: tuple[str, ...],
                  project: str | None, db_url: str | None) -> None:
    """Create a rule; prints its id alone on the last line."""
    from ..alerts.rules import RuleError, parse_rule
    channels: list[dict[str, Any]] = [{"type": "webhook", "url": url, **({"secret": secret} if secret else {})}
                                      for url in webhooks]
    channels += [{"type": "slack", "url": url} for url in slacks]
    if emails:
        channels.append({"type": "email", "to": list(emails)})
    raw: dict[str, Any] = {"name": name, "metric": metric, "threshold": threshold, "window": parse_window(window),
                           "comparison": comparison, "min_requests": min_requests, "group_by": group_by,
                           "mode": mode, "channels": channels}
    if filter_json:
        try:
            raw["filter"] = json.loads(filter_json)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--filter") from None
    try:
        spec = parse_rule(raw)
    except RuleError as exc:
        raise click.ClickException(str(exc)) from None
    store, project_id = _open(ctx, db_url, project)
    rule = store.create_alert(project_id, spec)
    click.echo(_line(rule, []))
    for channel in rule["spec"]["channels"]:
        if channel["type"] == "webhook":
            click.echo(f"webhook {channel['url']} secret (shown once): {channel['secret']}")
    click.echo(rule["id"])


@alerts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@store_options()
def alerts_list(ctx: click.Context, project: str | None, db_url: str | None, as_json: bool) -> None:
    """Rules with their current state."""
    from ..alerts.rules import masked
    store, project_id = _open(ctx, db_url, project)
    rules = store.list_alerts(project=project_id)
    states: dict[str, list[dict[str, Any]]] = {}
    for state in store.alert_states(project=project_id):
        states.setdefault(state["rule_id"], []).append(state)
    if as_json:
        click.echo(json.dumps([{**r, "spec": masked(r["spec"]), "states": states.get(r["id"], [])} for r in rules]))
        return
    if not rules:
        click.echo("No alert rules. Create one with: heliograph alerts create --name errors --metric error_rate "
                   "--threshold 5 --window 5m --webhook https://…")
    for rule in rules:
        click.echo(f"{rule['id']}  {_line(rule, states.get(rule['id'], []))}")


@alerts.command("show")
@click.argument("rule_id")
@store_options()
def alerts_show(ctx: click.Context, rule_id: str, project: str | None, db_url: str | None) -> None:
    """A rule, its state per group, its history and its deliveries, as JSON."""
    from ..alerts.rules import masked
    store, project_id = _open(ctx, db_url, project)
    rule = store.get_alert(rule_id, project=project_id)
    if rule is None:
        raise click.ClickException(f"no alert {rule_id!r} in project {project_id} (see 'heliograph alerts list')")
    click.echo(json.dumps({**rule, "spec": masked(rule["spec"]), "states": store.alert_states(rule_id=rule_id),
                           "history": store.alert_events(rule_id, project=project_id),
                           "deliveries": store.list_deliveries(project=project_id, source_id=rule_id)}, indent=2))


@alerts.command("delete")
@click.argument("rule_id")
@store_options()
def alerts_delete(ctx: click.Context, rule_id: str, project: str | None, db_url: str | None) -> None:
    store, project_id = _open(ctx, db_url, project)
    if not store.delete_alert(rule_id, project=project_id):
        raise click.ClickException(f"no alert {rule_id!r} in project {project_id}")
    click.echo(f"Deleted alert {rule_id}.")


@alerts.command("test")
@click.argument("rule_id")
@store_options()
def alerts_test(ctx: click.Context, rule_id: str, project: str | None, db_url: str | None) -> None:
    """Send a notification with state "test" to each channel now, and print what each answered."""
    from ..alerts.channels import render
    from ..alerts.delivery import DeliveryWorker
    store, project_id = _open(ctx, db_url, project)
    rule = store.get_alert(rule_id, project=project_id)
    if rule is None:
        raise click.ClickException(f"no alert {rule_id!r} in project {project_id}")
    notification = {"rule": {"id": rule_id, "name": rule["spec"]["name"]}, "state": "test", "metric": None,
                    "value": None, "threshold": None, "group": None, "project_id": project_id,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    worker = DeliveryWorker(store, _settings(ctx, db_url=db_url))

    async def send_all() -> list[Any]:
        try:
            return [await worker.send(c, render(c, notification)) for c in rule["spec"]["channels"]]
        finally:
            await worker.close()
    outcomes = asyncio.run(send_all())
    failed = False
    for channel, outcome in zip(rule["spec"]["channels"], outcomes):
        where = channel.get("url") or ", ".join(channel.get("to", []))
        click.echo(f"{channel['type']} {where}: {'ok' if outcome.ok else 'FAILED'} "
                   f"{outcome.status or ''} {outcome.error or ''}".rstrip())
        failed |= not outcome.ok
    if not outcomes:
        click.echo("This rule has no channels.")
    if failed:
        raise SystemExit(1)


@alerts.command("evaluate")
@click.option("--db", "db_url", help="Database URL.")
@click.option("--dry-run", is_flag=True, help="Compute, print, and store nothing.")
@click.pass_context
def alerts_evaluate(ctx: click.Context, db_url: str | None, dry_run: bool) -> None:
    """Evaluate every rule once now (what a gateway does every alert_interval) and print the time taken."""
    from ..alerts.evaluator import Evaluation, evaluate
    settings = _settings(ctx, db_url=db_url)
    store = _store(ctx, db_url)
    started = time.perf_counter()
    if dry_run:
        evaluation = Evaluation(store, settings, int(time.time() * 1000))
        known: dict[str, dict[str, dict[str, Any]]] = {}
        for state in store.alert_states():
            known.setdefault(state["rule_id"], {})[state["group_key"]] = state
        rules = [r for r in store.list_alerts() if r["spec"].get("enabled", True)]
        for rule in rules:
            evaluation.rule(rule, known.get(rule["id"], {}))
    else:
        rules = store.list_alerts()
        evaluation = evaluate(store, settings)
    took = time.perf_counter() - started
    for event in evaluation.events:
        click.echo(f"{event['rule_id']} [{event['group_key'] or '-'}] → {event['state']} (value {event['value']})")
    click.echo(f"Evaluated {len(rules)} rules in {took * 1000:.0f} ms: {len(evaluation.events)} transitions, "
               f"{len(evaluation.deliveries)} notifications{' (dry run: nothing stored)' if dry_run else ' queued'}.")


@click.group()
def webhooks() -> None:
    """Per-request webhooks: a signed POST after each recorded request (Helicone's payload)."""


@webhooks.command("create")
@click.option("--url", required=True)
@click.option("--sample-rate", type=click.FloatRange(0, 100), default=100, show_default=True, help="Percent.")
@click.option("--property", "properties", multiple=True, help="KEY=VALUE the request must have (repeatable).")
@click.option("--no-data", is_flag=True, help="Leave the request and response bodies out.")
@store_options()
def webhooks_create(ctx: click.Context, url: str, sample_rate: float, properties: tuple[str, ...], no_data: bool,
                    project: str | None, db_url: str | None) -> None:
    """Create a webhook; prints its secret, then its id alone on the last line."""
    from ..alerts.rules import RuleError, parse_channel
    try:
        parse_channel({"type": "slack", "url": url}, "url")
    except RuleError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    filters = {}
    for item in properties:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--property")
        filters[key.lower()] = value
    store, project_id = _open(ctx, db_url, project)
    hook = store.create_webhook(project_id, url, sample_rate, filters, not no_data)
    click.echo(f"secret (shown once): {hook['secret']}")
    click.echo(hook["id"])


@webhooks.command("list")
@store_options()
def webhooks_list(ctx: click.Context, project: str | None, db_url: str | None) -> None:
    store, project_id = _open(ctx, db_url, project)
    for hook in store.list_webhooks(project=project_id):
        filters = " ".join(f"{k}={v}" for k, v in hook["property_filters"].items())
        click.echo(f"{hook['id']}  {hook['url']}  {hook['sample_rate']:g} %  {filters}"
                   f"{'' if hook['include_data'] else '  (no bodies)'}".rstrip())


@webhooks.command("delete")
@click.argument("webhook_id")
@store_options()
def webhooks_delete(ctx: click.Context, webhook_id: str, project: str | None, db_url: str | None) -> None:
    store, project_id = _open(ctx, db_url, project)
    if not store.delete_webhook(webhook_id, project=project_id):
        raise click.ClickException(f"no webhook {webhook_id!r} in project {project_id}")
    click.echo(f"Deleted webhook {webhook_id}.")
