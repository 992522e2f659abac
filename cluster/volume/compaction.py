"""Volume compaction (vacuum): write a volume's live needles into a fresh `.dat`/`.idx` pair.

Deleted and overwritten needles stay in an append-only `.dat` until a compaction copies what is
still live into new files and swaps them in. This module only builds the new pair; the swap and
the locking around it are Volume.compact's (volume.py), because only the Volume knows its locks:

  1. Snapshot, under the append lock: the live (key, offset, size) entries and the `.idx`
     length. Appends continue while 2. runs.
  2. Copy each live record, byte for byte, into `<vid>.cpd.tmp`, writing its entry (with the
     new offset) to `<vid>.cpx.tmp`. The records are read from the old `.dat` at offsets that
     never change (append-only), so no lock is needed.
  3. Under the append lock again (writes wait, reads do not): replay the `.idx` entries
     appended since the snapshot — new needles, overwrites and delete records alike — by
     copying their records too, in order. The new pair then says exactly what the old one
     says, without the dead records. fsync both files.
  4. The Volume swaps the files in and publishes a new read view (see volume.py).

Records are copied raw, without re-encoding: a needle whose CRC no longer matches stays
damaged in the new file (reads keep answering DATA_LOSS and fsck still finds it) rather than
being dropped silently.

The new pair is always in the current format (needle.FORMAT_VERSION), so a vacuum is how a
version-1 volume gets block CRCs: its records are re-encoded, not copied raw. The block CRCs
are computed only from data that passes the needle's whole CRC; a needle that fails it gets
block CRCs that can never match (each block's own CRC inverted), so it stays damaged for
range reads as for whole ones, instead of being blessed with CRCs of its rotten bytes.

The temporary names end in `.tmp`, which Store.open deletes at start: a compaction cut short by
a crash leaves nothing behind and the old volume untouched.
"""
from __future__ import annotations

import contextlib
import errno
import os

from cluster.common import blocks
from cluster.common.errors import FsError
from cluster.volume import needle as fmt

DAT_SUFFIX = ".cpd.tmp"
IDX_SUFFIX = ".cpx.tmp"
WRITE_BUFFER = 1 << 20


class CompactionWriter:
    """The new `.dat`/`.idx` pair being built: a superblock, then records appended in order."""

    def __init__(self, directory: str, volume_id: int, superblock: fmt.SuperBlock,
                 source_version: int = fmt.FORMAT_VERSION):
        self.volume_id = volume_id
        self.source_version = source_version   # the layout of the records copied in
        self.version = superblock.version      # the layout written
        self.dat_path = os.path.join(directory, f"{volume_id}{DAT_SUFFIX}")
        self.idx_path = os.path.join(directory, f"{volume_id}{IDX_SUFFIX}")
        # Both files stay open until finish() or abort(); should making either (or writing
        # the superblock) fail, what was made so far is removed and closed.
        with contextlib.ExitStack() as undo:
            self._dat = undo.enter_context(open(self.dat_path, "wb", buffering=WRITE_BUFFER))
            undo.callback(os.unlink, self.dat_path)
            self._idx = undo.enter_context(open(self.idx_path, "wb", buffering=WRITE_BUFFER))
            undo.callback(os.unlink, self.idx_path)
            self._dat.write(fmt.encode_superblock(superblock))
            undo.pop_all()
        self.end = fmt.SUPERBLOCK_SIZE
        self.records = 0

    def copy_record(self, src_fd: int, key: int, offset: int, size: int) -> None:
        """Copy the record of one index entry (a live needle, or a delete record when `size`
        is TOMBSTONE) from the old `.dat` and index it at its new offset."""
        data_size = 0 if size == fmt.TOMBSTONE else size
        length = fmt.record_size(data_size, self.source_version)
        buf = fmt.pread_exact(src_fd, length, offset)
        if len(buf) != length:
            raise FsError(errno.EIO, f"volume {self.volume_id}: record of needle {key:x} at "
                                     f"{offset} runs past the end of the .dat")
        if self.source_version != self.version:
            buf = self._reencode(buf, key, offset, data_size)
        self._dat.write(buf)
        self._idx.write(fmt.encode_idx(key, self.end, size))
        self.end += len(buf)
        self.records += 1

    def _reencode(self, record: bytes, key: int, offset: int, data_size: int) -> bytes:
        """A record of the source version in the written one, header, data, flags and
        whole CRC unchanged (damaged data stays damaged: see the module docstring)."""
        try:
            n = fmt.decode_needle(record, self.source_version)
        except fmt.FormatError:
            n = None
        if n is None or n.key != key or n.size != data_size:
            # A damaged header: keep its bytes, padded to the new length, so reads keep
            # failing on it (its key or size does not match the index) and fsck finds it.
            return record + bytes(fmt.record_size(data_size, self.version) - len(record))
        block_crcs = blocks.crcs(n.data)
        if not fmt.crc_ok(n):
            block_crcs = [c ^ 0xFFFFFFFF for c in block_crcs]
        parts = fmt.encode_needle_parts(n.cookie, n.key, n.data, n.flags, n.crc, self.version,
                                        block_crcs)
        return b"".join(parts)

    def finish(self) -> None:
        """Flush and fsync both files: after this they are the durable new volume."""
        for fh in (self._dat, self._idx):
            fh.flush()
            os.fsync(fh.fileno())
        self._close()

    def abort(self) -> None:
        """Throw the half-built pair away (the old volume was never touched)."""
        self._close()
        for path in (self.dat_path, self.idx_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _close(self) -> None:
        for fh in (self._dat, self._idx):
            with contextlib.suppress(OSError):
                fh.close()


def swap_in(writer: CompactionWriter, dat_path: str, idx_path: str, directory: str) -> None:
    """Replace the volume's files by the writer's finished pair, crash-safe at every step.

    The old `.idx` goes first: `.dat` is the volume's durable record and `.idx` a cache of it
    (volume.py rebuilds a missing index by scanning `.dat`), so a crash between the steps
    leaves the old or the new `.dat` without an index, never an index describing the other
    file's offsets.
    """
    os.unlink(idx_path)
    os.replace(writer.dat_path, dat_path)
    os.replace(writer.idx_path, idx_path)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
