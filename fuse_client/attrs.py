"""Attributes as the kernel sees them, and what a kernel setattr asks of the fold.

Pure functions: no I/O. The operations layer fetches, these translate.
"""

import stat
from dataclasses import dataclass

import pyfuse3

from schemas import namespace_pb2 as pb

BLKSIZE = 1 << 20    # the I/O size we suggest (st_blksize): one FUSE request
SECTOR = 512         # st_blocks counts these


@dataclass(frozen=True)
class Timeouts:
    """How long the kernel may trust what we told it, in seconds. Long, because the
    master pushes other clients' changes (docs/mount.md, "Caching")."""
    attr: float = 60.0
    entry: float = 60.0
    negative: float = 60.0


NO_CACHE = Timeouts(0.0, 0.0, 0.0)   # for answers an invalidation may have overtaken


def entry(attr: pb.Attr, timeouts: Timeouts, size: int | None = None,
          written_ns: int | None = None) -> pyfuse3.EntryAttributes:
    """`attr` for the kernel. This mount's writes not yet committed count as they
    would on a local file system: `size` is the end they reach, `written_ns` the
    time of the last (mtime and ctime are at least that)."""
    out = pyfuse3.EntryAttributes()
    out.st_ino = attr.inode
    out.generation = 0            # inode numbers are never reused
    out.st_mode = attr.mode
    out.st_nlink = attr.nlink
    out.st_uid = attr.uid
    out.st_gid = attr.gid
    out.st_rdev = attr.rdev
    out.st_size = attr.size if size is None else size
    out.st_blksize = BLKSIZE
    out.st_blocks = -(-out.st_size // SECTOR) if stat.S_ISREG(attr.mode) else 0
    out.st_atime_ns = attr.atime_ns
    out.st_mtime_ns = max(attr.mtime_ns, written_ns or attr.mtime_ns)
    out.st_ctime_ns = max(attr.ctime_ns, written_ns or attr.ctime_ns)
    out.attr_timeout = timeouts.attr
    out.entry_timeout = timeouts.entry
    return out


def negative_entry(timeouts: Timeouts) -> pyfuse3.EntryAttributes:
    """'No such entry', which the kernel may remember for `timeouts.negative` s."""
    out = pyfuse3.EntryAttributes()
    out.st_ino = 0
    out.entry_timeout = timeouts.negative
    return out


def is_time_flush(fields: pyfuse3.SetattrFields, has_handle: bool) -> bool:
    """With the writeback cache the kernel keeps mtime/ctime of written files itself
    and sends them back through an open handle (setattr with fh and times only).
    The commit of the writes already set them on the master, so it is skipped."""
    return (has_handle and (fields.update_mtime or fields.update_ctime)
            and not (fields.update_size or fields.update_mode or fields.update_uid
                     or fields.update_gid))


def setattr_command(inode: int, new: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                    via_handle: bool, times_are_now: bool) -> pb.Setattr | None:
    """The Setattr command for a kernel setattr, or None when nothing the master keeps
    changes (ctime alone: the fold sets it with every change).

    `times_are_now`: the times given mean "now" (utimes(NULL), UTIME_NOW); pyfuse3
    hands us the kernel's clock either way, so the caller decides (see operations).
    A size change sets mtime and ctime in the fold; the kernel's own mtime that comes
    with a truncation is dropped, so a writer who is not the owner may truncate."""
    op = pb.Setattr(inode=inode, via_handle=via_handle)
    if fields.update_mode:
        op.mode = stat.S_IMODE(new.st_mode)
    if fields.update_uid:
        op.uid = new.st_uid
    if fields.update_gid:
        op.gid = new.st_gid
    if fields.update_size:
        op.size = new.st_size
    elif fields.update_atime or fields.update_mtime:
        if fields.update_atime:
            op.atime.CopyFrom(_time(new.st_atime_ns, times_are_now))
        if fields.update_mtime:
            op.mtime.CopyFrom(_time(new.st_mtime_ns, times_are_now))
    changed = [f.name for f, _ in op.ListFields() if f.name not in ("inode", "via_handle")]
    return op if changed else None


def _time(ns: int, now: bool) -> pb.TimeUpdate:
    return pb.TimeUpdate(now=True) if now else pb.TimeUpdate(ns=ns)


@dataclass(frozen=True)
class Space:
    used_bytes: int    # the sum of file sizes
    free_bytes: int    # what the connected chunkservers have free
    inodes: int
    name_max: int


FRSIZE = 1 << 16       # statfs block: the chunk block size
FREE_INODES = 1 << 31  # inodes are never the limit; say so with a large number


def statvfs(space: Space) -> pyfuse3.StatvfsData:
    """df's view: size = used + free, so Use% is used / (used + free)."""
    out = pyfuse3.StatvfsData()
    out.f_bsize = BLKSIZE
    out.f_frsize = FRSIZE
    free = space.free_bytes // FRSIZE
    out.f_blocks = -(-space.used_bytes // FRSIZE) + free
    out.f_bfree = out.f_bavail = free
    out.f_files = space.inodes + FREE_INODES
    out.f_ffree = out.f_favail = FREE_INODES
    out.f_namemax = space.name_max
    return out
