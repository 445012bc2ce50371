"""One logging setup for uvicorn and Heliograph: text or JSON lines on stderr.

The same dictConfig is handed to uvicorn (`log_config`), which applies it in the supervisor and in
every worker it starts, so all processes write the same format. Two loggers keep INFO whatever
`log_level` says, as a web server's access log is independent of its error log: the start-up
banner (`heliograph.banner`) and the access lines (`heliograph.access`, off with `access_log`).

Access lines are written a batch at a time (`BatchedStreamHandler`): the recorder builds them for a
batch of calls and writes them in few `write`s, as a line-buffered stderr would cost one system
call per call, ~15 % of the saturated gateway's CPU (bench/run.py). Each write is at most PIPE_BUF
bytes of whole lines: the writer process (writer.py) and the gateway share stderr, and only writes
that small reach a pipe whole, so one's line never lands inside the other's.
"""

from __future__ import annotations

import functools
import logging
import select
import time
from typing import Any

import orjson

from ..settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
BANNER = "heliograph.banner"
ACCESS = "heliograph.access"
# LogRecord attributes that are not fields someone passed in `extra`.
STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# A log line's time to the second, rendered once a second: strftime was ~1 µs of each access line.
@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


@functools.lru_cache(maxsize=4)
def _local_second(second: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, its time as logging's default (local time, `2026-12-05 01:02:27,479`)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{_local_second(int(record.created))},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601 UTC), level, logger, message, the `extra` fields, and
    the exception's traceback as `exc_info` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": f"{_utc_second(int(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):    # an access line: its fields at the top, no text to parse
            data["message"] = "request"
            data.update(access)
            return orjson.dumps(data, default=str).decode()
        data["message"] = record.getMessage()
        for name, value in record.__dict__.items():
            if name not in STANDARD_ATTRIBUTES and not name.startswith("_") and name != "color_message":
                data[name] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that keeps formatted lines until `flush` (the recorder's, after each batch)
    writes them, in writes of at most PIPE_BUF bytes; `limit` lines at most are kept."""

    def __init__(self, stream: Any = None, limit: int = 1000) -> None:
        super().__init__(stream)
        self.pending: list[str] = []
        self.limit = limit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.pending.append(line)
        if len(self.pending) >= self.limit:
            self.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            chunk: list[str] = []
            size = 0
            for line in self.pending:
                if chunk and size + len(line) + 1 > select.PIPE_BUF:
                    self._write(chunk)
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line) + 1       # characters, not bytes: a line with non-ASCII may go over
            if chunk:
                self._write(chunk)
            self.pending = []
            super().flush()
        finally:
            self.release()

    def _write(self, lines: list[str]) -> None:
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()


def log_config(settings: Settings) -> dict[str, Any]:
    """logging.config.dictConfig for every process of `serve`."""
    level = settings.log_level.upper()
    formatter: dict[str, Any] = ({"()": "heliograph.ops.logs.JsonFormatter"} if settings.log_format == "json"
                                 else {"()": "heliograph.ops.logs.TextFormatter", "fmt": TEXT_FORMAT})
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    access = handler | {"class": "heliograph.ops.logs.BatchedStreamHandler"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"main": handler, "access": access},
        "root": {"level": level, "handlers": ["main"]},
        "loggers": {
            # uvicorn's loggers would otherwise keep their own handlers and formats.
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
            "heliograph": {"level": level, "handlers": [], "propagate": True},
            BANNER: {"level": "INFO", "handlers": [], "propagate": True},
            ACCESS: {"level": "INFO" if settings.access_log else "CRITICAL", "handlers": ["access"], "propagate": False},
        },
    }


def setup_logging(settings: Settings) -> None:
    """Apply `log_config` in this process (before uvicorn does, so the banner uses it too)."""
    import logging.config
    logging.config.dictConfig(log_config(settings))
