"""gRPC transport between metadata nodes.

Each node keeps one long-lived client stream to each peer and writes every Ready's
messages for that peer as one stream message; answers come back on the peer's own
stream. What cannot be sent is dropped: Raft retransmits. Snapshots travel beside
the stream: offer a manifest, learn what the receiver already holds, send the rest
in CRC32C-checked chunks, so an interrupted transfer resumes where it stopped.
"""

import asyncio
import logging
import os
import shutil

import crc32c
import grpc

from schemas import raft_pb2 as pb
from schemas import raft_pb2_grpc
from services.metadata.raft import codec
from services.metadata.raft.messages import Message, MsgType

log = logging.getLogger(__name__)

QUEUE_LIMIT = 4096          # batches waiting for one peer before we start dropping
CHUNK = 1 << 20
GRPC_OPTIONS = [("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.keepalive_time_ms", 10_000)]
# Long-lived channels (Raft links, the metalogger's): a peer that comes back is reached
# within a second. By default gRPC waits longer and longer between attempts to
# reconnect (up to 2 minutes), so a follower restarted after 40 s down heard nothing
# from its leader for another 30 s.
LINK_OPTIONS = [*GRPC_OPTIONS, ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1_000)]
# The server takes its clients' keepalive pings (every 10 s, also on a quiet channel):
# by default gRPC answers pings more often than every 5 minutes with a GOAWAY
# ("too_many_pings"), which broke peers' Raft streams and clients' sessions.
SERVER_OPTIONS = [*GRPC_OPTIONS,
                  ("grpc.keepalive_permit_without_calls", 1),
                  ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                  ("grpc.http2.max_ping_strikes", 0)]


class PeerLink:
    """Outbound messages to one peer over one long-lived client stream."""

    def __init__(self, node, peer: int, address: str):
        self.node, self.peer, self.address = node, peer, address
        self.channel = grpc.aio.insecure_channel(address, options=LINK_OPTIONS)
        self.stub = raft_pb2_grpc.RaftStub(self.channel)
        self.queue: asyncio.Queue[list[pb.RaftMessage]] = asyncio.Queue(QUEUE_LIMIT)
        self.task = asyncio.create_task(self._run(), name=f"raft-link-{peer}")
        self.snapshot_task: asyncio.Task | None = None

    def send(self, messages: list[Message]) -> None:
        try:
            self.queue.put_nowait([codec.encode(m) for m in messages])
        except asyncio.QueueFull:
            self.node.report_unreachable(self.peer)

    async def _batches(self):
        while True:
            messages = await self.queue.get()
            while not self.queue.empty():  # coalesce whatever piled up
                messages += self.queue.get_nowait()
            yield pb.MessageBatch(messages=messages)

    async def _run(self) -> None:
        backoff = 0.02
        while True:
            try:
                await self.stub.Stream(self._batches())
                backoff = 0.02
            except grpc.aio.AioRpcError as exc:
                log.debug("link %d -> %d: %s", self.node.id, self.peer, exc.code())
            self.node.report_unreachable(self.peer)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    def send_snapshot(self, m: Message, path: str) -> None:
        if self.snapshot_task and not self.snapshot_task.done():
            return  # one transfer at a time; the core asks again if this one fails
        self.snapshot_task = asyncio.create_task(self._send_snapshot(m, path))

    async def _send_snapshot(self, m: Message, path: str) -> None:
        ok = False
        try:
            files = await asyncio.to_thread(manifest, path)
            offer = pb.SnapshotOffer(term=m.term, meta=codec.snapshot_to_pb(m.snapshot),
                                     files=files)
            setattr(offer, "from", m.frm)
            have = await self.stub.OfferSnapshot(offer, timeout=30)
            done = await self.stub.SendSnapshot(
                chunks(path, m.snapshot.index, files, dict(have.received)))
            ok = done.installed
            if not ok:
                log.warning("snapshot to node %d refused: %s", self.peer, done.error)
        except (grpc.aio.AioRpcError, OSError) as exc:
            log.warning("snapshot to node %d failed: %s", self.peer, exc)
        self.node.report_snapshot(self.peer, ok)

    async def close(self) -> None:
        for task in (self.task, self.snapshot_task):
            if task:
                task.cancel()
        await self.channel.close()


def manifest(path: str) -> list[pb.SnapshotFile]:
    out = []
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            crc, size = 0, 0
            while block := f.read(CHUNK):
                crc = crc32c.crc32c(block, crc)
                size += len(block)
        out.append(pb.SnapshotFile(name=name, size=size, crc32c=crc))
    return out


async def chunks(path: str, index: int, files: list[pb.SnapshotFile],
                 received: dict[str, int]):
    for f in files:
        offset = received.get(f.name, 0)
        with open(os.path.join(path, f.name), "rb") as src:
            src.seek(offset)
            while block := src.read(CHUNK):
                yield pb.SnapshotChunk(snapshot_index=index, file=f.name, offset=offset,
                                       data=block, crc32c=crc32c.crc32c(block))
                offset += len(block)


