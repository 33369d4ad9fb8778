"""Finding the metadata leader: ask every node, believe the highest term."""

import asyncio

import grpc

from schemas import raft_pb2 as pb
from schemas import raft_pb2_grpc


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
    found = [f for f in await asyncio.gather(*(_ask(a, timeout) for a in addresses)) if f]
    return max(found)[1] if found else ""
