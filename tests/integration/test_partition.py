"""Network partitions between real processes (links through LinkProxy).

A leader cut off from the other nodes (clients can still reach it) must step down,
the others must elect a new leader and go on, and once the link heals the old leader
must follow again: nothing acknowledged is lost, nothing is applied twice, and every
node ends with the same projection. A chunkserver cut off from the masters (clients
can still reach it) must cost no write and no data."""

import asyncio
import contextlib
import errno
import os
import signal
import time

import pytest

from fuse_client.chunk_io import ChunkIO
from fuse_client.metadata_client import ClusterUnavailableError, MetadataClient
from mooseng import classes
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as nspb
from services.common.posix.errors import FsError
from tests.integration.chunk_cluster import ChunkCluster
from tests.integration.link_proxy import LinkProxy
from tests.integration.metadata_cluster import MetadataCluster
from tests.integration.mkdir_workers import assert_no_node_lost, timed_mkdirs
from tests.integration.test_raft_cluster import (
    logged_names,
    names_in_root,
    projection_digest,
    propose_names,
)

pytestmark = pytest.mark.slow


class ProxiedCluster(MetadataCluster):
    """Every node reaches every other through its own LinkProxy."""

    def __init__(self, root, n: int = 3, extra_args: tuple[str, ...] = ()):
        super().__init__(root, n, extra_args=extra_args)
        self.links = {(i, j): LinkProxy(self.addresses[j])
                      for i in self.addresses for j in self.addresses if i != j}

    def peers_of(self, i: int) -> str:
        return ",".join(f"{j}={a if j == i else self.links[i, j].address}"
                        for j, a in self.addresses.items())

    def isolate(self, i: int) -> None:
        for (a, b), link in self.links.items():
            if i in (a, b):
                link.cut()

    def heal(self) -> None:
        for link in self.links.values():
            link.heal()

    def close(self) -> None:
        self.stop_all()
        for link in self.links.values():
            link.close()


@pytest.fixture
def cluster(tmp_path):
    c = ProxiedCluster(str(tmp_path))
    yield c
    c.close()


def test_an_isolated_leader_steps_down_and_nothing_acknowledged_is_lost(cluster):
    cluster.start_all()
    first = cluster.wait_leader()
    seen = {}

    async def partition_then_heal(acked_so_far):
        if acked_so_far >= 300 and "cut_at" not in seen:
            seen["cut_at"] = acked_so_far
            cluster.isolate(first["id"])
        elif acked_so_far >= seen.get("cut_at", 10**9) + 300 and "healed" not in seen:
            seen["healed"] = True
            seen["roles"] = {n["id"]: n["role"] for n in await asyncio.to_thread(
                cluster.status)}
            cluster.heal()

    names = [b"n%05d" % i for i in range(1500)]
    acked, unknown = asyncio.run(propose_names(cluster, names, workers=8,
                                               on_progress=partition_then_heal))
    assert seen.get("healed"), f"no progress after the leader was cut off: {seen}"
    others = {i: role for i, role in seen["roles"].items() if i != first["id"]}
    assert "leader" in others.values(), f"the others elected no leader: {seen['roles']}"
    assert seen["roles"][first["id"]] != "leader", "the cut-off leader did not step down"
    assert len(acked) > 1000, f"only {len(acked)} proposals succeeded around the partition"

    cluster.wait_converged()
    for i in list(cluster.procs):
        assert cluster.signal(i, signal.SIGTERM) == 0
    digests = set()
    for i in cluster.addresses:
        present = set(names_in_root(cluster.data(i)))
        assert acked <= present, f"node {i} lost acknowledged proposals"
        assert present <= acked | unknown, f"node {i} holds names never proposed"
        twice = [n for n, c in logged_names(cluster.data(i)).items() if c > 1]
        assert not twice, f"node {i} has commands in its log twice: {twice[:5]}"
        digests.add(projection_digest(cluster.data(i)))
    assert len(digests) == 1, "the nodes' projections differ"


