"""Region A as a source of chunks, for a second region's chunk manager.

While region B follows A's log, B's projection names chunk versions that A's
chunkservers wrote and B's do not hold yet. The manager (sync, in its step) asks
`sources(chunk, version)`; the first time the answer is "not known yet" and the
question is queued. A background task asks A's leader in batches, with the same
`locate_chunk_id` read a restore uses, and keeps the answers briefly: a copy A held
a moment ago may have moved to a newer version since (A wrote again), so an answer
is used for one job only and asked again after RETRY_S when it named no copy.
"""

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from schemas import metadata_pb2 as mpb
from schemas import metadata_pb2_grpc
from schemas import namespace_pb2 as pb
from services.common.discovery import find_leader
from services.common.storage_class import StorageClass, StorageClassError, parse
from services.metadata.raft.transport import GRPC_OPTIONS

log = logging.getLogger(__name__)

ROUND_S = 0.2        # how often queued questions go to region A
RETRY_S = 2.0        # an answer without a copy is asked again after this long
BATCH = 500          # questions per round
TIMEOUT_S = 10.0
Key = tuple[int, int]    # (chunk id, version)


class RegionSource:
    def __init__(self, masters: list[str], clock: Callable[[], float] = time.monotonic):
        self.masters, self.clock = masters, clock
        self.wanted: dict[Key, None] = {}                     # in the order asked
        # key -> (when heard, copies or else parts, the parts' shape)
        self.found: dict[Key, tuple[float, list[mpb.ChunkLocation],
                                    StorageClass | None]] = {}
        self._task: asyncio.Task | None = None
        self._complained = 0.0

    # -- the manager's side (sync) --------------------------------------------------------
    def sources(self, chunk: int, version: int
                ) -> tuple[list[mpb.ChunkLocation], StorageClass | None]:
        """Region A's whole copies of the chunk at `version` as last heard, or, when it
        holds none, its erasure-coded parts and their shape; ([], None) while not known
        (the question is queued) or when A held nothing usable."""
        key = (chunk, version)
        entry = self.found.get(key)
        if entry is None or (not entry[1] and self.clock() - entry[0] >= RETRY_S):
            self.found.pop(key, None)
            self.wanted[key] = None
            return [], None
        return entry[1], entry[2]

    def used(self, chunk: int, version: int) -> None:
        """A job was sent with the answer: the next attempt asks A again."""
        self.found.pop((chunk, version), None)

    def forget(self) -> None:
        """No longer leading, or no longer following: nothing is wanted."""
        self.wanted.clear()
        self.found.clear()

    # -- asking region A (async) ----------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="region-source")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(ROUND_S)
            if not self.wanted:
                continue
            batch = list(self.wanted)[:BATCH]
            try:
                answers = await self.ask(batch)
            except (grpc.aio.AioRpcError, TimeoutError, ConnectionError) as exc:
                self._complain(f"{exc.details() if hasattr(exc, 'details') else exc}")
                continue
            except Exception:    # a bug here must not stop fetching for good
                log.exception("asking region A where chunks are failed")
                continue
            now = self.clock()
            for key, (locations, shape) in answers.items():
                self.wanted.pop(key, None)
                self.found[key] = (now, locations, shape)

    async def ask(self, batch: list[Key]
                  ) -> dict[Key, tuple[list[mpb.ChunkLocation], StorageClass | None]]:
        """Ask region A's leader where each (chunk, version) has whole copies or parts;
        the keys A could not answer yet (its leader still learning) are left out."""
        leader = await find_leader(self.masters)
        if not leader:
            raise ConnectionError(f"region A ({', '.join(self.masters)}) has no leader")
        requests = [mpb.Request(id=i + 1, caller=pb.Caller(), locate_chunk_id=mpb.LocateChunkId(
            chunk_id=chunk, version=version)) for i, (chunk, version) in enumerate(batch)]
        answers: dict[Key, tuple[list[mpb.ChunkLocation], StorageClass | None]] = {}
        async with grpc.aio.insecure_channel(leader, options=GRPC_OPTIONS) as channel:
            call = metadata_pb2_grpc.MetadataStub(channel).Session(
                iter([mpb.RequestBatch(requests=requests)]), timeout=TIMEOUT_S)
            heard = 0
            try:
                async for replies in call:
                    for reply in replies.replies:
                        key = batch[reply.id - 1]
                        if reply.status == mpb.Reply.OK:
                            answers[key] = self._usable(key, reply.locations,
                                                        reply.storage_class)
                        else:
                            self._complain(reply.message)
                    heard += len(replies.replies)
                    if heard >= len(batch):
                        break
            finally:
                call.cancel()
        return answers

    def _usable(self, key: Key, locations, text: str
                ) -> tuple[list[mpb.ChunkLocation], StorageClass | None]:
        """Whole copies if A has any; else its parts, when their shape is known."""
        copies = [loc for loc in locations if loc.part == 0]
        if copies or not locations:
            return copies, None
        try:
            shape = parse(text)
        except StorageClassError:
            shape = None
        if shape is None or not shape.is_ec:
            self._complain(f"region A holds chunk {key[0]:x} version {key[1]} only as "
                           f"erasure-coded parts, but names its class {text!r}: their "
                           "shape is unknown, so this region cannot decode them")
            return [], None
        return [loc for loc in locations if loc.part], shape

    def _complain(self, what: str) -> None:
        """A warning at most every 30 s: a lost region A must not flood the log."""
        if self.clock() - self._complained >= 30.0:
            self._complained = self.clock()
            log.warning("fetching chunks from region A (%s): %s", ", ".join(self.masters),
                        what)
