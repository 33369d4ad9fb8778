"""The metadata service as clients see it: three real nodes, real sessions."""

import asyncio
import contextlib
import errno
import random
import signal
import stat
import time

import grpc
import pytest

from fuse_client.metadata_client import MetadataClient
from schemas import metadata_pb2 as mpb
from schemas import metadata_pb2_grpc
from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError
from services.metadata.namespace import reads
from services.metadata.projection import open_projection
from tests.integration.metadata_cluster import MetadataCluster
from tests.integration.mkdir_workers import assert_no_node_lost, timed_mkdirs

ROOT = pb.Caller(uid=0, gid=0)


@pytest.fixture
def cluster(tmp_path):
    c = MetadataCluster(str(tmp_path), session_timeout=2.0)
    c.start_all()
    c.wait_leader()
    yield c
    c.stop_all()


def client(cluster, **kw) -> MetadataClient:
    return MetadataClient(list(cluster.addresses.values()), name="test", **kw)


# -- a random workload across two leader failures -----------------------------------------

class Model:
    """What one session's directory must hold: name -> (kind, mode)."""

    def __init__(self):
        self.entries: dict[bytes, tuple[str, int]] = {}


async def session_workload(c: MetadataClient, top: int, model: Model, rng: random.Random,
                           steps: int, progress: list[int]) -> None:
    for step in range(steps):
        names = list(model.entries)
        roll = rng.random()
        if roll < 0.35 or not names:
            name = b"f%d" % step
            kind = rng.choice(["file", "dir"])
            if kind == "file":
                await c.mutate(ROOT, create=pb.Create(parent=top, name=name, mode=0o640,
                                                      exclusive=True))
                model.entries[name] = ("file", 0o640)
            else:
                await c.mutate(ROOT, mkdir=pb.Mkdir(parent=top, name=name, mode=0o750))
                model.entries[name] = ("dir", 0o750)
        elif roll < 0.6:
            old, new = rng.choice(names), b"r%d" % step
            await c.mutate(ROOT, rename=pb.Rename(parent=top, name=old, new_parent=top,
                                                  new_name=new))
            model.entries[new] = model.entries.pop(old)
        elif roll < 0.8:
            name = rng.choice(names)
            kind, _ = model.entries.pop(name)
            if kind == "dir":
                await c.mutate(ROOT, rmdir=pb.Rmdir(parent=top, name=name))
            else:
                await c.mutate(ROOT, unlink=pb.Unlink(parent=top, name=name))
        else:
            name = rng.choice(names)
            kind, _ = model.entries[name]
            attr = (await c.read(ROOT, lookup=mpb.Lookup(parent=top, name=name))).attr
            mode = rng.choice([0o600, 0o644, 0o700, 0o755])
            await c.mutate(ROOT, setattr=pb.Setattr(inode=attr.inode, mode=mode))
            model.entries[name] = (kind, mode)
        progress[0] += 1


def tree_of(data_dir: str, top_names: list[bytes]) -> dict:
    with open_projection(f"{data_dir}/projection") as proj:
        out = {}
        for top in top_names:
            d = reads.lookup(proj, ROOT, 1, top)
            entries, cookie = {}, 0
            while page := reads.readdir(proj, ROOT, d.inode, cookie):
                for e in page:
                    kind = "dir" if stat.S_ISDIR(e.attr.mode) else "file"
                    entries[e.name] = (kind, e.attr.mode & 0o7777)
                cookie = page[-1].cookie
            out[top] = entries
        return out, proj.content_digest()


