"""`heliograph` command line: noun-verb commands that parse options and call the library."""

from __future__ import annotations

import ipaddress
import json
import sys
from datetime import datetime, timezone
from typing import Any

import click

from ..settings import Settings, load_settings

LOOPBACK_NAMES = ("localhost",)


def _settings(ctx: click.Context, **cli: Any) -> Settings:
    try:
        return load_settings(cli, ctx.obj.get("config"))
    except (OSError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.group()
@click.option("--config", type=click.Path(dir_okay=False), envvar="HELIOGRAPH_CONFIG",
              help="TOML config file.")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """Heliograph: an LLM observability gateway."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


@main.command()
@click.option("--host", help="Address to listen on [127.0.0.1].")
@click.option("--port", type=int, help="Port [8787].")
@click.option("--db", "db_url", help="Database URL [sqlite:///.heliograph/heliograph.db].")
@click.option("--redis", "redis_url", help="Redis URL for shared state.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--workers", type=int, help="Worker processes (more than one needs --redis).")
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


def _store(ctx: click.Context, db_url: str | None) -> Any:
    from ..storage import open_store
    settings = _settings(ctx, db_url=db_url)
    try:
        store = open_store(settings.db_url)
        store.migrate()
    except Exception as exc:
        raise click.ClickException(f"cannot open the store {settings.db_url}: {exc}") from None
    return store


@keys.command("create")
@click.option("--name", required=True, help="A name to recognise the key by.")
@click.option("--db", "db_url", help="Database URL.")
@click.pass_context
def keys_create(ctx: click.Context, name: str, db_url: str | None) -> None:
    """Create a key; the key itself is printed once, alone on the last line."""
    from ..keys import create_key
    new = create_key(_store(ctx, db_url), name)
    click.echo(f"Created key {new.id} ({new.name}). It is shown only once; send it as 'Helicone-Auth: Bearer <key>':", err=False)
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
        click.echo(f"{row['id']}  {row['name']:<20} {row['prefix']}…  created {_when(row['created_at'])}  {state}")


@keys.command("revoke")
@click.argument("key")
@click.option("--db", "db_url", help="Database URL.")
@click.pass_context
def keys_revoke(ctx: click.Context, key: str, db_url: str | None) -> None:
    """Revoke a key by id or name; a running gateway refuses it within seconds."""
    if _store(ctx, db_url).revoke_key(key) == 0:
        raise click.ClickException(f"no active key with id or name {key!r}")
    click.echo(f"Revoked {key}.")


@main.command()
@click.option("--port", type=int, default=8787, show_default=True, help="Port of the gateway.")
@click.option("--db", "db_url", help="Database URL [sqlite:///.heliograph/heliograph.db].")
@click.option("--requests", "count", type=int, default=300, show_default=True, help="How many requests to send.")
@click.option("--exit", "exit_after", is_flag=True, help="Stop once the traffic is sent and recorded.")
@click.pass_context
def demo(ctx: click.Context, port: int, db_url: str | None, count: int, exit_after: bool) -> None:
    """Run the gateway against a built-in fake LLM provider and send it realistic traffic."""
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


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


if __name__ == "__main__":
    sys.exit(main())
