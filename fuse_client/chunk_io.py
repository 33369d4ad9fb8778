"""The data path of a mount: reading, writing, flushing and cutting files' contents.

One ChunkIO serves a whole mount over its metadata session. Small files whose bytes
the cluster keeps inline are written and read through InlineIO (inline_io.py); the
rest go through chunks. Reads locate each chunk
(cached), read a healthy copy or decode erasure-coded parts, and see this mount's own
writes. Writes are write-back, as through the kernel's page cache: `write` returns
once the bytes are on their way, and their outcome is known at `flush` / `fsync`,
which raise when bytes could not be stored on every copy. See
docs/client-data-path.md.
"""

import asyncio
import logging
import time

from fuse_client.chunk_locations import LocationCache, from_reply, of_copies
from fuse_client.chunk_reader import ChunkReader, LocationOutdatedError
from fuse_client.chunk_servers import ChunkServers
from fuse_client.chunk_spans import Span, clamp, spans
from fuse_client.data_errors import DataUnavailableError, WriteFailedError
from fuse_client.ec_reader import DecodedChunks
from fuse_client.inline_io import InlineIO, refused_inline
from fuse_client.read_ahead import ReadAhead
from fuse_client.write_lease import ByteBudget, LeaseContext, WriteLease
from schemas import namespace_pb2 as pb
from services.chunk import protocol as p
from services.chunk.data_client import ChunkRequestError
from services.common.posix.errors import FsError
from services.common.posix.records import CHUNK_SIZE

log = logging.getLogger(__name__)
# A sequential writer this close to a chunk's end gets the next chunk begun meanwhile,
# so that its writes do not wait for begin_write at the boundary.
BEGIN_AHEAD = 8 << 20

Key = tuple[int, int]   # (inode, chunk index)


