"""Making the targets of a begin_write ready to take writes at the new version.

A target named with a version holds the chunk at that version: it is moved to the new
one (SET_VERSION). A target with version 0 is new: the chunk is created there and, when
it already has contents (on other copies, or only as erasure-coded parts), it is
made at INCOMPLETE, the contents are copied over and synced, and only then is it
moved to the new version. So every target holds the whole chunk before a new byte
lands, and no report ever names a copy half filled.

The master learns of copies from chunkserver reports, which lag a little behind the
writes: a begin_write right after another may name as "new" a server that already
holds the current contents, or name no holder at all. So a target that turns out to
hold the chunk at the previous version is moved rather than wiped, and the copies this
client itself wrote last count as holders of the contents too.
"""

import asyncio
from dataclasses import dataclass

from fuse_client.chunk_locations import Located, of_copies
from fuse_client.chunk_reader import ChunkReader
from fuse_client.chunk_servers import ChunkServers
from fuse_client.data_errors import WriteFailedError
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.chunk import protocol as p
from services.chunk.data_client import ChunkRequestError

FILL_PIECE = 4 << 20
FILL_IN_FLIGHT = 4


@dataclass(frozen=True)
class Prepared:
    chunk: pb.Chunk
    targets: tuple[str, ...]     # the write goes to targets[0], chained to the rest
    storage_class: str


async def prepare(servers: ChunkServers, reader: ChunkReader, reply: mpb.Reply,
                  known: Located | None = None) -> Prepared:
    """Every target of `reply` holds the chunk's current contents at the new version.
    `known`: where this client last saw the chunk (its own last write). Raises
    ChunkRequestError / OSError when a server fails: begin the write again."""
    chunk = reply.result.chunk
    if not reply.targets:
        raise WriteFailedError(
            f"chunk {chunk.index} (id {chunk.id}): the master offered no chunkserver to "
            "write to; check that chunkservers are connected (mooseng status)")
    moved = [t for t in reply.targets if t.version]
    fresh = [t.address for t in reply.targets if not t.version]
    await asyncio.gather(*(_move(servers, chunk, t) for t in moved))
    source = of_copies(chunk, tuple(t.address for t in moved)) if moved else \
        _previous(chunk, reply, known)
    # A new chunk has nothing to fill: its copies are made at the version at once.
    made_at = chunk.version if source is None else p.INCOMPLETE
    kept = await asyncio.gather(*(_create(servers, chunk, address, made_at)
                                  for address in fresh))
    had = [a for a, k in zip(fresh, kept, strict=True) if k]
    empty = [a for a in fresh if a not in had]
    if empty:
        if source is None and had:     # a target had the contents (the master had not heard)
            source = of_copies(chunk, tuple(had))
        if source is not None:
            await _fill(servers, reader, source, chunk, empty, made_at)
        if made_at == p.INCOMPLETE:
            await asyncio.gather(*(servers.call(address, "sync", chunk.id, made_at)
                                   for address in empty))
            await asyncio.gather(*(servers.call(address, "set_version", chunk.id, made_at,
                                                chunk.version) for address in empty))
    return Prepared(chunk, tuple(t.address for t in reply.targets), reply.storage_class)


async def _move(servers: ChunkServers, chunk: pb.Chunk, target: mpb.ChunkLocation) -> None:
    try:
        await servers.call(target.address, "set_version", chunk.id, target.version,
                           chunk.version)
    except ChunkRequestError as exc:
        if exc.status != p.STALE:
            raise
        # an earlier attempt of this write may have moved it already, past what the
        # master has heard; a copy behind what the master says is stale: refuse it
        held, _ = await servers.call(target.address, "stat", chunk.id)
        if held < target.version:
            raise
        if held != chunk.version:
            await servers.call(target.address, "set_version", chunk.id, held, chunk.version)


async def _create(servers: ChunkServers, chunk: pb.Chunk, address: str, made_at: int) -> bool:
    """Make the chunk at `address` at version `made_at`: INCOMPLETE when it is to be
    filled, so that a writer that dies while filling it leaves a copy no report names,
    not one a later write would take for the contents. True when the server turned out
    to hold the current contents already (the master had not heard yet): kept."""
    try:
        await servers.call(address, "create", chunk.id, made_at)
        return False
    except ChunkRequestError as exc:
        if exc.status != p.EXISTS:
            raise
    held, _ = await servers.call(address, "stat", chunk.id)
    if held in (chunk.version - 1, chunk.version):
        if held != chunk.version:
            await servers.call(address, "set_version", chunk.id, held, chunk.version)
        return True
    # a leftover of another version, or half made: wipe it, it is refilled
    await servers.call(address, "delete", chunk.id)
    await servers.call(address, "create", chunk.id, made_at)
    return False


def _previous(chunk: pb.Chunk, reply: mpb.Reply, known: Located | None) -> Located | None:
    """Where the chunk's contents at the previous version can be read; None when it has
    none (a new chunk)."""
    # The version before, or parts a repair moved on to this one (see the master's
    # ChunkManager.contents).
    newest = max((loc.version for loc in reply.locations), default=chunk.version - 1)
    before = pb.Chunk(index=chunk.index, id=chunk.id, version=newest)
    targets = {t.address for t in reply.targets}
    held = [loc for loc in reply.locations if loc.version == before.version]
    copies = [loc for loc in held if loc.part == 0 and loc.address not in targets]
    if known is not None and known.chunk is not None and known.chunk.id == chunk.id \
            and known.chunk.version == before.version:
        copies += [c for c in known.copies if c.address not in {x.address for x in copies}]
    parts = tuple(sorted((loc for loc in held if loc.part), key=lambda loc: loc.part))
    if copies or parts:
        return Located(before, copies=tuple(copies), parts=parts,
                       storage_class=reply.storage_class)
    # Nothing to copy: a new chunk, or one no write ever committed to (the master
    # refuses a write to committed contents it knows no holder of).
    return None


async def _length(servers: ChunkServers, reader: ChunkReader, source: Located) -> int:
    """How many bytes the source holds: asked of the copies themselves (the master's
    figure may lag behind the last write), or the decoded parts' size."""
    if not source.copies:
        return len(await reader.decoded.get(source))
    answers = await asyncio.gather(*(servers.call(c.address, "stat", source.chunk.id)
                                     for c in source.copies), return_exceptions=True)
    version = source.chunk.version
    known = [a[1] for a in answers if isinstance(a, tuple) and a[0] == version]
    return max(known + [c.length for c in source.copies])


async def _fill(servers: ChunkServers, reader: ChunkReader, source: Located,
                chunk: pb.Chunk, fresh: list[str], version: int) -> None:
    length = await _length(servers, reader, source)
    gate = asyncio.Semaphore(FILL_IN_FLIGHT)

    async def piece(offset: int) -> None:
        async with gate:
            data = await reader.read(source, offset, min(FILL_PIECE, length - offset))
            await servers.call(fresh[0], "write", chunk.id, version, offset, data,
                               chain=tuple(fresh[1:]))
    await asyncio.gather(*(piece(offset) for offset in range(0, length, FILL_PIECE)))
