"""What every command shares: the resolved settings, the opened store, a project named by id or name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..proxy.routes import known_names
from ..settings import Settings, load_settings


def _settings(ctx: click.Context, **cli: Any) -> Settings:
    try:
        return load_settings(cli, ctx.obj.get("config"), providers=known_names())
    except (OSError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None


def _store(ctx: click.Context, db_url: str | None) -> Any:
    from ..storage import open_store
    settings = _settings(ctx, db_url=db_url)
    try:
        store = open_store(settings.db_url)
        store.migrate()
    except Exception as exc:
        raise click.ClickException(f"cannot open the store {settings.db_url}: {exc}") from None
    return store


def _project_id(store: Any, project: str) -> str:
    """The id of a project named by id or name, for the data commands' --project."""
    from ..keys import AccessError, resolve_project
    try:
        return resolve_project(store, project)
    except AccessError as exc:
        raise click.ClickException(str(exc)) from None


def store_options(project_help: str = "The project (id or name) [default].",
                  default: str | None = None) -> Callable[[Any], Any]:
    """A data command's --project and --db, and its click context."""
    def decorate(command: Any) -> Any:
        command = click.option("--db", "db_url", help="Database URL.")(command)
        command = click.option("--project", default=default, show_default=default is not None, help=project_help)(command)
        return click.pass_context(command)
    return decorate
