"""The seed's L1 cache (7.1): in memory, LRU by bytes (100 MB), TTL 60 s."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expired: int = 0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


_OVERHEAD = 160


class L1Cache:
    """Documents by id; a newer version always wins over an older one."""

    def __init__(self, max_bytes: int = 100 << 20, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.stats = CacheStats()
        self._clock = clock
        self._entries: OrderedDict[str, tuple[dict[str, Any], int, float]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, doc_id: str) -> dict[str, Any] | None:
        e = self._entries.get(doc_id)
        if e is None:
            self.stats.misses += 1
            return None
        state, _, at = e
        if self._clock() - at > self.ttl:
            self._remove(doc_id)
            self.stats.expired += 1
            self.stats.misses += 1
            return None
        self._entries.move_to_end(doc_id)
        self.stats.hits += 1
        return dict(state)

    def put(self, state: dict[str, Any]) -> None:
        doc_id = str(state["id"])
        size = len(json.dumps(state.get("value"), separators=(",", ":"))) + len(doc_id) + _OVERHEAD
        old = self._entries.get(doc_id)
        if old is not None:
            if int(old[0].get("version", 0)) > int(state.get("version", 0)):
                return
            self._remove(doc_id)
        if size > self.max_bytes:
            return
        self._entries[doc_id] = (dict(state), size, self._clock())
        self.bytes += size
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.stats.evictions += 1

    def drop(self, doc_id: str) -> None:
        if doc_id in self._entries:
            self._remove(doc_id)

    def _remove(self, doc_id: str) -> None:
        _, size, _ = self._entries.pop(doc_id)
        self.bytes -= size
