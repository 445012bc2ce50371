"""`heliograph prompts push FILE | list | show ID | diff ID V1 V2 | promote ID VERSION ENV | render ID`.

The commands parse and call heliograph.prompts.manage against the store, like the other data
commands, so they work while `serve` runs: gateways use a change within about a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import orjson

from .common import _project_id, _store, store_options

VERSION_HELP = "A version id, or its number such as 1.2."


def _book(ctx: click.Context, db_url: str | None, project: str) -> tuple[Any, str]:
    store = _store(ctx, db_url)
    return store, _project_id(store, project)


_options = store_options("The project (id or name) the prompt belongs to.", default="default")


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def read_prompt_file(path: Path) -> Any:
    """A prompt file, YAML or JSON (JSON is YAML too; the extension picks the clearer error)."""
    import yaml  # type: ignore[import-untyped]   # PyYAML ships no type hints
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise click.ClickException(f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                                   f"{exc}") from None


@click.group()
def prompts() -> None:
    """Versioned prompts the gateway renders (Helicone-Prompt-Id, or a body's prompt_id)."""


@prompts.command("push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_options
def prompts_push(ctx: click.Context, file: Path, project: str, db_url: str | None) -> None:
    """Push a prompt file: {id, name?, tags?, environment?, commit_message?, body: {model, messages, …}}.

    A body equal to the latest version's creates no version. The first version becomes production;
    `environment` (if given) is pointed at the pushed version."""
    from ..prompts import PromptError, manage
    store, project_id = _book(ctx, db_url, project)
    try:
        version, created = manage.push(store, project_id, read_prompt_file(file))
    except PromptError as exc:
        raise _fail(exc) from None
    number = f"{version['major']}.{version['minor']}"
    if created:
        click.echo(f"Created version {number} ({version['id']}) of prompt {version['prompt_id']}.")
    else:
        click.echo(f"Unchanged: version {number} ({version['id']}) of prompt {version['prompt_id']} has this body; "
                   "no version created.")


@prompts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_options
def prompts_list(ctx: click.Context, as_json: bool, project: str, db_url: str | None) -> None:
    """The project's prompts, last changed first."""
    from ..prompts import manage
    store, project_id = _book(ctx, db_url, project)
    shown = [manage.prompt_json(row) for row in store.list_prompts(project_id)]
    if as_json:
        click.echo(json.dumps(shown))
        return
    if not shown:
        click.echo("No prompts. Push one with: heliograph prompts push prompt.yaml")
    for prompt in shown:
        environments = ", ".join(f"{name}={vid}" for name, vid in sorted(prompt["environments"].items()))
        click.echo(f"{prompt['id']}  {prompt['name']:<24} {prompt['kind']:<7} {prompt['versions_count']:>3} versions  "
                   f"{environments}")


@prompts.command("show")
@click.argument("prompt_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (with every version's body).")
@_options
def prompts_show(ctx: click.Context, prompt_id: str, as_json: bool, project: str, db_url: str | None) -> None:
    """A prompt: its environments and versions, newest first."""
    from ..prompts import PromptError, manage
    store, project_id = _book(ctx, db_url, project)
    try:
        prompt = manage.get_prompt(store, project_id, prompt_id)
    except PromptError as exc:
        raise _fail(exc) from None
    versions = [manage.version_json(v, prompt["environments"])
                for v in store.list_versions(project_id, prompt_id, with_bodies=as_json)]
    if as_json:
        click.echo(json.dumps({**manage.prompt_json(prompt), "versions": versions}))
        return
    click.echo(f"{prompt['id']}  {prompt['name']} ({prompt['kind']}){'  tags: ' + ', '.join(prompt['tags']) if prompt['tags'] else ''}")
    for version in versions:
        marks = f"  [{', '.join(version['environments'])}]" if version["environments"] else ""
        message = f"  {version['commit_message']}" if version["commit_message"] else ""
        click.echo(f"  {version['version']:>6}  {version['id']}  {version['created_at']}  {version['source']}{marks}{message}")


@prompts.command("diff")
@click.argument("prompt_id")
@click.argument("old")
@click.argument("new")
@_options
def prompts_diff(ctx: click.Context, prompt_id: str, old: str, new: str, project: str, db_url: str | None) -> None:
    """A unified diff of two versions' bodies (ids or numbers such as 1.0 1.2)."""
    from ..prompts import PromptError, manage
    store, project_id = _book(ctx, db_url, project)
    try:
        shown = manage.diff_versions(store, project_id, prompt_id, old, new)
    except PromptError as exc:
        raise _fail(exc) from None
    click.echo(shown["diff"].rstrip("\n") or
               f"Versions {shown['from_version']} and {shown['to_version']} have the same body.")


@prompts.command("promote")
@click.argument("prompt_id")
@click.argument("version")
@click.argument("environment")
@_options
def prompts_promote(ctx: click.Context, prompt_id: str, version: str, environment: str, project: str,
                    db_url: str | None) -> None:
    """Point ENVIRONMENT (production, staging, … any name) at VERSION: a promotion or a rollback."""
    from ..prompts import PromptError, manage
    store, project_id = _book(ctx, db_url, project)
    try:
        moved = manage.promote(store, project_id, prompt_id, version, environment, key_id=None)
    except PromptError as exc:
        raise _fail(exc) from None
    before = f" (was {moved['previous_version_id']})" if moved["previous_version_id"] else ""
    click.echo(f"{moved['environment']} of {prompt_id} is now version {moved['version']} ({moved['version_id']})"
               f"{before}; running gateways use it within seconds.")


def _inputs(pairs: tuple[str, ...]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--input")
        try:
            inputs[name] = orjson.loads(value)
        except orjson.JSONDecodeError:
            inputs[name] = value
    return inputs


@prompts.command("render")
@click.argument("prompt_id")
@click.option("--version", help=VERSION_HELP + " [production, else the latest]")
@click.option("--environment", help="An environment name (wins over --version).")
@click.option("--input", "pairs", multiple=True, metavar="NAME=VALUE",
              help="A variable; VALUE is read as JSON when it is JSON (42, true, [1,2]), else as text. Repeatable.")
@_options
def prompts_render(ctx: click.Context, prompt_id: str, version: str | None, environment: str | None,
                   pairs: tuple[str, ...], project: str, db_url: str | None) -> None:
    """Print the body the gateway would send for a version with these inputs; no model is called."""
    from ..prompts import PromptError, manage
    store, project_id = _book(ctx, db_url, project)
    try:
        _, body = manage.render(store, project_id, prompt_id, _inputs(pairs), version=version, environment=environment)
    except PromptError as exc:
        raise _fail(exc) from None
    click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
