"""The store's schema as an ordered list of named migration steps, recorded in `migrations`.

Times are integer milliseconds since the epoch; cost is USD. Bodies live apart from the metrics
row, compressed, so they can be omitted or expired on their own.

A step is SQL shared by both dialects (statements separated by `;`), or a map from dialect name
("sqlite", "postgres") to SQL where they must differ. Steps are append-only: never edit one that
has shipped, add another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from .rollup_schema import create_rollups_sql, rollups_by_project_sql
from .rollups import backfill_cache_hits, backfill_rollups

REQUEST_COLUMNS = (
    "id", "created_at", "provider", "method", "path", "target_url", "status",
    "request_model", "response_model", "model", "user_id", "session_id", "session_path",
    "session_name", "request_name", "properties", "key_id",
    "prompt_tokens", "completion_tokens", "total_tokens", "prompt_cache_read_tokens",
    "prompt_cache_write_tokens", "reasoning_tokens", "cost", "pricing_status",
    "latency_ms", "ttft_ms", "gateway_overhead_ms", "streamed", "partial", "error",
    "cache_enabled", "cache_reference_id", "prompt_id", "prompt_version", "attempts", "fallback_index",
    "project_id", "prompt_inputs",
)

# Stored as 0/1 by SQLite and as booleans by PostgreSQL; the stores hand out bools.
BOOLEAN_COLUMNS = ("streamed", "partial", "cache_enabled")

# SQL for both dialects; SQL per dialect; or a function given the transaction and the dialect's name.
Step: TypeAlias = str | Mapping[str, str] | Callable[[Any, str], None]

# Migration 029 (prompts): the same tables on both stores.
_PROMPT_TABLES = """
        CREATE TABLE prompts (
            project_id TEXT NOT NULL,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            tags TEXT NOT NULL DEFAULT '[]',
            kind TEXT NOT NULL CHECK (kind IN ('managed', 'auto')),
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (project_id, id)
        );
        CREATE TABLE prompt_versions (
            id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            major INTEGER NOT NULL,
            minor INTEGER NOT NULL,
            body TEXT NOT NULL,
            variables TEXT NOT NULL,
            body_hash TEXT NOT NULL,
            commit_message TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL,
            created_by TEXT,
            created_at BIGINT NOT NULL,
            UNIQUE (project_id, prompt_id, major, minor)
        );
        CREATE INDEX prompt_versions_hash ON prompt_versions (project_id, prompt_id, body_hash);
        CREATE TABLE prompt_environments (
            project_id TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            name TEXT NOT NULL,
            version_id TEXT NOT NULL,
            updated_at BIGINT NOT NULL,
            updated_by TEXT,
            PRIMARY KEY (project_id, prompt_id, name)
        );
        CREATE TABLE prompt_environment_moves (
            id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            name TEXT NOT NULL,
            from_version_id TEXT,
            to_version_id TEXT,
            moved_by TEXT,
            moved_at BIGINT NOT NULL
        );
        CREATE INDEX prompt_environment_moves_prompt ON prompt_environment_moves (project_id, prompt_id, moved_at);"""

MIGRATIONS: list[tuple[str, Step]] = [
    ("001_keys", """
        CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            revoked_at BIGINT
        )"""),
    ("002_requests", """
        CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            created_at BIGINT NOT NULL,
            provider TEXT NOT NULL,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            target_url TEXT NOT NULL,
            status INTEGER NOT NULL,
            request_model TEXT,
            response_model TEXT,
            model TEXT,
            user_id TEXT,
            session_id TEXT,
            session_path TEXT,
            session_name TEXT,
            request_name TEXT,
            properties TEXT NOT NULL DEFAULT '{}',
            key_id TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            prompt_cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            prompt_cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            cost DOUBLE PRECISION,
            pricing_status TEXT NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            ttft_ms DOUBLE PRECISION,
            gateway_overhead_ms DOUBLE PRECISION,
            streamed BOOLEAN NOT NULL,
            partial BOOLEAN NOT NULL,
            error TEXT,
            cache_enabled BOOLEAN NOT NULL DEFAULT FALSE,
            cache_reference_id TEXT,
            prompt_id TEXT,
            prompt_version INTEGER,
            attempts TEXT NOT NULL DEFAULT '[]',
            fallback_index INTEGER
        )"""),
    ("003_requests_indexes", """
        CREATE INDEX requests_created_at ON requests (created_at);
        CREATE INDEX requests_user ON requests (user_id, created_at);
        CREATE INDEX requests_session ON requests (session_id, created_at)"""),
    ("004_request_bodies", """
        CREATE TABLE request_bodies (
            id TEXT PRIMARY KEY,
            request BYTEA,
            response BYTEA
        )"""),
    ("005_request_scores", """
        CREATE TABLE request_scores (
            request_id TEXT NOT NULL,
            name TEXT NOT NULL,
            value BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (request_id, name)
        );
        CREATE INDEX request_scores_name_value ON request_scores (name, value)"""),
    # Properties are also kept one row per key so that a filter on a rare value is an index lookup
    # (measured on 100k rows: see storage/sqlstore.py); the JSON column stays the rendered copy.
    ("006_request_properties", """
        CREATE TABLE request_properties (
            request_id TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (request_id, key)
        );
        CREATE INDEX request_properties_key_value ON request_properties (key, value)"""),
    ("007_request_properties_backfill", {
        "sqlite": """
            INSERT INTO request_properties (request_id, key, value)
            SELECT r.id, lower(j.key), CAST(j.value AS TEXT) FROM requests r, json_each(r.properties) j
            WHERE j.value IS NOT NULL ON CONFLICT DO NOTHING""",
        "postgres": """
            INSERT INTO request_properties (request_id, key, value)
            SELECT r.id, lower(j.key), j.value FROM requests r, jsonb_each_text(r.properties::jsonb) j
            WHERE j.value IS NOT NULL ON CONFLICT DO NOTHING""",
    }),
    ("008_requests_filter_indexes", """
        CREATE INDEX requests_model ON requests (model, created_at);
        CREATE INDEX requests_status ON requests (status, created_at);
        CREATE INDEX requests_request_name ON requests (request_name, created_at)"""),
    # Retention (storage/lifecycle.py): bodies expire by their own time, so the pruner reads an
    # index range of bodies still present instead of re-walking rows whose bodies are gone.
    ("020_request_bodies_created_at", """
        ALTER TABLE request_bodies ADD COLUMN created_at BIGINT;
        UPDATE request_bodies SET created_at = (SELECT r.created_at FROM requests r WHERE r.id = request_bodies.id);
        CREATE INDEX request_bodies_created_at ON request_bodies (created_at)"""),
    # Erasures are audited under a keyed hash of the user id; the key lives in instance_secrets.
    ("021_audit_log", """
        CREATE TABLE audit_log (
            id TEXT PRIMARY KEY,
            at BIGINT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT NOT NULL,
            actor TEXT NOT NULL,
            details TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX audit_log_at ON audit_log (at);
        CREATE TABLE instance_secrets (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )"""),
    # Analytics rollups (storage/rollup_schema.py), kept by the recorder in the batch's transaction;
    # the SQL is generated from the fixed histogram layout, which never changes in place.
    ("010_rollups", create_rollups_sql()),
    ("011_rollups_backfill", backfill_rollups),
    # A streamed answer's raw SSE (compressed like the bodies, bodies.py); `response` then holds the answer assembled
    # in the provider's non-stream shape (recording/assemble.py). Beside the bodies, so that body
    # retention and erasure drop it with them.
    ("022_request_bodies_response_stream", "ALTER TABLE request_bodies ADD COLUMN response_stream BYTEA"),
    # Access (issue 9): every key belongs to a project and has a scope; every request belongs to
    # its key's project. A deployment starts with project `default`; what existed goes there, and
    # keys that existed become `admin` (they could do everything before: nothing breaks).
    ("023_projects", """
        CREATE TABLE projects (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at BIGINT NOT NULL
        );
        INSERT INTO projects (id, name, created_at) VALUES ('default', 'default', 0);
        ALTER TABLE keys ADD COLUMN project_id TEXT NOT NULL DEFAULT 'default';
        ALTER TABLE keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
        ALTER TABLE keys ADD COLUMN expires_at BIGINT;
        ALTER TABLE requests ADD COLUMN project_id TEXT NOT NULL DEFAULT 'default';
        CREATE INDEX requests_project ON requests (project_id, created_at)"""),
    # Every rollup keyed by project first (storage/rollup_schema.py), so that a project's analytics
    # read its own index range; what the rollups held goes to `default`, like the rows in 023.
    ("024_rollups_by_project", {"sqlite": rollups_by_project_sql("sqlite"),
                                "postgres": rollups_by_project_sql("postgres")}),
    # Provider keys held by the gateway for a project (issue 9), sealed with the deployment's
    # secret_key before they reach the store (heliograph/vault.py); `fingerprint` is what is shown.
    ("026_provider_credentials", """
        CREATE TABLE provider_credentials (
            project_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            ciphertext TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (project_id, provider)
        )"""),
    # Budgets (issue 9, heliograph/budgets.py): USD per period on a key, a project or a user of a
    # project; one per (project, kind, target, period), so setting again replaces.
    ("025_budgets", """
        CREATE TABLE budgets (
            id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL,
            target_kind TEXT NOT NULL CHECK (target_kind IN ('key', 'project', 'user')),
            target TEXT NOT NULL,
            usd DOUBLE PRECISION NOT NULL CHECK (usd > 0),
            period TEXT NOT NULL CHECK (period IN ('day', 'week', 'month')),
            created_at BIGINT NOT NULL,
            UNIQUE (project_id, target_kind, target, period)
        )"""),
    # Every read of requests is one project's, so the filter indexes lead with it: `project_id = ?
    # AND user_id = ?` stays one index range. Without this SQLite walks the project's rows newest
    # first until enough match (measured at 300k rows: a rare user's requests 0.06 → 73 ms).
    ("027_request_indexes_by_project", """
        DROP INDEX requests_user;
        CREATE INDEX requests_user ON requests (project_id, user_id, created_at);
        DROP INDEX requests_session;
        CREATE INDEX requests_session ON requests (project_id, session_id, created_at);
        DROP INDEX requests_model;
        CREATE INDEX requests_model ON requests (project_id, model, created_at);
        DROP INDEX requests_status;
        CREATE INDEX requests_status ON requests (project_id, status, created_at);
        DROP INDEX requests_request_name;
        CREATE INDEX requests_request_name ON requests (project_id, request_name, created_at)"""),
    # Cache hits (a few % of rows) for the dashboard's savings (storage/cache_stats.py), without walking
    # every row of a range; covering, so only the originals are looked up (1 M rows, 30 days: 430 → 55 ms).
    ("028_requests_cache_hits", """
        CREATE INDEX requests_cache_hits ON requests (project_id, created_at, cache_reference_id, model, latency_ms)
        WHERE cache_reference_id IS NOT NULL"""),
    # Prompt management (issue 11, heliograph/prompts/): prompts of a project, immutable versions
    # (the whole body template), environments pointing at one version each, and every move of an
    # environment. `updated_at` changes with any of them: gateways poll it to refresh their copy.
    # A record's prompt_version is a version id (text; the seed's column was an integer nobody wrote)
    # and its prompt_inputs the variables it was rendered with (JSON).
    ("029_prompts", {dialect: _PROMPT_TABLES + """
        ALTER TABLE requests ADD COLUMN prompt_inputs TEXT;""" + retype + """
        CREATE INDEX requests_prompt ON requests (project_id, prompt_id, prompt_version, created_at)"""
                     for dialect, retype in (("sqlite", ""), ("postgres", """
        ALTER TABLE requests ALTER COLUMN prompt_version TYPE TEXT USING prompt_version::text;"""))}),
    # Alerts and webhooks (issue 12, storage/alerts.py). A rule's definition is one JSON document
    # (checked by heliograph/alerts/rules.py before it is stored); its state is one row per group.
    # `deliveries` is the outbox of every notification and per-request webhook call: rows written
    # in the transaction that caused them (the recorder's batch for request webhooks), drained by
    # each gateway's delivery worker, so a pending call survives SIGTERM and kill -9 like a record.
    # `leases` elects the one evaluator among gateways sharing the store.
    ("030_alerts", """
        CREATE TABLE alert_rules (
            id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL,
            name TEXT NOT NULL,
            spec TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        );
        CREATE INDEX alert_rules_project ON alert_rules (project_id, created_at);
        CREATE TABLE alert_states (
            rule_id TEXT NOT NULL,
            group_key TEXT NOT NULL,
            project_id TEXT NOT NULL,
            state TEXT NOT NULL,
            value DOUBLE PRECISION,
            baseline DOUBLE PRECISION,
            requests BIGINT,
            since BIGINT NOT NULL,
            last_breach_at BIGINT,
            evaluated_at BIGINT NOT NULL,
            PRIMARY KEY (rule_id, group_key)
        );
        CREATE TABLE alert_events (
            id TEXT PRIMARY KEY,
            rule_id TEXT NOT NULL,
            project_id TEXT NOT NULL,
            group_key TEXT NOT NULL,
            state TEXT NOT NULL,
            value DOUBLE PRECISION,
            threshold DOUBLE PRECISION NOT NULL,
            baseline DOUBLE PRECISION,
            at BIGINT NOT NULL
        );
        CREATE INDEX alert_events_rule ON alert_events (rule_id, at);
        CREATE TABLE webhooks (
            id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL,
            url TEXT NOT NULL,
            secret TEXT NOT NULL,
            sample_rate DOUBLE PRECISION NOT NULL,
            property_filters TEXT NOT NULL DEFAULT '{}',
            include_data BOOLEAN NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE INDEX webhooks_project ON webhooks (project_id, created_at);
        CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL,
            source TEXT NOT NULL,
            source_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            body TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            last_status INTEGER,
            last_error TEXT
        );
        CREATE INDEX deliveries_due ON deliveries (status, next_at);
        CREATE INDEX deliveries_project ON deliveries (project_id, created_at);
        CREATE INDEX deliveries_source ON deliveries (source_id, created_at);
        CREATE INDEX deliveries_created ON deliveries (created_at);
        CREATE TABLE budget_notices (
            budget_id TEXT NOT NULL,
            period_start TEXT NOT NULL,
            level INTEGER NOT NULL,
            at BIGINT NOT NULL,
            PRIMARY KEY (budget_id, period_start, level)
        );
        CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at BIGINT NOT NULL
        )"""),
    # Cache-hit-rate alerts count the hits of a window per group (rollups do not keep them): covering,
    # so grouping by user, provider or request name reads only this small index (a few % of rows).
    ("030_alerts_cache_hits", """
        CREATE INDEX requests_cache_hit_groups ON requests
            (project_id, created_at, model, provider, user_id, request_name) WHERE cache_reference_id IS NOT NULL"""),
    # Cache hits as a rollup sum (cache_hit_rate from the rollups like every other metric): a column in
    # every rollup table, filled from the rows (storage/rollups.py, which says why 030's index stays).
    ("031_rollups_cache_hits", backfill_cache_hits),
]


def run_step(tx: Any, step: Step, dialect: str) -> None:
    """Apply one step inside the caller's transaction (`tx`: something with execute/executemany)."""
    if callable(step):
        step(tx, dialect)
        return
    for statement in migration_sql(step, dialect):
        tx.execute(statement)


def migration_sql(step: str | Mapping[str, str], dialect: str) -> list[str]:
    """The statements of one step for one dialect."""
    sql = step if isinstance(step, str) else step[dialect]
    return [statement for statement in sql.split(";") if statement.strip()]
