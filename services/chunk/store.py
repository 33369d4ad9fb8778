"""The chunk store: a chunkserver's chunks as files in its directories, every block checked.

A chunk of up to 64 MiB lives in one file, `<directory>/<id's low byte, 2 hex>/chunk_<id,
16 hex>.mng`: a 16 KiB header (two copies of id, version, length and the CRC32C of each of
the 1024 blocks of 64 KiB; see header.py) and then the data. Every read checks the CRC of
each block it touches and every access checks the version the caller names.

Crash safety, in short (docs/chunk-format.md has the argument): data is written in place,
then the header copy that does not hold the last durable header is rewritten. A crash
anywhere leaves each block either matching the CRC of the header that is read back, or
failing it: a read then raises ChunkCorruptError, and never returns wrong bytes.

Durability: after `write(..., sync=True)` (or any call with sync=True, or `sync(id)`)
returns, everything done to that chunk so far survives a machine crash, its creation
included (the file's directory entry is fsynced the first time the chunk is synced).
Without it, a return means only that reads see the change; a crash may lose it (reads
then fail their CRC or return the previous bytes). `create` and `delete` with sync=True
also fsync the directory.

One lock serializes all calls, so a ChunkStore may be shared between threads.
"""

from __future__ import annotations  # the method `list` shadows the builtin in the class

import fcntl
import functools
import logging
import os
import re
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import crc32c

from services.chunk.blocks import check_range, partly_covered, touched, written_crcs
from services.chunk.errors import (
    ChunkCorruptError,
    ChunkDirectoryError,
    ChunkError,
    ChunkExistsError,
    ChunkFormatError,
    ChunkIOError,
    ChunkNotFoundError,
    ChunkRangeError,
    ChunkStoreFullError,
    StaleVersionError,
    chunk_name,
)
from services.chunk.header import (
    BLOCK_SIZE,
    BLOCKS,
    CHUNK_SIZE,
    HEADER_SIZE,
    MAX_CHUNK_ID,
    MAX_VERSION,
    SLOT_STRIDE,
    ZERO_BLOCK_CRC,
    Header,
    HeaderError,
    UnsupportedFormatError,
    encode,
    pick,
    zero_padded_crc,
)
from services.chunk.placement import choose_directory
from services.common.durable_files import fsync_dir, pwrite_all

log = logging.getLogger(__name__)

LOCK_FILE = ".chunkstore.lock"
SCRUB_BATCH = 16            # blocks per read while scrubbing (1 MiB)
_FILE_NAME = re.compile(r"chunk_([0-9a-f]{16})\.mng")
_SUBDIR = re.compile(r"[0-9a-f]{2}")


class ChunkInfo(NamedTuple):
    chunk_id: int
    version: int
    length: int


class _Open:
    """A chunk file the store has open. The current header is in `slot`; header updates go
    to `spare`, so the other slot keeps the last header known to be durable."""

    __slots__ = ("fd", "path", "header", "slot", "spare")

    def __init__(self, fd: int, path: str, header: Header, slot: int, spare: int):
        self.fd, self.path, self.header, self.slot, self.spare = fd, path, header, slot, spare


