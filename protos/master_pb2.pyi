from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Attr(_message.Message):
    __slots__ = ("ino", "mode", "uid", "gid", "size", "nlink", "atime_ns", "mtime_ns", "ctime_ns", "replication", "has_xattrs", "rdev", "inline")
    INO_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    NLINK_FIELD_NUMBER: _ClassVar[int]
    ATIME_NS_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    CTIME_NS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    HAS_XATTRS_FIELD_NUMBER: _ClassVar[int]
    RDEV_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    nlink: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    replication: int
    has_xattrs: bool
    rdev: int
    inline: bool
    def __init__(self, ino: _Optional[int] = ..., mode: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., size: _Optional[int] = ..., nlink: _Optional[int] = ..., atime_ns: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., ctime_ns: _Optional[int] = ..., replication: _Optional[int] = ..., has_xattrs: _Optional[bool] = ..., rdev: _Optional[int] = ..., inline: _Optional[bool] = ...) -> None: ...

class Caller(_message.Message):
    __slots__ = ("uid", "gid", "groups")
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    uid: int
    gid: int
    groups: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, uid: _Optional[int] = ..., gid: _Optional[int] = ..., groups: _Optional[_Iterable[int]] = ...) -> None: ...

class PathRequest(_message.Message):
    __slots__ = ("path", "session", "caller", "access")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    path: str
    session: int
    caller: Caller
    access: int
    def __init__(self, path: _Optional[str] = ..., session: _Optional[int] = ..., caller: _Optional[_Union[Caller, _Mapping]] = ..., access: _Optional[int] = ...) -> None: ...

class InoRequest(_message.Message):
    __slots__ = ("ino", "session")
    INO_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ino: int
    session: int
    def __init__(self, ino: _Optional[int] = ..., session: _Optional[int] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReadDirRequest(_message.Message):
    __slots__ = ("path", "after", "page_size", "session", "caller")
    PATH_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    path: str
    after: str
    page_size: int
    session: int
    caller: Caller
    def __init__(self, path: _Optional[str] = ..., after: _Optional[str] = ..., page_size: _Optional[int] = ..., session: _Optional[int] = ..., caller: _Optional[_Union[Caller, _Mapping]] = ...) -> None: ...

class DirEntry(_message.Message):
    __slots__ = ("name", "attr")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELD_NUMBER: _ClassVar[int]
    name: str
    attr: Attr
    def __init__(self, name: _Optional[str] = ..., attr: _Optional[_Union[Attr, _Mapping]] = ...) -> None: ...

class ReadDirPage(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[DirEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[DirEntry, _Mapping]]] = ...) -> None: ...

class MkdirRequest(_message.Message):
    __slots__ = ("path", "mode", "uid", "gid", "parents")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    path: str
    mode: int
    uid: int
    gid: int
    parents: bool
    def __init__(self, path: _Optional[str] = ..., mode: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., parents: _Optional[bool] = ...) -> None: ...

class CreateRequest(_message.Message):
    __slots__ = ("path", "mode", "uid", "gid", "exclusive", "truncate", "replication", "access")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    path: str
    mode: int
    uid: int
    gid: int
    exclusive: bool
    truncate: bool
    replication: int
    access: int
    def __init__(self, path: _Optional[str] = ..., mode: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., exclusive: _Optional[bool] = ..., truncate: _Optional[bool] = ..., replication: _Optional[int] = ..., access: _Optional[int] = ...) -> None: ...

class UnlinkRequest(_message.Message):
    __slots__ = ("path", "keep_open")
    PATH_FIELD_NUMBER: _ClassVar[int]
    KEEP_OPEN_FIELD_NUMBER: _ClassVar[int]
    path: str
    keep_open: bool
    def __init__(self, path: _Optional[str] = ..., keep_open: _Optional[bool] = ...) -> None: ...

class RenameRequest(_message.Message):
    __slots__ = ("old_path", "new_path", "no_replace", "keep_open", "exchange")
    OLD_PATH_FIELD_NUMBER: _ClassVar[int]
    NEW_PATH_FIELD_NUMBER: _ClassVar[int]
    NO_REPLACE_FIELD_NUMBER: _ClassVar[int]
    KEEP_OPEN_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    old_path: str
    new_path: str
    no_replace: bool
    keep_open: bool
    exchange: bool
    def __init__(self, old_path: _Optional[str] = ..., new_path: _Optional[str] = ..., no_replace: _Optional[bool] = ..., keep_open: _Optional[bool] = ..., exchange: _Optional[bool] = ...) -> None: ...

