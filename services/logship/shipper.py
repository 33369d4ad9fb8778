"""`mooseng region follow`: ship region A's committed log into region B's cluster.

Each round asks B where it is (the shipped position B's fold records with every
shipped batch), follows A's leader with `LogShip.Follow` after that index, and
proposes what arrives into B's Raft log as ShipEntries commands, several in flight
at once. B's fold is the authority: it applies only batches that continue what it
holds, and refuses everything once B was promoted. So a restart of the shipper or of
B resumes exactly after B's position, duplicates are ignored, and any doubt (a
refused batch, a lost proposal, a broken stream) is settled by asking B again.

When A has compacted its log past B's position, the entries B needs are gone from
A: the shipper stops and says that B must be seeded again from A's snapshot
(`mooseng region seed`, services/logship/region_seed.py).
"""

import asyncio
import collections
import errno
import logging
import random
import time
from dataclasses import dataclass

import grpc

from schemas import logship_pb2 as lspb
from schemas import logship_pb2_grpc
from schemas import namespace_pb2 as pb
from services.common.discovery import find_leader
from services.logship.continuity import GapError, check_batch
from services.logship.follower import ReadAhead
from services.logship.region_status import RegionUnavailableError, region_info
from services.metadata.raft.messages import NORMAL, Entry
from services.metadata.raft.proposer import NoLeaderError, OutcomeUnknownError, Proposer
from services.metadata.raft.transport import GRPC_OPTIONS

log = logging.getLogger(__name__)

SHIP_BYTES = 1 << 20    # command bytes per ShipEntries (one bigger entry goes alone)
REPORT_S = 10.0         # a progress line in the log this often while shipping


class FencedError(Exception):
    """Region B was promoted: it refuses shipped entries, for good."""


class ReseedNeededError(Exception):
    """Region A no longer holds the entries region B needs next."""


class NotEmptyError(Exception):
    """Region B has a namespace of its own: following A would mix two histories."""


class _Resync(Exception):
    """Something went wrong that asking B for its position again settles."""


@dataclass(frozen=True)
class ShipOptions:
    source: list[str]              # region A's metadata nodes
    target: list[str]              # region B's
    in_flight: int = 4             # ShipEntries proposed and not yet answered
    silence_s: float = 5.0         # nothing from A this long: follow again
    backoff_s: tuple[float, float] = (0.1, 5.0)
    propose_deadline_s: float = 15.0


@dataclass
class ShipStats:
    shipped_index: int = 0         # B's position as last confirmed
    source_commit: int = 0         # A's commit index as last heard
    batches: int = 0
    resyncs: int = 0

    @property
    def lag(self) -> int:
        return max(0, self.source_commit - self.shipped_index)


def ship_command(batches: list[lspb.FollowBatch]) -> pb.Command:
    """One ShipEntries for consecutive Follow batches (already checked)."""
    first = batches[0]
    ship = pb.ShipEntries(prev_index=first.prev_index, prev_term=first.prev_term,
                          source_commit=max(b.commit_index for b in batches))
    for b in batches:
        for e in b.entries:
            ship.entries.add(index=e.index, term=e.term,
                             command=e.data if e.kind == NORMAL else b"")
    return pb.Command(ship_entries=ship)


def group(batches: list[lspb.FollowBatch], limit: int = SHIP_BYTES) -> list[list]:
    """Batches with entries, grouped so that each group makes one ShipEntries of
    about `limit` bytes at most."""
    groups, size = [], 0
    for b in batches:
        if not b.entries:
            continue
        weight = sum(len(e.data) for e in b.entries) + 24 * len(b.entries)
        if groups and size + weight <= limit:
            groups[-1].append(b)
            size += weight
        else:
            groups.append([b])
            size = weight
    return groups


