"""Managing prompts: what the API, the CLI and the dashboard do, written once.

Synchronous (the callers run it in a thread), one project at a time, given the store as a
`PromptBook`. Bad input raises PromptError (a 400 / a CLI usage error); something the project does
not have raises PromptNotFound (a 404), whether it is unknown or another project's.

A prompt file (`heliograph prompts push`, YAML or JSON) is
    {"id": "…", "name"?: "…", "tags"?: […], "description"?: "…", "environment"?: "…",
     "commit_message"?: "…", "body": {"model": "…", "messages": […], …}}
Pushing a body equal to the latest version's creates no version (it may still move the environment).
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from .registry import VERSION_NUMBER
from .template import (PromptError, body_hash, compile_body, diff, insert_partials, merge, message_text, partials,
                       variables)

ENVIRONMENT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
PROMPT_ID = re.compile(r"[^/\s][^/]{0,255}")
MAX_NAME = 200
MAX_TAGS = 50
ID_ALPHABET = string.ascii_lowercase + string.digits


class PromptNotFound(PromptError):
    """The project has no such prompt or version (another project's is unknown too)."""


class PromptBook(Protocol):
    def create_prompt(self, project: str, prompt_id: str, name: str, *, tags: Sequence[str] = ...,
                      description: str = ..., kind: str = ...) -> bool: ...
    def save_version(self, project: str, prompt_id: str, body: Mapping[str, Any],
                     declared: Sequence[Mapping[str, str]], digest: str, *, commit_message: str = ...,
                     source: str = ..., created_by: str | None = ...,
                     reuse: Literal["latest", "any", "never"] = ..., new_major: bool = ...,
                     environment: str | None = ..., create: Mapping[str, Any] | None = ...,
                     ) -> tuple[dict[str, Any], bool] | None: ...
    def set_environment(self, project: str, prompt_id: str, environment: str, version_id: str, *,
                        key_id: str | None = ...) -> str | None | Literal[False]: ...
    def update_prompt(self, project: str, prompt_id: str, *, name: str | None = ...,
                      tags: Sequence[str] | None = ..., description: str | None = ...) -> bool: ...
    def delete_prompt(self, project: str, prompt_id: str) -> bool: ...
    def delete_version(self, project: str, prompt_id: str, version_id: str) -> bool: ...
    def get_prompt(self, project: str, prompt_id: str) -> dict[str, Any] | None: ...
    def list_prompts(self, project: str, *, search: str = ..., tags: Sequence[str] = ...) -> list[dict[str, Any]]: ...
    def list_versions(self, project: str, prompt_id: str, *, with_bodies: bool = ...) -> list[dict[str, Any]]: ...
    def get_version(self, project: str, version_id: str) -> dict[str, Any] | None: ...
    def environment_moves(self, project: str, prompt_id: str, limit: int = ...) -> list[dict[str, Any]]: ...
    def prompt_version_metrics(self, project: str, prompt_id: str, *, start: int = ...,
                               end: int | None = ...) -> list[dict[str, Any]]: ...


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- checking input ---------------------------------------------------------------------------------

def check_body(body: Any, what: str = "promptBody") -> dict[str, Any]:
    if not isinstance(body, dict) or not body:
        raise PromptError(f"{what} must be a JSON object: the request body template (model, messages, …).")
    messages = body.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise PromptError(f"{what}.messages must be a list of messages.")
    return body


def check_environment(name: Any) -> str:
    if not isinstance(name, str) or not ENVIRONMENT.fullmatch(name):
        raise PromptError(f"environment must be 1 to 64 letters, digits, '_', '-' or '.', got {name!r}.")
    return name


def check_prompt_id(prompt_id: Any, what: str = "promptId") -> str:
    if not isinstance(prompt_id, str) or not PROMPT_ID.fullmatch(prompt_id):
        raise PromptError(f"{what} must be a string of 1 to 256 characters without '/', got {prompt_id!r}.")
    return prompt_id


def check_tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    if not isinstance(tags, list) or len(tags) > MAX_TAGS or not all(isinstance(t, str) and t for t in tags):
        raise PromptError(f"tags must be a list of at most {MAX_TAGS} non-empty strings.")
    return list(dict.fromkeys(tags))


def check_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise PromptError(f"{field} must be a non-empty string of at most {MAX_NAME} characters.")
    return name.strip()


def new_prompt_id() -> str:
    """Helicone's form: 6 lower-case letters and digits."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(6))


# -- reading ----------------------------------------------------------------------------------------

def prompt_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "tags": row["tags"], "description": row["description"],
            "kind": row["kind"], "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
            "versions_count": int(row.get("version_count") or len(row.get("versions") or ())),
            "environments": dict(row.get("environments") or {})}


def version_json(row: Mapping[str, Any], environments: Mapping[str, str] | None = None) -> dict[str, Any]:
    body = row.get("body")
    shown = {"id": row["id"], "prompt_id": row["prompt_id"], "major_version": row["major"],
             "minor_version": row["minor"], "version": f"{row['major']}.{row['minor']}",
             "commit_message": row["commit_message"], "source": row["source"], "created_by": row["created_by"],
             "created_at": iso(row["created_at"]), "variables": row["variables"],
             "environments": sorted(n for n, v in (environments or {}).items() if v == row["id"])}
    if isinstance(body, dict):
        shown["model"] = body.get("model")
        shown["prompt_body"] = body
    return shown


def get_prompt(book: PromptBook, project: str, prompt_id: str) -> dict[str, Any]:
    found = book.get_prompt(project, prompt_id)
    if found is None:
        raise PromptNotFound(f"No prompt '{prompt_id}' in this project.")
    return found


def resolve_version(book: PromptBook, project: str, prompt_id: str, *, version: str | None = None,
                    environment: str | None = None) -> dict[str, Any]:
    """A version of the prompt by id, "1.2" / "v1.2" / "1", or environment; production, else the
    latest, when neither is given."""
    prompt = get_prompt(book, project, prompt_id)
    environments: dict[str, str] = prompt["environments"]
    if environment:
        if environment not in environments:
            raise PromptNotFound(f"Prompt '{prompt_id}' has no environment '{environment}' "
                                 f"(environments: {', '.join(sorted(environments)) or 'none'}).")
        wanted = environments[environment]
    elif version:
        ids = {v["id"] for v in prompt["versions"]}
        number = VERSION_NUMBER.fullmatch(version.strip())
        wanted = version if version in ids else next(
            (v["id"] for v in prompt["versions"] if number is not None
             and (v["major"], v["minor"]) == (int(number[1]), int(number[2] or 0))), "")
        if not wanted:
            raise PromptNotFound(f"Prompt '{prompt_id}' has no version '{version}'.")
    else:
        wanted = environments.get("production") or (prompt["versions"][0]["id"] if prompt["versions"] else "")
        if not wanted:
            raise PromptNotFound(f"Prompt '{prompt_id}' has no version yet.")
    found = book.get_version(project, wanted)
    if found is None:
        raise PromptNotFound(f"Prompt '{prompt_id}' has no version '{wanted}'.")
    found["environments_map"] = environments
    return found


def shown_version(book: PromptBook, project: str, prompt_id: str, **which: str | None) -> dict[str, Any]:
    found = resolve_version(book, project, prompt_id, **which)
    return version_json(found, found.pop("environments_map"))


def render(book: PromptBook, project: str, prompt_id: str, inputs: Mapping[str, Any], *,
           version: str | None = None, environment: str | None = None,
           request: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the version, the body the gateway would send for it with `inputs` and `request`'s fields)."""
    found = resolve_version(book, project, prompt_id, version=version, environment=environment)
    return found, merge(compile_body(_with_partials(book, project, found["body"]), inputs), request or {})


def _with_partials(book: PromptBook, project: str, template: dict[str, Any]) -> dict[str, Any]:
    """As the gateway does (render.py): partials replaced by their messages' text, before variables."""
    texts = {}
    for prompt_id, index, environment in partials(template):
        name = f"{{{{hcp:{prompt_id}:{index}:{environment}}}}}"
        try:
            version = resolve_version(book, project, prompt_id, environment=environment)
        except PromptNotFound as exc:
            raise PromptError(f"Partial {name}: {exc}") from None
        texts[(prompt_id, index, environment)] = message_text(version["body"], index, name)
    filled = insert_partials(template, texts) if texts else template
    assert isinstance(filled, dict)
    return filled


def diff_versions(book: PromptBook, project: str, prompt_id: str, old: str, new: str) -> dict[str, Any]:
    a = resolve_version(book, project, prompt_id, version=old)
    b = resolve_version(book, project, prompt_id, version=new)
    return {"from": a["id"], "to": b["id"], "from_version": f"{a['major']}.{a['minor']}",
            "to_version": f"{b['major']}.{b['minor']}",
            "diff": diff(a["body"], b["body"], f"{prompt_id} {a['major']}.{a['minor']} ({a['id']})",
                         f"{prompt_id} {b['major']}.{b['minor']} ({b['id']})")}


def metrics(book: PromptBook, project: str, prompt_id: str, *, start: int = 0,
            end: int | None = None) -> list[dict[str, Any]]:
    """Per version of the prompt, newest first: its number, environments and recorded metrics (zeros
    for a version no call used; calls recorded under a version since deleted are listed last)."""
    prompt = get_prompt(book, project, prompt_id)
    measured = {row["version_id"]: row for row in book.prompt_version_metrics(project, prompt_id, start=start, end=end)}
    out = []
    for version in prompt["versions"]:
        row = measured.pop(version["id"], None) or _no_calls(version["id"])
        out.append({**row, "version": f"{version['major']}.{version['minor']}",
                    "environments": sorted(n for n, v in prompt["environments"].items() if v == version["id"])})
    out += [{**row, "version": None, "environments": []} for row in measured.values()]
    return out


def _no_calls(version_id: str | None) -> dict[str, Any]:
    return {"version_id": version_id, "requests": 0, "errors": 0, "error_rate": 0.0, "cost": 0.0, "unpriced": 0,
            "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "avg_latency_ms": None,
            "p50_latency_ms": None, "p95_latency_ms": None, "scores": {}}


# -- writing ----------------------------------------------------------------------------------------

def create(book: PromptBook, project: str, *, name: Any, body: Any, tags: Any = None, description: Any = "",
           prompt_id: Any = None, key_id: str | None = None, source: str = "api") -> tuple[str, dict[str, Any]]:
    """A new prompt and its first version (production): (prompt id, version)."""
    name = check_name(name)
    tags = check_tags(tags)
    template = check_body(body)
    if not isinstance(description, str):
        raise PromptError("description must be a string.")
    if prompt_id is not None:
        prompt_id = check_prompt_id(prompt_id, "id")
        if not book.create_prompt(project, prompt_id, name, tags=tags, description=description):
            raise PromptError(f"A prompt '{prompt_id}' exists already; add a version with /update instead.")
    else:
        for _ in range(10):
            prompt_id = new_prompt_id()
            if book.create_prompt(project, prompt_id, name, tags=tags, description=description):
                break
    saved = _save(book, project, str(prompt_id), template, created_by=key_id, source=source,
                  commit_message="Initial version")
    return str(prompt_id), saved[0]


def _save(book: PromptBook, project: str, prompt_id: str, template: Mapping[str, Any], **options: Any
          ) -> tuple[dict[str, Any], bool]:
    saved = book.save_version(project, prompt_id, template, variables(template), body_hash(template), **options)
    if saved is None:
        raise PromptNotFound(f"No prompt '{prompt_id}' in this project.")
    return saved


def update(book: PromptBook, project: str, prompt_id: Any, *, body: Any, based_on: Any = None, new_major: Any = False,
           environment: Any = None, commit_message: Any = "", key_id: str | None = None,
           source: str = "api") -> dict[str, Any]:
    """A new version (always, as Helicone does); `based_on` must be a version of the prompt."""
    prompt_id = check_prompt_id(prompt_id)
    template = check_body(body)
    if not isinstance(new_major, bool):
        raise PromptError("newMajorVersion must be true or false.")
    if not isinstance(commit_message, str):
        raise PromptError("commitMessage must be a string.")
    env = check_environment(environment) if environment is not None else None
    prompt = get_prompt(book, project, prompt_id)
    if based_on is not None and based_on not in {v["id"] for v in prompt["versions"]}:
        raise PromptNotFound(f"Prompt '{prompt_id}' has no version '{based_on}'.")
    version, _ = _save(book, project, prompt_id, template, commit_message=commit_message, source=source,
                       created_by=key_id, new_major=new_major, environment=env)
    return version


def push(book: PromptBook, project: str, document: Any, *, key_id: str | None = None,
         source: str = "cli") -> tuple[dict[str, Any], bool]:
    """A prompt file pushed: (the version, whether it is new). The prompt is made on first push."""
    if not isinstance(document, dict):
        raise PromptError("A prompt file must hold an object: {\"id\", \"name\"?, \"environment\"?, \"body\"}.")
    unknown = set(document) - {"id", "name", "tags", "description", "environment", "commit_message", "body"}
    if unknown:
        raise PromptError(f"Unknown fields in the prompt file: {', '.join(sorted(unknown))}.")
    prompt_id = check_prompt_id(document.get("id"), "id")
    template = check_body(document.get("body"), "body")
    name = check_name(document.get("name") or prompt_id)
    tags = check_tags(document.get("tags"))
    description = document.get("description") or ""
    env = check_environment(document["environment"]) if document.get("environment") is not None else None
    message = document.get("commit_message") or ""
    if not isinstance(description, str) or not isinstance(message, str):
        raise PromptError("description and commit_message must be strings.")
    saved = _save(book, project, prompt_id, template, commit_message=message, source=source, created_by=key_id,
                  reuse="latest", environment=env,
                  create={"name": name, "tags": tags, "description": description, "kind": "managed"})
    if document.get("name") or document.get("tags") is not None or document.get("description"):
        book.update_prompt(project, prompt_id, name=name, tags=tags if document.get("tags") is not None else None,
                           description=description or None)
    return saved


def promote(book: PromptBook, project: str, prompt_id: Any, version: Any, environment: Any, *,
            key_id: str | None = None) -> dict[str, Any]:
    """Point an environment at a version (promotion and rollback alike; every move is kept)."""
    prompt_id = check_prompt_id(prompt_id)
    env = check_environment(environment)
    if not isinstance(version, str) or not version:
        raise PromptError("promptVersionId must be a version id (or a number such as 1.2).")
    found = resolve_version(book, project, prompt_id, version=version)
    before = book.set_environment(project, prompt_id, env, found["id"], key_id=key_id)
    if before is False:
        raise PromptNotFound(f"Prompt '{prompt_id}' has no version '{version}'.")
    return {"prompt_id": prompt_id, "environment": env, "version_id": found["id"],
            "version": f"{found['major']}.{found['minor']}", "previous_version_id": before}
