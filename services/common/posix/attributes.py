"""What a setattr, an open with O_TRUNC and a commit of written bytes do to a node's
attributes: pure rules on an Inode, no projection.

The fold applies them (and then what follows in the projection: used bytes, chunks
and inline bytes past a new end). A mount that answers for a file only it can reach
yet (made in a directory delegated to its session) applies the same functions to
tell the application what the fold will record, so the two never disagree.
"""

import errno
import stat

from schemas import namespace_pb2 as pb
from services.common.posix import permissions as perm
from services.common.posix.errors import FsError
from services.common.posix.records import Inode

MAX_FILE_SIZE = 1 << 57


def check_setattr(caller: pb.Caller, node: Inode, op: pb.Setattr) -> int:
    """Raise FsError when the caller may not make this change (Linux's order); else
    the group the node ends up with."""
    is_owner = perm.owner_or_root(caller, node)
    if op.HasField("size"):
        check_truncate(caller, node, op.size, op.via_handle)
    touch = (op.HasField("atime") and op.atime.now and op.HasField("mtime")
             and op.mtime.now)
    if touch and not is_owner and not perm.allowed(caller, node, perm.W):
        raise FsError(errno.EACCES, "only the owner or a writer may touch the times")
    if op.HasField("uid") and not (perm.is_root(caller)
                                   or (caller.uid == node.uid and op.uid == node.uid)):
        raise FsError(errno.EPERM, "only root may change a file's owner")
    gid = op.gid if op.HasField("gid") else node.gid
    if op.HasField("gid") and not (perm.is_root(caller) or (
            caller.uid == node.uid and (op.gid == node.gid or perm.in_group(caller, op.gid)))):
        raise FsError(errno.EPERM, "only the owner may change the group, to one of theirs")
    if op.HasField("mode") and not is_owner and not (
            perm.only_drops_setid(node.mode, op.mode) and perm.allowed(caller, node, perm.W)):
        raise FsError(errno.EPERM, "only the owner may change the mode")
    if (op.HasField("atime") or op.HasField("mtime")) and not touch and not is_owner:
        raise FsError(errno.EPERM, "only the owner may set explicit times")
    return gid


def check_truncate(caller: pb.Caller, node: Inode, size: int, via_handle: bool) -> None:
    if node.is_dir:
        raise FsError(errno.EISDIR, f"inode {node.ino} is a directory")
    if not stat.S_ISREG(node.mode):
        raise FsError(errno.EINVAL, f"inode {node.ino} is not a regular file")
    if size > MAX_FILE_SIZE:
        raise FsError(errno.EFBIG, f"size {size} is above the limit {MAX_FILE_SIZE}")
    if not via_handle:
        perm.require(caller, node, perm.W, "truncate needs write permission")


def apply_setattr(caller: pb.Caller, node: Inode, op: pb.Setattr, gid: int,
                  now: int) -> None:
    """Change `node` as a checked setattr does (its size too: what the projection
    holds past the new end is the caller's to drop)."""
    if op.HasField("mode"):
        mode = op.mode & 0o7777
        if not perm.is_root(caller) and not perm.in_group(caller, gid):
            mode &= ~stat.S_ISGID
        node.mode = stat.S_IFMT(node.mode) | mode
    elif (op.HasField("uid") or op.HasField("gid")) and not node.is_dir:
        node.mode = perm.kill_privileges(node.mode)
    if op.HasField("uid"):
        node.uid = op.uid
    node.gid = gid
    if op.HasField("size"):
        node.size = op.size
        node.mtime = now
        if not perm.is_root(caller) and not op.HasField("mode"):
            node.mode = perm.kill_privileges(node.mode)
    if op.HasField("atime"):
        node.atime = now if op.atime.now else op.atime.ns
    if op.HasField("mtime"):
        node.mtime = now if op.mtime.now else op.mtime.ns
    node.ctime = now


def wrote(caller: pb.Caller, node: Inode, end: int, now: int) -> None:
    """Written bytes were committed up to `end` (CommitWrite, WriteInline): the file
    grows to cover them, its times move, and a writer who is not root takes away its
    set-user-ID and set-group-ID bits."""
    node.size = max(node.size, end)
    node.mtime = node.ctime = now
    if not perm.is_root(caller):
        node.mode = perm.kill_privileges(node.mode)


def truncated_at_open(caller: pb.Caller, node: Inode, now: int) -> bool:
    """open(O_TRUNC) of a regular file with bytes: it becomes empty as a setattr to
    size 0 would make it (True), else nothing changes."""
    if not (stat.S_ISREG(node.mode) and node.size):
        return False
    apply_setattr(caller, node, pb.Setattr(inode=node.ino, size=0), node.gid, now)
    return True


def to_node(attr: pb.Attr) -> Inode:
    """An Inode with the attributes of `attr` (for the rules above)."""
    return Inode(attr.inode, attr.mode, attr.uid, attr.gid, attr.nlink, attr.size,
                 attr.atime_ns, attr.mtime_ns, attr.ctime_ns, rdev=attr.rdev)
