"""Run the app under uvicorn (uvloop + httptools), with graceful SIGTERM handling.

On SIGTERM uvicorn stops accepting, lets in-flight requests finish, then runs the lifespan
shutdown, where the recorder drains to the store (or the journal).
"""

from __future__ import annotations

import logging

import uvicorn

from .app import create_app
from .settings import Settings

GRACEFUL_SHUTDOWN_SECONDS = 30


def run(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, loop="uvloop", http="httptools",
        lifespan="on", access_log=False, log_level=settings.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, server_header=False, date_header=False,
        proxy_headers=False)
    uvicorn.Server(config).run()
