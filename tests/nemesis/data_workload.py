"""File data written while the faults happen, and read back byte for byte after healing.

Each data client is what a mount holds: a MetadataClient (its own session) and a
ChunkIO over it (fuse_client/chunk_io.py), driven as the mount's operations drive
them. It writes new files, one after another, each with random content of a size
chosen by its seeded generator:

- small, 1 B to 64 KiB (log-uniform, and now and then exactly 64 KiB): kept inline
  in the metadata log (docs/consistency.md, "Small files");
- just past 64 KiB, and 100 KiB to 3 MiB (log-uniform): through chunks, two copies
  (the metadata nodes' default class copies=2).

A file is created and opened in one command, written in one to four pieces (in
order, or shuffled: a piece may land past a gap another fills later, and a small
first piece kept inline spills to chunk 0 when a later one goes past 64 KiB), then
closed (flush, then a deferred release, as the mount's close does) or fsynced and
closed. Its content counts as acknowledged once the flush or fsync returned: the
durability contract promises it from then on, across the crash of one chunkserver
process or of any metadata node. A file whose create, a write, the flush or the fsync
ended in anything but success (the client's deadline, EIO, a chunkserver that did not
answer, ENOSPC) has an unknown outcome and is not checked.

After healing, `verify` waits for the chunkservers to report and the chunk manager
to settle, then reads every acknowledged file back through a fresh client (lookup,
an open for reading, reads), compares it byte for byte, and asks the leader where
each of its chunks is: a chunk with no copy at its current version is missing.
"""

import asyncio
import contextlib
import errno
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field

from fuse_client.chunk_io import ChunkIO
from fuse_client.metadata_client import ClusterUnavailableError, MetadataClient
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError
from services.common.posix.records import CHUNK_SIZE, INLINE_MAX
from services.common.posix.records import ROOT_INO as ROOT
from tests.integration.byte_diff import differs

log = logging.getLogger(__name__)
ROOT_CALLER = pb.Caller(uid=0, gid=0)
DEADLINE_S = 5.0         # a metadata request is given up after this (but see DataClient)
BIG_MIN, BIG_MAX = 100 << 10, 3 << 20
# Past this many bytes begun (the chunkservers' and nodes' tmpfs disks are bounded),
# new files are tiny: a long run goes on exercising every path but the disks' limits.
BUDGET = 600 << 20
COPIES = 2               # the default class (cluster.CHUNK_ARGS)
# What the mount answers with an errno (fuse_client/fuse_errors.py); anything else
# is a bug in the client library, counted apart.
EXPECTED = (FsError, ClusterUnavailableError, OSError)


@dataclass
class DataRecord:
    acked: dict[bytes, bytes] = field(default_factory=dict)   # name -> content
    fsynced: set[bytes] = field(default_factory=set)
    unknown: set[bytes] = field(default_factory=set)
    errors: dict[str, int] = field(default_factory=dict)      # why, for unknown outcomes
    acks: list[float] = field(default_factory=list)           # when files were acknowledged
    begun_bytes: int = 0


async def set_up(masters: list[str], chunkservers: int, timeout: float = 30.0) -> int:
    """Make the directory the data clients write in, once the chunkservers reported to
    the leader; its inode."""
    async with MetadataClient(masters, name="nemesis-data-setup", deadline_s=60) as md:
        await wait_health(md, lambda h: connected(h) >= chunkservers, timeout,
                          "the chunkservers registering")
        made = await md.mutate(ROOT_CALLER, mkdir=pb.Mkdir(parent=ROOT, name=b"data",
                                                          mode=0o755))
        return made.attr.inode


def connected(health: mpb.Health) -> int:
    return sum(s.connected for s in health.servers)


async def wait_health(md: MetadataClient, ready, timeout: float, what: str) -> mpb.Health:
    deadline, health = time.monotonic() + timeout, None
    while True:
        with contextlib.suppress(*EXPECTED):     # a fault may be on already: ask again
            health = (await md.read(ROOT_CALLER, chunk_health=mpb.ChunkHealth())).health
        if health is not None and ready(health):
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s: {health}")
        await asyncio.sleep(0.2)


