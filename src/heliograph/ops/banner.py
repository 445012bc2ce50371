"""The start-up banner: what this gateway is about to do, one line each, before it serves."""

from __future__ import annotations

import logging
import time

from .. import __version__
from ..settings import Settings, _mask_url_password, describe_store
from ..storage import open_store
from .logs import BANNER

log = logging.getLogger(BANNER)


def banner_lines(settings: Settings, active_keys: int | None) -> list[str]:
    workers = f" ({settings.workers} workers{', one core each' if settings.pinned_workers else ''})" \
        if settings.workers > 1 else ""
    lines = [
        f"Heliograph {__version__}",
        f"listening on http://{settings.host}:{settings.port}{workers}",
        f"store: {describe_store(settings.db_url)}",
        f"redis: {_mask_url_password(settings.redis_url)}" if settings.redis_url
        else "redis: off (cache and rate limits in this process)",
        f"journal: {settings.journal_path.resolve()}",
        "recorder: writes from a process of its own (recorder_process)" if settings.writer_process
        else "recorder: writes from a thread of the gateway's process "
             f"({'no core to spare for it' if settings.recorder_process else 'recorder_process off'})",
    ]
    if settings.upstreams:
        # An egress proxy may carry user:password@ in its origin.
        lines.append("upstream overrides: " + ", ".join(f"{name}={_mask_url_password(origin)}" for name, origin in
                                                         sorted(settings.upstreams.items())))
    if settings.provider_keys:
        lines.append("provider keys held for: " + ", ".join(sorted(settings.provider_keys)))
    lines.append(f"opentelemetry: spans to {settings.otel_endpoint}/v1/traces" if settings.otel_endpoint
                 else "opentelemetry: off")
    lines.append(f"logs: {settings.log_format}, level {settings.log_level}, access lines "
                 f"{'on' if settings.access_log else 'off'}")
    if active_keys is None:
        lines.append("keys: unknown (the store could not be read; see below)")
    elif active_keys == 0:
        lines.append("keys: no keys yet — run `heliograph keys create --name my-app`")
    else:
        lines.append(f"keys: {active_keys} active")
    return lines


def print_banner(settings: Settings) -> None:
    """Migrate the store (serve would at start anyway), count the keys, and log the banner."""
    active: int | None = None
    try:
        store = open_store(settings.db_url)
        try:
            store.migrate()
            now_ms = time.time() * 1000
            active = sum(1 for key in store.active_keys().values()
                         if key["expires_at"] is None or key["expires_at"] > now_ms)
        finally:
            store.close()
    except Exception as exc:    # start-up reports it properly; the banner only says it could not count
        log.warning("could not count keys in the store: %s", exc)
    for line in banner_lines(settings, active):
        log.info(line)
