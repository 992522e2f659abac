from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AllocateRequest(_message.Message):
    __slots__ = ("volume_id", "replication")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    volume_id: int
    replication: int
    def __init__(self, volume_id: _Optional[int] = ..., replication: _Optional[int] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("volume_id", "key", "cookie", "data", "crc32c")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    volume_id: int
    key: int
    cookie: int
    data: bytes
    crc32c: int
    def __init__(self, volume_id: _Optional[int] = ..., key: _Optional[int] = ..., cookie: _Optional[int] = ..., data: _Optional[bytes] = ..., crc32c: _Optional[int] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("volume_id", "key", "cookie", "offset", "length", "whole_blocks")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    WHOLE_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    volume_id: int
    key: int
    cookie: int
    offset: int
    length: int
    whole_blocks: bool
    def __init__(self, volume_id: _Optional[int] = ..., key: _Optional[int] = ..., cookie: _Optional[int] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., whole_blocks: _Optional[bool] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("data", "needle_crc32c", "needle_size", "data_offset", "block_crc32c", "block_size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    NEEDLE_CRC32C_FIELD_NUMBER: _ClassVar[int]
    NEEDLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_OFFSET_FIELD_NUMBER: _ClassVar[int]
    BLOCK_CRC32C_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    needle_crc32c: int
    needle_size: int
    data_offset: int
    block_crc32c: _containers.RepeatedScalarFieldContainer[int]
    block_size: int
    def __init__(self, data: _Optional[bytes] = ..., needle_crc32c: _Optional[int] = ..., needle_size: _Optional[int] = ..., data_offset: _Optional[int] = ..., block_crc32c: _Optional[_Iterable[int]] = ..., block_size: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("volume_id", "key", "cookie")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    volume_id: int
    key: int
    cookie: int
    def __init__(self, volume_id: _Optional[int] = ..., key: _Optional[int] = ..., cookie: _Optional[int] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("freed",)
    FREED_FIELD_NUMBER: _ClassVar[int]
    freed: int
    def __init__(self, freed: _Optional[int] = ...) -> None: ...

class VolumeRef(_message.Message):
    __slots__ = ("volume_id",)
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: int
    def __init__(self, volume_id: _Optional[int] = ...) -> None: ...

class NeedleInfo(_message.Message):
    __slots__ = ("key", "cookie", "size", "crc32c")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    key: int
    cookie: int
    size: int
    crc32c: int
    def __init__(self, key: _Optional[int] = ..., cookie: _Optional[int] = ..., size: _Optional[int] = ..., crc32c: _Optional[int] = ...) -> None: ...

class NeedleList(_message.Message):
    __slots__ = ("needles",)
    NEEDLES_FIELD_NUMBER: _ClassVar[int]
    needles: _containers.RepeatedCompositeFieldContainer[NeedleInfo]
    def __init__(self, needles: _Optional[_Iterable[_Union[NeedleInfo, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VolumeStatus(_message.Message):
    __slots__ = ("volume_id", "replication", "size", "file_count", "deleted_bytes", "read_only", "compact_revision")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETED_BYTES_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    volume_id: int
    replication: int
    size: int
    file_count: int
    deleted_bytes: int
    read_only: bool
    compact_revision: int
    def __init__(self, volume_id: _Optional[int] = ..., replication: _Optional[int] = ..., size: _Optional[int] = ..., file_count: _Optional[int] = ..., deleted_bytes: _Optional[int] = ..., read_only: _Optional[bool] = ..., compact_revision: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("server_id", "name", "volumes", "free_bytes", "total_bytes")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    server_id: int
    name: str
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeStatus]
    free_bytes: int
    total_bytes: int
    def __init__(self, server_id: _Optional[int] = ..., name: _Optional[str] = ..., volumes: _Optional[_Iterable[_Union[VolumeStatus, _Mapping]]] = ..., free_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class NeedleRef(_message.Message):
    __slots__ = ("key", "cookie", "size", "crc32c")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    key: int
    cookie: int
    size: int
    crc32c: int
    def __init__(self, key: _Optional[int] = ..., cookie: _Optional[int] = ..., size: _Optional[int] = ..., crc32c: _Optional[int] = ...) -> None: ...

class CheckNeedlesRequest(_message.Message):
    __slots__ = ("volume_id", "needles")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    NEEDLES_FIELD_NUMBER: _ClassVar[int]
    volume_id: int
    needles: _containers.RepeatedCompositeFieldContainer[NeedleRef]
    def __init__(self, volume_id: _Optional[int] = ..., needles: _Optional[_Iterable[_Union[NeedleRef, _Mapping]]] = ...) -> None: ...

class NeedleCheck(_message.Message):
    __slots__ = ("key", "status", "detail")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OK: _ClassVar[NeedleCheck.Status]
        MISSING: _ClassVar[NeedleCheck.Status]
        WRONG_COOKIE: _ClassVar[NeedleCheck.Status]
        CRC_BAD: _ClassVar[NeedleCheck.Status]
        SIZE_MISMATCH: _ClassVar[NeedleCheck.Status]
        UNREADABLE: _ClassVar[NeedleCheck.Status]
    OK: NeedleCheck.Status
    MISSING: NeedleCheck.Status
    WRONG_COOKIE: NeedleCheck.Status
    CRC_BAD: NeedleCheck.Status
    SIZE_MISMATCH: NeedleCheck.Status
    UNREADABLE: NeedleCheck.Status
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    key: int
    status: NeedleCheck.Status
    detail: str
    def __init__(self, key: _Optional[int] = ..., status: _Optional[_Union[NeedleCheck.Status, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class CheckNeedlesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[NeedleCheck]
    def __init__(self, results: _Optional[_Iterable[_Union[NeedleCheck, _Mapping]]] = ...) -> None: ...

class CopyNeedlesRequest(_message.Message):
    __slots__ = ("volume_id", "source", "needles")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NEEDLES_FIELD_NUMBER: _ClassVar[int]
    volume_id: int
    source: str
    needles: _containers.RepeatedCompositeFieldContainer[NeedleRef]
    def __init__(self, volume_id: _Optional[int] = ..., source: _Optional[str] = ..., needles: _Optional[_Iterable[_Union[NeedleRef, _Mapping]]] = ...) -> None: ...

class CopyNeedlesResponse(_message.Message):
    __slots__ = ("copied", "bytes", "failures")
    COPIED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    copied: int
    bytes: int
    failures: _containers.RepeatedCompositeFieldContainer[NeedleCheck]
    def __init__(self, copied: _Optional[int] = ..., bytes: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[NeedleCheck, _Mapping]]] = ...) -> None: ...

class CopyVolumeRequest(_message.Message):
    __slots__ = ("volume_id", "replication", "source")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    volume_id: int
    replication: int
    source: str
    def __init__(self, volume_id: _Optional[int] = ..., replication: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class CopyVolumeResponse(_message.Message):
    __slots__ = ("copied", "bytes", "failed")
    COPIED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    copied: int
    bytes: int
    failed: int
    def __init__(self, copied: _Optional[int] = ..., bytes: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class CompactResponse(_message.Message):
    __slots__ = ("volume_id", "size_before", "size_after", "compact_revision", "seconds")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    SIZE_AFTER_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    volume_id: int
    size_before: int
    size_after: int
    compact_revision: int
    seconds: float
    def __init__(self, volume_id: _Optional[int] = ..., size_before: _Optional[int] = ..., size_after: _Optional[int] = ..., compact_revision: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("volume_ids",)
    VOLUME_IDS_FIELD_NUMBER: _ClassVar[int]
    volume_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, volume_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class SyncResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
