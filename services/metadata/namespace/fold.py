"""The namespace fold: (projection, command) -> (mutations, result).

Pure: it reads the projection through a Txn and the command, nothing else, so every
replica, restore and replay computes the same bytes. It is also the authority: every
precondition is checked here, in the order docs/namespace-semantics.md gives.
"""

import errno
import logging
import stat
import struct

from google.protobuf.message import DecodeError

from schemas import namespace_pb2 as pb
from services.chunk.parts import MAX_CHUNK_ID
from services.common import storage_class
from services.common.posix import attributes, inline_data
from services.common.posix import permissions as perm
from services.common.posix import records as r
from services.common.posix.errors import FsError
from services.common.posix.names import (
    XATTR_SIZE_MAX,
    check_name,
    check_symlink_target,
    check_xattr_name,
    check_xattr_name_length,
)
from services.metadata.namespace import delegation_fold, region_fold
from services.metadata.namespace.txn import Txn

log = logging.getLogger(__name__)
# Exceptions that only the fold's own logic raises on a command's contents.
FOLD_BUGS = (ArithmeticError, LookupError, TypeError, ValueError, AttributeError,
             AssertionError, NotImplementedError, RecursionError)

MAX_FILE_SIZE = attributes.MAX_FILE_SIZE
LINK_MAX = 65000
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
XATTR_CREATE, XATTR_REPLACE = 1, 2
PRUNE_ONE_BY_ONE = 64  # acknowledged results forgotten key by key up to this many
NODE_TYPES = (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)


