"""The chunk data protocol on loopback: ranges, versions, damage, pipelined writes."""

import asyncio
import contextlib
import os

import pytest

from services.chunk import protocol as p
from services.chunk.data_client import ChunkClient, ChunkRequestError
from services.chunk.data_server import DataServer
from services.chunk.store import ChunkStore


class Servers:
    """n data servers on loopback; each records the damage and changes it reports."""

    def __init__(self, root, n):
        self.stores, self.servers, self.addresses = [], [], []
        self.damage: list[list[tuple[int, int, str]]] = [[] for _ in range(n)]
        self.changes: list[list[int]] = [[] for _ in range(n)]
        self.root, self.n = root, n

    async def __aenter__(self):
        for i in range(self.n):
            d = self.root / f"cs{i}"
            d.mkdir()
            store = ChunkStore([str(d)])
            server = DataServer(store, on_damage=lambda *d, i=i: self.damage[i].append(d),
                                on_change=self.changes[i].append)
            port = await server.start("127.0.0.1", 0)
            self.stores.append(store)
            self.servers.append(server)
            self.addresses.append(f"127.0.0.1:{port}")
        return self

    async def __aexit__(self, *exc):
        for server, store in zip(self.servers, self.stores, strict=True):
            await server.stop()
            store.close()


def test_ranges_round_trip_and_versions_are_checked(tmp_path):
    async def run():
        async with Servers(tmp_path, 1) as s:
            c = ChunkClient(s.addresses[0])
            await c.create(7, 1)
            data = os.urandom(300_000)
            await asyncio.gather(c.write(7, 1, 1000, data[:150_000]),
                                 c.write(7, 1, 151_000, data[150_000:]))
            assert await c.read(7, 1, 1000, 300_000) == data
            assert await c.read(7, 1, 0, 1000) == bytes(1000)        # a hole
            with pytest.raises(ChunkRequestError) as stale:
                await c.read(7, 2, 0, 10)
            assert stale.value.status == p.STALE
            await c.set_version(7, 1, 2)
            assert await c.read(7, 2, 1000, 10) == data[:10]
            with pytest.raises(ChunkRequestError) as missing:
                await c.read(8, 1, 0, 10)
            assert missing.value.status == p.NOT_FOUND
            await c.close()
    asyncio.run(run())


def test_a_pipelined_write_lands_on_every_copy(tmp_path):
    async def run():
        async with Servers(tmp_path, 3) as s:
            clients = [ChunkClient(a) for a in s.addresses]
            for c in clients:
                await c.create(1, 5)
            data = os.urandom(1 << 20)
            await clients[0].write(1, 5, 4096, data, chain=tuple(s.addresses[1:]))
            for c in clients:
                assert await c.read(1, 5, 4096, len(data)) == data
            await clients[2].set_version(1, 5, 6)   # the last copy moves on
            with pytest.raises(ChunkRequestError) as failed:
                await clients[0].write(1, 5, 0, b"x", chain=tuple(s.addresses[1:]))
            assert failed.value.status == p.FORWARD_FAILED
            for c in clients:
                await c.close()
    asyncio.run(run())


def test_a_damaged_block_is_reported_not_returned(tmp_path):
    async def run():
        async with Servers(tmp_path, 1) as s:
            c = ChunkClient(s.addresses[0])
            await c.create(3, 1)
            await c.write(3, 1, 0, b"y" * 200_000)
            [info] = list(s.stores[0].list())
            path = next(os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "cs0")
                        for f in fs if f.endswith(".mng"))
            with open(path, "r+b") as f:
                f.seek(16384 + 70_000)
                f.write(b"Z")
            s.stores[0].close()
            s.stores[0] = s.servers[0].store = ChunkStore([str(tmp_path / "cs0")])
            with pytest.raises(ChunkRequestError) as bad:
                await c.read(3, 1, 65536, 10)
            assert bad.value.status == p.CORRUPT and info.chunk_id == 3
            [(damaged, version, detail)] = s.damage[0]      # the master hears of it
            assert (damaged, version) == (3, 1) and "block 1" in detail
            assert await c.read(3, 1, 0, 10) == b"y" * 10      # other blocks still read
            await c.close()
    asyncio.run(run())


def test_a_peer_speaking_nonsense_is_disconnected_and_the_server_goes_on(tmp_path):
    async def run():
        async with Servers(tmp_path, 1) as s:
            host, _, port = s.addresses[0].rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET / HTTP/1.1\r\n\r\n" + bytes(64))
            await writer.drain()
            # closed on us (a reset if some of our bytes were still unread)
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(100), 5) == b""
            writer.close()
            c = ChunkClient(s.addresses[0])
            await c.create(9, 1)
            assert await c.read(9, 1, 0, 4) == bytes(4)
            await c.close()
    asyncio.run(run())


def test_sync_travels_the_chain_and_stat_tells_version_and_length(tmp_path):
    async def run():
        async with Servers(tmp_path, 3) as s:
            clients = [ChunkClient(a) for a in s.addresses]
            for c in clients:
                await c.create(4, 2)
            await clients[0].write(4, 2, 100, b"z" * 5000, chain=tuple(s.addresses[1:]))
            await clients[0].sync(4, 2, chain=tuple(s.addresses[1:]))
            for c in clients:
                assert await c.stat(4) == (2, 5100)
            await clients[2].set_version(4, 2, 3)   # the last copy moves on
            with pytest.raises(ChunkRequestError) as failed:
                await clients[0].sync(4, 2, chain=tuple(s.addresses[1:]))
            assert failed.value.status == p.FORWARD_FAILED
            with pytest.raises(ChunkRequestError) as stale:
                await clients[2].sync(4, 2)
            assert stale.value.status == p.STALE
            with pytest.raises(ChunkRequestError) as missing:
                await clients[0].stat(5)
            assert missing.value.status == p.NOT_FOUND
            for c in clients:
                await c.close()
    asyncio.run(run())


def test_creates_version_changes_and_deletes_are_reported_but_writes_are_not(tmp_path):
    async def run():
        async with Servers(tmp_path, 1) as s:
            c = ChunkClient(s.addresses[0])
            await c.create(6, 1)
            await c.write(6, 1, 0, b"data")
            await c.set_version(6, 1, 2)
            await c.delete(6)
            with pytest.raises(ChunkRequestError):
                await c.delete(6)                  # nothing changed: not reported
            assert s.changes[0] == [6, 6, 6]
            await c.close()
    asyncio.run(run())


def test_overlapping_writes_in_flight_land_in_the_order_they_were_sent(tmp_path):
    async def run():
        async with Servers(tmp_path, 2) as s:
            c = ChunkClient(s.addresses[0])
            await c.create(5, 1)
            await ChunkClient(s.addresses[1]).create(5, 1)
            chain = (s.addresses[1],)
            expected = bytearray(1 << 20)
            writes = []
            for i in range(200):            # every write overlaps the ones before it
                offset = (i * 7919) % (512 << 10)
                data = bytes([i % 251 + 1]) * (300 << 10)
                expected[offset:offset + len(data)] = data
                writes.append(asyncio.ensure_future(c.write(5, 1, offset, data, chain)))
            await asyncio.gather(*writes)
            await c.truncate(5, 1, 900 << 10, chain)
            del expected[900 << 10:]
            for address in s.addresses:
                copy = ChunkClient(address)
                assert await copy.read(5, 1, 0, len(expected)) == bytes(expected)
                assert await copy.stat(5) == (1, len(expected))
                await copy.close()
            await c.close()
    asyncio.run(run())
