"""One connection to a chunkserver's data port, many requests in flight on it."""

import asyncio
import itertools

from services.chunk import protocol as p
from services.chunk.framing import FramedProtocol

_HEADER, _MESSAGE, _DATA = range(3)


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
        self._protocol: _Replies | None = None
        self._connecting = asyncio.Lock()

    async def _connect(self) -> "_Replies":
        async with self._connecting:
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            host, _, port = self.address.rpartition(":")
            loop = asyncio.get_running_loop()
            _, self._protocol = await loop.create_connection(
                lambda: _Replies(self.address, self._waiting), host, int(port))
            return self._protocol

    async def submit(self, op: int, chunk: int, version: int, offset: int = 0,
                     length: int = 0, chain: tuple[str, ...] = (),
                     data=b"") -> asyncio.Future:
        """Send one request; the future of its reply. Requests submitted one after the
        other (each awaited before the next) reach the server in that order."""
        conn = await self._connect()
        ident = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)
        self._waiting[ident] = fut
        conn.send(p.encode_request(op, ident, chunk, version, offset, length, chain), data)
        await conn.writable.wait()
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
        if self._protocol is not None:
            self._protocol.close()


class _Replies(FramedProtocol):
    """The connection's receiving side: each reply's data lands straight in the
    buffer handed to the caller (a READ's megabytes are not copied on the way), and
    its sending side's flow control (`writable`)."""

    def __init__(self, address: str, waiting: dict[int, asyncio.Future]):
        self.address, self.waiting = address, waiting
        self.transport = None
        self.closed = False
        self.writable = asyncio.Event()
        self.writable.set()
        self._reply: tuple | None = None     # (status, id, length, message_len)
        self._message = ""
        self._expect(_HEADER, bytearray(p.REPLY.size))

    def send(self, header: bytes, data) -> None:
        if self.closed:
            raise ConnectionError(f"chunkserver {self.address} closed the connection")
        self.transport.write(header)
        if len(data):
            self.transport.write(data)

    # -- receiving ------------------------------------------------------------------------
    def _bad(self, exc: Exception) -> None:
        self._fail(exc)

    def _advance(self) -> None:
        if self.state == _HEADER:
            _op, status, ident, length, message_len = p.decode_reply(bytes(self.buffer))
            self._reply, self._message = (status, ident, length), ""
            if message_len:
                return self._expect(_MESSAGE, bytearray(message_len))
        elif self.state == _MESSAGE:
            self._message = self.buffer.decode(errors="replace")
        else:
            return self._deliver(self.buffer)
        length = self._reply[2]
        if length:
            return self._expect(_DATA, bytearray(length))
        self._deliver(b"")

    def _deliver(self, data) -> None:
        status, ident, _ = self._reply
        self._expect(_HEADER, bytearray(p.REPLY.size))
        fut = self.waiting.pop(ident, None)
        if fut is None or fut.done():
            return
        if status == p.OK:
            fut.set_result(data)
        else:
            fut.set_exception(ChunkRequestError(status, self._message))

    def eof_received(self) -> bool:
        return False      # close the transport: connection_lost fails what waits

    def connection_lost(self, exc) -> None:
        self._fail(ConnectionError(f"chunkserver {self.address} closed the connection"))

    def _fail(self, error: Exception) -> None:
        self.closed = True
        self.writable.set()
        waiting = list(self.waiting.values())
        self.waiting.clear()
        for fut in waiting:
            if not fut.done():
                fut.set_exception(error)

    # -- sending --------------------------------------------------------------------------
    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


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
