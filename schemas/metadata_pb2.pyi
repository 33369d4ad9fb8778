from schemas import namespace_pb2 as _namespace_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Lookup(_message.Message):
    __slots__ = ("parent", "name")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    parent: int
    name: bytes
    def __init__(self, parent: _Optional[int] = ..., name: _Optional[bytes] = ...) -> None: ...

class Getattr(_message.Message):
    __slots__ = ("inode",)
    INODE_FIELD_NUMBER: _ClassVar[int]
    inode: int
    def __init__(self, inode: _Optional[int] = ...) -> None: ...

class Readdir(_message.Message):
    __slots__ = ("inode", "cookie", "limit", "names_only")
    INODE_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NAMES_ONLY_FIELD_NUMBER: _ClassVar[int]
    inode: int
    cookie: int
    limit: int
    names_only: bool
    def __init__(self, inode: _Optional[int] = ..., cookie: _Optional[int] = ..., limit: _Optional[int] = ..., names_only: _Optional[bool] = ...) -> None: ...

class Readlink(_message.Message):
    __slots__ = ("inode",)
    INODE_FIELD_NUMBER: _ClassVar[int]
    inode: int
    def __init__(self, inode: _Optional[int] = ...) -> None: ...

class Getxattr(_message.Message):
    __slots__ = ("inode", "name")
    INODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    inode: int
    name: bytes
    def __init__(self, inode: _Optional[int] = ..., name: _Optional[bytes] = ...) -> None: ...

class Listxattr(_message.Message):
    __slots__ = ("inode",)
    INODE_FIELD_NUMBER: _ClassVar[int]
    inode: int
    def __init__(self, inode: _Optional[int] = ...) -> None: ...

