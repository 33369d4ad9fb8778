"""Delegated directories (docs/delegations.md) on a real 3-node cluster, as sessions
see them: a session that creates a streak of files in a directory takes it and
answers further creates itself; any other session that reads or changes the
directory first gets everything those creates made, whatever the holder does
(answers the recall, ignores it, or loses its leader meanwhile)."""

import asyncio
import contextlib
import errno
import random
import signal
import time

import pytest

from fuse_client.delegations import Delegations
from fuse_client.metadata_client import MetadataClient
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError
from services.metadata.recalls import RECALL_S
from tests.integration.metadata_cluster import MetadataCluster

ROOT = pb.Caller(uid=0, gid=0, umask=0o022)
USER = pb.Caller(uid=1000, gid=1000, umask=0o022)


@pytest.fixture
def cluster(tmp_path):
    c = MetadataCluster(str(tmp_path), session_timeout=3.0)
    c.start_all()
    c.wait_leader()
    yield c
    c.stop_all()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


class Session:
    """A client session with delegations, as a mount has it."""

    def __init__(self, cluster, name: str):
        self.md = MetadataClient(list(cluster.addresses.values()), name=name)
        self.delegations = Delegations(self.md).attach()

    async def __aenter__(self) -> "Session":
        await self.md.open()
        return self

    async def __aexit__(self, *exc) -> None:
        self.delegations.close()
        await self.md.close()

    async def create(self, parent: int, name: bytes, caller=ROOT) -> pb.Attr:
        """As the mount does: here if the directory is held, else at the master."""
        await self.delegations.room(parent)
        attr = self.delegations.create(caller, parent, name, 0o644, 0)
        if attr is None:
            attr = (await self.md.mutate(caller, create=pb.Create(
                parent=parent, name=name, mode=0o644, open=True))).attr
            self.delegations.made_at_master(parent, name, attr)
            self.delegations.changed(caller, parent)
        return attr

    async def held_dir(self, name: bytes) -> int:
        """A new directory in the root, held from the start (as the mount makes them)."""
        attr = (await self.md.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=name, mode=0o755,
                                                           delegate=True))).attr
        self.delegations.adopt(attr, 1)
        for _ in range(200):          # its inode numbers are being reserved meanwhile
            if self.delegations.has_inodes():
                break
            await asyncio.sleep(0.01)
        return attr.inode

    async def take(self, parent: int, caller=ROOT) -> None:
        """Create files until the directory is held."""
        for i in range(50):
            await self.create(parent, b"streak-%d" % i, caller)
            for _ in range(20):
                if parent in self.delegations.held:
                    return
                await asyncio.sleep(0.01)
        raise AssertionError(f"directory {parent} was never delegated")


@contextlib.asynccontextmanager
async def holding(cluster):
    """Sessions a and b, and a directory d that a holds."""
    async with Session(cluster, "a") as a, Session(cluster, "b") as b:
        d = await mkdir(a, b"d")
        await a.take(d)
        yield a, b, d


async def mkdir(s: Session, name: bytes, owner=ROOT, mode=0o755) -> int:
    d = (await s.md.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=name, mode=0o755))).attr.inode
    await s.md.mutate(ROOT, setattr=pb.Setattr(inode=d, uid=owner.uid, gid=owner.gid,
                                               mode=mode))
    return d


async def names(s: Session, directory: int, limit: int = 5000) -> set[bytes]:
    reply = await s.md.read(ROOT, readdir=mpb.Readdir(inode=directory, limit=limit))
    return {e.name for e in reply.entries}


def test_a_streak_of_creates_is_answered_by_the_session_and_committed_as_answered(cluster):
    async def scenario():
        async with Session(cluster, "a") as a, Session(cluster, "b") as b:
            d = await mkdir(a, b"d", USER, 0o2775)
            await a.take(d, USER)
            local = a.delegations.create(USER, d, b"here", 0o640, 0)
            assert local is not None, "a held directory's create went to the master"
            assert a.delegations.pending      # answered before it was committed
            await a.delegations.settled(local.inode)
            seen = (await b.md.read(ROOT, lookup=mpb.Lookup(parent=d, name=b"here"))).attr
            assert seen == local              # the master made what the session said
            assert seen.mode & 0o7777 == 0o640 and seen.gid == 1000
            # not absent-by-mistake: names the session knows are asked at the master
            assert a.delegations.create(USER, d, b"here", 0o640, 0) is None
    run(scenario())


