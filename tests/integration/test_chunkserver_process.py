"""`mooseng chunkserver` as a process, against a small ChunkMaster in the test: what it
reports, the jobs it does, the damage its scrubber finds, reconnection, clean stops."""

import asyncio
import os
import subprocess
import sys
import threading
import time

import grpc
import pytest

from mooseng.ports import free_ports
from schemas import chunkmaster_pb2 as pb
from schemas import chunkmaster_pb2_grpc
from services.chunk.parts import store_id
from services.chunk.store import ChunkStore
from tests.integration.chunk_cluster import ChunkCluster


class FakeMaster(chunkmaster_pb2_grpc.ChunkMasterServicer):
    """A ChunkMaster on its own event loop thread: it records every stream's messages
    and sends the jobs the test gives it (or, as a follower, names the leader)."""

    def __init__(self, leader_address: str = ""):
        self.address = f"127.0.0.1:{free_ports(1)[0]}"
        self.leader_address = leader_address
        self.streams: list[list[pb.ServerMessage]] = []
        self.outboxes: dict[str, asyncio.Queue] = {}    # data address -> jobs to send
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = None

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def start(self) -> None:
        async def start():
            self.server = grpc.aio.server()
            chunkmaster_pb2_grpc.add_ChunkMasterServicer_to_server(self, self.server)
            self.server.add_insecure_port(self.address)
            await self.server.start()
        self._call(start())

    def stop(self) -> None:
        if self.server is not None:
            self._call(self.server.stop(0))
            self.server = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def Connect(self, request_iterator, context):
        received: list[pb.ServerMessage] = []
        self.streams.append(received)
        first = await anext(request_iterator)
        received.append(first)
        if self.leader_address:
            yield pb.MasterMessage(leader_address=self.leader_address,
                                   error="this metadata node is not the leader")
            return
        outbox = self.outboxes[first.hello.data_address] = asyncio.Queue()

        async def record():
            async for message in request_iterator:
                received.append(message)
        recording = asyncio.create_task(record())
        try:
            while True:
                yield pb.MasterMessage(jobs=[await outbox.get()])
        finally:
            recording.cancel()

    def send(self, data_address: str, job: pb.Job) -> None:
        self.loop.call_soon_threadsafe(self.outboxes[data_address].put_nowait, job)

    def messages(self, data_address: str) -> list[pb.ServerMessage]:
        return [m for stream in self.streams
                if stream and stream[0].hello.data_address == data_address for m in stream]

    def wait(self, predicate, what: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate()
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{what} did not happen in {timeout} s; streams: "
                             f"{[len(s) for s in self.streams]}")


@pytest.fixture
def master():
    m = FakeMaster()
    m.start()
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def cluster(tmp_path, master):
    c = ChunkCluster(tmp_path, [master.address], n=2)
    try:
        yield c
    finally:
        c.stop_all()


def put(directory: str, ident: int, version: int, data: bytes) -> None:
    """A chunk on disk before the chunkserver starts."""
    os.makedirs(directory, exist_ok=True)
    with ChunkStore([directory]) as store:
        store.create(ident, version)
        store.write(ident, version, 0, data, sync=True)


def hellos(master: FakeMaster, address: str) -> list[pb.ServerMessage]:
    return [m for m in master.messages(address) if m.HasField("hello")]


def done_of(master: FakeMaster, address: str, job: int) -> pb.ServerMessage | None:
    return next((m for m in master.messages(address) if any(d.job == job for d in m.done)),
                None)


def test_hello_and_full_report_name_what_is_on_disk_and_sigterm_exits_0(cluster, master):
    put(cluster.data_dir(0), 7, 3, b"a" * 1000)
    put(cluster.data_dir(0), store_id(9, 2), 1, b"p" * 10)
    cluster.start(0)
    [first] = master.wait(lambda: hellos(master, cluster.address(0)), "a hello")
    assert first.full_report and first.space.free_bytes > 0 and first.space.chunks == 2
    assert {(h.chunk, h.part, h.version, h.length) for h in first.holding} == \
        {(7, 0, 3, 1000), (9, 2, 1, 10)}
    with open(os.path.join(cluster.data_dir(0), "server_id")) as f:
        assert first.hello.server_id == f.read().strip()
    master.wait(lambda: len(master.messages(cluster.address(0))) >= 3, "heartbeats")
    assert cluster.stop(0) == 0
    cluster.start(0)                            # the same id after a restart
    master.wait(lambda: len(hellos(master, cluster.address(0))) == 2, "a second hello")
    assert hellos(master, cluster.address(0))[1].hello.server_id == first.hello.server_id


