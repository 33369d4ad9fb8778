"""Chunkserver jobs between real data servers on loopback: copies, deletes, versions,
erasure coding and rebuilding a lost part."""

import asyncio
import os

import pytest

from schemas import chunkmaster_pb2 as pb
from services.chunk.data_server import DataServer
from services.chunk.erasure import ErasureCoder
from services.chunk.jobs import (
    JobError,
    JobRunner,
    delete_allowed,
    encode_targets,
    pieces,
    rebuild_part,
)
from services.chunk.parts import store_id
from services.chunk.store import ChunkStore


class Node:
    """A chunk store, its data server and a job runner, as one chunkserver has them."""

    def __init__(self, directory):
        directory.mkdir()
        self.store = ChunkStore([str(directory)])
        self.server = DataServer(self.store)
        self.changed: list[int] = []
        self.address = ""
        self.runner: JobRunner | None = None

    async def start(self):
        port = await self.server.start("127.0.0.1", 0)
        self.address = f"127.0.0.1:{port}"
        self.runner = JobRunner(self.store, self.address, self.changed.append)

    async def stop(self):
        await self.server.stop()
        self.store.close()

    def put(self, ident: int, version: int, data: bytes) -> None:
        self.store.create(ident, version)
        self.store.write(ident, version, 0, data)

    def held(self) -> dict[int, tuple[int, int]]:
        return {c.chunk_id: (c.version, c.length) for c in self.store.list()}


def with_nodes(tmp_path, n, test):
    async def run():
        nodes = [Node(tmp_path / f"cs{i}") for i in range(n)]
        try:
            for node in nodes:
                await node.start()
            await test(nodes)
        finally:
            for node in nodes:
                await node.stop()
    asyncio.run(run())


def dead_address() -> str:
    from mooseng.ports import free_ports
    return f"127.0.0.1:{free_ports(1)[0]}"


def test_replicate_copies_the_whole_chunk_from_the_first_source_that_answers(tmp_path):
    data = os.urandom(9 << 20)            # three pieces

    async def test(nodes):
        source, here = nodes
        source.put(7, 3, data)
        here.put(7, 2, b"stale")          # an old copy is replaced
        done = await here.runner.run(pb.Job(id=1, chunk=7, version=3, replicate=pb.Replicate(
            sources=[dead_address(), source.address], length=len(data))))
        assert done.ok, done.message
        assert here.held() == {7: (3, len(data))}
        assert here.store.read(7, 3, 0, len(data)) == data
        assert 7 in here.changed
    with_nodes(tmp_path, 2, test)


def test_replicate_fails_clearly_when_no_source_has_the_version(tmp_path):
    async def test(nodes):
        source, here = nodes
        source.put(7, 5, b"newer")
        done = await here.runner.run(pb.Job(id=2, chunk=7, version=4, replicate=pb.Replicate(
            sources=[source.address])))
        assert not done.ok and done.job == 2
        assert "at version 5, not 4" in done.message and source.address in done.message
        assert here.held() == {}
    with_nodes(tmp_path, 2, test)


def test_a_copy_broken_off_midway_leaves_nothing_that_looks_good(tmp_path):
    async def test(nodes):
        source, here = nodes
        source.put(8, 1, os.urandom(6 << 20))

        async def source_moves_on_once_the_copy_began():
            while 8 not in here.store:
                await asyncio.sleep(0)
            source.store.set_version(8, 1, 2)
        bump = asyncio.create_task(source_moves_on_once_the_copy_began())
        done = await here.runner.run(pb.Job(id=3, chunk=8, version=1, replicate=pb.Replicate(
            sources=[source.address])))
        await bump
        assert not done.ok and "stale version" in done.message
        assert here.held() == {}
    with_nodes(tmp_path, 2, test)


def test_delete_removes_only_the_named_version(tmp_path):
    async def test(nodes):
        [here] = nodes
        here.put(store_id(9, 2), 4, b"part")
        refused = await here.runner.run(pb.Job(id=4, chunk=9, version=3,
                                               delete=pb.Delete(part=2)))
        assert not refused.ok and "holds version 4" in refused.message
        assert store_id(9, 2) in here.store
        done = await here.runner.run(pb.Job(id=5, chunk=9, version=0,
                                            delete=pb.Delete(part=2)))
        assert done.ok and here.held() == {} and here.changed == [store_id(9, 2)]
        again = await here.runner.run(pb.Job(id=6, chunk=9, version=0,
                                             delete=pb.Delete(part=2)))
        assert again.ok and "not here" in again.message
    with_nodes(tmp_path, 1, test)


