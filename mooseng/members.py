"""`mooseng members`: list the metadata cluster's members, or change them one at a time."""

import asyncio

import grpc

from mooseng.status import gather
from schemas import raft_pb2 as pb
from schemas import raft_pb2_grpc


async def _leader(masters: list[str]) -> str | None:
    nodes = await gather(masters)
    leaders = [n for n in nodes if n["role"] == "leader"]
    return max(leaders, key=lambda n: n["term"])["address"] if leaders else None


async def change(masters: list[str], action: str, node: int, address: str,
                 attempts: int = 20) -> tuple[bool, str]:
    """Ask the leader for the change; follow redirects, retry while it is busy."""
    error = "no leader found"
    for _ in range(attempts):
        leader = await _leader(masters)
        if leader:
            async with grpc.aio.insecure_channel(leader) as channel:
                reply = await raft_pb2_grpc.RaftStub(channel).ChangeMembership(
                    pb.MembershipChange(action=action, id=node, address=address), timeout=15)
            if reply.ok:
                return True, (f"{action} {node}: committed at index {reply.index}; voters "
                              f"{sorted(reply.config.voters)}, learners "
                              f"{sorted(reply.config.learners)}")
            error = reply.error
            if "already" in error or "is not" in error or "unknown" in error \
                    or "last" in error or "needs" in error:
                break  # the request itself is wrong: retrying will not help
        await asyncio.sleep(0.25)
    return False, f"mooseng members {action}: {error}"


async def listing(masters: list[str]) -> str:
    nodes = await gather(masters)
    rows = [f"{n['id'] or '-':>3}  {n['address']:<22} {n['role']}" for n in nodes]
    return "\n".join(["ID   ADDRESS                ROLE", *rows])