ROOT = nspb.Caller(uid=0, gid=0)


@pytest.mark.parametrize("reads", ["read-index", "lease"])
def test_a_cut_off_leader_answers_no_stale_read(tmp_path, reads):
    """Clients can still reach a leader the other nodes cannot: once the others have
    elected a new leader and made a directory, a read on the old one must find the
    directory or fail, never answer ENOENT (with leases too: a lease must run out
    before another node can be elected)."""
    c = ProxiedCluster(str(tmp_path), extra_args=("--lease-reads",) if reads == "lease"
                       else ())
    try:
        c.start_all()
        old = c.wait_leader()["id"]
        asyncio.run(_stale_read_check(c, old))
    finally:
        c.close()


async def _stale_read_check(c: ProxiedCluster, old: int) -> None:
    cut_off = MetadataClient([c.addresses[old]], deadline_s=2.0)
    rest = MetadataClient(list(c.addresses.values()), deadline_s=30.0)
    await cut_off.open(session=False)
    await rest.open()
    try:
        lookup = mpb.Lookup(parent=1, name=b"made-elsewhere")
        with pytest.raises(FsError, match="ENOENT"):
            await cut_off.read(ROOT, lookup=lookup)      # the old leader answers
        c.isolate(old)
        await rest.mutate(ROOT, mkdir=nspb.Mkdir(parent=1, name=b"made-elsewhere",
                                                 mode=0o755))
        answers, until = [], time.monotonic() + 3.0
        while time.monotonic() < until:
            try:
                await cut_off.read(ROOT, lookup=lookup)
                answers.append("found")
            except FsError as exc:
                assert exc.errno != errno.ENOENT, (
                    f"the cut-off leader answered a stale read: {exc} (after {answers})")
                answers.append(exc.errno)
            except ClusterUnavailableError as exc:      # no answer: fine
                answers.append(type(exc).__name__)
    finally:
        c.heal()
        await cut_off.close()
        await rest.close()


def test_a_paused_leader_answers_no_stale_read_when_it_resumes(tmp_path):
    """The leader is paused (SIGSTOP) with a lease: the others elect a new leader and
    make a directory. A read sent to the old leader while it is stopped is answered
    when it resumes, before it has heard of the new term: its lease must have run
    out with the time it was stopped (the lease counts time, not turns of a paused
    event loop), so the read finds the directory or fails, never answers ENOENT."""
    c = MetadataCluster(str(tmp_path), extra_args=("--lease-reads",))
    try:
        c.start_all()
        old = c.wait_leader()["id"]
        asyncio.run(_paused_read_check(c, old))
    finally:
        c.stop_all()


async def _paused_read_check(c: MetadataCluster, old: int) -> None:
    paused = MetadataClient([c.addresses[old]], deadline_s=5.0)
    rest = MetadataClient([a for i, a in c.addresses.items() if i != old], deadline_s=30.0)
    await paused.open(session=False)
    lookup = mpb.Lookup(parent=1, name=b"made-while-paused")
    try:
        with pytest.raises(FsError, match="ENOENT"):
            await paused.read(ROOT, lookup=lookup)       # the leader answers, lease held
        c.procs[old].send_signal(signal.SIGSTOP)
        try:
            await rest.open()
            await rest.mutate(ROOT, mkdir=nspb.Mkdir(parent=1, name=lookup.name,
                                                     mode=0o755))
            waiting = [asyncio.create_task(paused.read(ROOT, lookup=lookup))
                       for _ in range(5)]               # queued at the stopped leader
            await asyncio.sleep(0.5)
        finally:
            c.procs[old].send_signal(signal.SIGCONT)
        for outcome in await asyncio.gather(*waiting, return_exceptions=True):
            assert not (isinstance(outcome, FsError) and outcome.errno == errno.ENOENT), \
                "the resumed leader answered a stale read from its old lease"
    finally:
        await paused.close()
        await rest.close()


