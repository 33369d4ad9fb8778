from schemas import raft_pb2 as _raft_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FollowRequest(_message.Message):
    __slots__ = ("after_index",)
    AFTER_INDEX_FIELD_NUMBER: _ClassVar[int]
    after_index: int
    def __init__(self, after_index: _Optional[int] = ...) -> None: ...

class FollowBatch(_message.Message):
    __slots__ = ("node_id", "commit_index", "applied_index", "prev_index", "prev_term", "entries", "snapshot_index", "snapshot_term", "snapshot_needed")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_TERM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_INDEX_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_TERM_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_NEEDED_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    commit_index: int
    applied_index: int
    prev_index: int
    prev_term: int
    entries: _containers.RepeatedCompositeFieldContainer[_raft_pb2.Entry]
    snapshot_index: int
    snapshot_term: int
    snapshot_needed: bool
    def __init__(self, node_id: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., prev_index: _Optional[int] = ..., prev_term: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[_raft_pb2.Entry, _Mapping]]] = ..., snapshot_index: _Optional[int] = ..., snapshot_term: _Optional[int] = ..., snapshot_needed: _Optional[bool] = ...) -> None: ...

class FetchSnapshotRequest(_message.Message):
    __slots__ = ("have_index", "have")
    class HaveEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    HAVE_INDEX_FIELD_NUMBER: _ClassVar[int]
    HAVE_FIELD_NUMBER: _ClassVar[int]
    have_index: int
    have: _containers.ScalarMap[str, int]
    def __init__(self, have_index: _Optional[int] = ..., have: _Optional[_Mapping[str, int]] = ...) -> None: ...

class SnapshotHeader(_message.Message):
    __slots__ = ("index", "term", "config", "files")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    config: bytes
    files: _containers.RepeatedCompositeFieldContainer[_raft_pb2.SnapshotFile]
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., config: _Optional[bytes] = ..., files: _Optional[_Iterable[_Union[_raft_pb2.SnapshotFile, _Mapping]]] = ...) -> None: ...

class SnapshotPiece(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: SnapshotHeader
    chunk: _raft_pb2.SnapshotChunk
    def __init__(self, header: _Optional[_Union[SnapshotHeader, _Mapping]] = ..., chunk: _Optional[_Union[_raft_pb2.SnapshotChunk, _Mapping]] = ...) -> None: ...