class Namespace:
    """Typed access to the projection for one command, with its stamped time."""

    __slots__ = ("txn", "now", "caller")

    def __init__(self, txn: Txn, cmd: pb.Command):
        self.txn, self.now, self.caller = txn, cmd.time_ns, cmd.caller

    # -- reads ------------------------------------------------------------------
    def inode(self, ino: int) -> r.Inode:
        data = self.txn.get(r.INODES, r.u64(ino)) if ino else None
        if data is None:
            raise FsError(errno.ENOENT, f"no inode {ino}")
        return r.Inode.unpack(ino, data)

    def directory(self, ino: int) -> r.Inode:
        node = self.inode(ino)
        if not node.is_dir:
            raise FsError(errno.ENOTDIR, f"inode {ino} is not a directory")
        return node

    def parent(self, ino: int, name: bytes) -> r.Inode:
        """The directory an entry is made or removed in: exists, is a directory,
        the name is valid, and the caller may search it."""
        directory = self.directory(ino)
        check_name(name)
        perm.search(self.caller, directory)
        return directory

    def child(self, parent: int, name: bytes) -> r.Inode | None:
        value = self.txn.get(r.DENTRIES, r.dentry_key(parent, name))
        return None if value is None else self.inode(r.dentry_child(value))

    def counter(self, key: bytes) -> int:
        return r.from_u64(self.txn.get(r.META, key))

    # -- writes -----------------------------------------------------------------
    def save(self, node: r.Inode) -> None:
        self.txn.put(r.INODES, r.u64(node.ino), node.pack())

    def add_counter(self, key: bytes, delta: int) -> None:
        self.txn.put(r.META, key, r.u64(self.counter(key) + delta))

    def add_used_bytes(self, delta: int) -> None:
        """Sparse files make the sum of sizes outgrow 64 bits: a 128-bit counter."""
        used = r.from_wide(self.txn.get(r.META, b"used_bytes"))
        self.txn.put(r.META, b"used_bytes", r.wide(used + delta))

    def link_entry(self, directory: r.Inode, name: bytes, node: r.Inode) -> None:
        self.txn.put(r.DENTRIES, r.dentry_key(directory.ino, name),
                     r.dentry_value(node.ino, node.mode))

    def unlink_entry(self, directory: r.Inode, name: bytes) -> None:
        self.txn.delete(r.DENTRIES, r.dentry_key(directory.ino, name))

    def touch_dir(self, directory: r.Inode, entries: int = 0, subdirs: int = 0) -> None:
        directory.size += entries
        directory.nlink += subdirs
        directory.mtime = directory.ctime = self.now
        self.save(directory)

    def new_node(self, directory: r.Inode, mode: int, rdev: int = 0,
                 target: bytes = b"", ino: int = 0) -> r.Inode:
        """Allocate an inode owned by the caller, with setgid-directory inheritance.
        `ino`: one already reserved (a delegated create), not a new number."""
        caller = self.caller
        mode, gid = perm.inherited(caller, directory, mode)
        if not ino:
            ino = self.counter(b"next_inode")
            self.txn.put(r.META, b"next_inode", r.u64(ino + 1))
        self.add_counter(b"inode_count", 1)
        is_dir = stat.S_ISDIR(mode)
        node = r.Inode(ino, mode, caller.uid, gid, 2 if is_dir else 1, len(target),
                       self.now, self.now, self.now, rdev=rdev,
                       parent=directory.ino if is_dir else 0, target=target)
        self.save(node)
        inherited = self.txn.get(r.CLASSES, r.u64(directory.ino))
        if inherited is not None:
            self.txn.put(r.CLASSES, r.u64(ino), inherited)
        return node

    def drop_link(self, node: r.Inode) -> None:
        """One fewer name refers to a non-directory; free it at zero, unless it is
        still open: then it lives on as an orphan until its last release."""
        node.nlink -= 1
        node.ctime = self.now
        if node.nlink:
            self.save(node)
        elif self.txn.get(r.INODE_OPENS, r.u64(node.ino)) is not None:
            self.save(node)
            self.txn.put(r.ORPHANS, r.u64(node.ino), b"")
        else:
            self.free(node)

    def free(self, node: r.Inode) -> None:
        key = r.u64(node.ino)
        self.txn.delete(r.INODES, key)
        self.txn.delete_range(r.XATTRS, key, r.u64(node.ino + 1))
        if stat.S_ISREG(node.mode):
            self.drop_chunks(node.ino, 0)
            self.txn.delete(r.INLINE, key)
        self.txn.delete(r.CLASSES, key)
        self.txn.delete(r.CLASSES, r.parts_class_key(node.ino))
        self.txn.delete(r.ORPHANS, key)
        if node.is_dir:
            self.txn.delete(r.DELEGATIONS, key)   # a removed directory is held by nobody
        self.add_counter(b"inode_count", -1)
        if stat.S_ISREG(node.mode) and node.size:
            self.add_used_bytes(-node.size)

    def drop_chunks(self, ino: int, first: int) -> None:
        """Chunks `first`.. of a file are no longer its: their data becomes garbage
        that the chunk manager collects after the retention delay."""
        for key, value in self.txn.scan(r.CHUNKS, r.u64(ino)):
            if r.split_chunk_key(key)[1] >= first:
                self.txn.delete(r.CHUNK_OWNERS, value[:8])
                self.txn.delete(r.COMMITTED, value[:8])
                self.txn.delete(r.CHUNKS, key)
        if first == 0:
            self.txn.delete(r.CLASSES, r.parts_class_key(ino))   # no chunk, no parts

    def count(self, cf: str, key: bytes, delta: int) -> int:
        """Add `delta` to a u64 count (absent is 0, and 0 is deleted); the new value.
        A count never goes below zero: that is EBADF, a release of nothing."""
        old = self.txn.get(cf, key)
        value = (r.from_u64(old) if old else 0) + delta
        if value < 0:
            raise FsError(errno.EBADF, f"release of something not open ({cf})")
        if value:
            self.txn.put(cf, key, r.u64(value))
        else:
            self.txn.delete(cf, key)
        return value

    def release(self, session: int, ino: int) -> None:
        """One open of `ino` by `session` ends; an orphan goes with its last one."""
        if self.txn.get(r.OPENS, r.TWO_U64.pack(session, ino)) is None:
            raise FsError(errno.EBADF, f"inode {ino} is not open in session {session}")
        self.count(r.OPENS, r.TWO_U64.pack(session, ino), -1)
        if self.count(r.INODE_OPENS, r.u64(ino), -1) == 0:
            node = self.inode(ino)
            if node.nlink == 0:
                self.free(node)


# -- operations -------------------------------------------------------------------

