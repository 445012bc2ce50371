"""The garbage collector's settings for a process that serves calls: the gateway's and its writer's."""

from __future__ import annotations

import gc

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
