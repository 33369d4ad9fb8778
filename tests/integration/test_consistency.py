"""docs/consistency.md, line by line, on a real cluster with two mounts and real kills.

- close-to-open: what one mount closed, the other reads at its next open, for small
  files (kept inline) and big ones (chunks), made in a directory the writer holds
  (committed in the background) or not (committed before close returns);
- a file open for reading on one mount stays readable when the other removes it;
- a directory listing the kernel caches follows the other mount's changes;
- a mount SIGKILLed after close loses nothing of a file it did not make itself, and
  after fsync loses nothing at all, small or big;
- fsync makes the bytes durable on every copy: a copy whose chunkserver died while
  the file was written is replaced before fsync returns, so the chunk is on as many
  live servers as its class asks (copies=2);
- a chunkserver killed after close costs no byte.
"""

import asyncio
import contextlib
import os
import signal

import pytest

from fuse_client.metadata_client import MetadataClient
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from tests.integration import mount_fixture
from tests.integration.mount_fixture import (
    mount_process,
    read,
    read_removed_while_open,
    second_mount,
    within,
    write,
)

SMALL, BIG = 3000, (3 << 20) + 17     # kept inline / in chunks
PUSH_S = 2.0                          # for a pushed invalidation to reach the kernel
ROOT = pb.Caller()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the mount tests run as root")
    with mount_fixture.mounted_cluster(tmp_path_factory.mktemp("consistency"),
                                       chunkservers=4) as c:
        yield c


@pytest.fixture(scope="module")
def other(cluster):
    with second_mount(cluster, "mnt-b") as b:
        yield b


@pytest.mark.parametrize("size", [SMALL, BIG], ids=["small", "big"])
def test_a_file_made_in_a_held_directory_is_read_whole_by_the_other_mount(
        cluster, other, size):
    """The writer made the directory (it holds it): the file's create, writes and
    commit are answered by the writer and committed in the background; the other
    mount's first look recalls the directory and sees all of it."""
    top = os.path.join(cluster.mountpoint, f"held-{size}")
    os.mkdir(top)
    data = os.urandom(size)
    write(os.path.join(top, "f"), data)
    assert read(os.path.join(other, f"held-{size}", "f")) == data
    assert os.stat(os.path.join(other, f"held-{size}", "f")).st_size == size


@pytest.mark.parametrize("size", [SMALL, BIG], ids=["small", "big"])
def test_an_overwrite_is_seen_by_the_other_mount_at_its_next_open(cluster, other, size):
    """A file the other mount made (not the writer's own): close commits before it
    returns, and the reader's open asks the cluster."""
    name = f"shared-{size}"
    write(os.path.join(other, name), b"old" * 100)
    assert read(os.path.join(other, name)) == b"old" * 100
    data = os.urandom(size)
    write(os.path.join(cluster.mountpoint, name), data)
    assert read(os.path.join(other, name)) == data


def test_a_directory_listing_the_kernel_keeps_follows_the_other_mounts_changes(
        cluster, other):
    """The kernel caches listings (cache_readdir, fuse_hooks.py): the master's push
    for a change made elsewhere drops them, so a listing never shows a stale name."""
    top = os.path.join(cluster.mountpoint, "listed")
    os.mkdir(top)
    write(os.path.join(top, "first"), b"1")
    there = os.path.join(other, "listed")
    assert sorted(os.listdir(there)) == ["first"]
    assert sorted(os.listdir(there)) == ["first"]          # from the kernel's cache
    write(os.path.join(top, "second"), b"2")
    os.unlink(os.path.join(top, "first"))
    within(PUSH_S, lambda: sorted(os.listdir(there)) == ["second"])
    write(os.path.join(there, "third"), b"3")               # and the other way round
    within(PUSH_S, lambda: sorted(os.listdir(top)) == ["second", "third"])


