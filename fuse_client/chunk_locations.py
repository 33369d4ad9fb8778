"""Where a file's chunks are: the master's answer to locate_chunk, cached per
(inode, chunk index).

Only copies and parts at the chunk's current version are kept: an older one holds
stale bytes. An entry is dropped when a server says the copy is stale or gone (the
chunk was rewritten, truncated or moved), and entries expire after a few seconds so
that writes by other clients are seen; holes expire sooner, as another client may
fill them at any moment.

A client also remembers which chunk (id and version) each (inode, index) was: when
another client (or, for a second region, the region it follows) deletes a file this
client has open for reading (an open that is not recorded at the master), the inode
is gone, but its chunks are retained for the retention window and are found by id
(locate_chunk_id), so the reader goes on as with an unlinked open file.
"""

import errno
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError

ENTRY_TTL_S = 5.0
HOLE_TTL_S = 0.5
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Located:
    chunk: pb.Chunk | None          # None: a hole, reads as zeros
    copies: tuple[mpb.ChunkLocation, ...] = ()
    parts: tuple[mpb.ChunkLocation, ...] = ()
    storage_class: str = ""
    at: float = field(default_factory=time.monotonic)
    inline: bool = False            # the file's bytes are kept inline: no chunks to read

    @property
    def is_hole(self) -> bool:
        return self.chunk is None

    def describe(self) -> str:
        if self.chunk is None:
            return "a hole"
        return (f"chunk {self.chunk.id} version {self.chunk.version} "
                f"({self.storage_class or 'class unknown'}; copies on "
                f"{', '.join(c.address for c in self.copies) or 'no server'}; "
                f"{len(self.parts)} parts)")


def from_reply(reply: mpb.Reply) -> Located:
    """The current copies and parts of a locate_chunk (or begin_write) reply."""
    if reply.inline:
        return Located(None, inline=True)
    if not reply.HasField("chunk"):
        return Located(None, storage_class=reply.storage_class)
    current = [loc for loc in reply.locations if loc.version == reply.chunk.version]
    return Located(reply.chunk,
                   copies=tuple(loc for loc in current if loc.part == 0),
                   parts=tuple(sorted((loc for loc in current if loc.part), key=_part)),
                   storage_class=reply.storage_class)


def of_copies(chunk: pb.Chunk, addresses: tuple[str, ...], storage_class: str = "") -> Located:
    """A chunk known to be on `addresses` at its version (this client just wrote it)."""
    return Located(chunk, copies=tuple(mpb.ChunkLocation(address=a, version=chunk.version)
                                       for a in addresses), storage_class=storage_class)


def _part(loc: mpb.ChunkLocation) -> int:
    return loc.part


class LocationCache:
    def __init__(self, metadata, ttl_s: float = ENTRY_TTL_S, hole_ttl_s: float = HOLE_TTL_S):
        self.metadata = metadata
        self.ttl_s, self.hole_ttl_s = ttl_s, hole_ttl_s
        self._entries: OrderedDict[tuple[int, int], Located] = OrderedDict()
        self._chunks: OrderedDict[tuple[int, int], pb.Chunk] = OrderedDict()  # what
        # each (inode, index) was last located as, for a file deleted while read
        self.lookups = 0   # locate_chunk calls made, for tests and benchmarks

    async def get(self, caller: pb.Caller, inode: int, index: int) -> Located:
        key = (inode, index)
        found = self._entries.get(key)
        if found is not None and self._fresh(found):
            self._entries.move_to_end(key)
            return found
        self.lookups += 1
        try:
            reply = await self.metadata.read(
                caller, locate_chunk=mpb.LocateChunk(inode=inode, chunk_index=index))
        except FsError as exc:
            known = self._chunks.get(key)
            if exc.errno != errno.ENOENT or known is None:
                raise
            reply = await self.metadata.read(caller, locate_chunk_id=mpb.LocateChunkId(
                chunk_id=known.id, version=known.version))
            reply.chunk.CopyFrom(known)
        located = from_reply(reply)
        self.put(inode, index, located)
        return located

    def peek(self, inode: int, index: int) -> Located | None:
        """The entry, however old (the caller checks chunk id and version)."""
        return self._entries.get((inode, index))

    def put(self, inode: int, index: int, located: Located) -> None:
        key = (inode, index)
        self._entries[key] = located
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
        if located.chunk is not None:
            self._chunks[key] = located.chunk
            self._chunks.move_to_end(key)
            while len(self._chunks) > MAX_ENTRIES:
                self._chunks.popitem(last=False)

    def forget(self, inode: int, index: int | None = None) -> None:
        """Drop one chunk's entry, or with no index every entry of the inode."""
        if index is not None:
            self._entries.pop((inode, index), None)
        else:
            self.forget_from(inode, 0)

    def forget_from(self, inode: int, first: int) -> None:
        """Drop the entries of chunks `first` and later (a truncation removed them)."""
        for key in [k for k in self._entries if k[0] == inode and k[1] >= first]:
            del self._entries[key]

    def _fresh(self, located: Located) -> bool:
        ttl = self.hole_ttl_s if located.is_hole else self.ttl_s
        return time.monotonic() - located.at < ttl