class Transport:
    """Links to every peer, and the receiving side for the gRPC servicer."""

    def __init__(self, node):
        self.node = node
        self.links = {peer: PeerLink(node, peer, address)
                      for peer, address in node.peers.items() if peer != node.id}
        node.send = self.send
        node.send_snapshot = self.send_snapshot
        node.on_members_changed = self.update
        self.incoming = os.path.join(node.data_dir, "snapshots", "incoming")
        self.offer: pb.SnapshotOffer | None = None

    def update(self, peers: dict[int, str]) -> None:
        """Membership changed: link to new members, drop links to removed ones."""
        for peer, address in peers.items():
            link = self.links.get(peer)
            if peer != self.node.id and (link is None or link.address != address):
                if link:
                    asyncio.create_task(link.close())
                self.links[peer] = PeerLink(self.node, peer, address)
        for peer in set(self.links) - set(peers):
            asyncio.create_task(self.links.pop(peer).close())

    def send(self, messages: list[Message]) -> None:
        by_peer: dict[int, list[Message]] = {}
        for m in messages:
            by_peer.setdefault(m.to, []).append(m)
        for peer, batch in by_peer.items():
            link = self.links.get(peer)
            if link:
                link.send(batch)

    def send_snapshot(self, m: Message, path: str) -> None:
        link = self.links.get(m.to)
        if link:
            link.send_snapshot(m, path)
        else:
            self.node.report_snapshot(m.to, False)

    async def receive(self, batches) -> None:
        async for batch in batches:
            for raw in batch.messages:
                try:
                    m = codec.decode(raw)
                except codec.CodecError as exc:
                    log.warning("node %d: dropped a message: %s", self.node.id, exc)
                    continue
                if m.to == self.node.id:
                    self.node.deliver(m)

    # -- receiving snapshots -------------------------------------------------------------
    def accept_offer(self, offer: pb.SnapshotOffer) -> pb.SnapshotHave:
        """Keep what an earlier, interrupted transfer of the same snapshot left (even
        across a restart of either side); drop transfers of other snapshots."""
        for f in offer.files:
            if not _plain_file_name(f.name):
                raise ValueError(f"snapshot offer names a file {f.name!r} outside its folder")
        staged = self._staging(offer.meta.index)
        if os.path.isdir(self.incoming):
            for name in os.listdir(self.incoming):
                if os.path.join(self.incoming, name) != staged:
                    shutil.rmtree(os.path.join(self.incoming, name), ignore_errors=True)
        os.makedirs(staged, exist_ok=True)
        self.offer = offer
        have = {}
        for f in offer.files:
            p = os.path.join(staged, f.name)
            if not os.path.exists(p):
                open(p, "wb").close()  # empty files get no chunks
            have[f.name] = min(os.path.getsize(p), f.size)
        return pb.SnapshotHave(received=have)

    def _staging(self, index: int) -> str:
        return os.path.join(self.incoming, f"snap-{index:020d}")

    async def receive_snapshot(self, stream) -> pb.SnapshotDone:
        offer = self.offer
        if offer is None:
            return pb.SnapshotDone(installed=False, error="no snapshot was offered")
        staged = self._staging(offer.meta.index)
        names = {f.name for f in offer.files}
        async for chunk in stream:
            if chunk.snapshot_index != offer.meta.index or chunk.file not in names:
                return pb.SnapshotDone(installed=False, error="chunk of another snapshot")
            if crc32c.crc32c(chunk.data) != chunk.crc32c:
                return pb.SnapshotDone(installed=False, error=f"bad chunk of {chunk.file}")
            await asyncio.to_thread(_write_at, os.path.join(staged, chunk.file),
                                    chunk.offset, chunk.data)
        bad = await asyncio.to_thread(_verify, staged, offer.files)
        if bad:
            shutil.rmtree(staged, ignore_errors=True)
            return pb.SnapshotDone(installed=False, error=f"file {bad} fails its checksum")
        ready = staged + ".ready"
        shutil.rmtree(ready, ignore_errors=True)
        os.rename(staged, ready)
        self.offer = None
        self.node.deliver(Message(MsgType.SNAP, getattr(offer, "from"), self.node.id,
                                  offer.term, snapshot=codec.snapshot_from_pb(offer.meta),
                                  snapshot_data=ready))
        return pb.SnapshotDone(installed=True)

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()


def _plain_file_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")


def _write_at(path: str, offset: int, data: bytes) -> None:
    mode = "r+b" if os.path.exists(path) else "wb"
    with open(path, mode) as f:
        f.seek(offset)
        f.write(data)
        f.truncate()


def _verify(path: str, files) -> str | None:
    for f in files:
        p = os.path.join(path, f.name)
        crc = 0
        with open(p, "rb") as src:
            while block := src.read(CHUNK):
                crc = crc32c.crc32c(block, crc)
        if crc != f.crc32c or os.path.getsize(p) != f.size:
            return f.name
        with open(p, "rb") as src:
            os.fsync(src.fileno())
    return None