def test_set_version_moves_the_copy_held_at_the_old_version(tmp_path):
    async def test(nodes):
        [here] = nodes
        here.put(10, 1, b"abc")
        done = await here.runner.run(pb.Job(id=7, chunk=10, version=2,
                                            set_version=pb.SetVersion(old_version=1)))
        assert done.ok and here.held() == {10: (2, 3)}
        again = await here.runner.run(pb.Job(id=8, chunk=10, version=3,
                                             set_version=pb.SetVersion(old_version=1)))
        assert not again.ok and "at version 1" in again.message
        assert here.held() == {10: (2, 3)}
    with_nodes(tmp_path, 1, test)


def test_encode_spreads_parts_and_rebuild_restores_a_lost_one(tmp_path):
    data = os.urandom(5 << 20) + b"tail"

    async def test(nodes):
        holder = nodes[0]
        holder.put(11, 6, data)
        targets = [n.address for n in nodes[:3]]       # the holder keeps part 0
        done = await holder.runner.run(pb.Job(id=9, chunk=11, version=6, encode=pb.Encode(
            k=2, m=1, targets=targets)))
        assert done.ok, done.message
        parts = {}
        for i, node in enumerate(nodes[:3]):
            ident = store_id(11, i + 1)
            version, length = node.held()[ident]
            assert version == 6
            parts[i] = node.store.read(ident, 6, 0, length)
        coder = ErasureCoder(2, 1)
        assert coder.decode({0: parts[0], 2: parts[2]}) == data

        lost = nodes[1]          # part 1 is lost; the fourth server rebuilds it
        lost.store.delete(store_id(11, 2))
        sources = [pb.PartSource(address=nodes[i].address, part=i + 1,
                                 length=len(parts[i])) for i in (0, 2)]
        done = await nodes[3].runner.run(pb.Job(id=10, chunk=11, version=6,
                                                rebuild=pb.Rebuild(k=2, m=1, part=2,
                                                                   sources=sources)))
        assert done.ok, done.message
        rebuilt = nodes[3].store.read(store_id(11, 2), 6, 0, len(parts[1]))
        assert coder.decode({1: rebuilt, 2: parts[2]}) == data
    with_nodes(tmp_path, 4, test)


def test_decode_makes_a_whole_copy_from_parts_beside_one_of_them(tmp_path):
    data = os.urandom(3 << 20) + b"tail"
    parts = ErasureCoder(2, 1).encode(data)

    async def test(nodes):
        for i, (node, part) in enumerate(zip(nodes, parts, strict=True)):
            node.put(store_id(13, i + 1), 4, part)
        nodes[0].store.delete(store_id(13, 1))      # a data part is lost: parity decodes
        sources = [pb.PartSource(address=n.address, part=i + 1, length=len(parts[i]))
                   for i, n in enumerate(nodes)]
        done = await nodes[1].runner.run(pb.Job(id=12, chunk=13, version=4, decode=pb.Decode(
            k=2, m=1, sources=sources)))
        assert done.ok, done.message
        assert nodes[1].held()[13] == (4, len(data))
        assert nodes[1].store.read(13, 4, 0, len(data)) == data
        assert store_id(13, 2) in nodes[1].held()                 # its part stays
    with_nodes(tmp_path, 3, test)


def test_rebuild_with_too_few_parts_says_which_failed(tmp_path):
    async def test(nodes):
        source, here = nodes
        [part] = ErasureCoder(2, 1).encode(b"x" * 1000)[:1]
        source.put(store_id(12, 1), 1, part)
        done = await here.runner.run(pb.Job(id=11, chunk=12, version=1, rebuild=pb.Rebuild(
            k=2, m=1, part=3, sources=[pb.PartSource(address=source.address, part=1),
                                       pb.PartSource(address=source.address, part=2)])))
        assert not done.ok
        assert "only 1 of the 2 parts" in done.message and "part 1 from" in done.message
        assert here.held() == {}
    with_nodes(tmp_path, 2, test)


def test_a_job_without_a_kind_is_refused_not_ignored(tmp_path):
    async def test(nodes):
        done = await nodes[0].runner.run(pb.Job(id=12, chunk=1, version=1))
        assert not done.ok and "names no kind" in done.message
    with_nodes(tmp_path, 1, test)


