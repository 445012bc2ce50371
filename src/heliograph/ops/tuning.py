"""How a process that serves calls uses the machine: the garbage collector's settings (the
gateway's and its writer's), and the core each of several workers runs on."""

from __future__ import annotations

import fcntl
import gc
import logging
import os
from pathlib import Path
from typing import IO

log = logging.getLogger("heliograph.server")

# The young generation is collected every GC_THRESHOLDS[0] new container objects, not every 700
# (Python's default): a call allocates hundreds, so the default collected several times per call
# and each pass walked the objects of every call in flight. Saturation on one core, medians of
# interleaved rounds (issue 14): 20,000 gave +14 % req/s over 700; 5,000 the same as 20,000, with
# pauses a quarter as long (a pass walks at most that many objects); 100,000 gave 6 % less.
GC_THRESHOLDS = (5_000, 20, 100)


def settle_collector() -> None:
    """Called once start-up is done: what exists now lives as long as the process, so it is moved
    out of the collector's way (a full collection under load then walks only what calls allocate,
    issue 8), and the thresholds above apply from here on."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


_claimed: list[IO[str]] = []     # the slot's lock, held as long as the worker lives


def claim_core(folder: Path, workers: int) -> int | None:
    """Pin this worker process, every thread it has and will start, to one core; the core.

    For `--workers N` with no core to spare (settings.pinned_workers). Unpinned, a worker's event
    loop and recorder thread ran on both cores at once and passed the GIL between them, a futex
    wait and a cross-core wake each time, while the other worker did the same. Pinned, they take
    turns on one core as a single worker does. `--workers 2` on 2 cores, pinned against unpinned in
    alternating rounds: faster in 11 of 12, median +17 % req/s, voluntary context switches a call
    0.8 -> 0.3; against one worker 1.55-2.03x pinned, 1.42-1.73x unpinned (issue 14).

    Worker i takes the first free slot of `workers` (a lock file in `folder`, shared by the
    workers) and core i modulo the cores it may use. The lock goes with the process, so a worker
    started again after a crash takes the slot and core its predecessor left. None: no slot free
    (more workers than this run started with), so this worker is left where the kernel puts it."""
    slot = _free_slot(folder, workers)
    if slot is None:
        return None
    cores = sorted(os.sched_getaffinity(0))
    core = cores[slot % len(cores)]
    for thread in os.listdir("/proc/self/task"):    # uvicorn's own threads too; new ones inherit the core
        try:
            os.sched_setaffinity(int(thread), {core})
        except ProcessLookupError:                  # a thread that just ended
            pass
    return core


def _free_slot(folder: Path, workers: int) -> int | None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for slot in range(workers):
            lock = open(folder / f"worker-{slot}.lock", "a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            _claimed.append(lock)
            return slot
        log.warning("no free core slot among %d for worker %d; the kernel places it", workers, os.getpid())
    except OSError as exc:
        log.warning("worker %d not pinned to a core: %s", os.getpid(), exc)
    return None
