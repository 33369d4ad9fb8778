"""The fold's data path: chunk writes begun and committed, small files' bytes kept
inline, storage classes, and chunks adopted by a restore."""

import errno
import stat

from schemas import namespace_pb2 as pb
from services.chunk.parts import MAX_CHUNK_ID
from services.common import storage_class
from services.common.posix import attributes, inline_data
from services.common.posix import permissions as perm
from services.common.posix import records as r
from services.common.posix.errors import FsError
from services.metadata.namespace import delegation_fold
from services.metadata.namespace.namespace import Namespace, ok

MAX_FILE_SIZE = attributes.MAX_FILE_SIZE


def _written_file(ns: Namespace, ino: int, session: int) -> r.Inode:
    node = ns.inode(ino)
    if not stat.S_ISREG(node.mode):
        raise FsError(errno.EISDIR if node.is_dir else errno.EINVAL,
                      f"inode {ino} is not a regular file")
    if session and ns.txn.get(r.OPENS, r.TWO_U64.pack(session, ino)) is None:
        raise FsError(errno.EBADF, f"inode {ino} is not open in session {session}")
    return node


def begin_write(ns: Namespace, op: pb.BeginWrite, session: int) -> pb.Result:
    node = _written_file(ns, op.inode, session)
    if op.chunk_index * r.CHUNK_SIZE >= MAX_FILE_SIZE:
        raise FsError(errno.EFBIG, f"chunk {op.chunk_index} is past the largest file size")
    key = r.chunk_key(node.ino, op.chunk_index)
    found = ns.txn.get(r.CHUNKS, key)
    if op.chunk_id:     # begun by the client with an id of its session's range
        if found is not None:
            raise FsError(errno.EEXIST, f"chunk {op.chunk_index} of inode {node.ino} "
                                        "exists: begin its write at the master")
        delegation_fold.claim_chunk(ns, session, op.chunk_id)
        chunk_id, version = op.chunk_id, 0
        ns.txn.put(r.CHUNK_OWNERS, r.u64(chunk_id), key)
    elif found is None:
        chunk_id, version = ns.counter(b"next_chunk"), 0
        if chunk_id > MAX_CHUNK_ID:
            raise FsError(errno.ENOSPC, "every chunk id has been used")
        ns.add_counter(b"next_chunk", 1)
        ns.txn.put(r.CHUNK_OWNERS, r.u64(chunk_id), key)
    else:
        chunk_id, version = r.CHUNK_VALUE.unpack(found)
    version += 1  # chunkservers refuse writes at any older version
    ns.txn.put(r.CHUNKS, key, r.CHUNK_VALUE.pack(chunk_id, version))
    return pb.Result(attr=node.to_attr(),
                     chunk=pb.Chunk(index=op.chunk_index, id=chunk_id, version=version))


def commit_write(ns: Namespace, op: pb.CommitWrite, session: int) -> pb.Result:
    node = _written_file(ns, op.inode, session)
    found = ns.txn.get(r.CHUNKS, r.chunk_key(node.ino, op.chunk_index))
    if found is None or r.CHUNK_VALUE.unpack(found) != (op.chunk_id, op.version):
        raise FsError(errno.ESTALE, f"chunk {op.chunk_index} of inode {node.ino} changed "
                                    "since the write began (truncated or rewritten): redo it")
    if op.end > MAX_FILE_SIZE:
        raise FsError(errno.EFBIG, f"size {op.end} is above the limit {MAX_FILE_SIZE}")
    inline_data.moved_to_chunk(ns.txn, node, op)
    ns.txn.put(r.COMMITTED, r.u64(op.chunk_id), r.U32.pack(op.version))
    if op.end > node.size:
        ns.add_used_bytes(op.end - node.size)
    attributes.wrote(ns.caller, node, op.end,
                     inline_data.client_time(ns.now, op.time_ns))
    ns.save(node)
    return ok(node)


def write_inline(ns: Namespace, op: pb.WriteInline, session: int) -> pb.Result:
    """Writes to a small file kept inline (inline_data.py); like a CommitWrite, they
    set mtime and ctime and take away set-user-ID and set-group-ID."""
    node = _written_file(ns, op.inode, session)
    inline_data.write(ns, node, op.pieces)
    attributes.wrote(ns.caller, node, node.size,
                     inline_data.client_time(ns.now, op.time_ns))
    ns.save(node)
    return ok(node)