def _locked(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self._lock:
            if self._closed:
                raise ChunkError("this ChunkStore is closed: open a new one on its directories")
            return method(self, *args, **kwargs)
    return call




def _check_version(version: int) -> None:
    if not 0 <= version <= MAX_VERSION:
        raise ChunkRangeError(f"chunk version {version} is outside 0..{MAX_VERSION}")


def _mismatches(crcs: array, first: int, count: int, raw: bytes) -> Iterator[tuple[int, int]]:
    """(block, computed CRC) for each of `count` blocks from `first` whose bytes in `raw`
    (short where the file ends: the rest reads as zeros) fail the CRC in `crcs`."""
    view = memoryview(raw)
    for i in range(count):
        part = view[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]
        if len(part) == BLOCK_SIZE:
            computed = crc32c.crc32c(part)
        else:
            computed = zero_padded_crc(part) if part else ZERO_BLOCK_CRC
        if computed != crcs[first + i]:
            yield first + i, computed


class ChunkStore:
    """Chunk files spread over `directories` (one per data disk, each locked while open)."""

    def __init__(self, directories: list[str], max_open: int = 256):
        self._lock = threading.RLock()
        self._closed = False
        self._max_open = max_open
        self._dirs = self._checked_directories(directories)
        self._lock_fds: list[int] = []
        self._paths: dict[int, str] = {}
        self._open: OrderedDict[int, _Open] = OrderedDict()
        self._meta: dict[int, tuple[int, int]] = {}       # id -> (version, length)
        self._spare_after_close: dict[int, int] = {}     # closed with an unsynced header
        self._damaged: dict[int, str] = {}
        self._unsynced_entry: set[int] = set()   # created without sync: name not durable
        self._durable_subdirs: set[str] = set()  # whose name in their directory was fsynced
        try:
            for directory in self._dirs:
                self._lock_fds.append(self._lock_directory(directory))
            self._scan()
        except BaseException:
            self._release()
            raise

    # -- opening and closing ------------------------------------------------------------

    @staticmethod
    def _checked_directories(directories: list[str]) -> list[str]:
        if not directories:
            raise ChunkDirectoryError(
                "no chunk directories given: name at least one directory on a data disk")
        out = []
        for directory in directories:
            path = os.path.realpath(directory)
            if not os.path.isdir(path):
                raise ChunkDirectoryError(
                    f"chunk directory {directory} does not exist or is not a directory: "
                    "create it (or mount its disk), or remove it from the list")
            if path in out:
                raise ChunkDirectoryError(
                    f"chunk directory {directory} is listed twice: name each directory once")
            out.append(path)
        return out

    @staticmethod
    def _lock_directory(directory: str) -> int:
        lock_path = os.path.join(directory, LOCK_FILE)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise ChunkDirectoryError(
                f"cannot use chunk directory {directory}: creating {lock_path} failed "
                f"({e.strerror}); fix the directory's owner or permissions") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ChunkDirectoryError(
                f"chunk directory {directory} is in use by another chunk store (it holds "
                f"{lock_path}): stop that chunkserver, or give this one other directories"
            ) from None
        return fd

    def _scan(self) -> None:
        for directory in self._dirs:
            for sub in os.scandir(directory):
                if not (_SUBDIR.fullmatch(sub.name) and sub.is_dir()):
                    continue
                for entry in os.scandir(sub.path):
                    match = _FILE_NAME.fullmatch(entry.name)
                    if match and entry.is_file():
                        self._found(int(match[1], 16), entry.path)

    def _found(self, chunk_id: int, path: str) -> None:
        other = self._paths.get(chunk_id)
        if other is None:
            self._paths[chunk_id] = path
            return

        def version(p: str) -> int:
            try:
                with open(p, "rb") as f:
                    return pick(f.read(HEADER_SIZE))[0].version
            except (OSError, HeaderError):
                return -1
        keep, drop = sorted((other, path), key=version, reverse=True)
        log.warning("chunk %s has two files, %s (version %d) and %s (version %d): using the "
                    "first; remove the other once you are sure it is not needed",
                    chunk_name(chunk_id), keep, version(keep), drop, version(drop))
        self._paths[chunk_id] = keep

    def close(self) -> None:
        """Close every file and unlock the directories. This does not fsync: call `sync`
        (or write with sync=True) for what must survive a machine crash."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._release()

    def _release(self) -> None:
        for chunk_id in list(self._open):
            self._close_file(chunk_id)
        for fd in self._lock_fds:
            os.close(fd)
        self._lock_fds.clear()

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the open-file cache ------------------------------------------------------------

    def _get(self, chunk_id: int) -> _Open:
        c = self._open.get(chunk_id)
        if c is not None:
            self._open.move_to_end(chunk_id)
            return c
        path = self._paths.get(chunk_id)
        if path is None:
            raise ChunkNotFoundError(chunk_id)
        try:
            c = self._load(chunk_id, path)
        except (ChunkCorruptError, ChunkFormatError) as e:
            self._damaged[chunk_id] = str(e)
            raise
        self._damaged.pop(chunk_id, None)
        self._open[chunk_id] = c
        self._meta[chunk_id] = (c.header.version, c.header.length)
        while len(self._open) > self._max_open:
            self._close_file(next(iter(self._open)))
        return c

    def _load(self, chunk_id: int, path: str) -> _Open:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise ChunkIOError(chunk_id, path, e) from e
        try:
            header, slot = pick(os.pread(fd, HEADER_SIZE, 0))
            if header.chunk_id != chunk_id:
                raise HeaderError(f"it is the header of chunk {chunk_name(header.chunk_id)}, "
                                  "not of the chunk its file name says")
        except UnsupportedFormatError as e:
            os.close(fd)
            raise ChunkFormatError(f"chunk {chunk_name(chunk_id)} ({path}): {e}") from None
        except HeaderError as e:
            os.close(fd)
            raise ChunkCorruptError(chunk_id, path, None, str(e)) from None
        except OSError as e:
            os.close(fd)
            raise ChunkIOError(chunk_id, path, e) from e
        spare = self._spare_after_close.pop(chunk_id, 1 - slot)
        return _Open(fd, path, header, slot, spare)

    def _close_file(self, chunk_id: int) -> None:
        c = self._open.pop(chunk_id, None)
        if c is None:
            return
        if c.slot == c.spare:   # the header written last is not known to be durable
            self._spare_after_close[chunk_id] = c.spare
        os.close(c.fd)

    @contextmanager
    def _io(self, c: _Open):
        """Report an OSError as ChunkIOError, and forget the open file so that the next
        call reads the header back from the disk instead of trusting memory."""
        try:
            yield
        except ChunkError:
            raise
        except OSError as e:
            chunk_id = c.header.chunk_id
            self._close_file(chunk_id)
            self._spare_after_close.pop(chunk_id, None)
            raise ChunkIOError(chunk_id, c.path, e) from e

    def _checked(self, chunk_id: int, version: int) -> _Open:
        c = self._get(chunk_id)
        if c.header.version != version:
            raise StaleVersionError(chunk_id, version, c.header.version)
        return c

    # -- the building blocks of every call ----------------------------------------------

    def _verified(self, c: _Open, first: int, count: int) -> bytes:
        """Blocks [first, first + count) as stored, zeros past the end of the file, after
        checking each one's CRC."""
        want = count * BLOCK_SIZE
        raw = os.pread(c.fd, want, HEADER_SIZE + first * BLOCK_SIZE)
        for block, computed in _mismatches(c.header.crcs, first, count, raw):
            start = block * BLOCK_SIZE
            raise ChunkCorruptError(
                c.header.chunk_id, c.path, block,
                f"bytes {start}..{start + BLOCK_SIZE - 1} have CRC32C {computed:08x} but the "
                f"header records {c.header.crcs[block]:08x}")
        return raw if len(raw) == want else raw + bytes(want - len(raw))

    def _write_header(self, c: _Open, header: Header, sync: bool) -> None:
        pwrite_all(c.fd, encode(header), c.spare * SLOT_STRIDE)
        c.header, c.slot = header, c.spare
        self._meta[header.chunk_id] = (header.version, header.length)
        if sync:
            self._sync(c)

    def _sync(self, c: _Open) -> None:
        os.fdatasync(c.fd)
        c.spare = 1 - c.slot
        chunk_id = c.header.chunk_id
        if chunk_id in self._unsynced_entry:     # created without sync: its name too
            self._sync_entry(c.path)
            self._unsynced_entry.discard(chunk_id)

    def _sync_entry(self, path: str) -> None:
        """Make the name of the chunk file `path` durable: fsync its subdirectory, and
        the chunk directory above it unless this store already made the subdirectory's
        own name durable (it may be new, or left by a create that was never synced, or
        by a process that stopped before syncing it)."""
        sub = os.path.dirname(path)
        fsync_dir(sub)
        if sub not in self._durable_subdirs:
            fsync_dir(os.path.dirname(sub))
            self._durable_subdirs.add(sub)

    # -- the API ------------------------------------------------------------------------

    @_locked
    def create(self, chunk_id: int, version: int, sync: bool = False) -> None:
        """A new, empty chunk (reads as zeros) in the directory placement picks."""
        if not 0 <= chunk_id <= MAX_CHUNK_ID:
            raise ChunkRangeError(f"chunk id {chunk_id} is outside 0..{MAX_CHUNK_ID}")
        _check_version(version)
        if chunk_id in self._paths:
            raise ChunkExistsError(chunk_id, self._paths[chunk_id])
        free = self._free_by_directory()
        directory = choose_directory(chunk_id, free, HEADER_SIZE + CHUNK_SIZE)
        if directory is None:
            raise ChunkStoreFullError(
                "no chunk directory has room for another 64 MiB chunk (free bytes: "
                + ", ".join(f"{d}: {f}" for d, f in free.items())
                + "): free some space or add a directory")
        sub = os.path.join(directory, f"{chunk_id & 0xff:02x}")
        path = os.path.join(sub, f"chunk_{chunk_name(chunk_id)}.mng")
        header = Header(chunk_id, version)
        try:
            os.makedirs(sub, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        except FileExistsError:
            raise ChunkExistsError(chunk_id, path) from None
        except OSError as e:
            raise ChunkIOError(chunk_id, path, e) from e
        c = _Open(fd, path, header, slot=0, spare=0)
        try:
            self._write_header(c, header, sync=False)
            if sync:
                # fsync, not fdatasync: the inode is new, so all of it must be on disk
                os.fsync(fd)
                self._sync_entry(path)
        except OSError as e:          # leave no half-made file behind
            os.close(fd)
            os.unlink(path)
            self._meta.pop(chunk_id, None)
            raise ChunkIOError(chunk_id, path, e) from e
        c.spare = 1         # the creation header stays the fallback copy until a sync
        if not sync:
            self._unsynced_entry.add(chunk_id)
        self._paths[chunk_id] = path
        self._open[chunk_id] = c
        while len(self._open) > self._max_open:
            self._close_file(next(iter(self._open)))

    @_locked
    def write(self, chunk_id: int, version: int, offset: int, data, sync: bool = False) -> None:
        """Store `data` (any bytes-like) at `offset` in the chunk. Blocks the write covers
        only partly are read, and must pass their CRC, to compute their new CRC: a damaged
        block is never given a fresh CRC that would hide the damage."""
        check_range(offset, len(data))
        c = self._checked(chunk_id, version)
        with self._io(c):
            if len(data):
                old = {b: self._verified(c, b, 1) for b in partly_covered(offset, len(data))}
                crcs = written_crcs(offset, data, old)
                pwrite_all(c.fd, data, HEADER_SIZE + offset)
                header = c.header.successor(length=max(c.header.length, offset + len(data)))
                for block, crc in crcs.items():
                    header.crcs[block] = crc
                self._write_header(c, header, sync)
            elif sync:
                self._sync(c)

    @_locked
    def read(self, chunk_id: int, version: int, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of the chunk; never-written bytes read as zeros.
        ChunkCorruptError if any block the range touches fails its CRC."""
        check_range(offset, length)
        c = self._checked(chunk_id, version)
        blocks = touched(offset, length)
        if not blocks:
            return b""
        with self._io(c):
            raw = self._verified(c, blocks.start, len(blocks))
        start = offset - blocks.start * BLOCK_SIZE
        return raw[start:start + length]

    @_locked
    def set_version(self, chunk_id: int, old: int, new: int, sync: bool = False) -> None:
        """Change the version (the master bumps it when a write begins or after a truncate).
        One header-copy write: after a crash the chunk has either version, never a mix."""
        _check_version(new)
        c = self._checked(chunk_id, old)
        with self._io(c):
            self._write_header(c, c.header.successor(version=new), sync)

    @_locked
    def truncate(self, chunk_id: int, version: int, length: int, sync: bool = False) -> None:
        """Make the chunk `length` bytes long: a cut drops the bytes past it (a later
        extension reads zeros there), a growth adds zeros."""
        check_range(0, length)
        c = self._checked(chunk_id, version)
        header = c.header.successor(length=length)
        with self._io(c):
            if length < c.header.length:
                first_gone, keep = -(-length // BLOCK_SIZE), length % BLOCK_SIZE
                if keep:
                    last = length // BLOCK_SIZE
                    old = self._verified(c, last, 1)
                    header.crcs[last] = zero_padded_crc(memoryview(old)[:keep])
                header.crcs[first_gone:] = array("I", [ZERO_BLOCK_CRC]) * (BLOCKS - first_gone)
                os.ftruncate(c.fd, HEADER_SIZE + length)
            self._write_header(c, header, sync)

    @_locked
    def delete(self, chunk_id: int, version: int | None = None, sync: bool = False) -> None:
        """Remove the chunk's file. With `version`, only if the chunk has that version; a
        chunk with a damaged header can be deleted without one."""
        path = self._paths.get(chunk_id)
        if path is None:
            raise ChunkNotFoundError(chunk_id)
        if version is not None:
            self._checked(chunk_id, version)
        self._close_file(chunk_id)
        try:
            os.unlink(path)
            if sync:
                fsync_dir(os.path.dirname(path))
        except FileNotFoundError:
            log.warning("chunk %s: its file %s was already gone", chunk_name(chunk_id), path)
        except OSError as e:
            raise ChunkIOError(chunk_id, path, e) from e
        finally:
            for known in (self._paths, self._meta, self._spare_after_close, self._damaged):
                known.pop(chunk_id, None)
            self._unsynced_entry.discard(chunk_id)

    @_locked
    def sync(self, chunk_id: int) -> None:
        """Make everything written to the chunk so far survive a machine crash."""
        c = self._get(chunk_id)
        with self._io(c):
            self._sync(c)

    @_locked
    def list(self) -> Iterator[ChunkInfo]:
        """(chunk id, version, length) of every readable chunk, by id, for the master.
        Chunks whose header is damaged are left out, logged, and listed by `damaged()`."""
        out = []
        for chunk_id in sorted(self._paths):
            meta = self._meta.get(chunk_id)
            if meta is None:
                try:
                    self._get(chunk_id)
                except (ChunkCorruptError, ChunkFormatError, ChunkIOError) as e:
                    log.error("%s", e)
                    self._damaged.setdefault(chunk_id, str(e))
                    continue
                meta = self._meta[chunk_id]
            out.append(ChunkInfo(chunk_id, *meta))
        return iter(out)

    @_locked
    def damaged(self) -> dict[int, str]:
        """Chunks found unreadable as a whole (header damaged, unknown format): id -> why."""
        return dict(self._damaged)

    @_locked
    def length(self, chunk_id: int) -> int:
        return self._get(chunk_id).header.length

    @_locked
    def version(self, chunk_id: int) -> int:
        return self._get(chunk_id).header.version

    def scrub(self, chunk_id: int) -> list[int]:
        """Numbers of the blocks that fail their CRC, read from the disk rather than from
        cached pages (except pages with changes not yet written back). The header is read
        back too: ChunkCorruptError if it is damaged. The store's lock is taken one batch
        (1 MiB) at a time, so reads and writes of other chunks wait at most that long;
        each batch is checked against the header current at the time it is read."""
        self._drop_cached(chunk_id)
        bad = []
        for first in range(0, BLOCKS, SCRUB_BATCH):
            bad.extend(self._scrub_batch(chunk_id, first))
        return bad

    @_locked
    def _drop_cached(self, chunk_id: int) -> None:
        self._close_file(chunk_id)
        path = self._paths.get(chunk_id)
        if path is None:
            raise ChunkNotFoundError(chunk_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        except OSError as e:
            raise ChunkIOError(chunk_id, path, e) from e

    @_locked
    def _scrub_batch(self, chunk_id: int, first: int) -> list[int]:
        c = self._get(chunk_id)
        with self._io(c):
            raw = os.pread(c.fd, SCRUB_BATCH * BLOCK_SIZE, HEADER_SIZE + first * BLOCK_SIZE)
        return [b for b, _ in _mismatches(c.header.crcs, first, SCRUB_BATCH, raw)]

    @_locked
    def free_bytes(self) -> int:
        """Free space for chunks, counting each file system once."""
        by_device = {}
        for directory in self._dirs:
            by_device[os.stat(directory).st_dev] = self._free(directory)
        return sum(by_device.values())

    def used_bytes(self) -> int:
        """Disk space the chunk files take (allocated blocks: holes cost nothing).
        Stat-ing every file takes long on a big server: it is done outside the lock,
        on a copy of the list, so reads and writes do not wait for it."""
        with self._lock:
            paths = list(self._paths.values())
        total = 0
        for path in paths:
            try:
                total += os.stat(path).st_blocks * 512
            except FileNotFoundError:
                continue
        return total

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, chunk_id: int) -> bool:
        return chunk_id in self._paths

    @staticmethod
    def _free(directory: str) -> int:
        st = os.statvfs(directory)
        return st.f_bavail * st.f_frsize

    def _free_by_directory(self) -> dict[str, int]:
        return {d: self._free(d) for d in self._dirs}
