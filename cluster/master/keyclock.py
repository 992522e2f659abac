"""When was each needle key handed out? The age guard of fsck's orphan collection.

A needle on a volume that no chunk list references is either an orphan (its write never got
committed: a gateway or client died midway) or a write in flight (the gateway stored it and its
commit is still to come; a FUSE file open for writing commits its chunks only at flush or
close). The needle format has no timestamp, but keys come from the master's sequencer and only
grow, so the master can say "every key below H was handed out at or before time t": it samples
the highest key handed out (Assign) once a second. QueueOrphans then only queues needles whose
key is below the high-water mark of `min_age_s` ago, as SeaweedFS's volume.fsck only touches
needles older than its cutoff time.

At start the clock knows one sample: the durable needle-key counter, which every key handed out
before this master started is below.

Locking: one lock guards the samples; note() is called on every Assign, so it is O(1).
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

RESOLUTION_S = 1.0
KEEP_S = 24 * 3600.0


class KeyClock:
    def __init__(self, start_high: int, clock: Callable[[], float] = time.monotonic,
                 resolution_s: float = RESOLUTION_S, keep_s: float = KEEP_S):
        self._clock = clock
        self._resolution = resolution_s
        self._keep = keep_s
        self._lock = threading.Lock()
        now = clock()
        # (time, high): every key below `high` was handed out at or before `time`.
        self._samples: collections.deque[tuple[float, int]] = collections.deque([(now, start_high)])
        self._bucket_start = now
        self._high = start_high

    def note(self, high: int) -> None:
        """Keys below `high` have now been handed out."""
        now = self._clock()
        with self._lock:
            if high <= self._high:
                return
            self._high = high
            if now - self._bucket_start >= self._resolution:
                self._samples.append((now, high))
                self._bucket_start = now
                while len(self._samples) > 2 and now - self._samples[1][0] > self._keep:
                    self._samples.popleft()
            else:
                # Same bucket: move the newest sample forward (its time must be no earlier
                # than the hand-out it describes).
                self._samples[-1] = (now, high)

    def high(self) -> int:
        with self._lock:
            return self._high

    def cutoff(self, min_age_s: float) -> int:
        """A key below the result was handed out at least `min_age_s` seconds ago (0: no key
        is known to be that old)."""
        if min_age_s <= 0:
            return self.high()
        limit = self._clock() - min_age_s
        with self._lock:
            best = 0
            for t, high in self._samples:
                if t > limit:
                    break
                best = high
            return best
