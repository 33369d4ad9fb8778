"""What a chunkserver has made durable by the time it answers: a CREATE or SET_VERSION on
the data port, a job's copy, a store call with sync=True.

A power loss cannot be caused here, so every os.fsync and os.fdatasync is recorded with
what it made durable at that moment: for a chunk file the version in its header as
written, for a directory the names in it. What was recorded when the answer arrived is
what the answer can rely on."""

import asyncio
import os

import pytest

from schemas import chunkmaster_pb2 as pb
from services.chunk.data_client import ChunkClient
from services.chunk.data_server import DataServer
from services.chunk.errors import chunk_name
from services.chunk.header import HEADER_SIZE, HeaderError, pick
from services.chunk.jobs import JobRunner
from services.chunk.store import ChunkStore


class Syncs:
    """Every fsync/fdatasync since the last `clear()`, as (path, what it made durable)."""

    def __init__(self, monkeypatch):
        self.events: list[tuple[str, object]] = []
        for name in ("fsync", "fdatasync"):
            monkeypatch.setattr(os, name, self._recording(getattr(os, name)))

    def _recording(self, real):
        def call(fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.isdir(path):
                self.events.append((path, frozenset(os.listdir(path))))
            else:
                try:
                    version = pick(os.pread(fd, HEADER_SIZE, 0))[0].version
                except HeaderError:
                    version = None
                self.events.append((path, version))
            return real(fd)
        return call

    def clear(self) -> None:
        self.events.clear()

    def snapshot(self) -> list[tuple[str, object]]:
        return list(self.events)


def chunk_file(directory, chunk_id: int) -> str:
    return os.path.join(os.path.realpath(directory), f"{chunk_id & 0xff:02x}",
                        f"chunk_{chunk_name(chunk_id)}.mng")


def file_synced(events, path: str, version: int) -> bool:
    """The chunk file was synced with `version` in its header."""
    return (path, version) in events


def name_synced(events, path: str) -> bool:
    """`path`'s directory was synced with `path` in it."""
    directory, name = os.path.split(path)
    return any(p == directory and isinstance(names, frozenset) and name in names
               for p, names in events)


def on_a_data_server(tmp_path, test):
    async def run():
        directory = tmp_path / "cs"
        directory.mkdir()
        store = ChunkStore([str(directory)])
        server = DataServer(store)
        try:
            client = ChunkClient(f"127.0.0.1:{await server.start('127.0.0.1', 0)}")
            try:
                await test(client, directory)
            finally:
                await client.close()
        finally:
            await server.stop()
            store.close()
    asyncio.run(run())


def test_a_create_is_on_disk_with_its_directory_entries_before_the_data_port_answers(
        tmp_path, monkeypatch):
    syncs = Syncs(monkeypatch)

    async def test(client, directory):
        await client.create(0x1234, 3)
        answered = syncs.snapshot()
        path = chunk_file(directory, 0x1234)
        assert file_synced(answered, path, 3), answered
        assert name_synced(answered, path), answered              # in its subdirectory
        assert name_synced(answered, os.path.dirname(path)), answered   # the new subdirectory
    on_a_data_server(tmp_path, test)


def test_a_version_change_is_on_disk_before_the_data_port_answers(tmp_path, monkeypatch):
    syncs = Syncs(monkeypatch)

    async def test(client, directory):
        await client.create(0x1234, 3)
        await client.write(0x1234, 3, 0, b"committed bytes")
        syncs.clear()
        await client.set_version(0x1234, 3, 4)
        answered = syncs.snapshot()
        assert file_synced(answered, chunk_file(directory, 0x1234), 4), answered
        await client.set_version(0x1234, 4, 5)   # the other header copy, synced too
        assert file_synced(syncs.snapshot(), chunk_file(directory, 0x1234), 5)
        assert await client.read(0x1234, 5, 0, 15) == b"committed bytes"
    on_a_data_server(tmp_path, test)


def test_a_copy_made_by_a_job_is_on_disk_with_its_name_before_the_job_is_done(
        tmp_path, monkeypatch):
    syncs = Syncs(monkeypatch)
    data = os.urandom(300_000)

    async def run():
        stores, servers, addresses = [], [], []
        for name in ("source", "here"):
            (tmp_path / name).mkdir()
            stores.append(ChunkStore([str(tmp_path / name)]))
            servers.append(DataServer(stores[-1]))
            addresses.append(f"127.0.0.1:{await servers[-1].start('127.0.0.1', 0)}")
        try:
            stores[0].create(7, 3)
            stores[0].write(7, 3, 0, data)
            syncs.clear()
            done = await JobRunner(stores[1], addresses[1]).run(pb.Job(
                id=1, chunk=7, version=3, replicate=pb.Replicate(sources=[addresses[0]])))
            answered = syncs.snapshot()
            assert done.ok, done.message
            path = chunk_file(tmp_path / "here", 7)
            assert file_synced(answered, path, 3), answered
            assert name_synced(answered, path), answered
            assert name_synced(answered, os.path.dirname(path)), answered
        finally:
            for server, store in zip(servers, stores, strict=True):
                await server.stop()
                store.close()
    asyncio.run(run())


@pytest.fixture
def one_disk(tmp_path):
    directory = tmp_path / "disk"
    directory.mkdir()
    store = ChunkStore([str(directory)])
    yield store, directory
    store.close()


def test_a_synced_create_makes_its_subdirectory_durable_though_an_unsynced_one_made_it(
        one_disk, monkeypatch):
    store, directory = one_disk
    syncs = Syncs(monkeypatch)
    store.create(0x101, 1)                  # makes subdirectory 01, syncs nothing
    assert syncs.snapshot() == []
    store.create(0x201, 1, sync=True)       # same subdirectory
    path = chunk_file(directory, 0x201)
    assert file_synced(syncs.snapshot(), path, 1)
    assert name_synced(syncs.snapshot(), path)
    assert name_synced(syncs.snapshot(), os.path.dirname(path))


def test_syncing_a_chunk_created_without_sync_makes_its_name_durable_too(
        one_disk, monkeypatch):
    store, directory = one_disk
    syncs = Syncs(monkeypatch)
    store.create(5, 1)
    store.write(5, 1, 0, b"data")
    store.sync(5)
    path = chunk_file(directory, 5)
    assert file_synced(syncs.snapshot(), path, 1)
    assert name_synced(syncs.snapshot(), path)
    assert name_synced(syncs.snapshot(), os.path.dirname(path))
    syncs.clear()
    store.sync(5)                           # once is enough
    assert syncs.snapshot() == [(path, 1)]
