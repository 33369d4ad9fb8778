"""Small files' bytes, kept in the log and the projection instead of in chunks.

A regular file with no chunks whose writes stay within INLINE_MAX bytes keeps its
bytes in the INLINE family: ino -> the file's first bytes; what lies past them, up
to the size, reads as zeros (a truncate that extends the file writes nothing). A
small file is then written with one command (WriteInline, or a delegated Create
that carries the data) and read with the open that finds it: no chunkserver, no
chunk version, no second round trip. Lustre's Data-on-MDT keeps small files on its
metadata servers for the same reason. The bytes are as durable as the namespace
itself: every metadata replica holds them, and so does the metalogger's archive.

A file that grows past INLINE_MAX, or has chunks, is written through chunks: its
writer begins chunk 0, copies the inline bytes into it first, and the CommitWrite
of chunk 0 names the digest of what it copied and drops the record (ESTALE when
the bytes changed meanwhile: the writer copies them again). Until that commit the
inline bytes are the file's contents, whatever chunk 0 holds.
"""

import errno
import hashlib

from schemas import namespace_pb2 as pb
from services.common.posix import records as r
from services.common.posix.errors import FsError

CLIENT_TIME_WINDOW_NS = 10 * 10**9   # how far before the leader's stamp a client's
# own time (a file only it can reach yet) is still taken


def get(txn, ino: int) -> bytes | None:
    return txn.get(r.INLINE, r.u64(ino))


def digest(data: bytes) -> bytes:
    """What a CommitWrite names to say which inline bytes it copied into chunk 0."""
    return hashlib.blake2b(data, digest_size=16).digest()


def client_time(stamped: int, told: int) -> int:
    """The time a change made by a client that answered it itself takes: the time the
    client told the application, when it lies within the window before the leader's
    stamp (deterministic: both are in the command); else the stamp."""
    if told and stamped - CLIENT_TIME_WINDOW_NS <= told <= stamped:
        return told
    return stamped


def has_chunks(txn, ino: int) -> bool:
    return bool(txn.scan(r.CHUNKS, r.u64(ino)))


def write(ns, node: r.Inode, pieces) -> None:
    """Apply `pieces` to the file's inline bytes and grow its size to cover them.
    EFBIG when the file has chunks or a piece ends past INLINE_MAX (nothing is
    written: the caller writes through chunks instead)."""
    if has_chunks(ns.txn, node.ino):
        raise FsError(errno.EFBIG, f"inode {node.ino} has chunks: write it through them")
    data = bytearray(get(ns.txn, node.ino) or b"")
    for piece in pieces:
        if not piece.data:
            continue
        end = piece.offset + len(piece.data)
        if end > r.INLINE_MAX:
            raise FsError(errno.EFBIG, f"a write ending at {end} does not fit the "
                                       f"{r.INLINE_MAX} bytes kept inline: write it "
                                       "through chunks")
        if piece.offset > len(data):
            data.extend(bytes(piece.offset - len(data)))
        data[piece.offset:end] = piece.data
    put(ns, node, bytes(data))


def put(ns, node: r.Inode, data: bytes) -> None:
    """The file's inline bytes are `data`; its size grows to cover them."""
    if data:
        ns.txn.put(r.INLINE, r.u64(node.ino), data)
    if len(data) > node.size:
        ns.add_used_bytes(len(data) - node.size)
        node.size = len(data)


def cut(txn, ino: int, size: int) -> None:
    """The file shrinks to `size`: inline bytes past it go (an empty record too)."""
    held = get(txn, ino)
    if held is not None and len(held) > size:
        if size:
            txn.put(r.INLINE, r.u64(ino), held[:size])
        else:
            txn.delete(r.INLINE, r.u64(ino))


def moved_to_chunk(txn, node: r.Inode, op: pb.CommitWrite) -> None:
    """A CommitWrite's check of the inline bytes: a commit that copied them (digest
    set) must be of chunk 0 and have copied what is there now, and drops them; one
    that did not must find none. ESTALE otherwise: the writer begins again."""
    held = get(txn, node.ino)
    if held is None and not op.inline_digest:
        return
    if held is None or op.chunk_index != 0 or op.inline_digest != digest(held):
        raise FsError(errno.ESTALE, f"the inline bytes of inode {node.ino} changed since "
                                    "the write began, or were not copied into chunk 0: "
                                    "copy them again")
    txn.delete(r.INLINE, r.u64(node.ino))
