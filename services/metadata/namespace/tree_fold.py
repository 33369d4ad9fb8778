"""The fold's tree operations: mkdir, mknod, create, symlink, link, unlink, rmdir
and rename, with the checks and their order from docs/namespace-semantics.md."""

import errno
import stat

from schemas import namespace_pb2 as pb
from services.common.posix import attributes, inline_data
from services.common.posix import permissions as perm
from services.common.posix import records as r
from services.common.posix.errors import FsError
from services.common.posix.names import check_symlink_target
from services.metadata.namespace import delegation_fold, session_fold
from services.metadata.namespace.namespace import Namespace, ok

LINK_MAX = 65000
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
NODE_TYPES = (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)


# -- operations -------------------------------------------------------------------

def mkdir(ns: Namespace, op: pb.Mkdir, session: int) -> pb.Result:
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
    return ok(node)


def mknod(ns: Namespace, op: pb.Mknod) -> pb.Result:
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


def create(ns: Namespace, op: pb.Create, session: int) -> pb.Result:
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
            return session_fold.open_file(ns, pb.Open(inode=existing.ino, flags=op.open_flags),
                                          session)
        return ok(existing)
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
    return ok(node)


def symlink(ns: Namespace, op: pb.Symlink, session: int) -> pb.Result:
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
    return ok(node)


def link(ns: Namespace, op: pb.Link) -> pb.Result:
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
    return ok(node)


def unlink(ns: Namespace, op: pb.Unlink, session: int) -> pb.Result:
    directory, node = _to_remove(ns, op, session)
    if node.is_dir:
        raise FsError(errno.EISDIR, f"{op.name!r} is a directory: use rmdir")
    ns.unlink_entry(directory, op.name)
    ns.touch_dir(directory, entries=-1)
    ns.drop_link(node)
    return pb.Result()


def rmdir(ns: Namespace, op: pb.Rmdir, session: int) -> pb.Result:
    directory, node = _to_remove(ns, op, session)
    if not node.is_dir:
        raise FsError(errno.ENOTDIR, f"{op.name!r} is not a directory")
    if node.size:
        raise FsError(errno.ENOTEMPTY, f"directory {op.name!r} is not empty")
    ns.unlink_entry(directory, op.name)
    ns.touch_dir(directory, entries=-1, subdirs=-1)
    ns.free(node)
    return pb.Result()


def _to_remove(ns: Namespace, op: pb.Unlink | pb.Rmdir, session: int
               ) -> tuple[r.Inode, r.Inode]:
    """The directory and the node an unlink or rmdir takes out, once the caller may
    (a removal answered by the session holding the directory keeps its time)."""
    if op.time_ns and delegation_fold.holds(ns, session, op.parent):
        ns.now = op.time_ns
    directory = ns.parent(op.parent, op.name)
    node = _present(ns, directory, op.name)
    perm.may_delete(ns.caller, directory, node)
    return directory, node


def _absent(ns: Namespace, directory: r.Inode, name: bytes) -> None:
    if ns.txn.get(r.DENTRIES, r.dentry_key(directory.ino, name)) is not None:
        raise FsError(errno.EEXIST, f"{name!r} exists")


def _present(ns: Namespace, directory: r.Inode, name: bytes) -> r.Inode:
    node = ns.child(directory.ino, name)
    if node is None:
        raise FsError(errno.ENOENT, f"no entry {name!r} in directory {directory.ino}")
    return node


# -- rename -------------------------------------------------------------------------

def rename(ns: Namespace, op: pb.Rename) -> pb.Result:
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
