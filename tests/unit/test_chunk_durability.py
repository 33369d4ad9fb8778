"""What a chunk store has made durable when a call with sync=True returns.

A power loss cannot be caused here, so every os.fsync and os.fdatasync is recorded with
what it made durable at that moment: for a chunk file the version in its header as
written, for a directory the names in it. What was recorded when the answer arrived is
what the answer can rely on."""

import os

import pytest

from services.chunk.errors import chunk_name
from services.chunk.header import HEADER_SIZE, HeaderError, pick
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
