"""ByteLRU: a thread-safe LRU of byte strings bounded by their total size.

Used for whole needles on both sides: the mount's read cache (fusefs/reader.py) and a volume
server's cache of needles it has verified (cluster/volume/reads.py).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class ByteLRU:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._data: OrderedDict[Hashable, tuple] = OrderedDict()  # key -> (value, size)
        self._bytes = 0

    def get(self, key: Hashable):
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value, size: int | None = None) -> None:
        """Cache `value` (bytes, or anything with `size` given) under `key`."""
        size = len(value) if size is None else size
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._data[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._data:
                _, (_, evicted) = self._data.popitem(last=False)
                self._bytes -= evicted

    def drop(self, key: Hashable) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]

    def __len__(self) -> int:
        return len(self._data)
