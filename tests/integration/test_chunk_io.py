"""The client data path against real processes: 3 metadata nodes and 4 chunkservers.

What a user of a mount would notice: the bytes read back are the bytes written (across
chunk boundaries, by this mount and by another), holes read as zeros, reads go on when
a chunkserver dies, an erasure-coded file reads back after the master converted it,
and a file cut short and extended again reads zeros in the gap.
"""

import asyncio
import os
import random
import subprocess
import sys
import time

import pytest

from fuse_client.chunk_io import ChunkIO
from fuse_client.data_errors import DataUnavailableError
from fuse_client.metadata_client import MetadataClient
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix.records import CHUNK_SIZE
from tests.integration.byte_diff import differs
from tests.integration.chunk_cluster import ChunkCluster
from tests.integration.metadata_cluster import MetadataCluster

ROOT = pb.Caller(uid=0, gid=0)
MiB = 1 << 20


@pytest.fixture
def cluster(tmp_path):
    md = MetadataCluster(tmp_path, n=3)
    cs = ChunkCluster(tmp_path, list(md.addresses.values()), n=4)
    try:
        md.start_all()
        md.wait_leader()
        cs.start_all()
        yield md, cs
    finally:
        cs.stop_all()
        md.stop_all()


class Mount:
    """What a FUSE mount holds: a metadata session and a ChunkIO over it."""

    def __init__(self, md: MetadataCluster):
        self.client = MetadataClient(list(md.addresses.values()), name="test-mount")
        self.io: ChunkIO | None = None

    async def __aenter__(self) -> "Mount":
        await self.client.open()
        self.io = ChunkIO(self.client, retry_s=5.0)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.io.close()
        await self.client.close()

    async def create(self, name: bytes, storage_class: str = "") -> int:
        inode = (await self.client.mutate(ROOT, create=pb.Create(
            parent=1, name=name, mode=0o644))).attr.inode
        if storage_class:
            await self.client.mutate(ROOT, set_class=pb.SetClass(
                inode=inode, storage_class=storage_class))
        await self.open(inode)
        return inode

    async def open(self, inode: int) -> None:
        await self.client.mutate(ROOT, open=pb.Open(inode=inode, flags=os.O_RDWR))

    async def size(self, inode: int) -> int:
        return (await self.client.read(ROOT, getattr=mpb.Getattr(inode=inode))).attr.size

    async def read(self, inode: int, offset: int, length: int) -> bytes:
        return await self.io.read(ROOT, inode, offset, length, await self.size(inode))

    async def locate(self, inode: int, index: int) -> mpb.Reply:
        return await self.client.read(ROOT, locate_chunk=mpb.LocateChunk(
            inode=inode, chunk_index=index))

    async def wait_servers(self, n: int, timeout: float = 30.0) -> None:
        await self._wait(lambda h: sum(s.connected for s in h.servers) >= n, timeout,
                         f"{n} chunkservers connected")

    async def _wait(self, ready, timeout: float, what: str) -> mpb.Health:
        deadline = time.monotonic() + timeout
        while True:
            health = (await self.client.read(ROOT, chunk_health=mpb.ChunkHealth())).health
            if ready(health):
                return health
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not happen in {timeout} s: {health}")
            await asyncio.sleep(0.2)


class SparseModel:
    """The expected contents of a file: a bytearray grown as written."""

    def __init__(self):
        self.data = bytearray()

    def write(self, offset: int, data: bytes) -> None:
        if len(self.data) < offset + len(data):
            self.data.extend(bytes(offset + len(data) - len(self.data)))
        self.data[offset:offset + len(data)] = data

    def truncate(self, size: int) -> None:
        del self.data[size:]

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.data[offset:offset + length])


def same(got: bytes, want) -> None:
    problem = differs(got, bytes(want))
    assert not problem, problem


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 240))


def test_bytes_read_back_across_chunk_boundaries_and_holes_read_as_zeros(cluster):
    md, _cs = cluster
    rnd = random.Random(7)
    # writes around the 0|1 and 3|4 chunk boundaries; chunk 2 stays a hole
    regions = [(CHUNK_SIZE - 2 * MiB, 4 * MiB), (4 * CHUNK_SIZE - 2 * MiB, 4 * MiB)]

    async def scenario():
        model = SparseModel()
        async with Mount(md) as m:
            await m.wait_servers(4)
            inode = await m.create(b"sparse")
            for _ in range(60):
                start, span = rnd.choice(regions)
                offset, length = start + rnd.randrange(span), rnd.randrange(1, 600_000)
                data = rnd.randbytes(length)
                model.write(offset, data)
                assert await m.io.write(ROOT, inode, offset, data) == offset + length
            end = len(model.data)
            # this mount sees its own writes before they are flushed
            for start, span in regions:
                assert await m.io.read(ROOT, inode, start, span, end) == \
                    model.read(start, span)
            await m.io.flush(ROOT, inode)
            assert await m.size(inode) == end

        async with Mount(md) as other:      # another mount, after the flush
            assert not (await other.locate(inode, 2)).HasField("chunk")   # a real hole
            hole = await other.read(inode, 2 * CHUNK_SIZE + 5 * MiB, MiB)
            assert hole == bytes(MiB)
            for _ in range(30):
                start, span = rnd.choice(regions)
                offset = start + rnd.randrange(-MiB, span)
                length = rnd.randrange(1, 3 * MiB)
                same(await other.read(inode, offset, length), model.read(offset, length))
            across = CHUNK_SIZE + 60 * MiB, CHUNK_SIZE + 10 * MiB   # chunk 1 into the hole
            same(await other.read(inode, *across), model.read(*across))
            same(await other.read(inode, end - 10, 100), model.read(end - 10, 10))
    run(scenario())