@pytest.mark.slow
def test_concurrent_sessions_through_two_leader_kills_match_the_model(cluster):
    sessions, steps = 4, 150
    models = [Model() for _ in range(sessions)]
    progress = [0]

    async def run():
        clients = [await client(cluster).open() for _ in range(sessions)]
        tops = []
        for i, c in enumerate(clients):
            r = await c.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=b"s%d" % i, mode=0o755))
            tops.append(r.attr.inode)

        async def killer():
            for kill_at in (steps, 3 * steps):
                while progress[0] < kill_at:
                    await asyncio.sleep(0.01)
                leader = await asyncio.to_thread(cluster.wait_leader)
                await asyncio.to_thread(cluster.signal, leader["id"], signal.SIGKILL)
                await asyncio.to_thread(cluster.start, leader["id"])

        await asyncio.gather(killer(), *(
            session_workload(c, top, m, random.Random(i), steps, progress)
            for i, (c, top, m) in enumerate(zip(clients, tops, models, strict=True))))
        for c in clients:
            await c.close()

    asyncio.run(run())
    assert progress[0] == sessions * steps
    cluster.wait_converged()
    for i in list(cluster.procs):
        cluster.signal(i, signal.SIGTERM)
    expected = {b"s%d" % i: m.entries for i, m in enumerate(models)}
    digests = set()
    for i in cluster.addresses:
        tree, digest = tree_of(cluster.data(i), list(expected))
        assert tree == expected, f"node {i} disagrees with the acknowledged operations"
        digests.add(digest)
    assert len(digests) == 1


# -- sessions, open files, redirects ---------------------------------------------------------

def test_a_silent_session_expires_and_its_open_files_are_released(cluster):
    async def run():
        quiet = await client(cluster, heartbeat_s=3600).open()
        f = await quiet.mutate(ROOT, create=pb.Create(parent=1, name=b"f", mode=0o644))
        await quiet.mutate(ROOT, open=pb.Open(inode=f.attr.inode))
        async with client(cluster) as other:
            await other.mutate(ROOT, unlink=pb.Unlink(parent=1, name=b"f"))
            assert (await other.read(ROOT, getattr=mpb.Getattr(inode=f.attr.inode))
                    ).attr.nlink == 0   # unlinked, still open: it lives
            for _ in range(100):
                await asyncio.sleep(0.1)
                try:
                    await other.read(ROOT, getattr=mpb.Getattr(inode=f.attr.inode))
                except FsError as exc:
                    assert exc.errno == errno.ENOENT
                    break
            else:
                raise AssertionError("the silent session never expired")
        # The quiet client finds out at its next change: it goes on in a new session.
        expired = quiet.session
        await quiet.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=b"late", mode=0o755))
        assert quiet.session not in (0, expired)
        await quiet.close()
    asyncio.run(run())


def depose_leader_quietly(cluster) -> tuple[int, int]:
    """Pause both followers past an election timeout: on waking they elect one of
    themselves, and the old leader, whose streams never broke, steps down. (The old
    leader can win again: then once more.) Returns (old, new) leader ids."""
    for _ in range(8):
        before = cluster.wait_leader()
        old = before["id"]
        followers = [i for i in cluster.addresses if i != old]
        for i in followers:
            cluster.procs[i].send_signal(signal.SIGSTOP)
        time.sleep(1.2)
        for i in followers:
            cluster.procs[i].send_signal(signal.SIGCONT)
        time.sleep(1.0)
        now = cluster.wait_leader()
        if now["id"] != old and now["term"] > before["term"]:
            return old, now["id"]
    raise AssertionError("the leader was never deposed")


def test_a_quiet_session_on_a_deposed_leader_moves_to_the_new_one_and_lives(cluster):
    """A client that only heartbeats while its leader is deposed (its stream to the old
    leader stays open) is sent to the new leader by its next heartbeat; answered by the
    old one instead, it heard nothing wrong while the new leader, never hearing from
    it, expired its session, and every change it made after that failed ENOTCONN."""
    async def run():
        quiet = await client(cluster, heartbeat_s=0.3).open()
        try:
            await quiet.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=b"before", mode=0o755))
            _, new = await asyncio.to_thread(depose_leader_quietly, cluster)
            await asyncio.sleep(3 * 2.0)          # three session timeouts, quiet
            await quiet.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=b"after", mode=0o755))
            assert quiet.leader == cluster.addresses[new]
        finally:
            await quiet.close()
    asyncio.run(run())


