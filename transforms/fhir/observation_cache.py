"""Observations this writer has written, by id: the read before a merge can be skipped.

Why: on a stream the same Observation (an hour of SampledData, say) is updated by every
pane of its window; reading it back from the server before each merge costs a round trip
and server time, although the writer already holds what the server answered last time.
The reference keeps the same kind of cache (``ObservationCache``: 5,000 entries, an hour).

Safety does not depend on the cache being fresh: a cached Observation is only used as the
base of a merge, and the write that follows carries ``If-Match`` of the cached version, so
if anyone changed the resource since, the server answers 412, the writer drops the entry,
re-reads and merges again. The cache is not state that can be lost either: losing it
(a new worker, an expiry) only means the next write reads first.

Bounded in entries (least recently used goes first) and in age (``ttl_seconds`` from the
write, like the reference's absolute expiry). Not thread-safe: the writer uses it from the
thread that calls ``write`` only.
"""
from __future__ import annotations

import collections
import time
from typing import Callable, Optional


class ObservationCache:
    def __init__(self, max_entries: int = 5000, ttl_seconds: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic):
        if max_entries < 0 or ttl_seconds < 0:
            raise ValueError("cache size and age must be >= 0")
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: "collections.OrderedDict[str, tuple[float, dict]]" = collections.OrderedDict()
        #: for tests and benchmarks: lookups answered from the cache / not
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, rid: str) -> Optional[dict]:
        """The cached Observation (with ``meta.versionId``), or None when absent or expired."""
        entry = self._entries.get(rid)
        if entry is None:
            self.misses += 1
            return None
        expires, resource = entry
        if self._clock() >= expires:
            del self._entries[rid]
            self.misses += 1
            return None
        self._entries.move_to_end(rid)
        self.hits += 1
        return resource

    def put(self, rid: str, resource: Optional[dict]) -> None:
        """Remember what the server holds now; a resource without a version is not kept
        (no ``If-Match`` could be sent for it, so it cannot stand in for a read)."""
        if self.max_entries == 0:
            return
        if not resource or not (resource.get("meta") or {}).get("versionId"):
            self._entries.pop(rid, None)
            return
        self._entries[rid] = (self._clock() + self.ttl_seconds, resource)
        self._entries.move_to_end(rid)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, rid: str) -> None:
        self._entries.pop(rid, None)