def test_a_read_survives_a_dead_copy_and_writes_go_on(cluster):
    md, cs = cluster

    async def scenario():
        model = SparseModel()
        async with Mount(md) as m:
            await m.wait_servers(4)
            inode = await m.create(b"two-copies")
            data = os.urandom(3 * MiB)
            model.write(MiB, data)
            await m.io.write(ROOT, inode, MiB, data)
            await m.io.flush(ROOT, inode)
            holders = {loc.address for loc in (await m.locate(inode, 0)).locations}
            first = m.io.locations.peek(inode, 0).copies[0].address   # read first
            assert len(holders) == 2 and first in holders
            cs.kill(cs.addresses.index(first))
            # the writer tries the dead copy first; a new mount asks the master
            same(await m.read(inode, 0, 5 * MiB), model.read(0, 5 * MiB))
            async with Mount(md) as other:
                same(await other.read(inode, 0, 5 * MiB), model.read(0, 5 * MiB))
            more = os.urandom(MiB)
            model.write(2 * MiB + 17, more)
            await m.io.write(ROOT, inode, 2 * MiB + 17, more)
            await m.io.flush(ROOT, inode)
        async with Mount(md) as other:
            same(await other.read(inode, 0, 5 * MiB), model.read(0, 5 * MiB))
    run(scenario())


def test_an_erasure_coded_file_reads_back_once_converted(cluster):
    md, cs = cluster

    async def scenario():
        model = SparseModel()
        async with Mount(md) as m:
            await m.wait_servers(4)
            inode = await m.create(b"coded", storage_class="ec=2+1")
            data = os.urandom(5 * MiB)
            model.write(CHUNK_SIZE - 2 * MiB, data)     # chunks 0 and 1
            await m.io.write(ROOT, inode, CHUNK_SIZE - 2 * MiB, data)
            await m.io.flush(ROOT, inode)

            async def converted() -> list[mpb.Reply]:
                replies = [await m.locate(inode, i) for i in (0, 1)]
                return replies if all(
                    not [loc for loc in r.locations if loc.part == 0]
                    and len({loc.part for loc in r.locations}) == 3 for r in replies) \
                    else None
            deadline = time.monotonic() + 90
            while (located := await converted()) is None:
                assert time.monotonic() < deadline, "the master did not convert to ec=2+1"
                await asyncio.sleep(0.5)

        async with Mount(md) as reader:
            size = len(model.data)
            same(await reader.read(inode, 0, size), model.data)
            for k in range(50):   # small sequential reads: one decode per chunk
                offset = CHUNK_SIZE + k * 10_000
                same(await reader.read(inode, offset, 10_000), model.read(offset, 10_000))
            assert reader.io.decoded.decodes == 2
            # one part lost: any two of three still give the chunk back
            dead = next(loc.address for loc in located[1].locations if loc.part == 1)
            cs.kill(cs.addresses.index(dead))
        async with Mount(md) as reader:
            assert await reader.read(inode, CHUNK_SIZE, 3 * MiB) == \
                model.read(CHUNK_SIZE, 3 * MiB)
            # writing into a chunk held only as parts keeps its old bytes around the new
            await reader.open(inode)
            patch = os.urandom(100_000)
            model.write(CHUNK_SIZE + 500_000, patch)
            await reader.io.write(ROOT, inode, CHUNK_SIZE + 500_000, patch)
            await reader.io.flush(ROOT, inode)
        async with Mount(md) as other:
            same(await other.read(inode, 0, len(model.data)), model.data)
        # Parts take no other shape: a walk keeps the file as it is and goes on.
        walk = await asyncio.to_thread(mooseng_class, md, "set", "-r", "/", "ec=4+2")
        assert walk.returncode == 0, walk.stderr
        assert "/coded: kept its class" in walk.stderr and "1 file(s) kept" in walk.stdout
        # Back to copies: the master decodes the parts into copies, then drops them.
        back = await asyncio.to_thread(mooseng_class, md, "set", "/coded", "copies=2")
        assert back.returncode == 0, back.stderr

        async def decoded() -> bool:
            replies = [await m.locate(inode, i) for i in (0, 1)]
            return all(sorted(loc.part for loc in r.locations) == [0, 0] for r in replies)
        async with Mount(md) as m:
            deadline = time.monotonic() + 90
            while not await decoded():
                assert time.monotonic() < deadline, "the parts were not decoded into copies"
                await asyncio.sleep(0.5)
        async with Mount(md) as other:
            same(await other.read(inode, 0, len(model.data)), model.data)
            assert other.io.decoded.decodes == 0
    run(scenario())


