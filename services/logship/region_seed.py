"""`mooseng region seed`: start region B from region A's latest snapshot.

When region A has compacted its log past what B holds (a new B against an old A, or
a shipper stopped for longer than A keeps its log), the entries B needs are gone
from A. B is then seeded again: A's latest snapshot is fetched once (the LogShip
FetchSnapshot stream the metalogger uses, CRC-checked, resumable) and installed into
new data directories for B's stopped nodes, the way `mooseng restore` writes a
node's directory. The projection is A's at the snapshot's index, marked as a
following region whose shipped position is that index, so `mooseng region follow`
continues with A's next entry and B's fold refuses everything else, as always.
"""

import os
from dataclasses import dataclass

import grpc

from schemas import logship_pb2_grpc
from services.common.discovery import find_leader
from services.common.posix import records as r
from services.logship.archive import copy_checkpoint
from services.logship.restore import _write_node_meta
from services.logship.snapshot_fetch import Fetched, fetch_snapshot
from services.metadata.namespace import region_fold
from services.metadata.namespace.txn import DELETE, PUT
from services.metadata.projection import ProjectionError, open_projection
from services.metadata.raft.messages import Config
from services.metadata.raft.transport import GRPC_OPTIONS


class SeedError(Exception):
    """Seeding cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Seeded:
    index: int       # region A's index B holds: the shipper continues after it
    term: int
    directories: list[str]


async def fetch(masters: list[str], staging: str) -> Fetched:
    """Region A's latest snapshot, from its leader (else any node that answers)."""
    leader = await find_leader(masters)
    failures = []
    for address in ([leader] if leader else []) + [a for a in masters if a != leader]:
        async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
            try:
                return await fetch_snapshot(logship_pb2_grpc.LogShipStub(channel), staging)
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{address}: {exc.details() or exc.code().name}")
    raise SeedError(f"no node of region A gave its snapshot ({'; '.join(failures)}); "
                    "is region A running?")


def install(fetched: Fetched, directories: list[str], voters: list[int]) -> Seeded:
    """Region B's node directories (new, or empty) from A's snapshot."""
    for d in directories:
        if os.path.exists(d) and (not os.path.isdir(d) or os.listdir(d)):
            raise SeedError(f"{d} exists and is not empty: stop region B's node and move "
                            "its data directory aside (nothing is overwritten), then seed "
                            "a new one")
    config = Config(frozenset(voters))
    for d in directories:
        os.makedirs(d, exist_ok=True)
        projection = os.path.join(d, "projection")
        copy_checkpoint(fetched.path, projection, durable=True)
        _mark_following(projection, fetched)
        snapshots = os.path.join(d, "snapshots")    # as `mooseng restore` writes them
        os.makedirs(snapshots)
        with open_projection(projection) as proj:
            proj.checkpoint(os.path.join(snapshots, f"snap-{fetched.index:020d}"))
        _write_node_meta(d, fetched.index, fetched.term, config)
    return Seeded(fetched.index, fetched.term, directories)


def _mark_following(projection: str, fetched: Fetched) -> None:
    """B follows A from the snapshot's index on. B's own Raft log starts at the same
    index (a fresh cluster may start anywhere), so the applied position stays."""
    try:
        proj = open_projection(projection)
    except ProjectionError as exc:
        raise SeedError(f"region A's snapshot {fetched.index} does not open: {exc}") from None
    with proj:
        if proj.applied_index != fetched.index:
            raise SeedError(f"region A's snapshot says index {fetched.index} but its "
                            f"projection is at {proj.applied_index}; seed again")
        state = proj.get(r.META, region_fold.STATE)
        if state is not None and state != region_fold.PRIMARY:
            raise SeedError("region A is itself a region that follows another's log: "
                            "seed region B from the primary region")
        position = region_fold.Position(fetched.index, fetched.term, 0, fetched.index)
        proj.write([(PUT, r.META, region_fold.STATE, region_fold.FOLLOWING),
                    (PUT, r.META, region_fold.SHIPPED, region_fold.position_record(position)),
                    (DELETE, r.META, region_fold.PROMOTED)],
                   proj.applied_index, proj.applied_digest)
