"""Durable sequencers for needle keys and volume ids.

A sequencer hands out numbers from a block it reserved in the metadata store: it persists the
new high-water mark (one short transaction) BEFORE handing out any number of the block, so a
master that crashes and restarts starts above everything it may have handed out. A restart
wastes at most one block of keys, which a 64-bit key space does not miss.
"""
from __future__ import annotations

import threading

from cluster.master import schema
from cluster.master.store import MetadataStore

KEY_STEP = 10_000


class Sequencer:
    """Thread-safe: `take(n)` returns the first of n consecutive, never-reissued numbers."""

    def __init__(self, store: MetadataStore, counter: str, step: int = KEY_STEP):
        if step < 1:
            raise ValueError("step must be >= 1")
        self._store = store
        self._counter = counter
        self._step = step
        self._lock = threading.Lock()
        self._next = 0
        self._limit = 0  # [next, limit) is reserved and unused

    def take(self, n: int = 1) -> int:
        if n < 1:
            raise ValueError("n must be >= 1")
        with self._lock:
            if self._limit - self._next < n:
                # A fresh block, big enough for n; the remainder of the old one is skipped so
                # the numbers stay consecutive.
                size = max(self._step, n)
                self._next = self._store.advance_counter(self._counter, size)
                self._limit = self._next + size
            first = self._next
            self._next += n
            return first

    def ensure_above(self, value: int) -> None:
        """Never hand out `value` or anything below it (e.g. a volume id seen in a heartbeat
        that this database does not remember)."""
        with self._lock:
            self._store.raise_counter(self._counter, value + 1)
            if self._next <= value:
                self._next = self._limit = 0


def needle_keys(store: MetadataStore, step: int = KEY_STEP) -> Sequencer:
    return Sequencer(store, schema.COUNTER_NEEDLE_KEY, step)


def volume_ids(store: MetadataStore) -> Sequencer:
    # Step 1: volume ids are few and precious (32 bits); each one is persisted as it goes out.
    return Sequencer(store, schema.COUNTER_VOLUME_ID, 1)