def test_after_its_stream_is_replaced_a_session_takes_a_big_directory_back_once(cluster):
    """A new session stream (a leader change) gives every held directory back. A process
    that goes on creating files in a big one gets it back with one ask: its creates wait
    for the answer instead of overtaking the listing of thousands of names, which used
    to make every ask stale, so that the listing was read again and again and creates
    crawled along at a few dozen a second."""
    async def scenario():
        async with Session(cluster, "a") as a:
            d = await a.held_dir(b"big")
            made = [a.delegations.create(ROOT, d, b"f%d" % i, 0o644, 0) for i in range(3000)]
            assert all(made)
            asks = []
            mutate = a.md.mutate_reply

            async def counting(caller, **op):
                if "delegate" in op:
                    asks.append(op["delegate"].dir)
                return await mutate(caller, **op)
            a.md.mutate_reply = counting
            a.delegations.reset()                  # as the mount does on a new stream
            assert d not in a.delegations.held
            for i in range(100):
                await a.create(d, b"after-%d" % i)
            assert d in a.delegations.held
            assert asks == [d], f"asked for the directory {len(asks)} times"
            assert len(await names(a, d, limit=5000)) == 3100
    run(scenario())


def test_another_session_sees_every_create_the_holder_answered(cluster):
    async def scenario():
        async with holding(cluster) as (a, b, d):
            made = [a.delegations.create(ROOT, d, b"f%d" % i, 0o644, 0) for i in range(200)]
            assert all(made)
            listed = await names(b, d)        # recalls the directory first
            assert {b"f%d" % i for i in range(200)} <= listed
            assert d not in a.delegations.held
            with pytest.raises(FsError) as exc:   # the names are taken, for everyone
                await b.md.mutate(ROOT, create=pb.Create(parent=d, name=b"f7", mode=0o644,
                                                         exclusive=True))
            assert exc.value.errno == errno.EEXIST
    run(scenario())


def test_a_lookup_from_another_session_finds_a_file_created_a_moment_before(cluster):
    async def scenario():
        async with holding(cluster) as (a, b, d):
            made = a.delegations.create(ROOT, d, b"x", 0o644, 0)
            found = await b.md.read(ROOT, lookup=mpb.Lookup(parent=d, name=b"x"))
            assert found.attr == made
            # given back: a no longer answers for the directory
            assert a.delegations.create(ROOT, d, b"y", 0o644, 0) is None
            with pytest.raises(FsError) as exc:
                a.delegations.lookup(ROOT, d, b"y") or await a.md.read(
                    ROOT, lookup=mpb.Lookup(parent=d, name=b"y"))
            assert exc.value.errno == errno.ENOENT
    run(scenario())


def test_a_holder_that_ignores_the_recall_loses_the_directory_but_not_its_files(cluster):
    async def scenario():
        async with holding(cluster) as (a, b, d):
            a.md.on_recall = lambda directory: None      # deaf to recalls
            assert a.delegations.create(ROOT, d, b"late", 0o644, 0) is not None
            a.md.send_deferred()
            started = time.monotonic()
            await b.md.mutate(ROOT, create=pb.Create(parent=d, name=b"from-b", mode=0o644))
            assert time.monotonic() - started >= RECALL_S * 0.9   # it waited for it
            assert {b"late", b"from-b"} <= await names(b, d)
    run(scenario())


