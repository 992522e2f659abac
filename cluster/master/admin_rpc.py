"""The admin half of the Master gRPC service: fsck's listing of every chunk (and inline
file), queueing orphans for the reaper, and vacuum. Transport only."""
from __future__ import annotations

import logging

from cluster.common import rpc
from cluster.common.fid import Fid
from cluster.master.namespace_rpc import DEFAULT_PAGE, MAX_PAGE, _invalid
from protos import master_pb2

log = logging.getLogger(__name__)

MAX_ORPHANS_PER_CALL = 100_000


class AdminRpc:
    """Mixed into MasterServicer: needs self.store, self.key_clock, self.vacuumer."""

    @rpc.streaming_servicer_method
    def ListChunks(self, request, context):
        page = request.page_size or DEFAULT_PAGE
        if page > MAX_PAGE:
            raise _invalid(f"page_size {page} is not 1..{MAX_PAGE}")
        high = self.key_clock.high()
        refs, queued = self.store.chunk_refs()
        inline = [master_pb2.InlineCheck(ino=ino, path=path, size=size, crc_ok=ok)
                  for ino, path, size, ok in self.store.inline_checks()]
        first = True
        for i in range(0, max(len(refs), 1), page):
            yield master_pb2.ChunkRefPage(
                key_high_water=high if first else 0, inline=inline if first else [],
                chunks=[master_pb2.ChunkRef(
                    ino=r.ino, path=r.path, file_offset=r.piece.file_offset,
                    length=r.piece.length, fid=r.piece.fid, needle_size=r.piece.needle_size,
                    crc32c=r.piece.crc32c) for r in refs[i:i + page]])
            first = False
            if not context.is_active():
                return
        for i in range(0, len(queued), page):
            yield master_pb2.ChunkRefPage(queued_fids=queued[i:i + page])

    @rpc.servicer_method
    def QueueOrphans(self, request, context):
        if not 1 <= len(request.fids) <= MAX_ORPHANS_PER_CALL:
            raise _invalid(f"{len(request.fids)} fids; want 1..{MAX_ORPHANS_PER_CALL}")
        if request.min_age_s < 0:
            raise _invalid(f"min_age_s {request.min_age_s} is negative")
        cutoff = self.key_clock.cutoff(request.min_age_s)
        fids = [Fid.parse(f) for f in request.fids]
        old = [str(f) for f in fids if f.key < cutoff]
        queued, referenced = self.store.queue_orphans(old) if old else (0, 0)
        if queued:
            log.info("fsck queued %d orphan needles for deletion", queued)
        return master_pb2.QueueOrphansResponse(queued=queued, referenced=referenced,
                                               too_recent=len(fids) - len(old))

    @rpc.servicer_method
    def Vacuum(self, request, context):
        self.require_leader(context)
        rows = self.vacuumer.run(request.threshold, list(request.volume_ids))
        return master_pb2.VacuumResponse(replicas=[
            master_pb2.VolumeVacuum(volume_id=r.volume_id, server=r.server,
                                    garbage_ratio=r.garbage_ratio, size_before=r.size_before,
                                    size_after=r.size_after,
                                    compact_revision=r.compact_revision, error=r.error,
                                    seconds=r.seconds)
            for r in rows])
