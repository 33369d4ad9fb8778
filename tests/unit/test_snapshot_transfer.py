"""Snapshot transfer on the receiving side: checked chunks, resumed after a break."""

import asyncio

import crc32c
import pytest

from schemas import raft_pb2 as pb
from services.metadata.raft import codec
from services.metadata.raft.messages import Config, MsgType, SnapshotMeta
from services.metadata.raft.transport import Transport

FILES = {"000001.sst": b"x" * 3000, "CURRENT": b"MANIFEST-000001\n", "empty": b""}
META = SnapshotMeta(42, 3, Config(frozenset({1, 2})))


class Node:
    """Just what the transport needs of a node."""

    def __init__(self, data_dir):
        self.id, self.peers, self.data_dir = 2, {2: "127.0.0.1:1"}, str(data_dir)
        self.delivered = []

    def deliver(self, m):
        self.delivered.append(m)


def offer() -> pb.SnapshotOffer:
    o = pb.SnapshotOffer(term=3, meta=codec.snapshot_to_pb(META), files=[
        pb.SnapshotFile(name=n, size=len(d), crc32c=crc32c.crc32c(d)) for n, d in FILES.items()])
    setattr(o, "from", 1)
    return o


def chunks(start: dict[str, int], size: int = 1000, corrupt: bool = False):
    for name, data in FILES.items():
        for offset in range(start.get(name, 0), len(data), size):
            block = data[offset:offset + size]
            crc = crc32c.crc32c(block) ^ (1 if corrupt else 0)
            yield pb.SnapshotChunk(snapshot_index=42, file=name, offset=offset, data=block,
                                   crc32c=crc)


async def stream(items, break_after: int | None = None):
    for i, item in enumerate(items):
        if break_after is not None and i == break_after:
            raise ConnectionError("the sender went away")
        yield item


def test_an_interrupted_transfer_resumes_where_it_stopped_even_after_a_restart(tmp_path):
    async def run():
        node = Node(tmp_path)
        first = Transport(node)
        assert dict(first.accept_offer(offer()).received) == dict.fromkeys(FILES, 0)
        with pytest.raises(ConnectionError):
            await first.receive_snapshot(stream(chunks({}), break_after=2))
        again = Transport(Node(tmp_path))         # the receiver restarted meanwhile
        have = dict(again.accept_offer(offer()).received)
        assert have["000001.sst"] == 2000 and have["CURRENT"] == 0
        done = await again.receive_snapshot(stream(chunks(have)))
        assert done.installed, done.error
        [m] = again.node.delivered
        assert m.type == MsgType.SNAP and m.snapshot == META and m.frm == 1
        for name, data in FILES.items():
            with open(f"{m.snapshot_data}/{name}", "rb") as f:
                assert f.read() == data
    asyncio.run(run())


def test_a_damaged_chunk_is_refused(tmp_path):
    async def run():
        t = Transport(Node(tmp_path))
        t.accept_offer(offer())
        done = await t.receive_snapshot(stream(chunks({}, corrupt=True)))
        assert not done.installed and "bad chunk" in done.error
        assert t.node.delivered == []
    asyncio.run(run())


def test_an_offer_of_another_snapshot_drops_the_old_partial_one(tmp_path):
    async def run():
        t = Transport(Node(tmp_path))
        t.accept_offer(offer())
        with pytest.raises(ConnectionError):
            await t.receive_snapshot(stream(chunks({}), break_after=1))
        newer = offer()
        newer.meta.index = 50
        assert set(dict(t.accept_offer(newer).received).values()) == {0}
    asyncio.run(run())
