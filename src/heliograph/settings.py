"""Every setting of Heliograph, in one table.

Precedence: command line > environment > config file (TOML) > default. A key in the config
file that is not in this table is an error, so a typo never silently does nothing.

Besides the scalar settings, the config file may hold four tables:

    [upstreams]        provider = "origin"        (same as HELIOGRAPH_UPSTREAM_<PROVIDER>)
    [provider_keys]    provider = "secret"        (same as HELIOGRAPH_PROVIDER_KEY_<PROVIDER>)
    [prices."model"]   input = 2.5, output = 10   (USD per million tokens; cache_read, cache_write)
    gateway_allow = ["https://llm.internal.example"]

A `HELIOGRAPH_*` variable that is not a setting, and a provider name the route table does not know
in `HELIOGRAPH_UPSTREAM_<P>` / `HELIOGRAPH_PROVIDER_KEY_<P>` (or those tables), are errors with the
nearest known name, for the same reason: `HELIOGRAPH_DB_ULR` must not quietly use the default store.
A new OpenAI-compatible provider is declared by naming it in `custom_providers`.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "HELIOGRAPH_" + self.name.upper()


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _integer(value: str | int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value).strip().replace("_", ""))
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None


def _number(value: str | float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None


def _non_negative(value: str | float) -> float:
    number = _number(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"expected a number of at least 0, got {value!r}")
    return number


def _positive(value: str | float) -> float:
    number = _non_negative(value)
    if number == 0:
        raise ValueError("expected a number above 0")
    return number


def _count(value: str | int) -> int:
    number = _integer(value)
    if number < 0:
        raise ValueError(f"expected a whole number of at least 0, got {value!r}")
    return number


def _port(value: str | int) -> int:
    number = _integer(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"expected a port number from 0 to 65535, got {value!r}")
    return number


def _at_least_one(value: str | int) -> int:
    number = _integer(value)
    if number < 1:
        raise ValueError(f"expected a whole number of at least 1, got {value!r}")
    return number


def _origins(value: str | list[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    return tuple(item.strip().rstrip("/") for item in items if item.strip())


def _names(value: str | list[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    return tuple(item.strip().lower() for item in items if item.strip())


def _choice(*allowed: str) -> Callable[[str], str]:
    def convert(value: str) -> str:
        lowered = str(value).strip().lower()
        if lowered not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return lowered
    convert.__name__ = "one of " + "|".join(allowed)
    return convert


def _http_url(value: str) -> str:
    value = str(value).strip().rstrip("/")
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL (or nothing), got {value!r}")
    return value


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "127.0.0.1", "Address to listen on."),
    Setting("port", _port, 8787, "Port to listen on."),
    Setting("db_url", str, "sqlite:///.heliograph/heliograph.db",
            "Where records are stored: sqlite:///relative.db, sqlite:////abs.db or postgresql://user@host:port/db."),
    Setting("redis_url", str, "", "Redis for shared cache and rate-limit state; empty means in-process state."),
    Setting("redis_key_prefix", str, "heliograph:", "Prefix of every Redis key, so deployments can share a Redis."),
    Setting("redis_timeout_ms", _positive, 100.0,
            "Milliseconds a Redis connect, read or write may take before the cache or rate limit fails open "
            "(a miss; the request let through). Redis nearby answers in well under 1 ms, so this only bounds "
            "what an unreachable Redis costs a request; much lower risks failing open when the event loop "
            "is merely busy."),
    Setting("workers", _at_least_one, 1, "Worker processes; more than one needs Redis."),
    Setting("allow_unauthenticated", _bool, False,
            "Proxy requests without Helicone-Auth (only allowed when bound to a loopback address)."),
    Setting("journal_dir", str, "",
            "Where records wait when the store is unavailable; default: a 'journal' folder beside a SQLite file, else ./.heliograph/journal."),
    Setting("upstream_connect_timeout", _positive, 10.0, "Seconds to wait for a connection to a provider."),
    Setting("upstream_read_timeout", _positive, 600.0,
            "Seconds a provider may stay silent (before the first byte or between stream chunks) before the call fails."),
    Setting("header_timeout", _positive, 10.0,
            "Seconds a client has to send a request's complete headers, counted from the connection's "
            "opening (or from the first byte of a later request on a kept-alive connection); then the "
            "connection is closed. Headers are a few hundred bytes: only a stuck or hostile client needs more."),
    Setting("max_header_bytes", _count, 65_536,
            "Bytes of request headers at most (names and values); more is a 431. SDKs send about a kilobyte."),
    Setting("max_request_body_bytes", _count, 32 * 1024 * 1024,
            "Bytes of a request body at most; more is a 413 before anything is forwarded. Bodies are held in "
            "memory while a call is in flight; raise it for large file uploads through /files."),
    Setting("body_timeout", _positive, 30.0,
            "Seconds a client may send nothing of a request body it has started (before the first chunk or "
            "between two); then it gets a 408 in its SDK's shape and the connection is closed."),
    Setting("keep_alive_timeout", _count, 75,
            "Seconds an idle keep-alive connection stays open between two requests. Longer than the 60 s "
            "idle timeout of common load balancers and the 5 s of SDK connection pools, so the client side "
            "closes first and never reuses a connection the gateway is closing; idle connections are the "
            "first closed when max_connections is reached."),
    Setting("max_connections", _count, 10_000,
            "Open client connections per worker. Above it the longest-idle connection (none in a request, "
            "or still sending its headers) is closed to make room, or the new one gets a 503 if none is idle. "
            "Lowered at start to what the open-file limit allows (two descriptors a connection: the client "
            "and the provider), after raising the soft limit toward the hard one. 0: only the open-file limit."),
    Setting("max_in_flight", _count, 2_048,
            "Proxied calls in progress per worker above which new ones are refused at once with 503 and "
            "Retry-After (before authentication, so not recorded) instead of queueing. 0: no limit."),
    Setting("recorder_queue_size", _at_least_one, 50_000, "Records waiting to be written before new ones go to the disk journal."),
    Setting("recorder_batch_size", _at_least_one, 500, "Records written per transaction at most."),
    Setting("recorder_flush_ms", _count, 50,
            "Longest time a record waits in memory before it is written: what a kill -9 (or power loss) can "
            "lose of answered calls. Lower costs more transactions when traffic is light; under load batches "
            "fill by size first."),
    Setting("recorder_process", _bool, True,
            "Build and store records in a process of its own, so that work (parsing, pricing, rows, rollups, "
            "commit) runs on another core than the proxy; only when the gateway may use more cores than it "
            "has workers (otherwise a thread is cheaper). false: always a thread of the gateway's process."),
    Setting("pin_workers", _bool, True,
            "With --workers N and no more cores than workers, each worker process and its threads run on one "
            "core (a core of its own while there are enough), so a worker's event loop and its recorder "
            "thread take turns on one core instead of passing the GIL between two. false: the kernel places them."),
    Setting("drain_timeout", _non_negative, 5.0,
            "Seconds the recorder keeps trying the store on shutdown before leaving records in the journal "
            "(part of shutdown_timeout)."),
    Setting("shutdown_timeout", _positive, 25.0,
            "Seconds from SIGTERM to exit: in-flight calls get this minus drain_timeout to finish (streams still "
            "open then are cut and recorded as partial), then the recorder drains. Below the 30 s an orchestrator "
            "usually grants."),
    Setting("gateway_allow", _origins, (), "Extra origins Helicone-Target-URL may name (comma-separated)."),
    Setting("semantic_cache_model", str, "text-embedding-3-small",
            "Embeddings model (OpenAI provider) for Helicone-Cache-Semantic requests."),
    Setting("log_level", _choice(*LOG_LEVELS), "info",
            "Least severe log lines written: debug, info, warning, error or critical."),
    Setting("log_format", _choice("text", "json"), "text",
            "text: one readable line per event; json: one JSON object per line (for Loki, Elastic, CloudWatch…). "
            "The web server's lines and Heliograph's share it."),
    Setting("access_log", _bool, True,
            "One INFO line per proxied call (id, project, key name, provider, model, status, latency, overhead, "
            "tokens, cost, cache, retries), written by the recorder after the answer, never on the request path. "
            "Never a credential or a body."),
    Setting("otel_endpoint", _http_url, "",
            "OpenTelemetry: the OTLP/HTTP base URL (spans go to <base>/v1/traces), e.g. http://otel-collector:4318. "
            "One span per proxied call (GenAI semantic conventions), exported by the recorder; a client's W3C "
            "traceparent is honoured and passed on to the provider. Empty: off."),
    Setting("otel_service_name", str, "heliograph", "service.name of the exported spans."),
    Setting("custom_providers", _names, (),
            "Names of extra OpenAI-compatible providers (comma-separated) that HELIOGRAPH_UPSTREAM_<NAME> may "
            "define, served under /<name>/. Any other name the route table does not know is refused as a typo."),
    Setting("body_retention_days", _non_negative, 30.0,
            "Days request and response bodies are kept; 0 keeps them forever. Bodies are most of the "
            "database (kilobytes a call against a few hundred bytes of metrics), so a month keeps a "
            "laptop's disk in check while recent calls stay inspectable. Metrics and rollups stay."),
    Setting("metrics_retention_days", _non_negative, 400.0,
            "Days request rows (metrics, properties, scores) are kept; 0 keeps them forever. 400 days "
            "allows year-over-year comparisons; rollups (analytics) are kept beyond it."),
    Setting("retention_interval_seconds", _positive, 300.0,
            "Seconds between two retention passes of a running gateway (`heliograph db prune` runs one now)."),
    Setting("alert_interval", _positive, 60.0,
            "Seconds between two evaluations of the alert rules (by one gateway of those sharing the store: "
            "a lease in the store elects it, and another takes over within two intervals if it stops)."),
    Setting("alert_cooldown", _non_negative, 300.0,
            "Seconds a firing alert's metric must stay on the right side of its threshold before the alert "
            "resolves, so that a flapping metric does not send a notification every interval."),
    Setting("delivery_timeout", _positive, 10.0,
            "Seconds a webhook, Slack or SMTP server has to take one notification before the attempt "
            "counts as failed (and is retried)."),
    Setting("delivery_retry_base", _positive, 5.0,
            "Seconds before the first retry of a failed notification; each further retry waits twice as "
            "long, at most 5 minutes apart."),
    Setting("delivery_give_up", _positive, 3600.0,
            "Seconds after which a notification that still could not be delivered is marked failed."),
    Setting("public_url", str, "",
            "The dashboard's address as people reach it (e.g. https://heliograph.example.com), for the links "
            "in notifications; default http://<host>:<port>."),
    Setting("smtp_host", str, "", "SMTP server for email alert channels; empty: email channels are refused."),
    Setting("smtp_port", int, 587, "SMTP server port."),
    Setting("smtp_username", str, "", "SMTP login name; empty: no login."),
    Setting("smtp_password", str, "", "SMTP login password.", secret=True),
    Setting("smtp_from", str, "heliograph@localhost", "Sender address of alert emails."),
    Setting("smtp_starttls", _bool, True,
            "Upgrade the SMTP connection with STARTTLS before logging in (the server's certificate is verified)."),
    Setting("secret_key", str, "",
            "Encrypts the provider keys projects store in the database (`heliograph provider-keys`): a Fernet key "
            "(used as is) or any passphrase of 16 characters or more (stretched with scrypt). Needed to store one, "
            "and to start once any is stored; the same value on every gateway of a database.", secret=True),
)

BY_NAME = {s.name: s for s in SETTINGS}
TABLES = ("upstreams", "provider_keys", "prices")


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8787
    db_url: str = "sqlite:///.heliograph/heliograph.db"
    redis_url: str = ""
    redis_key_prefix: str = "heliograph:"
    redis_timeout_ms: float = 100.0
    workers: int = 1
    allow_unauthenticated: bool = False
    journal_dir: str = ""
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 600.0
    header_timeout: float = 10.0
    max_header_bytes: int = 65_536
    max_request_body_bytes: int = 32 * 1024 * 1024
    body_timeout: float = 30.0
    keep_alive_timeout: int = 75
    max_connections: int = 10_000
    max_in_flight: int = 2_048
    recorder_queue_size: int = 50_000
    recorder_batch_size: int = 500
    recorder_flush_ms: int = 50
    recorder_process: bool = True
    pin_workers: bool = True
    drain_timeout: float = 5.0
    shutdown_timeout: float = 25.0
    gateway_allow: tuple[str, ...] = ()
    semantic_cache_model: str = "text-embedding-3-small"
    log_level: str = "info"
    log_format: str = "text"
    access_log: bool = True
    otel_endpoint: str = ""
    otel_service_name: str = "heliograph"
    custom_providers: tuple[str, ...] = ()
    body_retention_days: float = 30.0
    metrics_retention_days: float = 400.0
    retention_interval_seconds: float = 300.0
    alert_interval: float = 60.0
    alert_cooldown: float = 300.0
    delivery_timeout: float = 10.0
    delivery_retry_base: float = 5.0
    delivery_give_up: float = 3600.0
    public_url: str = ""
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "heliograph@localhost"
    smtp_starttls: bool = True
    secret_key: str = ""
    upstreams: Mapping[str, str] = field(default_factory=dict)
    provider_keys: Mapping[str, str] = field(default_factory=dict)
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def journal_path(self) -> Path:
        if self.journal_dir:
            return Path(self.journal_dir)
        if self.db_url.startswith("sqlite:///"):
            return sqlite_path(self.db_url).parent / "journal"
        return Path(".heliograph/journal")

    @property
    def writer_process(self) -> bool:
        """Whether the recorder writes from a process of its own: asked for (`recorder_process`) and
        there are more cores than workers, so a writer has a core the proxies don't already fill.
        Otherwise a thread is cheaper: no pickling, and the kernel would preempt a proxy for the
        writer (streamed chunks then arrive batched)."""
        return self.recorder_process and usable_cores() > self.workers

    @property
    def pinned_workers(self) -> bool:
        """Whether each worker claims a core (ops/tuning.claim_core): several workers and no core to spare."""
        return (self.pin_workers and self.workers > 1 and usable_cores() <= self.workers
                and hasattr(os, "sched_setaffinity"))

    def masked(self) -> dict[str, Any]:
        """The resolved values, secrets masked, for `heliograph config show`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["provider_keys"] = {k: "****" for k in self.provider_keys}
        values |= {s.name: "****" for s in SETTINGS if s.secret and values[s.name]}
        values["db_url"] = _mask_url_password(self.db_url)
        values["redis_url"] = _mask_url_password(self.redis_url)
        return values


