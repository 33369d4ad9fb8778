"""Delegated directories and reserved inode ranges, as the fold keeps them.

A session may take a directory for itself (Delegate). While it holds it, the leader
recalls it before any other session reads or changes the directory, so the holder
knows every name in it: it answers lookups of absent names itself and creates files
there without waiting, each Create carrying an inode from a range reserved for the
session (ReserveInodes) and the time the application was told. The creates commit
in the background; nothing here trusts the client: a delegated Create is checked
like any other, and one whose name exists by then fails with EEXIST.

  delegations  dir(8)      -> session(8)
  reserved     session(8)  -> next(8) end(8) next2(8) end2(8): the unused part of the
                              current range, and the range reserved after it
                              (0, 0: none), so that a client can reserve ahead
See docs/delegations.md.
"""

import errno
import struct

from schemas import namespace_pb2 as pb
from services.chunk.parts import MAX_CHUNK_ID
from services.common.posix import permissions as perm
from services.common.posix import records as r
from services.common.posix.errors import FsError

MAX_DELEGATED_ENTRIES = 1 << 18  # the holder lists the directory's names when it
# takes it (names only: a few seconds at this size)
MAX_RESERVED = 1 << 16
RANGES = struct.Struct(">QQQQ")


def delegate(ns, op: pb.Delegate, session: int) -> pb.Result:
    if not session:
        raise FsError(errno.EINVAL, "delegate needs a session")
    directory = ns.directory(op.dir)
    perm.may_create(ns.caller, directory)
    holder = ns.txn.get(r.DELEGATIONS, r.u64(op.dir))
    if holder is not None and r.from_u64(holder) != session:
        raise FsError(errno.EBUSY, f"directory {op.dir} is delegated to session "
                                   f"{r.from_u64(holder)}")
    if directory.size > MAX_DELEGATED_ENTRIES:
        raise FsError(errno.E2BIG, f"directory {op.dir} has more than "
                                   f"{MAX_DELEGATED_ENTRIES} entries to delegate")
    grant(ns, op.dir, session)
    result = pb.Result()
    directory.fill_attr(result.attr)
    return result


def grant(ns, directory: int, session: int) -> None:
    ns.txn.put(r.DELEGATIONS, r.u64(directory), r.u64(session))


def holds(ns, session: int, directory: int) -> bool:
    found = ns.txn.get(r.DELEGATIONS, r.u64(directory)) if session else None
    return found is not None and r.from_u64(found) == session


def undelegate(ns, op: pb.Undelegate, session: int) -> pb.Result:
    """Give a directory back (its holder), or take it back (the leader, session 0).
    Giving back what one no longer holds is not an error: a recall may have won."""
    holder = op.session or session
    if session and holder != session:
        raise FsError(errno.EPERM, "a session gives back only its own delegations")
    found = ns.txn.get(r.DELEGATIONS, r.u64(op.dir))
    if found is not None and r.from_u64(found) == holder:
        ns.txn.delete(r.DELEGATIONS, r.u64(op.dir))
    return pb.Result()


def ranges(found: bytes | None) -> tuple[int, int, int, int]:
    """(next, end, next2, end2) of a session's record; an exhausted current range
    gives way to the one after it."""
    if found is None:
        return 0, 0, 0, 0
    low, end, low2, end2 = RANGES.unpack(found)
    if low >= end and low2 < end2:
        return low2, end2, 0, 0
    return low, end, low2, end2


def reserve_inodes(ns, op: pb.ReserveInodes, session: int) -> pb.Result:
    """A new range: the current one if the session has used up its own, else the
    one after it (replacing an earlier one after it)."""
    first = _reserve(ns, session, op.count, b"next_inode", r.u64(session), "inodes")
    return pb.Result(first_inode=first, inode_count=op.count)


def reserve_chunks(ns, op: pb.ReserveChunks, session: int) -> pb.Result:
    """Chunk ids, kept like inode ranges (under the session's key + b"/chunks")."""
    first = _reserve(ns, session, op.count, b"next_chunk", chunks_key(session), "chunks")
    if first + op.count - 1 > MAX_CHUNK_ID:
        raise FsError(errno.ENOSPC, "every chunk id has been used")
    return pb.Result(first_chunk=first, chunk_count=op.count)


def chunks_key(session: int) -> bytes:
    return r.u64(session) + b"/chunks"


def _reserve(ns, session: int, count: int, counter: bytes, key: bytes, what: str) -> int:
    if not session:
        raise FsError(errno.EINVAL, f"reserving {what} needs a session")
    if not 0 < count <= MAX_RESERVED:
        raise FsError(errno.EINVAL, f"reserve 1 to {MAX_RESERVED} {what}, not {count}")
    first = ns.counter(counter)
    ns.txn.put(r.META, counter, r.u64(first + count))
    low, end, _, _ = ranges(ns.txn.get(r.RESERVED, key))
    new = (first, first + count)
    record = (low, end, *new) if low < end else (*new, 0, 0)
    ns.txn.put(r.RESERVED, key, RANGES.pack(*record))
    return first


def claim(ns, session: int, ino: int) -> None:
    """A delegated create's inode: the next unused ones of the session's current
    range, or of the range after it (which then becomes the current one)."""
    _claim(ns, session, ino, r.u64(session), "inode")


def claim_chunk(ns, session: int, chunk_id: int) -> None:
    """A chunk id the client began a write with, from the session's chunk ranges."""
    _claim(ns, session, chunk_id, chunks_key(session), "chunk")


def _claim(ns, session: int, value: int, key: bytes, what: str) -> None:
    found = ns.txn.get(r.RESERVED, key) if session else None
    if found is None:
        raise FsError(errno.EINVAL, f"{what} {value}: session {session} has no reserved "
                                    "range")
    low, end, low2, end2 = ranges(found)
    if low <= value < end:
        record = (value + 1, end, low2, end2)
    elif low2 <= value < end2:
        record = (value + 1, end2, 0, 0)
    else:
        raise FsError(errno.EINVAL, f"{what} {value} is not in session {session}'s unused "
                                    f"ranges [{low}, {end}) and [{low2}, {end2})")
    ns.txn.put(r.RESERVED, key, RANGES.pack(*record))


def end_session(ns, session: int) -> None:
    """A closing session's delegations and ranges go with it."""
    ns.txn.delete(r.RESERVED, r.u64(session))
    ns.txn.delete(r.RESERVED, chunks_key(session))
    for key, value in ns.txn.scan(r.DELEGATIONS, b""):
        if r.from_u64(value) == session:
            ns.txn.delete(r.DELEGATIONS, key)
