"""A cheaper wait for the FUSE device than pyfuse3's asyncio shim makes.

pyfuse3 (3.5, asyncio mode) waits for /dev/fuse to be readable before reading each
request, and its shim does so with a new reader every time: an epoll_ctl to add it, a
future, a loop pass, an epoll_ctl to remove it. At five requests per create that was a
good part of the mount's time per create. Here the reader stays registered while
requests keep coming, and a request already queued is read at once (a non-blocking
poll), yielding to the event loop every YIELD_EVERY requests so that nothing else
starves.

The shim's contract is kept: a waiter is woken with ClosedResourceError when pyfuse3
closes the session (`notify_closing` finds it in `_read_futures`).
"""

import asyncio
import select

import pyfuse3.asyncio as shim

YIELD_EVERY = 8


class FuseWakeups:
    def __init__(self):
        self.fd: int | None = None
        self.poll = select.poll()
        self.waiter: asyncio.Future | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.registered = False
        self.streak = 0

    async def wait_readable(self, fd: int) -> None:
        if fd != self.fd:
            self._watch(fd)
        if self.streak < YIELD_EVERY and self.poll.poll(0):
            self.streak += 1
            return
        self.streak = 0
        self.loop = asyncio.get_running_loop()
        waiter = self.waiter = self.loop.create_future()
        shim._read_futures[fd].add(waiter)
        try:
            if not self.registered:
                self.loop.add_reader(fd, self._readable)
                self.registered = True
            await waiter
        except BaseException:
            self._unregister()              # closing, or cancelled: let go of the fd
            raise
        finally:
            self.waiter = None
            shim._read_futures[fd].discard(waiter)
            if not shim._read_futures[fd]:
                del shim._read_futures[fd]

    def _readable(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        else:
            self._unregister()              # nobody waits: no busy wake-ups meanwhile

    def _watch(self, fd: int) -> None:
        self._unregister()
        self.fd, self.poll = fd, select.poll()
        self.poll.register(fd, select.POLLIN)

    def _unregister(self) -> None:
        if self.registered and self.loop is not None and self.fd is not None:
            self.loop.remove_reader(self.fd)
        self.registered = False


def install() -> None:
    """Use FuseWakeups for pyfuse3's waits (after pyfuse3.asyncio.enable())."""
    shim.wait_readable = FuseWakeups().wait_readable
