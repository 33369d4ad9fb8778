"""The mount's wait for the FUSE device, on a pipe standing in for /dev/fuse: it
returns when a request is there, waits when none is, lets other tasks run while
requests keep coming, and lets go when pyfuse3 closes the session."""

import asyncio
import os

import pyfuse3.asyncio as shim
import pytest

from fuse_client.fuse_wakeups import YIELD_EVERY, FuseWakeups


def with_pipe(test):
    async def run():
        r, w = os.pipe()
        try:
            await asyncio.wait_for(test(FuseWakeups(), r, w), 10)
        finally:
            os.close(r)
            os.close(w)
    asyncio.run(run())


def test_a_queued_request_is_read_at_once_and_an_absent_one_waited_for():
    async def test(wakeups, r, w):
        os.write(w, b"x")
        await wakeups.wait_readable(r)            # already there
        os.read(r, 1)
        waiting = asyncio.create_task(wakeups.wait_readable(r))
        await asyncio.sleep(0.05)
        assert not waiting.done()                 # nothing to read: it waits
        os.write(w, b"y")
        await waiting
        assert os.read(r, 1) == b"y"
        assert not shim._read_futures             # nothing left behind
    with_pipe(test)


def test_other_tasks_run_while_requests_keep_coming():
    async def test(wakeups, r, w):
        os.write(w, b"x")                         # always readable: never drained
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)
        other = asyncio.create_task(ticker())
        for _ in range(10 * YIELD_EVERY):
            await wakeups.wait_readable(r)
        other.cancel()
        assert ticks >= 5
    with_pipe(test)


def test_closing_the_session_wakes_the_waiter_and_lets_go_of_the_fd():
    async def test(wakeups, r, w):
        waiting = asyncio.create_task(wakeups.wait_readable(r))
        await asyncio.sleep(0.05)
        shim.notify_closing(r)
        with pytest.raises(shim.ClosedResourceError):
            await waiting
        assert not wakeups.registered
        os.write(w, b"x")                         # no reader left to wake
        await asyncio.sleep(0.05)
    with_pipe(test)
