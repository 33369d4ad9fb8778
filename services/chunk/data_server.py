"""A chunkserver's data port: reads and writes of byte ranges over the chunk
protocol, with pipelined writes forwarded along a chain of copies.

A WRITE carrying a chain is stored here and sent on to the chain's first server
(with the rest of the chain) at the same time; it is answered once both are
done, so a success means every copy in the chain holds the data.
"""

import asyncio
import logging

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
    def __init__(self, store: ChunkStore):
        self.store = store
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
        if op == p.CREATE:
            store.create(chunk, version)
        elif op == p.SET_VERSION:
            store.set_version(chunk, offset, version)  # offset carries the old version
        elif op == p.DELETE:
            store.delete(chunk)
        return b""

    def _next(self, address: str) -> ChunkClient:
        client = self._forward.get(address)
        if client is None:
            client = self._forward[address] = ChunkClient(address)
        return client
