"""A TCP proxy on loopback whose link can be cut, for partition tests.

Processes in tests bind 127.0.0.1 only, so a partition between two of them is made
by sending one's traffic to the other through a LinkProxy and cutting it. A cut
link stops carrying bytes in both directions but keeps its connections open, and
holds new ones unanswered: what a peer sees when packets are dropped (TCP's flow
control stalls the senders; nothing is refused). Healing carries on with what was
waiting, as TCP would once its retransmissions get through.

The proxy runs its own event loop in a thread, so tests of any kind can use it.
"""

import asyncio
import contextlib
import threading

from mooseng.ports import free_ports

CHUNK = 1 << 16


class LinkProxy:
    def __init__(self, target: str):
        self.target = target
        self.port = free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)

    # -- control, from any thread -----------------------------------------------------
    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._open.clear)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- the loop ---------------------------------------------------------------------
    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._open.set()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self.port))
        started.set()
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader, writer) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._open.wait()           # a cut link answers no new connection
            host, port = self.target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _pipe(self, reader, writer) -> None:
        try:
            while True:
                await self._open.wait()       # cut: stop reading, the sender stalls
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self._open.wait()       # cut meanwhile: hold what was read
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(OSError):
                writer.close()
