"""The fold's sessions and open files: open and close a session, open and release
a file (an unlinked file lives until its last release)."""

import errno
import stat

from schemas import namespace_pb2 as pb
from services.common.posix import inline_data
from services.common.posix import permissions as perm
from services.common.posix import records as r
from services.common.posix.errors import FsError
from services.metadata.namespace import attribute_fold, delegation_fold
from services.metadata.namespace.namespace import Namespace, ok

# -- sessions -----------------------------------------------------------------------

def open_session(ns: Namespace, op: pb.OpenSession) -> pb.Result:
    session = ns.counter(b"next_session")
    ns.txn.put(r.META, b"next_session", r.u64(session + 1))
    record = r.SessionRecord(ns.now, 0, op.client)
    ns.txn.put(r.SESSIONS, r.u64(session), record.pack())
    return pb.Result(session=session)


def close_session(ns: Namespace, op: pb.CloseSession) -> pb.Result:
    key = r.u64(op.session)
    if ns.txn.get(r.SESSIONS, key) is None:
        raise FsError(errno.ENOENT, f"session {op.session} is not open")
    for open_key, count in ns.txn.scan(r.OPENS, key):
        for _ in range(r.from_u64(count)):
            ns.release(op.session, r.from_u64(open_key[8:]))
    delegation_fold.end_session(ns, op.session)
    ns.txn.delete(r.SESSIONS, key)
    ns.txn.delete_range(r.RESULTS, key, r.u64(op.session + 1))
    return pb.Result()


# -- open files and the data path ---------------------------------------------------

O_ACCMODE, O_WRONLY, O_RDWR, O_TRUNC = 0o3, 0o1, 0o2, 0o1000


def open_file(ns: Namespace, op: pb.Open, session: int) -> pb.Result:
    node = ns.inode(op.inode)
    if session == 0:
        raise FsError(errno.EINVAL, "open needs a session")
    mode = op.flags & O_ACCMODE
    want = {0: perm.R, O_WRONLY: perm.W, O_RDWR: perm.R | perm.W}.get(mode)
    if want is None:
        raise FsError(errno.EINVAL, f"open: bad access mode in flags {op.flags:#o}")
    if node.is_dir and want & perm.W:
        raise FsError(errno.EISDIR, f"inode {node.ino} is a directory")
    truncate = op.flags & O_TRUNC and stat.S_ISREG(node.mode)
    if truncate:   # Linux truncates whatever the access mode, given write permission
        want |= perm.W
    perm.require(ns.caller, node, want, "open")
    if truncate and node.size:
        ns.now = inline_data.client_time(ns.now, op.time_ns)
        attribute_fold.apply_setattr(ns, node, pb.Setattr(inode=node.ino, size=0), node.gid)
    ns.count(r.OPENS, r.TWO_U64.pack(session, node.ino), 1)
    ns.count(r.INODE_OPENS, r.u64(node.ino), 1)
    return ok(node)


def release(ns: Namespace, op: pb.Release, session: int) -> pb.Result:
    ns.release(session, op.inode)
    return pb.Result()
