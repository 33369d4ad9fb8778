"""What every family of the fold works with: a Namespace over a Txn (inodes,
directory entries, counters, links, freeing a node and its chunks, releases)."""

import errno
import stat

from schemas import namespace_pb2 as pb
from services.common.posix import permissions as perm
from services.common.posix import records as r
from services.common.posix.errors import FsError
from services.common.posix.names import check_name
from services.metadata.namespace.txn import Txn


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
        # Most of these are not there: discard() writes no tombstone for those.
        self.txn.delete_prefix(r.XATTRS, key)
        if stat.S_ISREG(node.mode):
            self.drop_chunks(node.ino, 0)
            self.txn.discard(r.INLINE, key)
        self.txn.discard(r.CLASSES, key)
        self.txn.discard(r.CLASSES, r.parts_class_key(node.ino))
        self.txn.discard(r.ORPHANS, key)
        if node.is_dir:
            self.txn.discard(r.DELEGATIONS, key)   # a removed directory is held by nobody
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
            self.txn.discard(r.CLASSES, r.parts_class_key(ino))   # no chunk, no parts

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


def ok(node: r.Inode) -> pb.Result:
    result = pb.Result()
    node.fill_attr(result.attr)
    return result
