"""Append-only disk journal for records the store could not take (yet).

Each process appends to its own `current-<pid>.jsonl`. Replaying first renames that file to a
segment, so appends never race with a replay; segments are deleted only after the store has
committed every record in them. Inserts are idempotent (by request id), so a segment replayed
twice after a crash does no harm.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .record import RawRecord


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._current = directory / f"current-{os.getpid()}.jsonl"

    def append(self, records: Iterable[RawRecord]) -> None:
        data = b"".join(r.to_json() + b"\n" for r in records)
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self._current, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())

    def size_bytes(self) -> int:
        if not self.directory.exists():
            return 0
        return sum(p.stat().st_size for p in self.directory.glob("*.jsonl") if p.exists())

    def _segments(self) -> list[Path]:
        with self._lock:
            if self._current.exists():
                self._current.rename(self.directory / f"segment-{time.time_ns()}-{os.getpid()}.jsonl")
        if not self.directory.exists():
            return []
        # Leftovers of processes that are gone (a crash, a restart) are replayed too.
        mine = [p for p in self.directory.glob("segment-*.jsonl")]
        orphans = [p for p in self.directory.glob("current-*.jsonl") if not _alive(p)]
        return sorted(mine + orphans)

    def replay(self, write: Callable[[list[RawRecord]], None], batch_size: int = 500) -> int:
        """Write journaled records through `write`; stops at the first failure (raised)."""
        replayed = 0
        for segment in self._segments():
            with open(segment, "rb") as fh:
                records = [RawRecord.from_json(line) for line in fh if line.strip()]
            for start in range(0, len(records), batch_size):
                write(records[start:start + batch_size])
            segment.unlink(missing_ok=True)  # another process may have replayed it too
            replayed += len(records)
        return replayed


def _alive(path: Path) -> bool:
    pid = int(path.stem.rsplit("-", 1)[1])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
