"""Run the app under uvicorn (uvloop + httptools), with graceful SIGTERM handling.

On SIGTERM uvicorn stops accepting, lets in-flight requests finish, then runs the lifespan
shutdown, where the recorder drains to the store (or the journal). With several workers each
process has its own recorder and journal; shared state lives in Redis.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import orjson
import uvicorn

from .app import Heliograph, create_app
from .settings import Settings

GRACEFUL_SHUTDOWN_SECONDS = 30
SETTINGS_ENV = "HELIOGRAPH_RESOLVED_SETTINGS"


def run(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common = dict(host=settings.host, port=settings.port, loop="uvloop", http="httptools", lifespan="on",
                  access_log=False, log_level=settings.log_level, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
                  server_header=False, date_header=False, proxy_headers=False)
    if settings.workers == 1:
        uvicorn.Server(uvicorn.Config(create_app(settings), **common)).run()  # type: ignore[arg-type]
        return
    # Worker processes rebuild the app from the settings resolved here, so they all agree.
    os.environ[SETTINGS_ENV] = orjson.dumps(dataclasses.asdict(settings)).decode()
    uvicorn.run("heliograph.server:app_from_environment", factory=True, workers=settings.workers,
                **common)  # type: ignore[arg-type]


def app_from_environment() -> Heliograph:
    values = orjson.loads(os.environ[SETTINGS_ENV])
    values["gateway_allow"] = tuple(values["gateway_allow"])
    return create_app(Settings(**values))
