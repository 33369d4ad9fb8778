"""The shape of our multiplexed gRPC streams, on the serving side: batches of
requests in, replies out in batches as they complete, matched by id."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

Put = Callable[[object], None]


class _Notice:
    """Something the server tells the client unasked (not a reply)."""
    __slots__ = ("item",)

    def __init__(self, item):
        self.item = item


async def pipelined(batches: AsyncIterator, items: Callable[[object], Sequence],
                    handle: Callable[[Sequence, Put], Awaitable[None] | None],
                    reply_batch: Callable[..., object],
                    subscribe: Callable[[Put], None] | None = None) -> AsyncIterator:
    """Yield reply batches for a stream of request batches.

    `items(batch)` lists a request batch's requests; `handle(requests, put)` answers
    them, now or later, through `put(reply)` (exactly one reply a request); whatever
    replies are ready in one event-loop turn go back as one `reply_batch(list)`.
    The stream ends once the client stops sending and every request is answered.
    With `subscribe`, it is first given a `notify(item)` that sends items unasked;
    batches are then `reply_batch(replies, notices)`.
    """
    replies: asyncio.Queue = asyncio.Queue()
    pending = 0
    if subscribe is not None:
        subscribe(lambda item: replies.put_nowait(_Notice(item)))
    running: set[asyncio.Task] = set()

    async def read_requests() -> None:
        nonlocal pending
        async for batch in batches:
            requests = items(batch)
            pending += len(requests)
            handled = handle(requests, replies.put_nowait)
            if handled is not None:
                task = asyncio.ensure_future(handled)
                running.add(task)
                task.add_done_callback(running.discard)
        replies.put_nowait(None)

    reader = asyncio.create_task(read_requests())
    finished = False
    try:
        while not finished or pending:
            out = [await replies.get()]
            await asyncio.sleep(0)  # replies made in this loop turn go together
            while not replies.empty():
                out.append(replies.get_nowait())
            if None in out:
                finished = True
                out.remove(None)
            if subscribe is None:
                pending -= len(out)
                if out:
                    yield reply_batch(out)
                continue
            notices = [n.item for n in out if isinstance(n, _Notice)]
            out = [r for r in out if not isinstance(r, _Notice)]
            pending -= len(out)
            if out or notices:
                yield reply_batch(out, notices)
    finally:
        reader.cancel()
