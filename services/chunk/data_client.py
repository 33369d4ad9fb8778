"""One connection to a chunkserver's data port, many requests in flight on it."""

import asyncio
import itertools

from services.chunk import protocol as p


class ChunkRequestError(Exception):
    """A chunkserver refused or failed a request; `status` says how."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{p.STATUS.get(status, status)}: {message}")
        self.status = status


class ChunkClient:
    def __init__(self, address: str):
        self.address = address
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._connecting = asyncio.Lock()

    async def _connect(self) -> None:
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return
            host, _, port = self.address.rpartition(":")
            reader, self._writer = await asyncio.open_connection(host, int(port))
            self._reader_task = asyncio.create_task(self._read_replies(reader))

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        error: Exception = ConnectionError(f"chunkserver {self.address} closed the connection")
        try:
            while True:
                header = await reader.readexactly(p.REPLY.size)
                _op, status, ident, length, message_len = p.decode_reply(header)
                message = (await reader.readexactly(message_len)).decode(errors="replace")
                data = await reader.readexactly(length) if length else b""
                fut = self._waiting.pop(ident, None)
                if fut is None or fut.done():
                    continue
                if status == p.OK:
                    fut.set_result(data)
                else:
                    fut.set_exception(ChunkRequestError(status, message))
        except (asyncio.IncompleteReadError, ConnectionError, p.ProtocolError) as exc:
            error = exc if isinstance(exc, p.ProtocolError) else error
        finally:
            waiting, self._waiting = self._waiting, {}
            for fut in waiting.values():
                if not fut.done():
                    fut.set_exception(error)
            if self._writer is not None:
                self._writer.close()

    async def submit(self, op: int, chunk: int, version: int, offset: int = 0,
                     length: int = 0, chain: tuple[str, ...] = (),
                     data=b"") -> asyncio.Future:
        """Send one request; the future of its reply. Requests submitted one after the
        other (each awaited before the next) reach the server in that order."""
        await self._connect()
        ident = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)
        self._waiting[ident] = fut
        self._writer.write(p.encode_request(op, ident, chunk, version, offset, length, chain))
        if len(data):
            self._writer.write(data)
        await self._writer.drain()
        return fut

    async def _request(self, op: int, chunk: int, version: int, offset: int = 0,
                       length: int = 0, chain: tuple[str, ...] = (),
                       data=b"") -> bytes:
        return await await_reply(await self.submit(op, chunk, version, offset, length, chain,
                                                   data))

    async def read(self, chunk: int, version: int, offset: int, length: int) -> bytes:
        return await self._request(p.READ, chunk, version, offset, length)

    async def write(self, chunk: int, version: int, offset: int, data: bytes,
                    chain: tuple[str, ...] = ()) -> None:
        """Write here and, through the pipeline, on every server in `chain`."""
        await self._request(p.WRITE, chunk, version, offset, len(data), chain, data)

    async def sync(self, chunk: int, version: int, chain: tuple[str, ...] = ()) -> None:
        """Make what was written to the chunk durable here and on every server in `chain`."""
        await self._request(p.SYNC, chunk, version, chain=chain)

    async def stat(self, chunk: int) -> tuple[int, int]:
        """(version, length) of the chunk as this server holds it."""
        version, length = p.STAT_REPLY.unpack(await self._request(p.STAT, chunk, 0))
        return version, length

    async def truncate(self, chunk: int, version: int, length: int,
                       chain: tuple[str, ...] = ()) -> None:
        """Cut (or extend with zeros) the chunk to `length` bytes here and along `chain`."""
        await self._request(p.TRUNCATE, chunk, version, offset=length, chain=chain)

    async def create(self, chunk: int, version: int) -> None:
        await self._request(p.CREATE, chunk, version)

    async def set_version(self, chunk: int, old: int, new: int) -> None:
        await self._request(p.SET_VERSION, chunk, new, offset=old)

    async def delete(self, chunk: int) -> None:
        await self._request(p.DELETE, chunk, 0)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()


async def await_reply(fut: asyncio.Future) -> bytes:
    """Wait for a reply; a caller that gives up leaves no future behind unanswered."""
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        fut.cancel()
        raise


def _retrieve(fut: asyncio.Future) -> None:
    """Mark a failed reply as seen, so one nobody waits for any more is not logged."""
    if not fut.cancelled():
        fut.exception()
