"""Propose commands to a metadata cluster over one pipelined stream to the leader.

Used by tools, tests and benchmarks (clients proper get sessions and exactly-once
in the client API). A proposal refused by a follower, or lost to a leadership
change, was not applied and is retried at the leader; a proposal whose fate is
unknown (the connection broke after it was sent) is reported as such, never
silently retried.
"""

import asyncio
import collections
import itertools

import grpc

from schemas import raft_pb2 as pb
from schemas import raft_pb2_grpc
from services.common.discovery import find_leader
from services.metadata.raft.transport import GRPC_OPTIONS


class OutcomeUnknownError(Exception):
    """The proposal may or may not have been applied."""


class NoLeaderError(Exception):
    """No node accepted proposals within the deadline."""


class Proposer:
    def __init__(self, addresses: list[str], deadline_s: float = 15.0):
        self.addresses = addresses
        self.deadline_s = deadline_s
        self.leader = ""
        self._connecting = asyncio.Lock()
        self._ids = itertools.count(1)
        self._channel = None
        self._call = None
        self._waiting: dict[int, asyncio.Future] = {}
        self._outgoing: asyncio.Queue[pb.Proposal] | None = None
        self._tasks: list[asyncio.Task] = []
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()
        self._sweeper: asyncio.Task | None = None

    async def _ensure_connected(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        async with self._connecting:
            while self._call is None or self._call.done():
                self.leader = await find_leader(self.addresses)
                if self.leader:
                    await self._connect()
                    return
                if loop.time() > deadline:
                    raise NoLeaderError(f"no leader among {', '.join(self.addresses)} "
                                        f"within {self.deadline_s} s")
                await asyncio.sleep(0.05)

    async def _connect(self) -> None:
        await self._disconnect()
        self._channel = grpc.aio.insecure_channel(self.leader, options=GRPC_OPTIONS)
        self._outgoing = asyncio.Queue()
        self._call = raft_pb2_grpc.RaftStub(self._channel).Propose(self._requests())
        self._tasks = [asyncio.create_task(self._read_replies(self._call))]

    async def _requests(self):
        """The request stream: one writer, and what piled up goes as one batch."""
        queue = self._outgoing
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            yield pb.ProposalBatch(proposals=batch)

    async def _read_replies(self, call) -> None:
        try:
            async for batch in call:
                for reply in batch.replies:
                    fut = self._waiting.pop(reply.id, None)
                    if fut and not fut.done():
                        fut.set_result(reply)
        except grpc.aio.AioRpcError as exc:
            self._fail_all(OutcomeUnknownError(f"connection to {self.leader} broke: "
                                               f"{exc.code().name}"))
            return
        self._fail_all(OutcomeUnknownError(f"{self.leader} closed the stream"))

    async def _sweep(self) -> None:
        """Fail proposals past their deadline (cheaper than a timer per proposal)."""
        loop = asyncio.get_running_loop()
        while self._deadlines:
            await asyncio.sleep(0.1)
            now = loop.time()
            while self._deadlines and self._deadlines[0][0] < now:
                _, ident = self._deadlines.popleft()
                fut = self._waiting.pop(ident, None)
                if fut and not fut.done():
                    fut.set_exception(OutcomeUnknownError("no answer before the deadline"))

    def _fail_all(self, exc: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(exc)

    async def _disconnect(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()
        self._call = self._channel = None

    async def propose(self, commands: list[bytes]) -> tuple[int, list[bytes]]:
        """Apply `commands` (in one log batch); returns (first index, results)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        while loop.time() < deadline:
            await self._ensure_connected(deadline)
            ident = next(self._ids)
            fut = loop.create_future()
            self._waiting[ident] = fut
            self._outgoing.put_nowait(pb.Proposal(id=ident, commands=commands))
            self._deadlines.append((deadline, ident))
            if self._sweeper is None or self._sweeper.done():
                self._sweeper = asyncio.create_task(self._sweep())
            reply = await fut
            if not reply.error:
                return reply.first_index, list(reply.results)
            if reply.outcome_unknown:
                raise OutcomeUnknownError(reply.error)
            # Refused or lost: not applied, so it is safe to try again at the leader.
            if self._call is not None:
                self._call.cancel()
            await asyncio.sleep(0.02)
        raise NoLeaderError(f"no leader accepted the proposal within {self.deadline_s} s")

    async def close(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        await self._disconnect()
