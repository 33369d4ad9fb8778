"""Small files whose bytes the metadata cluster keeps inline (in the log), as a mount
writes and reads them. See services/common/posix/inline_data.py.

Writes to a file with no chunks that stay within INLINE_MAX bytes are kept here
until the file is flushed (close, fsync), then committed in one command: a
WriteInline, or, for a file created here whose create has not gone yet, inside the
Create itself. A write that would take the file past INLINE_MAX, or a commit the
master refuses with EFBIG (the file got chunks meanwhile), hands the kept writes to
the chunk path instead (`spill`), which moves committed inline bytes into chunk 0.

Reads of such a file are served from its bytes as last read from the master (an
open for reading brings them) or written here, with this mount's uncommitted writes
laid over them. They are dropped when another client changes the file (the
master's push) and at every open that asks the master, so close-to-open holds.
"""

import errno
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError
from services.common.posix.records import INLINE_MAX

KNOWN_BYTES = 64 << 20      # bytes of committed small files kept for reads
MAX_BACKINGS = 1 << 17

Piece = tuple[int, bytes]
# (caller, inode, pieces, time of the last write) -> the file's attributes once
# committed; raises FsError
Commit = Callable[[pb.Caller, int, list[Piece], int], Awaitable[pb.Attr]]


@dataclass
class _Kept:
    """Writes to one file not committed yet."""
    caller: pb.Caller
    pieces: list[Piece] = field(default_factory=list)
    end: int = 0
    written_ns: int = 0     # when the last write was made (the file's mtime)


def overlay(base: bytes, pieces: list[Piece]) -> bytes:
    """`base` with `pieces` written over it in order (a gap reads as zeros)."""
    data = bytearray(base)
    for offset, piece in pieces:
        if offset > len(data):
            data.extend(bytes(offset - len(data)))
        data[offset:offset + len(piece)] = piece
    return bytes(data)


