"""The reaper: a background activity that deletes unreferenced needles from the volume servers.

Namespace operations only queue fids (deletion_queue, in their own transaction), so an
unlink or overwrite never waits on the network. Each round the reaper takes a batch of due
fids, finds every server holding the fid's volume and calls Volume.DeleteNeedle on each. A
queue row goes only when every replica confirmed (NOT_FOUND counts: the needle or volume is
already gone); a fid whose volume has a dead or not-yet-heard-from replica is retried later
with a growing back-off, so a server that was down never keeps needles the master forgot.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from cluster.common import rpc
from cluster.common.fid import BadFid, Fid
from cluster.common.retry import delay_for
from cluster.master.store import MetadataStore
from cluster.master.topology import Topology
from protos import volume_pb2

log = logging.getLogger(__name__)

BATCH = 256
MAX_BACKOFF_S = 300.0
DELETE_TIMEOUT_S = 10.0


class Reaper:
    def __init__(self, store: MetadataStore, topology: Topology, stubs: rpc.VolumeStubs,
                 interval: float = 1.0, batch: int = BATCH,
                 on_deleted: Callable[[int], None] | None = None,
                 active: Callable[[], bool] = lambda: True):
        self._store = store
        self._topo = topology
        self._stubs = stubs
        self._batch = batch
        self._on_deleted = on_deleted
        self._active = active   # the leader reaps; other masters of its database do not
        self._thread = rpc.StoppableThread("reaper", interval, self.run_once)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._thread.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def run_once(self) -> int:
        """One pass over due rows; returns how many fids were fully deleted."""
        if not self._active():
            return 0
        rows = self._store.due_deletions(self._batch)
        done: list[str] = []
        retry: dict[float, list[str]] = {}
        for fid_text, attempts in rows:
            try:
                fid = Fid.parse(fid_text)
            except BadFid:
                # Commit validates fids, so this row can only come from a damaged database;
                # no volume can ever confirm it.
                log.error("reaper: dropping malformed fid %r from the deletion queue", fid_text)
                done.append(fid_text)
                continue
            if self._delete_everywhere(fid):
                done.append(fid_text)
            else:
                delay = delay_for(attempts, first=1.0, cap=MAX_BACKOFF_S)
                retry.setdefault(delay, []).append(fid_text)
        if done:
            self._store.deletions_done(done)
            if self._on_deleted:
                self._on_deleted(len(done))
        for delay, fids in retry.items():
            self._store.deletions_retry(fids, delay)
        return len(done)

    def _delete_everywhere(self, fid: Fid) -> bool:
        holders = self._topo.holders(fid.volume_id)
        wanted = self._topo.volume_replication(fid.volume_id)
        confirmed = 0
        for server, alive in holders:
            if not alive:
                continue
            try:
                self._stubs.get(server.grpc_address).DeleteNeedle(
                    volume_pb2.DeleteRequest(
                        volume_id=fid.volume_id, key=fid.key, cookie=fid.cookie),
                    timeout=DELETE_TIMEOUT_S,
                )
                confirmed += 1
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    confirmed += 1
                else:
                    log.warning("reaper: deleting %s on %s failed: %s %s", fid,
                                server.grpc_address, e.code().name, e.details())
        # Every holder must confirm, and at least as many as the volume's replication: a
        # replica the master has not heard from since it restarted is not in `holders` yet.
        return bool(holders) and confirmed == len(holders) and confirmed >= wanted
