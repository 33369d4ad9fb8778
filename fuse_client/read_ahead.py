"""Readahead for sequential readers, as the kernel does for local files.

A file read from its start, or where its previous read ended, is fetched in aligned
blocks, a window of them ahead of the reader, so that the next reads find their bytes
already here instead of waiting a round trip each. Other reads go straight through.
The blocks of a file are dropped when this mount writes to it, cuts it, or sees
another size for it.
"""

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from schemas import namespace_pb2 as pb

Fetch = Callable[[pb.Caller, int, int, int, int], Awaitable[bytes]]


class _Stream:
    def __init__(self, file_size: int):
        self.file_size = file_size
        self.next = 0                                    # where the last read ended
        self.blocks: dict[int, asyncio.Task] = {}        # block start -> its bytes


class ReadAhead:
    def __init__(self, fetch: Fetch, block: int = 4 << 20, window: int = 16 << 20,
                 max_files: int = 16):
        """`fetch(caller, inode, offset, length, file_size)` reads without readahead."""
        self._fetch, self.block, self.window, self.max_files = fetch, block, window, max_files
        self._files: OrderedDict[int, _Stream] = OrderedDict()

    async def read(self, caller: pb.Caller, inode: int, offset: int, length: int,
                   file_size: int) -> bytes:
        stream = self._stream(inode, file_size)
        if offset not in (0, stream.next) and not self._held(stream, offset):
            stream.next = offset + length
            return await self._fetch(caller, inode, offset, length, file_size)
        end = min(offset + length, file_size)
        out = []
        for start in range(offset - offset % self.block, end, self.block):
            data = await self._block(stream, caller, inode, start)
            out.append(data[max(0, offset - start):end - start])
        stream.next = end
        self._ahead(stream, caller, inode, end)
        return b"".join(out)

    def forget(self, inode: int) -> None:
        """Drop the inode's blocks (fetches under way finish unseen: a reader may be
        waiting for one)."""
        self._files.pop(inode, None)

    def _stream(self, inode: int, file_size: int) -> _Stream:
        stream = self._files.get(inode)
        if stream is None or stream.file_size != file_size:
            self.forget(inode)
            stream = self._files[inode] = _Stream(file_size)
            while len(self._files) > self.max_files:
                self.forget(next(iter(self._files)))
        self._files.move_to_end(inode)
        return stream

    def _held(self, stream: _Stream, offset: int) -> bool:
        return offset - offset % self.block in stream.blocks

    async def _block(self, stream: _Stream, caller: pb.Caller, inode: int, start: int) -> bytes:
        task = self._start(stream, caller, inode, start)
        try:
            return await asyncio.shield(task)
        except Exception:
            stream.blocks.pop(start, None)   # a failed fetch is tried again next time
            raise

    def _ahead(self, stream: _Stream, caller: pb.Caller, inode: int, end: int) -> None:
        """Blocks up to a window past `end` are on their way; those behind are dropped."""
        current = end - end % self.block
        for start in [s for s in stream.blocks if s + self.block <= current]:
            del stream.blocks[start]
        for start in range(current, min(end + self.window, stream.file_size), self.block):
            self._start(stream, caller, inode, start)

    def _start(self, stream: _Stream, caller: pb.Caller, inode: int, start: int) -> asyncio.Task:
        task = stream.blocks.get(start)
        if task is None:
            length = min(self.block, stream.file_size - start)
            task = stream.blocks[start] = asyncio.create_task(
                self._fetch(caller, inode, start, length, stream.file_size))
            task.add_done_callback(_quiet)
        return task


def _quiet(task: asyncio.Task) -> None:
    """A prefetch nobody waited for may fail unseen; whoever needs it fetches again."""
    if not task.cancelled():
        task.exception()
