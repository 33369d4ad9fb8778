"""The metalogger's loop: follow the committed log of any metadata node into an
archive, through leader changes, node deaths and log compactions.

Each round ranks the masters (most applied first; unreachable ones last) and
follows the best one with `LogShip.Follow`, asking for what comes after the
archive's last index, so a restart resumes where the archive ends. Every batch is
checked to continue the archive (services.logship.continuity) and synced before it
counts as received. When the nodes have compacted past the archive's end, the best
one's snapshot is fetched and following continues after it. A node that goes
silent, or stalls while another is ahead, is left for a better one.
"""

import asyncio
import contextlib
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field

import grpc

from schemas import logship_pb2 as pb
from schemas import logship_pb2_grpc, raft_pb2_grpc
from schemas import raft_pb2 as raftpb
from services.logship.archive import Archive, ArchiveGapError
from services.logship.continuity import GapError, check_batch, snapshot_wanted
from services.logship.snapshot_fetch import Fetched, SnapshotFetchError, fetch_snapshot
from services.metadata.raft.messages import Entry
from services.metadata.raft.transport import LINK_OPTIONS

log = logging.getLogger(__name__)

STAGING = "incoming"        # ARCHIVE/incoming: snapshots being fetched (the archive
                            # keeps its own files in segments/ and snapshots/)
SNAPSHOT_RETRY_S = 30.0     # after a failed fetch of an announced snapshot


@dataclass(frozen=True)
class FollowOptions:
    masters: list[str]
    retain_age_s: float | None = None
    retain_bytes: int | None = None
    retention_every_s: float = 60.0
    silence_s: float = 5.0         # nothing on the stream this long: the node is gone
    stall_check_s: float = 5.0     # no new entries this long: is another node ahead?
    status_timeout_s: float = 1.0
    backoff_s: tuple[float, float] = (0.1, 5.0)


@dataclass
class FollowStats:
    """What the metalogger reports (metrics, logs, tests)."""

    archived_index: int = 0
    commit_index: int = 0          # the highest commit index a node told us
    gaps: int = 0
    reconnects: int = 0
    snapshots_archived: int = 0
    snapshot_jumps: int = 0        # entries compacted everywhere before we got them
    source: str = ""               # the node followed now ("" while between nodes)
    last_gap: str = ""
    retention: dict = field(default_factory=dict)

    @property
    def lag(self) -> int:
        return max(0, self.commit_index - self.archived_index)


class _Outcome:
    SNAPSHOT_NEEDED = "snapshot needed"
    STALLED = "stalled while another node is ahead"


class _Silent(Exception):
    pass


class ReadAhead:
    """Reads a Follow stream ahead while the archive syncs, so that the batches that
    arrived meanwhile go to disk together, with one fsync (group commit): the
    metalogger keeps up with the cluster however small its batches are."""

    DEPTH = 256

    def __init__(self, call, silence_s: float):
        self.queue: asyncio.Queue = asyncio.Queue(self.DEPTH)
        self.task = asyncio.create_task(self._run(call, silence_s))

    async def _run(self, call, silence_s: float) -> None:
        """Batches, then None at the stream's end or the exception that ended it."""
        while True:
            try:
                item = await asyncio.wait_for(call.read(), silence_s)
            except TimeoutError:
                item = _Silent()
            except Exception as exc:   # noqa: BLE001 (handed to the consumer, who raises it)
                item = exc
            if item is grpc.aio.EOF:
                item = None
            await self.queue.put(item)
            if not isinstance(item, pb.FollowBatch):
                return

    async def take(self) -> list:
        """What has arrived (waiting for at least one item); the stream's end or
        failure, if any, comes last."""
        items = [await self.queue.get()]
        while not self.queue.empty() and isinstance(items[-1], pb.FollowBatch):
            items.append(self.queue.get_nowait())
        return items


