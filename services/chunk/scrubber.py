"""The scrubber: reads every chunk back from the disk, over and over, so that damage is
found (and replaced by the master) before the last good copy is needed.

A pass walks all chunks at no more than `mibps` MiB/s of chunk data, then rests
`interval_s`. Each damaged block or unreadable header is reported once, when first
found; damage that goes away (the copy was replaced) is forgotten, so a later one is
reported afresh.
"""

import asyncio
import logging
import time
from collections.abc import Callable

from services.chunk.errors import (
    ChunkCorruptError,
    ChunkError,
    ChunkNotFoundError,
    chunk_name,
)
from services.chunk.header import BLOCK_SIZE, HEADER_SIZE
from services.chunk.store import ChunkStore

log = logging.getLogger(__name__)

HEADER = -1   # the "block" number of a damaged header in the memory of what was found


class Pace:
    """How long to wait after each chunk to keep to `rate` bytes a second. Pure."""

    def __init__(self, rate: float):
        if rate <= 0:
            raise ValueError(f"scrub rate {rate} must be above 0 MiB/s")
        self.rate = rate
        self._due = None      # when the bytes read so far may have been read, at `rate`

    def delay(self, nbytes: int, now: float) -> float:
        start = now if self._due is None or self._due < now else self._due
        self._due = start + nbytes / self.rate
        return max(0.0, self._due - now)


def findings(store: ChunkStore, ident: int) -> dict[int, str]:
    """{block (HEADER for the header): what is wrong} of one chunk, read from the disk."""
    try:
        bad = store.scrub(ident)
    except ChunkCorruptError as e:
        return {HEADER if e.block is None else e.block: str(e)}
    except ChunkNotFoundError:
        return {}                      # deleted since it was listed
    except ChunkError as e:            # an I/O error or an unknown format: unusable too
        return {HEADER: str(e)}
    return {b: (f"scrub: block {b} (bytes {b * BLOCK_SIZE}..{(b + 1) * BLOCK_SIZE - 1}) of "
                f"chunk file {chunk_name(ident)} fails its CRC32C") for b in bad}


class Scrubber:
    def __init__(self, store: ChunkStore, report: Callable[[int, int, str], None],
                 mibps: float = 64.0, interval_s: float = 3600.0):
        self.store, self.report, self.interval_s = store, report, interval_s
        self.pace = Pace(mibps * (1 << 20))
        self.known: dict[int, set[tuple[int, int]]] = {}   # id -> {(version, block)}
        self.passes = 0

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                count = await self.scrub_pass()
            except Exception:     # a bug must not end scrubbing for good
                log.exception("scrub pass failed; the next one starts in %.0f s",
                              self.interval_s)
            else:
                self.passes += 1
                damaged = sum(1 for bad in self.known.values() if bad)
                log.log(logging.WARNING if damaged else logging.DEBUG,
                        "scrub pass %d: %d chunks in %.1f s, %d of them damaged",
                        self.passes, count, time.monotonic() - started, damaged)
            await asyncio.sleep(self.interval_s)

    async def scrub_pass(self) -> int:
        listing = await asyncio.to_thread(lambda: list(self.store.list()))
        for info in listing:
            found = await asyncio.to_thread(findings, self.store, info.chunk_id)
            self._note(info.chunk_id, info.version, found)
            await asyncio.sleep(self.pace.delay(HEADER_SIZE + info.length, time.monotonic()))
        listed = {info.chunk_id for info in listing}
        for ident in set(self.known) - listed:
            del self.known[ident]
        return len(listing)

    def _note(self, ident: int, version: int, found: dict[int, str]) -> None:
        keys = {(version, block) for block in found}
        for key in sorted(keys - self.known.get(ident, set())):
            self.report(ident, version, found[key[1]])
        if keys:
            self.known[ident] = keys
        else:
            self.known.pop(ident, None)