def test_replicate_and_delete_jobs_are_done_and_reported(cluster, master):
    data = os.urandom(5 << 20)
    put(cluster.data_dir(0), 7, 3, data)
    cluster.start_all()
    for i in range(2):
        master.wait(lambda i=i: hellos(master, cluster.address(i)), f"server {i}'s hello")
    master.send(cluster.address(1), pb.Job(id=1, chunk=7, version=3, replicate=pb.Replicate(
        sources=[cluster.address(0)], length=len(data))))
    reply = master.wait(lambda: done_of(master, cluster.address(1), 1), "the replicate")
    assert reply.done[0].ok, reply.done[0].message
    assert [(h.chunk, h.version, h.length) for h in reply.holding] == [(7, 3, len(data))]

    master.send(cluster.address(0), pb.Job(id=2, chunk=7, version=2, delete=pb.Delete()))
    refused = master.wait(lambda: done_of(master, cluster.address(0), 2), "a refused delete")
    assert not refused.done[0].ok and "version 3" in refused.done[0].message
    master.send(cluster.address(0), pb.Job(id=3, chunk=7, version=3, delete=pb.Delete()))
    deleted = master.wait(lambda: done_of(master, cluster.address(0), 3), "the delete")
    assert deleted.done[0].ok and [h.chunk for h in deleted.dropped] == [7]


def test_a_flipped_byte_on_disk_is_reported_once_by_the_scrubber(cluster, master):
    put(cluster.data_dir(0), 7, 3, b"s" * 300_000)
    cluster.start(0)
    master.wait(lambda: hellos(master, cluster.address(0)), "a hello")
    [path] = [os.path.join(r, f) for r, _, fs in os.walk(cluster.data_dir(0))
              for f in fs if f.endswith(".mng")]
    with open(path, "r+b") as f:
        f.seek(16384 + 200_000)                  # block 3
        f.write(b"Z")

    def damage():
        return [d for m in master.messages(cluster.address(0)) for d in m.damaged]
    [found] = master.wait(damage, "a damage report")
    assert (found.chunk, found.part, found.version) == (7, 0, 3) and "block 3" in found.detail
    time.sleep(1.5)                               # several more scrub passes
    assert len(damage()) == 1


def test_after_the_master_restarts_a_full_report_is_sent_again(cluster, master):
    put(cluster.data_dir(0), 7, 3, b"r" * 100)
    cluster.start(0)
    master.wait(lambda: hellos(master, cluster.address(0)), "a hello")
    master.stop()
    master.start()
    [_, again] = master.wait(lambda: len(hellos(master, cluster.address(0))) == 2
                             and hellos(master, cluster.address(0)), "a second hello")
    assert again.full_report and [h.chunk for h in again.holding] == [7]


def test_a_follower_sends_the_chunkserver_to_the_leader(tmp_path, master):
    follower = FakeMaster(leader_address=master.address)
    follower.start()
    c = ChunkCluster(tmp_path, [follower.address], n=1)
    try:
        c.start(0)
        master.wait(lambda: hellos(master, c.address(0)), "a hello at the leader")
        assert hellos(follower, c.address(0))
    finally:
        c.stop_all()
        follower.close()


@pytest.mark.parametrize("args, complaint", [
    (["--listen", "0.0.0.0:9422"], "not a wildcard"),
    (["--listen", "nowhere"], "is not HOST:PORT"),
    (["--scrub-mibps", "0"], "--scrub-mibps 0"),
    (["--heartbeat-s", "5"], "--heartbeat-s 5.0: at most 3"),
])
def test_bad_arguments_are_refused_clearly(tmp_path, args, complaint):
    base = {"--data": str(tmp_path), "--masters": "127.0.0.1:1", "--listen": "127.0.0.1:0"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    done = subprocess.run([sys.executable, "-m", "mooseng", "chunkserver",
                           *[x for kv in base.items() for x in kv]],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and complaint in done.stderr, done.stderr


def test_a_chunkserver_started_before_its_master_waits_for_it(cluster, master):
    master.stop()
    cluster.start(0)
    time.sleep(1.0)                              # several refused connections
    master.start()
    master.wait(lambda: hellos(master, cluster.address(0)), "a hello")
    assert cluster.running(0)
