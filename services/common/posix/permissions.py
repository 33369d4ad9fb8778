"""POSIX permission decisions, Linux flavoured (see docs/namespace-semantics.md)."""

import errno
import stat

from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError
from services.common.posix.records import Inode

R, W, X = 4, 2, 1


def is_root(caller: pb.Caller) -> bool:
    return caller.uid == 0


def in_group(caller: pb.Caller, gid: int) -> bool:
    return caller.gid == gid or gid in caller.groups


def allowed(caller: pb.Caller, node: Inode, want: int) -> bool:
    """Does the caller have every bit of `want` (R|W|X) on `node`?"""
    if caller.uid == 0:
        return not (want & X) or node.is_dir or bool(node.mode & 0o111)
    if caller.uid == node.uid:
        bits = node.mode >> 6
    elif in_group(caller, node.gid):
        bits = node.mode >> 3
    else:
        bits = node.mode
    return bits & want == want


def require(caller: pb.Caller, node: Inode, want: int, what: str) -> None:
    if not allowed(caller, node, want):
        raise FsError(errno.EACCES, f"permission denied: {what} (inode {node.ino})")


def search(caller: pb.Caller, directory: Inode) -> None:
    require(caller, directory, X, "no search permission on the directory")


def inherited(caller: pb.Caller, directory: Inode, mode: int) -> tuple[int, int]:
    """The (mode, gid) of a node the caller makes in `directory`: a setgid directory
    passes on its group (and its setgid bit to subdirectories); a file keeps setgid
    only if its creator is in that group."""
    gid = caller.gid
    if directory.mode & stat.S_ISGID:
        gid = directory.gid
        if stat.S_ISDIR(mode):
            mode |= stat.S_ISGID
        elif (mode & stat.S_ISGID and mode & stat.S_IXGRP
              and not is_root(caller) and not in_group(caller, gid)):
            mode &= ~stat.S_ISGID
    return mode, gid


def may_create(caller: pb.Caller, directory: Inode) -> None:
    require(caller, directory, W | X, "no write permission on the directory")


def may_delete(caller: pb.Caller, directory: Inode, victim: Inode) -> None:
    may_create(caller, directory)
    if (directory.mode & stat.S_ISVTX and caller.uid not in (0, victim.uid, directory.uid)):
        raise FsError(errno.EPERM, "sticky directory: only the owner of the entry or of "
                                   "the directory may remove or rename it")


def owner_or_root(caller: pb.Caller, node: Inode) -> bool:
    return caller.uid in (0, node.uid)


def kill_privileges(mode: int) -> int:
    """Drop set-user-ID, and set-group-ID when group-executable (Linux's rule)."""
    mode &= ~stat.S_ISUID
    if mode & stat.S_IXGRP:
        mode &= ~stat.S_ISGID
    return mode


def safe_hardlink_source(caller: pb.Caller, node: Inode) -> bool:
    """fs.protected_hardlinks=1: may a non-owner link to this node?"""
    if caller.uid in (0, node.uid):
        return True
    if not stat.S_ISREG(node.mode) or node.mode & stat.S_ISUID:
        return False
    if node.mode & stat.S_ISGID and node.mode & stat.S_IXGRP:
        return False
    return allowed(caller, node, R | W)


def only_drops_setid(old_mode: int, new_mode: int) -> bool:
    """A mode change that only takes away set-user-id or set-group-id: what the kernel
    asks for when a non-owner writes to such a file ("remove privileges"), which a
    writer may do."""
    old, new = old_mode & 0o7777, new_mode & 0o7777
    dropped = old & ~new
    return bool(dropped) and not dropped & ~0o6000 and not new & ~old
