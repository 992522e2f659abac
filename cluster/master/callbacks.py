"""Callbacks: which session may be remembering what, so a change can be announced before it is
acknowledged (docs/caching.md).

Three kinds of key, matching what a mount caches by path:

* `path` — the answer about one name: its attributes, or "no such name", or (for a directory)
  its listing. Granted with GetAttr, GetChunksAt and for a directory and each of its entries
  with ReadDir; broken by any change of that name or of what it names.
* `tree` — anything at or below a directory. Every grant of a path registers the session as a
  holder below each of the path's ancestors, so renaming or removing a directory finds every
  session that resolved a name through it with one lookup per directory, not a scan.
* `ino` — an inode's attributes and contents wherever they are reached from (hard links,
  open files). Granted with every path answer; broken by setattr, a chunk-list commit, inline
  writes, link and unlink.

A grant is registered right after the store is read for the answer, under the same store lock
(`between_commits`): no commit can fall between the read and the grant, so a mutation either
committed before the read (the answer shows it) or commits after the grant (its break finds
the grant). The mount, for its part, does not cache an
answer if a break reached it while the answer was in flight.

Bounds: each session holds at most `max_keys`; the oldest go first, but only through a break
the mount acknowledges (the mutation thread asks `overflowing`), so the table never forgets a
key the mount may still be using.

Thread-safe: gRPC threads grant, the mutation thread breaks.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from cluster.master.paths import parent

MAX_KEYS = 200_000


def ancestors(path: str) -> list[str]:
    """"/a/b/c" -> ["/a/b", "/a", "/"]."""
    out = []
    while path not in ("/", ""):
        path = parent(path)
        out.append(path)
    return out


@dataclass
class Keys:
    """What a change touches, or what one session must drop."""
    paths: set[str] = field(default_factory=set)
    trees: set[str] = field(default_factory=set)
    inos: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.paths or self.trees or self.inos)

    def update(self, other: Keys) -> None:
        self.paths |= other.paths
        self.trees |= other.trees
        self.inos |= other.inos


class CallbackTable:
    def __init__(self, max_keys: int = MAX_KEYS):
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._by_key: dict[tuple, set[int]] = {}   # ("p"|"t", path) or ("i", ino) -> sids
        self._held: dict[int, collections.OrderedDict] = {}  # sid -> its keys, oldest first

    def grant(self, sid: int, paths: Iterable[str] = (), inos: Iterable[int] = ()) -> None:
        if not sid:
            return
        with self._lock:
            held = self._held.setdefault(sid, collections.OrderedDict())
            for p in paths:
                self._add(sid, held, ("p", p))
                for a in ancestors(p):
                    self._add(sid, held, ("t", a))
            for i in inos:
                if i:
                    self._add(sid, held, ("i", i))

    def _add(self, sid: int, held: collections.OrderedDict, key: tuple) -> None:
        if key in held:
            held.move_to_end(key)
            return
        held[key] = None
        self._by_key.setdefault(key, set()).add(sid)

    def anyone_but(self, sid: int) -> bool:
        """Whether any other session holds anything (when none does, a change needs no
        break and the master skips working out its keys)."""
        with self._lock:
            return any(s != sid for s in self._held)

    def take(self, keys: Keys, but: int = 0) -> dict[int, Keys]:
        """The sessions (other than `but`) holding any of `keys`, each with what it must drop;
        their callbacks on those keys are forgotten here (the caller breaks them)."""
        out: dict[int, Keys] = {}
        with self._lock:
            for p in keys.paths:
                for k in self._collect(out, ("p", p), but):
                    k.paths.add(p)
            for t in keys.trees:
                for k in self._collect(out, ("p", t), but) + self._collect(out, ("t", t), but):
                    k.trees.add(t)
            for i in keys.inos:
                for k in self._collect(out, ("i", i), but):
                    k.inos.add(i)
        return out

    def _collect(self, out: dict[int, Keys], key: tuple, but: int) -> list[Keys]:
        """Forget the callbacks of every session but `but` on `key`; the entries of `out`
        (made when missing) of the sessions that held one, for the caller to note the key in."""
        sids = self._by_key.get(key)
        if not sids:
            return []
        found = []
        for sid in [s for s in sids if s != but]:
            found.append(out.setdefault(sid, Keys()))
            self._remove(sid, key)
        return found

    def _remove(self, sid: int, key: tuple) -> None:
        held = self._held.get(sid)
        if held is not None:
            held.pop(key, None)
        sids = self._by_key.get(key)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._by_key[key]

    def overflowing(self) -> dict[int, Keys]:
        """For each session over max_keys, its oldest keys down to 90% of the bound, taken
        out of the table (the caller breaks them)."""
        out: dict[int, Keys] = {}
        with self._lock:
            for sid, held in self._held.items():
                if len(held) <= self.max_keys:
                    continue
                drop = Keys()
                while len(held) > self.max_keys * 9 // 10:
                    key = next(iter(held))
                    kind, what = key
                    (drop.paths if kind == "p" else drop.trees if kind == "t"
                     else drop.inos).add(what)
                    self._remove(sid, key)
                out[sid] = drop
        return out

    def drop_session(self, sid: int) -> None:
        with self._lock:
            for key in list(self._held.pop(sid, ())):
                sids = self._by_key.get(key)
                if sids is not None:
                    sids.discard(sid)
                    if not sids:
                        del self._by_key[key]

    def count(self, sid: int) -> int:
        with self._lock:
            return len(self._held.get(sid, ()))