class Statfs(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Access(_message.Message):
    __slots__ = ("inode", "mask")
    INODE_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    inode: int
    mask: int
    def __init__(self, inode: _Optional[int] = ..., mask: _Optional[int] = ...) -> None: ...

class LocateChunk(_message.Message):
    __slots__ = ("inode", "chunk_index")
    INODE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    inode: int
    chunk_index: int
    def __init__(self, inode: _Optional[int] = ..., chunk_index: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetClass(_message.Message):
    __slots__ = ("inode",)
    INODE_FIELD_NUMBER: _ClassVar[int]
    inode: int
    def __init__(self, inode: _Optional[int] = ...) -> None: ...

class ChunkHealth(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegionStatus(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LocateChunkId(_message.Message):
    __slots__ = ("chunk_id", "version")
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    chunk_id: int
    version: int
    def __init__(self, chunk_id: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class ReadOpen(_message.Message):
    __slots__ = ("inode", "flags")
    INODE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    inode: int
    flags: int
    def __init__(self, inode: _Optional[int] = ..., flags: _Optional[int] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("id", "session", "seq", "acked_seq", "caller", "follower_read", "min_index", "traceparent", "invalidations", "resent", "lookup", "getattr", "readdir", "readlink", "getxattr", "listxattr", "statfs", "access", "locate_chunk", "heartbeat", "get_class", "chunk_health", "region_status", "locate_chunk_id", "read_open", "mutation")
    ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    FOLLOWER_READ_FIELD_NUMBER: _ClassVar[int]
    MIN_INDEX_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    INVALIDATIONS_FIELD_NUMBER: _ClassVar[int]
    RESENT_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_FIELD_NUMBER: _ClassVar[int]
    GETATTR_FIELD_NUMBER: _ClassVar[int]
    READDIR_FIELD_NUMBER: _ClassVar[int]
    READLINK_FIELD_NUMBER: _ClassVar[int]
    GETXATTR_FIELD_NUMBER: _ClassVar[int]
    LISTXATTR_FIELD_NUMBER: _ClassVar[int]
    STATFS_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    LOCATE_CHUNK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    GET_CLASS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_HEALTH_FIELD_NUMBER: _ClassVar[int]
    REGION_STATUS_FIELD_NUMBER: _ClassVar[int]
    LOCATE_CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    READ_OPEN_FIELD_NUMBER: _ClassVar[int]
    MUTATION_FIELD_NUMBER: _ClassVar[int]
    id: int
    session: int
    seq: int
    acked_seq: int
    caller: _namespace_pb2.Caller
    follower_read: bool
    min_index: int
    traceparent: str
    invalidations: bool
    resent: bool
    lookup: Lookup
    getattr: Getattr
    readdir: Readdir
    readlink: Readlink
    getxattr: Getxattr
    listxattr: Listxattr
    statfs: Statfs
    access: Access
    locate_chunk: LocateChunk
    heartbeat: Heartbeat
    get_class: GetClass
    chunk_health: ChunkHealth
    region_status: RegionStatus
    locate_chunk_id: LocateChunkId
    read_open: ReadOpen
    mutation: _namespace_pb2.Command
    def __init__(self, id: _Optional[int] = ..., session: _Optional[int] = ..., seq: _Optional[int] = ..., acked_seq: _Optional[int] = ..., caller: _Optional[_Union[_namespace_pb2.Caller, _Mapping]] = ..., follower_read: _Optional[bool] = ..., min_index: _Optional[int] = ..., traceparent: _Optional[str] = ..., invalidations: _Optional[bool] = ..., resent: _Optional[bool] = ..., lookup: _Optional[_Union[Lookup, _Mapping]] = ..., getattr: _Optional[_Union[Getattr, _Mapping]] = ..., readdir: _Optional[_Union[Readdir, _Mapping]] = ..., readlink: _Optional[_Union[Readlink, _Mapping]] = ..., getxattr: _Optional[_Union[Getxattr, _Mapping]] = ..., listxattr: _Optional[_Union[Listxattr, _Mapping]] = ..., statfs: _Optional[_Union[Statfs, _Mapping]] = ..., access: _Optional[_Union[Access, _Mapping]] = ..., locate_chunk: _Optional[_Union[LocateChunk, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., get_class: _Optional[_Union[GetClass, _Mapping]] = ..., chunk_health: _Optional[_Union[ChunkHealth, _Mapping]] = ..., region_status: _Optional[_Union[RegionStatus, _Mapping]] = ..., locate_chunk_id: _Optional[_Union[LocateChunkId, _Mapping]] = ..., read_open: _Optional[_Union[ReadOpen, _Mapping]] = ..., mutation: _Optional[_Union[_namespace_pb2.Command, _Mapping]] = ...) -> None: ...

class RequestBatch(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[Request]
    def __init__(self, requests: _Optional[_Iterable[_Union[Request, _Mapping]]] = ...) -> None: ...

class DirEntry(_message.Message):
    __slots__ = ("name", "attr", "cookie")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    name: bytes
    attr: _namespace_pb2.Attr
    cookie: int
    def __init__(self, name: _Optional[bytes] = ..., attr: _Optional[_Union[_namespace_pb2.Attr, _Mapping]] = ..., cookie: _Optional[int] = ...) -> None: ...

class FsStat(_message.Message):
    __slots__ = ("inodes", "used_bytes", "name_max")
    INODES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    NAME_MAX_FIELD_NUMBER: _ClassVar[int]
    inodes: int
    used_bytes: int
    name_max: int
    def __init__(self, inodes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., name_max: _Optional[int] = ...) -> None: ...

class ChunkLocation(_message.Message):
    __slots__ = ("address", "part", "version", "length")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    address: str
    part: int
    version: int
    length: int
    def __init__(self, address: _Optional[str] = ..., part: _Optional[int] = ..., version: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class ServerHealth(_message.Message):
    __slots__ = ("server_id", "address", "connected", "free_bytes", "used_bytes", "chunks")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    address: str
    connected: bool
    free_bytes: int
    used_bytes: int
    chunks: int
    def __init__(self, server_id: _Optional[str] = ..., address: _Optional[str] = ..., connected: _Optional[bool] = ..., free_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., chunks: _Optional[int] = ...) -> None: ...

class Health(_message.Message):
    __slots__ = ("servers", "chunks", "healthy", "under_goal", "missing", "over_goal", "damaged", "orphans", "jobs", "settled", "writable")
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    UNDER_GOAL_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    OVER_GOAL_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_FIELD_NUMBER: _ClassVar[int]
    ORPHANS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    WRITABLE_FIELD_NUMBER: _ClassVar[int]
    servers: _containers.RepeatedCompositeFieldContainer[ServerHealth]
    chunks: int
    healthy: int
    under_goal: int
    missing: int
    over_goal: int
    damaged: int
    orphans: int
    jobs: int
    settled: bool
    writable: bool
    def __init__(self, servers: _Optional[_Iterable[_Union[ServerHealth, _Mapping]]] = ..., chunks: _Optional[int] = ..., healthy: _Optional[int] = ..., under_goal: _Optional[int] = ..., missing: _Optional[int] = ..., over_goal: _Optional[int] = ..., damaged: _Optional[int] = ..., orphans: _Optional[int] = ..., jobs: _Optional[int] = ..., settled: _Optional[bool] = ..., writable: _Optional[bool] = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("id", "status", "errno", "message", "leader_address", "index", "result", "attr", "entries", "data", "names", "statfs", "chunk", "locations", "targets", "storage_class", "health", "region", "inline")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OK: _ClassVar[Reply.Status]
        NOT_LEADER: _ClassVar[Reply.Status]
        BAD_REQUEST: _ClassVar[Reply.Status]
        UNAVAILABLE: _ClassVar[Reply.Status]
        UNKNOWN: _ClassVar[Reply.Status]
    OK: Reply.Status
    NOT_LEADER: Reply.Status
    BAD_REQUEST: Reply.Status
    UNAVAILABLE: Reply.Status
    UNKNOWN: Reply.Status
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERRNO_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ATTR_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    STATFS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_CLASS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    id: int
    status: Reply.Status
    errno: int
    message: str
    leader_address: str
    index: int
    result: _namespace_pb2.Result
    attr: _namespace_pb2.Attr
    entries: _containers.RepeatedCompositeFieldContainer[DirEntry]
    data: bytes
    names: _containers.RepeatedScalarFieldContainer[bytes]
    statfs: FsStat
    chunk: _namespace_pb2.Chunk
    locations: _containers.RepeatedCompositeFieldContainer[ChunkLocation]
    targets: _containers.RepeatedCompositeFieldContainer[ChunkLocation]
    storage_class: str
    health: Health
    region: RegionInfo
    inline: bool
    def __init__(self, id: _Optional[int] = ..., status: _Optional[_Union[Reply.Status, str]] = ..., errno: _Optional[int] = ..., message: _Optional[str] = ..., leader_address: _Optional[str] = ..., index: _Optional[int] = ..., result: _Optional[_Union[_namespace_pb2.Result, _Mapping]] = ..., attr: _Optional[_Union[_namespace_pb2.Attr, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[DirEntry, _Mapping]]] = ..., data: _Optional[bytes] = ..., names: _Optional[_Iterable[bytes]] = ..., statfs: _Optional[_Union[FsStat, _Mapping]] = ..., chunk: _Optional[_Union[_namespace_pb2.Chunk, _Mapping]] = ..., locations: _Optional[_Iterable[_Union[ChunkLocation, _Mapping]]] = ..., targets: _Optional[_Iterable[_Union[ChunkLocation, _Mapping]]] = ..., storage_class: _Optional[str] = ..., health: _Optional[_Union[Health, _Mapping]] = ..., region: _Optional[_Union[RegionInfo, _Mapping]] = ..., inline: _Optional[bool] = ...) -> None: ...

class RegionInfo(_message.Message):
    __slots__ = ("following", "promoted", "shipped_index", "shipped_term", "shipped_time_ns", "source_commit", "promoted_time_ns")
    FOLLOWING_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    SHIPPED_INDEX_FIELD_NUMBER: _ClassVar[int]
    SHIPPED_TERM_FIELD_NUMBER: _ClassVar[int]
    SHIPPED_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_COMMIT_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    following: bool
    promoted: bool
    shipped_index: int
    shipped_term: int
    shipped_time_ns: int
    source_commit: int
    promoted_time_ns: int
    def __init__(self, following: _Optional[bool] = ..., promoted: _Optional[bool] = ..., shipped_index: _Optional[int] = ..., shipped_term: _Optional[int] = ..., shipped_time_ns: _Optional[int] = ..., source_commit: _Optional[int] = ..., promoted_time_ns: _Optional[int] = ...) -> None: ...

class Invalidation(_message.Message):
    __slots__ = ("inode", "parent", "name", "recall_dir")
    INODE_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RECALL_DIR_FIELD_NUMBER: _ClassVar[int]
    inode: int
    parent: int
    name: bytes
    recall_dir: int
    def __init__(self, inode: _Optional[int] = ..., parent: _Optional[int] = ..., name: _Optional[bytes] = ..., recall_dir: _Optional[int] = ...) -> None: ...

class ReplyBatch(_message.Message):
    __slots__ = ("replies", "invalidations")
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    INVALIDATIONS_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[Reply]
    invalidations: _containers.RepeatedCompositeFieldContainer[Invalidation]
    def __init__(self, replies: _Optional[_Iterable[_Union[Reply, _Mapping]]] = ..., invalidations: _Optional[_Iterable[_Union[Invalidation, _Mapping]]] = ...) -> None: ...
