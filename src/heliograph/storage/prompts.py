"""Prompts as the store keeps them (migration 029): prompts, immutable versions, environments.

Every write that changes what a gateway would render (a version added or deleted, an environment
moved, a prompt deleted) moves the prompt's `updated_at` forward, by at least 1 ms: gateways compare
it with their copy (`prompt_stamps`) to refresh. A version is written under a row lock on its
prompt (PostgreSQL `FOR UPDATE`; SQLite has one writer), so two processes auto-versioning the same
template at once create it once, and version numbers never collide.

Templates, hashes and variables come from heliograph.prompts.template; this module only reads and
writes rows, always within one project.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import orjson

from .executor import Executor, QueryMixin

_VERSION_COLUMNS = ("v.id, v.project_id, v.prompt_id, v.major, v.minor, v.variables, v.body_hash, v.commit_message, "
                    "v.source, v.created_by, v.created_at")
_PROMPT_COLUMNS = "p.project_id, p.id, p.name, p.description, p.tags, p.kind, p.created_at, p.updated_at"
_CHUNK = 500


def _now() -> int:
    return int(time.time() * 1000)


def version_row(row: dict[str, Any]) -> dict[str, Any]:
    row["variables"] = orjson.loads(row["variables"]) if isinstance(row.get("variables"), str) else row.get("variables")
    if isinstance(row.get("body"), str):
        row["body"] = orjson.loads(row["body"])
    return row


def prompt_row(row: dict[str, Any]) -> dict[str, Any]:
    if isinstance(row.get("tags"), str):
        row["tags"] = orjson.loads(row["tags"])
    return row


class PromptStore(QueryMixin):
    """Mixed into SQLStore: the prompt registry of every project."""

    for_update: ClassVar[str] = ""

    # -- writing ------------------------------------------------------------------------------------

    def create_prompt(self, project: str, prompt_id: str, name: str, *, tags: Sequence[str] = (),
                      description: str = "", kind: str = "managed") -> bool:
        """False when the project has a prompt with this id already."""
        now = _now()
        with self._transaction() as tx:
            cursor = tx.execute(self._q("INSERT INTO prompts (project_id, id, name, description, tags, kind, created_at, "
                                        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"),
                                (project, prompt_id, name, description, orjson.dumps(list(tags)).decode(), kind, now, now))
            return int(cursor.rowcount) > 0

    def save_version(self, project: str, prompt_id: str, body: Mapping[str, Any],
                     declared: Sequence[Mapping[str, str]], digest: str, *, commit_message: str = "",
                     source: str = "api", created_by: str | None = None,
                     reuse: Literal["latest", "any", "never"] = "never", new_major: bool = False,
                     environment: str | None = None, create: Mapping[str, Any] | None = None,
                     ) -> tuple[dict[str, Any], bool] | None:
        """Add a version to a prompt: (the version, whether it was created); None: no such prompt.

        `body` is the template, `declared` its variables and `digest` its hash (prompts/template.py);
        `source` says who wrote it: api, cli, dashboard or auto (the gateway); `created_by` a key id.

        `reuse` "latest": the latest version when its body is the same (pushing an unchanged file);
        "any": any version with the same body (auto-versioning: a template seen before is that
        version). `create` (name, tags, description, kind): make the prompt if it is missing. The
        prompt's first version becomes `production`; `environment` is then pointed at the version."""
        now = _now()
        with self._transaction() as tx:
            if create is not None:
                tx.execute(self._q("INSERT INTO prompts (project_id, id, name, description, tags, kind, created_at, "
                                   "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"),
                           (project, prompt_id, create.get("name") or prompt_id, create.get("description") or "",
                            orjson.dumps(list(create.get("tags") or ())).decode(), create.get("kind") or "managed",
                            now, now))
            prompt = tx.execute(self._q("SELECT updated_at, kind FROM prompts WHERE project_id = ? AND id = ?"
                                        + self.for_update), (project, prompt_id)).fetchone()
            if prompt is None:
                return None
            latest = tx.execute(self._q(f"SELECT {_VERSION_COLUMNS} FROM prompt_versions v WHERE v.project_id = ? "
                                        "AND v.prompt_id = ? ORDER BY v.major DESC, v.minor DESC LIMIT 1"),
                                (project, prompt_id)).fetchone()
            found = None
            if reuse == "latest" and latest is not None and latest["body_hash"] == digest:
                found = dict(latest)
            elif reuse == "any":
                same = tx.execute(self._q(f"SELECT {_VERSION_COLUMNS} FROM prompt_versions v WHERE v.project_id = ? "
                                          "AND v.prompt_id = ? AND v.body_hash = ? ORDER BY v.created_at LIMIT 1"),
                                  (project, prompt_id, digest)).fetchone()
                found = dict(same) if same is not None else None
            changed = created = False
            if found is None:
                if latest is None:
                    major, minor = 1, 0
                else:
                    major, minor = (latest["major"] + 1, 0) if new_major else (latest["major"], latest["minor"] + 1)
                found = {"id": "pv_" + secrets.token_hex(8), "project_id": project, "prompt_id": prompt_id,
                         "major": major, "minor": minor, "variables": orjson.dumps(list(declared)).decode(),
                         "body_hash": digest, "commit_message": commit_message, "source": source,
                         "created_by": created_by, "created_at": now}
                tx.execute(self._q("INSERT INTO prompt_versions (id, project_id, prompt_id, major, minor, body, variables, "
                                   "body_hash, commit_message, source, created_by, created_at) "
                                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                           (found["id"], project, prompt_id, major, minor, orjson.dumps(body).decode(),
                            found["variables"], digest, commit_message, source, created_by, now))
                changed = created = True
                if latest is None:
                    self._move(tx, project, prompt_id, "production", found["id"], created_by, now)
            if environment:
                changed = self._move(tx, project, prompt_id, environment, found["id"], created_by, now) or changed
            if create is not None and create.get("kind") == "managed" and prompt["kind"] != "managed":
                tx.execute(self._q("UPDATE prompts SET kind = 'managed' WHERE project_id = ? AND id = ?"),
                           (project, prompt_id))
                changed = True
            if changed:
                self._touch(tx, project, prompt_id, int(prompt["updated_at"]), now)
        return version_row(found), created

    def auto_version(self, project: str, prompt_id: str, template: Mapping[str, Any],
                     declared: Sequence[Mapping[str, str]], digest: str, key_id: str | None) -> str:
        """The gateway's auto-versioning: the id of the version with this body, made (and the prompt
        too, as an `auto` one) when there is none."""
        saved = self.save_version(project, prompt_id, template, declared, digest, source="auto", created_by=key_id,
                                  reuse="any", create={"name": prompt_id, "kind": "auto"})
        assert saved is not None
        return str(saved[0]["id"])

    def set_environment(self, project: str, prompt_id: str, environment: str, version_id: str, *,
                        key_id: str | None = None) -> str | None | Literal[False]:
        """Point an environment at a version of the prompt; the version it pointed at before (None:
        a new environment); False when the project has no such version of the prompt."""
        now = _now()
        with self._transaction() as tx:
            prompt = tx.execute(self._q("SELECT updated_at FROM prompts WHERE project_id = ? AND id = ?" + self.for_update),
                                (project, prompt_id)).fetchone()
            if prompt is None or tx.execute(self._q("SELECT 1 FROM prompt_versions WHERE id = ? AND project_id = ? "
                                                    "AND prompt_id = ?"), (version_id, project, prompt_id)).fetchone() is None:
                return False
            before = tx.execute(self._q("SELECT version_id FROM prompt_environments WHERE project_id = ? AND prompt_id = ? "
                                        "AND name = ?"), (project, prompt_id, environment)).fetchone()
            if self._move(tx, project, prompt_id, environment, version_id, key_id, now):
                self._touch(tx, project, prompt_id, int(prompt["updated_at"]), now)
        return None if before is None else str(before["version_id"])

    def _move(self, tx: Executor, project: str, prompt_id: str, environment: str, version_id: str,
              key_id: str | None, now: int) -> bool:
        before = tx.execute(self._q("SELECT version_id FROM prompt_environments WHERE project_id = ? AND prompt_id = ? "
                                    "AND name = ?"), (project, prompt_id, environment)).fetchone()
        if before is not None and before["version_id"] == version_id:
            return False
        tx.execute(self._q("INSERT INTO prompt_environments (project_id, prompt_id, name, version_id, updated_at, "
                           "updated_by) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project_id, prompt_id, name) DO UPDATE "
                           "SET version_id = excluded.version_id, updated_at = excluded.updated_at, "
                           "updated_by = excluded.updated_by"),
                   (project, prompt_id, environment, version_id, now, key_id))
        # Strictly after the prompt's last move (the prompt row is locked), so the trail has one order
        # even for moves within a millisecond.
        last = tx.execute(self._q("SELECT max(moved_at) AS at FROM prompt_environment_moves WHERE project_id = ? "
                                  "AND prompt_id = ?"), (project, prompt_id)).fetchone()
        moved_at = max(now, int(last["at"]) + 1) if last is not None and last["at"] is not None else now
        tx.execute(self._q("INSERT INTO prompt_environment_moves (id, project_id, prompt_id, name, from_version_id, "
                           "to_version_id, moved_by, moved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                   ("pem_" + secrets.token_hex(8), project, prompt_id, environment,
                    None if before is None else before["version_id"], version_id, key_id, moved_at))
        return True

    def _touch(self, tx: Executor, project: str, prompt_id: str, before: int, now: int) -> None:
        tx.execute(self._q("UPDATE prompts SET updated_at = ? WHERE project_id = ? AND id = ?"),
                   (max(now, before + 1), project, prompt_id))

    def update_prompt(self, project: str, prompt_id: str, *, name: str | None = None,
                      tags: Sequence[str] | None = None, description: str | None = None) -> bool:
        sets, params = [], []
        for column, value in (("name", name), ("description", description),
                              ("tags", None if tags is None else orjson.dumps(list(tags)).decode())):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)
        if not sets:
            return self.get_prompt(project, prompt_id) is not None
        with self._transaction() as tx:
            cursor = tx.execute(self._q(f"UPDATE prompts SET {', '.join(sets)} WHERE project_id = ? AND id = ?"),
                                (*params, project, prompt_id))
            return int(cursor.rowcount) > 0

    def delete_prompt(self, project: str, prompt_id: str) -> bool:
        with self._transaction() as tx:
            for table, column in (("prompt_environment_moves", "prompt_id"), ("prompt_environments", "prompt_id"),
                                  ("prompt_versions", "prompt_id")):
                tx.execute(self._q(f"DELETE FROM {table} WHERE project_id = ? AND {column} = ?"), (project, prompt_id))
            return int(tx.execute(self._q("DELETE FROM prompts WHERE project_id = ? AND id = ?"),
                                  (project, prompt_id)).rowcount) > 0

    def delete_version(self, project: str, prompt_id: str, version_id: str) -> bool:
        """The version, and any environment pointing at it (records keep naming it)."""
        now = _now()
        with self._transaction() as tx:
            prompt = tx.execute(self._q("SELECT updated_at FROM prompts WHERE project_id = ? AND id = ?" + self.for_update),
                                (project, prompt_id)).fetchone()
            if prompt is None:
                return False
            if int(tx.execute(self._q("DELETE FROM prompt_versions WHERE id = ? AND project_id = ? AND prompt_id = ?"),
                              (version_id, project, prompt_id)).rowcount) == 0:
                return False
            tx.execute(self._q("DELETE FROM prompt_environments WHERE project_id = ? AND prompt_id = ? AND version_id = ?"),
                       (project, prompt_id, version_id))
            self._touch(tx, project, prompt_id, int(prompt["updated_at"]), now)
        return True

    # -- reading ------------------------------------------------------------------------------------

    def get_prompt(self, project: str, prompt_id: str) -> dict[str, Any] | None:
        """The prompt with its environments ({name: version id}) and its versions' count."""
        rows = self._rows(self._q(f"SELECT {_PROMPT_COLUMNS} FROM prompts p WHERE p.project_id = ? AND p.id = ?"),
                          (project, prompt_id))
        if not rows:
            return None
        prompt = prompt_row(rows[0])
        prompt["environments"] = {row["name"]: row["version_id"] for row in self._rows(self._q(
            "SELECT name, version_id FROM prompt_environments WHERE project_id = ? AND prompt_id = ? ORDER BY name"),
            (project, prompt_id))}
        prompt["versions"] = self._rows(self._q(
            "SELECT id, major, minor, body_hash, created_at FROM prompt_versions WHERE project_id = ? AND prompt_id = ? "
            "ORDER BY major DESC, minor DESC"), (project, prompt_id))
        return prompt

    def list_prompts(self, project: str, *, search: str = "", tags: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The project's prompts, last changed first, each with its environments and version count."""
        where, params = "p.project_id = ?", [project]
        if search:
            where += " AND (lower(p.name) LIKE ? OR lower(p.id) LIKE ?)"
            params += [f"%{search.lower()}%"] * 2
        prompts = [prompt_row(row) for row in self._rows(self._q(
            f"SELECT {_PROMPT_COLUMNS}, (SELECT count(*) FROM prompt_versions v WHERE v.project_id = p.project_id "
            f"AND v.prompt_id = p.id) AS version_count FROM prompts p WHERE {where} ORDER BY p.updated_at DESC, p.id"),
            params)]
        if tags:
            prompts = [p for p in prompts if set(tags) & set(p["tags"])]
        environments: dict[str, dict[str, str]] = {}
        numbers: dict[str, dict[str, str]] = {}
        for row in self._rows(self._q(
                "SELECT e.prompt_id, e.name, e.version_id, v.major, v.minor FROM prompt_environments e "
                "JOIN prompt_versions v ON v.id = e.version_id WHERE e.project_id = ? ORDER BY e.name"), (project,)):
            environments.setdefault(row["prompt_id"], {})[row["name"]] = row["version_id"]
            numbers.setdefault(row["prompt_id"], {})[row["name"]] = f"{row['major']}.{row['minor']}"
        for prompt in prompts:
            prompt["environments"] = environments.get(prompt["id"], {})
            prompt["environment_versions"] = numbers.get(prompt["id"], {})     # name → "major.minor"
        return prompts

    def list_versions(self, project: str, prompt_id: str, *, with_bodies: bool = False) -> list[dict[str, Any]]:
        """Newest first."""
        body = ", v.body" if with_bodies else ""
        return [version_row(row) for row in self._rows(self._q(
            f"SELECT {_VERSION_COLUMNS}{body} FROM prompt_versions v WHERE v.project_id = ? AND v.prompt_id = ? "
            "ORDER BY v.major DESC, v.minor DESC"), (project, prompt_id))]

    def get_version(self, project: str, version_id: str) -> dict[str, Any] | None:
        """A version with its body; None when the project has none with this id."""
        rows = self._rows(self._q(f"SELECT {_VERSION_COLUMNS}, v.body FROM prompt_versions v WHERE v.id = ? "
                                  "AND v.project_id = ?"), (version_id, project))
        return version_row(rows[0]) if rows else None

    def environment_moves(self, project: str, prompt_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first: the audit trail of promotions and rollbacks."""
        return self._rows(self._q("SELECT name, from_version_id, to_version_id, moved_by, moved_at "
                                  "FROM prompt_environment_moves WHERE project_id = ? AND prompt_id = ? "
                                  "ORDER BY moved_at DESC, id LIMIT ?"), (project, prompt_id, limit))

    def prompt_stamps(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """(project, prompt id) → updated_at, for the prompts of `keys` that exist."""
        found: dict[tuple[str, str], int] = {}
        for at in range(0, len(keys), _CHUNK):
            chunk = keys[at:at + _CHUNK]
            where = " OR ".join(["(project_id = ? AND id = ?)"] * len(chunk))
            for row in self._rows(self._q(f"SELECT project_id, id, updated_at FROM prompts WHERE {where}"),
                                  [part for key in chunk for part in key]):
                found[(row["project_id"], row["id"])] = int(row["updated_at"])
        return found

    def prompt_usage(self, project: str, ids: Sequence[str], *, start: int = 0) -> dict[str, dict[str, Any]]:
        """Prompt id (of `ids`) → {"requests", "cost", "unpriced"} of the calls recorded since `start`."""
        # By id, through the requests_prompt index: "prompt_id IS NOT NULL" (or a join) sends the
        # planner down the time index, through every call of the range (370 ms at 1 M rows).
        rows: list[dict[str, Any]] = []
        for first in range(0, len(ids), 500):
            chunk = ids[first:first + 500]
            rows += self._rows(self._q(
                "SELECT prompt_id, count(*) AS requests, SUM(cost) AS cost, "
                "SUM(CASE WHEN pricing_status = 'unpriced' THEN 1 ELSE 0 END) AS unpriced FROM requests "
                f"WHERE project_id = ? AND prompt_id IN ({', '.join('?' * len(chunk))}) AND created_at >= ? "
                "GROUP BY prompt_id"), (project, *chunk, start))
        return {row["prompt_id"]: {"requests": int(row["requests"]), "cost": float(row["cost"] or 0.0),
                                   "unpriced": int(row["unpriced"] or 0)} for row in rows}

    def prompt_version_metrics(self, project: str, prompt_id: str, *, start: int = 0,
                               end: int | None = None) -> list[dict[str, Any]]:
        """Per version id of the prompt's recorded calls: requests, errors, error rate (%), cost,
        tokens, latency (mean and p50/p95 by nearest rank), and the mean of each score."""
        end = end if end is not None else _now() + 1
        rows = self._rows(self._q(
            "SELECT prompt_version, count(*) AS requests, "
            "SUM(CASE WHEN status >= 400 OR status = 0 OR error IS NOT NULL THEN 1 ELSE 0 END) AS errors, "
            "SUM(cost) AS cost, SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens, "
            "SUM(total_tokens) AS total_tokens, AVG(latency_ms) AS avg_latency_ms, "
            "SUM(CASE WHEN pricing_status = 'unpriced' THEN 1 ELSE 0 END) AS unpriced "
            "FROM requests WHERE project_id = ? AND prompt_id = ? AND created_at >= ? AND created_at < ? "
            "GROUP BY prompt_version"), (project, prompt_id, start, end))
        latencies: dict[Any, list[float]] = {}
        for row in self._rows(self._q("SELECT prompt_version, latency_ms FROM requests WHERE project_id = ? "
                                      "AND prompt_id = ? AND created_at >= ? AND created_at < ?"),
                              (project, prompt_id, start, end)):
            latencies.setdefault(row["prompt_version"], []).append(float(row["latency_ms"]))
        scores: dict[Any, dict[str, float]] = {}
        for row in self._rows(self._q(
                "SELECT r.prompt_version, s.name, AVG(s.value) AS mean FROM request_scores s JOIN requests r "
                "ON r.id = s.request_id WHERE r.project_id = ? AND r.prompt_id = ? AND r.created_at >= ? "
                "AND r.created_at < ? GROUP BY r.prompt_version, s.name"), (project, prompt_id, start, end)):
            scores.setdefault(row["prompt_version"], {})[row["name"]] = round(float(row["mean"]), 4)
        out = []
        for row in rows:
            version = row["prompt_version"]
            requests = int(row["requests"])
            ordered = sorted(latencies.get(version, []))
            out.append({
                "version_id": version, "requests": requests, "errors": int(row["errors"] or 0),
                "error_rate": round(100.0 * int(row["errors"] or 0) / requests, 3) if requests else 0.0,
                "cost": float(row["cost"] or 0.0), "unpriced": int(row["unpriced"] or 0),
                "prompt_tokens": int(row["prompt_tokens"] or 0), "completion_tokens": int(row["completion_tokens"] or 0),
                "total_tokens": int(row["total_tokens"] or 0),
                "avg_latency_ms": round(float(row["avg_latency_ms"] or 0.0), 3),
                "p50_latency_ms": _rank(ordered, 0.50), "p95_latency_ms": _rank(ordered, 0.95),
                "scores": scores.get(version, {})})
        return out


def _rank(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))], 3)