def test_session_clients_ride_through_a_partition_of_the_leader(cluster):
    """Eight session clients' mkdirs (exactly-once retries) while the leader is cut off:
    none fails, none is lost, and the waits are a failover's, not a request deadline's
    (a deposed leader hands its waiting proposals back at once)."""
    cluster.start_all()
    acked, errors, waits = asyncio.run(_mkdirs_through_partition(cluster))
    assert not errors, f"{len(errors)} mkdirs failed: {errors[:3]}"
    assert len(acked) == 8 * 300
    assert max(waits) < 5.0, f"a request waited {max(waits):.1f} s through the failover"
    assert_no_node_lost(cluster, acked)


async def _mkdirs_through_partition(c: ProxiedCluster):
    old = (await asyncio.to_thread(c.wait_leader))["id"]
    md = MetadataClient(list(c.addresses.values()), deadline_s=60.0)
    await md.open()
    phase = {}

    def cut_then_heal(acked: int) -> None:
        if acked >= 500 and "cut" not in phase:
            phase["cut"] = acked
            c.isolate(old)
        elif acked >= phase.get("cut", 10**9) + 800 and "healed" not in phase:
            phase["healed"] = True
            c.heal()
    try:
        return await timed_mkdirs(md, 8, 300, cut_then_heal)
    finally:
        c.heal()
        await md.close()


def test_a_chunkserver_cut_off_from_the_masters_loses_no_data(tmp_path):
    """cs0's control links to the masters stall (clients still reach its data port)
    while a client writes copies=2 files: no write fails or hangs, and once the links
    heal every file reads back and every chunk is back at its goal."""
    links: list[LinkProxy] = []

    def chunkservers(masters: list[str]) -> ChunkCluster:
        links.extend(LinkProxy(a) for a in masters)
        return _ChunksWithOneBehind(tmp_path / "c", masters, links)
    try:
        with _with_chunkservers(tmp_path, chunkservers) as (masters, _):
            asyncio.run(_write_through_cut(masters, links))
    finally:
        for link in links:
            link.close()


@contextlib.contextmanager
def _with_chunkservers(tmp_path, make_chunkservers):
    """Three metadata nodes (quick to re-replicate) and the chunkservers
    `make_chunkservers(masters)` gives, running; all stopped at the end."""
    meta = MetadataCluster(str(tmp_path / "m"), extra_args=(
        "--replicate-after", "3", "--chunk-quiet", "1"))
    os.makedirs(meta.root)
    masters = list(meta.addresses.values())
    chunks = make_chunkservers(masters)
    try:
        meta.start_all()
        chunks.start_all()
        meta.wait_leader()
        yield masters, chunks
    finally:
        chunks.stop_all()
        meta.stop_all()


class _ChunksWithOneBehind(ChunkCluster):
    """Three chunkservers; server 0 reaches the masters through `links`."""

    def __init__(self, root, masters: list[str], links: list[LinkProxy]):
        super().__init__(root, masters, n=3)
        self.links = links

    def start(self, i: int) -> None:
        direct = self.masters
        if i == 0:
            self.masters = [link.address for link in self.links]
        try:
            super().start(i)
        finally:
            self.masters = direct


class _Files:
    """Files written through the client library, kept to be read back."""

    def __init__(self, md: MetadataClient, io: ChunkIO):
        self.md, self.io = md, io
        self.contents: dict[int, bytes] = {}

    async def write(self, name: bytes, data: bytes) -> None:
        made = await self.md.mutate(ROOT, create=nspb.Create(
            parent=1, name=name, mode=0o644, open=True, open_flags=os.O_RDWR))
        await self.io.write(ROOT, made.attr.inode, 0, data)
        await self.io.flush(ROOT, made.attr.inode)
        await self.md.mutate(ROOT, release=nspb.Release(inode=made.attr.inode))
        self.contents[made.attr.inode] = data

    async def check(self) -> None:
        for inode, data in self.contents.items():
            assert await self.io.read(ROOT, inode, 0, len(data), len(data)) == data