def usable_cores() -> int:
    """The cores this process may run on (its affinity: taskset, a container's cpuset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sqlite_path(url: str) -> Path:
    """SQLAlchemy's convention: three slashes relative, four absolute."""
    return Path(url.removeprefix("sqlite:///"))


def _mask_url_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:****@{host}"


# Variables with the prefix that are not settings: the config file's path, what `serve` hands its
# workers, the key clients export for curl (the dashboard's examples), and the test suite's services.
NOT_SETTINGS = frozenset({"HELIOGRAPH_CONFIG", "HELIOGRAPH_RESOLVED_SETTINGS", "HELIOGRAPH_KEY"})
NOT_SETTINGS_PREFIXES = ("HELIOGRAPH_TEST_",)
UPSTREAM_PREFIX = "HELIOGRAPH_UPSTREAM_"
PROVIDER_KEY_PREFIX = "HELIOGRAPH_PROVIDER_KEY_"


def _did_you_mean(word: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def load_settings(cli: Mapping[str, Any] | None = None, config_file: str | None = None,
                  environ: Mapping[str, str] | None = None, providers: Collection[str] | None = None) -> Settings:
    """The settings from every source. With `providers` (the route table's names), provider names
    in the upstream and provider-key tables are checked against them and `custom_providers`."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {t: {} for t in TABLES}

    config_file = config_file or environ.get("HELIOGRAPH_CONFIG")
    if config_file:
        with open(config_file, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"config {config_file}: not valid TOML ({exc})") from None
        for key, value in data.items():
            if key in TABLES:
                if not isinstance(value, dict):
                    raise ValueError(f"config: [{key}] must be a table")
                tables[key].update(value)
            elif key in BY_NAME:
                values[key] = _convert(BY_NAME[key], value, f"config key {key!r}")
            else:
                raise ValueError(f"config: unknown key {key!r}{_did_you_mean(key, [*BY_NAME, *TABLES])} "
                                 f"(known: {', '.join(sorted([*BY_NAME, *TABLES]))})")

    for setting in SETTINGS:
        if setting.env in environ:
            values[setting.name] = _convert(setting, environ[setting.env], setting.env)
    setting_envs = {s.env for s in SETTINGS}
    unknown = []
    for name, value in environ.items():
        if not name.startswith("HELIOGRAPH_") or name in setting_envs:
            continue    # HELIOGRAPH_UPSTREAM_READ_TIMEOUT is a setting, not a provider called read_timeout
        if name.startswith(UPSTREAM_PREFIX):
            if value:
                tables["upstreams"][name.removeprefix(UPSTREAM_PREFIX).lower()] = value
        elif name.startswith(PROVIDER_KEY_PREFIX):
            if value:
                tables["provider_keys"][name.removeprefix(PROVIDER_KEY_PREFIX).lower()] = value
        elif name not in NOT_SETTINGS and not name.startswith(NOT_SETTINGS_PREFIXES):
            unknown.append(name)
    if unknown:
        known = [*setting_envs, *NOT_SETTINGS]
        raise ValueError("; ".join(f"unknown environment variable {name}{_did_you_mean(name, known)}"
                                   for name in sorted(unknown)) +
                         " (every setting and its variable: heliograph serve --help)")

    for name, value in (cli or {}).items():
        if value is not None:
            values[name] = _convert(BY_NAME[name], value, f"--{name.replace('_', '-')}")

    upstreams = {k.lower(): str(v).rstrip("/") for k, v in tables["upstreams"].items()}
    provider_keys = {k.lower(): str(v) for k, v in tables["provider_keys"].items()}
    if providers is not None:
        custom = values.get("custom_providers", ())
        _check_providers(upstreams, UPSTREAM_PREFIX, "upstreams", {*providers, *custom}, custom)
        _check_providers(provider_keys, PROVIDER_KEY_PREFIX, "provider_keys", {*providers, *custom, *upstreams}, custom)
    return Settings(**values, upstreams=upstreams, provider_keys=provider_keys, prices=tables["prices"])


def _check_providers(table: Mapping[str, str], prefix: str, section: str, known: Collection[str],
                     custom: Collection[str]) -> None:
    for name in table:
        if name not in known:
            raise ValueError(
                f"unknown provider {name!r} in {prefix}{name.upper()} (or [{section}] in the config file)"
                f"{_did_you_mean(name, known) or '.'} To add a new OpenAI-compatible provider called {name!r}, "
                f"also list it in HELIOGRAPH_CUSTOM_PROVIDERS (now: {','.join(custom) or 'empty'}).")


def describe_store(db_url: str) -> str:
    """Where records go, in words: SQLite's file as an absolute path, other URLs without a password."""
    if db_url.startswith("sqlite:///"):
        return f"SQLite {sqlite_path(db_url).resolve()}"
    return _mask_url_password(db_url)


def _convert(setting: Setting, value: Any, where: str) -> Any:
    if setting.type in (str, int, float) and isinstance(value, setting.type) and not isinstance(value, bool):
        return value
    try:
        return setting.type(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} (the {setting.name} setting: {setting.help.split('. ')[0].rstrip('.')}): "
                         f"{exc}") from None
