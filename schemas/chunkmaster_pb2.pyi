from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Held(_message.Message):
    __slots__ = ("chunk", "part", "version", "length")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    chunk: int
    part: int
    version: int
    length: int
    def __init__(self, chunk: _Optional[int] = ..., part: _Optional[int] = ..., version: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("server_id", "data_address")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    data_address: str
    def __init__(self, server_id: _Optional[str] = ..., data_address: _Optional[str] = ...) -> None: ...

class Space(_message.Message):
    __slots__ = ("free_bytes", "used_bytes", "chunks")
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    free_bytes: int
    used_bytes: int
    chunks: int
    def __init__(self, free_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., chunks: _Optional[int] = ...) -> None: ...

class Damage(_message.Message):
    __slots__ = ("chunk", "part", "version", "detail")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    chunk: int
    part: int
    version: int
    detail: str
    def __init__(self, chunk: _Optional[int] = ..., part: _Optional[int] = ..., version: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class JobDone(_message.Message):
    __slots__ = ("job", "ok", "message")
    JOB_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job: int
    ok: bool
    message: str
    def __init__(self, job: _Optional[int] = ..., ok: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("hello", "full_report", "holding", "dropped", "space", "damaged", "done")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    FULL_REPORT_FIELD_NUMBER: _ClassVar[int]
    HOLDING_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    full_report: bool
    holding: _containers.RepeatedCompositeFieldContainer[Held]
    dropped: _containers.RepeatedCompositeFieldContainer[Held]
    space: Space
    damaged: _containers.RepeatedCompositeFieldContainer[Damage]
    done: _containers.RepeatedCompositeFieldContainer[JobDone]
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., full_report: _Optional[bool] = ..., holding: _Optional[_Iterable[_Union[Held, _Mapping]]] = ..., dropped: _Optional[_Iterable[_Union[Held, _Mapping]]] = ..., space: _Optional[_Union[Space, _Mapping]] = ..., damaged: _Optional[_Iterable[_Union[Damage, _Mapping]]] = ..., done: _Optional[_Iterable[_Union[JobDone, _Mapping]]] = ...) -> None: ...

class Replicate(_message.Message):
    __slots__ = ("sources", "length")
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedScalarFieldContainer[str]
    length: int
    def __init__(self, sources: _Optional[_Iterable[str]] = ..., length: _Optional[int] = ...) -> None: ...

class Delete(_message.Message):
    __slots__ = ("part",)
    PART_FIELD_NUMBER: _ClassVar[int]
    part: int
    def __init__(self, part: _Optional[int] = ...) -> None: ...

class SetVersion(_message.Message):
    __slots__ = ("old_version",)
    OLD_VERSION_FIELD_NUMBER: _ClassVar[int]
    old_version: int
    def __init__(self, old_version: _Optional[int] = ...) -> None: ...

class Encode(_message.Message):
    __slots__ = ("k", "m", "backend", "targets")
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    k: int
    m: int
    backend: str
    targets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, k: _Optional[int] = ..., m: _Optional[int] = ..., backend: _Optional[str] = ..., targets: _Optional[_Iterable[str]] = ...) -> None: ...

class PartSource(_message.Message):
    __slots__ = ("address", "part", "length")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    address: str
    part: int
    length: int
    def __init__(self, address: _Optional[str] = ..., part: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class Rebuild(_message.Message):
    __slots__ = ("k", "m", "part", "sources")
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    k: int
    m: int
    part: int
    sources: _containers.RepeatedCompositeFieldContainer[PartSource]
    def __init__(self, k: _Optional[int] = ..., m: _Optional[int] = ..., part: _Optional[int] = ..., sources: _Optional[_Iterable[_Union[PartSource, _Mapping]]] = ...) -> None: ...

class Decode(_message.Message):
    __slots__ = ("k", "m", "sources")
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    k: int
    m: int
    sources: _containers.RepeatedCompositeFieldContainer[PartSource]
    def __init__(self, k: _Optional[int] = ..., m: _Optional[int] = ..., sources: _Optional[_Iterable[_Union[PartSource, _Mapping]]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "chunk", "version", "replicate", "delete", "set_version", "encode", "rebuild", "decode")
    ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLICATE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCODE_FIELD_NUMBER: _ClassVar[int]
    REBUILD_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIELD_NUMBER: _ClassVar[int]
    id: int
    chunk: int
    version: int
    replicate: Replicate
    delete: Delete
    set_version: SetVersion
    encode: Encode
    rebuild: Rebuild
    decode: Decode
    def __init__(self, id: _Optional[int] = ..., chunk: _Optional[int] = ..., version: _Optional[int] = ..., replicate: _Optional[_Union[Replicate, _Mapping]] = ..., delete: _Optional[_Union[Delete, _Mapping]] = ..., set_version: _Optional[_Union[SetVersion, _Mapping]] = ..., encode: _Optional[_Union[Encode, _Mapping]] = ..., rebuild: _Optional[_Union[Rebuild, _Mapping]] = ..., decode: _Optional[_Union[Decode, _Mapping]] = ...) -> None: ...

class MasterMessage(_message.Message):
    __slots__ = ("jobs", "leader_address", "error")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    leader_address: str
    error: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., leader_address: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...
