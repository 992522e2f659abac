"""The on-disk format of a volume: the one, versioned reference for `<vid>.dat` and `<vid>.idx`.

Everything that knows a byte layout lives here as pure encode/decode functions; the volume
modules (volume.py, reads.py, appends.py) only move the bytes to and from files. All integers
are little-endian.

`<vid>.dat` — the data file, append-only:

    superblock (SUPERBLOCK_SIZE = 16 bytes)
        magic             4s   b"KELP"
        format version    u16  FORMAT_VERSION for volumes made now; every version in
                               SUPPORTED_VERSIONS is read (the version is the volume's: all
                               its needles have the layout of that version)
        replication       u16  copies of this volume across servers (1..8)
        compact revision  u32  bumped by each vacuum, so a replica can tell an old copy
        reserved          u32  zero
    needle, needle, ...  (each starts at a multiple of 8)
        header (NEEDLE_HEADER_SIZE = 16 bytes)
            cookie        u32  random per fid; checked on every read and delete
            key           u64  needle key from the master's sequencer
            data size     u32  bytes of data (0..MAX_DATA_SIZE)
        data              data size bytes
        flags             u8   FLAG_DELETED marks a delete record (data size 0): the .dat
                               alone then tells which needles are dead, so an index rebuilt
                               from it agrees with the one the tombstones built
        crc               u32  CRC32C of the whole data
        block crcs        u32 each, version 2 only: the CRC32C of each 64 KiB block of the
                               data (cluster/common/blocks.py), ceil(data size / 64 KiB) of
                               them, none for an empty needle or a delete record
        padding           zeros up to the next multiple of 8

Version 1 (the first format) is version 2 without the block CRCs. Version 2 keeps the data
where version 1 has it (right after the header) and the trailer after it, so every tool that
looks at a needle's header, data or whole-data CRC reads both alike; only the record's length
(record_size) depends on the version. The block CRCs let a read of a few bytes fetch and
verify one 64 KiB block instead of a whole chunk (up to 4 MiB); they sit after the trailer,
not before the data, so the data's offset stays the same in both versions. A version-1
volume keeps its layout for the needles appended to it; a vacuum (compaction.py) rewrites it
as version 2. A build that knows only version 1 refuses a version-2 volume at load.

`<vid>.idx` — the index, an append-only log of IDX_ENTRY_SIZE (20-byte) entries:

        key               u64
        offset            u64  byte offset of the needle's header in .dat
        size              u32  data size, or TOMBSTONE for a delete; a tombstone's offset is
                               that of its delete record in .dat, so the entries' offsets always
                               grow and "the last indexed needle" is simply the last entry

The whole-data CRC covers the data only (as the wire's crc32c does, so a writer's checksum can
be compared with the stored one); a corrupt header is caught by comparing the key and the size
with the index, and at recovery by the CRC of whatever the size points at. A damaged block
CRC shows as that block failing its check (an error, never data), and fsck reports it.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import crc32c as _crc32c

from cluster.common import blocks

FORMAT_VERSION = 2               # what new volumes are written in
SUPPORTED_VERSIONS = (1, 2)      # what this build reads
BLOCK_SIZE = blocks.BLOCK_SIZE
MAGIC = b"KELP"
ALIGN = 8
MAX_DATA_SIZE = 64 << 20         # the wire's limit on one chunk
TOMBSTONE = 0xFFFFFFFF           # idx size of a deleted key
FLAG_DELETED = 0x01
KNOWN_FLAGS = FLAG_DELETED

_SUPERBLOCK = struct.Struct("<4sHHII")
_HEADER = struct.Struct("<IQI")
_TRAILER = struct.Struct("<BI")
_IDX = struct.Struct("<QQI")
_BLOCK_CRC = struct.Struct("<I")

SUPERBLOCK_SIZE = _SUPERBLOCK.size          # 16, already a multiple of ALIGN
NEEDLE_HEADER_SIZE = _HEADER.size           # 16
NEEDLE_TRAILER_SIZE = _TRAILER.size         # 5 (flags and crc; block CRCs follow in v2)
BLOCK_CRC_SIZE = _BLOCK_CRC.size            # 4
IDX_ENTRY_SIZE = _IDX.size                  # 20

_ZEROS = bytes(ALIGN)


class FormatError(ValueError):
    """Bytes that do not decode as this format (wrong magic, unknown version, bad flags)."""


def crc32c(data) -> int:
    """CRC32C (Castagnoli) of any bytes-like object, hardware accelerated where possible."""
    return _crc32c.crc32c(data)


# ------------------------------------------------------------------ superblock

@dataclass(frozen=True)
class SuperBlock:
    replication: int
    compact_revision: int = 0
    version: int = FORMAT_VERSION


def encode_superblock(sb: SuperBlock) -> bytes:
    return _SUPERBLOCK.pack(MAGIC, sb.version, sb.replication, sb.compact_revision, 0)


def decode_superblock(buf: bytes) -> SuperBlock:
    if len(buf) < SUPERBLOCK_SIZE:
        raise FormatError(f"superblock too short ({len(buf)} bytes)")
    magic, version, replication, revision, _ = _SUPERBLOCK.unpack_from(buf)
    if magic != MAGIC:
        raise FormatError(f"bad magic {magic!r}")
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"unsupported format version {version} (this build reads "
                          f"{', '.join(map(str, SUPPORTED_VERSIONS))})")
    return SuperBlock(replication=replication, compact_revision=revision, version=version)


# ------------------------------------------------------------------ needles

def record_size(data_size: int, version: int = FORMAT_VERSION) -> int:
    """Bytes a needle with `data_size` bytes of data occupies in .dat, padding included."""
    raw = NEEDLE_HEADER_SIZE + data_size + NEEDLE_TRAILER_SIZE
    if version >= 2:
        raw += BLOCK_CRC_SIZE * blocks.count(data_size)
    return (raw + ALIGN - 1) & ~(ALIGN - 1)


def trailer_offset(data_size: int) -> int:
    """Where the trailer (flags, crc; then the block CRCs) starts, from the record's start."""
    return NEEDLE_HEADER_SIZE + data_size


