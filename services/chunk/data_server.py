"""A chunkserver's data port: reads and writes of byte ranges over the chunk
protocol, with pipelined writes forwarded along a chain of copies.

A WRITE carrying a chain is stored here and sent on to the chain's first server
(with the rest of the chain) at the same time; it is answered once both are
done, so a success means every copy in the chain holds the data. A SYNC travels
the same way.

A CREATE or SET_VERSION is durable before it is answered (the file, its header and,
for a new file, its directory entry are fsynced): the writer and the master count the
copy at that version from then on, and a copy that fell back below it after a power
loss would be stale, or the chunk MISSING. WRITE and TRUNCATE are durable at the next
SYNC; a DELETE is not synced (see docs/chunk-format.md, "Durability of each call").

Two hooks let the chunkserver tell its master at once: `on_damage(store_id,
version, detail)` when a request finds a block or header failing its CRC, and
`on_change(store_id)` when a CREATE, SET_VERSION or DELETE changed what is held.
"""

import asyncio
import errno
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from services.chunk import protocol as p
from services.chunk.data_client import ChunkClient, ChunkRequestError
from services.chunk.errors import (
    ChunkCorruptError,
    ChunkError,
    ChunkExistsError,
    ChunkIOError,
    ChunkNotFoundError,
    ChunkStoreFullError,
    StaleVersionError,
)
from services.chunk.framing import FramedProtocol
from services.chunk.store import ChunkStore

log = logging.getLogger(__name__)

ERRORS = ((ChunkNotFoundError, p.NOT_FOUND), (StaleVersionError, p.STALE),
          (ChunkCorruptError, p.CORRUPT), (ChunkExistsError, p.EXISTS),
          (ChunkStoreFullError, p.NO_SPACE), (ChunkIOError, p.IO_ERROR))


def status_of(exc: Exception) -> int:
    if isinstance(exc, ChunkIOError) and exc.cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return p.NO_SPACE      # a full disk, not a bad one: the writer answers ENOSPC
    for kind, status in ERRORS:
        if isinstance(exc, kind):
            return status
    return p.BAD_REQUEST


class DataServer:
    """Requests are taken from each connection in order and run on one disk thread in
    that order, so a write is never overtaken by a later write, sync or read of the
    same chunk; forwarding keeps the order too (one sender per next server)."""

    def __init__(self, store: ChunkStore,
                 on_damage: Callable[[int, int, str], None] | None = None,
                 on_change: Callable[[int], None] | None = None):
        self.store = store
        self.on_damage = on_damage
        self.on_change = on_change
        self.server: asyncio.AbstractServer | None = None
        self._forward: dict[str, _Forwarder] = {}
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-disk")

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Connection(self), host, port)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()
        for forwarder in self._forward.values():
            await forwarder.close()
        self._disk.shutdown(wait=True, cancel_futures=True)

    def submit(self, conn: "_Connection", op, ident, chunk, version, offset, length,
               chain, data) -> None:
        """Start one request now, in arrival order; its reply goes back when done."""
        loop = asyncio.get_running_loop()
        here = loop.run_in_executor(self._disk, self._run, op, chunk, version, offset,
                                    length, data)
        there = None
        if chain and op in p.CHAINED:
            there = self._next(chain[0]).send(op, chunk, version, offset, length, chain[1:],
                                              data)
        conn.track(asyncio.ensure_future(self._answer(conn, op, ident, chunk, version,
                                                      here, there)))

    def _run(self, op, chunk, version, offset, length, data) -> bytes:
        """One request against the store, on the disk thread."""
        store = self.store
        if op == p.READ:
            return store.read(chunk, version, offset, length)
        if op == p.WRITE:
            store.write(chunk, version, offset, data)
        elif op == p.SYNC:      # an empty write with sync checks the version and fsyncs
            store.write(chunk, version, 0, b"", True)
        elif op == p.TRUNCATE:      # like a write: durable at the next SYNC
            store.truncate(chunk, version, offset)
        elif op == p.STAT:
            return p.STAT_REPLY.pack(store.version(chunk), store.length(chunk))
        elif op == p.CREATE:        # durable before the reply (file and directory entry)
            store.create(chunk, version, sync=True)
        elif op == p.SET_VERSION:   # durable before the reply; offset is the old version
            store.set_version(chunk, offset, version, sync=True)
        elif op == p.DELETE:        # not synced: a removal lost to a crash brings back a
            store.delete(chunk)     # copy the master no longer counts, and deletes again
        return b""

    async def _answer(self, conn, op, ident, chunk, version, here, there) -> None:
        try:
            payload = await here
            if there is not None:
                await there
            reply = [p.encode_reply(op, ident, p.OK, len(payload)), payload]
            if op in (p.CREATE, p.SET_VERSION, p.DELETE) and self.on_change:
                self.on_change(chunk)
        except ChunkError as exc:
            if isinstance(exc, ChunkCorruptError) and self.on_damage:
                self.on_damage(chunk, version, str(exc))
            reply = [p.encode_reply(op, ident, status_of(exc), message=str(exc))]
        except (ChunkRequestError, ConnectionError) as exc:
            # A full server further down the chain: the writer must hear "no space".
            full = isinstance(exc, ChunkRequestError) and exc.status == p.NO_SPACE
            reply = [p.encode_reply(op, ident, p.NO_SPACE if full else p.FORWARD_FAILED,
                                    message=str(exc))]
        except (ValueError, OSError) as exc:
            reply = [p.encode_reply(op, ident, p.BAD_REQUEST, message=str(exc))]
        finally:
            if there is not None and not there.done():
                there.cancel()
        await conn.send(reply)

    def _next(self, address: str) -> "_Forwarder":
        forwarder = self._forward.get(address)
        if forwarder is None:
            forwarder = self._forward[address] = _Forwarder(ChunkClient(address))
        return forwarder