class Shipper:
    def __init__(self, options: ShipOptions):
        self.options = options
        self.stats = ShipStats()
        self.proposer = Proposer(options.target, deadline_s=options.propose_deadline_s)
        self._reported_at = 0.0

    async def run(self) -> None:
        """Ship until cancelled; FencedError, ReseedNeededError or NotEmptyError end it."""
        low, high = self.options.backoff_s
        backoff = low
        while True:
            before = self.stats.shipped_index
            try:
                await self._round()
            except (_Resync, GapError) as exc:
                self.stats.resyncs += 1
                log.warning("%s; asking region B for its position again", exc)
            except (grpc.aio.AioRpcError, RegionUnavailableError, NoLeaderError,
                    OutcomeUnknownError) as exc:
                detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc
                log.warning("shipping paused: %s", detail)
            if self.stats.shipped_index != before:
                backoff = low
                continue
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, high)

    async def position(self) -> tuple[int, int]:
        """B's shipped (index, term); FencedError once B was promoted."""
        info = await region_info(self.options.target)
        if info.promoted:
            raise FencedError(
                f"region B ({', '.join(self.options.target)}) was promoted to a primary; "
                "it refuses entries shipped from region A. Nothing was shipped.")
        self.stats.shipped_index = info.shipped_index
        self.stats.source_commit = max(self.stats.source_commit, info.source_commit)
        return info.shipped_index, info.shipped_term

    async def _round(self) -> None:
        index, term = await self.position()
        source = await find_leader(self.options.source)
        if not source:
            raise _Resync(f"region A ({', '.join(self.options.source)}) has no leader")
        async with grpc.aio.insecure_channel(source, options=GRPC_OPTIONS) as channel:
            call = logship_pb2_grpc.LogShipStub(channel).Follow(
                lspb.FollowRequest(after_index=index))
            log.info("shipping region A's log from %s after index %d", source, index)
            reader = ReadAhead(call, self.options.silence_s)
            try:
                await self._ship(reader, index, term, source)
            finally:
                reader.task.cancel()
                call.cancel()

    async def _ship(self, reader: ReadAhead, index: int, term: int, source: str) -> None:
        pending: collections.deque = collections.deque()
        try:
            while True:
                items = await reader.take()
                batches = [b for b in items if isinstance(b, lspb.FollowBatch)]
                for b in batches:
                    if b.snapshot_needed:
                        raise ReseedNeededError(
                            f"region A ({source}) compacted its log past index {index}, "
                            f"where region B is (A's snapshot is at {b.snapshot_index}): "
                            "the entries B needs are gone. Stop region B, move its node "
                            "directories aside, seed new ones from A's snapshot with "
                            "`mooseng region seed --from A_MASTERS --into DIR,...`, start "
                            "B and follow again")
                    self.stats.source_commit = max(self.stats.source_commit, b.commit_index)
                for chunk in group(batches):
                    for b in chunk:
                        got = [Entry(e.index, e.term, e.kind, e.data) for e in b.entries]
                        check_batch(index, term, b.prev_index, b.prev_term, got,
                                    source=f"region A's node {b.node_id} ({source})")
                        index, term = got[-1].index, got[-1].term
                    command = ship_command(chunk).SerializeToString()
                    pending.append((asyncio.ensure_future(self.proposer.propose([command])),
                                    index))
                    while len(pending) >= self.options.in_flight:
                        await self._settle(pending.popleft())
                while pending and pending[0][0].done():
                    await self._settle(pending.popleft())
                if isinstance(items[-1], grpc.aio.AioRpcError):
                    raise items[-1]
                if isinstance(items[-1], Exception):   # silence
                    raise _Resync(f"nothing heard from {source} for "
                                  f"{self.options.silence_s:.0f} s")
                if items[-1] is None:
                    raise _Resync(f"{source} ended the Follow stream")
        finally:
            for task, _ in pending:
                task.cancel()

    async def _settle(self, item) -> None:
        task, last = item
        _, [raw] = await task
        result = pb.Result.FromString(raw)
        if result.errno == errno.EROFS:
            raise FencedError(f"region B refused shipped entries: {result.message}")
        if result.errno == errno.ENOTEMPTY:
            raise NotEmptyError(f"region B refused region A's log: {result.message}")
        if result.errno:
            raise _Resync(f"region B refused a shipped batch: {result.message}")
        self.stats.shipped_index = max(self.stats.shipped_index, last)
        self.stats.batches += 1
        if time.monotonic() - self._reported_at > REPORT_S:
            self._reported_at = time.monotonic()
            log.info("region B holds region A's log up to index %d (A's commit index %d: "
                     "%d behind)", self.stats.shipped_index, self.stats.source_commit,
                     self.stats.lag)

    async def close(self) -> None:
        await self.proposer.close()