def test_creates_answered_before_a_leader_dies_are_all_committed_once(cluster):
    async def scenario():
        async with holding(cluster) as (a, b, d):
            lost = []
            a.delegations.on_lost = lambda *what: lost.append(what)
            made = {a.delegations.create(ROOT, d, b"g%d" % i, 0o644, 0).inode
                    for i in range(300)}
            leader = (await asyncio.to_thread(cluster.wait_leader))["id"]
            cluster.signal(leader, signal.SIGKILL)
            await a.delegations.drain()
            assert not lost
            reply = await b.md.read(ROOT, readdir=mpb.Readdir(inode=d, limit=5000))
            by_name = {e.name: e.attr.inode for e in reply.entries}
            assert {by_name[b"g%d" % i] for i in range(300)} == made
            cluster.start(leader)
    run(scenario())


def test_changes_the_master_makes_for_the_holder_keep_the_directory_once_settled(cluster):
    """A rename or unlink the holder sends to the master: it learns the names they
    leave (settle, as the mount does after them) and keeps answering; a change it
    cannot follow (an xattr of the directory) gives the directory back."""
    async def scenario():
        async with holding(cluster) as (a, b, d):
            assert a.delegations.create(ROOT, d, b"made-here", 0o644, 0) is not None
            await a.md.mutate(ROOT, rename=pb.Rename(parent=d, name=b"made-here",
                                                     new_parent=d, new_name=b"moved"))
            await a.delegations.settle([(d, b"made-here"), (d, b"moved")])
            await a.md.mutate(ROOT, unlink=pb.Unlink(parent=d, name=b"streak-0"))
            await a.delegations.settle([(d, b"streak-0")])
            assert d in a.delegations.held
            with pytest.raises(FsError):
                a.delegations.lookup(ROOT, d, b"made-here")
            assert a.delegations.create(ROOT, d, b"made-here", 0o644, 0) is not None
            assert a.delegations.create(ROOT, d, b"moved", 0o644, 0) is None   # exists
            mine = a.delegations.getattr(d)
            await a.md.mutate(ROOT, setxattr=pb.Setxattr(inode=d, name=b"user.x",
                                                         value=b"1"))
            assert d not in a.delegations.held
            listed = await names(b, d)
            assert {b"made-here", b"moved"} <= listed and b"streak-0" not in listed
            seen = (await b.md.read(ROOT, getattr=mpb.Getattr(inode=d))).attr
            assert (seen.size, seen.nlink) == (mine.size, mine.nlink)
    run(scenario())


def test_unlinks_in_a_held_directory_are_answered_by_the_session_too(cluster):
    async def scenario():
        async with Session(cluster, "a") as a, Session(cluster, "b") as b:
            d = await mkdir(a, b"d")
            await a.md.mutate(ROOT, mkdir=pb.Mkdir(parent=d, name=b"sub", mode=0o755))
            await a.md.mutate(ROOT, create=pb.Create(parent=d, name=b"old", mode=0o644))
            await a.take(d)
            assert a.delegations.create(ROOT, d, b"new", 0o644, 0) is not None
            assert a.delegations.unlink(ROOT, d, b"new")     # before it was committed
            assert a.delegations.unlink(ROOT, d, b"old")     # listed when taken
            assert not a.delegations.unlink(ROOT, d, b"sub")  # a directory: the master
            assert not a.delegations.unlink(USER, d, b"streak-0")   # no permission
            with pytest.raises(FsError):
                a.delegations.lookup(ROOT, d, b"old")
            listed = await names(b, d)
            assert b"sub" in listed and not {b"new", b"old"} & listed
    run(scenario())


def test_a_tree_made_in_a_held_directory_is_held_and_seen_whole_by_others(cluster):
    async def scenario():
        async with holding(cluster) as (a, b, d):
            sub = a.delegations.mkdir(ROOT, d, b"sub", 0o750)
            assert sub is not None and sub.inode in a.delegations.held   # born held
            deeper = a.delegations.mkdir(ROOT, sub.inode, b"deeper", 0o755)
            for i in range(10):
                assert a.delegations.create(ROOT, deeper.inode, b"f%d" % i, 0o644, 0)
            empty = a.delegations.mkdir(ROOT, sub.inode, b"empty", 0o755)
            assert a.delegations.rmdir(ROOT, sub.inode, b"empty")
            assert not a.delegations.rmdir(ROOT, sub.inode, b"deeper")   # not empty
            seen = (await b.md.read(ROOT, lookup=mpb.Lookup(parent=d, name=b"sub"))).attr
            assert seen.inode == sub.inode and seen.mode == sub.mode and seen.nlink == 3
            assert await names(b, sub.inode) == {b"deeper"}
            assert await names(b, deeper.inode) == {b"f%d" % i for i in range(10)}
            with pytest.raises(FsError):
                await b.md.read(ROOT, getattr=mpb.Getattr(inode=empty.inode))
    run(scenario())


