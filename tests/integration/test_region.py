"""A second region on loopback: region B (its own 3-node metadata cluster, run with
--region-follower) follows region A's committed log through `mooseng region follow`;
it catches up after the link is cut and after restarts of the shipper and of B, with
the same namespace as A; it refuses writes until `mooseng region promote`, and then
refuses region A's entries."""

import asyncio
import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as nspb
from services.logship.region_status import namespace_digest as region_namespace_digest
from services.logship.region_status import region_info
from services.metadata.projection import open_projection
from services.metadata.raft.proposer import Proposer
from tests.integration.chunk_cluster import ChunkCluster
from tests.integration.metadata_cluster import MetadataCluster
from tests.integration.test_raft_cluster import names_in_root, propose_names


class ShipperProcess:
    def __init__(self, root: str, source: MetadataCluster, target: MetadataCluster):
        self.log_path = os.path.join(root, "shipper.log")
        self.args = [sys.executable, "-m", "mooseng", "region", "follow",
                     "--from", ",".join(source.addresses.values()),
                     "--to", ",".join(target.addresses.values())]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
        return proc.wait(timeout=30)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


@pytest.fixture
def regions(tmp_path):
    with region_pair(tmp_path) as pair:
        yield pair


@contextlib.contextmanager
def region_pair(tmp_path, **a_args):
    """Region A and region B (a following cluster) and a shipper between them, not
    started; all stopped at the end, also on failure."""
    a = MetadataCluster(str(tmp_path / "a"), **a_args)
    b = MetadataCluster(str(tmp_path / "b"), extra_args=("--region-follower",))
    os.makedirs(a.root)
    os.makedirs(b.root)
    shipper = ShipperProcess(str(tmp_path), a, b)
    try:
        yield a, b, shipper
    finally:
        try:
            shipper.stop(signal.SIGKILL)
        finally:
            a.stop_all()
            b.stop_all()


def masters(cluster: MetadataCluster) -> list[str]:
    return list(cluster.addresses.values())


def shipped(b: MetadataCluster) -> mpb.RegionInfo:
    return asyncio.run(region_info(masters(b)))