def size_of(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.05:
        return INLINE_MAX                                    # the largest inline file
    if roll < 0.45:
        return max(1, int(2 ** rng.uniform(0, math.log2(INLINE_MAX))))
    if roll < 0.55:
        return INLINE_MAX + rng.randint(1, 8 << 10)          # just too big for inline
    return int(2 ** rng.uniform(math.log2(BIG_MIN), math.log2(BIG_MAX)))


def pieces_of(rng: random.Random, size: int) -> list[tuple[int, int]]:
    """(offset, length) pieces covering [0, size), in the order to write them."""
    cuts = sorted(rng.sample(range(1, size), min(rng.randrange(4), size - 1)))
    bounds = [0, *cuts, size]
    pieces = [(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]
    if rng.random() < 0.3:
        rng.shuffle(pieces)
    return pieces


class DataClient:
    def __init__(self, number: int, masters: list[str], directory: int, seed: int,
                 record: DataRecord, clock):
        self.number, self.masters, self.directory = number, masters, directory
        # client 0 waits as long as a mount (60 s) and sees its files through the
        # faults; the others give up after 5 s, as the metadata clients, and leave
        # writes half done
        self.deadline_s = 60.0 if number == 0 else DEADLINE_S
        self.rng = random.Random(seed * 1000 + 500 + number)
        self.record, self.clock = record, clock
        self.files = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with MetadataClient(self.masters, name=f"nemesis-data-{self.number}",
                                  deadline_s=self.deadline_s) as md:
            # A new leader sends no writer anywhere for its first 5 s (begin_write asks
            # the client to retry): the first file waits for that, not the other clients.
            await wait_health(md, lambda h: h.writable, 30, "the leader taking writers")
            io = ChunkIO(md)
            try:
                while not stop.is_set():
                    await self._one(md, io)
                    await asyncio.sleep(self.rng.uniform(0.01, 0.05))
            finally:
                await io.close()

    async def _one(self, md: MetadataClient, io: ChunkIO) -> None:
        self.files += 1
        name = b"%d-%d" % (self.number, self.files)
        size = size_of(self.rng) if self.record.begun_bytes < BUDGET \
            else self.rng.randint(1, 1024)
        self.record.begun_bytes += size
        content = self.rng.randbytes(size)
        pieces = pieces_of(self.rng, size)
        fsync = self.rng.random() < 0.3
        self.record.unknown.add(name)    # until it is acknowledged
        try:
            inode = await self._write(md, io, name, content, pieces, fsync)
        except EXPECTED as exc:
            self._failed(exc)
            return
        except Exception as exc:   # noqa: BLE001 (the mount answers EIO; counted apart)
            log.exception("data client %d: %s failed unexpectedly", self.number, name)
            self._failed(exc, unexpected=True)
            return
        self.record.unknown.discard(name)
        self.record.acked[name] = content
        if fsync:
            self.record.fsynced.add(name)
        self.record.acks.append(self.clock())
        # close(2) returned: the release rides with a later request, as the mount's
        md.mutate_deferred(ROOT_CALLER, release=pb.Release(inode=inode))

    async def _write(self, md: MetadataClient, io: ChunkIO, name: bytes, content: bytes,
                     pieces: list[tuple[int, int]], fsync: bool) -> int:
        made = await md.mutate(ROOT_CALLER, create=pb.Create(
            parent=self.directory, name=name, mode=0o100644, exclusive=True, open=True,
            open_flags=os.O_RDWR))
        inode = made.attr.inode
        io.inline.created(inode)        # a new, empty file (as the mount's create)
        for offset, length in pieces:
            await io.write(ROOT_CALLER, inode, offset, content[offset:offset + length])
        if fsync:
            await io.fsync(ROOT_CALLER, inode)
        else:
            await io.flush(ROOT_CALLER, inode)
        return inode

    def _failed(self, exc: BaseException, unexpected: bool = False) -> None:
        why = errno.errorcode.get(exc.errno, str(exc.errno)) \
            if isinstance(exc, FsError) else type(exc).__name__
        if unexpected:
            why = f"unexpected {why}"
        self.record.errors[why] = self.record.errors.get(why, 0) + 1


async def verify(masters: list[str], directory: int, record: DataRecord,
                 chunkservers: int, settle_s: float = 20.0) -> dict:
    """Read every acknowledged file back through a fresh client and compare; find its
    chunks' copies; the leader's chunk health once settled (or after `settle_s`)."""
    async with MetadataClient(masters, name="nemesis-data-check", deadline_s=30) as md:
        health = await _settled(md, chunkservers, settle_s)
        io = ChunkIO(md, retry_s=10.0)
        problems: list[str] = []
        missing_chunks = under_goal = checked = checked_bytes = 0
        try:
            for name in sorted(record.acked):
                want = record.acked[name]
                problem, chunks = await _check(md, io, directory, name, want)
                checked += 1
                checked_bytes += len(want)
                if problem:
                    problems.append(f"{name.decode()}: {problem}")
                # no copy at the chunk's version, or a hole where bytes were written
                missing_chunks += sum(not c for c in chunks)
                under_goal += sum(0 < (c or 0) < COPIES for c in chunks)
            present = await _names(md, directory)
            unknown = await _unknown_files(md, directory, present & record.unknown)
        finally:
            await io.close()
    return {
        "files": {"acknowledged": len(record.acked), "fsynced": len(record.fsynced),
                  "unknown": len(record.unknown), "checked": checked,
                  "bytes_checked": checked_bytes},
        "errors": record.errors,
        "mismatches": len(problems),
        "mismatched": problems[:10],
        "phantom_files": len(present - set(record.acked) - record.unknown),
        "chunks_missing": missing_chunks,        # chunks of acknowledged files
        "chunks_under_goal": under_goal,
        "unknown_files": unknown,
        "chunk_health": {k: getattr(health, k) for k in (
            "chunks", "healthy", "under_goal", "missing", "over_goal", "damaged", "jobs",
            "settled")} | {"servers_connected": connected(health)},
    }


async def _settled(md: MetadataClient, chunkservers: int, timeout: float) -> mpb.Health:
    """The chunk health once every chunkserver reports and every chunk is at its goal
    with no job running, or as it is after `timeout`."""
    try:
        return await wait_health(
            md, lambda h: connected(h) >= chunkservers and h.settled and not h.jobs
            and not h.under_goal, timeout, "the chunks settling")
    except AssertionError:
        return (await md.read(ROOT_CALLER, chunk_health=mpb.ChunkHealth())).health


async def _check(md: MetadataClient, io: ChunkIO, directory: int, name: bytes,
                 want: bytes) -> tuple[str, list[int | None]]:
    """What is wrong with the file (empty: nothing), and its chunks' copies."""
    try:
        attr = (await md.read(ROOT_CALLER, lookup=mpb.Lookup(parent=directory,
                                                             name=name))).attr
    except FsError as exc:
        if exc.errno == errno.ENOENT:
            return "missing", []
        raise
    reply = await md.read(ROOT_CALLER, read_open=mpb.ReadOpen(inode=attr.inode,
                                                             flags=os.O_RDONLY))
    io.opened_for_reading(attr.inode, reply)
    size = reply.attr.size
    chunks = [] if reply.inline else await _copies(md, attr.inode, size)
    try:
        got = await io.read(ROOT_CALLER, attr.inode, 0, size, size) if size else b""
    except OSError as exc:
        return f"unreadable ({len(want)} bytes acknowledged): {exc}", chunks
    return differs(got, want), chunks


async def _copies(md: MetadataClient, inode: int, size: int) -> list[int | None]:
    """For each chunk of the file, the copies the leader knows at its version (None:
    a hole)."""
    counts = []
    for index in range(-(-size // CHUNK_SIZE)):
        reply = await md.read(ROOT_CALLER, locate_chunk=mpb.LocateChunk(
            inode=inode, chunk_index=index))
        if reply.inline:
            break
        if not reply.HasField("chunk"):
            counts.append(None)   # a hole
            continue
        counts.append(sum(loc.version == reply.chunk.version and not loc.part
                          for loc in reply.locations))
    return counts


async def _unknown_files(md: MetadataClient, directory: int, names: set[bytes]) -> dict:
    """The files with an unknown outcome that exist: how many, how many refer to a
    chunk no server holds (a write begun and given up), and a few of them with their
    sizes and the copies of their chunks."""
    found = {}
    for name in sorted(names):
        attr = (await md.read(ROOT_CALLER, lookup=mpb.Lookup(parent=directory,
                                                             name=name))).attr
        found[name.decode()] = {"size": attr.size,
                                "copies": await _copies(md, attr.inode, max(attr.size, 1))}
    return {"present": len(found),
            "chunk_with_no_copy": sum(0 in f["copies"] for f in found.values()),
            "some": dict(list(found.items())[:4])}


async def _names(md: MetadataClient, directory: int) -> set[bytes]:
    names, cookie = set(), 0
    while True:
        reply = await md.read(ROOT_CALLER, readdir=mpb.Readdir(
            inode=directory, cookie=cookie, limit=1000, names_only=True))
        entries = [e for e in reply.entries if e.name not in (b".", b"..")]
        names.update(e.name for e in entries)
        if not reply.entries:
            return names
        cookie = reply.entries[-1].cookie