def test_the_pure_decisions():
    assert pieces(10, 4) == [(0, 4), (4, 4), (8, 2)] and pieces(0) == []
    assert delete_allowed(5, 0) and delete_allowed(5, 5) and not delete_allowed(5, 4)
    with pytest.raises(JobError, match="needs 3 targets"):
        encode_targets(2, 1, ["a", "b"])
    assert rebuild_part(2, 1, 3) == 2
    with pytest.raises(JobError, match="parts 1..3"):
        rebuild_part(2, 1, 0)


# -- what the control stream tells the master (services/chunk/control.py) ----------------

def test_reports_send_changes_once_and_leave_out_copies_being_made():
    from services.chunk.control import Reports
    from services.chunk.store import ChunkInfo
    r = Reports()
    first = r.full([ChunkInfo(7, 3, 100), ChunkInfo(8, 0, 50)], {})
    assert [(h.chunk, h.version) for h in first.holding] == [(7, 3)]   # 8 is half made
    for ident in (7, 8, store_id(9, 1)):
        r.change(ident)
    r.change(10)
    update = r.incremental({7: None, 8: (4, 50), store_id(9, 1): (2, 10)})  # 10: not read
    assert [(h.chunk, h.version, h.length) for h in update.dropped] == [(7, 3, 100)]
    assert [(h.chunk, h.part, h.version) for h in update.holding] == [(8, 0, 4), (9, 1, 2)]
    assert r.changed == {10}                      # waits for the next message
    quiet = r.incremental({10: None})             # never reported: nothing to drop
    assert not quiet.holding and not quiet.dropped and not r.changed


def test_damage_is_sent_once_and_again_to_a_new_leader_until_the_copy_changes():
    from services.chunk.control import Reports
    from services.chunk.store import ChunkInfo
    r = Reports()
    r.full([ChunkInfo(7, 3, 100)], {})
    assert r.damage(7, 3, "block 1 fails") and not r.damage(7, 3, "block 1 fails")
    assert r.urgent()
    assert [d.detail for d in r.incremental({}).damaged] == ["block 1 fails"]
    assert not r.urgent() and not r.incremental({}).damaged
    again = r.full([ChunkInfo(7, 3, 100)], {8: "header fails its CRC"})
    assert sorted((d.chunk, d.detail) for d in again.damaged) == \
        [(7, "block 1 fails"), (8, "header fails its CRC")]
    r.change(7)                                    # replaced by a good copy
    assert [d.chunk for d in r.full([ChunkInfo(7, 3, 100)], {}).damaged] == []


def test_finished_jobs_go_out_with_the_next_message():
    from services.chunk.control import Reports
    r = Reports()
    r.job_done(pb.JobDone(job=4, ok=True))
    assert r.urgent()
    assert [d.job for d in r.incremental({}).done] == [4]
    assert not r.incremental({}).done


# -- the scrubber's pace (services/chunk/scrubber.py) -------------------------------------

def test_the_scrubber_keeps_to_its_rate_without_saving_up_idle_time():
    from services.chunk.scrubber import Pace
    pace = Pace(64 << 20)
    assert pace.delay(64 << 20, now=100.0) == 1.0
    assert pace.delay(32 << 20, now=101.0) == 0.5
    assert pace.delay(64 << 20, now=200.0) == 1.0     # idle for a while: no burst after
    with pytest.raises(ValueError, match="above 0"):
        Pace(0)


def test_a_slow_count_of_used_space_does_not_hold_up_heartbeats(tmp_path):
    """Counting used bytes stats every chunk file; on a big server that takes longer
    than the master waits for a heartbeat. After the first count, messages carry the
    last count and the next one runs apart."""
    import threading

    from services.chunk import control

    class SlowCount:
        used, counted = 100, threading.Event()

        def used_bytes(self):
            self.counted.wait(5)      # a count that takes as long as the test wants
            return self.used

        def free_bytes(self):
            return 1 << 30

        def __len__(self):
            return 3

    async def run():
        store = SlowCount()
        store.counted.set()
        link = control.ControlLink(["127.0.0.1:1"], "id", "127.0.0.1:2", store, None)
        first = await link._measure_space()          # the first report waits for it
        store.used = 200
        store.counted.clear()                         # the next count hangs
        link._used_at -= control.USED_BYTES_EVERY_S
        second = await link._measure_space()          # must not wait for it
        store.counted.set()
        await asyncio.sleep(0.2)
        third = await link._measure_space()
        return first.used_bytes, second.used_bytes, third.used_bytes

    assert asyncio.run(run()) == (100, 100, 200)