class ChunkIO:
    def __init__(self, metadata, *, in_flight_bytes: int = 32 << 20,
                 pending_limit: int = 64 << 20, pending_total_limit: int = 512 << 20,
                 retry_s: float = 10.0, timeout_s: float = 30.0, decoded_chunks: int = 3,
                 read_ahead_bytes: int = 16 << 20, begin_ahead: bool = False,
                 sync_behind: bool = True):
        """`in_flight_bytes`: writes on the wire at once; `pending_limit` /
        `pending_total_limit`: uncommitted bytes kept (for resending) per chunk / in
        all, past which a commit is made; `retry_s`: how long a read keeps locating a
        chunk whose copies all fail; `timeout_s`: deadline of one chunkserver request;
        `read_ahead_bytes`: how far ahead of a sequential reader to fetch (0: never);
        `begin_ahead` / `sync_behind`: begin the next chunk of a sequential writer early,
        sync the chunk it finished in the background. begin_ahead is off: a lease begun
        ahead raced with truncate_tail's lease on the same chunk (two versions, writes
        sent at the older one) — to be fixed before it is turned on again."""
        self.begin_ahead, self.sync_behind = begin_ahead, sync_behind
        self.metadata = metadata
        self.servers = ChunkServers(timeout_s)
        self.decoded = DecodedChunks(self.servers, decoded_chunks)
        self.reader = ChunkReader(self.servers, self.decoded)
        self.locations = LocationCache(metadata)
        self.retry_s = retry_s
        self.ahead = ReadAhead(self._read, window=read_ahead_bytes) \
            if read_ahead_bytes else None
        self.pending_total_limit = pending_total_limit
        self._ctx = LeaseContext(metadata, self.servers, self.reader, self.locations,
                                 ByteBudget(in_flight_bytes), pending_limit)
        self._leases: dict[Key, WriteLease] = {}
        self._opening: dict[Key, asyncio.Lock] = {}
        self._closing: dict[Key, asyncio.Task] = {}
        self._ahead: dict[Key, asyncio.Task] = {}          # leases begun before needed
        self._failures: dict[int, BaseException] = {}     # inode -> a write-back failure
        self._unsynced: dict[int, dict[int, tuple[pb.Chunk, tuple[str, ...]]]] = {}
        self.inline = InlineIO(metadata)
        self._committed: dict[int, pb.Attr] = {}   # inode -> attributes after a commit

    # -- reads ------------------------------------------------------------------------------
    async def read(self, caller: pb.Caller, inode: int, offset: int, length: int,
                   file_size: int) -> bytes:
        """Up to `length` bytes from `offset`, never past `file_size`; holes and bytes
        a chunk never stored read as zeros. DataUnavailableError (EIO) when no copy or
        set of parts can give a chunk back within `retry_s`."""
        small = await self.inline.read(caller, inode, offset, length, file_size)
        if small is not None:
            return small
        if self.ahead is not None:
            return await self.ahead.read(caller, inode, offset, length, file_size)
        return await self._read(caller, inode, offset, length, file_size)

    async def _read(self, caller: pb.Caller, inode: int, offset: int, length: int,
                    file_size: int) -> bytes:
        pieces = spans(offset, clamp(offset, length, file_size))
        if len(pieces) == 1:
            return await self._read_span(caller, inode, pieces[0])
        return b"".join(await asyncio.gather(*(self._read_span(caller, inode, s)
                                               for s in pieces)))

    async def _read_span(self, caller: pb.Caller, inode: int, span: Span) -> bytes:
        key = (inode, span.index)
        await self._closed(key)
        lease = self._leases.get(key)
        if lease is not None:   # this mount's own writes, committed or not
            try:
                located = await lease.readable(span.offset, span.length)
                return await self.reader.read(located, span.offset, span.length)
            except (LocationOutdatedError, OSError, FsError) as exc:
                log.info("inode %d chunk %d: reading the copies just written failed (%s); "
                         "asking the master", inode, span.index, exc)
        return await self._read_located(caller, inode, span)

    async def _read_located(self, caller: pb.Caller, inode: int, span: Span) -> bytes:
        deadline, delay = time.monotonic() + self.retry_s, 0.05
        while True:
            located = await self.locations.get(caller, inode, span.index)
            if located.inline:      # a small file: its bytes are not in chunks
                self.locations.forget(inode, span.index)
                self.inline.learned(inode, True)
                start = span.index * CHUNK_SIZE + span.offset
                return await self.inline.read(caller, inode, start, span.length,
                                              start + span.length) or b""
            try:
                return await self.reader.read(located, span.offset, span.length)
            except (LocationOutdatedError, DataUnavailableError) as exc:
                self.locations.forget(inode, span.index)
                if time.monotonic() + delay > deadline:
                    raise DataUnavailableError(
                        f"inode {inode}, chunk {span.index}: {exc} (located again for "
                        f"{self.retry_s:g} s); the chunkservers holding it may be down"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    # -- writes -----------------------------------------------------------------------------
    async def write(self, caller: pb.Caller, inode: int, offset: int, data: bytes) -> int:
        """Send `data` to `offset`; returns the end written (offset + len(data)) once the
        bytes are on their way. Raises a failure of an earlier write to the inode not
        yet reported, WriteFailedError (EIO), or FsError from the master."""
        self._raise_failure(inode)
        self._forget_read_ahead(inode)
        data = data if isinstance(data, bytes) else bytes(data)
        if not self._writing_chunks(inode) and \
                await self.inline.write(caller, inode, offset, data):
            return offset + len(data)
        await self._spill(caller, inode)
        return await self._write_chunks(caller, inode, offset, data)

    def _writing_chunks(self, inode: int) -> bool:
        return any(key[0] == inode for key in self._leases) or \
            any(key[0] == inode for key in self._opening)

    async def _spill(self, caller: pb.Caller, inode: int) -> None:
        """The file's bytes go through chunks from now on: writes kept for the inline
        path go there first (and the lease of chunk 0 moves committed inline bytes)."""
        for offset, piece in self.inline.spill(inode):
            await self._write_chunks(caller, inode, offset, piece)

    async def _write_chunks(self, caller: pb.Caller, inode: int, offset: int,
                            data: bytes) -> int:
        view = memoryview(data)
        for span in spans(offset, len(data)):
            lease = await self._lease(caller, inode, span.index)
            if (inode, span.index - 1) in self._leases:   # a sequential writer left it
                self._close((inode, span.index - 1), None, sync=self.sync_behind)
            try:
                await lease.write(span.offset, view[span.start:span.start + span.length])
            except (WriteFailedError, FsError):
                self._drop(lease)
                raise
            if self.begin_ahead and span.offset + span.length >= CHUNK_SIZE - BEGIN_AHEAD:
                self._begin_ahead(caller, inode, span.index + 1)
        if self._ctx.pending_total > self.pending_total_limit:
            await self._commit_largest()
        return offset + len(data)

    def written_end(self, inode: int) -> int:
        """The end of this mount's writes to the inode not yet flushed (0 if none), for a
        size that includes them."""
        return max(self.inline.written_end(inode),
                   max((lease.end for (i, _), lease in self._leases.items() if i == inode),
                       default=0))

    async def flush(self, caller: pb.Caller, inode: int) -> pb.Attr | None:
        """Commit every write made to the inode (close, or before fsync): the size and
        mtime change, and the writes are readable by every client. Raises the first
        failure of a write to the inode since the last flush. The file's attributes
        after the commit, when the master gave them (None: nothing was written, or the
        commit goes in the background)."""
        if self.inline.keeps(inode):
            try:
                attr = await self.inline.flush(inode)
                if attr is not None:
                    self._committed[inode] = attr
            except FsError as exc:
                if not refused_inline(exc):
                    raise
                await self._spill(caller, inode)    # the file got chunks meanwhile
        for key in [k for k in self._leases if k[0] == inode]:
            self._close(key, caller)
        running = [t for k, t in self._closing.items() if k[0] == inode]
        if running:
            await asyncio.wait(running)
        self._raise_failure(inode)
        return self._committed.pop(inode, None)

    async def fsync(self, caller: pb.Caller, inode: int) -> pb.Attr | None:
        """Make every write to the inode durable on every copy its storage class keeps,
        then commit (flush). Writes still kept by a lease are synced before their
        commit, so a copy that fails is replaced and written again; chunks committed
        earlier are synced where their commit put them. WriteFailedError (EIO) when
        a chunk cannot be made durable on every copy."""
        for key in [k for k in self._leases if k[0] == inode]:
            lease = self._leases.get(key)
            if lease is not None:
                try:
                    await lease.sync()
                except (WriteFailedError, FsError):
                    self._drop(lease)
                    raise
        attr = await self.flush(caller, inode)
        unsynced = self._unsynced.pop(inode, {})
        await asyncio.gather(*(self._sync(chunk, targets)
                               for chunk, targets in unsynced.values()))
        return attr

    def lease_hooks(self, begin, commit) -> None:
        """How leases begin new chunks and commit (see LeaseContext)."""
        self._ctx.begin, self._ctx.commit = begin, commit

    def opened_for_reading(self, inode: int, reply) -> None:
        """A read_open's answer: the inline bytes, or where chunk 0 is."""
        self.inline.learned_reply(inode, reply)
        if reply.HasField("chunk") and reply.locations:
            self.locations.put(inode, 0, from_reply(reply))

    async def _sync(self, chunk: pb.Chunk, targets: tuple[str, ...]) -> None:
        """SYNC a committed chunk on every copy it was written to. A copy that moved
        on (a newer version: another writer came after) needs none; any other
        failure means the bytes are not durable on every copy: WriteFailedError."""
        answers = await asyncio.gather(*(self.servers.call(t, "sync", chunk.id, chunk.version)
                                         for t in targets), return_exceptions=True)
        failed = [f"{t}: {a}" for t, a in zip(targets, answers, strict=True)
                  if isinstance(a, BaseException) and not _moved_on(a)]
        if failed:
            raise WriteFailedError(f"chunk {chunk.id} version {chunk.version} could not be "
                                   f"made durable on every copy ({'; '.join(failed)}); "
                                   "the chunk manager copies it again from the others")

    async def truncate_tail(self, caller: pb.Caller, inode: int, size: int) -> None:
        """Before a setattr shrinks the file to `size`: when `size` falls inside a chunk,
        cut that chunk there on every copy (TRUNCATE), so that a later extension reads
        zeros there."""
        self._forget_read_ahead(inode)
        await self.flush(caller, inode)
        self.inline.truncated(inode, size)      # inline bytes: the setattr cuts them
        index, cut = divmod(size, CHUNK_SIZE)
        self.locations.forget_from(inode, index + 1)   # the setattr removes them
        if cut == 0 or (await self.locations.get(caller, inode, index)).is_hole:
            return
        lease = await self._lease(caller, inode, index)
        try:
            await lease.cut(cut, size)
        except (WriteFailedError, FsError, ChunkRequestError, OSError):
            self._drop(lease)
            raise
        await self.flush(caller, inode)

    def invalidate(self, inode: int) -> None:
        """Forget where the inode's chunks are and what was read ahead (another client
        changed the file)."""
        self.locations.forget(inode)
        self._forget_read_ahead(inode)
        self.inline.forget(inode)

    def _forget_read_ahead(self, inode: int) -> None:
        if self.ahead is not None:
            self.ahead.forget(inode)

    async def close(self) -> None:
        """Commit what is still pending (failures are logged), then disconnect."""
        for inode in list(self.inline.kept_inodes()):
            try:
                await self.flush(self.inline.kept_caller(inode), inode)
            except Exception as exc:   # noqa: BLE001 (each file on its own)
                log.error("inode %d: written bytes were lost: %s", inode, exc)
        if self._ahead:
            await asyncio.wait(list(self._ahead.values()))
        for key in list(self._leases):
            self._close(key, None)
        if self._closing:
            await asyncio.wait(list(self._closing.values()))
        for inode, exc in self._failures.items():
            log.error("inode %d: written bytes were lost: %s", inode, exc)
        await self.servers.close()

    # -- leases -----------------------------------------------------------------------------
    async def _lease(self, caller: pb.Caller, inode: int, index: int) -> WriteLease:
        key = (inode, index)
        lease = self._leases.get(key)
        if lease is not None:
            lease.caller = caller
            return lease
        opening = self._opening.setdefault(key, asyncio.Lock())
        async with opening:
            lease = self._leases.get(key)
            if lease is None:
                await self._closed(key)
                lease = WriteLease(self._ctx, caller, inode, index)
                await lease.begin()
                self._leases[key] = lease
                if lease.inline_seen and index:   # chunk 0 takes the inline bytes first
                    zero = await self._lease(caller, inode, 0)
                    await zero.commit(caller)
        if not opening.locked():
            self._opening.pop(key, None)
        return lease

    def _begin_ahead(self, caller: pb.Caller, inode: int, index: int) -> None:
        key = (inode, index)
        if key in self._leases or key in self._opening or key in self._ahead:
            return

        async def begin() -> None:
            try:
                await self._lease(caller, inode, index)
            except (WriteFailedError, FsError, OSError) as exc:   # the write will retry
                log.info("inode %d: beginning chunk %d ahead failed: %s", inode, index, exc)
        self._ahead[key] = task = asyncio.create_task(begin())
        task.add_done_callback(lambda _t: self._ahead.pop(key, None))

    def _close(self, key: Key, caller: pb.Caller | None, sync: bool = False) -> None:
        """Commit the lease in the background and retire it; the next write to the chunk
        begins a new one once this is done. `sync`: then make it durable too (a chunk a
        sequential writer finished: the disks work while the next chunk is sent, and a
        later fsync finds little left to do)."""
        lease = self._leases.pop(key)
        self._closing[key] = task = asyncio.create_task(self._retire(lease, caller, sync))
        task.add_done_callback(lambda _t: self._closing.pop(key, None)
                               if self._closing.get(key) is task else None)

    async def _retire(self, lease: WriteLease, caller: pb.Caller | None, sync: bool) -> None:
        try:
            await lease.commit(caller)
        except (WriteFailedError, FsError, OSError) as exc:
            self._failures.setdefault(lease.inode, exc)
            lease.forget_pending()
            return
        if lease.attr is not None:
            self._committed[lease.inode] = lease.attr
        if lease.chunk is None:
            return
        self.locations.put(lease.inode, lease.index,
                           of_copies(lease.chunk, lease.targets, lease.storage_class))
        unsynced = self._unsynced.setdefault(lease.inode, {})
        if lease.synced:        # fsync synced it before the commit
            unsynced.pop(lease.chunk.id, None)
            return
        unsynced[lease.chunk.id] = (lease.chunk, lease.targets)
        if sync:
            try:
                await self._sync(lease.chunk, lease.targets)
            except WriteFailedError as exc:   # fsync tries again and reports it
                log.info("inode %d: syncing chunk %d behind the writer failed: %s",
                         lease.inode, lease.index, exc)
                return
            if unsynced.get(lease.chunk.id) == (lease.chunk, lease.targets):
                del unsynced[lease.chunk.id]

    async def _closed(self, key: Key) -> None:
        task = self._closing.get(key)
        if task is not None:
            await asyncio.wait([task])

    async def _commit_largest(self) -> None:
        if not self._leases:
            return
        lease = max(self._leases.values(), key=lambda lease: lease.pending_bytes)
        try:
            await lease.commit()
        except (WriteFailedError, FsError):
            self._drop(lease)
            raise

    def _drop(self, lease: WriteLease) -> None:
        lease.forget_pending()
        if self._leases.get((lease.inode, lease.index)) is lease:
            del self._leases[(lease.inode, lease.index)]

    def _raise_failure(self, inode: int) -> None:
        exc = self._failures.pop(inode, None)
        if exc is not None:
            raise exc


def _moved_on(answer: BaseException) -> bool:
    """A SYNC refused because the copy holds a newer version, or none any more."""
    return isinstance(answer, ChunkRequestError) and answer.status in (p.STALE, p.NOT_FOUND)