def wait_caught_up(a: MetadataCluster, b: MetadataCluster, timeout: float = 60.0) -> int:
    """B holds everything A committed (A is idle meanwhile)."""
    target = a.wait_converged()[0]["commit_index"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if shipped(b).shipped_index >= target:
            return target
        time.sleep(0.1)
    raise AssertionError(f"region B did not reach A's commit index {target}: {shipped(b)}")


def namespace_digest(data_dir: str) -> str:
    with open_projection(os.path.join(data_dir, "projection")) as proj:
        return region_namespace_digest(proj)


def other_commands(n: int) -> list[bytes]:
    """Not only mkdir: a session, files, attributes, a rename, an unlink."""
    caller = nspb.Caller(uid=0, gid=0)
    out = [nspb.Command(time_ns=time.time_ns(), caller=caller,
                        open_session=nspb.OpenSession(client="region test"))]
    for i in range(n):
        name = b"f%04d" % i
        out.append(nspb.Command(time_ns=time.time_ns(), caller=caller,
                                mknod=nspb.Mknod(parent=1, name=name, mode=0o100644)))
        out.append(nspb.Command(time_ns=time.time_ns(), caller=caller,
                                rename=nspb.Rename(parent=1, name=name, new_parent=1,
                                                   new_name=name + b".moved")))
        if i % 3 == 0:
            out.append(nspb.Command(time_ns=time.time_ns(), caller=caller,
                                    unlink=nspb.Unlink(parent=1, name=name + b".moved")))
    return [c.SerializeToString() for c in out]


def propose(cluster: MetadataCluster, commands: list[bytes]) -> list[nspb.Result]:
    async def run():
        proposer = Proposer(masters(cluster), deadline_s=30)
        try:
            results = []
            for command in commands:
                _, [raw] = await proposer.propose([command])
                results.append(nspb.Result.FromString(raw))
            return results
        finally:
            await proposer.close()
    return asyncio.run(run())


def write_names(cluster: MetadataCluster, prefix: bytes, n: int) -> None:
    acked, unknown = asyncio.run(propose_names(cluster, [prefix + b"%05d" % i
                                                         for i in range(n)]))
    assert len(acked) == n and not unknown


def client_write(cluster: MetadataCluster, name: bytes) -> tuple[bool, int, str]:
    """What a mount does: open (a session, if the cluster takes writes), then mkdir.
    Returns (read-only, errno, message)."""
    async def run():
        from fuse_client.metadata_client import MetadataClient
        from services.common.posix.errors import FsError
        client = await MetadataClient(masters(cluster), name="region test").open()
        try:
            await client.mutate(nspb.Caller(), mkdir=nspb.Mkdir(parent=1, name=name,
                                                                mode=0o755))
            return client.read_only, 0, ""
        except FsError as exc:
            return client.read_only, exc.errno, exc.message
        finally:
            await client.close()
    return asyncio.run(run())


def client_open(cluster: MetadataCluster, name: bytes, flags: int) -> int:
    """What a mount of the region does at open(2) and close(2): 0, or the errno."""
    async def run():
        from fuse_client.metadata_client import MetadataClient
        from services.common.posix.errors import FsError
        client = await MetadataClient(masters(cluster), name="region test").open()
        try:
            found = await client.read(nspb.Caller(), lookup=mpb.Lookup(parent=1, name=name))
            opened = await client.mutate(nspb.Caller(), open=nspb.Open(
                inode=found.attr.inode, flags=flags))
            assert opened.attr.inode == found.attr.inode
            await client.mutate(nspb.Caller(), release=nspb.Release(inode=found.attr.inode))
            return 0
        except FsError as exc:
            return exc.errno
        finally:
            await client.close()
    return asyncio.run(run())


def region_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mooseng", "region", *args],
                          capture_output=True, text=True, timeout=60)


def stop_converged(*clusters: MetadataCluster) -> None:
    for cluster in clusters:
        cluster.wait_converged()
    for cluster in clusters:
        for i in list(cluster.procs):
            assert cluster.signal(i, signal.SIGTERM) == 0, cluster.log_of(i)


def assert_same_namespace(a: MetadataCluster, b: MetadataCluster) -> None:
    digests = {f"{name}{i}": namespace_digest(c.data(i))
               for name, c in (("a", a), ("b", b)) for i in c.addresses}
    assert len(set(digests.values())) == 1, f"the regions differ: {digests}"
    assert names_in_root(a.data(1)) == names_in_root(b.data(1))


