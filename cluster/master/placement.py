"""Placement policy: which servers get a new volume, how many volumes to grow, which volume
gets the next fid. Pure logic over plain values, so it is unit-tested without a cluster.

* `pick_servers`: N distinct servers with free space and a free volume slot, spreading the
  volumes of one growth round first, then preferring the most free space.
* `growth_count`: how many volumes to grow when replication N has no writable volume:
  max(1, alive // N), so every live server gets to hold one (two servers, replication 1: one
  volume on each) and consecutive writes spread over all of them.
* `RoundRobin`: consecutive fids go to consecutive writable volumes, hence different servers.
"""
from __future__ import annotations

import errno
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cluster.common.errors import FsError
from cluster.common.replication import check_replication


@dataclass(frozen=True)
class Candidate:
    server_id: int
    free_bytes: int
    volume_count: int
    max_volumes: int  # 0 = no limit reported

    @property
    def has_slot(self) -> bool:
        return self.max_volumes <= 0 or self.volume_count < self.max_volumes


def eligible(candidates: Iterable[Candidate], min_free: int = 1) -> list[Candidate]:
    return [c for c in candidates if c.free_bytes >= min_free and c.has_slot]


def pick_servers(candidates: Sequence[Candidate], replication: int,
                 planned: dict[int, int] | None = None, min_free: int = 1) -> list[int]:
    """`replication` distinct server ids for one new volume.

    `planned` counts volumes already placed on each server in this growth round; they are
    spread first, then the server with most free space wins (ties: fewer volumes, lower id).
    """
    check_replication(replication)
    planned = planned or {}
    usable = [
        c for c in candidates
        if c.free_bytes >= min_free
        and (c.max_volumes <= 0 or c.volume_count + planned.get(c.server_id, 0) < c.max_volumes)
    ]
    if len(usable) < replication:
        raise FsError(
            errno.ENOSPC,
            f"replication {replication} needs {replication} live volume servers with free "
            f"space, {len(usable)} available",
        )
    usable.sort(key=lambda c: (planned.get(c.server_id, 0), -c.free_bytes,
                               c.volume_count, c.server_id))
    return [c.server_id for c in usable[:replication]]


def growth_count(alive: int, replication: int) -> int:
    return max(1, alive // max(1, replication))


def plan_growth(candidates: Sequence[Candidate], replication: int,
                min_free: int = 1) -> list[list[int]]:
    """Server sets for the volumes one growth round creates (at least one, else ENOSPC)."""
    want = growth_count(len(eligible(candidates, min_free)), replication)
    planned: dict[int, int] = {}
    plan: list[list[int]] = []
    for _ in range(want):
        try:
            chosen = pick_servers(candidates, replication, planned, min_free)
        except FsError:
            if plan:
                break  # slots ran out part way: grow what fits
            raise
        for sid in chosen:
            planned[sid] = planned.get(sid, 0) + 1
        plan.append(chosen)
    return plan


class RoundRobin:
    """Spreads fids over writable volumes: each call continues where the last one stopped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cursor: dict[int, int] = {}

    def spread(self, replication: int, volumes: Sequence[int], count: int) -> list[int]:
        if not volumes:
            raise ValueError("no volumes to spread over")
        ordered = sorted(volumes)
        with self._lock:
            start = self._cursor.get(replication, 0)
            self._cursor[replication] = start + count
        return [ordered[(start + i) % len(ordered)] for i in range(count)]