def block_crc_offset(data_size: int, index: int) -> int:
    """Where block `index`'s CRC is stored, from the record's start (version 2)."""
    return NEEDLE_HEADER_SIZE + data_size + NEEDLE_TRAILER_SIZE + BLOCK_CRC_SIZE * index


@dataclass(frozen=True)
class NeedleHeader:
    cookie: int
    key: int
    size: int


def encode_header(cookie: int, key: int, size: int) -> bytes:
    return _HEADER.pack(cookie, key, size)


def decode_header(buf, offset: int = 0) -> NeedleHeader:
    cookie, key, size = _HEADER.unpack_from(buf, offset)
    return NeedleHeader(cookie, key, size)


def encode_block_crcs(crcs) -> bytes:
    return struct.pack(f"<{len(crcs)}I", *crcs)


def decode_block_crcs(buf, offset: int = 0, count: int | None = None) -> tuple[int, ...]:
    """`count` block CRCs at `offset` of buf (all whole ones from there when None)."""
    if count is None:
        count = (len(buf) - offset) // BLOCK_CRC_SIZE
    return struct.unpack_from(f"<{count}I", buf, offset)


def encode_trailer(data_size: int, crc: int, flags: int = 0, version: int = FORMAT_VERSION,
                   block_crcs=None) -> bytes:
    """Flags, CRC, (version 2) the block CRCs and the padding that follow `data_size` bytes
    of data. `block_crcs` is required in version 2 when the data is not empty."""
    parts = [_TRAILER.pack(flags, crc)]
    raw = NEEDLE_HEADER_SIZE + data_size + NEEDLE_TRAILER_SIZE
    if version >= 2:
        want = blocks.count(data_size)
        crcs = () if block_crcs is None else block_crcs
        if len(crcs) != want:
            raise ValueError(f"{len(crcs)} block CRCs for {data_size} bytes, want {want}")
        parts.append(encode_block_crcs(crcs))
        raw += BLOCK_CRC_SIZE * want
    parts.append(_ZEROS[: record_size(data_size, version) - raw])
    return b"".join(parts)


