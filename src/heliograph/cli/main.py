"""`heliograph` command line: noun-verb commands that parse options and call the library."""

from __future__ import annotations

import ipaddress
import json
import sys
from datetime import datetime, timezone
from typing import Any

import click

from .. import __version__
from ..settings import BY_NAME, SETTINGS, Settings, describe_store
from .prompts import prompts as prompts_group
from .alerts import alerts, webhooks
from .common import _project_id, _settings, _store

LOOPBACK_NAMES = ("localhost",)


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _settings_epilog() -> str:
    """Every setting with its variable and default, from the settings table (`\b`: click keeps the lines)."""
    lines = ["Every setting (command line > environment > config file > default):", ""]
    for s in SETTINGS:
        default = s.default if not isinstance(s.default, tuple) else ",".join(s.default)
        shown = "****" if s.secret and default else (default if default != "" else "(none)")
        lines += ["\b", f"{s.name}  {s.env}  [default: {shown}]", "  " + s.help.split(". ")[0].rstrip(".") + "."]
    lines += ["\b", "HELIOGRAPH_UPSTREAM_<PROVIDER>=<origin>, HELIOGRAPH_PROVIDER_KEY_<PROVIDER>=<key>, "
              "and [upstreams], [provider_keys], [prices.\"model\"] in the config file."]
    return "\n".join(lines)


@click.group()
@click.version_option(__version__, "--version", "-V", prog_name="heliograph", message="%(prog)s %(version)s")
@click.option("--config", type=click.Path(dir_okay=False), envvar="HELIOGRAPH_CONFIG",
              help="TOML config file.")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """Heliograph: an LLM observability gateway."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


def _help(name: str) -> str:
    """An option's help from the settings table: its first sentence, the variable and the default."""
    setting = BY_NAME[name]
    default = setting.default if setting.default != "" else "none"
    return f"{setting.help.split('. ')[0].rstrip('.')}. [{setting.env}; default: {default}]"


@main.command(epilog=_settings_epilog())
@click.option("--host", help=_help("host"))
@click.option("--port", metavar="PORT", help=_help("port"))
@click.option("--db", "db_url", help=_help("db_url"))
@click.option("--redis", "redis_url", help=_help("redis_url"))
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file [HELIOGRAPH_CONFIG].")
@click.option("--workers", metavar="N", help=_help("workers"))
@click.option("--log-format", "log_format", type=click.Choice(["text", "json"]), help=_help("log_format"))
@click.pass_context
def serve(ctx: click.Context, /, config_file: str | None, **cli: Any) -> None:
    """Run the gateway, the API and the ops endpoints."""
    if config_file:
        ctx.obj["config"] = config_file
    settings = _settings(ctx, **cli)
    check_serve_settings(settings)
    from ..server import run
    run(settings)


def check_serve_settings(settings: Settings) -> None:
    if settings.workers != 1 and not settings.redis_url:
        raise click.UsageError(
            f"--workers {settings.workers} needs shared state: pass --redis redis://host:port/0 "
            "(or set HELIOGRAPH_REDIS_URL), or run one worker.")
    if settings.workers < 1:
        raise click.UsageError("--workers must be at least 1.")
    if settings.allow_unauthenticated and not _is_loopback(settings.host):
        raise click.UsageError(
            f"HELIOGRAPH_ALLOW_UNAUTHENTICATED only works on a loopback address, not {settings.host}: "
            "anyone who can reach the port could spend your provider keys.")


@main.group()
def keys() -> None:
    """Create, list and revoke the keys clients send in Helicone-Auth."""


@keys.command("create")
@click.option("--name", required=True, help="A name to recognise the key by.")
@click.option("--project", help="The project (id or name) the key belongs to [default].")
@click.option("--scope", type=click.Choice(["proxy", "read", "admin"]), default="proxy", show_default=True,
              help="proxy: send traffic and log; read: also read every /api route; admin: also manage keys, "
                   "projects, budgets, provider keys and erasure.")
