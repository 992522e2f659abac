"""Decoding and checking the gateway's wire frames (protos/gateway.proto), apart from ZMQ.

A client message is `[Request][payload]` (the payload only for a Write). Everything a peer can
get wrong is caught here and becomes `BadRequest`, which the transport answers with an EINVAL
Error reply: no frames, the wrong number of frames, bytes that are not a Request, a Request
with no (or an unknown) body, a declared length that is not the payload's size or is over the
chunk limit, inode 0, replication out of range.
"""
from __future__ import annotations

from google.protobuf.message import DecodeError

from cluster.common.errors import FsError
from cluster.common.replication import check_replication
from protos import gateway_pb2


class BadRequest(Exception):
    """A malformed client message; `request_id` is 0 when the Request was unreadable."""

    def __init__(self, request_id: int, message: str):
        super().__init__(message)
        self.request_id = request_id
        self.message = message


def _buffer(frame):
    """The bytes of a frame as a buffer without copying (zmq.Frame, bytes or memoryview)."""
    return frame.buffer if hasattr(frame, "buffer") else frame


def decode(frames: list, max_chunk: int) -> tuple[gateway_pb2.Request, object]:
    """(Request, payload buffer or None) from the frames after the identity; or BadRequest."""
    if not frames:
        raise BadRequest(0, "empty message: want [Request] or [Request][payload]")
    head = _buffer(frames[0])
    if len(head) == 0:
        raise BadRequest(0, "empty Request frame")
    request = gateway_pb2.Request()
    try:
        request.ParseFromString(head)
    except (DecodeError, ValueError) as e:
        raise BadRequest(0, f"unreadable Request frame ({len(head)} bytes): {e}") from None
    rid = request.request_id
    body = request.WhichOneof("body")
    if body is None:
        raise BadRequest(rid, "Request has no body (empty or unknown kind)")
    if body == "write":
        if len(frames) != 2:
            raise BadRequest(rid, f"Write wants 2 frames [Request][payload], got {len(frames)}")
        payload = _buffer(frames[1])
        check_write(rid, request.write, len(payload), max_chunk)
        return request, payload
    if len(frames) != 1:
        raise BadRequest(rid, f"{body} wants 1 frame, got {len(frames)}")
    if body == "commit":
        check_commit(rid, request.commit)
    if body == "sync" and request.sync.ino == 0:
        raise BadRequest(rid, "Sync.ino is 0")
    return request, None


def check_write(rid: int, write: gateway_pb2.Write, payload_size: int, max_chunk: int) -> None:
    if write.ino == 0:
        raise BadRequest(rid, "Write.ino is 0")
    if write.length != payload_size:
        raise BadRequest(rid, f"Write.length {write.length} != payload size {payload_size}")
    if write.length > max_chunk:
        raise BadRequest(rid, f"Write.length {write.length} is over the limit of {max_chunk}")
    try:
        check_replication(write.replication, zero_is_default=True)
    except FsError as e:
        raise BadRequest(rid, f"Write.{e.message}") from None
    if write.HasField("commit"):
        if write.commit.ino not in (0, write.ino):
            raise BadRequest(rid, f"Write.commit.ino {write.commit.ino} != Write.ino {write.ino}")
        _check_chunks(rid, write.commit.chunks)
    elif write.length == 0:
        raise BadRequest(rid, "empty Write without a commit")


def check_commit(rid: int, commit: gateway_pb2.Commit) -> None:
    if commit.ino == 0:
        raise BadRequest(rid, "Commit.ino is 0")
    _check_chunks(rid, commit.chunks)


def _check_chunks(rid: int, chunks) -> None:
    for i, chunk in enumerate(chunks):
        if not chunk.fid or chunk.length == 0:
            raise BadRequest(rid, f"chunk {i} has no fid or a length of 0")


def error_reply(request_id: int, errno_name: str, message: str) -> gateway_pb2.Reply:
    return gateway_pb2.Reply(request_id=request_id,
                             error=gateway_pb2.Error(errno_name=errno_name, message=message))
