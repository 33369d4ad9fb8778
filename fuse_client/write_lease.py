"""One chunk of one file being written, from begin_write to commit_write.

The first write to a chunk begins the lease: begin_write bumps the chunk's version and
names the targets, which are made ready (write_targets). Every later write of the chunk
goes straight to the first target, chained to the others, at that version, with no
metadata call and many writes in flight. Two writes that overlap are never in flight
together, so every copy applies them in the same order.

A file whose bytes were kept inline (a small file that grew) moves them into chunk 0
first: begin_write's reply carries them, the lease writes them before anything else
(again at every new begin, from that begin's reply), and the commit names their
digest so that the master drops them only if they are still what was copied.

The bytes of every write not yet committed are kept. When a write fails anywhere along
the chain, or a server or the commit says the chunk moved on (STALE, ESTALE), the lease
begins again (the master offers targets that are up, at a new version) and sends those
writes again. commit_write, which makes the bytes part of the file, is sent only once
every target has acknowledged every write: a write is never reported done unless every
copy holds it.
"""

import asyncio
import errno
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

from fuse_client import write_targets
from fuse_client.chunk_locations import Located, LocationCache, of_copies
from fuse_client.chunk_reader import ChunkReader, LocationOutdatedError
from fuse_client.chunk_servers import ChunkServers
from fuse_client.data_errors import WriteFailedError
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.chunk import protocol as p
from services.chunk.data_client import ChunkRequestError
from services.common.posix.errors import FsError
from services.common.posix.inline_data import digest
from services.common.posix.records import CHUNK_SIZE

log = logging.getLogger(__name__)
# failures that a new begin_write (other targets, a new version) may cure
RETRYABLE = (ChunkRequestError, OSError, LocationOutdatedError)


