"""Directory prefetch: when a program walks a directory name by name, list it once.

`stat` of every file, `open` of every file, `rm` of every file: the kernel looks each name up,
and each lookup the attribute cache cannot answer costs a master RPC (about 0.5 ms here, see
docs/performance.md). When `after` names of one directory have been looked up at the master
within `window` seconds, `DirPrefetcher` lists the directory once (one ReadDir page of at most
`limit` entries, attributes included) and caches every entry, so the rest of the walk is
answered from the cache. `weed mount` does the same with its local copy of the namespace.

What it may and may not conclude:
* Only names that exist count towards the trigger, and the listing only adds names that exist.
  A name missing from a listing taken a moment ago may have been created since by another
  mount, so "no such name" keeps going to the master (a create loop gains nothing here and
  loses nothing either).
* The entries are cached for the same attr_ttl as a lookup's answer, with the same promise:
  other mounts' changes show within attr_ttl, and an open still resolves the name at the
  master (close-to-open).
* A listing that a local change may predate is dropped: AttrCache.put_listing caches nothing
  if the cache changed while the listing was in flight.

After a listing, the directory is not listed again for `window` seconds (the cached entries
answer meanwhile); a directory bigger than `limit` is left alone for `big_quiet` seconds, as
the names past the first page would keep missing.
"""
from __future__ import annotations

import logging
import threading
import time

from cluster.common.errors import FsError
from fusefs.attrcache import AttrCache
from fusefs.paths import parent_of

log = logging.getLogger(__name__)

AFTER = 8           # names looked up at the master in one directory before it is listed
LIMIT = 10_000      # entries in the one page a prefetch asks for (the master's page maximum)
BIG_QUIET = 30.0    # seconds a directory with more than LIMIT entries is not listed again
MAX_DIRS = 4096     # directories tracked at once (the table is cleared when it fills)


class _Dir:
    __slots__ = ("busy", "count", "quiet_until", "start")

    def __init__(self, now: float):
        self.start = now
        self.count = 0
        self.quiet_until = 0.0
        self.busy = False


class DirPrefetcher:
    def __init__(self, master, cache: AttrCache, window: float, after: int = AFTER,
                 limit: int = LIMIT, big_quiet: float = BIG_QUIET):
        self.master = master        # MasterClient: readdir_head()
        self.cache = cache
        self.window = window
        self.after = after
        self.limit = limit
        self.big_quiet = big_quiet
        self._lock = threading.Lock()
        self._dirs: dict[str, _Dir] = {}
        self.listings = 0           # directories listed (for tests and the debug log)

    def found(self, path: str) -> None:
        """The master just answered a lookup of `path` (which exists): count it, and list
        its directory when this is the `after`-th such lookup there within the window."""
        if self.window <= 0 or path == "/":
            return
        parent = parent_of(path)
        now = time.monotonic()
        with self._lock:
            d = self._dirs.get(parent)
            if d is None or (now - d.start > self.window and not d.busy):
                if d is None and len(self._dirs) >= MAX_DIRS:
                    self._dirs.clear()
                quiet = d.quiet_until if d is not None else 0.0
                d = self._dirs[parent] = _Dir(now)
                d.quiet_until = quiet
            if d.busy or now < d.quiet_until:
                return
            d.count += 1
            if d.count < self.after:
                return
            d.busy = True
        more = False
        try:
            more = self._list(parent)
        finally:
            with self._lock:
                d.busy = False
                d.count = 0
                d.quiet_until = time.monotonic() + (self.big_quiet if more else self.window)

    def reset(self) -> None:
        """Forget what was counted and listed (the mount moved to another master)."""
        with self._lock:
            self._dirs.clear()

    def _list(self, directory: str) -> bool:
        """List `directory` into the cache; True when it has more than `limit` entries."""
        generation = self.cache.generation()
        try:
            entries, more = self.master.readdir_head(directory, self.limit)
        except FsError as e:  # an optimisation only: the lookup that got here succeeded
            log.debug("prefetch of %s failed: %s", directory, e)
            return False
        if self.cache.put_listing(directory, entries, generation):
            self.listings += 1
            log.debug("prefetched %d entries of %s", len(entries), directory)
        return more
