"""`mooseng status`: what every metadata node says about itself."""

import asyncio
import json

import grpc

from schemas import raft_pb2 as pb
from schemas import raft_pb2_grpc

FIELDS = ("id", "address", "role", "term", "commit_index", "applied_index")


async def _one(address: str, timeout: float) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            s = await raft_pb2_grpc.RaftStub(channel).Status(pb.StatusRequest(),
                                                             timeout=timeout)
        except grpc.aio.AioRpcError:
            return {"id": None, "address": address, "role": "unreachable", "term": None,
                    "commit_index": None, "applied_index": None, "leader": None}
    return {"id": s.id, "address": address, "role": s.role, "term": s.term,
            "commit_index": s.commit_index, "applied_index": s.applied_index,
            "leader": s.leader, "last_index": s.last_index,
            "snapshot_index": s.snapshot_index, "log_bytes": s.log_bytes}


async def gather(addresses: list[str], timeout: float = 2.0) -> list[dict]:
    nodes = await asyncio.gather(*(_one(a, timeout) for a in addresses))
    leader_commit = max((n["commit_index"] or 0 for n in nodes if n["role"] == "leader"),
                        default=None)
    for n in nodes:
        n["lag"] = (leader_commit - n["applied_index"]
                    if leader_commit is not None and n["applied_index"] is not None else None)
    return nodes


def render(nodes: list[dict], as_json: bool) -> str:
    if as_json:
        return json.dumps(nodes, indent=2)
    rows = [("ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG")]
    for n in nodes:
        rows.append(tuple("-" if n[k] is None else str(n[k]) for k in
                          ("id", "address", "role", "term", "commit_index",
                           "applied_index", "lag")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)