@pytest.mark.parametrize("size", [SMALL, BIG], ids=["small", "big"])
def test_a_file_open_for_reading_stays_readable_when_the_other_mount_removes_it(
        cluster, other, size):
    """Opens for reading are not logged: the small file's bytes came with the open,
    the big one's chunks are retained and found by id."""
    name = f"removed-{size}"
    data = os.urandom(size)
    assert read_removed_while_open(os.path.join(cluster.mountpoint, name),
                                   os.path.join(other, name), data) == data


def test_what_was_closed_survives_the_mount_dying(cluster, other):
    """A file the dying mount did not make itself: close returned once the commit was
    in the log, so a SIGKILL right after loses nothing."""
    names = [f"closed-{i}" for i in range(4)]
    for name in names:
        write(os.path.join(other, name), b"")
    written = {name: os.urandom(SMALL if i % 2 else BIG) for i, name in enumerate(names)}
    with second_mount(cluster, "mnt-doomed-close") as doomed:
        for name, data in written.items():
            write(os.path.join(doomed, name), data)
        os.kill(mount_process(doomed), signal.SIGKILL)
    for name, data in written.items():
        assert read(os.path.join(other, name)) == data, name


def test_what_was_fsynced_survives_the_mount_dying(cluster, other):
    """Files the dying mount made itself in a directory it held, small and big, each
    fsynced: all there after a SIGKILL that came before any background commit could
    have gone on its own."""
    written = {f"f{i}": os.urandom(SMALL if i % 2 else BIG) for i in range(6)}
    with second_mount(cluster, "mnt-doomed-fsync") as doomed:
        top = os.path.join(doomed, "made")
        os.mkdir(top)
        for name, data in written.items():
            fd = os.open(os.path.join(top, name), os.O_CREAT | os.O_WRONLY, 0o644)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
        os.kill(mount_process(doomed), signal.SIGKILL)
    for name, data in written.items():
        assert read(os.path.join(other, "made", name)) == data, name


def test_fsync_replaces_a_copy_whose_chunkserver_died(cluster, other):
    """fsync returns once the bytes are durable on every copy the class asks for: a
    chunkserver that died under the writer is replaced, so the chunk is on two live
    servers, at the version the file's commit names."""
    path = os.path.join(cluster.mountpoint, "synced")
    data = os.urandom(BIG)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, data[:BIG // 2])
        holders = asyncio.run(_holders(cluster, path))
        assert len(holders) == 2, holders
        victim = cluster.chunks.addresses.index(holders[0])
        cluster.chunks.kill(victim)
        os.write(fd, data[BIG // 2:])
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        alive = asyncio.run(_holders(cluster, path))
        assert len(alive) == 2 and holders[0] not in alive, alive
        assert read(os.path.join(other, "synced")) == data
    finally:
        cluster.chunks.start(victim)


def test_a_chunkserver_killed_after_close_costs_no_byte(cluster, other):
    path = os.path.join(cluster.mountpoint, "closed-then-killed")
    data = os.urandom(BIG)
    write(path, data)
    holders = asyncio.run(_holders(cluster, path))
    victim = cluster.chunks.addresses.index(holders[0])
    cluster.chunks.kill(victim)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        assert read(os.path.join(other, "closed-then-killed")) == data
    finally:
        cluster.chunks.start(victim)


async def _holders(cluster, path: str) -> list[str]:
    """Where chunk 0 of the file is, as the leader says (live copies at the version
    of the file's chunk)."""
    ino = os.stat(path).st_ino
    async with MetadataClient(cluster.masters.split(",")) as md:
        for _ in range(100):
            with contextlib.suppress(Exception):
                reply = await md.read(ROOT, locate_chunk=mpb.LocateChunk(inode=ino,
                                                                          chunk_index=0))
                found = [loc.address for loc in reply.locations
                         if loc.version == reply.chunk.version and not loc.part]
                if found:
                    return found
            await asyncio.sleep(0.1)
    raise AssertionError(f"no copy of chunk 0 of {path} is known")