@pytest.mark.slow
def test_region_b_follows_catches_up_resumes_and_is_promoted(regions, caplog):
    a, b, shipper = regions
    a.start_all()
    b.start_all()
    a.wait_leader()
    b.wait_leader()

    # B refuses writes from the start, with a message that says why and what to do.
    read_only, code, message = client_write(b, b"early")
    assert read_only and code == errno.EROFS and "promote" in message, message

    shipper.start()
    write_names(a, b"a", 300)
    propose(a, other_commands(40))
    wait_caught_up(a, b)
    assert shipped(b).following

    # A client (a mount) of B reads without a session and logs how far behind B is.
    caplog.clear()
    assert client_write(b, b"x")[:2] == (True, errno.EROFS)
    assert "is read-only, following region A" in caplog.text
    assert "behind by 0 entries" in caplog.text
    assert b"a00299" in names_in_root_live(b)

    # Files open for reading in B (no record: B takes nothing of its own); not to write.
    assert client_open(b, b"f0001.moved", os.O_RDONLY) == 0
    assert client_open(b, b"f0001.moved", os.O_RDWR) == errno.EROFS
    assert client_open(b, b"f0001.moved", os.O_RDONLY | os.O_TRUNC) == errno.EROFS

    # Even a raw proposal into B's log is refused by B's fold while it follows.
    [raw] = propose(b, [nspb.Command(mkdir=nspb.Mkdir(parent=1, name=b"mine",
                                                      mode=0o755)).SerializeToString()])
    assert raw.errno == errno.EROFS

    # The link is cut while A keeps changing: B stays where it was, then catches up.
    assert shipper.stop() == 0
    held = shipped(b).shipped_index
    write_names(a, b"cut", 200)
    time.sleep(0.5)
    assert shipped(b).shipped_index == held
    status = region_cli("status", "--masters", ",".join(masters(b)),
                        "--source", ",".join(masters(a)), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["behind_entries"] >= 200
    shipper.start()
    wait_caught_up(a, b)

    # A shipper killed while shipping resumes where B is: no entry twice, none lost.
    async def kill_shipper_once(acked_so_far):
        if acked_so_far >= 150 and shipper.proc is not None:
            shipper.stop(signal.SIGKILL)
    asyncio.run(propose_names(a, [b"k%05d" % i for i in range(400)],
                              on_progress=kill_shipper_once))
    shipper.start()
    wait_caught_up(a, b)
    status = region_cli("status", "--masters", ",".join(masters(b)))
    assert "behind by 0 entries" in status.stdout, status.stdout + status.stderr

    # Both regions stopped: the same namespace, key for key (B's bookkeeping aside).
    assert shipper.stop() == 0
    stop_converged(a, b)
    assert_same_namespace(a, b)

    # B restarted resumes from its recorded position.
    a.start_all()
    b.start_all()
    a.wait_leader()
    b.wait_leader()
    shipper.start()
    write_names(a, b"after", 100)
    wait_caught_up(a, b)

    # Promotion: B takes writes, and refuses region A from then on (fencing).
    promoted = region_cli("promote", "--masters", ",".join(masters(b)))
    assert promoted.returncode == 0, promoted.stderr
    info = shipped(b)
    assert info.promoted and not info.following
    assert client_write(b, b"written in b") == (False, 0, "")
    write_names(a, b"late", 20)          # the old shipper meets the fence, and stops
    assert shipper.proc.wait(timeout=30) == 3, shipper.log()
    shipper.proc = None
    again = region_cli("follow", "--from", ",".join(masters(a)), "--to", ",".join(masters(b)))
    assert again.returncode == 3 and "promoted" in again.stderr, again.stderr
    assert b"late00000" not in names_in_root_live(b)


def names_in_root_live(cluster: MetadataCluster) -> list[bytes]:
    async def run():
        from fuse_client.metadata_client import MetadataClient
        client = await MetadataClient(masters(cluster), name="t").open(session=False)
        try:
            reply = await client.read(nspb.Caller(), readdir=mpb.Readdir(inode=1, limit=10000))
            return [e.name for e in reply.entries]
        finally:
            await client.close()
    return asyncio.run(run())


# -- file contents ----------------------------------------------------------------------

CHUNK_FLAGS = ("--replicate-after", "1", "--chunk-quiet", "1")


@pytest.fixture
def regions_with_chunks(tmp_path):
    """Both regions with two chunkservers each; B's nodes know A's (to fetch from)."""
    a = MetadataCluster(str(tmp_path / "a"), extra_args=CHUNK_FLAGS)
    b = MetadataCluster(str(tmp_path / "b"), extra_args=(
        *CHUNK_FLAGS, "--region-follower", ",".join(a.addresses.values())))
    a_chunks = ChunkCluster(tmp_path / "a-cs", masters(a), n=2)
    b_chunks = ChunkCluster(tmp_path / "b-cs", masters(b), n=2)
    os.makedirs(a.root)
    os.makedirs(b.root)
    shipper = ShipperProcess(str(tmp_path), a, b)
    try:
        yield a, b, shipper, a_chunks, b_chunks
    finally:
        try:
            shipper.stop(signal.SIGKILL)
        finally:
            a_chunks.stop_all()
            b_chunks.stop_all()
            a.stop_all()
            b.stop_all()


async def write_in(cluster: MetadataCluster, name: bytes, data: bytes) -> int:
    """A writer in region A: the file `name` in the root holds `data` from offset 0."""
    from fuse_client.chunk_io import ChunkIO
    from fuse_client.metadata_client import MetadataClient
    root = nspb.Caller(uid=0, gid=0)
    async with MetadataClient(masters(cluster)) as md:
        made = await md.mutate(root, create=nspb.Create(parent=1, name=name, mode=0o644,
                                                        open=True, open_flags=os.O_RDWR))
        io = ChunkIO(md)
        await io.write(root, made.attr.inode, 0, data)
        await io.flush(root, made.attr.inode)
        await md.mutate(root, release=nspb.Release(inode=made.attr.inode))
        await io.close()
        return made.attr.inode


async def read_in(cluster: MetadataCluster, name: bytes) -> bytes:
    """What a mount of the region reads: lookup, open for reading, read, close."""
    from fuse_client.chunk_io import ChunkIO
    from fuse_client.metadata_client import MetadataClient
    root = nspb.Caller(uid=0, gid=0)
    async with MetadataClient(masters(cluster)) as md:
        found = await md.read(root, lookup=mpb.Lookup(parent=1, name=name))
        opened = await md.mutate(root, open=nspb.Open(inode=found.attr.inode,
                                                      flags=os.O_RDONLY))
        io = ChunkIO(md)
        try:
            return await io.read(root, found.attr.inode, 0, opened.attr.size,
                                 opened.attr.size)
        finally:
            await md.mutate(root, release=nspb.Release(inode=found.attr.inode))
            await io.close()


def start_following(regions_with_chunks) -> None:
    """Both regions and their chunkservers up, and the shipper following A."""
    a, b, shipper, a_chunks, b_chunks = regions_with_chunks
    for cluster, chunks in ((a, a_chunks), (b, b_chunks)):
        cluster.start_all()
        chunks.start_all()
    a.wait_leader()
    b.wait_leader()
    shipper.start()


@pytest.mark.slow
def test_file_contents_follow_into_region_b_and_stop_at_promotion(regions_with_chunks):
    a, b, shipper, a_chunks, b_chunks = regions_with_chunks
    start_following(regions_with_chunks)
    first = os.urandom(3 << 20)
    asyncio.run(write_in(a, b"data", first))
    wait_caught_up(a, b)

    # B's chunkservers fetched the chunk from A's: read back byte for byte in B.
    assert asyncio.run(read_in(b, b"data")) == first
    assert all(chunk_files(b_chunks)), "B's chunkservers hold no copy"

    # A overwrites (a new chunk version, and longer): B follows with the new bytes.
    second = os.urandom(4 << 20)
    asyncio.run(write_in(a, b"data", second))
    wait_caught_up(a, b)
    assert asyncio.run(read_in(b, b"data")) == second

    # Promoted, B fetches nothing more from A: a file B's log holds but its
    # chunkservers do not (they were down) stays unfetched; B's own writes work.
    held = set(chunk_files(b_chunks))
    b_chunks.stop_all()
    asyncio.run(write_in(a, b"late", first))
    wait_caught_up(a, b)
    promoted = region_cli("promote", "--masters", ",".join(masters(b)))
    assert promoted.returncode == 0, promoted.stderr
    shipper.stop()
    b_chunks.start_all()
    time.sleep(6)       # enough for B's leader to hear the servers and fetch, were it to
    assert set(chunk_files(b_chunks)) == held     # the same chunks (maybe more copies)
    asyncio.run(write_in(b, b"own", second))
    assert asyncio.run(read_in(b, b"own")) == second


def test_a_chunk_region_a_holds_only_as_parts_is_decoded_into_region_b(regions_with_chunks):
    a, b, shipper, a_chunks, b_chunks = regions_with_chunks
    a.start_all()
    a_chunks.start_all()
    a.wait_leader()
    set_root_class = region_cli_class(a, "ec=1+1")
    assert set_root_class.returncode == 0, set_root_class.stderr
    data = os.urandom(3 << 20)
    inode = asyncio.run(write_in(a, b"coded", data))
    asyncio.run(until_parts_only(a, inode))
    # Only now B follows: A has no whole copy left to give it.
    b.start_all()
    b_chunks.start_all()
    b.wait_leader()
    shipper.start()
    wait_caught_up(a, b)
    assert asyncio.run(read_in(b, b"coded")) == data
    assert chunk_files(b_chunks), "B's chunkservers hold nothing of it"


def region_cli_class(cluster: MetadataCluster, text: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mooseng", "class", "set", "--masters",
                           ",".join(masters(cluster)), "/", text],
                          capture_output=True, text=True, timeout=60)