class InlineIO:
    def __init__(self, metadata, known_bytes: int = KNOWN_BYTES):
        self.md = metadata
        self.commit: Commit = self._commit_at_master
        self.known_limit = known_bytes
        self._kept: dict[int, _Kept] = {}
        # inode -> its committed inline bytes as last known (oldest first, bounded)
        self._known: OrderedDict[int, bytes] = OrderedDict()
        self._known_bytes = 0
        # inode -> True: its bytes are inline (or it has none and no chunks);
        # False: it has chunks. Absent: not known (asked at the first small write).
        self._inline: dict[int, bool] = {}
        # inode -> opens here: their bytes are kept whatever the bound (a file open
        # here stays readable when another client removes it)
        self._held: dict[int, int] = {}

    # -- what the master said ---------------------------------------------------------
    def learned(self, inode: int, inline: bool, data: bytes | None = None) -> None:
        """The master (or this mount, for a file it made) says how the file's bytes
        are kept; `data`: the inline bytes, when known."""
        if len(self._inline) >= MAX_BACKINGS:
            self._inline.clear()
        self._inline[inode] = inline
        self._drop_known(inode)
        if inline and data is not None:
            self._remember(inode, data)

    def learned_reply(self, inode: int, reply: mpb.Reply) -> None:
        """From a read_open reply: inline bytes, or chunk 0 (or nothing: empty)."""
        if reply.inline:
            self.learned(inode, True, reply.data)
        elif reply.HasField("chunk") or reply.attr.size > INLINE_MAX:
            self.learned(inode, False)
        else:
            self.learned(inode, True, b"")

    def created(self, inode: int) -> None:
        """A new, empty file: small writes to it are kept inline."""
        self.learned(inode, True, b"")

    def chunked(self, inode: int) -> None:
        """The file's bytes went to chunks."""
        self.learned(inode, False)

    def forget(self, inode: int) -> None:
        """Another client changed the file: what is known of it may be stale (kept
        writes stay: they are this mount's). A file open here keeps the bytes its open
        found until it is closed (close-to-open: the next open asks again), so it stays
        readable when another client removes it."""
        if inode in self._held:
            return
        self._inline.pop(inode, None)
        self._drop_known(inode)

    # -- writes -----------------------------------------------------------------------
    async def write(self, caller: pb.Caller, inode: int, offset: int, data: bytes) -> bool:
        """Keep the write here (True), or leave it to the chunk path (False)."""
        end = offset + len(data)
        kept = self._kept.get(inode)
        if end > INLINE_MAX:
            return False
        if kept is None:
            if not await self._inline_backed(caller, inode):
                return False
            kept = self._kept[inode] = _Kept(caller)
        kept.caller = caller
        kept.pieces.append((offset, bytes(data)))
        kept.end = max(kept.end, end)
        kept.written_ns = time.time_ns()
        return True

    async def _inline_backed(self, caller: pb.Caller, inode: int) -> bool:
        known = self._inline.get(inode)
        if known is None:
            reply = await self.md.read(caller, locate_chunk=mpb.LocateChunk(
                inode=inode, chunk_index=0))
            known = reply.inline or not reply.HasField("chunk")
            self._inline[inode] = known
        return known

    def keeps(self, inode: int) -> bool:
        return inode in self._kept

    def kept_inodes(self) -> list[int]:
        return list(self._kept)

    def kept_caller(self, inode: int) -> pb.Caller:
        return self._kept[inode].caller

    def written_end(self, inode: int) -> int:
        kept = self._kept.get(inode)
        return kept.end if kept is not None else 0

    def spill(self, inode: int) -> list[Piece]:
        """Take the kept writes out, for the chunk path; from now on the file's
        bytes go to chunks."""
        kept = self._kept.pop(inode, None)
        self.chunked(inode)
        return kept.pieces if kept is not None else []

    async def flush(self, inode: int) -> pb.Attr | None:
        """Commit the kept writes (FsError EFBIG: they must go through chunks, and
        are still kept); the file's attributes after the commit."""
        kept = self._kept.get(inode)
        if kept is None:
            return None
        attr = await self.commit(kept.caller, inode, kept.pieces, kept.written_ns)
        if self._kept.get(inode) is kept:
            del self._kept[inode]
        base = self._known.get(inode)
        if base is not None:
            self._remember(inode, overlay(base, kept.pieces))
        return attr

    async def _commit_at_master(self, caller: pb.Caller, inode: int, pieces: list[Piece],
                                written_ns: int) -> pb.Attr:
        return (await self.md.mutate(caller, write_inline=pb.WriteInline(
            inode=inode, time_ns=written_ns,
            pieces=[pb.InlinePiece(offset=o, data=d) for o, d in pieces]))).attr

    def truncated(self, inode: int, size: int) -> None:
        """The file was cut to `size` (its kept writes were committed first)."""
        base = self._known.get(inode)
        if base is not None and len(base) > size:
            self._remember(inode, base[:size])

    # -- reads ------------------------------------------------------------------------
    async def read(self, caller: pb.Caller, inode: int, offset: int, length: int,
                   size: int) -> bytes | None:
        """Up to `length` bytes at `offset` of a file whose bytes are inline (never
        past `size`), or None: read its chunks."""
        kept = self._kept.get(inode)
        if kept is None and not self._inline.get(inode):
            return None
        base = self._known.get(inode)
        if base is None:
            reply = await self.md.read(caller, read_open=mpb.ReadOpen(inode=inode))
            if not reply.inline and reply.HasField("chunk"):
                self.learned(inode, False)
                return None
            base = reply.data if reply.inline else b""
            self._remember(inode, base)
        if kept is not None:
            base = overlay(base, kept.pieces)
        end = min(offset + length, size)
        if end <= offset:
            return b""
        return base[offset:end].ljust(end - offset, b"\0")

    # -- the bounded store of known bytes ---------------------------------------------
    def hold(self, inode: int) -> None:
        """The file is open here: keep its bytes while it is."""
        self._held[inode] = self._held.get(inode, 0) + 1

    def unhold(self, inode: int) -> None:
        left = self._held.get(inode, 0) - 1
        if left > 0:
            self._held[inode] = left
        else:
            self._held.pop(inode, None)

    def _remember(self, inode: int, data: bytes) -> None:
        self._drop_known(inode)
        self._known[inode] = data
        self._known_bytes += len(data)
        if self._known_bytes <= self.known_limit:
            return
        victims, freed = [], 0
        for old, known in self._known.items():     # the oldest first, past the bound
            if self._known_bytes - freed <= self.known_limit:
                break
            if old not in self._held:
                victims.append(old)
                freed += len(known)
        for old in victims:
            self._known_bytes -= len(self._known.pop(old))

    def _drop_known(self, inode: int) -> None:
        old = self._known.pop(inode, None)
        if old is not None:
            self._known_bytes -= len(old)


def refused_inline(exc: BaseException) -> bool:
    """A commit the master refused because the bytes must go through chunks."""
    return isinstance(exc, FsError) and exc.errno == errno.EFBIG