def mooseng_class(md: MetadataCluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mooseng", "class", *args[:1], "--masters",
                           ",".join(md.addresses.values()), *args[1:]],
                          capture_output=True, text=True, timeout=60)


def test_a_cut_file_extended_again_reads_zeros_in_the_gap(cluster):
    md, _cs = cluster

    async def scenario():
        model = SparseModel()
        async with Mount(md) as m:
            await m.wait_servers(4)
            inode = await m.create(b"cut")
            data = os.urandom(6 * MiB)
            model.write(CHUNK_SIZE - 3 * MiB, data)      # ends 3 MiB into chunk 1
            await m.io.write(ROOT, inode, CHUNK_SIZE - 3 * MiB, data)
            await m.io.flush(ROOT, inode)
            for size in (CHUNK_SIZE + 1000, CHUNK_SIZE - MiB):   # inside, then before chunk 1
                await m.io.truncate_tail(ROOT, inode, size)
                await m.client.mutate(ROOT, setattr=pb.Setattr(inode=inode, size=size))
                model.truncate(size)
                assert await m.size(inode) == size
                tail = b"end of file"
                far = CHUNK_SIZE + 4 * MiB
                model.write(far, tail)
                await m.io.write(ROOT, inode, far, tail)
                await m.io.flush(ROOT, inode)
                same(await m.read(inode, 0, far + 100), model.data)
                async with Mount(md) as other:
                    same(await other.read(inode, 0, far + 100), model.data)
                    gap = await other.read(inode, size, far - size)
                    assert gap == bytes(far - size)
    run(scenario())


def test_a_sequential_reader_sees_writes_made_inside_what_it_read_ahead(cluster):
    md, _cs = cluster

    async def scenario():
        model = SparseModel()
        async with Mount(md) as m:
            await m.wait_servers(4)
            inode = await m.create(b"read-ahead")
            data = os.urandom(12 * MiB)
            model.write(CHUNK_SIZE - 6 * MiB, data)        # chunks 0 and 1
            await m.io.write(ROOT, inode, CHUNK_SIZE - 6 * MiB, data)
            await m.io.flush(ROOT, inode)
            size = len(model.data)
            step, offset = 300_000, CHUNK_SIZE - 7 * MiB
            while offset < CHUNK_SIZE - 5 * MiB:     # sequential: the window fills ahead
                assert await m.io.read(ROOT, inode, offset, step, size) == \
                    model.read(offset, step)
                offset += step
            patch = b"new bytes" * 1000
            model.write(offset + 2 * MiB, patch)     # inside the window read ahead
            await m.io.write(ROOT, inode, offset + 2 * MiB, patch)
            while offset < size:
                assert await m.io.read(ROOT, inode, offset, step, size) == \
                    model.read(offset, step)
                offset += step
    run(scenario())


def test_a_write_given_up_before_any_copy_leaves_the_hole_reading_zeros(cluster):
    """A writer begins a chunk in a hole of a file (the master names its servers) and
    goes away before it creates a copy (its mount died, its deadline passed). Nothing
    was committed, so once the chunk's quiet time has passed (readers are sent to the
    writer's servers until then) the hole reads as zeros again, and the chunk does not
    count as missing (it did for ever: reads failed with EIO and `mooseng chunks`
    exited 1; found by the nemesis suite)."""
    md, _cs = cluster

    async def scenario():
        async with Mount(md) as m:
            await m.wait_servers(4)
            inode = await m.create(b"sparse")
            await m.client.mutate(ROOT, setattr=pb.Setattr(inode=inode, size=MiB))
            await m.client.mutate_reply(ROOT, begin_write=pb.BeginWrite(
                inode=inode, chunk_index=0))           # ... and nothing more
        async with Mount(md) as other:
            await other._wait(lambda h: h.settled and not h.jobs and not h.missing
                              and not h.under_goal, 40, "the chunk counted as a hole")
            deadline = time.monotonic() + 30      # the quiet time is 10 s
            while True:
                try:
                    got = await other.read(inode, 0, 4096)
                    break
                except DataUnavailableError:
                    assert time.monotonic() < deadline, "the hole never read again"
            assert got == bytes(4096)
    run(scenario())