def test_clients_of_a_stopped_leader_go_to_the_new_one_before_their_session_expires(
        tmp_path):
    """The leader is stopped (SIGSTOP: its connections stay open, nothing is answered)
    for longer than the session timeout, while eight workers make directories. The
    client hears nothing for a few seconds, leaves it for the leader the others
    elected, and resends: no request fails, none is lost, its session lives, and no
    wait lasts as long as the stop. Before, it waited for the stopped node to wake,
    by when the new leader had expired its session."""
    c = MetadataCluster(str(tmp_path), session_timeout=8.0)
    c.start_all()
    try:
        old = c.wait_leader()["id"]
        acked, errors, waits, sessions = asyncio.run(_mkdirs_while_stopped(c, old, 12.0))
        assert not errors, f"{len(errors)} mkdirs failed: {errors[:3]}"
        assert len(acked) == 8 * 100
        assert len(sessions) == 1, f"the session was replaced: {sessions}"
        assert max(waits) < 10.0, f"a request waited {max(waits):.1f} s"
        assert_no_node_lost(c, acked)
    finally:
        for proc in c.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
        c.stop_all()


async def _mkdirs_while_stopped(c: MetadataCluster, leader: int, stop_s: float):
    md = await client(c).open()
    sessions = {md.session}
    stopped = asyncio.Event()

    async def stop_then_wake() -> None:
        await stopped.wait()
        c.procs[leader].send_signal(signal.SIGSTOP)
        await asyncio.sleep(stop_s)
        c.procs[leader].send_signal(signal.SIGCONT)

    def progress(acked: int) -> None:
        sessions.add(md.session)
        if acked >= 200:
            stopped.set()
    waker = asyncio.create_task(stop_then_wake())
    try:
        acked, errors, waits = await timed_mkdirs(md, 8, 100, progress)
        await waker
    finally:
        waker.cancel()
        await md.close()
    return acked, errors, waits, sessions


def test_an_unlinked_file_stays_readable_until_the_last_release(cluster):
    async def run():
        async with client(cluster) as a, client(cluster) as b:
            f = (await a.mutate(ROOT, create=pb.Create(parent=1, name=b"f", mode=0o644))).attr
            await a.mutate(ROOT, open=pb.Open(inode=f.inode))
            await b.mutate(ROOT, unlink=pb.Unlink(parent=1, name=b"f"))
            with pytest.raises(FsError):
                await b.read(ROOT, lookup=mpb.Lookup(parent=1, name=b"f"))
            assert (await b.read(ROOT, getattr=mpb.Getattr(inode=f.inode))).attr.inode
            await a.mutate(ROOT, release=pb.Release(inode=f.inode))
            with pytest.raises(FsError) as gone:
                await b.read(ROOT, getattr=mpb.Getattr(inode=f.inode))
            assert gone.value.errno == errno.ENOENT
    asyncio.run(run())


async def raw_call(address: str, *requests: mpb.Request) -> list[mpb.Reply]:
    async with grpc.aio.insecure_channel(address) as channel:
        stream = metadata_pb2_grpc.MetadataStub(channel).Session(
            iter([mpb.RequestBatch(requests=list(requests))]))
        replies = []
        async for batch in stream:
            replies += batch.replies
        return sorted(replies, key=lambda r: r.id)


def test_a_follower_redirects_to_the_leader(cluster):
    cluster.wait_converged()   # followers have heard from the leader
    leader = cluster.wait_leader()
    follower = next(a for i, a in cluster.addresses.items() if i != leader["id"])
    [mutation, read] = asyncio.run(raw_call(
        follower,
        mpb.Request(id=1, session=1, seq=1, caller=ROOT,
                    mutation=pb.Command(mkdir=pb.Mkdir(parent=1, name=b"d", mode=0o755))),
        mpb.Request(id=2, caller=ROOT, getattr=mpb.Getattr(inode=1))))
    for reply in (mutation, read):
        assert reply.status == mpb.Reply.NOT_LEADER
        assert reply.leader_address == leader["address"]
    [answer] = asyncio.run(raw_call(follower, mpb.Request(
        id=3, caller=ROOT, follower_read=True, getattr=mpb.Getattr(inode=1))))
    assert answer.status == mpb.Reply.OK and answer.attr.inode == 1


def test_a_retried_request_gets_exactly_the_first_outcome(cluster):
    leader = cluster.wait_leader()["address"]
    [opened] = asyncio.run(raw_call(leader, mpb.Request(
        id=1, caller=ROOT, mutation=pb.Command(open_session=pb.OpenSession()))))
    s = opened.result.session
    create = mpb.Request(id=2, session=s, seq=1, caller=ROOT, mutation=pb.Command(
        create=pb.Create(parent=1, name=b"once", mode=0o644, exclusive=True)))
    [first] = asyncio.run(raw_call(leader, create))
    [again] = asyncio.run(raw_call(leader, create))
    assert first.errno == 0 and again.result == first.result


