"""Numbers the metadata cluster reserved for this session (inode numbers, chunk ids),
taken here one at a time so that a create or a new chunk needs no round trip.

The fold keeps two ranges per session: the current one and one reserved ahead of
it. Here the next range is asked for while a quarter of the current one is left,
so a steady stream of takers never finds none at hand.
"""

import asyncio
from collections.abc import Awaitable, Callable

# Reserve `count` more: -> (first, count) as the fold granted them.
Ask = Callable[[int], Awaitable[tuple[int, int]]]


class Reserved:
    def __init__(self, ask: Ask, size: int, spawn: Callable[[Awaitable], asyncio.Task]):
        self.ask, self.size, self.spawn = ask, size, spawn
        self._range = (0, 0)          # unused numbers [lo, hi)
        self._next = (0, 0)           # reserved ahead, used after it
        self._asking: asyncio.Task | None = None

    def take(self, ahead: bool = False) -> int:
        """The next number (0: none at hand now; `ahead`: take none, only make sure
        more are on their way)."""
        lo, hi = self._range
        if lo >= hi:
            self._range, self._next = self._next, (0, 0)
            lo, hi = self._range
        if hi - lo < self.size // 4 and not self._next[1] and self._asking is None:
            self._asking = self.spawn(self.fill())
        if lo >= hi or ahead:
            return 0
        self._range = (lo + 1, hi)
        return lo

    async def fill(self) -> None:
        """Reserve a range now (the current one, or the one after it)."""
        try:
            first, count = await self.ask(self.size)
            new = (first, first + count)
            if self._range[0] < self._range[1]:
                self._next = new
            else:
                self._range = new
        finally:
            self._asking = None

    def at_hand(self) -> bool:
        return self._range[0] < self._range[1]

    def asking(self) -> bool:
        return self._asking is not None

    def reset(self) -> None:
        """The session that held them is gone: none of them may be used."""
        self._range = self._next = (0, 0)