def _mkdir(ns: Namespace, op: pb.Mkdir, session: int) -> pb.Result:
    if op.inode:        # delegated: answered by the client, at its time
        delegation_fold.claim(ns, session, op.inode)
        ns.now = op.time_ns or ns.now
    if op.delegate and not session:
        raise FsError(errno.EINVAL, "a directory is delegated to a session: open one")
    directory = ns.parent(op.parent, op.name)
    _absent(ns, directory, op.name)
    perm.may_create(ns.caller, directory)
    mode = stat.S_IFDIR | (op.mode & 0o1777 & ~ns.caller.umask)
    node = ns.new_node(directory, mode, ino=op.inode)
    ns.link_entry(directory, op.name, node)
    ns.touch_dir(directory, entries=1, subdirs=1)
    if op.delegate:
        delegation_fold.grant(ns, node.ino, session)
    return _ok(node)


def _mknod(ns: Namespace, op: pb.Mknod) -> pb.Result:
    kind = stat.S_IFMT(op.mode) or stat.S_IFREG
    if kind == stat.S_IFDIR:
        raise FsError(errno.EPERM, "mknod cannot make a directory: use mkdir")
    if kind not in NODE_TYPES:
        raise FsError(errno.EINVAL, f"mknod: unknown file type {kind:o}")
    directory = ns.parent(op.parent, op.name)
    _absent(ns, directory, op.name)
    perm.may_create(ns.caller, directory)
    if kind in (stat.S_IFCHR, stat.S_IFBLK) and not perm.is_root(ns.caller):
        raise FsError(errno.EPERM, "only root may make device nodes")
    rdev = op.rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0
    return _make(ns, directory, op.name, kind | (op.mode & 0o7777 & ~ns.caller.umask), rdev)


def _create(ns: Namespace, op: pb.Create, session: int) -> pb.Result:
    if op.open and session == 0:
        raise FsError(errno.EINVAL, "create with open needs a session")
    if op.inode:        # delegated: answered by the client as new, at its time
        delegation_fold.claim(ns, session, op.inode)
        ns.now = op.time_ns or ns.now
    directory = ns.parent(op.parent, op.name)
    existing = ns.child(directory.ino, op.name)
    if existing is not None:
        if op.exclusive or op.inode:
            raise FsError(errno.EEXIST, f"{op.name!r} exists")
        if existing.is_dir:
            raise FsError(errno.EISDIR, f"{op.name!r} is a directory")
        if op.open:
            return _open(ns, pb.Open(inode=existing.ino, flags=op.open_flags), session)
        return _ok(existing)
    perm.may_create(ns.caller, directory)
    mode = stat.S_IFREG | (op.mode & 0o7777 & ~ns.caller.umask)
    result = _make(ns, directory, op.name, mode, ino=op.inode)
    if op.data:
        result = _created_with_data(ns, op, result.attr.inode)
    if op.open:
        ns.count(r.OPENS, r.TWO_U64.pack(session, result.attr.inode), 1)
        ns.count(r.INODE_OPENS, r.u64(result.attr.inode), 1)
    return result


def _created_with_data(ns: Namespace, op: pb.Create, ino: int) -> pb.Result:
    """A delegated create that carries the new file's bytes (create, write and close
    in one command): they are kept inline, as a write would have kept them."""
    if not op.inode:
        raise FsError(errno.EINVAL, "only a create answered by the client (with its "
                                    "inode) carries data")
    if len(op.data) > r.INLINE_MAX:
        raise FsError(errno.EFBIG, f"{len(op.data)} bytes do not fit the "
                                   f"{r.INLINE_MAX} kept inline")
    node = ns.inode(ino)
    inline_data.put(ns, node, op.data)
    attributes.wrote(ns.caller, node, node.size, max(node.mtime, op.written_ns))
    ns.save(node)
    return _ok(node)


def _symlink(ns: Namespace, op: pb.Symlink, session: int) -> pb.Result:
    check_symlink_target(op.target)
    if op.inode:        # delegated: answered by the client, at its time
        delegation_fold.claim(ns, session, op.inode)
        ns.now = op.time_ns or ns.now
    directory = ns.parent(op.parent, op.name)
    _absent(ns, directory, op.name)
    perm.may_create(ns.caller, directory)
    return _make(ns, directory, op.name, stat.S_IFLNK | 0o777, target=op.target,
                 ino=op.inode)


def _make(ns: Namespace, directory: r.Inode, name: bytes, mode: int, rdev: int = 0,
          target: bytes = b"", ino: int = 0) -> pb.Result:
    node = ns.new_node(directory, mode, rdev=rdev, target=target, ino=ino)
    ns.link_entry(directory, name, node)
    ns.touch_dir(directory, entries=1)
    return _ok(node)


