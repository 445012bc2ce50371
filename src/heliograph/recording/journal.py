"""Append-only disk journal for records the store could not take (yet).

Only the recorder's writer thread touches it. Each process appends to its own
`current-<pid>.jsonl`; replaying first renames that file to `segment-<ns>-<pid>.jsonl`, so a
segment is never appended to, and deletes a segment only after the store has committed every
record in it. Inserts are idempotent (by request id and arrival time), so a segment replayed
twice after a crash does no harm. A process replays its own segments and those of processes
that are gone (a crash, a restart), never those of a sibling that is alive.

A line that cannot be parsed (the torn last line of a process killed mid-append) and a record
the store refuses for what it contains are moved to `rejected/`, counted and logged, so one bad
line can never hold the rest back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .record import RawRecord

log = logging.getLogger("heliograph.recorder")


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rejected_dir = directory / "rejected"
        self._current = directory / f"current-{os.getpid()}.jsonl"
        self.rejected = 0

    def check_writable(self) -> None:
        """Raise OSError, naming the folder, when records could not be kept here."""
        self.directory.mkdir(parents=True, exist_ok=True)
        probe = self.directory / f".probe-{os.getpid()}"
        try:
            probe.write_bytes(b"")
        finally:
            probe.unlink(missing_ok=True)

    def append(self, records: Iterable[RawRecord]) -> None:
        data = b"".join(r.to_json() + b"\n" for r in records)
        if data:
            _append_synced(self._current, data)

    def size_bytes(self) -> int:
        if not self.directory.exists():
            return 0
        return sum(_size(p) for p in self.directory.glob("*.jsonl"))

    def pending(self) -> bool:
        """Whether any journal file this process would replay holds records."""
        return any(_size(p) for p in self._replayable())

    def reject(self, lines: Iterable[bytes], reason: str) -> None:
        """Keep what the store will never take, out of the way of what it will."""
        data = b"".join(line.rstrip(b"\n") + b"\n" for line in lines)
        if not data:
            return
        count = data.count(b"\n")
        self.rejected += count
        target = self.rejected_dir / f"rejected-{os.getpid()}.jsonl"
        _append_synced(target, data)
        log.error("%d journal line(s) moved to %s: %s", count, target, reason)

    def _replayable(self) -> list[Path]:
        if not self.directory.exists():
            return []
        found = [self._current] if self._current.exists() else []
        for path in self.directory.glob("*.jsonl"):
            if path != self._current and (_pid_of(path) == os.getpid() or not _alive(_pid_of(path))):
                found.append(path)
        return found

    def _segments(self) -> list[Path]:
        if self._current.exists():
            self._current.rename(self.directory / f"segment-{time.time_ns()}-{os.getpid()}.jsonl")
        return sorted(p for p in self._replayable() if p != self._current)

    def replay(self, write: Callable[[list[RawRecord]], None], batch_size: int = 500) -> int:
        """Write journaled records through `write`; stops at the first failure (raised)."""
        replayed = 0
        for segment in self._segments():
            records: list[RawRecord] = []
            bad: list[bytes] = []
            with open(segment, "rb") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        records.append(RawRecord.from_json(line))
                    except Exception:
                        bad.append(line)
            if bad:
                self.reject(bad, f"unreadable line(s) in {segment.name} (a crash mid-write)")
            for start in range(0, len(records), batch_size):
                write(records[start:start + batch_size])
            segment.unlink(missing_ok=True)
            replayed += len(records)
        return replayed


def _append_synced(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        if fh.tell() and not _ends_with_newline(path):
            fh.write(b"\n")  # never glue a record to a torn line
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _pid_of(path: Path) -> int:
    try:
        return int(path.stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
