"""KelpClient: the client library the CLI and the mount share.

It bundles the three connections a client needs (master for metadata, a gateway for writes,
volume servers for reads) and offers whole-file operations on top: upload a local stream,
download a file, walk a tree. Writes never truncate first: an upload streams its chunks and
then commits them together with the new size in one master transaction, so a failed upload
leaves the previous content of the file intact.
"""
from __future__ import annotations

import errno
import io
import os
import posixpath
import stat as statmod
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import crc32c

from cluster.common.errors import FsError
from cluster.common.security import Transport
from fusefs.gateway_client import GatewayClient
from fusefs.master_client import MasterClient
from fusefs.reader import ChunkReader, inline_bytes, read_inline
from protos import master_pb2

DEFAULT_CHUNK = 4 << 20

Progress = Callable[[int], None]  # called with bytes just done


def normpath(path: str) -> str:
    """An absolute, normalised remote path ('/a/b'); '' and '.' mean '/'."""
    path = posixpath.normpath("/" + (path or "").strip().lstrip("/"))
    return "/" if path in ("//", "/.") else path


@dataclass
class UploadResult:
    path: str
    size: int
    chunks: int


class KelpClient:
    def __init__(self, master_addr: str, gateway_addr: str | None = None,
                 chunk_size: int = DEFAULT_CHUNK, cache_bytes: int = 256 << 20,
                 timeout: float = 60.0, credits: int = 4, transport: Transport | None = None):
        self.master = MasterClient(master_addr, transport=transport)
        self.chunk_size = chunk_size
        self._gateway_addr = gateway_addr
        self._gateway: GatewayClient | None = None
        self._timeout = timeout
        self._credits = credits
        self.reader = ChunkReader(self.master, cache_bytes=cache_bytes)

    # -- connections

    @property
    def gateway(self) -> GatewayClient:
        if self._gateway is None:
            address = self._gateway_addr or self.discover_gateway()
            self._gateway = GatewayClient(address, timeout=self._timeout, credits=self._credits,
                                          transport=self.master.transport)
        return self._gateway

    def discover_gateway(self) -> str:
        status = self.master.status()
        live = [g for g in status.gateways if g.alive]
        if not live:
            raise FsError(errno.EAGAIN, "no live gateway is registered with the master "
                                        "(start one with `kelp gateway`)")
        return live[0].address

    def close(self) -> None:
        if self._gateway is not None:
            self._gateway.close()
        self.reader.close()
        self.master.close()

    # -- metadata

    def stat(self, path: str) -> master_pb2.Attr:
        return self.master.call("GetAttr", master_pb2.PathRequest(path=normpath(path)))

    def mkdirs(self, path: str, mode: int = 0o755) -> master_pb2.Attr:
        return self.master.call("Mkdir", master_pb2.MkdirRequest(
            path=normpath(path), mode=mode, uid=os.getuid(), gid=os.getgid(), parents=True))

    def listdir(self, path: str) -> Iterator[master_pb2.DirEntry]:
        return self.master.readdir(normpath(path))

    def chunks(self, ino: int) -> master_pb2.FileChunks:
        return self.master.call("GetChunks", master_pb2.InoRequest(ino=ino))

    def remove(self, path: str, recursive: bool = False) -> int:
        """Remove a file, or a tree with recursive; returns the number of entries removed."""
        path = normpath(path)
        attr = self.stat(path)
        if not statmod.S_ISDIR(attr.mode):
            self.master.call("Unlink", master_pb2.UnlinkRequest(path=path))
            return 1
        if not recursive:
            raise FsError(errno.EISDIR, f"{path} is a directory (use -r)")
        removed = 0
        for entry in list(self.listdir(path)):
            removed += self.remove(posixpath.join(path, entry.name), recursive=True)
        if path != "/":
            self.master.call("Rmdir", master_pb2.PathRequest(path=path))
            removed += 1
        return removed

    # -- data

    def upload(self, src: BinaryIO, remote: str, size_hint: int | None = None,
               mode: int = 0o644, replication: int = 0, mtime_ns: int = 0,
               progress: Progress | None = None) -> UploadResult:
        """Store the bytes of `src` at `remote` (parents created), replacing it atomically."""
        remote = normpath(remote)
        parent = posixpath.dirname(remote)
        if parent != "/":
            self.mkdirs(parent)
        attr = self.master.call("Create", master_pb2.CreateRequest(
            path=remote, mode=mode, uid=os.getuid(), gid=os.getgid(),
            replication=replication))
        first = src.read(self.chunk_size)
        if len(first) < self.chunk_size and len(first) <= self.master.inline_max:
            # Small enough to stay at the master: no gateway, no volume server.
            self.master.call("WriteInline", master_pb2.WriteInlineRequest(
                ino=attr.ino, data=first, crc32c=crc32c.crc32c(first), size=len(first),
                mtime_ns=mtime_ns, exact_size=True))
            if progress:
                progress(len(first))
            return UploadResult(remote, len(first), 0)
        if len(first) < self.chunk_size:
            # Small file: one WRITE carrying the commit, one round trip.
            if first:
                self.gateway.write_small(attr.ino, 0, first, len(first), mtime_ns, replication,
                                         exact_size=True)
            else:
                self._commit_empty(attr.ino, mtime_ns)
            if progress:
                progress(len(first))
            return UploadResult(remote, len(first), 1 if first else 0)
        stream = self.gateway.open_stream(attr.ino, replication)
        offset, count, block = 0, 0, first
        try:
            while block:
                stream.write(offset, block)
                offset += len(block)
                count += 1
                if progress:
                    progress(len(block))
                block = src.read(self.chunk_size)
            stream.commit(offset, mtime_ns, exact_size=True)
        except BaseException:
            stream.abort()
            raise
        return UploadResult(remote, offset, count)

    def _commit_empty(self, ino: int, mtime_ns: int) -> None:
        self.master.call("SetAttr", master_pb2.SetAttrRequest(
            ino=ino, size=0, mtime_ns=mtime_ns or time.time_ns()))

    def upload_file(self, local: str, remote: str, replication: int = 0,
                    progress: Progress | None = None) -> UploadResult:
        st = os.stat(local)
        with open(local, "rb") as fh:
            return self.upload(fh, remote, st.st_size, statmod.S_IMODE(st.st_mode),
                               replication, st.st_mtime_ns, progress)

    def download(self, remote: str, dst: BinaryIO, progress: Progress | None = None) -> int:
        """Write the bytes of `remote` to `dst`; returns the size. EIO if a chunk is lost."""
        attr = self.stat(remote)
        if statmod.S_ISDIR(attr.mode):
            raise FsError(errno.EISDIR, f"{normpath(remote)} is a directory")
        info = self.chunks(attr.ino)
        size = info.attr.size
        chunks = list(info.chunks)
        try:
            inline = inline_bytes(info)
        except FsError as e:
            raise FsError(e.errno, f"{normpath(remote)} is damaged: {e.message}") from None
        offset = 0
        while offset < size:
            n = min(self.chunk_size, size - offset)
            try:
                data = (read_inline(inline, size, offset, n) if inline is not None else
                        self.reader.read(chunks, offset, n, size, readahead=2))
            except FsError as e:
                raise FsError(e.errno, f"{normpath(remote)} is damaged: {e.message}") from None
            dst.write(data)
            offset += len(data)
            if progress:
                progress(len(data))
        return size

    def read_all(self, remote: str) -> bytes:
        buf = io.BytesIO()
        self.download(remote, buf)
        return buf.getvalue()