def _link(ns: Namespace, op: pb.Link) -> pb.Result:
    node = ns.inode(op.inode)
    directory = ns.parent(op.new_parent, op.new_name)
    _absent(ns, directory, op.new_name)
    if not perm.safe_hardlink_source(ns.caller, node):
        raise FsError(errno.EPERM, "protected hard links: you may only link to files you "
                                   "own, or to regular files you can read and write")
    perm.may_create(ns.caller, directory)
    if node.is_dir:
        raise FsError(errno.EPERM, "hard links to directories are not allowed")
    if node.nlink == 0:   # unlinked while open (Linux refuses it the same way)
        raise FsError(errno.ENOENT, f"inode {node.ino} has no name left to link to")
    if node.nlink >= LINK_MAX:
        raise FsError(errno.EMLINK, f"inode {node.ino} already has {node.nlink} links")
    node.nlink += 1
    node.ctime = ns.now
    ns.save(node)
    ns.link_entry(directory, op.new_name, node)
    ns.touch_dir(directory, entries=1)
    return _ok(node)


def _unlink(ns: Namespace, op: pb.Unlink, session: int) -> pb.Result:
    if op.time_ns and delegation_fold.holds(ns, session, op.parent):
        ns.now = op.time_ns
    directory = ns.parent(op.parent, op.name)
    node = _present(ns, directory, op.name)
    perm.may_delete(ns.caller, directory, node)
    if node.is_dir:
        raise FsError(errno.EISDIR, f"{op.name!r} is a directory: use rmdir")
    ns.unlink_entry(directory, op.name)
    ns.touch_dir(directory, entries=-1)
    ns.drop_link(node)
    return pb.Result()


def _rmdir(ns: Namespace, op: pb.Rmdir, session: int) -> pb.Result:
    if op.time_ns and delegation_fold.holds(ns, session, op.parent):
        ns.now = op.time_ns
    directory = ns.parent(op.parent, op.name)
    node = _present(ns, directory, op.name)
    perm.may_delete(ns.caller, directory, node)
    if not node.is_dir:
        raise FsError(errno.ENOTDIR, f"{op.name!r} is not a directory")
    if node.size:
        raise FsError(errno.ENOTEMPTY, f"directory {op.name!r} is not empty")
    ns.unlink_entry(directory, op.name)
    ns.touch_dir(directory, entries=-1, subdirs=-1)
    ns.free(node)
    return pb.Result()


def _absent(ns: Namespace, directory: r.Inode, name: bytes) -> None:
    if ns.txn.get(r.DENTRIES, r.dentry_key(directory.ino, name)) is not None:
        raise FsError(errno.EEXIST, f"{name!r} exists")


def _present(ns: Namespace, directory: r.Inode, name: bytes) -> r.Inode:
    node = ns.child(directory.ino, name)
    if node is None:
        raise FsError(errno.ENOENT, f"no entry {name!r} in directory {directory.ino}")
    return node


def _ok(node: r.Inode) -> pb.Result:
    result = pb.Result()
    node.fill_attr(result.attr)
    return result


# -- rename -------------------------------------------------------------------------

def _rename(ns: Namespace, op: pb.Rename) -> pb.Result:
    if op.flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or op.flags == 3:
        raise FsError(errno.EINVAL, f"rename: unsupported flags {op.flags:#x}")
    exchange = bool(op.flags & RENAME_EXCHANGE)
    old_dir = ns.parent(op.parent, op.name)
    new_dir = ns.parent(op.new_parent, op.new_name)
    source = _present(ns, old_dir, op.name)
    target = ns.child(new_dir.ino, op.new_name)
    if op.flags & RENAME_NOREPLACE and target is not None:
        raise FsError(errno.EEXIST, f"{op.new_name!r} exists")
    if exchange and target is None:
        raise FsError(errno.ENOENT, f"no entry {op.new_name!r} to exchange with")
    if source.is_dir and _is_ancestor(ns, source.ino, new_dir.ino):
        raise FsError(errno.EINVAL, "cannot move a directory into itself")
    if target is not None and target.is_dir and _is_ancestor(ns, target.ino, old_dir.ino):
        raise FsError(errno.EINVAL if exchange else errno.ENOTEMPTY,
                      "the target is an ancestor of the source")
    if target is not None and target.ino == source.ino:
        return pb.Result()
    _rename_permitted(ns, old_dir, source, new_dir, target, exchange)
    if exchange:
        _exchange(ns, old_dir, op.name, source, new_dir, op.new_name, target)
    else:
        _move(ns, old_dir, op.name, source, new_dir, op.new_name, target)
    return pb.Result()


