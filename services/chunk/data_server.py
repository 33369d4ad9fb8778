"""A chunkserver's data port: reads and writes of byte ranges over the chunk
protocol, with pipelined writes forwarded along a chain of copies.

A WRITE carrying a chain is stored here and sent on to the chain's first server
(with the rest of the chain) at the same time; it is answered once both are
done, so a success means every copy in the chain holds the data. A SYNC travels
the same way.

Two hooks let the chunkserver tell its master at once: `on_damage(store_id,
version, detail)` when a request finds a block or header failing its CRC, and
`on_change(store_id)` when a CREATE, SET_VERSION or DELETE changed what is held.
"""

import asyncio
import logging
from collections.abc import Callable

from services.chunk import protocol as p
from services.chunk.data_client import ChunkClient, ChunkRequestError
from services.chunk.errors import (
    ChunkCorruptError,
    ChunkError,
    ChunkExistsError,
    ChunkIOError,
    ChunkNotFoundError,
    StaleVersionError,
)
from services.chunk.store import ChunkStore

log = logging.getLogger(__name__)

ERRORS = ((ChunkNotFoundError, p.NOT_FOUND), (StaleVersionError, p.STALE),
          (ChunkCorruptError, p.CORRUPT), (ChunkExistsError, p.EXISTS),
          (ChunkIOError, p.IO_ERROR))


def status_of(exc: Exception) -> int:
    for kind, status in ERRORS:
        if isinstance(exc, kind):
            return status
    return p.BAD_REQUEST


class DataServer:
    def __init__(self, store: ChunkStore,
                 on_damage: Callable[[int, int, str], None] | None = None,
                 on_change: Callable[[int], None] | None = None):
        self.store = store
        self.on_damage = on_damage
        self.on_change = on_change
        self.server: asyncio.AbstractServer | None = None
        self._forward: dict[str, ChunkClient] = {}

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self._serve, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()
        for client in self._forward.values():
            await client.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        lock = asyncio.Lock()   # replies of concurrent requests do not interleave
        running: set[asyncio.Task] = set()
        try:
            while True:
                try:
                    header = await reader.readexactly(p.REQUEST.size)
                except asyncio.IncompleteReadError:
                    return
                op, ident, chunk, version, offset, length, chain_len = \
                    p.decode_request(header)
                chain = tuple(filter(None, (await reader.readexactly(chain_len))
                                     .decode().split(",")))
                data = await reader.readexactly(length) if op == p.WRITE else b""
                task = asyncio.create_task(self._answer(
                    writer, lock, op, ident, chunk, version, offset, length, chain, data))
                running.add(task)
                task.add_done_callback(running.discard)
        except (p.ProtocolError, UnicodeDecodeError) as exc:
            log.warning("chunk data connection closed: %s", exc)
        finally:
            for task in running:
                task.cancel()
            writer.close()

    async def _answer(self, writer, lock, op, ident, chunk, version, offset, length,
                      chain, data) -> None:
        try:
            payload = await self._execute(op, chunk, version, offset, length, chain, data)
            reply = p.encode_reply(op, ident, p.OK, len(payload)) + payload
        except ChunkError as exc:
            if isinstance(exc, ChunkCorruptError) and self.on_damage:
                self.on_damage(chunk, version, str(exc))
            reply = p.encode_reply(op, ident, status_of(exc), message=str(exc))
        except ChunkRequestError as exc:
            reply = p.encode_reply(op, ident, p.FORWARD_FAILED, message=str(exc))
        except (ValueError, OSError) as exc:
            reply = p.encode_reply(op, ident, p.BAD_REQUEST, message=str(exc))
        async with lock:
            writer.write(reply)
            await writer.drain()

    async def _execute(self, op, chunk, version, offset, length, chain, data) -> bytes:
        store = self.store
        if op == p.READ:
            return await asyncio.to_thread(store.read, chunk, version, offset, length)
        if op == p.WRITE:
            here = asyncio.to_thread(store.write, chunk, version, offset, data)
            if not chain:
                await here
            else:
                there = self._next(chain[0]).write(chunk, version, offset, data, chain[1:])
                await asyncio.gather(here, there)
            return b""
        if op == p.SYNC:   # an empty write with sync checks the version and fsyncs
            here = asyncio.to_thread(store.write, chunk, version, 0, b"", True)
            if not chain:
                await here
            else:
                await asyncio.gather(here, self._next(chain[0]).sync(chunk, version, chain[1:]))
            return b""
        if op == p.STAT:
            return p.STAT_REPLY.pack(store.version(chunk), store.length(chunk))
        if op == p.CREATE:
            store.create(chunk, version)
        elif op == p.SET_VERSION:
            store.set_version(chunk, offset, version)  # offset carries the old version
        elif op == p.DELETE:
            store.delete(chunk)
        if self.on_change:
            self.on_change(chunk)
        return b""

    def _next(self, address: str) -> ChunkClient:
        client = self._forward.get(address)
        if client is None:
            client = self._forward[address] = ChunkClient(address)
        return client