def test_a_closed_session_holds_nothing(cluster):
    async def scenario():
        async with Session(cluster, "b") as b:
            async with Session(cluster, "a") as a:
                d = await mkdir(a, b"d")
                await a.take(d)
                assert a.delegations.create(ROOT, d, b"last", 0o644, 0) is not None
            started = time.monotonic()
            assert b"last" in await names(b, d)      # committed before the session closed
            assert time.monotonic() - started < RECALL_S   # nobody to recall from
    run(scenario())


def test_a_caller_without_write_permission_is_not_answered_by_the_session(cluster):
    async def scenario():
        async with Session(cluster, "a") as a:
            d = await mkdir(a, b"d", ROOT, 0o755)
            await a.take(d)
            assert a.delegations.create(USER, d, b"nope", 0o644, 0) is None
            with pytest.raises(FsError) as exc:
                await a.md.mutate(USER, create=pb.Create(parent=d, name=b"nope", mode=0o644))
            assert exc.value.errno == errno.EACCES
    run(scenario())


def test_two_sessions_creating_and_unlinking_in_one_directory_agree_with_a_model(cluster):
    """Both sessions want the directory (it goes back and forth by recalls and
    refusals); every create and unlink either was answered by its session or went
    to the master, and the directory ends with exactly the names that should stay."""
    async def worker(s: Session, d: int, tag: bytes, expected: set, rng) -> None:
        mine = []
        for i in range(400):
            if mine and rng.random() < 0.3:
                name = mine.pop(rng.randrange(len(mine)))
                if not s.delegations.unlink(ROOT, d, name):
                    await s.md.mutate(ROOT, unlink=pb.Unlink(parent=d, name=name))
                    s.delegations.changed(ROOT, d)
                expected.discard(name)
            else:
                name = b"%s-%d" % (tag, i)
                await s.create(d, name)
                mine.append(name)
                expected.add(name)
            if rng.random() < 0.05:
                await asyncio.sleep(0.01)

    async def scenario():
        async with Session(cluster, "a") as a, Session(cluster, "b") as b:
            d = await mkdir(a, b"shared")
            expected: set[bytes] = set()
            lost = []
            for s in (a, b):
                s.delegations.on_lost = lambda *what: lost.append(what)
            await asyncio.gather(worker(a, d, b"a", expected, random.Random(1)),
                                 worker(b, d, b"b", expected, random.Random(2)))
            for s in (a, b):
                await s.delegations.drain()
            assert not lost
            assert await names(a, d) == expected == await names(b, d)
    run(scenario())


def test_a_follower_read_of_a_held_directory_is_served_after_the_recall(cluster):
    """A follower cannot recall a directory: it turns the read away and the client
    asks the leader, which recalls it. Also when the read comes to the leader as a
    follower read."""
    async def scenario():
        leader = (await asyncio.to_thread(cluster.wait_leader))["id"]
        follower = next(a for i, a in cluster.addresses.items() if i != leader)
        async with Session(cluster, "a") as a:
            for i, read_from in enumerate((follower, cluster.addresses[leader])):
                d = await a.held_dir(b"d%d" % i)
                assert a.delegations.create(ROOT, d, b"new", 0o644, 0) is not None
                reader = MetadataClient(list(cluster.addresses.values()), name="reader",
                                        read_from=read_from)
                await reader.open()
                try:
                    reply = await reader.read(ROOT, follower=True, readdir=mpb.Readdir(
                        inode=d, limit=1000))
                    assert [e.name for e in reply.entries] == [b"new"]
                finally:
                    await reader.close()
    run(scenario())