class Follower:
    def __init__(self, archive: Archive, options: FollowOptions):
        self.archive, self.options = archive, options
        self.stats = FollowStats(archived_index=archive.last_index)
        self.staging = os.path.join(archive.directory, STAGING)
        self._channels = {a: grpc.aio.insecure_channel(a, options=LINK_OPTIONS)
                          for a in options.masters}
        self._disk: asyncio.Future | None = None   # archive work running in a thread
        self._pending: Fetched | None = None       # a snapshot ahead of the archive
        self._next_retention = 0.0
        self._snapshot_retry_at = 0.0
        self._snapshot_index = max((s.index for s in archive.snapshots()), default=0)

    # -- the rounds ---------------------------------------------------------------------
    async def run(self) -> None:
        """Follow until cancelled."""
        low, high = self.options.backoff_s
        backoff = low
        while True:
            before = self.archive.last_index
            await self._round()
            if self.archive.last_index != before:
                backoff = low
                continue
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, high)

    async def _round(self) -> None:
        """Follow the best node; when it fails before anything arrived, the next one.
        If every node that answered has compacted past us, take a snapshot."""
        compacted = []
        for address in await self._ranked():
            before = self.archive.last_index
            outcome = await self._attempt(address)
            if outcome == _Outcome.SNAPSHOT_NEEDED:
                compacted.append(address)
            elif outcome is not None or self.archive.last_index != before:
                return   # rank again: the cluster may have changed meanwhile
        for address in compacted:
            if await self._restart_from_snapshot(address):
                return

    async def _attempt(self, address: str) -> str | None:
        """Follow one node until the stream ends; the reason, or None after a failure."""
        self.stats.reconnects += 1
        try:
            return await self._follow(address)
        except GapError as exc:
            self.stats.gaps += 1
            self.stats.last_gap = str(exc)
            log.error("GAP: %s; nothing of that batch was archived (the archive ends at "
                      "%d); reconnecting", exc, self.archive.last_index)
        except grpc.aio.AioRpcError as exc:
            log.warning("following %s: %s %s", address, exc.code().name, exc.details())
        except _Silent:
            log.warning("following %s: nothing heard for %.0f s; trying another node",
                        address, self.options.silence_s)
        except SnapshotFetchError as exc:
            log.warning("fetching the snapshot of %s: %s", address, exc)
        finally:
            self.stats.source = ""
        return None

    async def _ranked(self) -> list[str]:
        """Masters by how much they have applied (leader first among equals); those
        that do not answer go last (they may be back by the time we get to them)."""
        async def status(address: str):
            stub = raft_pb2_grpc.RaftStub(self._channels[address])
            try:
                s = await stub.Status(raftpb.StatusRequest(),
                                      timeout=self.options.status_timeout_s)
            except grpc.aio.AioRpcError:
                return (0, -1, 0, address)
            return (1, s.applied_index, int(s.role == "leader"), address)
        answers = await asyncio.gather(*(status(a) for a in self.options.masters))
        return [a[3] for a in sorted(answers, reverse=True)]

    # -- one stream ---------------------------------------------------------------------
    async def _follow(self, address: str) -> str | None:
        stub = logship_pb2_grpc.LogShipStub(self._channels[address])
        call = stub.Follow(pb.FollowRequest(after_index=self.archive.last_index))
        log.info("following %s after index %d", address, self.archive.last_index)
        self.stats.source = address
        self._snapshot_retry_at = 0.0   # a failed fetch from another node says nothing here
        reader = ReadAhead(call, self.options.silence_s)
        progress_at = checked_at = time.monotonic()
        try:
            while True:
                items = await reader.take()
                batches = [b for b in items if isinstance(b, pb.FollowBatch)]
                needed = next((b for b in batches if b.snapshot_needed), None)
                if needed:
                    batches = batches[:batches.index(needed)]
                for b in batches:
                    self.stats.commit_index = max(self.stats.commit_index, b.commit_index)
                if any(b.entries for b in batches):
                    await self._store(batches, address)
                    progress_at = time.monotonic()
                if needed:
                    log.info("%s compacted its log past index %d (its snapshot is at %d)",
                             address, self.archive.last_index, needed.snapshot_index)
                    return _Outcome.SNAPSHOT_NEEDED
                if isinstance(items[-1], Exception):
                    raise items[-1]
                if items[-1] is None:
                    log.info("%s ended the stream", address)
                    return None
                await self._maybe_archive_snapshot(batches[-1], stub)
                await self._maybe_apply_retention()
                now = time.monotonic()
                if (now - progress_at > self.options.stall_check_s
                        and now - checked_at > self.options.stall_check_s):
                    checked_at = now
                    if await self._another_is_ahead(address):
                        return _Outcome.STALLED
        finally:
            reader.task.cancel()
            call.cancel()

    async def _store(self, batches: list[pb.FollowBatch], address: str) -> None:
        """Check that the batches continue the archive, then append and sync them with
        one fsync. A gap stores the batches before it, then raises GapError."""
        last_index, last_term = self.archive.last_index, self.archive.last_term
        entries: list[Entry] = []
        gap = None
        for b in batches:
            got = [Entry(e.index, e.term, e.kind, e.data) for e in b.entries]
            if not got:
                continue
            try:
                check_batch(last_index, last_term, b.prev_index, b.prev_term, got,
                            source=f"node {b.node_id} ({address})")
            except GapError as exc:
                gap = exc
                break
            entries += got
            last_index, last_term = got[-1].index, got[-1].term
        if entries:
            try:
                await self._on_disk(self._append_and_sync, entries)
            except ArchiveGapError as exc:
                raise GapError(str(exc)) from None
            self.stats.archived_index = self.archive.last_index   # durable: count it now
        if gap is not None:
            raise gap
        if self._pending and self._pending.index <= self.archive.last_index:
            await self._archive_snapshot(self._pending)

    def _append_and_sync(self, entries: list[Entry]) -> None:
        self.archive.append(entries)
        self.archive.sync()

    async def _another_is_ahead(self, address: str) -> bool:
        ranked = await self._ranked()
        best = ranked[0] if ranked else address
        if best == address:
            return False
        stub = raft_pb2_grpc.RaftStub(self._channels[best])
        with contextlib.suppress(grpc.aio.AioRpcError):
            s = await stub.Status(raftpb.StatusRequest(), timeout=self.options.status_timeout_s)
            if s.applied_index > self.archive.last_index:
                log.warning("%s has applied nothing new for %.0f s while %s is at %d; "
                            "switching", address, self.options.stall_check_s, best,
                            s.applied_index)
                return True
        return False

    # -- snapshots ----------------------------------------------------------------------
    async def _maybe_archive_snapshot(self, batch: pb.FollowBatch, stub) -> None:
        """Keep the cluster's periodic snapshots too: restores start from them."""
        known = max(self._snapshot_index, self._pending.index if self._pending else 0)
        if not snapshot_wanted(batch.snapshot_index, known, self.archive.last_index) or \
                time.monotonic() < self._snapshot_retry_at:
            return
        try:
            fetched = await fetch_snapshot(stub, self.staging)
        except (grpc.aio.AioRpcError, SnapshotFetchError) as exc:
            # Entries matter more than this snapshot: keep following, try again later.
            self._snapshot_retry_at = time.monotonic() + SNAPSHOT_RETRY_S
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc
            log.warning("fetching the snapshot at %d of node %d: %s; trying again in %.0f s",
                        batch.snapshot_index, batch.node_id, detail, SNAPSHOT_RETRY_S)
            return
        if fetched.index <= self.archive.last_index:
            await self._archive_snapshot(fetched)
        else:   # the node took a newer one meanwhile: keep it until the entries catch up
            self._pending = fetched

    async def _restart_from_snapshot(self, address: str) -> bool:
        """The log after the archive's end is gone from the nodes: continue from a
        snapshot. Entries between are lost to point-in-time restores: say so."""
        stub = logship_pb2_grpc.LogShipStub(self._channels[address])
        self._pending = None   # its staged files make way for this fetch
        try:
            fetched = await fetch_snapshot(stub, self.staging)
        except (grpc.aio.AioRpcError, SnapshotFetchError) as exc:
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc
            log.warning("fetching the snapshot of %s: %s", address, detail)
            return False
        last = self.archive.last_index
        if fetched.index <= last:
            return False   # nothing to jump over; follow again
        if last:
            self.stats.snapshot_jumps += 1
            log.warning("entries %d..%d were compacted on every reachable node before "
                        "they were archived; the archive continues from the snapshot at "
                        "%d (no point-in-time restore between)", last + 1, fetched.index,
                        fetched.index)
        else:
            log.info("the cluster's log begins after its snapshot at %d; the archive "
                     "starts from it", fetched.index)
        await self._archive_snapshot(fetched)
        return True

    async def _archive_snapshot(self, fetched: Fetched) -> None:
        held = await self._on_disk(self.archive.term_at, fetched.index) \
            if fetched.index <= self.archive.last_index else None
        if held is not None and held != fetched.term:
            self._pending = None
            raise GapError(f"a node's snapshot at index {fetched.index} has term "
                           f"{fetched.term}, the archive's entry there has term {held}: "
                           "the histories differ")
        await self._on_disk(self.archive.add_snapshot, fetched.index, fetched.term,
                            fetched.config, fetched.path)
        self._snapshot_index = max(self._snapshot_index, fetched.index)
        if self._pending and self._pending.index <= fetched.index:
            self._pending = None
        self.stats.snapshots_archived += 1
        self.stats.archived_index = self.archive.last_index
        await asyncio.to_thread(shutil.rmtree, fetched.path, True)
        log.info("archived the snapshot at index %d (term %d)", fetched.index, fetched.term)

    # -- upkeep -------------------------------------------------------------------------
    async def _maybe_apply_retention(self) -> None:
        o = self.options
        if (o.retain_age_s is None and o.retain_bytes is None) or \
                time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + o.retention_every_s
        report = await self._on_disk(self.archive.apply_retention, o.retain_age_s,
                                     o.retain_bytes)
        self.stats.retention = report
        if report.get("dropped_segments") or report.get("dropped_snapshots"):
            log.info("retention: dropped %d segment(s) and %d snapshot(s), %d bytes; the "
                     "archive now begins at index %d", report["dropped_segments"],
                     report["dropped_snapshots"], report["freed_bytes"],
                     report.get("first_index", 0))

    async def _on_disk(self, call, *args):
        """Run archive work in a thread. Cancelling the caller (SIGTERM) does not
        cancel the work: close() waits for it before it closes the archive."""
        self._disk = asyncio.ensure_future(asyncio.to_thread(call, *args))
        return await asyncio.shield(self._disk)

    async def close(self) -> None:
        if self._disk is not None:
            with contextlib.suppress(Exception):
                await self._disk
        for channel in self._channels.values():
            await channel.close()
        await asyncio.to_thread(self.archive.close)
