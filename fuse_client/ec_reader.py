"""A chunk kept only as erasure-coded parts, read back whole.

Any k intact parts give the chunk back; the data parts are asked for first because
decoding from them is a plain join. A part that cannot be read, or that fails its
CRC when decoding, is replaced by another. A decoded chunk is kept in a small LRU so
that a sequence of small reads decodes it once, and two readers of the same chunk
share one decode.
"""

import asyncio
import logging
from collections import OrderedDict

from fuse_client.chunk_locations import Located
from fuse_client.chunk_servers import ChunkServers
from fuse_client.data_errors import DataUnavailableError
from services.chunk import parts as store_ids
from services.chunk.data_client import ChunkRequestError
from services.chunk.erasure import ErasureCoder, ErasureError
from services.chunk.protocol import MAX_DATA
from services.common.storage_class import StorageClassError, parse

log = logging.getLogger(__name__)
READ_PIECE = 16 << 20   # a part larger than this is read in pieces (ec=1+M)


class DecodedChunks:
    def __init__(self, servers: ChunkServers, capacity: int = 3):
        self.servers = servers
        self.capacity = capacity
        self._done: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._running: dict[tuple[int, int], asyncio.Task] = {}
        self._coders: dict[tuple[int, int, str | None], ErasureCoder] = {}
        self.decodes = 0   # chunks decoded, for tests

    async def get(self, located: Located) -> bytes:
        """The whole chunk (as long as it was when encoded); DataUnavailableError when
        fewer than k parts can be read intact."""
        key = (located.chunk.id, located.chunk.version)
        if key in self._done:
            self._done.move_to_end(key)
            return self._done[key]
        task = self._running.get(key)
        if task is None:
            task = self._running[key] = asyncio.create_task(self._decode(located))
            task.add_done_callback(lambda _t: self._running.pop(key, None))
        data = await asyncio.shield(task)
        self._done[key] = data
        while len(self._done) > self.capacity:
            self._done.popitem(last=False)
        return data

    def forget(self, chunk_id: int) -> None:
        for key in [k for k in self._done if k[0] == chunk_id]:
            del self._done[key]

    async def _decode(self, located: Located) -> bytes:
        k, m = self._shape(located)
        chunk = located.chunk
        waiting = list(located.parts)     # sorted by part: data parts first
        got: dict[int, bytes] = {}
        problems: list[str] = []
        while waiting:
            # k parts at first; after a failure, only as many more as are missing
            want = max(1, k - len(got))
            batch, waiting = waiting[:want], waiting[want:]
            results = await asyncio.gather(*(self._read_part(chunk, loc) for loc in batch),
                                           return_exceptions=True)
            for loc, result in zip(batch, results, strict=True):
                if isinstance(result, (ChunkRequestError, OSError)):
                    problems.append(f"part {loc.part - 1} on {loc.address}: {result}")
                elif isinstance(result, BaseException):
                    raise result
                else:
                    got[loc.part - 1] = result
            if len(got) < k:
                continue
            try:
                data = await asyncio.to_thread(self._coder(k, m, got).decode, got)
            except ErasureError as exc:   # a damaged part was set aside: fetch another
                problems.append(str(exc))
                continue
            self.decodes += 1
            return data
        raise DataUnavailableError(
            f"chunk {chunk.id} version {chunk.version} ({located.storage_class}) cannot be "
            f"decoded: {len(got)} of the {k} parts it needs could be read intact"
            + (f" ({'; '.join(problems)})" if problems else "")
            + "; the chunkservers holding the other parts may be down")

    @staticmethod
    def _shape(located: Located) -> tuple[int, int]:
        try:
            cls = parse(located.storage_class)
        except StorageClassError:
            cls = None
        if cls is None or not cls.is_ec:
            raise DataUnavailableError(
                f"chunk {located.chunk.id} is held only as erasure-coded parts but its "
                f"storage class is {located.storage_class!r}, so k and m are unknown; "
                "wait for the master to make whole copies, or set the class back to ec=K+M")
        return cls.k, cls.m

    async def _read_part(self, chunk, loc) -> bytes:
        ident = store_ids.store_id(chunk.id, loc.part)
        step = min(READ_PIECE, MAX_DATA)
        pieces = await asyncio.gather(*(
            self.servers.call(loc.address, "read", ident, loc.version, offset,
                              min(step, loc.length - offset))
            for offset in range(0, loc.length, step)))
        return b"".join(pieces)

    def _coder(self, k: int, m: int, parts: dict[int, bytes]) -> ErasureCoder:
        """A coder of the backend that made the parts (backends build different parity)."""
        probe = self._coder_for(k, m, None)
        any_part = next(iter(parts.values()))
        try:
            backend = probe._driver.get_metadata(any_part, formatted=True)["backend_id"]
        except Exception:   # a damaged header: decode sets the part aside and says why
            backend = probe.backend
        return self._coder_for(k, m, backend)

    def _coder_for(self, k: int, m: int, backend: str | None) -> ErasureCoder:
        key = (k, m, backend)
        if key not in self._coders:
            self._coders[key] = ErasureCoder(k, m, backend)
        return self._coders[key]