def test_bad_requests_get_clear_errors_and_no_log_entries(cluster):
    leader = cluster.wait_leader()["address"]
    before = cluster.wait_converged()[0]["commit_index"]
    replies = asyncio.run(raw_call(
        leader,
        mpb.Request(id=1, caller=ROOT, session=1, seq=1, mutation=pb.Command()),
        mpb.Request(id=2, session=1, seq=2, mutation=pb.Command(
            mkdir=pb.Mkdir(parent=1, name=b"x", mode=0o755))),
        mpb.Request(id=3, caller=ROOT, session=1, seq=3, mutation=pb.Command(
            mkdir=pb.Mkdir(parent=1, name=b"a/b", mode=0o755))),
        mpb.Request(id=4, caller=ROOT, session=1, seq=4, mutation=pb.Command(
            mkdir=pb.Mkdir(parent=1, name=b"x" * 300, mode=0o755))),
        mpb.Request(id=5, caller=ROOT, mutation=pb.Command(
            mkdir=pb.Mkdir(parent=1, name=b"y", mode=0o755))),
        mpb.Request(id=6, caller=ROOT),
        mpb.Request(id=8, caller=ROOT, session=1, seq=5, mutation=pb.Command(
            mknod=pb.Mknod(parent=1, name=b"n", mode=0o170644)))))
    statuses = [(r.status, r.errno) for r in replies]
    assert statuses == [(mpb.Reply.BAD_REQUEST, 0), (mpb.Reply.BAD_REQUEST, 0),
                        (mpb.Reply.OK, errno.EINVAL), (mpb.Reply.OK, errno.ENAMETOOLONG),
                        (mpb.Reply.BAD_REQUEST, 0), (mpb.Reply.BAD_REQUEST, 0),
                        (mpb.Reply.OK, errno.EINVAL)]
    assert all(r.message for r in replies)
    after = cluster.wait_converged()[0]["commit_index"]
    assert after == before, "a refused request reached the log"
    [unknown] = asyncio.run(raw_call(leader, mpb.Request(
        id=7, caller=ROOT, session=999, seq=1,
        mutation=pb.Command(mkdir=pb.Mkdir(parent=1, name=b"z", mode=0o755)))))
    assert unknown.errno == errno.ENOTCONN and "open a new session" in unknown.message


def test_follower_reads_see_the_clients_own_writes(cluster):
    cluster.wait_converged()
    leader = cluster.wait_leader()
    follower = next(a for i, a in cluster.addresses.items() if i != leader["id"])

    async def run():
        async with client(cluster, read_from=follower) as c:
            for i in range(20):
                made = await c.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=b"d%d" % i,
                                                           mode=0o755))
                seen = await c.read(ROOT, follower=True,
                                    lookup=mpb.Lookup(parent=1, name=b"d%d" % i))
                assert seen.attr.inode == made.attr.inode   # never older than our write
            assert c._reads.address == follower and c._reads.answered == 20
    asyncio.run(run())


def test_other_clients_changes_are_pushed_as_invalidations(cluster):
    async def scenario():
        seen: list[mpb.Invalidation] = []
        async with client(cluster) as writer, client(cluster) as watcher:
            watcher.on_invalidate = seen.extend
            await watcher.read(ROOT, getattr=mpb.Getattr(inode=1))   # subscribes
            f = (await writer.mutate(ROOT, create=pb.Create(parent=1, name=b"f",
                                                            mode=0o644))).attr.inode
            await writer.mutate(ROOT, setattr=pb.Setattr(inode=f, mode=0o600))
            await watcher.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=b"own", mode=0o755))
            for _ in range(50):
                if len(seen) >= 4:
                    break
                await asyncio.sleep(0.05)
        assert (1, b"f") in {(n.parent, n.name) for n in seen}
        inodes = [n.inode for n in seen if n.inode]
        assert 1 in inodes and f in inodes
        assert b"own" not in {n.name for n in seen}   # not told about its own change
    asyncio.run(scenario())