class RenameResponse(_message.Message):
    __slots__ = ("replaced_ino",)
    REPLACED_INO_FIELD_NUMBER: _ClassVar[int]
    replaced_ino: int
    def __init__(self, replaced_ino: _Optional[int] = ...) -> None: ...

class MknodRequest(_message.Message):
    __slots__ = ("path", "mode", "rdev", "uid", "gid")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RDEV_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    path: str
    mode: int
    rdev: int
    uid: int
    gid: int
    def __init__(self, path: _Optional[str] = ..., mode: _Optional[int] = ..., rdev: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ...) -> None: ...

class SymlinkRequest(_message.Message):
    __slots__ = ("path", "target", "uid", "gid")
    PATH_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    path: str
    target: str
    uid: int
    gid: int
    def __init__(self, path: _Optional[str] = ..., target: _Optional[str] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ...) -> None: ...

class ReadlinkResponse(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: str
    def __init__(self, target: _Optional[str] = ...) -> None: ...

class LinkRequest(_message.Message):
    __slots__ = ("existing_path", "new_path")
    EXISTING_PATH_FIELD_NUMBER: _ClassVar[int]
    NEW_PATH_FIELD_NUMBER: _ClassVar[int]
    existing_path: str
    new_path: str
    def __init__(self, existing_path: _Optional[str] = ..., new_path: _Optional[str] = ...) -> None: ...

class SetAttrRequest(_message.Message):
    __slots__ = ("path", "ino", "mode", "uid", "gid", "size", "atime_ns", "mtime_ns", "times_now")
    PATH_FIELD_NUMBER: _ClassVar[int]
    INO_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ATIME_NS_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    TIMES_NOW_FIELD_NUMBER: _ClassVar[int]
    path: str
    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    times_now: bool
    def __init__(self, path: _Optional[str] = ..., ino: _Optional[int] = ..., mode: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., size: _Optional[int] = ..., atime_ns: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., times_now: _Optional[bool] = ...) -> None: ...

class XattrRequest(_message.Message):
    __slots__ = ("path", "name", "value", "flags", "caller", "session")
    PATH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    path: str
    name: str
    value: bytes
    flags: int
    caller: Caller
    session: int
    def __init__(self, path: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[bytes] = ..., flags: _Optional[int] = ..., caller: _Optional[_Union[Caller, _Mapping]] = ..., session: _Optional[int] = ...) -> None: ...

class XattrValue(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    def __init__(self, value: _Optional[bytes] = ...) -> None: ...

class XattrList(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class StatFsResponse(_message.Message):
    __slots__ = ("total_bytes", "free_bytes", "files", "block_size")
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    total_bytes: int
    free_bytes: int
    files: int
    block_size: int
    def __init__(self, total_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., files: _Optional[int] = ..., block_size: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("file_offset", "length", "fid", "needle_offset", "needle_size", "crc32c")
    FILE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    FID_FIELD_NUMBER: _ClassVar[int]
    NEEDLE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    NEEDLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    file_offset: int
    length: int
    fid: str
    needle_offset: int
    needle_size: int
    crc32c: int
    def __init__(self, file_offset: _Optional[int] = ..., length: _Optional[int] = ..., fid: _Optional[str] = ..., needle_offset: _Optional[int] = ..., needle_size: _Optional[int] = ..., crc32c: _Optional[int] = ...) -> None: ...

class FileChunks(_message.Message):
    __slots__ = ("attr", "chunks", "version", "inline_data", "inline_crc32c")
    ATTR_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INLINE_DATA_FIELD_NUMBER: _ClassVar[int]
    INLINE_CRC32C_FIELD_NUMBER: _ClassVar[int]
    attr: Attr
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    version: int
    inline_data: bytes
    inline_crc32c: int
    def __init__(self, attr: _Optional[_Union[Attr, _Mapping]] = ..., chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ..., version: _Optional[int] = ..., inline_data: _Optional[bytes] = ..., inline_crc32c: _Optional[int] = ...) -> None: ...

class WriteInlineRequest(_message.Message):
    __slots__ = ("ino", "offset", "data", "crc32c", "size", "mtime_ns", "exact_size")
    INO_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    EXACT_SIZE_FIELD_NUMBER: _ClassVar[int]
    ino: int
    offset: int
    data: bytes
    crc32c: int
    size: int
    mtime_ns: int
    exact_size: bool
    def __init__(self, ino: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., crc32c: _Optional[int] = ..., size: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., exact_size: _Optional[bool] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("ino", "chunks", "size", "mtime_ns", "exact_size", "session", "client")
    INO_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    EXACT_SIZE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ino: int
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    size: int
    mtime_ns: int
    exact_size: bool
    session: int
    client: str
    def __init__(self, ino: _Optional[int] = ..., chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ..., size: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., exact_size: _Optional[bool] = ..., session: _Optional[int] = ..., client: _Optional[str] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("session", "subdir", "no_callbacks")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SUBDIR_FIELD_NUMBER: _ClassVar[int]
    NO_CALLBACKS_FIELD_NUMBER: _ClassVar[int]
    session: int
    subdir: str
    no_callbacks: bool
    def __init__(self, session: _Optional[int] = ..., subdir: _Optional[str] = ..., no_callbacks: _Optional[bool] = ...) -> None: ...

class SessionReply(_message.Message):
    __slots__ = ("session", "lease_s")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    session: int
    lease_s: float
    def __init__(self, session: _Optional[int] = ..., lease_s: _Optional[float] = ...) -> None: ...

class CallbackBreak(_message.Message):
    __slots__ = ("break_id", "paths", "trees", "inos", "everything")
    BREAK_ID_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    TREES_FIELD_NUMBER: _ClassVar[int]
    INOS_FIELD_NUMBER: _ClassVar[int]
    EVERYTHING_FIELD_NUMBER: _ClassVar[int]
    break_id: int
    paths: _containers.RepeatedScalarFieldContainer[str]
    trees: _containers.RepeatedScalarFieldContainer[str]
    inos: _containers.RepeatedScalarFieldContainer[int]
    everything: bool
    def __init__(self, break_id: _Optional[int] = ..., paths: _Optional[_Iterable[str]] = ..., trees: _Optional[_Iterable[str]] = ..., inos: _Optional[_Iterable[int]] = ..., everything: _Optional[bool] = ...) -> None: ...

class BreakAck(_message.Message):
    __slots__ = ("break_id",)
    BREAK_ID_FIELD_NUMBER: _ClassVar[int]
    break_id: int
    def __init__(self, break_id: _Optional[int] = ...) -> None: ...

class LockRequest(_message.Message):
    __slots__ = ("ino", "owner", "flock", "type", "start", "end", "test", "pid")
    INO_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    FLOCK_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    ino: int
    owner: int
    flock: bool
    type: int
    start: int
    end: int
    test: bool
    pid: int
    def __init__(self, ino: _Optional[int] = ..., owner: _Optional[int] = ..., flock: _Optional[bool] = ..., type: _Optional[int] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., test: _Optional[bool] = ..., pid: _Optional[int] = ...) -> None: ...

class LockReply(_message.Message):
    __slots__ = ("granted", "conflict")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    conflict: LockRequest
    def __init__(self, granted: _Optional[bool] = ..., conflict: _Optional[_Union[LockRequest, _Mapping]] = ...) -> None: ...

class Mutation(_message.Message):
    __slots__ = ("id", "durable", "session", "caller", "mkdir", "create", "mknod", "symlink", "link", "unlink", "rmdir", "rename", "set_attr", "set_xattr", "remove_xattr", "commit_chunks", "release_inode", "sync", "write_inline", "open_session", "renew_session", "break_ack", "lock", "close_session")
    ID_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    MKDIR_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    MKNOD_FIELD_NUMBER: _ClassVar[int]
    SYMLINK_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    UNLINK_FIELD_NUMBER: _ClassVar[int]
    RMDIR_FIELD_NUMBER: _ClassVar[int]
    RENAME_FIELD_NUMBER: _ClassVar[int]
    SET_ATTR_FIELD_NUMBER: _ClassVar[int]
    SET_XATTR_FIELD_NUMBER: _ClassVar[int]
    REMOVE_XATTR_FIELD_NUMBER: _ClassVar[int]
    COMMIT_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_INODE_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    WRITE_INLINE_FIELD_NUMBER: _ClassVar[int]
    OPEN_SESSION_FIELD_NUMBER: _ClassVar[int]
    RENEW_SESSION_FIELD_NUMBER: _ClassVar[int]
    BREAK_ACK_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    CLOSE_SESSION_FIELD_NUMBER: _ClassVar[int]
    id: int
    durable: bool
    session: int
    caller: Caller
    mkdir: MkdirRequest
    create: CreateRequest
    mknod: MknodRequest
    symlink: SymlinkRequest
    link: LinkRequest
    unlink: UnlinkRequest
    rmdir: PathRequest
    rename: RenameRequest
    set_attr: SetAttrRequest
    set_xattr: XattrRequest
    remove_xattr: XattrRequest
    commit_chunks: CommitRequest
    release_inode: InoRequest
    sync: Empty
    write_inline: WriteInlineRequest
    open_session: SessionRequest
    renew_session: SessionRequest
    break_ack: BreakAck
    lock: LockRequest
    close_session: SessionRequest
    def __init__(self, id: _Optional[int] = ..., durable: _Optional[bool] = ..., session: _Optional[int] = ..., caller: _Optional[_Union[Caller, _Mapping]] = ..., mkdir: _Optional[_Union[MkdirRequest, _Mapping]] = ..., create: _Optional[_Union[CreateRequest, _Mapping]] = ..., mknod: _Optional[_Union[MknodRequest, _Mapping]] = ..., symlink: _Optional[_Union[SymlinkRequest, _Mapping]] = ..., link: _Optional[_Union[LinkRequest, _Mapping]] = ..., unlink: _Optional[_Union[UnlinkRequest, _Mapping]] = ..., rmdir: _Optional[_Union[PathRequest, _Mapping]] = ..., rename: _Optional[_Union[RenameRequest, _Mapping]] = ..., set_attr: _Optional[_Union[SetAttrRequest, _Mapping]] = ..., set_xattr: _Optional[_Union[XattrRequest, _Mapping]] = ..., remove_xattr: _Optional[_Union[XattrRequest, _Mapping]] = ..., commit_chunks: _Optional[_Union[CommitRequest, _Mapping]] = ..., release_inode: _Optional[_Union[InoRequest, _Mapping]] = ..., sync: _Optional[_Union[Empty, _Mapping]] = ..., write_inline: _Optional[_Union[WriteInlineRequest, _Mapping]] = ..., open_session: _Optional[_Union[SessionRequest, _Mapping]] = ..., renew_session: _Optional[_Union[SessionRequest, _Mapping]] = ..., break_ack: _Optional[_Union[BreakAck, _Mapping]] = ..., lock: _Optional[_Union[LockRequest, _Mapping]] = ..., close_session: _Optional[_Union[SessionRequest, _Mapping]] = ...) -> None: ...

class MutationReply(_message.Message):
    __slots__ = ("id", "errno", "message", "attr", "rename", "empty", "session", "callback_break", "lock")
    ID_FIELD_NUMBER: _ClassVar[int]
    ERRNO_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELD_NUMBER: _ClassVar[int]
    RENAME_FIELD_NUMBER: _ClassVar[int]
    EMPTY_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_BREAK_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    id: int
    errno: int
    message: str
    attr: Attr
    rename: RenameResponse
    empty: Empty
    session: SessionReply
    callback_break: CallbackBreak
    lock: LockReply
    def __init__(self, id: _Optional[int] = ..., errno: _Optional[int] = ..., message: _Optional[str] = ..., attr: _Optional[_Union[Attr, _Mapping]] = ..., rename: _Optional[_Union[RenameResponse, _Mapping]] = ..., empty: _Optional[_Union[Empty, _Mapping]] = ..., session: _Optional[_Union[SessionReply, _Mapping]] = ..., callback_break: _Optional[_Union[CallbackBreak, _Mapping]] = ..., lock: _Optional[_Union[LockReply, _Mapping]] = ...) -> None: ...

class Location(_message.Message):
    __slots__ = ("server_id", "name", "grpc_address", "http_address")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    server_id: int
    name: str
    grpc_address: str
    http_address: str
    def __init__(self, server_id: _Optional[int] = ..., name: _Optional[str] = ..., grpc_address: _Optional[str] = ..., http_address: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("server_id", "name", "grpc_address", "http_address")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    server_id: int
    name: str
    grpc_address: str
    http_address: str
    def __init__(self, server_id: _Optional[int] = ..., name: _Optional[str] = ..., grpc_address: _Optional[str] = ..., http_address: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("server_id", "heartbeat_interval_ms", "volume_size_limit", "master_name")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    VOLUME_SIZE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MASTER_NAME_FIELD_NUMBER: _ClassVar[int]
    server_id: int
    heartbeat_interval_ms: int
    volume_size_limit: int
    master_name: str
    def __init__(self, server_id: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ..., volume_size_limit: _Optional[int] = ..., master_name: _Optional[str] = ...) -> None: ...

class VolumeInfo(_message.Message):
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

class Heartbeat(_message.Message):
    __slots__ = ("server_id", "grpc_address", "http_address", "name", "volumes", "free_bytes", "total_bytes", "max_volumes")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_VOLUMES_FIELD_NUMBER: _ClassVar[int]
    server_id: int
    grpc_address: str
    http_address: str
    name: str
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeInfo]
    free_bytes: int
    total_bytes: int
    max_volumes: int
    def __init__(self, server_id: _Optional[int] = ..., grpc_address: _Optional[str] = ..., http_address: _Optional[str] = ..., name: _Optional[str] = ..., volumes: _Optional[_Iterable[_Union[VolumeInfo, _Mapping]]] = ..., free_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., max_volumes: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("reregister",)
    REREGISTER_FIELD_NUMBER: _ClassVar[int]
    reregister: bool
    def __init__(self, reregister: _Optional[bool] = ...) -> None: ...

class GatewayHeartbeat(_message.Message):
    __slots__ = ("name", "address", "http_address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    http_address: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., http_address: _Optional[str] = ...) -> None: ...

class AssignRequest(_message.Message):
    __slots__ = ("count", "replication", "avoid_volumes")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    AVOID_VOLUMES_FIELD_NUMBER: _ClassVar[int]
    count: int
    replication: int
    avoid_volumes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, count: _Optional[int] = ..., replication: _Optional[int] = ..., avoid_volumes: _Optional[_Iterable[int]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("fid", "replicas")
    FID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    fid: str
    replicas: _containers.RepeatedCompositeFieldContainer[Location]
    def __init__(self, fid: _Optional[str] = ..., replicas: _Optional[_Iterable[_Union[Location, _Mapping]]] = ...) -> None: ...

class AssignResponse(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    def __init__(self, assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("volume_ids",)
    VOLUME_IDS_FIELD_NUMBER: _ClassVar[int]
    volume_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, volume_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class VolumeLocation(_message.Message):
    __slots__ = ("volume_id", "replicas")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    volume_id: int
    replicas: _containers.RepeatedCompositeFieldContainer[Location]
    def __init__(self, volume_id: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[Location, _Mapping]]] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("locations",)
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    locations: _containers.RepeatedCompositeFieldContainer[VolumeLocation]
    def __init__(self, locations: _Optional[_Iterable[_Union[VolumeLocation, _Mapping]]] = ...) -> None: ...

class ServerStatus(_message.Message):
    __slots__ = ("server_id", "name", "grpc_address", "http_address", "alive", "last_seen_s", "volumes", "free_bytes", "total_bytes")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_S_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    server_id: int
    name: str
    grpc_address: str
    http_address: str
    alive: bool
    last_seen_s: float
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeInfo]
    free_bytes: int
    total_bytes: int
    def __init__(self, server_id: _Optional[int] = ..., name: _Optional[str] = ..., grpc_address: _Optional[str] = ..., http_address: _Optional[str] = ..., alive: _Optional[bool] = ..., last_seen_s: _Optional[float] = ..., volumes: _Optional[_Iterable[_Union[VolumeInfo, _Mapping]]] = ..., free_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class GatewayStatus(_message.Message):
    __slots__ = ("name", "address", "http_address", "alive", "last_seen_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    http_address: str
    alive: bool
    last_seen_s: float
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., http_address: _Optional[str] = ..., alive: _Optional[bool] = ..., last_seen_s: _Optional[float] = ...) -> None: ...

class ClusterStatusResponse(_message.Message):
    __slots__ = ("master_name", "grpc_address", "servers", "gateways", "files", "default_replication", "pending_deletions", "mutation_address", "inline_max", "leader", "masters")
    MASTER_NAME_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    GATEWAYS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_REPLICATION_FIELD_NUMBER: _ClassVar[int]
    PENDING_DELETIONS_FIELD_NUMBER: _ClassVar[int]
    MUTATION_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INLINE_MAX_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    MASTERS_FIELD_NUMBER: _ClassVar[int]
    master_name: str
    grpc_address: str
    servers: _containers.RepeatedCompositeFieldContainer[ServerStatus]
    gateways: _containers.RepeatedCompositeFieldContainer[GatewayStatus]
    files: int
    default_replication: int
    pending_deletions: int
    mutation_address: str
    inline_max: int
    leader: str
    masters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, master_name: _Optional[str] = ..., grpc_address: _Optional[str] = ..., servers: _Optional[_Iterable[_Union[ServerStatus, _Mapping]]] = ..., gateways: _Optional[_Iterable[_Union[GatewayStatus, _Mapping]]] = ..., files: _Optional[int] = ..., default_replication: _Optional[int] = ..., pending_deletions: _Optional[int] = ..., mutation_address: _Optional[str] = ..., inline_max: _Optional[int] = ..., leader: _Optional[str] = ..., masters: _Optional[_Iterable[str]] = ...) -> None: ...

class ListChunksRequest(_message.Message):
    __slots__ = ("page_size",)
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    def __init__(self, page_size: _Optional[int] = ...) -> None: ...

class ChunkRef(_message.Message):
    __slots__ = ("ino", "path", "file_offset", "length", "fid", "needle_size", "crc32c")
    INO_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    FID_FIELD_NUMBER: _ClassVar[int]
    NEEDLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    ino: int
    path: str
    file_offset: int
    length: int
    fid: str
    needle_size: int
    crc32c: int
    def __init__(self, ino: _Optional[int] = ..., path: _Optional[str] = ..., file_offset: _Optional[int] = ..., length: _Optional[int] = ..., fid: _Optional[str] = ..., needle_size: _Optional[int] = ..., crc32c: _Optional[int] = ...) -> None: ...

class ChunkRefPage(_message.Message):
    __slots__ = ("chunks", "queued_fids", "key_high_water", "inline")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIDS_FIELD_NUMBER: _ClassVar[int]
    KEY_HIGH_WATER_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[ChunkRef]
    queued_fids: _containers.RepeatedScalarFieldContainer[str]
    key_high_water: int
    inline: _containers.RepeatedCompositeFieldContainer[InlineCheck]
    def __init__(self, chunks: _Optional[_Iterable[_Union[ChunkRef, _Mapping]]] = ..., queued_fids: _Optional[_Iterable[str]] = ..., key_high_water: _Optional[int] = ..., inline: _Optional[_Iterable[_Union[InlineCheck, _Mapping]]] = ...) -> None: ...

class InlineCheck(_message.Message):
    __slots__ = ("ino", "path", "size", "crc_ok")
    INO_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CRC_OK_FIELD_NUMBER: _ClassVar[int]
    ino: int
    path: str
    size: int
    crc_ok: bool
    def __init__(self, ino: _Optional[int] = ..., path: _Optional[str] = ..., size: _Optional[int] = ..., crc_ok: _Optional[bool] = ...) -> None: ...

class QueueOrphansRequest(_message.Message):
    __slots__ = ("fids", "min_age_s")
    FIDS_FIELD_NUMBER: _ClassVar[int]
    MIN_AGE_S_FIELD_NUMBER: _ClassVar[int]
    fids: _containers.RepeatedScalarFieldContainer[str]
    min_age_s: float
    def __init__(self, fids: _Optional[_Iterable[str]] = ..., min_age_s: _Optional[float] = ...) -> None: ...

class QueueOrphansResponse(_message.Message):
    __slots__ = ("queued", "referenced", "too_recent")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    REFERENCED_FIELD_NUMBER: _ClassVar[int]
    TOO_RECENT_FIELD_NUMBER: _ClassVar[int]
    queued: int
    referenced: int
    too_recent: int
    def __init__(self, queued: _Optional[int] = ..., referenced: _Optional[int] = ..., too_recent: _Optional[int] = ...) -> None: ...

class VacuumRequest(_message.Message):
    __slots__ = ("threshold", "volume_ids")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VOLUME_IDS_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    volume_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, threshold: _Optional[float] = ..., volume_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class VolumeVacuum(_message.Message):
    __slots__ = ("volume_id", "server", "garbage_ratio", "size_before", "size_after", "compact_revision", "error", "seconds")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    GARBAGE_RATIO_FIELD_NUMBER: _ClassVar[int]
    SIZE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    SIZE_AFTER_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    volume_id: int
    server: str
    garbage_ratio: float
    size_before: int
    size_after: int
    compact_revision: int
    error: str
    seconds: float
    def __init__(self, volume_id: _Optional[int] = ..., server: _Optional[str] = ..., garbage_ratio: _Optional[float] = ..., size_before: _Optional[int] = ..., size_after: _Optional[int] = ..., compact_revision: _Optional[int] = ..., error: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class VacuumResponse(_message.Message):
    __slots__ = ("replicas",)
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedCompositeFieldContainer[VolumeVacuum]
    def __init__(self, replicas: _Optional[_Iterable[_Union[VolumeVacuum, _Mapping]]] = ...) -> None: ...
