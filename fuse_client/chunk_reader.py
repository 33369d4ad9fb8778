"""Reading a byte range of one located chunk: from a whole copy when there is one
(healthy servers first, the next copy on any error), else from its erasure-coded
parts. Bytes a chunk never stored read as zeros."""

from fuse_client.chunk_locations import Located
from fuse_client.chunk_servers import ChunkServers
from fuse_client.chunk_spans import zero_padded
from fuse_client.ec_reader import DecodedChunks
from services.chunk.data_client import ChunkRequestError

SPREAD_BYTES = 1 << 20
# A copy that has not answered a read in this long is left for the next one (a read
# is safe to ask twice; the late answer is dropped). A server that hangs (stopped,
# cut off) would otherwise hold every read sent to it for the whole request deadline.
NEXT_COPY_S = 5.0


class LocationOutdatedError(Exception):
    """Every copy failed, and at least one because the location was out of date (or the
    server was unreachable): locating the chunk again may find where it is now."""


class ChunkReader:
    def __init__(self, servers: ChunkServers, decoded: DecodedChunks):
        self.servers, self.decoded = servers, decoded

    async def read(self, located: Located, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of the chunk. LocationOutdatedError when no
        copy answered (retry after locating again); DataUnavailableError from the parts."""
        if located.is_hole or length == 0:
            return bytes(length)
        if located.copies:
            return await self._from_copies(located, offset, length)
        if located.parts:
            return zero_padded(await self.decoded.get(located), offset, length)
        raise LocationOutdatedError(f"{located.describe()}: the master knows no server "
                                    "holding it at this version")

    async def _from_copies(self, located: Located, offset: int, length: int) -> bytes:
        chunk, failures = located.chunk, []
        # Successive megabytes from alternate copies: a sequential reader keeps every
        # copy's disk busy instead of queueing all its reads on one server.
        turn = offset // SPREAD_BYTES
        ranked = self.servers.ranked([c.address for c in located.copies], turn)
        for address in ranked:
            try:
                return await self.servers.call(
                    address, "read", chunk.id, chunk.version, offset, length,
                    timeout_s=NEXT_COPY_S if address != ranked[-1] else None)
            except (ChunkRequestError, OSError) as exc:   # CORRUPT too: next copy
                failures.append(f"{address}: {exc}")
        if located.parts:   # the copies are gone but the parts may still be there
            return zero_padded(await self.decoded.get(located), offset, length)
        raise LocationOutdatedError(f"{located.describe()}: every copy failed "
                                    f"({'; '.join(failures)})")
