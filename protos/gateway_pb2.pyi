from protos import master_pb2 as _master_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Write(_message.Message):
    __slots__ = ("ino", "file_offset", "length", "crc32c", "replication", "commit")
    INO_FIELD_NUMBER: _ClassVar[int]
    FILE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ino: int
    file_offset: int
    length: int
    crc32c: int
    replication: int
    commit: Commit
    def __init__(self, ino: _Optional[int] = ..., file_offset: _Optional[int] = ..., length: _Optional[int] = ..., crc32c: _Optional[int] = ..., replication: _Optional[int] = ..., commit: _Optional[_Union[Commit, _Mapping]] = ...) -> None: ...

class Commit(_message.Message):
    __slots__ = ("ino", "chunks", "size", "mtime_ns", "exact_size", "session")
    INO_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    EXACT_SIZE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ino: int
    chunks: _containers.RepeatedCompositeFieldContainer[_master_pb2.Chunk]
    size: int
    mtime_ns: int
    exact_size: bool
    session: int
    def __init__(self, ino: _Optional[int] = ..., chunks: _Optional[_Iterable[_Union[_master_pb2.Chunk, _Mapping]]] = ..., size: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., exact_size: _Optional[bool] = ..., session: _Optional[int] = ...) -> None: ...

class Sync(_message.Message):
    __slots__ = ("ino",)
    INO_FIELD_NUMBER: _ClassVar[int]
    ino: int
    def __init__(self, ino: _Optional[int] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Request(_message.Message):
    __slots__ = ("request_id", "write", "commit", "ping", "sync")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    write: Write
    commit: Commit
    ping: Ping
    sync: Sync
    def __init__(self, request_id: _Optional[int] = ..., write: _Optional[_Union[Write, _Mapping]] = ..., commit: _Optional[_Union[Commit, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., sync: _Optional[_Union[Sync, _Mapping]] = ...) -> None: ...

class Written(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: _master_pb2.Chunk
    def __init__(self, chunk: _Optional[_Union[_master_pb2.Chunk, _Mapping]] = ...) -> None: ...

class Committed(_message.Message):
    __slots__ = ("attr", "chunks")
    ATTR_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    attr: _master_pb2.Attr
    chunks: _containers.RepeatedCompositeFieldContainer[_master_pb2.Chunk]
    def __init__(self, attr: _Optional[_Union[_master_pb2.Attr, _Mapping]] = ..., chunks: _Optional[_Iterable[_Union[_master_pb2.Chunk, _Mapping]]] = ...) -> None: ...

class Synced(_message.Message):
    __slots__ = ("volumes", "servers")
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    volumes: int
    servers: int
    def __init__(self, volumes: _Optional[int] = ..., servers: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("errno_name", "message")
    ERRNO_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    errno_name: str
    message: str
    def __init__(self, errno_name: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("request_id", "written", "committed", "pong", "error", "synced")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    written: Written
    committed: Committed
    pong: Pong
    error: Error
    synced: Synced
    def __init__(self, request_id: _Optional[int] = ..., written: _Optional[_Union[Written, _Mapping]] = ..., committed: _Optional[_Union[Committed, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., synced: _Optional[_Union[Synced, _Mapping]] = ...) -> None: ...
