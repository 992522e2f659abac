"""`kelp vacuum`: ask the master to compact the volumes whose garbage ratio passes a threshold.

The master does the work (cluster/master/vacuum.py drives Volume.Compact on every live
replica); this module is the client side the CLI and the tests call, and tools/reports.py
renders its rows.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from cluster.common.errors import FsError
from cluster.common.security import Transport
from fusefs.master_client import MasterClient
from protos import master_pb2

VACUUM_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class VacuumRow:
    volume_id: int
    server: str
    garbage_ratio: float
    size_before: int
    size_after: int
    compact_revision: int
    error: str
    seconds: float

    @property
    def freed(self) -> int:
        return max(0, self.size_before - self.size_after) if not self.error else 0


def vacuum(master_addr: str, threshold: float = 0.0, volume_ids=(),
           transport: Transport | None = None) -> list[VacuumRow]:
    """Run one vacuum; threshold 0 = the master's default. One row per replica touched."""
    if threshold and not 0 < threshold <= 1:
        raise FsError(errno.EINVAL, f"threshold {threshold} is not in (0, 1]")
    client = MasterClient(master_addr, timeout=VACUUM_TIMEOUT_S, retry_for=5.0,
                          transport=transport or Transport("admin"))
    try:
        reply = client.call("Vacuum", master_pb2.VacuumRequest(
            threshold=threshold, volume_ids=list(volume_ids)))
    finally:
        client.close()
    return [VacuumRow(r.volume_id, r.server, r.garbage_ratio, r.size_before, r.size_after,
                      r.compact_revision, r.error, r.seconds) for r in reply.replicas]