async def until_parts_only(cluster: MetadataCluster, inode: int, timeout: float = 60.0):
    from fuse_client.metadata_client import MetadataClient
    async with MetadataClient(masters(cluster)) as md:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = await md.read(nspb.Caller(), locate_chunk=mpb.LocateChunk(inode=inode))
            if reply.locations and all(loc.part for loc in reply.locations):
                return
            await asyncio.sleep(0.3)
    raise AssertionError("region A did not convert the chunk to parts")


def chunk_files(chunks: ChunkCluster) -> list[str]:
    return [name for i in range(chunks.n)
            for _, _, files in os.walk(chunks.data_dir(i)) for name in files
            if name.startswith("chunk_")]


# -- seeding ----------------------------------------------------------------------------

def wait_compacted(cluster: MetadataCluster, past: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if min(n.get("snapshot_index") or 0 for n in cluster.wait_converged()) >= past:
            return
        time.sleep(0.2)
    raise AssertionError(f"region A did not compact its log past index {past}")


@pytest.mark.slow
def test_region_b_is_seeded_from_a_snapshot_once_a_compacted_past_it(tmp_path):
    with region_pair(tmp_path, snapshot_every=100) as (a, b, shipper):
        a.start_all()
        b.start_all()
        a.wait_leader()
        b.wait_leader()
        write_names(a, b"old", 300)
        wait_compacted(a, 200)
        stop_converged(a)        # restarted, A serves only its log (no recent entries)
        a.start_all()
        a.wait_leader()

        # A new B against an A that compacted: the shipper says to seed B, and how.
        follow = region_cli("follow", "--from", ",".join(masters(a)),
                            "--to", ",".join(masters(b)))
        assert follow.returncode == 4 and "mooseng region seed" in follow.stderr, \
            follow.stderr

        # Seeding refuses B's directories in use; B stopped and moved aside, it seeds.
        into = ",".join(b.data(i) for i in b.addresses)
        busy = region_cli("seed", "--from", ",".join(masters(a)), "--into", into)
        assert busy.returncode == 1 and "move its data directory aside" in busy.stderr
        b.stop_all()
        for i in b.addresses:
            os.rename(b.data(i), b.data(i) + ".old")
        seeded = region_cli("seed", "--from", ",".join(masters(a)), "--into", into)
        assert seeded.returncode == 0, seeded.stderr
        b.start_all()
        b.wait_leader()
        info = shipped(b)
        assert info.following and info.shipped_index >= 200
        assert client_write(b, b"mine")[:2] == (True, errno.EROFS)

        # The shipper goes on from the snapshot's index (A keeps only 100 entries
        # behind its snapshots here: B catches up before A writes on), to A's namespace.
        shipper.start()
        wait_caught_up(a, b)
        write_names(a, b"new", 20)
        wait_caught_up(a, b)
        assert {b"old00299", b"new00019"} <= set(names_in_root_live(b))
        assert shipper.stop() == 0
        stop_converged(a, b)
        assert_same_namespace(a, b)


def test_a_file_region_a_deletes_stays_readable_for_a_reader_in_region_b(
        regions_with_chunks):
    """An unlinked open file keeps its data: in region B too, where the open is not
    in the log (B's log is A's), the reader goes on by chunk id (the chunks are
    retained) once A's unlink has arrived."""
    a, b, shipper, a_chunks, b_chunks = regions_with_chunks
    start_following(regions_with_chunks)
    data = os.urandom(3 << 20)
    asyncio.run(write_in(a, b"doomed", data))
    wait_caught_up(a, b)
    asyncio.run(_read_across_a_delete(a, b, data))


async def _read_across_a_delete(a: MetadataCluster, b: MetadataCluster, data: bytes):
    from fuse_client.chunk_io import ChunkIO
    from fuse_client.metadata_client import MetadataClient
    root = nspb.Caller(uid=0, gid=0)
    async with MetadataClient(masters(b)) as reader:
        assert reader.read_only
        found = await reader.read(root, lookup=mpb.Lookup(parent=1, name=b"doomed"))
        await reader.mutate(root, open=nspb.Open(inode=found.attr.inode, flags=os.O_RDONLY))
        io = ChunkIO(reader)
        try:
            first = await io.read(root, found.attr.inode, 0, 1 << 20, len(data))
            async with MetadataClient(masters(a)) as writer:
                await writer.mutate(root, unlink=nspb.Unlink(parent=1, name=b"doomed"))
            await asyncio.to_thread(wait_caught_up, a, b)
            io.invalidate(found.attr.inode)     # as a mount does when told of a change
            rest = await io.read(root, found.attr.inode, 1 << 20, len(data) - (1 << 20),
                                 len(data))
        finally:
            await io.close()
    assert first + rest == data


def test_a_reader_on_a_mount_in_region_b_keeps_a_file_region_a_deletes(
        regions_with_chunks):
    """The same through a mount of region B: after A's unlink has arrived, the name
    is gone (the mount trusts names and attributes for 1 s only in a following
    region: no invalidation comes for what A changed), the open file still reads to
    its end, and fstat says it has no links."""
    from tests.integration.mount_fixture import second_mount
    a, b, shipper, a_chunks, b_chunks = regions_with_chunks
    start_following(regions_with_chunks)
    data = os.urandom(3 << 20)
    asyncio.run(write_in(a, b"doomed", data))
    wait_caught_up(a, b)
    region_b = SimpleNamespace(root=b.root, masters=",".join(masters(b)),
                               mooseng=lambda *args, timeout=120: subprocess.run(
                                   [sys.executable, "-m", "mooseng", *args],
                                   capture_output=True, text=True, timeout=timeout))
    with second_mount(region_b, "b-mnt") as point:
        fd = os.open(os.path.join(point, "doomed"), os.O_RDONLY)
        try:
            first = os.pread(fd, 1 << 20, 0)
            asyncio.run(_unlink_in(a, b"doomed"))
            wait_caught_up(a, b)
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3")                # no page of it left in the kernel
            time.sleep(6)                   # nor a name, attribute or chunk location
            assert not os.path.exists(os.path.join(point, "doomed"))
            rest = os.pread(fd, len(data), 1 << 20)
            st = os.fstat(fd)
        finally:
            os.close(fd)
    assert first + rest == data
    assert (st.st_nlink, st.st_size) == (0, len(data))


async def _unlink_in(cluster: MetadataCluster, name: bytes) -> None:
    from fuse_client.metadata_client import MetadataClient
    async with MetadataClient(masters(cluster)) as md:
        await md.mutate(nspb.Caller(uid=0, gid=0), unlink=nspb.Unlink(parent=1, name=name))