def _is_ancestor(ns: Namespace, ancestor: int, ino: int) -> bool:
    """Is `ancestor` the directory `ino` or one of its ancestors?"""
    while True:
        if ino == ancestor:
            return True
        if ino == r.ROOT_INO:
            return False
        ino = ns.inode(ino).parent


def _rename_permitted(ns: Namespace, old_dir: r.Inode, source: r.Inode, new_dir: r.Inode,
                      target: r.Inode | None, exchange: bool) -> None:
    caller = ns.caller
    perm.may_delete(caller, old_dir, source)
    if target is None:
        perm.may_create(caller, new_dir)
    else:
        perm.may_delete(caller, new_dir, target)
        if not exchange and source.is_dir and not target.is_dir:
            raise FsError(errno.ENOTDIR, "cannot replace a non-directory with a directory")
        if not exchange and not source.is_dir and target.is_dir:
            raise FsError(errno.EISDIR, "cannot replace a directory with a non-directory")
    if old_dir.ino != new_dir.ino:
        if source.is_dir:
            perm.require(caller, source, perm.W, "moving a directory needs write on it")
        if exchange and target.is_dir:
            perm.require(caller, target, perm.W, "moving a directory needs write on it")
    if not exchange and target is not None and target.is_dir and target.size:
        raise FsError(errno.ENOTEMPTY, "the target directory is not empty")


def _move(ns: Namespace, old_dir: r.Inode, name: bytes, source: r.Inode,
          new_dir: r.Inode, new_name: bytes, target: r.Inode | None) -> None:
    same_dir = old_dir.ino == new_dir.ino
    if same_dir:
        new_dir = old_dir  # one object, so both updates land in one record
    moved_dir = 1 if source.is_dir else 0
    if target is not None:
        if target.is_dir:
            new_dir.nlink -= 1
            ns.free(target)
        else:
            ns.drop_link(target)
    ns.unlink_entry(old_dir, name)
    ns.link_entry(new_dir, new_name, source)
    added = 0 if target is not None else 1
    if same_dir:
        ns.touch_dir(old_dir, entries=added - 1)
    else:
        ns.touch_dir(old_dir, entries=-1, subdirs=-moved_dir)
        ns.touch_dir(new_dir, entries=added, subdirs=moved_dir)
        if source.is_dir:
            source.parent = new_dir.ino
    source.ctime = ns.now
    ns.save(source)


def _exchange(ns: Namespace, old_dir: r.Inode, name: bytes, source: r.Inode,
              new_dir: r.Inode, new_name: bytes, target: r.Inode) -> None:
    ns.link_entry(old_dir, name, target)
    ns.link_entry(new_dir, new_name, source)
    if old_dir.ino == new_dir.ino:
        ns.touch_dir(old_dir)
    else:
        shift = int(source.is_dir) - int(target.is_dir)
        ns.touch_dir(old_dir, subdirs=-shift)
        ns.touch_dir(new_dir, subdirs=shift)
        if source.is_dir:
            source.parent = new_dir.ino
        if target.is_dir:
            target.parent = old_dir.ino
    for node in (source, target):
        node.ctime = ns.now
        ns.save(node)


# -- attributes ---------------------------------------------------------------------

def _setattr(ns: Namespace, op: pb.Setattr) -> pb.Result:
    node = ns.inode(op.inode)
    ns.now = inline_data.client_time(ns.now, op.time_ns)
    gid = attributes.check_setattr(ns.caller, node, op)
    _apply_setattr(ns, node, op, gid)
    return _ok(node)


def _apply_setattr(ns: Namespace, node: r.Inode, op: pb.Setattr, gid: int) -> None:
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


def _setxattr(ns: Namespace, op: pb.Setxattr) -> pb.Result:
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
    return _ok(node)


