"""The proxy's copy of the prompt registry: lookups in memory, the store only in a thread.

    prompts     (project, prompt id) → PromptEntry (environments, version numbers and hashes), or
                None for a prompt the store does not have; loaded on first use, in a thread
    versions    version id → Version (the template body); versions never change, so an entry is
                never stale, only unreachable once deleted
    refresh     every REFRESH_EVERY seconds one query reads `updated_at` of every prompt held
                (`prompt_stamps`); a changed one is loaded again, a deleted one dropped, a newly
                created one loaded. A version pushed through another process (or the CLI) is
                used here within about a second; no clock is compared, so skew does not matter
    auto        a template not seen before is written as a version in a thread (the store
                serialises writers per prompt, so processes racing on one template create it once)

Nothing here imports the store: it is handed an object with the `PromptSource` methods.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .template import PromptError, body_hash, variables

log = logging.getLogger("heliograph.prompts")

REFRESH_EVERY = 1.0
MAX_PROMPTS = 10_000        # held entries; past it the oldest loaded are forgotten (and loaded again if used)
MAX_VERSIONS = 4_096
VERSION_NUMBER = re.compile(r"v?(\d+)(?:\.(\d+))?")


class RegistryUnavailable(Exception):
    """The store could not be read for a prompt the call needs."""


class PromptSource(Protocol):
    def get_prompt(self, project: str, prompt_id: str) -> dict[str, Any] | None: ...
    def get_version(self, project: str, version_id: str) -> dict[str, Any] | None: ...
    def prompt_stamps(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]: ...
    def auto_version(self, project: str, prompt_id: str, template: Mapping[str, Any],
                     declared: Sequence[Mapping[str, str]], digest: str, key_id: str | None) -> str: ...


@dataclass(frozen=True, slots=True)
class Version:
    id: str
    prompt_id: str
    major: int
    minor: int
    body: Mapping[str, Any]         # never mutated: compiling builds a new dict

    @property
    def number(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True, slots=True)
class PromptEntry:
    project: str
    id: str
    kind: str                                   # managed | auto
    updated_at: int
    environments: Mapping[str, str]             # name → version id
    latest: str | None                          # version id
    numbers: Mapping[str, str] = field(default_factory=dict)    # "1.2" → version id
    hashes: Mapping[str, str] = field(default_factory=dict)     # body hash → version id (oldest)
    ids: frozenset[str] = frozenset()

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PromptEntry:
        versions = row.get("versions") or []        # newest first
        hashes: dict[str, str] = {}
        for version in reversed(versions):
            hashes.setdefault(version["body_hash"], version["id"])
        return cls(str(row["project_id"]), str(row["id"]), str(row["kind"]), int(row["updated_at"]),
                   dict(row.get("environments") or {}), versions[0]["id"] if versions else None,
                   {f"{v['major']}.{v['minor']}": v["id"] for v in versions}, hashes,
                   frozenset(v["id"] for v in versions))

    def version_id(self, *, version: str | None = None, environment: str | None = None) -> str:
        """Which version a call asked for: the environment if named, else the version (an id,
        "1.2", "v1.2" or "1" for 1.0), else production, else the latest. PromptError naming what
        is unknown."""
        if environment:
            found = self.environments.get(environment)
            if found is None:
                known = ", ".join(sorted(self.environments)) or "none"
                raise PromptError(f"Prompt '{self.id}' has no environment '{environment}' (environments: {known}).")
            return found
        if version:
            if version in self.ids:
                return version
            number = VERSION_NUMBER.fullmatch(version.strip())
            if number is not None:
                found = self.numbers.get(f"{number[1]}.{number[2] or 0}")
                if found is not None:
                    return found
            raise PromptError(f"Prompt '{self.id}' has no version '{version}'.")
        found = self.environments.get("production") or self.latest
        if found is None:
            raise PromptError(f"Prompt '{self.id}' has no version yet.")
        return found


def version_from_row(row: Mapping[str, Any]) -> Version:
    return Version(str(row["id"]), str(row["prompt_id"]), int(row["major"]), int(row["minor"]), row["body"])


class PromptRegistry:
    def __init__(self, source: PromptSource, refresh_every: float = REFRESH_EVERY) -> None:
        self.source = source
        self.refresh_every = refresh_every
        self.prompts: dict[tuple[str, str], PromptEntry | None] = {}
        self.versions: dict[str, Version] = {}
        self.loads = 0          # store reads on the request path (first use, auto versions): for tests and bench

    async def prompt(self, project: str, prompt_id: str) -> PromptEntry | None:
        key = (project, prompt_id)
        try:
            return self.prompts[key]
        except KeyError:
            pass
        self.loads += 1
        try:
            entry = await asyncio.to_thread(self._load_prompt, project, prompt_id)
        except Exception as exc:
            raise RegistryUnavailable(f"prompt '{prompt_id}' could not be read from the store ({exc})") from exc
        self._hold(key, entry)
        return entry

    def _load_prompt(self, project: str, prompt_id: str) -> PromptEntry | None:
        row = self.source.get_prompt(project, prompt_id)
        return None if row is None else PromptEntry.from_row(row)

    def _hold(self, key: tuple[str, str], entry: PromptEntry | None) -> None:
        self.prompts[key] = entry
        if len(self.prompts) > MAX_PROMPTS:
            del self.prompts[next(iter(self.prompts))]

    async def version(self, project: str, version_id: str) -> Version:
        found = self.versions.get(version_id)
        if found is not None:
            return found
        self.loads += 1
        try:
            row = await asyncio.to_thread(self.source.get_version, project, version_id)
        except Exception as exc:
            raise RegistryUnavailable(f"version '{version_id}' could not be read from the store ({exc})") from exc
        if row is None:     # deleted since the prompt was loaded: the next refresh forgets it
            raise PromptError(f"Version '{version_id}' no longer exists.")
        found = version_from_row(row)
        self.versions[version_id] = found
        if len(self.versions) > MAX_VERSIONS:
            del self.versions[next(iter(self.versions))]
        return found

    async def auto_version(self, project: str, prompt_id: str, template: Mapping[str, Any],
                           key_id: str | None) -> str | None:
        """The version id of `template` for an auto-versioned prompt, written if it is new; None
        when the store cannot take it (the call goes on, recorded without a version)."""
        digest = body_hash(template)
        entry = self.prompts.get((project, prompt_id))
        if entry is not None and (found := entry.hashes.get(digest)) is not None:
            return found
        self.loads += 1
        try:
            version_id, entry = await asyncio.to_thread(self._write_auto, project, prompt_id, template, digest, key_id)
        except Exception as exc:
            log.warning("could not write a version of prompt %r: %s", prompt_id, exc)
            return None
        self._hold((project, prompt_id), entry)
        return version_id

    def _write_auto(self, project: str, prompt_id: str, template: Mapping[str, Any], digest: str,
                    key_id: str | None) -> tuple[str, PromptEntry | None]:
        version_id = self.source.auto_version(project, prompt_id, template, variables(template), digest, key_id)
        return version_id, self._load_prompt(project, prompt_id)

    async def run_refreshes(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_every)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as exc:  # the store may be locked or down: keep what we have, try again
                log.warning("could not refresh prompts: %s", exc)

    def refresh(self) -> int:
        """Load again every held prompt that changed in the store; how many changed."""
        keys = list(self.prompts)
        if not keys:
            return 0
        stamps = self.source.prompt_stamps(keys)
        changed = 0
        for key in keys:
            held = self.prompts.get(key)
            stamp = stamps.get(key)
            if stamp is None and held is not None:
                self.prompts[key] = None
                changed += 1
            elif stamp is not None and (held is None or held.updated_at != stamp):
                self.prompts[key] = self._load_prompt(*key)
                changed += 1
        return changed

