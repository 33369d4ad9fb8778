from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Caller(_message.Message):
    __slots__ = ("uid", "gid", "groups", "umask")
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    UMASK_FIELD_NUMBER: _ClassVar[int]
    uid: int
    gid: int
    groups: _containers.RepeatedScalarFieldContainer[int]
    umask: int
    def __init__(self, uid: _Optional[int] = ..., gid: _Optional[int] = ..., groups: _Optional[_Iterable[int]] = ..., umask: _Optional[int] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("time_ns", "caller", "session", "seq", "acked_seq", "mkdir", "mknod", "create", "symlink", "link", "unlink", "rmdir", "rename", "setattr", "setxattr", "removexattr", "open_session", "close_session", "open", "release", "begin_write", "commit_write", "set_class", "ship_entries", "promote_region", "adopt_chunks", "delegate", "undelegate", "reserve_inodes", "write_inline", "reserve_chunks")
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    MKDIR_FIELD_NUMBER: _ClassVar[int]
    MKNOD_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    SYMLINK_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    UNLINK_FIELD_NUMBER: _ClassVar[int]
    RMDIR_FIELD_NUMBER: _ClassVar[int]
    RENAME_FIELD_NUMBER: _ClassVar[int]
    SETATTR_FIELD_NUMBER: _ClassVar[int]
    SETXATTR_FIELD_NUMBER: _ClassVar[int]
    REMOVEXATTR_FIELD_NUMBER: _ClassVar[int]
    OPEN_SESSION_FIELD_NUMBER: _ClassVar[int]
    CLOSE_SESSION_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    BEGIN_WRITE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_WRITE_FIELD_NUMBER: _ClassVar[int]
    SET_CLASS_FIELD_NUMBER: _ClassVar[int]
    SHIP_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_REGION_FIELD_NUMBER: _ClassVar[int]
    ADOPT_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DELEGATE_FIELD_NUMBER: _ClassVar[int]
    UNDELEGATE_FIELD_NUMBER: _ClassVar[int]
    RESERVE_INODES_FIELD_NUMBER: _ClassVar[int]
    WRITE_INLINE_FIELD_NUMBER: _ClassVar[int]
    RESERVE_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    time_ns: int
    caller: Caller
    session: int
    seq: int
    acked_seq: int
    mkdir: Mkdir
    mknod: Mknod
    create: Create
    symlink: Symlink
    link: Link
    unlink: Unlink
    rmdir: Rmdir
    rename: Rename
    setattr: Setattr
    setxattr: Setxattr
    removexattr: Removexattr
    open_session: OpenSession
    close_session: CloseSession
    open: Open
    release: Release
    begin_write: BeginWrite
    commit_write: CommitWrite
    set_class: SetClass
    ship_entries: ShipEntries
    promote_region: PromoteRegion
    adopt_chunks: AdoptChunks
    delegate: Delegate
    undelegate: Undelegate
    reserve_inodes: ReserveInodes
    write_inline: WriteInline
    reserve_chunks: ReserveChunks
    def __init__(self, time_ns: _Optional[int] = ..., caller: _Optional[_Union[Caller, _Mapping]] = ..., session: _Optional[int] = ..., seq: _Optional[int] = ..., acked_seq: _Optional[int] = ..., mkdir: _Optional[_Union[Mkdir, _Mapping]] = ..., mknod: _Optional[_Union[Mknod, _Mapping]] = ..., create: _Optional[_Union[Create, _Mapping]] = ..., symlink: _Optional[_Union[Symlink, _Mapping]] = ..., link: _Optional[_Union[Link, _Mapping]] = ..., unlink: _Optional[_Union[Unlink, _Mapping]] = ..., rmdir: _Optional[_Union[Rmdir, _Mapping]] = ..., rename: _Optional[_Union[Rename, _Mapping]] = ..., setattr: _Optional[_Union[Setattr, _Mapping]] = ..., setxattr: _Optional[_Union[Setxattr, _Mapping]] = ..., removexattr: _Optional[_Union[Removexattr, _Mapping]] = ..., open_session: _Optional[_Union[OpenSession, _Mapping]] = ..., close_session: _Optional[_Union[CloseSession, _Mapping]] = ..., open: _Optional[_Union[Open, _Mapping]] = ..., release: _Optional[_Union[Release, _Mapping]] = ..., begin_write: _Optional[_Union[BeginWrite, _Mapping]] = ..., commit_write: _Optional[_Union[CommitWrite, _Mapping]] = ..., set_class: _Optional[_Union[SetClass, _Mapping]] = ..., ship_entries: _Optional[_Union[ShipEntries, _Mapping]] = ..., promote_region: _Optional[_Union[PromoteRegion, _Mapping]] = ..., adopt_chunks: _Optional[_Union[AdoptChunks, _Mapping]] = ..., delegate: _Optional[_Union[Delegate, _Mapping]] = ..., undelegate: _Optional[_Union[Undelegate, _Mapping]] = ..., reserve_inodes: _Optional[_Union[ReserveInodes, _Mapping]] = ..., write_inline: _Optional[_Union[WriteInline, _Mapping]] = ..., reserve_chunks: _Optional[_Union[ReserveChunks, _Mapping]] = ...) -> None: ...

class Mkdir(_message.Message):
    __slots__ = ("parent", "name", "mode", "inode", "time_ns", "delegate")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    INODE_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    DELEGATE_FIELD_NUMBER: _ClassVar[int]
    parent: int
    name: bytes
    mode: int
    inode: int
    time_ns: int
    delegate: bool
    def __init__(self, parent: _Optional[int] = ..., name: _Optional[bytes] = ..., mode: _Optional[int] = ..., inode: _Optional[int] = ..., time_ns: _Optional[int] = ..., delegate: _Optional[bool] = ...) -> None: ...

class Mknod(_message.Message):
    __slots__ = ("parent", "name", "mode", "rdev")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RDEV_FIELD_NUMBER: _ClassVar[int]
    parent: int
    name: bytes
    mode: int
    rdev: int
    def __init__(self, parent: _Optional[int] = ..., name: _Optional[bytes] = ..., mode: _Optional[int] = ..., rdev: _Optional[int] = ...) -> None: ...

class Create(_message.Message):
    __slots__ = ("parent", "name", "mode", "exclusive", "open", "open_flags", "inode", "time_ns", "data", "written_ns")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    OPEN_FLAGS_FIELD_NUMBER: _ClassVar[int]
    INODE_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_NS_FIELD_NUMBER: _ClassVar[int]
    parent: int
    name: bytes
    mode: int
    exclusive: bool
    open: bool
    open_flags: int
    inode: int
    time_ns: int
    data: bytes
    written_ns: int
    def __init__(self, parent: _Optional[int] = ..., name: _Optional[bytes] = ..., mode: _Optional[int] = ..., exclusive: _Optional[bool] = ..., open: _Optional[bool] = ..., open_flags: _Optional[int] = ..., inode: _Optional[int] = ..., time_ns: _Optional[int] = ..., data: _Optional[bytes] = ..., written_ns: _Optional[int] = ...) -> None: ...

class Delegate(_message.Message):
    __slots__ = ("dir",)
    DIR_FIELD_NUMBER: _ClassVar[int]
    dir: int
    def __init__(self, dir: _Optional[int] = ...) -> None: ...

class Undelegate(_message.Message):
    __slots__ = ("dir", "session")
    DIR_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    dir: int
    session: int
    def __init__(self, dir: _Optional[int] = ..., session: _Optional[int] = ...) -> None: ...

class ReserveInodes(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class ReserveChunks(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class Symlink(_message.Message):
    __slots__ = ("parent", "name", "target", "inode", "time_ns")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    INODE_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    parent: int
    name: bytes
    target: bytes
    inode: int
    time_ns: int
    def __init__(self, parent: _Optional[int] = ..., name: _Optional[bytes] = ..., target: _Optional[bytes] = ..., inode: _Optional[int] = ..., time_ns: _Optional[int] = ...) -> None: ...

class Link(_message.Message):
    __slots__ = ("inode", "new_parent", "new_name")
    INODE_FIELD_NUMBER: _ClassVar[int]
    NEW_PARENT_FIELD_NUMBER: _ClassVar[int]
    NEW_NAME_FIELD_NUMBER: _ClassVar[int]
    inode: int
    new_parent: int
    new_name: bytes
    def __init__(self, inode: _Optional[int] = ..., new_parent: _Optional[int] = ..., new_name: _Optional[bytes] = ...) -> None: ...

class Unlink(_message.Message):
    __slots__ = ("parent", "name", "time_ns")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    parent: int
    name: bytes
    time_ns: int
    def __init__(self, parent: _Optional[int] = ..., name: _Optional[bytes] = ..., time_ns: _Optional[int] = ...) -> None: ...

class Rmdir(_message.Message):
    __slots__ = ("parent", "name", "time_ns")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    parent: int
    name: bytes
    time_ns: int
    def __init__(self, parent: _Optional[int] = ..., name: _Optional[bytes] = ..., time_ns: _Optional[int] = ...) -> None: ...

class Rename(_message.Message):
    __slots__ = ("parent", "name", "new_parent", "new_name", "flags")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NEW_PARENT_FIELD_NUMBER: _ClassVar[int]
    NEW_NAME_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    parent: int
    name: bytes
    new_parent: int
    new_name: bytes
    flags: int
    def __init__(self, parent: _Optional[int] = ..., name: _Optional[bytes] = ..., new_parent: _Optional[int] = ..., new_name: _Optional[bytes] = ..., flags: _Optional[int] = ...) -> None: ...

class TimeUpdate(_message.Message):
    __slots__ = ("now", "ns")
    NOW_FIELD_NUMBER: _ClassVar[int]
    NS_FIELD_NUMBER: _ClassVar[int]
    now: bool
    ns: int
    def __init__(self, now: _Optional[bool] = ..., ns: _Optional[int] = ...) -> None: ...

class Setattr(_message.Message):
    __slots__ = ("inode", "mode", "uid", "gid", "size", "atime", "mtime", "via_handle", "time_ns")
    INODE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ATIME_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    VIA_HANDLE_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    inode: int
    mode: int
    uid: int
    gid: int
    size: int
    atime: TimeUpdate
    mtime: TimeUpdate
    via_handle: bool
    time_ns: int
    def __init__(self, inode: _Optional[int] = ..., mode: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., size: _Optional[int] = ..., atime: _Optional[_Union[TimeUpdate, _Mapping]] = ..., mtime: _Optional[_Union[TimeUpdate, _Mapping]] = ..., via_handle: _Optional[bool] = ..., time_ns: _Optional[int] = ...) -> None: ...

class Setxattr(_message.Message):
    __slots__ = ("inode", "name", "value", "flags")
    INODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    inode: int
    name: bytes
    value: bytes
    flags: int
    def __init__(self, inode: _Optional[int] = ..., name: _Optional[bytes] = ..., value: _Optional[bytes] = ..., flags: _Optional[int] = ...) -> None: ...

class Removexattr(_message.Message):
    __slots__ = ("inode", "name")
    INODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    inode: int
    name: bytes
    def __init__(self, inode: _Optional[int] = ..., name: _Optional[bytes] = ...) -> None: ...

class OpenSession(_message.Message):
    __slots__ = ("client",)
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    client: str
    def __init__(self, client: _Optional[str] = ...) -> None: ...

class CloseSession(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: int
    def __init__(self, session: _Optional[int] = ...) -> None: ...

class Open(_message.Message):
    __slots__ = ("inode", "flags", "time_ns")
    INODE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    inode: int
    flags: int
    time_ns: int
    def __init__(self, inode: _Optional[int] = ..., flags: _Optional[int] = ..., time_ns: _Optional[int] = ...) -> None: ...

class Release(_message.Message):
    __slots__ = ("inode",)
    INODE_FIELD_NUMBER: _ClassVar[int]
    inode: int
    def __init__(self, inode: _Optional[int] = ...) -> None: ...

class BeginWrite(_message.Message):
    __slots__ = ("inode", "chunk_index", "chunk_id", "targets")
    INODE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    inode: int
    chunk_index: int
    chunk_id: int
    targets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, inode: _Optional[int] = ..., chunk_index: _Optional[int] = ..., chunk_id: _Optional[int] = ..., targets: _Optional[_Iterable[str]] = ...) -> None: ...

class CommitWrite(_message.Message):
    __slots__ = ("inode", "chunk_index", "chunk_id", "version", "end", "inline_digest", "time_ns")
    INODE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    INLINE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    inode: int
    chunk_index: int
    chunk_id: int
    version: int
    end: int
    inline_digest: bytes
    time_ns: int
    def __init__(self, inode: _Optional[int] = ..., chunk_index: _Optional[int] = ..., chunk_id: _Optional[int] = ..., version: _Optional[int] = ..., end: _Optional[int] = ..., inline_digest: _Optional[bytes] = ..., time_ns: _Optional[int] = ...) -> None: ...

class WriteInline(_message.Message):
    __slots__ = ("inode", "pieces", "time_ns")
    INODE_FIELD_NUMBER: _ClassVar[int]
    PIECES_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    inode: int
    pieces: _containers.RepeatedCompositeFieldContainer[InlinePiece]
    time_ns: int
    def __init__(self, inode: _Optional[int] = ..., pieces: _Optional[_Iterable[_Union[InlinePiece, _Mapping]]] = ..., time_ns: _Optional[int] = ...) -> None: ...

class InlinePiece(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class SetClass(_message.Message):
    __slots__ = ("inode", "storage_class", "default_class")
    INODE_FIELD_NUMBER: _ClassVar[int]
    STORAGE_CLASS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CLASS_FIELD_NUMBER: _ClassVar[int]
    inode: int
    storage_class: str
    default_class: str
    def __init__(self, inode: _Optional[int] = ..., storage_class: _Optional[str] = ..., default_class: _Optional[str] = ...) -> None: ...

class AdoptChunks(_message.Message):
    __slots__ = ("inode", "chunks", "size")
    INODE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    inode: int
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    size: int
    def __init__(self, inode: _Optional[int] = ..., chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ..., size: _Optional[int] = ...) -> None: ...

class Attr(_message.Message):
    __slots__ = ("inode", "mode", "nlink", "uid", "gid", "size", "atime_ns", "mtime_ns", "ctime_ns", "rdev")
    INODE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NLINK_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ATIME_NS_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    CTIME_NS_FIELD_NUMBER: _ClassVar[int]
    RDEV_FIELD_NUMBER: _ClassVar[int]
    inode: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    rdev: int
    def __init__(self, inode: _Optional[int] = ..., mode: _Optional[int] = ..., nlink: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., size: _Optional[int] = ..., atime_ns: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., ctime_ns: _Optional[int] = ..., rdev: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("index", "id", "version")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: int
    version: int
    def __init__(self, index: _Optional[int] = ..., id: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("errno", "message", "attr", "session", "chunk", "first_inode", "inode_count", "first_chunk", "chunk_count")
    ERRNO_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    FIRST_INODE_FIELD_NUMBER: _ClassVar[int]
    INODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_CHUNK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    errno: int
    message: str
    attr: Attr
    session: int
    chunk: Chunk
    first_inode: int
    inode_count: int
    first_chunk: int
    chunk_count: int
    def __init__(self, errno: _Optional[int] = ..., message: _Optional[str] = ..., attr: _Optional[_Union[Attr, _Mapping]] = ..., session: _Optional[int] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., first_inode: _Optional[int] = ..., inode_count: _Optional[int] = ..., first_chunk: _Optional[int] = ..., chunk_count: _Optional[int] = ...) -> None: ...

class ShippedEntry(_message.Message):
    __slots__ = ("index", "term", "command")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    command: bytes
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., command: _Optional[bytes] = ...) -> None: ...

class ShipEntries(_message.Message):
    __slots__ = ("prev_index", "prev_term", "entries", "source_commit")
    PREV_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_TERM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_COMMIT_FIELD_NUMBER: _ClassVar[int]
    prev_index: int
    prev_term: int
    entries: _containers.RepeatedCompositeFieldContainer[ShippedEntry]
    source_commit: int
    def __init__(self, prev_index: _Optional[int] = ..., prev_term: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[ShippedEntry, _Mapping]]] = ..., source_commit: _Optional[int] = ...) -> None: ...

class PromoteRegion(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...