async def _write_through_cut(masters: list[str], links: list[LinkProxy]) -> None:
    async with MetadataClient(masters, deadline_s=60.0) as md:
        while sum(s.connected for s in (await classes.health(md)).servers) < 3:
            await asyncio.sleep(0.1)
        io = ChunkIO(md)
        files = _Files(md, io)
        try:
            for i in range(4):
                await files.write(b"before%d" % i, os.urandom(3 << 20))
            for link in links:
                link.cut()
            for i in range(40):
                await files.write(b"during%d" % i, os.urandom(1 << 20))
            for link in links:
                link.heal()
            await files.check()
            deadline = time.monotonic() + 60
            while True:
                health = await classes.health(md)
                if health.settled and not (health.under_goal or health.missing):
                    break
                assert time.monotonic() < deadline, f"chunks not back at goal: {health}"
                await asyncio.sleep(0.5)
        finally:
            await io.close()


def test_a_hung_chunkserver_is_taken_as_gone_and_writes_go_on(tmp_path):
    """SIGSTOP: a chunkserver whose connections stay open but answer nothing (a
    partition as everyone sees it). The master takes it as gone once it has been
    silent for a while (it used to count it connected for as long as the stream
    stayed open), writes go on without it, and it comes back after SIGCONT."""
    _with_one_to_hang(tmp_path, _write_while_hung)


def test_reads_leave_a_hung_copy_for_another_within_seconds(tmp_path):
    """A chunkserver holding copies hangs (SIGSTOP) right after files are written:
    reading them back leaves the hung copy for the other after a few seconds, instead
    of waiting out the 30 s request deadline on it."""
    _with_one_to_hang(tmp_path, _read_while_hung)


def _with_one_to_hang(tmp_path, scenario) -> None:
    """Run `scenario(masters, chunks)` against three chunkservers; whichever of them it
    stops is woken at the end."""
    with _with_chunkservers(tmp_path, lambda masters: ChunkCluster(
            tmp_path / "c", masters, n=3)) as (masters, chunks):
        try:
            asyncio.run(scenario(masters, chunks))
        finally:
            for proc in chunks.procs.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)


async def _read_while_hung(masters: list[str], chunks: ChunkCluster) -> None:
    async with MetadataClient(masters, deadline_s=60.0) as md:
        for i in range(3):
            await _until(lambda i=i: _connected(md, chunks.address(i)), 30,
                         "the chunkservers connecting")
        io = ChunkIO(md)
        files = _Files(md, io)
        try:
            for i in range(6):
                await files.write(b"f%d" % i, os.urandom(2 << 20))
            os.kill(chunks.procs[0].pid, signal.SIGSTOP)
            started = time.monotonic()
            await files.check()
            assert time.monotonic() - started < 15.0, "a read waited on the hung copy"
        finally:
            await io.close()


async def _connected(md, address: str) -> bool:
    servers = (await classes.health(md)).servers
    return any(s.address == address and s.connected for s in servers)


async def _until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        await asyncio.sleep(0.2)


async def _write_while_hung(masters: list[str], chunks: ChunkCluster) -> None:
    hung = chunks.address(0)
    async with MetadataClient(masters, deadline_s=60.0) as md:
        await _until(lambda: _connected(md, hung), 30, "the chunkservers connecting")
        io = ChunkIO(md)
        files = _Files(md, io)
        try:
            os.kill(chunks.procs[0].pid, signal.SIGSTOP)
            await _until(lambda: _not(_connected(md, hung)), 25, "taking the hung server "
                                                                 "as gone")
            for i in range(10):
                await files.write(b"while-hung%d" % i, os.urandom(1 << 20))
            os.kill(chunks.procs[0].pid, signal.SIGCONT)
            await _until(lambda: _connected(md, hung), 30, "the server coming back")
            await files.check()
        finally:
            await io.close()


async def _not(check) -> bool:
    return not await check
