"""Needle blocks: the 64 KiB units a needle's data is checksummed in, for partial reads.

A needle's data is cut into BLOCK_SIZE blocks from its first byte (the last block may be
short) and each block has its own CRC32C (cluster/volume/needle.py stores them, format
version 2). A read of a few bytes then fetches and verifies only the blocks that cover them,
not a whole chunk of up to 4 MiB. The volume server verifies the blocks it reads from disk;
the mount verifies the same CRCs again on what it received (ReadRequest.whole_blocks), so
damage on disk, in the server's memory after the check, or in flight is found, and the
mount can cache whole verified blocks.

Shared by both sides (the volume store and the mount's reader), so the arithmetic and the
check are one function each.
"""
from __future__ import annotations

import crc32c as _crc32c

BLOCK_SIZE = 64 << 10


def count(size: int) -> int:
    """Blocks of a needle of `size` data bytes (0 for an empty needle)."""
    return (size + BLOCK_SIZE - 1) // BLOCK_SIZE


def span(offset: int, length: int, size: int) -> tuple[int, int]:
    """[first, end) block indices covering bytes [offset, offset+length) of a needle of `size`
    bytes; length 0 means "to the end". Empty when the range is (offset == size)."""
    stop = size if length == 0 else min(size, offset + length)
    if offset >= stop:
        return offset // BLOCK_SIZE, offset // BLOCK_SIZE
    return offset // BLOCK_SIZE, (stop + BLOCK_SIZE - 1) // BLOCK_SIZE


def byte_range(first: int, end: int, size: int) -> tuple[int, int]:
    """The data bytes [start, stop) that blocks [first, end) of a `size`-byte needle hold."""
    return first * BLOCK_SIZE, min(size, end * BLOCK_SIZE)


def crcs(data) -> list[int]:
    """CRC32C of each BLOCK_SIZE block of `data` (which starts at a block boundary)."""
    view = memoryview(data)
    return [_crc32c.crc32c(view[i:i + BLOCK_SIZE]) for i in range(0, len(view), BLOCK_SIZE)]


def first_bad(data, expected) -> int | None:
    """Index (within `data`) of the first block whose CRC32C is not the expected one, or
    None when all match. `data` must hold exactly len(expected) blocks, the last possibly
    short; a length that does not fit counts as block 0 bad (a caller's mistake must never
    pass for good data)."""
    n = len(expected)
    if count(len(data)) != n:
        return 0
    view = memoryview(data)
    for i, want in enumerate(expected):
        if _crc32c.crc32c(view[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]) != want:
            return i
    return None
