"""The file system the kernel talks to: pyfuse3 operations over a metadata session
and the chunk data path.

Every namespace change is one command to the metadata cluster, which checks
permissions and decides the outcome; the kernel (mounted with default_permissions)
checks access to open files and exec with the attributes we report. File contents
go through ChunkIO, write-back: the kernel's writeback cache gathers writes, we
send them on, and they are committed at flush (close) and fsync.

Caching (see docs/mount.md): the kernel trusts attributes, entries and missing
names for a configurable time (a minute by default) because changes made by other
clients are pushed by the master and dropped at once (invalidation.py); what
could slip past the pushes is handled in kernel_cache.py. An open keeps the
kernel's cached pages only when the file has not changed since they were read
(close-to-open).
"""

import asyncio
import errno
import logging
import os
import stat
import time

import pyfuse3

from fuse_client import attrs, dir_listing
from fuse_client.attrs import Timeouts
from fuse_client.caller import Callers
from fuse_client.delegations import Delegations
from fuse_client.dir_pages import DirPage, DirPages
from fuse_client.fuse_errors import fuse_operation
from fuse_client.handles import Handles, OpenFile
from fuse_client.kernel_cache import KernelCache
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError

log = logging.getLogger(__name__)
ROOT = pb.Caller(uid=0, gid=0)
READDIR_PAGE = 512
STATFS_CACHE_S = 1.0
MAX_TOLD = 1 << 17
CAPABILITY = b"security.capability"
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
ZEROS_PIECE = 1 << 20          # a punched range is overwritten this much at a time
DEFAULT_TIMEOUTS = Timeouts()


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True

    def __init__(self, metadata, chunk_io, timeouts: Timeouts = DEFAULT_TIMEOUTS,
                 writeback_cache: bool = False, on_init=None, delegations: bool = True):
        """`metadata`: an open MetadataClient; `chunk_io`: the ChunkIO over it;
        `on_init`: called once the kernel has answered FUSE's INIT (the mount's
        settings, such as read-ahead, can be tuned from then on); `delegations`:
        answer creates and the like in directories the session holds
        (docs/delegations.md)."""
        super().__init__()
        self.md, self.data, self.timeouts = metadata, chunk_io, timeouts
        self.enable_writeback_cache = writeback_cache
        self.on_init = on_init
        self.callers = Callers()
        self.kernel = KernelCache()
        self.handles = Handles()
        self.dir_pages = DirPages()
        self.dir_attrs: dict[int, pb.Attr] = {}   # directory -> attributes last told
        # the kernel: what fstat of one removed while open answers
        self.sizes: dict[int, int] = {}     # open inode -> its size at the master, as known
        self.cached: dict[int, tuple[int, int]] = {}  # inode -> (mtime, size) of the
        # contents the kernel's pages hold, for close-to-open
        self.unflushed: set[int] = set()    # inodes written since their last flush
        self.written_at: dict[int, int] = {}  # inode -> time of its last uncommitted write
        self.told: dict[int, tuple[int, int]] = {}  # file -> (mtime, size) last told
        # the kernel, which may trust it until attr_timeout
        self.no_caps: dict[int, float] = {}   # inode -> until when it has no capability
        self._space: tuple[float, pyfuse3.StatvfsData | None] = (0.0, None)
        self.delegations = Delegations(metadata, on_lost=self._lost,
                                       enabled=delegations).attach()
        chunk_io.inline.commit = self._commit_inline
        chunk_io.lease_hooks(self.delegations.begin_chunk, self._commit_chunk)

    def init(self) -> None:
        if self.on_init is not None:     # after this returns, INIT's answer is sent
            asyncio.get_running_loop().call_soon(self.on_init)

    def forget_inode(self, inode: int) -> None:
        """Another client changed the inode: what we know of it is stale."""
        self.data.invalidate(inode)
        self.cached.pop(inode, None)
        self.sizes.pop(inode, None)
        self.told.pop(inode, None)
        self.no_caps.pop(inode, None)

    def _lost(self, parent: int, name: bytes, inode: int) -> None:
        """A create answered here failed at the master: the kernel must not keep it."""
        self.forget_inode(inode)
        pyfuse3.invalidate_entry_async(parent, name, ignore_enoent=True)

    async def shutdown(self) -> None:
        """Commit what is still written back, then close the session (which releases
        every open file at the master)."""
        try:
            await self.data.close()
        finally:
            self.delegations.close()
            await self.md.close()

    # -- attributes -------------------------------------------------------------------------
    def _entry(self, attr: pb.Attr, since: int, parent: int = 0,
               name: bytes = b"") -> pyfuse3.EntryAttributes:
        """A new entry for the kernel (its lookup count grows): see `_attrs`."""
        self.kernel.told(attr.inode, parent, name)
        return self._attrs(attr, since)

    def _attrs(self, attr: pb.Attr, since: int) -> pyfuse3.EntryAttributes:
        """`attr` for the kernel, cacheable unless an invalidation arrived since the
        request began (at kernel epoch `since`): it may be older than that change."""
        timeouts = self.timeouts if self.kernel.fresh_since(since) else attrs.NO_CACHE
        size = written = None
        if stat.S_ISDIR(attr.mode):
            if len(self.dir_attrs) >= MAX_TOLD:
                self.dir_attrs.clear()
            self.dir_attrs[attr.inode] = attr
        elif stat.S_ISREG(attr.mode):
            if len(self.told) >= MAX_TOLD:
                self.told.clear()      # costs only extra invalidations at open
            self.told[attr.inode] = (attr.mtime_ns, attr.size)
            pending = self.data.written_end(attr.inode)
            if pending > attr.size:
                size = pending        # writes not committed yet count, like a local fs
            written = self.written_at.get(attr.inode)
        return attrs.entry(attr, timeouts, size, written)

    async def _getattr(self, caller: pb.Caller, inode: int) -> pb.Attr:
        held = self.delegations.getattr(inode)
        if held is not None:
            return held
        return (await self.md.read(caller, getattr=mpb.Getattr(inode=inode))).attr

    @fuse_operation
    async def lookup(self, parent_inode, name, ctx):
        caller, since = self.callers.of(ctx), self.kernel.epoch
        try:
            here = self.delegations.lookup(caller, parent_inode, name)
            if here is not None:
                return self._entry(here, since, parent_inode, name)
            reply = await self.md.read(caller, lookup=mpb.Lookup(parent=parent_inode, name=name))
        except FsError as exc:
            if exc.errno == errno.ENOENT:
                fresh = self.kernel.fresh_since(since)
                return attrs.negative_entry(self.timeouts if fresh else attrs.NO_CACHE)
            raise
        return self._entry(reply.attr, since, parent_inode, name)

    async def forget(self, inode_list):
        """Inode numbers are the master's and stable; the count is kept only to know
        what the kernel holds (kernel_cache.py)."""
        for inode, count in inode_list:
            self.kernel.forgotten(inode, count)

    @fuse_operation
    async def getattr(self, inode, ctx):
        since = self.kernel.epoch
        try:
            return self._attrs(await self._getattr(self.callers.of(ctx), inode), since)
        except FsError as exc:
            removed = self._removed_open_dir(inode) or self._removed_open_file(inode)
            if exc.errno != errno.ENOENT or removed is None:
                raise
            return self._attrs(removed, since)

    def _removed_open_dir(self, inode: int) -> pb.Attr | None:
        """A directory removed while open stays open, with no links, as on a local
        file system (the master keeps no removed directories). The kernel asks only
        for an inode it holds, so one the master no longer knows is held open (or as
        a working directory): its attributes as last told, with no links."""
        known = self.dir_attrs.get(inode)
        if known is None:
            return None
        gone = pb.Attr()
        gone.CopyFrom(known)
        gone.nlink = 0
        return gone

    @fuse_operation
    async def setattr(self, inode, attr, fields, fh, ctx):
        caller, since = self.callers.of(ctx), self.kernel.epoch
        if attrs.is_time_flush(fields, fh is not None):
            return self._attrs(await self._getattr(caller, inode), since)
        if inode in self.unflushed and not fields.update_size:
            await self.data.flush(caller, inode)   # its commit would undo times set now
        times_now = False
        if (fields.update_atime or fields.update_mtime) and not fields.update_size \
                and caller.uid != 0:
            # The kernel (default_permissions) lets a caller who is not the owner set
            # times only to "now", and pyfuse3 does not say which it was.
            times_now = (await self._getattr(caller, inode)).uid != caller.uid
        if fields.update_size:
            await self._before_resize(caller, inode, attr.st_size)
        op = attrs.setattr_command(inode, attr, fields, fh is not None, times_now)
        if op is None:
            return self._attrs(await self._getattr(caller, inode), since)
        changed = self.delegations.setattr_own(caller, inode, op)
        if changed is None:
            changed = (await self.md.mutate(caller, setattr=op)).attr
        if fields.update_size:
            self.data.invalidate(inode)
        self._attributes_set(changed, resized=fields.update_size)
        return self._attrs(changed, since)

    def _attributes_set(self, changed: pb.Attr, resized: bool) -> None:
        """A setattr of ours the master answered: the delegations, the size known here
        and the version of the kernel's pages (our own change) follow it."""
        self.delegations.attributes_set(changed)
        if resized and changed.inode in self.sizes:
            self.sizes[changed.inode] = changed.size
        if changed.inode in self.cached:
            self.cached[changed.inode] = (changed.mtime_ns, changed.size)

    async def _commit_inline(self, caller: pb.Caller, inode: int, pieces,
                             written_ns: int) -> pb.Attr:
        """Writes kept inline are committed: in the background for a file this mount
        answers for, else at the master (close waits: close-to-open)."""
        attr = self.delegations.commit_inline(caller, inode, pieces, written_ns)
        if attr is None:
            attr = (await self.md.mutate(caller, write_inline=pb.WriteInline(
                inode=inode, time_ns=written_ns,
                pieces=[pb.InlinePiece(offset=o, data=d) for o, d in pieces]))).attr
        return attr

    async def _commit_chunk(self, caller: pb.Caller, op: pb.CommitWrite) -> pb.Attr:
        """A chunk's writes are on every copy: commit them, as for inline writes."""
        attr = self.delegations.commit_chunk(caller, op)
        if attr is None:
            attr = (await self.md.mutate(caller, commit_write=op)).attr
        return attr

    async def _before_resize(self, caller: pb.Caller, inode: int, size: int) -> None:
        """Before a file shrinks: commit pending writes, and zero the cut chunk's tail
        so that extending the file again reads zeros (ChunkIO.truncate_tail)."""
        current = await self._getattr(caller, inode)
        if not stat.S_ISREG(current.mode):
            return                     # the fold answers EISDIR / EINVAL
        if size >= max(current.size, self.data.written_end(inode)):
            return
        if self.handles.is_open(inode):
            await self.data.truncate_tail(caller, inode, size)
            return
        # truncate(2) of a file not open here: writing needs it open in the session
        await self.md.mutate(caller, open=pb.Open(inode=inode, flags=os.O_WRONLY))
        try:
            await self.data.truncate_tail(caller, inode, size)
        finally:
            await self.md.mutate(caller, release=pb.Release(inode=inode))

    # -- names ------------------------------------------------------------------------------
    @fuse_operation
    async def readlink(self, inode, ctx):
        target = self.delegations.readlink(inode)
        if target is not None:
            return target
        return (await self.md.read(self.callers.of(ctx),
                                   readlink=mpb.Readlink(inode=inode))).data

    async def _made(self, ctx, parent: int, name: bytes, **op) -> pyfuse3.EntryAttributes:
        since = self.kernel.epoch
        attr = (await self.md.mutate(self.callers.of(ctx), **op)).attr
        await self.delegations.settle([(parent, name)])
        return self._entry(attr, since, parent, name)

    @fuse_operation
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        return await self._made(ctx, parent_inode, name, mknod=pb.Mknod(
            parent=parent_inode, name=name, mode=mode, rdev=rdev))

    @fuse_operation
    async def mkdir(self, parent_inode, name, mode, ctx):
        """A new directory is delegated to this session from the start (see
        docs/delegations.md); in a held directory it is made here."""
        caller, since = self.callers.of(ctx), self.kernel.epoch
        attr = self.delegations.mkdir(caller, parent_inode, name, mode)
        if attr is None:
            delegate = bool(self.md.session) and self.delegations.enabled
            reply = await self.md.mutate_reply(caller, mkdir=pb.Mkdir(
                parent=parent_inode, name=name, mode=mode, delegate=delegate))
            attr = reply.result.attr
            self.delegations.made_at_master(parent_inode, name, attr)
            if delegate:
                self.delegations.adopt(attr, parent_inode, reply.storage_class)
        return self._entry(attr, since, parent_inode, name)

    @fuse_operation
    async def symlink(self, parent_inode, name, target, ctx):
        caller, since = self.callers.of(ctx), self.kernel.epoch
        await self.delegations.room(parent_inode)
        attr = self.delegations.symlink(caller, parent_inode, name, target)
        if attr is not None:
            return self._entry(attr, since, parent_inode, name)
        return await self._made(ctx, parent_inode, name, symlink=pb.Symlink(
            parent=parent_inode, name=name, target=target))

    @fuse_operation
    async def link(self, inode, new_parent_inode, new_name, ctx):
        return await self._made(ctx, new_parent_inode, new_name, link=pb.Link(
            inode=inode, new_parent=new_parent_inode, new_name=new_name))

    @fuse_operation
    async def unlink(self, parent_inode, name, ctx):
        caller = self.callers.of(ctx)
        await self.delegations.room(parent_inode)
        self._pin(self._open_at((parent_inode, name)))
        if self.delegations.unlink(caller, parent_inode, name):
            return
        self.delegations.renaming(parent_inode, name, self.kernel.name_of)
        await self.md.mutate(caller, unlink=pb.Unlink(parent=parent_inode, name=name))
        await self.delegations.settle([(parent_inode, name)])
        self.delegations.changed(caller, parent_inode)

    @fuse_operation
    async def rmdir(self, parent_inode, name, ctx):
        caller = self.callers.of(ctx)
        await self.delegations.room(parent_inode)
        if not self.delegations.rmdir(caller, parent_inode, name):
            self.delegations.renaming(parent_inode, name, self.kernel.name_of)
            await self.md.mutate(caller, rmdir=pb.Rmdir(parent=parent_inode, name=name))
            await self.delegations.settle([(parent_inode, name)])

    @fuse_operation
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags,
                     ctx):
        self._pin(self._open_at((parent_inode_new, name_new)))
        for parent, name in ((parent_inode_old, name_old), (parent_inode_new, name_new)):
            self.delegations.renaming(parent, name, self.kernel.name_of)
        await self.md.mutate(self.callers.of(ctx), rename=pb.Rename(
            parent=parent_inode_old, name=name_old, new_parent=parent_inode_new,
            new_name=name_new, flags=flags))
        await self.delegations.settle([(parent_inode_old, name_old),
                                       (parent_inode_new, name_new)])

    # -- open files -------------------------------------------------------------------------
    def _removed_open_file(self, inode: int) -> pb.Attr | None:
        """A file open here for reading that another client removed: it stays
        readable, with no links, as an unlinked open file does (its inline bytes were
        read at the open; its chunks are retained and found by id, chunk_locations.py).
        An open recorded at the master keeps such a file there."""
        for handle in self.handles.files.values():
            if handle.inode == inode and handle.attr is not None:
                gone = pb.Attr()
                gone.CopyFrom(handle.attr)
                gone.nlink = 0
                return gone
        return None

    async def session_renewed(self, old: int, new: int) -> None:
        """The cluster closed session `old` (this mount was not heard from in time)
        and released its open files: open them again in `new`, so that they can
        still be written and an unlinked one lives on. One that is gone (unlinked and
        released meanwhile) is logged; reads and writes of it fail."""
        self.delegations.renewed()
        for handle in list(self.handles.files.values()):
            try:
                await self.md.mutate(handle.caller, open=pb.Open(
                    inode=handle.inode, flags=handle.flags & ~os.O_TRUNC))
            except Exception as exc:   # noqa: BLE001 (each file on its own)
                log.warning("inode %d, open when session %d was closed, could not be "
                            "opened again in session %d: %s", handle.inode, old, new, exc)

    @fuse_operation
    async def open(self, inode, flags, ctx):
        """An open for reading is a read (read_open): nothing is logged, and the answer
        brings a small file's bytes or where chunk 0 is. Any other open is a command
        (the master records it: the file lives on if unlinked while open)."""
        caller = self.callers.of(ctx)
        if flags & os.O_TRUNC and self.data.written_end(inode):
            await self.data.flush(caller, inode)   # or a later commit would regrow it
        own = self.delegations.open_own(caller, inode, flags)
        if own is not None:        # a file only this mount can reach yet
            if flags & os.O_TRUNC:
                self.data.invalidate(inode)
                self.data.inline.created(inode)
            return self._opened(own[0], caller, flags, own[1])
        logged = bool(flags & (os.O_ACCMODE | os.O_TRUNC))
        if logged:
            attr = (await self.md.mutate(caller, open=pb.Open(inode=inode,
                                                              flags=flags))).attr
        else:
            reply = await self.md.read(caller, read_open=mpb.ReadOpen(inode=inode,
                                                                      flags=flags))
            attr = reply.attr
        if flags & os.O_TRUNC:
            self.data.invalidate(inode)
            self.data.inline.created(inode)     # empty, no chunks
        elif not logged:
            self.data.opened_for_reading(inode, reply)
        if self.told.get(inode) != (attr.mtime_ns, attr.size):
            await self._kernel_asks_again(inode)
            self.told[inode] = (attr.mtime_ns, attr.size)
        return self._opened(attr, caller, flags, logged)

    async def _kernel_asks_again(self, inode: int) -> None:
        """The kernel may hold older attributes of a file another client changed:
        have it fetch them before this open reads, or it would stop at the old size
        (close-to-open). A notification, so in a thread (it must not wait on the loop)."""
        try:
            await asyncio.to_thread(pyfuse3.invalidate_inode, inode, True)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("inode %d: invalidating its attributes: %s", inode, exc)

    @fuse_operation
    async def create(self, parent_inode, name, mode, flags, ctx):
        """One command creates and opens (a new file opens whatever its mode: tar
        writes read-only files it creates)."""
        caller, since = self.callers.of(ctx), self.kernel.epoch
        await self.delegations.room(parent_inode)
        attr = self.delegations.create(caller, parent_inode, name, mode, flags)
        if attr is None:
            attr = (await self.md.mutate(caller, create=pb.Create(
                parent=parent_inode, name=name, mode=mode,
                exclusive=bool(flags & os.O_EXCL), open=True, open_flags=flags))).attr
            self.delegations.made_at_master(parent_inode, name, attr)
            self.delegations.changed(caller, parent_inode)
        if attr.size == 0:
            self.data.inline.created(attr.inode)
        return (self._opened(attr, caller, flags),
                self._entry(attr, since, parent_inode, name))

    def _opened(self, attr: pb.Attr, caller: pb.Caller, flags: int,
                logged: bool = True) -> pyfuse3.FileInfo:
        """Record an open; the kernel keeps its cached pages only when the file is
        as it was when they were read (close-to-open consistency)."""
        version = (attr.mtime_ns, attr.size)
        keep = self.cached.get(attr.inode) == version
        self.cached[attr.inode] = version
        self.sizes[attr.inode] = attr.size
        fh = self.handles.add_file(OpenFile(attr.inode, caller, flags, attr=attr,
                                            logged=logged))
        self.data.inline.hold(attr.inode)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    def _pin(self, inodes) -> None:
        """This mount is about to remove a name: files behind it that are open here
        for reading only (not recorded at the master) are opened there now, ahead of
        the removal on the session stream, so that they live on while open."""
        for handle in self.handles.files.values():
            if not handle.logged and handle.inode in inodes:
                self.md.mutate_deferred(handle.caller, open=pb.Open(
                    inode=handle.inode, flags=os.O_RDONLY))
                handle.logged = True

    def _open_at(self, *names: tuple[int, bytes]) -> set[int]:
        """Inodes open here that the kernel knows by one of these names."""
        wanted = set(names)
        return {h.inode for h in self.handles.files.values()
                if not h.logged and (self.kernel.name_of(h.inode) in wanted
                                     or self.delegations.inode_at(h.inode, wanted))}

    @fuse_operation
    async def read(self, fh, off, size):
        handle = self.handles.file(fh)
        known = self.sizes.get(handle.inode)
        if known is None:            # another client changed it: ask again
            try:
                known = (await self._getattr(handle.caller, handle.inode)).size
            except FsError as exc:
                gone = self._removed_open_file(handle.inode)
                if exc.errno != errno.ENOENT or gone is None:
                    raise
                known = gone.size
            self.sizes[handle.inode] = known
        file_size = max(known, self.data.written_end(handle.inode))
        return await self.data.read(handle.caller, handle.inode, off, size, file_size)

    @fuse_operation
    async def write(self, fh, off, buf):
        handle = self.handles.file(fh)
        end = await self.data.write(handle.caller, handle.inode, off, buf)
        self.unflushed.add(handle.inode)
        self.written_at[handle.inode] = time.time_ns()
        if end > self.sizes.get(handle.inode, 0):
            self.sizes[handle.inode] = end
        return len(buf)

    @fuse_operation
    async def fallocate(self, fh, mode, offset, length):
        """fallocate(2) (through fuse_hooks.py). Space is not reserved: chunks are
        allocated as they are written, and a hole reads as zeros, so mode 0 only
        grows the file; a punched or zeroed range is overwritten with zeros."""
        if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        handle = self.handles.file(fh)
        size = max(self.sizes.get(handle.inode, 0), self.data.written_end(handle.inode))
        if handle.inode not in self.sizes:
            size = max(size, (await self._getattr(handle.caller, handle.inode)).size)
        end = offset + length
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) and offset < size:
            await self._write_zeros(fh, offset, min(end, size))
        if not mode & FALLOC_FL_KEEP_SIZE and end > size:
            changed = (await self.md.mutate(handle.caller, setattr=pb.Setattr(
                inode=handle.inode, size=end, via_handle=True))).attr
            self._attributes_set(changed, resized=True)

    async def _write_zeros(self, fh: int, start: int, end: int) -> None:
        zeros = bytes(min(ZEROS_PIECE, end - start))
        for at in range(start, end, ZEROS_PIECE):
            await self.write(fh, at, zeros[:min(ZEROS_PIECE, end - at)])

    @fuse_operation
    async def flush(self, fh):
        handle = self.handles.file(fh)
        await self._commit(handle, self.data.flush)

    @fuse_operation
    async def fsync(self, fh, datasync):
        """Durable: the bytes on every copy of the file's storage class (or, kept
        inline, in the log), and every command answered here for the file committed
        (its create, its writes' commits), in that order."""
        handle = self.handles.file(fh)
        await self._commit(handle, self.data.fsync)
        await self.delegations.settled(handle.inode)

    async def _commit(self, handle: OpenFile, how) -> None:
        """Commit this mount's writes to the file; then note the version the kernel's
        pages now hold, so the next open may keep them."""
        inode = handle.inode
        written = inode in self.unflushed
        self.unflushed.discard(inode)
        stamp = self.written_at.get(inode)
        try:
            attr = await how(handle.caller, inode)
        except BaseException:
            if written:
                self.unflushed.add(inode)
            raise
        if stamp is not None and self.written_at.get(inode) == stamp:
            del self.written_at[inode]     # the master's mtime covers it now
        if not written:
            return
        if attr is None:       # committed in the background: this mount answers for it
            attr = self.delegations.getattr(inode)
        if attr is None:
            attr = await self._getattr(handle.caller, inode)
        self.cached[inode] = self.told[inode] = (attr.mtime_ns, attr.size)
        if self.enable_writeback_cache:
            # The kernel keeps the write's own mtime; the commit's is the master's.
            await self._kernel_asks_again(inode)
        if inode in self.sizes:
            self.sizes[inode] = max(attr.size, self.sizes[inode])

    @fuse_operation
    async def release(self, fh):
        handle = self.handles.file(fh)
        try:
            await self._commit(handle, self.data.flush)
        except Exception as exc:   # close(2) already returned; the log must say it
            log.error("inode %d: writes lost at release: %s", handle.inode, exc)
        finally:
            self.handles.drop_file(fh)
            self.data.inline.unhold(handle.inode)
            if not self.handles.is_open(handle.inode):
                self.sizes.pop(handle.inode, None)
        # Nobody waits for a release (close(2) returned already): it rides along with
        # the next request instead of costing a Raft round of its own, or is not
        # needed at all when the create that opened the file has not gone yet, or
        # the open was not recorded (one for reading).
        if handle.logged and not self.delegations.closed_unsent(handle.inode):
            self.md.mutate_deferred(handle.caller, release=pb.Release(inode=handle.inode))

    # -- directories ------------------------------------------------------------------------
    # A directory handle is its inode number (dir_pages.py): with fuse_hooks.py the
    # kernel sends no OPENDIR or RELEASEDIR and puts the inode in the handle itself.
    # The kernel checked the opener's right to read at open (default_permissions), so
    # listings are read as root: a process that changes its identity, or a descriptor
    # passed to another, lists what was opened, as on a local file system.
    @fuse_operation
    async def opendir(self, inode, ctx):
        return inode

    @fuse_operation
    async def readdir(self, fh, start_id, token):
        try:
            await self._list(fh, start_id, token)
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise                  # ENOENT: removed while open, so it lists empty

    async def _list(self, inode: int, start_id: int, token) -> None:
        for name in dir_listing.dots_from(start_id):
            attr = await self._dot(inode, name)
            at = dir_listing.DOT if name == b"." else dir_listing.DOTDOT
            # never cached: the kernel makes no entries for the dots
            if not pyfuse3.readdir_reply(token, name, attrs.entry(attr, attrs.NO_CACHE), at):
                return
        cookie = dir_listing.cookie_at(start_id)
        page = self.dir_pages.get(inode) if cookie else None   # from the start: read anew
        while True:
            at = None if page is None else dir_listing.rest_of_page(
                page.entries, page.cookies, page.cookie, cookie, page.last)
            if at is None:
                page = await self._read_page(inode, cookie)
                at = 0
            entries = page.entries
            if at >= len(entries):
                return
            for i in range(at, len(entries)):  # a big page is not copied for each call
                e = entries[i]
                entry = self._attrs(e.attr, page.epoch)
                if not pyfuse3.readdir_reply(token, e.name, entry,
                                             dir_listing.position(e.cookie)):
                    return
                self.kernel.told(e.attr.inode, inode, e.name)
            cookie = entries[-1].cookie

    async def _read_page(self, inode: int, cookie: int) -> DirPage:
        """The next page of a listing: from what this mount knows of a directory it
        holds and made every entry of, else from the master."""
        since = self.kernel.epoch
        known = self.delegations.listing(ROOT, inode)
        if known is not None:
            entries, last = dir_listing.in_master_order(known, cookie), True
        else:
            reply = await self.md.read(ROOT, readdir=mpb.Readdir(
                inode=inode, cookie=cookie, limit=READDIR_PAGE))
            entries = list(reply.entries)
            last = len(entries) < READDIR_PAGE
        page = DirPage(entries, [e.cookie for e in entries], cookie, since, last)
        self.dir_pages.put(inode, page)
        return page

    async def _dot(self, inode: int, name: bytes) -> pb.Attr:
        """"." or "..": the kernel takes only the inode number and type of these."""
        if name == b".":
            return pb.Attr(inode=inode, mode=stat.S_IFDIR)
        ino, attr = self.delegations.parent_of(inode)
        if ino:
            return attr or pb.Attr(inode=ino, mode=stat.S_IFDIR)
        return (await self.md.read(ROOT, lookup=mpb.Lookup(parent=inode, name=b".."))).attr

    @fuse_operation
    async def releasedir(self, fh):
        """Nothing is kept per open directory (and with the hooks this never comes)."""

    @fuse_operation
    async def fsyncdir(self, fh, datasync):
        """Namespace changes are committed to the replicated log before they are
        answered, except creates answered in a delegated directory: wait for those."""
        await self.delegations.settled(fh)

    # -- the rest ---------------------------------------------------------------------------
    @fuse_operation
    async def statfs(self, ctx):
        at, cached = self._space
        if cached is not None and time.monotonic() - at < STATFS_CACHE_S:
            return cached
        fs, health = await asyncio.gather(
            self.md.read(ROOT, statfs=mpb.Statfs()),
            self.md.read(ROOT, chunk_health=mpb.ChunkHealth()))
        free = sum(s.free_bytes for s in health.health.servers if s.connected)
        out = attrs.statvfs(attrs.Space(fs.statfs.used_bytes, free, fs.statfs.inodes,
                                        fs.statfs.name_max))
        self._space = (time.monotonic(), out)
        return out

    @fuse_operation
    async def access(self, inode, mode, ctx):
        await self.md.read(self.callers.of(ctx), access=mpb.Access(inode=inode, mask=mode))
        return True

    @fuse_operation
    async def getxattr(self, inode, name, ctx):
        if (name == CAPABILITY and self.no_caps.get(inode, 0.0) > time.monotonic()
                or self.delegations.made_here(inode)):
            raise pyfuse3.FUSEError(errno.ENODATA)
        try:
            return (await self.md.read(self.callers.of(ctx),
                                       getxattr=mpb.Getxattr(inode=inode, name=name))).data
        except FsError as exc:
            if name == CAPABILITY and exc.errno == errno.ENODATA:
                self._no_caps(inode)
            raise

    def _no_caps(self, inode: int) -> None:
        """The kernel asks for security.capability before every write (to drop it):
        a round trip each. Its absence is trusted like the attributes, until
        attr_timeout, a change here, or another client's change (invalidation)."""
        if len(self.no_caps) >= MAX_TOLD:
            self.no_caps.clear()
        self.no_caps[inode] = time.monotonic() + self.timeouts.attr

    @fuse_operation
    async def listxattr(self, inode, ctx):
        return list((await self.md.read(self.callers.of(ctx),
                                        listxattr=mpb.Listxattr(inode=inode))).names)

    @fuse_operation
    async def setxattr(self, inode, name, value, ctx, flags=0):
        # `flags` (XATTR_CREATE / XATTR_REPLACE) come through fuse_hooks.py: pyfuse3
        # alone checks them with a getxattr and passes none on
        self.no_caps.pop(inode, None)
        await self.md.mutate(self.callers.of(ctx), setxattr=pb.Setxattr(
            inode=inode, name=name, value=value, flags=flags))

    @fuse_operation
    async def removexattr(self, inode, name, ctx):
        self.no_caps.pop(inode, None)
        await self.md.mutate(self.callers.of(ctx),
                             removexattr=pb.Removexattr(inode=inode, name=name))