class ByteBudget:
    """Bytes of writes in flight across a mount; a writer waits while it is spent (one
    write larger than the whole budget still goes, alone)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._room = asyncio.Event()

    async def take(self, n: int) -> None:
        while self.used and self.used + n > self.limit:
            self._room.clear()
            await self._room.wait()
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n
        self._room.set()


@dataclass
class LeaseContext:
    """What every lease of a mount shares."""
    metadata: object                 # MetadataClient
    servers: ChunkServers
    reader: ChunkReader
    locations: LocationCache
    budget: ByteBudget
    pending_limit: int = 64 << 20    # uncommitted bytes a lease keeps before it commits
    attempts: int = 8                # begin_writes tried before a write is given up
    pending_total: int = 0           # uncommitted bytes kept by all leases
    # (caller, CommitWrite) -> the file's attributes (None: committed in the
    # background); raises FsError. The mount commits files only it can reach yet in
    # the background (docs/consistency.md).
    commit: Callable[[pb.Caller, pb.CommitWrite], Awaitable[pb.Attr | None]] | None = None
    # (caller, inode, chunk index) -> a begin_write's answer made here for a new
    # chunk of such a file (None: ask the master)
    begin: Callable[[pb.Caller, int, int], mpb.Reply | None] | None = None

    async def send_commit(self, caller: pb.Caller, op: pb.CommitWrite) -> pb.Attr | None:
        if self.commit is not None:
            return await self.commit(caller, op)
        return (await self.metadata.mutate(caller, commit_write=op)).attr


class _Send(NamedTuple):
    start: int
    end: int
    task: asyncio.Task


class WriteLease:
    def __init__(self, ctx: LeaseContext, caller: pb.Caller, inode: int, index: int):
        self.ctx, self.caller, self.inode, self.index = ctx, caller, inode, index
        self.chunk: pb.Chunk | None = None
        self.targets: tuple[str, ...] = ()
        self.storage_class = ""
        self.end = 0              # the highest file offset written through this lease
        self.committed_end = 0
        self.pending_bytes = 0
        self._pending: list[tuple[int, bytes]] = []   # (offset in chunk, data) uncommitted
        self._sends: list[_Send] = []
        self._failure: BaseException | None = None
        self._lock = asyncio.Lock()
        self.inline_digest = b""      # of the inline bytes copied into chunk 0
        self.inline_seen = False      # the file's bytes were inline at the last begin
        self._base_len = 0            # how far copied inline bytes reach in chunk 0
        self.attr: pb.Attr | None = None   # the file's, as the last commit left it
        self.written_ns = 0           # when the last write was made (the file's mtime)
        self.synced = False           # every write so far is durable on every target

    def __repr__(self) -> str:
        return f"chunk {self.index} of inode {self.inode}"

    # -- what a mount calls ---------------------------------------------------------------
    async def begin(self) -> None:
        """begin_write and make the targets ready; WriteFailedError when no attempt
        could, FsError when the master refuses (file not open, too large...)."""
        async with self._lock:
            await self._renew()

    async def write(self, offset: int, data: bytes, extends: bool = True) -> None:
        """Send `data` to offset `offset` of the chunk; returns once it is on its way.
        `extends`: the file grows to cover it at commit (not for zeroing a cut tail)."""
        async with self._lock:
            if self._failure is not None:
                await self._settle()
            if self.pending_bytes + len(data) > self.ctx.pending_limit:
                await self._commit(self.caller)
            self._pending.append((offset, data))
            self.written_ns = time.time_ns()
            self.synced = False
            self.pending_bytes += len(data)
            self.ctx.pending_total += len(data)
            await self._send(offset, data)
            if extends:
                self.end = max(self.end, self.index * CHUNK_SIZE + offset + len(data))

    async def sync(self) -> None:
        """Every write of the lease is on every target and durable there (SYNC), before
        its commit: a target that fails is replaced as for a failed write (the lease
        begins again, the new target is filled, the kept writes are sent again)."""
        async with self._lock:
            for _attempt in range(self.ctx.attempts):
                await self._settle()
                answers = await asyncio.gather(*(
                    self.ctx.servers.call(t, "sync", self.chunk.id, self.chunk.version)
                    for t in self.targets), return_exceptions=True)
                failed = [a for a in answers if isinstance(a, BaseException)]
                if not failed:
                    self.synced = True
                    return
                log.info("%r: sync failed (%s); beginning the write again", self, failed[0])
                self._failure = failed[0]
            raise WriteFailedError(f"{self!r}: could not make the written bytes durable on "
                                   f"every copy in {self.ctx.attempts} attempts; last "
                                   f"failure: {self._failure}")

    async def commit(self, caller: pb.Caller | None = None) -> None:
        """Wait until every target holds every write, then commit_write."""
        async with self._lock:
            await self._commit(caller or self.caller)

    async def readable(self, offset: int, length: int) -> Located:
        """Where this client's latest bytes of [offset, offset + length) can be read."""
        async with self._lock:
            await self._wait_overlapping(offset, offset + length)
            if self._failure is not None:
                await self._settle()
            return of_copies(self.chunk, self.targets, self.storage_class)

    async def cut(self, length: int, file_end: int) -> None:
        """Cut the chunk to `length` bytes on every target (bytes past it read as zeros
        from then on), beginning again as often as writes would; the commit that
        follows records it (`file_end`: the file's size after the cut)."""
        async with self._lock:
            await self._settle()
            for attempt in range(self.ctx.attempts):
                try:
                    await self.ctx.servers.call(self.targets[0], "truncate", self.chunk.id,
                                                self.chunk.version, length,
                                                chain=self.targets[1:])
                    break
                except RETRYABLE as exc:
                    if attempt == self.ctx.attempts - 1:
                        raise WriteFailedError(f"{self!r}: could not cut the chunk to "
                                               f"{length} bytes: {exc}") from exc
                    self._failure = exc
                    await self._renew()
            self.end = max(self.end, file_end)   # commits even with no write pending

    def forget_pending(self) -> None:
        """The lease is dropped unfinished: its kept bytes no longer count."""
        self.ctx.pending_total -= self.pending_bytes
        self.pending_bytes, self._pending = 0, []

    # -- inside, with the lock held -------------------------------------------------------
    async def _commit(self, caller: pb.Caller) -> None:
        await self._settle()
        if not self._pending and self.end <= self.committed_end and not self.inline_digest:
            return
        for attempt in range(self.ctx.attempts):
            try:
                self.attr = await self.ctx.send_commit(caller, pb.CommitWrite(
                    inode=self.inode, chunk_index=self.index, chunk_id=self.chunk.id,
                    version=self.chunk.version, end=self.end,
                    inline_digest=self.inline_digest,
                    time_ns=self.written_ns or time.time_ns()))
                self.inline_digest = b""
                break
            except FsError as exc:
                if exc.errno != errno.ESTALE or attempt == self.ctx.attempts - 1:
                    raise
                log.info("%r: commit found the chunk changed (%s); writing again", self, exc)
                self._failure = exc
                await self._renew()
        self.committed_end = self.end
        self.forget_pending()

    async def _settle(self) -> None:
        """Every write sent is on every target (beginning again as often as needed)."""
        await self._drain()
        if self._failure is not None:
            await self._renew()

    async def _renew(self) -> None:
        """begin_write again and resend the uncommitted writes, until every target
        acknowledged them all; WriteFailedError after ctx.attempts tries."""
        for attempt in range(self.ctx.attempts):
            if attempt:
                await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))
            await self._drain()
            if self._failure is not None:
                log.info("%r: beginning the write again after: %s", self, self._failure)
            self._failure = None
            try:
                await self._begin()
                for offset, data in self._pending:
                    await self._send(offset, data)
                await self._drain()
            except RETRYABLE as exc:
                self._failure = exc
            if self._failure is None:
                return
        full = isinstance(self._failure, ChunkRequestError) and \
            self._failure.status == p.NO_SPACE
        raise WriteFailedError(
            f"{self!r}: could not store the written bytes on every copy in "
            f"{self.ctx.attempts} attempts; last failure: {self._failure}. "
            + ("The chunkservers are out of space: free some, or add chunkservers"
               if full else "Check the chunkservers (mooseng status)")
            + "; the bytes written since the last flush are lost",
            errno.ENOSPC if full else errno.EIO)

    async def _begin(self) -> None:
        reply = None
        if self.chunk is None and self.ctx.begin is not None:   # not a renewal
            reply = self.ctx.begin(self.caller, self.inode, self.index)
        if reply is None:
            reply = await self.ctx.metadata.mutate_reply(self.caller, begin_write=pb.BeginWrite(
                inode=self.inode, chunk_index=self.index))
        known = of_copies(self.chunk, self.targets) if self.chunk is not None else \
            self.ctx.locations.peek(self.inode, self.index)
        ready = await write_targets.prepare(self.ctx.servers, self.ctx.reader, reply, known)
        self.chunk, self.targets, self.storage_class = \
            ready.chunk, ready.targets, ready.storage_class
        self.inline_seen = reply.inline
        self.inline_digest = b""
        if reply.inline and self.index == 0:
            # the inline bytes first; past them, zeros over what an earlier copy wrote
            base = reply.data.ljust(self._base_len, b"\0")
            self._base_len = len(base)
            self.inline_digest = digest(reply.data)
            await self._send(0, base)

    async def _send(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        await self._wait_overlapping(offset, end)
        await self.ctx.budget.take(len(data))
        task = asyncio.create_task(self._deliver(self.chunk, self.targets, offset, data))
        send = _Send(offset, end, task)
        self._sends.append(send)
        task.add_done_callback(lambda _t: self._sends.remove(send))

    async def _deliver(self, chunk: pb.Chunk, targets: tuple[str, ...], offset: int,
                       data: bytes) -> None:
        try:
            await self.ctx.servers.call(targets[0], "write", chunk.id, chunk.version,
                                        offset, data, chain=targets[1:])
        except Exception as exc:   # noqa: BLE001 — any failure means: write it again
            if self._failure is None:
                self._failure = exc
            log.info("%r: a write along %s failed: %s", self, ",".join(targets), exc)
        finally:
            self.ctx.budget.give(len(data))

    async def _wait_overlapping(self, start: int, end: int) -> None:
        waiting = [s.task for s in self._sends if s.start < end and start < s.end]
        if waiting:
            await asyncio.wait(waiting)

    async def _drain(self) -> None:
        while self._sends:
            await asyncio.wait([s.task for s in self._sends])
