"""The LogShip service every metadata node serves: its committed log as a stream, and
its latest snapshot in checksummed chunks, for followers outside the Raft group.

A node serves what it has applied (applied entries are committed), so followers of
the Raft group serve as well as the leader; one that is behind serves less. Recent
entries come from memory (services.metadata.recent_entries), older ones from the log
store. Nothing here steps the Raft core: the log and the snapshot files are only read.
"""

import asyncio
import contextlib
import json
import logging
import os

import crc32c
import grpc

from schemas import logship_pb2 as pb
from schemas import logship_pb2_grpc
from schemas import raft_pb2 as raftpb
from services.metadata.raft.log_store import LogCompactedError
from services.metadata.raft.node import RaftNode
from services.metadata.recent_entries import RecentEntries

log = logging.getLogger(__name__)

BATCH_BYTES = 1 << 20   # entry data per batch (one larger entry still goes alone)
CHUNK = 1 << 20
IDLE_S = 1.0            # a heartbeat this often when nothing is applied: followers
                        # see progress and notice a silent, partitioned node


class SnapshotGone(Exception):
    """The snapshot was replaced by a newer one while we opened its files."""


class Snapshot:
    """The node's latest snapshot that a follower can continue from: its checkpoint
    directory and its meta file both exist, at the log's compaction point (so the
    node's log holds what comes after it)."""

    def __init__(self, index: int, term: int, config: bytes, path: str):
        self.index, self.term, self.config, self.path = index, term, config, path


def servable_snapshot(node: RaftNode) -> Snapshot | None:
    index = node.log.snapshot_index
    if index == 0:
        return None
    path = os.path.join(node.data_dir, "snapshots", f"snap-{index:020d}")
    meta = os.path.join(node.data_dir, f"snapshot-{index:020d}.json")
    try:
        with open(meta) as f:
            raw = json.load(f)
    except (OSError, ValueError):
        return None   # a snapshot installed from the leader leaves no checkpoint here
    if not os.path.isdir(path):
        return None
    return Snapshot(raw["index"], raw["term"], raw["config"].encode(), path)


class FollowServicer(logship_pb2_grpc.LogShipServicer):
    def __init__(self, node: RaftNode, idle_s: float = IDLE_S,
                 batch_bytes: int = BATCH_BYTES):
        self.node, self.idle_s, self.batch_bytes = node, idle_s, batch_bytes
        self._snapshot: Snapshot | None = None   # cached by index: read once per snapshot
        self.recent = RecentEntries()
        self._applied = asyncio.Event()   # replaced each time it fires
        node.on_applied.append(self._on_applied)

    def _on_applied(self, entries) -> None:
        self.recent.add(entries)
        fired, self._applied = self._applied, asyncio.Event()
        fired.set()

    # -- Follow ---------------------------------------------------------------------------
    async def Follow(self, request, context):
        after, quiet = request.after_index, True
        while True:
            applied = self._applied   # taken before looking: no wake-up is lost
            entries = self._entries_after(after)
            if entries is None:
                yield self._batch(after, snapshot_needed=True)
                return   # the follower fetches the snapshot and comes back after it
            if entries:
                yield self._batch(after, entries)
                after, quiet = entries[-1].index, False
                continue
            if quiet:                              # the first answer goes out at once
                yield self._batch(after)
            try:
                await asyncio.wait_for(applied.wait(), self.idle_s)
                quiet = False
            except TimeoutError:
                quiet = True

    def _entries_after(self, after: int) -> list | None:
        """Applied entries after `after`, up to a batch: from memory if recent enough,
        else from the log; None if the log was compacted past them."""
        upto = self.node.machine.applied_index
        if upto <= after:
            return []
        if recent := self.recent.after(after, self.batch_bytes):
            return recent
        upto = min(upto, self.node.log.last_index)
        if after + 1 < self.node.log.first_index:
            return None
        try:
            return self.node.log.entries(after + 1, upto + 1, max_bytes=self.batch_bytes)
        except LogCompactedError:
            return None

    def _batch(self, after: int, entries=(), snapshot_needed: bool = False) -> pb.FollowBatch:
        node = self.node
        snap = self._latest_snapshot()
        applied = node.machine.applied_index
        prev_term = None
        if after <= applied:
            prev_term = self.recent.term_at(after) or node.log.term_at(after)
        return pb.FollowBatch(
            node_id=node.id, commit_index=node.core.commit, applied_index=applied,
            prev_index=after, prev_term=prev_term or 0,
            entries=[raftpb.Entry(index=e.index, term=e.term, kind=e.kind, data=e.data)
                     for e in entries],
            snapshot_index=snap.index if snap else 0, snapshot_term=snap.term if snap else 0,
            snapshot_needed=snapshot_needed)

    def _latest_snapshot(self) -> Snapshot | None:
        if self._snapshot is None or self._snapshot.index != self.node.log.snapshot_index:
            self._snapshot = servable_snapshot(self.node)
        return self._snapshot

    # -- FetchSnapshot --------------------------------------------------------------------
    async def FetchSnapshot(self, request, context):
        opened = None
        for _ in range(3):   # a new snapshot may replace the one we started to open
            snap = servable_snapshot(self.node)
            if snap is None:
                await context.abort(grpc.StatusCode.UNAVAILABLE, (
                    f"metadata node {self.node.id} has no snapshot it can serve (it took "
                    "none since its log began, or installed its last one from the "
                    "leader); ask another node"))
            with contextlib.suppress(SnapshotGone):
                opened = await asyncio.to_thread(_open_all, snap.path)
                break
        if opened is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "snapshots are being replaced too quickly; retry")
        try:
            files = await asyncio.to_thread(_manifest, opened)
            yield pb.SnapshotPiece(header=pb.SnapshotHeader(
                index=snap.index, term=snap.term, config=snap.config, files=files))
            have = dict(request.have) if request.have_index == snap.index else {}
            for f in files:
                async for chunk in _chunks(snap.index, f, opened[f.name], have.get(f.name, 0)):
                    yield pb.SnapshotPiece(chunk=chunk)
        finally:
            for fd in opened.values():
                os.close(fd)


def _open_all(path: str) -> dict[str, int]:
    """Open every file of a checkpoint. Open descriptors keep the data readable even
    if the node deletes the checkpoint for a newer one while we stream it."""
    opened: dict[str, int] = {}
    try:
        for name in sorted(os.listdir(path)):
            opened[name] = os.open(os.path.join(path, name), os.O_RDONLY)
    except FileNotFoundError:
        for fd in opened.values():
            os.close(fd)
        raise SnapshotGone(path) from None
    return opened


def _manifest(opened: dict[str, int]) -> list[raftpb.SnapshotFile]:
    out = []
    for name, fd in opened.items():
        crc, size = 0, 0
        while block := os.pread(fd, CHUNK, size):
            crc = crc32c.crc32c(block, crc)
            size += len(block)
        out.append(raftpb.SnapshotFile(name=name, size=size, crc32c=crc))
    return out


async def _chunks(index: int, f: raftpb.SnapshotFile, fd: int, offset: int):
    offset = min(offset, f.size)
    while offset < f.size:
        data = await asyncio.to_thread(os.pread, fd, min(CHUNK, f.size - offset), offset)
        if not data:
            raise OSError(f"snapshot file {f.name} ended at {offset} of {f.size} bytes")
        yield raftpb.SnapshotChunk(snapshot_index=index, file=f.name, offset=offset, data=data,
                                   crc32c=crc32c.crc32c(data))
        offset += len(data)