@click.option("--expires", help="When the key stops working: 30d, 12h, 2w, or an ISO date [never].")
@click.option("--db", "db_url", help="Database URL.")
@click.pass_context
def keys_create(ctx: click.Context, name: str, project: str | None, scope: str, expires: str | None,
                db_url: str | None) -> None:
    """Create a key; the key itself is printed once, alone on the last line."""
    from ..keys import AccessError, create_key
    store = _store(ctx, db_url)
    try:
        new = create_key(store, name, project=project, scope=scope, expires=expires)
    except AccessError as exc:
        raise click.ClickException(str(exc)) from None
    until = f", expires {_when(new.expires_at)}" if new.expires_at else ""
    click.echo(f"Created {new.scope} key {new.id} ({new.name}) in project {new.project_id}{until}, in "
               f"the store {describe_store(_settings(ctx, db_url=db_url).db_url)}.")
    click.echo("It is shown only once; send it as 'Helicone-Auth: Bearer <key>':")
    click.echo(new.key)


@keys.command("list")
@click.option("--db", "db_url", help="Database URL.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def keys_list(ctx: click.Context, db_url: str | None, as_json: bool) -> None:
    """List keys (never the secrets)."""
    rows = _store(ctx, db_url).list_keys()
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("No keys. Create one with: heliograph keys create --name my-app")
    for row in rows:
        state = "revoked " + _when(row["revoked_at"]) if row["revoked_at"] else "active"
        if not row["revoked_at"] and row["expires_at"]:
            state = f"expires {_when(row['expires_at'])}"
        click.echo(f"{row['id']}  {row['name']:<20} {row['prefix']}…  {row['scope']:<5}  project {row['project_id']}"
                   f"  created {_when(row['created_at'])}  {state}")


@keys.command("revoke")
@click.argument("key")
@click.option("--db", "db_url", help="Database URL.")
@click.pass_context
def keys_revoke(ctx: click.Context, key: str, db_url: str | None) -> None:
    """Revoke a key by id or name; a running gateway refuses it within seconds."""
    if _store(ctx, db_url).revoke_key(key) == 0:
        raise click.ClickException(f"no active key with id or name {key!r}")
    click.echo(f"Revoked {key}.")


@main.group()
def projects() -> None:
    """Projects: every key, record and budget belongs to one; `default` exists from the start."""


@projects.command("create")
@click.argument("name")
@click.option("--db", "db_url", help="Database URL.")
@click.pass_context
def projects_create(ctx: click.Context, name: str, db_url: str | None) -> None:
    """Create a project; then give it keys with 'heliograph keys create --project NAME'."""
    from ..keys import AccessError, create_project
    try:
        project_id = create_project(_store(ctx, db_url), name)
    except AccessError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Created project {name} ({project_id}). Next: heliograph keys create --name my-app --project '{name}'")


@projects.command("list")
@click.option("--db", "db_url", help="Database URL.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def projects_list(ctx: click.Context, db_url: str | None, as_json: bool) -> None:
    """List projects."""
    rows = _store(ctx, db_url).list_projects()
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(f"{row['id']:<18} {row['name']}")


@projects.command("rename")
@click.argument("project")
@click.argument("new_name")
@click.option("--db", "db_url", help="Database URL.")
@click.pass_context
def projects_rename(ctx: click.Context, project: str, new_name: str, db_url: str | None) -> None:
    """Rename a project (by id or name); its id, keys and data stay."""
    from ..keys import AccessError, rename_project
    try:
        project_id = rename_project(_store(ctx, db_url), project, new_name)
    except AccessError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Project {project_id} is now called {new_name}.")


@main.command()
@click.option("--port", type=int, help="Port of the gateway [8787]; a free one is used when it is taken.")
@click.option("--db", "db_url", help="Database URL [sqlite:///.heliograph/heliograph.db].")
@click.option("--requests", "count", type=click.IntRange(min=1), default=300, show_default=True,
              help="How many requests to send.")
@click.option("--exit", "exit_after", is_flag=True, help="Stop once the traffic is sent and recorded.")
@click.pass_context
def demo(ctx: click.Context, port: int | None, db_url: str | None, count: int, exit_after: bool) -> None:
    """Run the gateway against a built-in fake LLM provider and send it realistic traffic.

    Exits non-zero unless every request went through this gateway and was recorded."""
    from ..demo import run_demo
    settings = _settings(ctx, db_url=db_url, port=port)
    run_demo(settings, count, exit_after)


@main.group()
def config() -> None:
    """Inspect the resolved configuration."""


@config.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print every setting as resolved (CLI > env > file > default), secrets masked."""
    click.echo(json.dumps(_settings(ctx).masked(), indent=2, default=list))


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("migrate")
@click.option("--db", "db_url", help="Database URL.")
@click.pass_context
def db_migrate(ctx: click.Context, db_url: str | None) -> None:
    """Apply pending migrations (serve does this at start too)."""
    from ..storage import open_store
    store = open_store(_settings(ctx, db_url=db_url).db_url)
    applied = store.migrate()
    click.echo("Applied: " + ", ".join(applied) if applied else "Up to date.")


@db.command("generate")
@click.option("--rows", type=click.IntRange(min=1), required=True, help="How many records to write.")
@click.option("--project", default="default", show_default=True, help="The project (id or name) they belong to.")
@click.option("--db", "db_url", help="Database URL.")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Spread the records evenly over this many days before now.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same records).")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Records per transaction.")
@click.pass_context
def db_generate(ctx: click.Context, rows: int, project: str, db_url: str | None, days: float, seed: int,
                batch_size: int) -> None:
    """Write synthetic records (benchmarks, demos) through the recorder's insert path, rollups included."""
    from ..synthetic import generate
    store = _store(ctx, db_url)
    project_id = _project_id(store, project)
    step = max(batch_size, rows // 20)

    def progress(written: int) -> None:
        if written % step < batch_size or written == rows:
            click.echo(f"  {written:,} / {rows:,}", err=True)

    result = generate(store, rows, days=days, seed=seed, batch_size=batch_size, progress=progress, project=project_id)
    click.echo(f"Wrote {result.rows:,} records in {result.seconds:.1f} s ({result.rows_per_second:,.0f} records/s).")


@db.command("prune")
@click.option("--db", "db_url", help="Database URL.")
@click.option("--body-days", "body_retention_days", type=float,
              help="Keep bodies this many days (0: forever) [body_retention_days].")
@click.option("--metrics-days", "metrics_retention_days", type=float,
              help="Keep request rows this many days (0: forever) [metrics_retention_days].")
@click.pass_context
def db_prune(ctx: click.Context, /, db_url: str | None, **cli: Any) -> None:
    """One retention pass now (a running gateway does this every few minutes); prints what went."""
    from ..retention import describe
    settings = _settings(ctx, db_url=db_url, **cli)
    result = _store(ctx, db_url).prune(body_days=settings.body_retention_days,
                                       metrics_days=settings.metrics_retention_days)
    click.echo(describe(result, settings.body_retention_days, settings.metrics_retention_days))


@main.group("requests")
def requests_() -> None:
    """The recorded requests."""


@requests_.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--filter", "filter_json", help="Helicone filter tree (JSON), as POST /api/v1/request/query takes.")
@click.option("--since", help="Requests at or after this ISO 8601 time.")
@click.option("--until", help="Requests before this ISO 8601 time.")
@click.option("--user", help="Requests of this user id.")
@click.option("--model", help="Requests for this model.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many (oldest first).")
@click.option("--with-bodies", is_flag=True, help="Include request and response bodies.")
@click.option("--project", default="default", show_default=True, help="Export this project's requests (id or name).")
@click.option("--db", "db_url", help="Database URL.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file [stdout].")
@click.pass_context
def requests_export(ctx: click.Context, fmt: str, filter_json: str | None, since: str | None, until: str | None,
                    user: str | None, model: str | None, limit: int | None, with_bodies: bool, project: str,
                    db_url: str | None, output: str | None) -> None:
    """Stream recorded requests as JSON Lines or CSV, oldest first, any number of them."""
    from ..export import Format, build_filter, export
    from ..storage import FilterError
    try:
        node = build_filter(filter_json, since=since, until=until, user=user, model=model)
    except FilterError as exc:
        raise click.UsageError(str(exc)) from None
    store = _store(ctx, db_url)
    project_id = _project_id(store, project)
    kind: Format = "csv" if fmt == "csv" else "jsonl"
    if output:
        with open(output, "wb") as out:
            count = export(store, out, kind, node, project=project_id, with_bodies=with_bodies, limit=limit)
    else:
        stdout = sys.stdout.buffer
        try:
            count = export(store, stdout, kind, node, project=project_id, with_bodies=with_bodies, limit=limit)
            stdout.flush()
        except BrokenPipeError:     # `… | head`: the reader has what it wanted
            sys.stderr.close()
            return
    click.echo(f"Exported {count} requests.", err=True)


@main.group()
def users() -> None:
    """End users (Helicone-User-Id)."""


@users.command("erase")
@click.argument("user_id")
@click.option("--project", default="default", show_default=True,
              help="The project (id or name) whose user this is; the same id elsewhere is left alone.")
@click.option("--db", "db_url", help="Database URL.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def users_erase(ctx: click.Context, user_id: str, project: str, db_url: str | None, as_json: bool) -> None:
    """Delete everything recorded about USER_ID in a project (GDPR erasure); audited under a hash of the id."""
    store = _store(ctx, db_url)
    erasure = store.erase_user(user_id, project=_project_id(store, project), actor="cli")
    if as_json:
        click.echo(json.dumps({"subject": erasure.subject, "deleted": erasure.deleted}))
        return
    click.echo(f"Erased user (audit subject {erasure.subject}): {sum(erasure.deleted.values())} rows.")
    for table, count in erasure.deleted.items():
        click.echo(f"  {table:<24} {count}")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


@main.group()
def budgets() -> None:
    """USD per day, week or month (UTC) on a key, a project or a user: over it, calls get a 429."""


@budgets.command("set")
@click.option("--key", help="The key (id or name) the budget is for.")
@click.option("--project", help="The project (id or name) the budget is for; with --user or --key, the project "
                                "they are in [default for --user].")
@click.option("--user", help="The user id (Helicone-User-Id, else the body's `user`) the budget is for.")
@click.option("--usd", required=True, help="The amount in USD, more than 0.")
@click.option("--per", "period", type=click.Choice(["day", "week", "month"]), required=True,
              help="The period, in UTC; a week starts on Monday 00:00.")
@click.option("--db", "db_url", help="Database URL.")
@click.pass_context
def budgets_set(ctx: click.Context, key: str | None, project: str | None, user: str | None, usd: str, period: str,
                db_url: str | None) -> None:
    """Set a budget (again: replace its amount); running gateways enforce it within 5 s."""
    from ..budgets import BudgetError, parse_usd, resolve_key, statuses
    if key is not None and user is not None:
        raise click.UsageError("give --key or --user, not both")
    if key is None and user is None and project is None:
        raise click.UsageError("give what the budget is for: --key NAME_OR_ID, --project P or --user ID [--project P]")
    try:
        amount = parse_usd(usd)
    except BudgetError as exc:
        raise click.BadParameter(str(exc), param_hint="--usd") from None
    store = _store(ctx, db_url)
    project_id = _project_id(store, project or "default") if project is not None or user is not None else None
    if key is not None:
        try:
            found = resolve_key(store.list_keys(project=project_id), key)
        except BudgetError as exc:
            raise click.ClickException(f"{exc}{f' in project {project}' if project else ''} "
                                       "(see 'heliograph keys list')") from None
        kind, target, project_id = "key", str(found["id"]), str(found["project_id"])
    elif user is not None:
        if not user.strip():
            raise click.BadParameter("a user id cannot be empty", param_hint="--user")
        kind, target = "user", user
    else:
        kind, target = "project", str(project_id)
    assert project_id is not None
    shown = statuses([store.set_budget(project_id, kind, target, amount, period)], store.budget_spend)[0]
    click.echo(f"Budget {shown['id']}: {_budget_line(shown)}.")
    click.echo("Running gateways enforce it within 5 s.")


@budgets.command("list")
@click.option("--project", help="Only this project's budgets (id or name) [all].")
@click.option("--db", "db_url", help="Database URL.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def budgets_list(ctx: click.Context, project: str | None, db_url: str | None, as_json: bool) -> None:
    """Budgets with the spend recorded this period, what remains, when each resets, and unpriced calls."""
    from ..budgets import statuses
    store = _store(ctx, db_url)
    project_id = _project_id(store, project) if project is not None else None
    shown = statuses(store.list_budgets(project=project_id), store.budget_spend)
    if as_json:
        click.echo(json.dumps(shown))
        return
    if not shown:
        click.echo("No budgets. Set one with: heliograph budgets set --project default --usd 50 --per month")
    for budget in shown:
        click.echo(f"{budget['id']}  {_budget_line(budget)}")


@budgets.command("delete")
@click.argument("budget_id")
@click.option("--db", "db_url", help="Database URL.")
@click.pass_context
def budgets_delete(ctx: click.Context, budget_id: str, db_url: str | None) -> None:
    """Delete a budget by id ('heliograph budgets list' shows them)."""
    if not _store(ctx, db_url).delete_budget(budget_id):
        raise click.ClickException(f"no budget {budget_id!r} (see 'heliograph budgets list')")
    click.echo(f"Deleted budget {budget_id}; running gateways stop enforcing it within 5 s.")


def _budget_line(budget: dict[str, Any]) -> str:
    from ..budgets import usd_text
    project = f"project {budget['project_id']}"
    if budget["target"] == "key":
        key = f"{budget['key_name']} ({budget['key']})" if budget["key_name"] else budget["key"]
        target = f"key {key} in {project}"
    else:
        target = f"user {budget['user']!r} in {project}" if budget["target"] == "user" else project
    unpriced = f", {budget['unpriced_calls']} unpriced calls" if budget["unpriced_calls"] else ""
    return (f"${usd_text(budget['usd'])} per {budget['period']} on {target}: "
            f"spent ${budget['spend']:.6f}, ${budget['remaining']:.6f} left, resets {budget['resets_at']}{unpriced}")



@main.group("provider-keys")
def provider_keys() -> None:
    """Provider keys the gateway holds for a project, so its applications send only their Heliograph key.

    Encrypted in the database with secret_key (HELIOGRAPH_SECRET_KEY); only fingerprints are ever shown.
    A request's own provider credential always wins; HELIOGRAPH_PROVIDER_KEY_<PROVIDER> comes after."""


def _provider_keys(ctx: click.Context, db_url: str | None) -> Any:
    from ..vault import ProviderKeys, known_providers
    settings = _settings(ctx, db_url=db_url)
    return ProviderKeys(_store(ctx, db_url), settings.secret_key, known_providers(settings.upstreams))


@provider_keys.command("set")
@click.option("--provider", required=True, help="openai, anthropic, azure or another provider of the route table.")
@click.option("--project", default="default", show_default=True, help="The project (id or name).")
@click.option("--db", "db_url", help="Database URL.")
@click.pass_context
def provider_keys_set(ctx: click.Context, provider: str, project: str, db_url: str | None) -> None:
    """Store (or replace) a project's key for a provider, read from stdin or typed at a hidden prompt.

    The key is never taken as an argument: it would stay in the shell history and show in the
    process list. Pipe it in (heliograph provider-keys set --provider openai < key.txt) or type it."""
    from ..vault import VaultError
    vault = _provider_keys(ctx, db_url)
    project_id = _project_id(vault.store, project)
    try:
        vault.check_can_store(provider)     # before asking for the key
        if sys.stdin.isatty():
            secret = click.prompt(f"{provider} key for project {project}", hide_input=True, err=True)
        else:
            secret = sys.stdin.read()
        row = vault.put(provider, secret, project=project_id)
    except VaultError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Stored the {provider} key {row['fingerprint']} for project {project_id}; running gateways use it "
               "within 5 s for the project's calls that carry no credential of their own.")


@provider_keys.command("list")
@click.option("--project", default="default", show_default=True, help="The project (id or name).")
@click.option("--db", "db_url", help="Database URL.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def provider_keys_list(ctx: click.Context, project: str, db_url: str | None, as_json: bool) -> None:
    """List a project's provider keys: fingerprints (sk-…abcd), never the keys."""
    vault = _provider_keys(ctx, db_url)
    project_id = _project_id(vault.store, project)
    rows = vault.fingerprints(project=project_id)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"No provider keys held for project {project_id}. Store one with: "
                   f"heliograph provider-keys set --provider openai --project {project}")
    for row in rows:
        click.echo(f"{row['provider']:<12} {row['fingerprint']:<12} stored {_when(row['created_at'])}"
                   f"  updated {_when(row['updated_at'])}")


@provider_keys.command("delete")
@click.option("--provider", required=True, help="The provider whose key to delete.")
@click.option("--project", default="default", show_default=True, help="The project (id or name).")
@click.option("--db", "db_url", help="Database URL.")
@click.pass_context
def provider_keys_delete(ctx: click.Context, provider: str, project: str, db_url: str | None) -> None:
    """Delete a project's key for a provider; running gateways stop using it within 5 s."""
    from ..vault import VaultError
    vault = _provider_keys(ctx, db_url)
    project_id = _project_id(vault.store, project)
    try:
        deleted = vault.delete(provider, project=project_id)
    except VaultError as exc:
        raise click.ClickException(str(exc)) from None
    if not deleted:
        raise click.ClickException(f"project {project_id} holds no {provider} key")
    click.echo(f"Deleted the {provider} key of project {project_id}.")


# heliograph prompts …: in cli/prompts.py (versioned prompts the gateway renders).
main.add_command(prompts_group)
main.add_command(alerts)
main.add_command(webhooks)


if __name__ == "__main__":
    sys.exit(main())
