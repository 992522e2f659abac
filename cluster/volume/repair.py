"""Re-replication for `kelp fsck --repair`: a volume server pulls needles from a peer replica.

Pulling (the damaged or empty server asks the healthy one) keeps the data off the fsck
client's link and lets each copy be verified twice: the peer checks cookie and CRC before
answering ReadNeedle, and this side checks the CRC of what arrived (and the CRC the master
recorded, when the caller passed it) before storing it with Volume.restore.

Both entry points are plain functions over a Store and a peer's Volume stub, so unit tests can
drive them with an in-process peer.
"""
from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field

import grpc

from cluster.common.errors import FsError
from cluster.volume import store as st
from cluster.volume.needle import crc32c
from protos import volume_pb2

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Ref:
    key: int
    cookie: int
    size: int = 0      # 0 with crc 0: not known
    crc: int = 0


@dataclass
class CopyOutcome:
    copied: int = 0
    bytes: int = 0
    failures: list[tuple[int, str, str]] = field(default_factory=list)  # (key, CHECK_*, why)


def _fetch(peer, volume_id: int, ref: Ref) -> tuple[bytes, int]:
    reply = peer.ReadNeedle(volume_pb2.ReadRequest(volume_id=volume_id, key=ref.key,
                                                   cookie=ref.cookie), timeout=READ_TIMEOUT_S)
    data = reply.data
    if crc32c(data) != reply.needle_crc32c or len(data) != reply.needle_size:
        raise FsError(errno.EIO, f"needle {ref.key:x} damaged in transit")
    if (ref.size or ref.crc) and (len(data) != ref.size or reply.needle_crc32c != ref.crc):
        raise FsError(errno.EIO, f"peer's needle {ref.key:x} is not the one the master "
                                 f"recorded (size {len(data)}, crc {reply.needle_crc32c:08x})")
    return data, reply.needle_crc32c


def _status_of(e: grpc.RpcError) -> str:
    code = e.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return st.CHECK_MISSING
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return st.CHECK_WRONG_COOKIE
    if code == grpc.StatusCode.DATA_LOSS:
        return st.CHECK_CRC_BAD
    return st.CHECK_UNREADABLE


_ERRNO_STATUS = {errno.ENOENT: st.CHECK_MISSING, errno.EACCES: st.CHECK_WRONG_COOKIE,
                 errno.EIO: st.CHECK_CRC_BAD}


def copy_needles(store: st.Store, volume_id: int, peer, refs: list[Ref]) -> CopyOutcome:
    """Copy each needle from the peer into the local volume (which must exist)."""
    vol = store.get(volume_id)
    out = CopyOutcome()
    for ref in refs:
        try:
            data, crc = _fetch(peer, volume_id, ref)
            vol.restore(ref.key, ref.cookie, data, crc)
        except grpc.RpcError as e:
            out.failures.append((ref.key, _status_of(e), f"peer: {e.code().name}: {e.details()}"))
            continue
        except FsError as e:
            out.failures.append((ref.key, _ERRNO_STATUS.get(e.errno, st.CHECK_UNREADABLE),
                                 e.message))
            continue
        out.copied += 1
        out.bytes += len(data)
    if out.failures:
        log.warning("volume %d: %d of %d needles could not be copied from the peer",
                    volume_id, len(out.failures), len(refs))
    return out


def copy_volume(store: st.Store, volume_id: int, replication: int, peer,
                passes: int = 2) -> CopyOutcome:
    """Create the volume here if missing and copy every live needle of the peer's copy that
    this side lacks or holds damaged. A second pass picks up needles written to the peer
    while the first ran (until the master learns of this replica, new writes go there only)."""
    vol = store.allocate(volume_id, replication)
    out = CopyOutcome()
    done: set[tuple[int, int]] = set()
    for _ in range(max(1, passes)):
        listing = peer.ListNeedles(volume_pb2.VolumeRef(volume_id=volume_id),
                                   timeout=READ_TIMEOUT_S)
        todo = []
        for n in listing.needles:
            if (n.key, n.cookie) in done:
                continue
            status, _ = vol.check(n.key, n.cookie, n.size, n.crc32c)
            if status != st.CHECK_OK:
                todo.append(Ref(n.key, n.cookie, n.size, n.crc32c))
            done.add((n.key, n.cookie))
        if not todo:
            break
        part = copy_needles(store, volume_id, peer, todo)
        out.copied += part.copied
        out.bytes += part.bytes
        out.failures += part.failures
    return out
