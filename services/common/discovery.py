"""Finding the metadata leader: ask every node, believe the highest term.

A node that is stopped or cut off answers nothing until the timeout; waiting for it
would add the whole timeout to every failover. Once some node says it leads, the
others get GRACE_S more to name a newer term (a deposed leader may not know yet),
and the answers in by then decide.
"""

import asyncio

import grpc

from schemas import raft_pb2 as pb
from schemas import raft_pb2_grpc

GRACE_S = 0.1


async def _ask(address: str, timeout: float) -> tuple[int, str] | None:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            s = await raft_pb2_grpc.RaftStub(channel).Status(pb.StatusRequest(),
                                                             timeout=timeout)
        except grpc.aio.AioRpcError:
            return None
    return (s.term, address) if s.role == "leader" else None


async def find_leader(addresses: list[str], timeout: float = 1.0) -> str:
    """The leader's address, or "" while there is none (an election, a partition)."""
    pending = {asyncio.ensure_future(_ask(a, timeout)) for a in addresses}
    found: list[tuple[int, str]] = []
    clock, deadline = asyncio.get_running_loop().time, None
    try:
        while pending:
            wait = None if deadline is None else max(deadline - clock(), 0)
            done, pending = await asyncio.wait(pending, timeout=wait,
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break                      # the grace after a claim has passed
            found += [f for f in (t.result() for t in done) if f]
            if found and deadline is None:
                deadline = clock() + GRACE_S
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    return max(found)[1] if found else ""
