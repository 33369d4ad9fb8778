"""Asking a region's metadata cluster how far it has followed region A's log (a read,
answered from the projection); the lag as a user reads it is in
services/common/region_lag.py."""

import hashlib

import grpc

from schemas import metadata_pb2 as mpb
from schemas import metadata_pb2_grpc
from services.common.discovery import find_leader
from services.common.posix import records as r
from services.metadata.namespace.region_fold import REGION_KEYS
from services.metadata.projection import POSITION_KEYS
from services.metadata.raft.transport import GRPC_OPTIONS


class RegionUnavailableError(Exception):
    """No node of the region answered."""


async def region_info(addresses: list[str], timeout_s: float = 5.0) -> mpb.RegionInfo:
    """The region's position, from its leader (linearizable), else from any node."""
    leader = await find_leader(addresses)
    for address in ([leader] if leader else []) + [a for a in addresses if a != leader]:
        reply = await _ask(address, follower_read=address != leader, timeout_s=timeout_s)
        if reply is not None and reply.status == mpb.Reply.OK:
            return reply.region
    raise RegionUnavailableError(f"no metadata node of {', '.join(addresses)} answered; "
                                 "is the region's cluster running?")


async def _ask(address: str, follower_read: bool, timeout_s: float) -> mpb.Reply | None:
    request = mpb.Request(id=1, region_status=mpb.RegionStatus(), follower_read=follower_read)
    async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
        call = metadata_pb2_grpc.MetadataStub(channel).Session(
            iter([mpb.RequestBatch(requests=[request])]), timeout=timeout_s)
        try:
            async for batch in call:
                for reply in batch.replies:
                    return reply
        except grpc.aio.AioRpcError:
            return None
        finally:
            call.cancel()
    return None


def namespace_digest(projection) -> str:
    """SHA-256 of a projection like Projection.content_digest, also leaving out
    region B's record of what it shipped: equal for A and for a B that holds the same
    entries of A's log."""
    skip = set(POSITION_KEYS) | set(REGION_KEYS)
    h = hashlib.sha256()
    for cf in r.COLUMN_FAMILIES:
        h.update(b"\0cf\0" + cf.encode())
        for key, value in projection.scan(cf, b""):
            if cf == r.META and key in skip:
                continue
            h.update(len(key).to_bytes(4, "big") + key)
            h.update(len(value).to_bytes(4, "big") + value)
    return h.hexdigest()
