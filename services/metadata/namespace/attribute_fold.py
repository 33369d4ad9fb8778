"""The fold's attribute operations: setattr (chmod, chown, truncate, times) and
extended attributes."""

import errno
import stat

from schemas import namespace_pb2 as pb
from services.common.posix import attributes, inline_data
from services.common.posix import permissions as perm
from services.common.posix import records as r
from services.common.posix.errors import FsError
from services.common.posix.names import (
    XATTR_SIZE_MAX,
    check_xattr_name,
    check_xattr_name_length,
)
from services.metadata.namespace.namespace import Namespace, ok

XATTR_CREATE, XATTR_REPLACE = 1, 2


# -- attributes ---------------------------------------------------------------------

def setattr(ns: Namespace, op: pb.Setattr) -> pb.Result:
    node = ns.inode(op.inode)
    ns.now = inline_data.client_time(ns.now, op.time_ns)
    gid = attributes.check_setattr(ns.caller, node, op)
    apply_setattr(ns, node, op, gid)
    return ok(node)


def apply_setattr(ns: Namespace, node: r.Inode, op: pb.Setattr, gid: int) -> None:
    """The attributes change (attributes.py); a new size also moves the used bytes
    and drops what lies past a new end (whole chunks, inline bytes)."""
    old_size = node.size
    attributes.apply_setattr(ns.caller, node, op, gid, ns.now)
    if op.HasField("size"):
        ns.add_used_bytes(node.size - old_size)
        if node.size < old_size:
            ns.drop_chunks(node.ino, -(-node.size // r.CHUNK_SIZE))
            inline_data.cut(ns.txn, node.ino, node.size)
    ns.save(node)


def _xattr_target(ns: Namespace, ino: int, name: bytes) -> r.Inode:
    """The node whose xattr `name` the caller wants to change, after every check."""
    check_xattr_name(name)
    node = ns.inode(ino)
    caller = ns.caller
    if name.startswith((b"trusted.", b"security.")):
        if not perm.is_root(caller):
            raise FsError(errno.EPERM, f"only root may change {name.split(b'.')[0]!r} xattrs")
        return node
    if not (stat.S_ISREG(node.mode) or node.is_dir):
        raise FsError(errno.EPERM, "user xattrs exist only on regular files and directories")
    if (node.is_dir and node.mode & stat.S_ISVTX and not perm.owner_or_root(caller, node)):
        raise FsError(errno.EPERM, "user xattrs of a sticky directory belong to its owner")
    perm.require(caller, node, perm.W, "changing xattrs needs write permission")
    return node


def setxattr(ns: Namespace, op: pb.Setxattr) -> pb.Result:
    if op.flags & ~(XATTR_CREATE | XATTR_REPLACE) or op.flags == 3:
        raise FsError(errno.EINVAL, f"setxattr: unsupported flags {op.flags:#x}")
    check_xattr_name_length(op.name)  # Linux: the name's length, then the value's size
    if len(op.value) > XATTR_SIZE_MAX:
        raise FsError(errno.E2BIG, f"xattr value is {len(op.value)} bytes; the limit is "
                                   f"{XATTR_SIZE_MAX}")
    node = _xattr_target(ns, op.inode, op.name)
    key = r.xattr_key(node.ino, op.name)
    exists = ns.txn.get(r.XATTRS, key) is not None
    if op.flags & XATTR_CREATE and exists:
        raise FsError(errno.EEXIST, f"xattr {op.name!r} exists")
    if op.flags & XATTR_REPLACE and not exists:
        raise FsError(errno.ENODATA, f"no xattr {op.name!r}")
    ns.txn.put(r.XATTRS, key, op.value)
    node.ctime = ns.now
    ns.save(node)
    return ok(node)


def removexattr(ns: Namespace, op: pb.Removexattr) -> pb.Result:
    node = _xattr_target(ns, op.inode, op.name)
    key = r.xattr_key(node.ino, op.name)
    if ns.txn.get(r.XATTRS, key) is None:
        raise FsError(errno.ENODATA, f"no xattr {op.name!r}")
    ns.txn.delete(r.XATTRS, key)
    node.ctime = ns.now
    ns.save(node)
    return ok(node)
