"""The chunk service as a whole: 3 metadata nodes, 4 chunkservers, the client data path.

Files are written with copies=2 and ec=2+1; a chunkserver is killed during reads
(reads go on), the manager restores the goal, a block is corrupted on disk (reads
stay correct, the scrubber reports it, the copy is replaced), and the chunks of a
deleted file are collected after the retention delay.
"""

import asyncio
import glob
import os
import signal
import time

import pytest

from fuse_client.chunk_io import ChunkIO
from fuse_client.metadata_client import MetadataClient
from mooseng import classes
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix.records import CHUNK_SIZE, ROOT_INO
from tests.integration.chunk_cluster import ChunkCluster
from tests.integration.metadata_cluster import MetadataCluster

ROOT = pb.Caller(uid=0, gid=0)
O_RDWR = 2
MASTER_FLAGS = ("--replicate-after", "1", "--chunk-quiet", "1", "--chunk-retention", "3")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunk-service")
    meta = MetadataCluster(root, extra_args=MASTER_FLAGS)
    chunks = ChunkCluster(root, list(meta.addresses.values()), n=4)
    try:
        meta.start_all()
        chunks.start_all()
        run(all_connected(list(meta.addresses.values()), 4))
        yield meta, chunks
    finally:
        chunks.stop_all()
        meta.stop_all()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def until(check, what: str, timeout: float = 40.0):
    """Poll `check` (async, returns a truthy value when done) until it is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def all_connected(masters: list[str], n: int) -> None:
    async with MetadataClient(masters) as md:
        async def connected():
            servers = (await classes.health(md)).servers
            return sum(s.connected for s in servers) == n
        await until(connected, f"{n} chunkservers to connect")


async def new_file(md: MetadataClient, name: bytes, storage_class: str) -> int:
    ino = (await md.mutate(ROOT, create=pb.Create(parent=ROOT_INO, name=name,
                                                  mode=0o644))).attr.inode
    await md.mutate(ROOT, set_class=pb.SetClass(inode=ino, storage_class=storage_class))
    await md.mutate(ROOT, open=pb.Open(inode=ino, flags=O_RDWR))
    return ino


async def locate(md: MetadataClient, ino: int, index: int) -> mpb.Reply:
    return await md.read(ROOT, locate_chunk=mpb.LocateChunk(inode=ino, chunk_index=index))


async def at_goal(md: MetadataClient, ino: int, index: int, copies: int = 0,
                  parts: int = 0, avoid: str = "") -> list[str] | None:
    """The chunk's servers once it has exactly `copies` copies and `parts` parts,
    none on `avoid`, and the manager reports nothing unhealthy."""
    reply = await locate(md, ino, index)
    held = [(loc.address, loc.part) for loc in reply.locations]
    have = (sum(1 for _, part in held if part == 0), sum(1 for _, part in held if part))
    health = await classes.health(md)
    ok = (have == (copies, parts) and all(a != avoid for a, _ in held)
          and health.settled and health.under_goal == health.missing == 0
          and health.over_goal == 0 and health.damaged == 0)
    return [a for a, _ in held] if ok else None


def server_index(chunks: ChunkCluster, address: str) -> int:
    return chunks.addresses.index(address)


def test_copies_survive_a_killed_chunkserver_and_get_back_to_their_goal(cluster):
    _meta, chunks = cluster
    data = os.urandom(3 << 20)
    start = CHUNK_SIZE - (1 << 20)           # spans chunks 0 and 1

    async def scenario():
        async with MetadataClient(list(_meta.addresses.values())) as md:
            io = ChunkIO(md)
            ino = await new_file(md, b"two-copies", "copies=2")
            await io.write(ROOT, ino, start, data)
            await io.flush(ROOT, ino)
            size = start + len(data)
            servers = await until(lambda: at_goal(md, ino, 1, copies=2), "two copies")
            victim = servers[0]

            async def keep_reading():
                for _ in range(30):
                    assert await io.read(ROOT, ino, start, len(data), size) == data
            reader = asyncio.create_task(keep_reading())
            await asyncio.sleep(0.05)
            chunks.kill(server_index(chunks, victim))
            await reader
            await until(lambda: at_goal(md, ino, 1, copies=2, avoid=victim),
                        "chunk 1 copied again without the dead server")
            assert await io.read(ROOT, ino, start, len(data), size) == data
            chunks.start(server_index(chunks, victim))   # it returns with an extra copy
            await until(lambda: at_goal(md, ino, 1, copies=2), "the surplus copy removed")
            await io.close()
    run(scenario())


def test_an_ec_file_is_converted_reads_through_a_lost_part_and_rebuilds_it(cluster):
    meta, chunks = cluster
    data = os.urandom((5 << 20) + 123)

    async def scenario():
        async with MetadataClient(list(meta.addresses.values())) as md:
            io = ChunkIO(md)
            ino = await new_file(md, b"erasure-coded", "ec=2+1")
            await io.write(ROOT, ino, 0, data)
            await io.flush(ROOT, ino)
            servers = await until(lambda: at_goal(md, ino, 0, parts=3),
                                  "three parts and no copies")
            assert len(set(servers)) == 3
            assert await io.read(ROOT, ino, 0, len(data), len(data)) == data
            victim = servers[0]
            chunks.kill(server_index(chunks, victim))
            io.invalidate(ino)
            assert await io.read(ROOT, ino, 0, len(data), len(data)) == data
            await until(lambda: at_goal(md, ino, 0, parts=3, avoid=victim),
                        "the lost part rebuilt elsewhere")
            chunks.start(server_index(chunks, victim))
            await until(lambda: at_goal(md, ino, 0, parts=3), "the stale part removed")
            io.invalidate(ino)
            assert await io.read(ROOT, ino, 0, len(data), len(data)) == data
            await io.close()
        # A writer that begins a write into the chunk and dies before writing leaves
        # every part a version behind: the master moves them on, the data stays.
        async with MetadataClient(list(meta.addresses.values())) as writer:
            await writer.mutate(ROOT, open=pb.Open(inode=ino, flags=O_RDWR))
            await writer.mutate(ROOT, begin_write=pb.BeginWrite(inode=ino, chunk_index=0))
        async with MetadataClient(list(meta.addresses.values())) as md:
            await until(lambda: at_goal(md, ino, 0, parts=3), "the parts moved on")
            io = ChunkIO(md)
            assert await io.read(ROOT, ino, 0, len(data), len(data)) == data
            await io.close()
    run(scenario())


def chunk_file(chunks: ChunkCluster, address: str, chunk_id: int) -> str:
    name = f"chunk_{chunk_id:016x}.mng"
    [path] = glob.glob(os.path.join(chunks.data_dir(server_index(chunks, address)), "*", name))
    return path


def test_a_corrupted_block_is_read_around_reported_and_replaced(cluster):
    meta, chunks = cluster
    data = os.urandom(1 << 20)

    async def scenario():
        async with MetadataClient(list(meta.addresses.values())) as md:
            io = ChunkIO(md)
            ino = await new_file(md, b"to-corrupt", "copies=2")
            await io.write(ROOT, ino, 0, data)
            await io.flush(ROOT, ino)
            servers = await until(lambda: at_goal(md, ino, 0, copies=2), "two copies")
            chunk = (await locate(md, ino, 0)).chunk
            path = chunk_file(chunks, servers[0], chunk.id)
            with open(path, "r+b") as f:       # flip one byte of the first block
                f.seek(16384 + 1000)
                byte = f.read(1)
                f.seek(16384 + 1000)
                f.write(bytes([byte[0] ^ 0xFF]))
            for _ in range(5):
                io.invalidate(ino)
                assert await io.read(ROOT, ino, 0, len(data), len(data)) == data

            async def reported():
                return (await classes.health(md)).damaged or not os.path.exists(path)
            await until(reported, "the scrubber to report the damaged copy")
            await until(lambda: at_goal(md, ino, 0, copies=2, avoid=servers[0]),
                        "the damaged copy replaced")
            io.invalidate(ino)
            assert await io.read(ROOT, ino, 0, len(data), len(data)) == data
            await io.close()
    run(scenario())


def test_the_chunks_of_a_deleted_file_are_collected_after_the_retention_delay(cluster):
    meta, chunks = cluster

    async def scenario():
        async with MetadataClient(list(meta.addresses.values())) as md:
            io = ChunkIO(md)
            ino = await new_file(md, b"short-lived", "copies=2")
            await io.write(ROOT, ino, 0, b"x" * 70_000)
            await io.flush(ROOT, ino)
            servers = await until(lambda: at_goal(md, ino, 0, copies=2), "two copies")
            chunk = (await locate(md, ino, 0)).chunk
            paths = [chunk_file(chunks, a, chunk.id) for a in servers]
            await md.mutate(ROOT, release=pb.Release(inode=ino))
            await md.mutate(ROOT, unlink=pb.Unlink(parent=ROOT_INO, name=b"short-lived"))
            await asyncio.sleep(1.0)
            assert all(os.path.exists(p) for p in paths)   # retained for now

            async def collected():
                return not any(os.path.exists(p) for p in paths)
            await until(collected, "the orphan copies deleted")
            await io.close()
    run(scenario())


def test_a_new_metadata_leader_relearns_the_copies_and_reads_go_on(cluster):
    meta, chunks = cluster
    data = os.urandom(2 << 20)
    leader = meta.wait_leader()["id"]

    async def scenario():
        async with MetadataClient(list(meta.addresses.values())) as md:
            io = ChunkIO(md)
            ino = await new_file(md, b"across-failover", "copies=2")
            await io.write(ROOT, ino, 0, data)
            await io.flush(ROOT, ino)
            await until(lambda: at_goal(md, ino, 0, copies=2), "two copies")
            meta.signal(leader, signal.SIGKILL)
            io.invalidate(ino)
            assert await io.read(ROOT, ino, 0, len(data), len(data)) == data
            more = os.urandom(1 << 20)       # a write at once: it waits, nothing is lost
            await io.write(ROOT, ino, 1 << 20, more)
            await io.flush(ROOT, ino)
            whole = data[:1 << 20] + more + data[2 << 20:]
            io.invalidate(ino)
            assert await io.read(ROOT, ino, 0, len(whole), len(whole)) == whole
            health = await until(_all_reconnected(md, len(chunks.procs)),
                                 "chunkservers reporting to the new leader")
            assert health.missing == 0
            await until(lambda: at_goal(md, ino, 0, copies=2), "the copies relearned")
            meta.start(leader)
            await io.close()
    run(scenario())


def _all_reconnected(md: MetadataClient, n: int):
    async def check():
        health = await classes.health(md)
        ok = sum(s.connected for s in health.servers) == n and health.settled
        return health if ok else None
    return check