def set_class(ns: Namespace, op: pb.SetClass) -> pb.Result:
    node = ns.inode(op.inode)
    if not perm.owner_or_root(ns.caller, node):
        raise FsError(errno.EPERM, "only the owner may change a storage class")
    key = r.u64(node.ino)
    text = ""
    if op.storage_class:
        try:
            text = str(storage_class.parse(op.storage_class))
        except storage_class.StorageClassError as exc:
            raise FsError(errno.EINVAL, str(exc)) from None
    _keep_encoded_data(ns, node, ns.txn.get(r.CLASSES, key), text, op.default_class)
    if text:
        ns.txn.put(r.CLASSES, key, text.encode())
    else:
        ns.txn.delete(r.CLASSES, key)
    node.ctime = ns.now
    ns.save(node)
    return ok(node)


def _keep_encoded_data(ns: Namespace, node: r.Inode, old: bytes | None, new: str,
                       default: str) -> None:
    """Erasure-coded parts are read, rebuilt and judged complete with the shape they were
    encoded in. A file with data may leave its ec=K+M class for copies=N (the chunk
    manager decodes its parts back into copies, with the shape kept under the file's
    parts key) or come back to that shape, but not take another one: no job re-encodes
    parts, and read with another shape they are lost, or deleted as extra. `default`:
    the cluster default the leader stamped ("" in commands from before it did)."""
    if not stat.S_ISREG(node.mode):
        return
    parts_key = r.parts_class_key(node.ino)
    kept = ns.txn.get(r.CLASSES, parts_key)
    if not _is_class(default):
        default = ""            # not the leader's stamp: as if none had been made
    current = old.decode() if old is not None else default
    shape = kept.decode() if kept is not None else \
        current if current and storage_class.parse(current).is_ec else None
    target = new or default
    if shape is None or not ns.txn.scan(r.CHUNKS, r.u64(node.ino)) or target == shape:
        if kept is not None:
            ns.txn.delete(r.CLASSES, parts_key)
        return
    if target and not storage_class.parse(target).is_ec:
        ns.txn.put(r.CLASSES, parts_key, shape.encode())
        return
    raise FsError(errno.EOPNOTSUPP,
                  f"inode {node.ino} holds data stored as {shape} parts, which cannot be "
                  f"re-encoded into another shape yet: give it {shape} or a copies=N class"
                  + ("" if target else " by name (the cluster default may be another shape)"))


def _is_class(text: str) -> bool:
    try:
        storage_class.parse(text)
    except storage_class.StorageClassError:
        return False
    return True


def adopt_chunks(ns: Namespace, op: pb.AdoptChunks) -> pb.Result:
    """Retained chunks become an empty file's contents (a restore's undelete)."""
    if not perm.is_root(ns.caller):
        raise FsError(errno.EPERM, "only root may adopt chunks: they may hold anyone's data")
    node = _written_file(ns, op.inode, 0)
    if node.size or ns.txn.scan(r.CHUNKS, r.u64(node.ino)):
        raise FsError(errno.EEXIST, f"inode {node.ino} already has contents; chunks are "
                                    "adopted only by an empty file")
    if op.size > MAX_FILE_SIZE:
        raise FsError(errno.EFBIG, f"size {op.size} is above the limit {MAX_FILE_SIZE}")
    _check_adoptable(ns, op)
    for chunk in op.chunks:
        key = r.chunk_key(node.ino, chunk.index)
        ns.txn.put(r.CHUNKS, key, r.CHUNK_VALUE.pack(chunk.id, chunk.version))
        ns.txn.put(r.CHUNK_OWNERS, r.u64(chunk.id), key)
    ns.add_used_bytes(op.size)
    node.size = op.size
    node.mtime = node.ctime = ns.now
    ns.save(node)
    return ok(node)


def _check_adoptable(ns: Namespace, op: pb.AdoptChunks) -> None:
    """Each chunk was allocated, is owned by no file, and lies within the size; the
    log cannot know whether copies still exist (soft state): the caller checks that."""
    allocated = ns.counter(b"next_chunk")
    indexes, ids = set(), set()
    for chunk in op.chunks:
        if chunk.index * r.CHUNK_SIZE >= op.size:
            raise FsError(errno.EINVAL, f"chunk index {chunk.index} lies past the size "
                                        f"{op.size}")
        if chunk.index in indexes or chunk.id in ids:
            raise FsError(errno.EINVAL, f"chunk index {chunk.index} or id {chunk.id} is "
                                        "given twice")
        indexes.add(chunk.index)
        ids.add(chunk.id)
        if not 0 < chunk.id < allocated or chunk.version == 0:
            raise FsError(errno.ENOENT, f"chunk {chunk.id} version {chunk.version} was "
                                        "never written")
        owner = ns.txn.get(r.CHUNK_OWNERS, r.u64(chunk.id))
        if owner is not None:
            raise FsError(errno.EBUSY, f"chunk {chunk.id} belongs to inode "
                                       f"{r.split_chunk_key(owner)[0]}; only a chunk no "
                                       "file refers to can be adopted")
