"""The semantic index of one process: per scope, a float32 matrix of unit vectors.

Vectors are normalised once, when stored, so a lookup is one matrix-vector product (numpy): about
0.2 ms of CPU at 10,000 vectors of 256 dimensions, where the Python loop it replaced took 60 ms
(`bench/semantic_lookup.py`). The memory backend keeps its vectors here; the Redis backend keeps a
copy here and brings it up to date from Redis before each lookup.

Bounds (the defaults; `open_state` and the backends take others):

    per scope     MAX_VECTORS_PER_SCOPE = 10,000 vectors; a new one replaces the oldest (a ring)
    per process   MAX_VECTORS = 50,000 vector rows over all scopes, and MAX_SCOPES = 10,000 scopes;
                  the least recently used scope is dropped whole until the rest fit

A row costs dims × 4 bytes (float32) + 8 (its expiry) + its value key (~120 bytes for the
64-hex-digit cache key): ~1.1 KiB at the gateway's 256 dimensions, so at most ~11 MiB for one scope
and ~57 MiB for the process. Rows are allocated in doubling steps and counted as allocated, so the
bound is on memory held, not only on vectors live. Expired rows are skipped by the lookup and
overwritten by the ring; a scope whose rows have all expired is dropped.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

MAX_VECTORS_PER_SCOPE = 10_000
MAX_VECTORS = 50_000
MAX_SCOPES = 10_000
_FIRST_ROWS = 4

Vector = npt.NDArray[np.float32]


def unit_vector(vector: Sequence[float]) -> Vector:
    """float32 unit vector: cosine similarity becomes a dot product, at 4 bytes per dimension."""
    values = np.asarray(vector, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("a vector is a non-empty sequence of numbers")
    norm = math.sqrt(float(values @ values))
    if norm == 0 or not math.isfinite(norm):
        raise ValueError("cannot index a zero or non-finite vector")
    return (values / norm).astype(np.float32)


class ScopeIndex:
    """The vectors of one scope, all of one dimension: a ring of at most `limit` rows."""

    __slots__ = ("count", "cursor", "dims", "expires", "head", "keys", "latest", "limit", "matrix")

    def __init__(self, dims: int, limit: int, cursor: tuple[int, int] = (0, 0)) -> None:
        self.dims = dims
        self.limit = limit
        self.matrix: Vector = np.empty((0, dims), dtype=np.float32)
        self.expires: npt.NDArray[np.float64] = np.empty(0, dtype=np.float64)
        self.keys: list[str] = []
        self.count = 0                   # rows filled; rows [0, count) are searched
        self.head = 0                    # the oldest row, overwritten next, once count == limit
        self.latest = -math.inf          # no row is live after this
        self.cursor = cursor             # Redis: the last stream entry id applied

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[0])

    def add(self, unit: Vector, value_key: str, expires_at: float) -> int:
        """Store one row; how many rows were allocated for it (0 unless the matrix grew)."""
        grown = 0
        if self.count < self.limit:
            if self.count == self.rows:
                grown = self._grow()
            row = self.count
            self.count += 1
            self.keys.append(value_key)
        else:
            row = self.head
            self.head = (self.head + 1) % self.limit
            self.keys[row] = value_key
        self.matrix[row] = unit
        self.expires[row] = expires_at
        self.latest = max(self.latest, expires_at)
        return grown

    def nearest(self, query: Vector, threshold: float, now: float) -> tuple[str, float] | None:
        if query.shape[0] != self.dims:
            return None          # another embedding model wrote this scope: never a match
        if self.count == 0:
            return None
        # einsum, not `@`: BLAS would spread this over threads that spin for a core on a busy
        # machine (4x the CPU measured under load); einsum's one-thread SIMD loop costs the same
        # alone and stays flat. Float32 accumulation errs by < 3e-7 at 256 dimensions.
        similarities = np.einsum("ij,j->i", self.matrix[:self.count], query)
        similarities[self.expires[:self.count] <= now] = -2.0
        best = int(similarities.argmax())
        similarity = float(similarities[best])
        # float32 rounding: an identical text must still pass a threshold of 1.0 (and stay ≤ 1)
        if similarity < threshold - 1e-6:
            return None
        return self.keys[best], min(1.0, similarity)

    def _grow(self) -> int:
        rows = min(self.limit, max(_FIRST_ROWS, 2 * self.rows))
        matrix = np.empty((rows, self.dims), dtype=np.float32)
        matrix[:self.count] = self.matrix[:self.count]
        expires = np.empty(rows, dtype=np.float64)
        expires[:self.count] = self.expires[:self.count]
        grown = rows - self.rows
        self.matrix, self.expires = matrix, expires
        return grown


class VectorIndex:
    """Scopes in least-recently-used order under one row budget. No I/O, no awaits: every method
    finishes before another coroutine runs, so the event loop needs no locks."""

    def __init__(self, max_vectors_per_scope: int = MAX_VECTORS_PER_SCOPE, max_vectors: int = MAX_VECTORS,
                 max_scopes: int = MAX_SCOPES) -> None:
        if min(max_vectors_per_scope, max_vectors, max_scopes) < 1:
            raise ValueError("vector bounds must be at least 1")
        self.max_vectors_per_scope = min(max_vectors_per_scope, max_vectors)
        self.max_vectors = max_vectors
        self.max_scopes = max_scopes
        self.rows = 0                     # allocated over all scopes
        self._scopes: OrderedDict[str, ScopeIndex] = OrderedDict()

    def __len__(self) -> int:
        return len(self._scopes)

    def scope(self, scope: str) -> ScopeIndex | None:
        return self._scopes.get(scope)

    def cursor(self, scope: str) -> tuple[int, int]:
        index = self._scopes.get(scope)
        return (0, 0) if index is None else index.cursor

    def add(self, scope: str, unit: Vector, value_key: str, expires_at: float) -> None:
        index = self._scopes.get(scope)
        if index is None or index.dims != unit.shape[0]:
            # A scope written by another embedding model starts over: the newest model is the one in use.
            cursor = (0, 0) if index is None else index.cursor
            self.drop(scope)
            index = self._scopes[scope] = ScopeIndex(unit.shape[0], self.max_vectors_per_scope, cursor)
        self._scopes.move_to_end(scope)
        self.rows += index.add(unit, value_key, expires_at)
        # Never drops `scope` itself: it is the most recent, and alone it fits (limit ≤ max_vectors).
        while self.rows > self.max_vectors or len(self._scopes) > self.max_scopes:
            self.drop(next(iter(self._scopes)))

    def advance(self, scope: str, cursor: tuple[int, int]) -> None:
        """Record the last Redis stream entry applied to `scope` (kept only while the scope is)."""
        index = self._scopes.get(scope)
        if index is not None:
            index.cursor = max(index.cursor, cursor)

    def nearest(self, scope: str, query: Vector, threshold: float, now: float) -> tuple[str, float] | None:
        index = self._scopes.get(scope)
        if index is None:
            return None
        if index.latest <= now:
            self.drop(scope)
            return None
        self._scopes.move_to_end(scope)
        return index.nearest(query, threshold, now)

    def drop(self, scope: str) -> None:
        index = self._scopes.pop(scope, None)
        if index is not None:
            self.rows -= index.rows
