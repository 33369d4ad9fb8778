"""The read API on a projection: lookup, getattr, readdir, readlink, xattrs, statfs.

Reads check permissions like the mutations do (search to look up, read to list a
directory or read a user xattr) and raise FsError with a POSIX errno.
"""

import errno
import stat
from dataclasses import dataclass

from schemas import namespace_pb2 as pb
from services.common.posix import permissions as perm
from services.common.posix import records as r
from services.common.posix.errors import FsError
from services.common.posix.names import NAME_MAX, check_xattr_name

READDIR_PAGE = 1000


@dataclass(frozen=True)
class DirEntry:
    name: bytes
    attr: pb.Attr
    cookie: int  # pass it back to continue after this entry


@dataclass(frozen=True)
class StatFs:
    inodes: int       # nodes in use
    used_bytes: int   # sum of regular file sizes
    name_max: int = NAME_MAX


def inode(view, ino: int) -> r.Inode:
    data = view.get(r.INODES, r.u64(ino)) if ino else None
    if data is None:
        raise FsError(errno.ENOENT, f"no inode {ino}")
    return r.Inode.unpack(ino, data)


def getattr(view, ino: int) -> pb.Attr:
    return inode(view, ino).to_attr()


def _directory(view, ino: int) -> r.Inode:
    node = inode(view, ino)
    if not node.is_dir:
        raise FsError(errno.ENOTDIR, f"inode {ino} is not a directory")
    return node


def lookup(view, caller: pb.Caller, parent: int, name: bytes) -> pb.Attr:
    directory = _directory(view, parent)
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"entry name is {len(name)} bytes; the limit "
                                          f"is {NAME_MAX}")
    perm.search(caller, directory)
    if name == b".":
        return directory.to_attr()
    if name == b"..":
        return getattr(view, directory.parent or r.ROOT_INO)
    value = view.get(r.DENTRIES, r.dentry_key(parent, name))
    if value is None:
        raise FsError(errno.ENOENT, f"no entry {name!r} in directory {parent}")
    return getattr(view, r.dentry_child(value))


def readdir(view, caller: pb.Caller, ino: int, cookie: int = 0,
            limit: int = READDIR_PAGE, names_only: bool = False) -> list[DirEntry]:
    """Up to `limit` entries after `cookie` (0: from the start), with attributes
    (`names_only`: only the inode and the file type, which the entry itself holds).

    Entries come in hash order. A page never ends inside a run of equal hashes, so
    resuming at the last cookie neither skips nor repeats an entry that stayed put.
    """
    directory = _directory(view, ino)
    perm.require(caller, directory, perm.R, "no read permission on the directory")
    prefix = r.dentry_prefix(ino)
    page: list[DirEntry] = []
    for key, value in view.scan(r.DENTRIES, prefix, prefix + r.u64(cookie)):
        h, name = r.split_dentry_key(key)
        if len(page) >= limit and h + 1 != page[-1].cookie:
            break
        child = r.dentry_child(value)
        attr = pb.Attr(inode=child, mode=value[8] << 12) if names_only else \
            getattr(view, child)
        page.append(DirEntry(name, attr, h + 1))
    return page


def readlink(view, ino: int) -> bytes:
    node = inode(view, ino)
    if not stat.S_ISLNK(node.mode):
        raise FsError(errno.EINVAL, f"inode {ino} is not a symbolic link")
    return node.target


def _xattr_readable(caller: pb.Caller, node: r.Inode, name: bytes) -> bool:
    """May the caller see xattr `name`? Raises EACCES for an unreadable user xattr."""
    if name.startswith(b"trusted."):
        return perm.is_root(caller)
    if name.startswith(b"user.") and not (stat.S_ISREG(node.mode) or node.is_dir):
        return False
    if name.startswith(b"user."):
        perm.require(caller, node, perm.R, "reading xattrs needs read permission")
    return True


def getxattr(view, caller: pb.Caller, ino: int, name: bytes) -> bytes:
    check_xattr_name(name)
    node = inode(view, ino)
    value = view.get(r.XATTRS, r.xattr_key(ino, name)) if _xattr_readable(
        caller, node, name) else None
    if value is None:
        raise FsError(errno.ENODATA, f"no xattr {name!r} on inode {ino}")
    return value


def listxattr(view, caller: pb.Caller, ino: int) -> list[bytes]:
    inode(view, ino)
    prefix = r.u64(ino)
    names = [key[8:] for key, _ in view.scan(r.XATTRS, prefix)]
    return [n for n in names if not n.startswith(b"trusted.") or perm.is_root(caller)]


def statfs(view) -> StatFs:
    return StatFs(inodes=r.from_u64(view.get(r.META, b"inode_count")),
                  used_bytes=r.from_wide(view.get(r.META, b"used_bytes")))


def chunk(view, ino: int, index: int) -> pb.Chunk | None:
    """Chunk `index` of a file (id, version), or None for a hole."""
    node = inode(view, ino)
    if not stat.S_ISREG(node.mode):
        raise FsError(errno.EINVAL, f"inode {ino} is not a regular file")
    found = view.get(r.CHUNKS, r.chunk_key(ino, index))
    if found is None:
        return None
    chunk_id, version = r.CHUNK_VALUE.unpack(found)
    return pb.Chunk(index=index, id=chunk_id, version=version)


def storage_class(view, ino: int) -> str:
    """The node's own storage class text, "" when it uses the cluster default."""
    inode(view, ino)
    found = view.get(r.CLASSES, r.u64(ino))
    return found.decode() if found is not None else ""


def parts_class(view, ino: int) -> str | None:
    """The ec=K+M shape the file's chunks may still be held in as parts, when its class
    changed to copies=N since they were encoded; None when there is none to mind."""
    found = view.get(r.CLASSES, r.parts_class_key(ino))
    return found.decode() if found is not None else None


def inline(view, ino: int) -> bytes | None:
    """The first bytes of a file kept inline (common/posix/inline_data.py), or None when
    its bytes are in chunks (or it has none)."""
    return view.get(r.INLINE, r.u64(ino))


def chunk_owner(view, chunk_id: int) -> tuple[int, int] | None:
    """(ino, chunk index) of the file that refers to chunk `chunk_id`, if one does."""
    found = view.get(r.CHUNK_OWNERS, r.u64(chunk_id))
    return r.split_chunk_key(found) if found is not None else None