def _removexattr(ns: Namespace, op: pb.Removexattr) -> pb.Result:
    node = _xattr_target(ns, op.inode, op.name)
    key = r.xattr_key(node.ino, op.name)
    if ns.txn.get(r.XATTRS, key) is None:
        raise FsError(errno.ENODATA, f"no xattr {op.name!r}")
    ns.txn.delete(r.XATTRS, key)
    node.ctime = ns.now
    ns.save(node)
    return _ok(node)


# -- sessions -----------------------------------------------------------------------

def _open_session(ns: Namespace, op: pb.OpenSession) -> pb.Result:
    session = ns.counter(b"next_session")
    ns.txn.put(r.META, b"next_session", r.u64(session + 1))
    record = r.SessionRecord(ns.now, 0, op.client)
    ns.txn.put(r.SESSIONS, r.u64(session), record.pack())
    return pb.Result(session=session)


def _close_session(ns: Namespace, op: pb.CloseSession) -> pb.Result:
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


def _open(ns: Namespace, op: pb.Open, session: int) -> pb.Result:
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
        _apply_setattr(ns, node, pb.Setattr(inode=node.ino, size=0), node.gid)
    ns.count(r.OPENS, r.TWO_U64.pack(session, node.ino), 1)
    ns.count(r.INODE_OPENS, r.u64(node.ino), 1)
    return _ok(node)


def _release(ns: Namespace, op: pb.Release, session: int) -> pb.Result:
    ns.release(session, op.inode)
    return pb.Result()


def _written_file(ns: Namespace, ino: int, session: int) -> r.Inode:
    node = ns.inode(ino)
    if not stat.S_ISREG(node.mode):
        raise FsError(errno.EISDIR if node.is_dir else errno.EINVAL,
                      f"inode {ino} is not a regular file")
    if session and ns.txn.get(r.OPENS, r.TWO_U64.pack(session, ino)) is None:
        raise FsError(errno.EBADF, f"inode {ino} is not open in session {session}")
    return node


def _begin_write(ns: Namespace, op: pb.BeginWrite, session: int) -> pb.Result:
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


def _commit_write(ns: Namespace, op: pb.CommitWrite, session: int) -> pb.Result:
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
    return _ok(node)


def _write_inline(ns: Namespace, op: pb.WriteInline, session: int) -> pb.Result:
    """Writes to a small file kept inline (inline_data.py); like a CommitWrite, they
    set mtime and ctime and take away set-user-ID and set-group-ID."""
    node = _written_file(ns, op.inode, session)
    inline_data.write(ns, node, op.pieces)
    attributes.wrote(ns.caller, node, node.size,
                     inline_data.client_time(ns.now, op.time_ns))
    ns.save(node)
    return _ok(node)


def _set_class(ns: Namespace, op: pb.SetClass) -> pb.Result:
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
    return _ok(node)


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


def _adopt_chunks(ns: Namespace, op: pb.AdoptChunks) -> pb.Result:
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
    return _ok(node)


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


OPERATIONS = {
    "mknod": _mknod,
    "link": _link, "rename": _rename,
    "setattr": _setattr, "setxattr": _setxattr, "removexattr": _removexattr,
    "open_session": _open_session, "close_session": _close_session,
    "set_class": _set_class, "adopt_chunks": _adopt_chunks,
}
# Operations on a session's own state take its id too.
SESSION_OPERATIONS = {"create": _create, "open": _open, "release": _release,
                      "symlink": _symlink,
                      "unlink": _unlink, "mkdir": _mkdir, "rmdir": _rmdir,
                      "begin_write": _begin_write,
                      "commit_write": _commit_write,
                      "write_inline": _write_inline,
                      "delegate": delegation_fold.delegate,
                      "undelegate": delegation_fold.undelegate,
                      "reserve_inodes": delegation_fold.reserve_inodes,
                      "reserve_chunks": delegation_fold.reserve_chunks}


# -- the fold -----------------------------------------------------------------------

def fold(txn: Txn, cmd: pb.Command) -> pb.Result:
    """Apply one command to `txn`; return its result. A failed command changes
    nothing but its exactly-once record. A region that follows another region's log
    folds only what is shipped from there (services.metadata.namespace.region_fold)."""
    if (gated := region_fold.gate(txn, cmd, fold_local)) is not None:
        return gated
    return fold_local(txn, cmd)