class _Forwarder:
    """Sends requests to the next server in the chain in the order they were given,
    without waiting for one reply before sending the next."""

    def __init__(self, client: ChunkClient):
        self.client = client
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.ensure_future(self._send_all())

    def send(self, op, chunk, version, offset, length, chain, data) -> asyncio.Future:
        """The future reply (its data, or the error) of the forwarded request."""
        reply = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((reply, (op, chunk, version, offset, length, chain, data)))
        return reply

    async def _send_all(self) -> None:
        while True:
            reply, request = await self.queue.get()
            if reply.done():
                continue
            try:
                answer = await self.client.submit(*request)
            except (OSError, p.ProtocolError) as exc:
                reply.set_exception(ConnectionError(
                    f"cannot reach {self.client.address}: {exc}"))
                continue
            answer.add_done_callback(lambda a, r=reply: _settle(r, a))

    async def close(self) -> None:
        self.task.cancel()
        await self.client.close()


def _settle(reply: asyncio.Future, answer: asyncio.Future) -> None:
    if reply.done():
        return
    if answer.cancelled():
        reply.set_exception(ConnectionError("the forwarded request was cancelled"))
    elif answer.exception() is not None:
        reply.set_exception(answer.exception())
    else:
        reply.set_result(answer.result())


HEADER, CHAIN, DATA = range(3)


class _Connection(FramedProtocol):
    """One client connection: frames are parsed as bytes arrive, and a write's data
    lands straight in the buffer that goes to the disk (no copies on the way)."""

    def __init__(self, server: DataServer):
        self.server = server
        self.transport = None
        self.tasks: set[asyncio.Task] = set()
        self.writable = asyncio.Event()
        self.writable.set()
        self._expect(HEADER, bytearray(p.REQUEST.size))
        self.request = None
        self.chain: tuple[str, ...] = ()

    # -- receiving -------------------------------------------------------------------------
    def _bad(self, exc: Exception) -> None:
        log.warning("chunk data connection closed: %s", exc)

    def _advance(self) -> None:
        """The current piece is complete: act on it and expect the next."""
        if self.state == HEADER:
            self.request = p.decode_request(bytes(self.buffer))
            chain_len = self.request[-1]
            if chain_len:
                return self._expect(CHAIN, bytearray(chain_len))
            self.chain = ()
        elif self.state == CHAIN:
            self.chain = tuple(filter(None, self.buffer.decode().split(",")))
        else:
            return self._dispatch(self.buffer)
        op, length = self.request[0], self.request[5]
        if op == p.WRITE and length:
            return self._expect(DATA, bytearray(length))
        self._dispatch(b"")

    def _dispatch(self, data) -> None:
        op, ident, chunk, version, offset, length, _ = self.request
        self.server.submit(self, op, ident, chunk, version, offset, length, self.chain, data)
        self._expect(HEADER, bytearray(p.REQUEST.size))

    # -- replying --------------------------------------------------------------------------
    def track(self, task: asyncio.Task) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def send(self, pieces: list) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for piece in pieces:
            if len(piece):
                self.transport.write(piece)
        await self.writable.wait()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc) -> None:
        self.writable.set()
        for task in self.tasks:
            task.cancel()