def encode_needle_parts(cookie: int, key: int, data, flags: int = 0,
                        crc: int | None = None, version: int = FORMAT_VERSION,
                        block_crcs=None) -> list:
    """The needle as [header, data, trailer] buffers, for os.writev without copying data.

    `crc` may be given when the caller has verified it already (saves a pass over the data);
    `block_crcs` when the caller has them (else version 2 computes them here: one more pass,
    the cost of partial reads, measured in docs/performance.md).
    """
    if crc is None:
        crc = crc32c(data)
    n = len(data)
    if version >= 2 and block_crcs is None:
        block_crcs = blocks.crcs(data)
    return [encode_header(cookie, key, n), data,
            encode_trailer(n, crc, flags, version, block_crcs)]


def encode_needle(cookie: int, key: int, data: bytes, flags: int = 0,
                  version: int = FORMAT_VERSION) -> bytes:
    return b"".join(encode_needle_parts(cookie, key, data, flags, version=version))


@dataclass(frozen=True)
class Needle:
    cookie: int
    key: int
    flags: int
    crc: int
    data: memoryview      # a view into the record buffer (no copy)
    block_crcs: tuple[int, ...] | None = None   # version 2; None in version 1

    @property
    def deleted(self) -> bool:
        return bool(self.flags & FLAG_DELETED)

    @property
    def size(self) -> int:
        return len(self.data)


def decode_needle(record, version: int = FORMAT_VERSION) -> Needle:
    """Decode one whole record (header .. padding) of a volume of `version`. Checks no CRC:
    see crc_ok() and blocks_ok()."""
    view = memoryview(record)
    if len(view) < NEEDLE_HEADER_SIZE + NEEDLE_TRAILER_SIZE:
        raise FormatError("needle record too short")
    h = decode_header(view)
    if h.size > MAX_DATA_SIZE:
        raise FormatError(f"needle size {h.size} exceeds {MAX_DATA_SIZE}")
    if len(view) < record_size(h.size, version):
        raise FormatError(f"needle record truncated: size {h.size} needs "
                          f"{record_size(h.size, version)} bytes")
    data = view[NEEDLE_HEADER_SIZE: NEEDLE_HEADER_SIZE + h.size]
    flags, crc = _TRAILER.unpack_from(view, NEEDLE_HEADER_SIZE + h.size)
    if flags & ~KNOWN_FLAGS:
        raise FormatError(f"unknown needle flags {flags:#x}")
    block_crcs = None
    if version >= 2:
        block_crcs = decode_block_crcs(view, block_crc_offset(h.size, 0), blocks.count(h.size))
    return Needle(h.cookie, h.key, flags, crc, data, block_crcs)


def crc_ok(needle: Needle) -> bool:
    """The whole data matches its CRC (what the writer sent and the master recorded)."""
    return crc32c(needle.data) == needle.crc


def blocks_ok(needle: Needle) -> bool:
    """Each block matches its block CRC (true for a version-1 needle: it has none)."""
    return needle.block_crcs is None or blocks.first_bad(needle.data, needle.block_crcs) is None


def decode_trailer(buf, offset: int = 0) -> tuple[int, int]:
    """(flags, crc) from the bytes right after a needle's data."""
    return _TRAILER.unpack_from(buf, offset)


# ------------------------------------------------------------------ index

@dataclass(frozen=True)
class IdxEntry:
    key: int
    offset: int
    size: int              # TOMBSTONE for a delete

    @property
    def deleted(self) -> bool:
        return self.size == TOMBSTONE


def encode_idx(key: int, offset: int, size: int) -> bytes:
    return _IDX.pack(key, offset, size)


def decode_idx(buf) -> list[IdxEntry]:
    """All whole entries of an .idx file's bytes (a torn last entry is ignored)."""
    whole = len(buf) - len(buf) % IDX_ENTRY_SIZE
    return [IdxEntry(k, o, s) for k, o, s in _IDX.iter_unpack(memoryview(buf)[:whole])]


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """`size` bytes at `offset` (fewer only at end of file): os.pread may return short."""
    buf = os.pread(fd, size, offset)
    if len(buf) == size:
        return buf
    parts = [buf]
    got = len(buf)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