def fold_local(txn: Txn, cmd: pb.Command) -> pb.Result:
    """One command of this cluster's own history, or one shipped from region A."""
    session = None
    if cmd.session:
        session = _session_of(txn, cmd)
        if not isinstance(session, r.SessionRecord):
            return session  # an error, or the result recorded the first time
    result = _run(txn, cmd)
    if session is not None:
        _record(txn, cmd, session, result)
    return result


def fold_bytes(txn: Txn, data: bytes) -> pb.Result:
    """Fold a command as it is stored in the log; bytes that do not parse are a
    clear error result, and change nothing."""
    cmd = pb.Command()
    try:
        cmd.ParseFromString(data)
    except DecodeError as exc:
        return _error(errno.EINVAL, f"command does not parse: {exc}")
    return fold(txn, cmd)


def _run(txn: Txn, cmd: pb.Command) -> pb.Result:
    kind = cmd.WhichOneof("op")
    if kind is None:
        return _error(errno.EINVAL, "command has no operation (unknown or missing type)")
    savepoint = txn.savepoint()
    try:
        if kind in SESSION_OPERATIONS:
            return SESSION_OPERATIONS[kind](Namespace(txn, cmd), getattr(cmd, kind),
                                            cmd.session)
        return OPERATIONS[kind](Namespace(txn, cmd), getattr(cmd, kind))
    except FsError as exc:
        txn.rollback(savepoint)
        return _error(exc.errno, exc.message)
    except (struct.error, OverflowError) as exc:
        # A value the records cannot hold: every replica fails the same way, so the
        # command fails (loudly) instead of stopping the log for good.
        log.error("command %s failed in the fold: %s", kind, exc)
        txn.rollback(savepoint)
        return _error(errno.EOVERFLOW, f"{kind}: a value is out of range ({exc})")
    except FOLD_BUGS as exc:
        # A mistake in the fold that this command's contents trigger: deterministic,
        # so every replica fails it the same way. Failing the one command (changing
        # nothing) keeps the log moving; raising would stop every replica, and again
        # at every restart. Errors of the disk or memory are not caught: a replica
        # that cannot read its state must stop, not answer differently from the rest.
        log.exception("BUG: command %s failed in the fold; it fails with EIO and "
                      "changes nothing", kind)
        txn.rollback(savepoint)
        return _error(errno.EIO, f"{kind}: the metadata service could not apply this "
                                 f"command ({type(exc).__name__}: {exc}); nothing changed")


def _session_of(txn: Txn, cmd: pb.Command) -> r.SessionRecord | pb.Result:
    data = txn.get(r.SESSIONS, r.u64(cmd.session))
    if data is None:
        return _error(errno.ENOTCONN, f"session {cmd.session} is not open (closed or "
                                      "expired): open a new session")
    session = r.SessionRecord.unpack(data)
    if cmd.seq == 0 or cmd.acked_seq >= cmd.seq:
        return _error(errno.EINVAL, f"bad request numbers: seq {cmd.seq} must be at least 1 "
                                    f"and above acked_seq {cmd.acked_seq}")
    if cmd.seq <= session.acked_seq:
        return _error(errno.EINVAL, f"request {cmd.seq} of session {cmd.session} was already "
                                    "acknowledged; its result is gone")
    recorded = txn.get(r.RESULTS, r.result_key(cmd.session, cmd.seq))
    if recorded is not None:
        return pb.Result.FromString(recorded)
    return session


def _record(txn: Txn, cmd: pb.Command, session: r.SessionRecord, result: pb.Result) -> None:
    if txn.get(r.SESSIONS, r.u64(cmd.session)) is None:
        return  # the command closed its own session
    txn.put(r.RESULTS, r.result_key(cmd.session, cmd.seq), result.SerializeToString())
    if cmd.acked_seq > session.acked_seq:
        if cmd.acked_seq - session.acked_seq <= PRUNE_ONE_BY_ONE:
            for seq in range(session.acked_seq + 1, cmd.acked_seq + 1):
                txn.delete(r.RESULTS, r.result_key(cmd.session, seq))
        else:  # a big jump: one range tombstone
            txn.delete_range(r.RESULTS, r.result_key(cmd.session, session.acked_seq + 1),
                             r.result_key(cmd.session, cmd.acked_seq + 1))
        session.acked_seq = cmd.acked_seq
        txn.put(r.SESSIONS, r.u64(cmd.session), session.pack())


def _error(code: int, message: str) -> pb.Result:
    return pb.Result(errno=code, message=message)
