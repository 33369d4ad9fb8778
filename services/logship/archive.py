"""The metalogger's archive: the committed Raft log in compressed, checksummed,
append-only segment files, plus the projection snapshots the cluster took.

    ARCHIVE/
      LOCK                                  flock'ed by the one writer
      segments/<first index, 20 digits>.seg blocks of entries, in index order
      snapshots/<index, 20 digits>/         meta.json + projection/ (a RocksDB checkpoint)

A segment is a header, then blocks. A block holds the entries of (part of) one
`append` call, zlib-compressed, with a header that says which indexes and which
times it holds, so the in-memory index (built from the headers on open) finds an
index or a time without decompressing anything. docs/logship.md has the layout.

Only the newest segment can end in a torn write: a full segment is fsynced before
the next one is created. A torn tail (never synced, so never acknowledged) is cut
back on open; damage anywhere else is an ArchiveError naming the file and offset.
"""

import base64
import bisect
import contextlib
import fcntl
import json
import os
import re
import shutil
import struct
import time
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import crc32c

from services.common.durable_files import fsync_dir, pwrite_all
from services.metadata.raft.messages import NORMAL

FORMAT_VERSION = 1
SEGMENT_MAGIC = b"MNGARCH\x00"
BLOCK_MARK = b"\x4d\xa7\xc4\x1b"      # starts every block, so recovery can look past damage
SEGMENT_BYTES = 64 << 20
BLOCK_RAW_BYTES = 1 << 20             # a block closes when its entries reach this much
BLOCK_ENTRIES = 8192
MAX_BLOCK_BYTES = 80 << 20            # an entry is at most 64 MiB; anything above is damage
CODEC_RAW, CODEC_ZLIB = 0, 1
ZLIB_LEVEL = 1                        # fast to write; the archive is read far less than written

_SEG_HEADER = struct.Struct(">8sHQI")          # magic, version, first index, CRC32C of those
# mark, header CRC, payload CRC, payload length, raw length, first index, count,
# min time, max time, first term, last term, codec
_BLOCK = struct.Struct(">4sIIIIQIqqQQB")
_CRC_FROM = 8                                   # the header CRC covers what follows it
_MASK, _SIGN, _WRAP = (1 << 64) - 1, 1 << 63, 1 << 64   # time steps wrap like int64
_SEGMENT_NAME = re.compile(r"(\d{20})\.seg")
_SNAPSHOT_NAME = re.compile(r"(\d{20})")
SEGMENTS, SNAPSHOTS, LOCK_FILE, META_FILE, PROJECTION = (
    "segments", "snapshots", "LOCK", "meta.json", "projection")
_datasync = getattr(os, "fdatasync", os.fsync)

_ADVICE = ("Run `mooseng log verify` on the archive to see all that is wrong; restore from "
           "another metalogger's archive, or start a new archive from the cluster (it "
           "fetches a snapshot)")


@dataclass(frozen=True, slots=True)
class ArchivedEntry:
    index: int
    term: int
    kind: int
    data: bytes
    time_ns: int


@dataclass(frozen=True)
class SnapshotInfo:
    index: int
    term: int
    time_ns: int
    config: bytes
    path: str   # a RocksDB checkpoint directory (a projection) inside the archive


class ArchiveError(Exception):
    """The archive is damaged or inconsistent, or cannot be used as asked."""


class ArchiveGapError(ArchiveError):
    """An append that does not continue the archive."""


class _BadBlock(Exception):
    """Internal: the bytes at some offset are not a valid block; the message says why."""


def command_time(data: bytes) -> int:
    """A Command's time_ns without parsing it: field 1 (varint) comes first when set,
    as protobuf writes fields in number order. 0 when absent."""
    if not data or data[0] != 0x08:
        return 0
    value, shift = 0, 0
    for pos in range(1, min(len(data), 11)):
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value - (1 << 64) if value >= 1 << 63 else value
        shift += 7
    return 0


def _segment_header(first: int) -> bytes:
    fields = _SEG_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, first, 0)[:-4]
    return fields + crc32c.crc32c(fields).to_bytes(4, "big")


def encode_block(rows: list[tuple[int, int, int, int, bytes]]) -> bytes:
    """One block from (index, term, kind, time_ns, data) rows with consecutive indexes.

    The raw payload is columnar (terms, kinds, time steps, lengths, then the data), so
    the repetitive columns compress to almost nothing and decode with one unpack each."""
    n = len(rows)
    terms = [row[1] for row in rows]
    times = [row[3] for row in rows]
    steps = [(t - p) & _MASK for t, p in zip(times, [0, *times[:-1]], strict=True)]
    datas = [row[4] for row in rows]
    raw = b"".join((struct.pack(f">{n}Q", *terms), bytes(row[2] for row in rows),
                    struct.pack(f">{n}Q", *steps),
                    struct.pack(f">{n}I", *map(len, datas)), *datas))
    payload, codec = zlib.compress(raw, ZLIB_LEVEL), CODEC_ZLIB
    if len(payload) >= len(raw):
        payload, codec = raw, CODEC_RAW
    header = _BLOCK.pack(BLOCK_MARK, 0, crc32c.crc32c(payload), len(payload), len(raw),
                         rows[0][0], n, min(times), max(times), terms[0], terms[-1], codec)
    crc = crc32c.crc32c(header[_CRC_FROM:]).to_bytes(4, "big")
    return header[:4] + crc + header[_CRC_FROM:] + payload


def _block_header(buf, pos: int, room: int) -> tuple:
    """The fields of the block header at buf[pos:], where `room` bytes of the file remain
    from there; _BadBlock if there is no intact header or its payload cannot fit."""
    if room < _BLOCK.size or len(buf) - pos < _BLOCK.size:
        raise _BadBlock("the file ends inside a block header")
    fields = _BLOCK.unpack_from(buf, pos)
    if fields[0] != BLOCK_MARK:
        raise _BadBlock("no block marker")
    if crc32c.crc32c(buf[pos + _CRC_FROM:pos + _BLOCK.size]) != fields[1]:
        raise _BadBlock("block header CRC mismatch")
    if fields[3] > MAX_BLOCK_BYTES or fields[6] == 0:
        raise _BadBlock(f"impossible block (payload {fields[3]} bytes, {fields[6]} entries)")
    if _BLOCK.size + fields[3] > room:
        raise _BadBlock("the file ends inside a block's payload")
    return fields


def decode_block(fields: tuple, payload) -> list[ArchivedEntry]:
    """The entries of a block whose header is `fields`; _BadBlock if the payload is damaged."""
    _, _, crc, _, raw_len, first, n, *_, codec = fields
    if crc32c.crc32c(payload) != crc:
        raise _BadBlock("block payload CRC mismatch")
    try:
        raw = zlib.decompress(payload) if codec == CODEC_ZLIB else bytes(payload)
    except zlib.error as exc:
        raise _BadBlock(f"payload does not decompress ({exc})") from None
    if len(raw) != raw_len:
        raise _BadBlock(f"payload holds {len(raw)} bytes, its header says {raw_len}")
    columns = n * 21
    if raw_len < columns:
        raise _BadBlock(f"payload too short for its {n} entries")
    terms = struct.unpack_from(f">{n}Q", raw, 0)
    kinds = raw[8 * n:9 * n]
    steps = struct.unpack_from(f">{n}Q", raw, 9 * n)
    lengths = struct.unpack_from(f">{n}I", raw, 17 * n)
    if columns + sum(lengths) != raw_len:
        raise _BadBlock(f"payload holds {raw_len} bytes, its {n} entries need "
                        f"{columns + sum(lengths)}")
    out, off, t, entry = [], columns, 0, ArchivedEntry
    for k in range(n):
        t = (t + steps[k]) & _MASK
        end = off + lengths[k]
        out.append(entry(first + k, terms[k], kinds[k], raw[off:end],
                         t - _WRAP if t >= _SIGN else t))
        off = end
    return out


@dataclass
class _Segment:
    path: str
    first: int
    size: int = _SEG_HEADER.size
    firsts: array = field(default_factory=lambda: array("Q"))    # per block: first index
    offsets: array = field(default_factory=lambda: array("Q"))   # per block: file offset
    min_times: array = field(default_factory=lambda: array("q"))
    max_times: array = field(default_factory=lambda: array("q"))
    last: int = 0
    last_term: int = 0

    def __post_init__(self):
        self.last = self.last or self.first - 1

    def add_block(self, offset: int, fields: tuple) -> None:
        self.firsts.append(fields[5])
        self.offsets.append(offset)
        self.min_times.append(fields[7])
        self.max_times.append(fields[8])
        self.last = fields[5] + fields[6] - 1
        self.last_term = fields[10]


class Archive:
    """One writer at a time (flock). `readonly=True` takes no lock and repairs nothing:
    tools may read an archive a metalogger is writing (a torn tail is just the end)."""

    def __init__(self, directory: str, create: bool = False, readonly: bool = False,
                 segment_bytes: int = SEGMENT_BYTES):
        self.directory = directory
        self.readonly = readonly
        self._segment_bytes = segment_bytes
        self._fd: int | None = None      # the newest segment, open for appends
        self._lock_fd: int | None = None
        self._dirty = self._dir_dirty = False
        self._failed: str | None = None
        self._time: int | None = None    # the last entry's time, once looked up
        self.recovery_notes: list[str] = []
        self._open_dirs(create)
        try:
            self._segments = self._scan_segments()
            self._snapshots = self._scan_snapshots()
            self._check_coverage()
        except BaseException:
            self._release()
            raise

    # -- opening ------------------------------------------------------------------------
    def _open_dirs(self, create: bool) -> None:
        if not os.path.isdir(self.directory):
            if not create or self.readonly:
                raise ArchiveError(f"{self.directory}: no archive there (the directory does "
                                   f"not exist); check the path, or let a metalogger "
                                   f"create it")
            os.makedirs(self.directory)
            fsync_dir(os.path.dirname(os.path.abspath(self.directory)))
        for sub in (SEGMENTS, SNAPSHOTS):
            path = os.path.join(self.directory, sub)
            if not os.path.isdir(path):
                if not create or self.readonly:
                    raise ArchiveError(f"{self.directory}: not an archive (no {sub}/ "
                                       f"directory in it)")
                os.mkdir(path)
                fsync_dir(self.directory)
        if self.readonly:
            return
        self._lock_fd = os.open(os.path.join(self.directory, LOCK_FILE),
                                os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ArchiveError(f"{self.directory}: another process (a metalogger?) has the "
                               f"archive open for writing; stop it, or read with the log "
                               f"tools, which do not need the lock") from None

    @property
    def _seg_dir(self) -> str:
        return os.path.join(self.directory, SEGMENTS)

    @property
    def _snap_dir(self) -> str:
        return os.path.join(self.directory, SNAPSHOTS)

    def _scan_segments(self) -> list[_Segment]:
        names = sorted((int(m[1]), os.path.join(self._seg_dir, n))
                       for n in os.listdir(self._seg_dir)
                       if (m := _SEGMENT_NAME.fullmatch(n)))
        segments = []
        for k, (first, path) in enumerate(names):
            seg = self._scan_segment(path, first, newest=k == len(names) - 1)
            if seg is not None:
                segments.append(seg)
        for before, after in zip(segments, segments[1:], strict=False):
            if after.first <= before.last:
                raise ArchiveError(f"{after.path}: starts at index {after.first} but "
                                   f"{before.path} already holds entries up to "
                                   f"{before.last}; one of them was copied in by mistake. "
                                   f"{_ADVICE}")
            if after.first == before.last + 1 and after.firsts and \
                    self._first_term(after) < before.last_term:
                raise ArchiveError(f"{after.path}: entry {after.first} has a term below the "
                                   f"term {before.last_term} of the entry before it. {_ADVICE}")
        if segments and not self.readonly:
            self._fd = os.open(segments[-1].path, os.O_RDWR)
        return segments

    def _first_term(self, seg: _Segment) -> int:
        with open(seg.path, "rb") as f:
            f.seek(seg.offsets[0])
            return _BLOCK.unpack(f.read(_BLOCK.size))[9]

    def _scan_segment(self, path: str, first: int, newest: bool) -> _Segment | None:
        """Read the block headers (and, in the newest segment, check every payload's CRC
        so a torn tail is found). Cuts a torn tail unless read-only."""
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(_SEG_HEADER.size)
            bad = _segment_header_problem(head, first)
            if bad:
                if newest and size <= _SEG_HEADER.size + _BLOCK.size:
                    self._note(f"{path}: {bad}; a segment being created when the writer "
                               f"stopped, removed")
                    if not self.readonly:
                        os.unlink(path)
                    return None
                raise ArchiveError(f"{path}: {bad}. {_ADVICE}")
            seg = _Segment(path, first)
            buf = f.read() if newest else None
            off = _SEG_HEADER.size
            while off < size:
                try:
                    if newest:   # buf holds the file from the segment header on
                        rel = off - _SEG_HEADER.size
                        fields = _block_header(buf, rel, size - off)
                        payload = memoryview(buf)[rel + _BLOCK.size:
                                                  rel + _BLOCK.size + fields[3]]
                        if crc32c.crc32c(payload) != fields[2]:   # decoding waits for reads
                            raise _BadBlock("block payload CRC mismatch")
                    else:
                        f.seek(off)
                        fields = _block_header(f.read(_BLOCK.size), 0, size - off)
                except _BadBlock as why:
                    if newest and not _intact_block_after(buf, off - _SEG_HEADER.size + 1,
                                                          seg.last):
                        self._cut_tail(seg, off, size, str(why))
                        return seg
                    raise ArchiveError(
                        f"{path}: {why} at byte offset {off} (the block for index "
                        f"{seg.last + 1}), in data that was complete on disk. {_ADVICE}"
                    ) from None
                if fields[5] != seg.last + 1:
                    raise ArchiveError(f"{path}: the block at byte offset {off} starts at "
                                       f"index {fields[5]} where {seg.last + 1} belongs. "
                                       f"{_ADVICE}")
                seg.add_block(off, fields)
                off += _BLOCK.size + fields[3]
            seg.size = off
            return seg

    def _cut_tail(self, seg: _Segment, off: int, size: int, why: str) -> None:
        seg.size = off
        self._note(f"{seg.path}: {why} at byte offset {off}, the last block, never synced: "
                   f"{size - off} bytes cut, the archive ends at index {seg.last}")
        if self.readonly:
            return
        with open(seg.path, "r+b") as f:
            f.truncate(off)
            os.fsync(f.fileno())

    def _note(self, what: str) -> None:
        self.recovery_notes.append(what)

    def _scan_snapshots(self) -> list[SnapshotInfo]:
        out = []
        for name in sorted(os.listdir(self._snap_dir)):
            path = os.path.join(self._snap_dir, name)
            if not _SNAPSHOT_NAME.fullmatch(name):
                if (name.endswith(".tmp") or name.endswith(".del")) and not self.readonly:
                    shutil.rmtree(path, ignore_errors=True)   # an interrupted add or drop
                continue
            out.append(_read_snapshot_meta(path, int(name)))
        return out

    def _check_coverage(self) -> None:
        """Entries missing between segments (or before the first) must be covered by a
        snapshot, or a restore could not get past them."""
        snaps = {s.index for s in self._snapshots}
        prev_last = 0
        for seg in self._segments:
            if seg.first != prev_last + 1 and not (
                    seg.first - 1 in snaps if prev_last else
                    any(s >= seg.first - 1 for s in snaps)):
                raise ArchiveError(f"{seg.path}: entries {prev_last + 1}..{seg.first - 1} are "
                                   f"missing and no snapshot covers them. {_ADVICE}")
            prev_last = seg.last

    # -- reading ------------------------------------------------------------------------
    @property
    def last_index(self) -> int:
        last = self._segments[-1].last if self._segments else 0
        return max([last] + [s.index for s in self._snapshots])

    @property
    def last_term(self) -> int:
        seg_last = self._segments[-1].last if self._segments else 0
        snap = self._snapshots[-1] if self._snapshots else None
        if snap and snap.index > seg_last:
            return snap.term
        return self._segments[-1].last_term if self._segments else 0

    @property
    def first_index(self) -> int:
        """The first archived entry (last_index + 1 when there is none)."""
        for seg in self._segments:
            if seg.firsts:
                return seg.firsts[0]
        return self.last_index + 1

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments) + sum(
            _tree_bytes(os.path.dirname(s.path)) for s in self._snapshots)

    def snapshots(self) -> list[SnapshotInfo]:
        return list(self._snapshots)

    def entries(self, lo: int | None = None, hi: int | None = None
                ) -> Iterator[ArchivedEntry]:
        """Archived entries lo..hi (inclusive; default all), every checksum checked."""
        for batch in self.batches(lo, hi):
            yield from batch

    def batches(self, lo: int | None = None, hi: int | None = None
                ) -> Iterator[list[ArchivedEntry]]:
        """Like entries(), a block's worth at a time (the fast path for replays)."""
        lo = self.first_index if lo is None else max(lo, 1)
        hi = self.last_index if hi is None else hi
        for seg in self._segments:
            if seg.last < lo or seg.first > hi or not seg.firsts:
                continue
            k = max(0, bisect.bisect_right(seg.firsts, lo) - 1)
            yield from self._read_blocks(seg, k, lo, hi)

    def _read_blocks(self, seg: _Segment, k: int, lo: int, hi: int
                     ) -> Iterator[list[ArchivedEntry]]:
        with open(seg.path, "rb", buffering=0) as f:
            while k < len(seg.firsts) and seg.firsts[k] <= hi:
                # Read a run of blocks (up to ~8 MiB) with one call.
                end_k = k
                start = seg.offsets[k]
                while end_k + 1 < len(seg.firsts) and seg.firsts[end_k + 1] <= hi and \
                        seg.offsets[end_k + 1] - start < (8 << 20):
                    end_k += 1
                stop = seg.offsets[end_k + 1] if end_k + 1 < len(seg.offsets) else seg.size
                buf = memoryview(os.pread(f.fileno(), stop - start, start))
                for j in range(k, end_k + 1):
                    off = seg.offsets[j] - start
                    try:
                        fields = _block_header(buf, off, seg.size - seg.offsets[j])
                        if fields[5] != seg.firsts[j]:
                            raise _BadBlock(f"holds index {fields[5]} where {seg.firsts[j]} "
                                            f"belongs")
                        p = off + _BLOCK.size
                        batch = decode_block(fields, buf[p:p + fields[3]])
                    except _BadBlock as why:
                        raise ArchiveError(
                            f"{seg.path}: {why} at byte offset {seg.offsets[j]} (the block "
                            f"holding index {seg.firsts[j]}). {_ADVICE}") from None
                    if batch[0].index < lo or batch[-1].index > hi:
                        batch = [e for e in batch if lo <= e.index <= hi]
                    yield batch
                k = end_k + 1

    def term_at(self, index: int) -> int | None:
        for snap in self._snapshots:
            if snap.index == index:
                return snap.term
        for e in self.entries(index, index):
            return e.term
        return None

    def index_at_time(self, time_ns: int) -> int:
        """The last index whose time is at or before `time_ns` (0 if none). Times need
        not be monotonic (a new leader's clock): the answer lies in the last block whose
        earliest time is at or before `time_ns`."""
        best = max([s.index for s in self._snapshots if s.time_ns <= time_ns], default=0)
        for seg in reversed(self._segments):
            for j in range(len(seg.firsts) - 1, -1, -1):
                if seg.min_times[j] <= time_ns:
                    hi = seg.firsts[j + 1] - 1 if j + 1 < len(seg.firsts) else seg.last
                    hits = [e.index for e in self.entries(seg.firsts[j], hi)
                            if e.time_ns <= time_ns]
                    return max(best, hits[-1])
        return best

    def time_at(self, index: int) -> int | None:
        for e in self.entries(index, index):
            return e.time_ns
        return None

    # -- writing ------------------------------------------------------------------------
    def append(self, entries: Sequence) -> None:
        """Add Raft entries (index, term, kind, data) continuing the archive. Not durable
        until sync(). A gap, or entries out of order, raises ArchiveGapError and nothing
        is written."""
        self._check_writable()
        if not entries:
            return
        rows = self._rows(entries)
        for start in range(0, len(rows), BLOCK_ENTRIES):
            block_rows, raw = [], 0
            for row in rows[start:start + BLOCK_ENTRIES]:
                block_rows.append(row)
                raw += len(row[4])
                if raw >= BLOCK_RAW_BYTES:
                    self._write_block(block_rows)
                    block_rows, raw = [], 0
            if block_rows:
                self._write_block(block_rows)
        self._time = rows[-1][3]

    def _rows(self, entries: Sequence) -> list[tuple]:
        expect, prev_term = self.last_index + 1, self.last_term
        if entries[0].index != expect:
            raise ArchiveGapError(
                f"{self.directory}: entries start at index {entries[0].index} but the archive "
                f"ends at {expect - 1}; "
                + ("entries in between are missing: fetch them, or a snapshot, from the "
                   "cluster" if entries[0].index > expect else "they are archived already"))
        rows, t = [], self._last_time()
        for e in entries:
            if e.index != expect:
                raise ArchiveGapError(f"{self.directory}: the entries to append skip from "
                                      f"{expect - 1} to {e.index}; nothing was written")
            if e.term < prev_term:
                raise ArchiveError(f"{self.directory}: entry {e.index} has term {e.term}, "
                                   f"below {prev_term}; Raft terms never fall, nothing was "
                                   f"written")
            if not isinstance(e.data, bytes):
                raise TypeError(f"entry {e.index}: data is {type(e.data).__name__}, not bytes")
            if e.kind == NORMAL:
                t = command_time(e.data)
            rows.append((e.index, e.term, e.kind, t, e.data))
            expect, prev_term = expect + 1, e.term
        return rows

    def _last_time(self) -> int:
        """The time of the last archived entry (cached: appends are frequent)."""
        if self._time is None:
            seg = self._segments[-1] if self._segments else None
            if seg and seg.firsts:
                self._time = self.time_at(seg.last) or 0
            else:
                self._time = self._snapshots[-1].time_ns if self._snapshots else 0
        return self._time

    def _write_block(self, rows: list[tuple]) -> None:
        first = rows[0][0]
        seg = self._segments[-1] if self._segments else None
        if seg is None or seg.last != first - 1 or (seg.firsts and
                                                    seg.size >= self._segment_bytes):
            seg = self._new_segment(first)
        block = encode_block(rows)
        self._guarded(pwrite_all, self._fd, block, seg.size)
        seg.add_block(seg.size, _BLOCK.unpack_from(block))
        seg.size += len(block)
        self._dirty = True

    def _new_segment(self, first: int) -> _Segment:
        # The full segment is durable before the next exists, so only the newest can be torn.
        if self._fd is not None:
            self._guarded(_datasync, self._fd)
            os.close(self._fd)
            self._fd = None
        path = os.path.join(self._seg_dir, f"{first:020d}.seg")
        self._fd = self._guarded(os.open, path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        self._guarded(pwrite_all, self._fd, _segment_header(first), 0)
        seg = _Segment(path, first)
        self._segments.append(seg)
        self._dirty = self._dir_dirty = True
        return seg

    def sync(self) -> None:
        """Everything appended so far survives a crash once this returns."""
        self._check_writable()
        if self._dirty and self._fd is not None:
            self._guarded(_datasync, self._fd)
        if self._dir_dirty:
            self._guarded(fsync_dir, self._seg_dir)
        self._dirty = self._dir_dirty = False

    def add_snapshot(self, index: int, term: int, config: bytes, source_dir: str) -> None:
        """Archive a projection checkpoint taken at `index` (durable on return). SST files
        are hard-linked when possible (they never change), the rest copied. A snapshot
        past the last entry makes the archive continue after it."""
        self._check_writable()
        if any(s.index == index for s in self._snapshots):
            return
        known = self.term_at(index) if index <= self.last_index else None
        if known is not None and known != term:
            raise ArchiveError(f"{self.directory}: a snapshot at index {index} of term {term} "
                               f"contradicts the archived entry {index} of term {known}")
        if index > self.last_index:
            self.sync()   # entries before the jump are durable before it is recorded
        time_ns = self.time_at(index) if self.first_index <= index <= self._entries_last() \
            else None
        if time_ns is None:   # not archived: when the archive received it
            time_ns = time.time_ns()
        final = os.path.join(self._snap_dir, f"{index:020d}")
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.mkdir(tmp)
        copy_checkpoint(source_dir, os.path.join(tmp, PROJECTION))
        meta = {"index": index, "term": term, "time_ns": time_ns,
                "config": base64.b64encode(config).decode()}
        _write_durably(os.path.join(tmp, META_FILE), json.dumps(meta).encode())
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(self._snap_dir)
        self._snapshots.append(_read_snapshot_meta(final, index))
        self._snapshots.sort(key=lambda s: s.index)
        if index > self._entries_last():
            self._time = time_ns   # entries after it without a time of their own take this

    def _entries_last(self) -> int:
        return self._segments[-1].last if self._segments else 0

    def apply_retention(self, max_age_s: float | None, max_bytes: int | None,
                        now_ns: int | None = None) -> dict:
        """Drop whole old segments and old snapshots, oldest first, while what is kept
        stays restorable: a kept snapshot at or before the first kept entry (or entries
        from index 1). The newest snapshot and everything after it are never dropped."""
        self._check_writable()
        now_ns = time.time_ns() if now_ns is None else now_ns
        base = self._retention_base(max_age_s, max_bytes, now_ns)
        report = {"dropped_segments": 0, "dropped_snapshots": 0, "freed_bytes": 0}
        if base is None:
            return report
        # Segments first (oldest first), then snapshots: every state in between restores.
        while len(self._segments) > 1 and self._segments[0].last <= base.index:
            seg = self._segments.pop(0)
            report["freed_bytes"] += seg.size
            os.unlink(seg.path)
            report["dropped_segments"] += 1
        if report["dropped_segments"]:
            fsync_dir(self._seg_dir)
        for snap in [s for s in self._snapshots if s.index < base.index]:
            folder = os.path.dirname(snap.path)
            report["freed_bytes"] += _tree_bytes(folder)
            os.rename(folder, folder + ".del")
            fsync_dir(self._snap_dir)
            shutil.rmtree(folder + ".del")
            self._snapshots.remove(snap)
            report["dropped_snapshots"] += 1
        report["first_index"], report["oldest_snapshot"] = self.first_index, base.index
        return report

    def _retention_base(self, max_age_s, max_bytes, now_ns) -> SnapshotInfo | None:
        """The oldest snapshot to keep: the newest one old enough to drop what is before
        it, moved forward while the archive is over its size."""
        if not self._snapshots:
            return None
        chosen = None
        segment_bytes = sum(seg.size for seg in self._segments)
        if max_age_s is not None:
            cutoff = now_ns - int(max_age_s * 1e9)
            target = self.index_at_time(cutoff)
            older = [s for s in self._snapshots if s.index <= target]
            chosen = older[-1] if older else None
        if max_bytes is not None and segment_bytes + sum(
                _tree_bytes(os.path.dirname(s.path)) for s in self._snapshots) > max_bytes:
            sizes = {id(s): _tree_bytes(os.path.dirname(s.path)) for s in self._snapshots}
            for snap in self._snapshots:
                if chosen is not None and snap.index < chosen.index:
                    continue
                kept = sum(seg.size for seg in self._segments[:-1] if seg.last > snap.index)
                kept += self._segments[-1].size if self._segments else 0
                kept += sum(sizes[id(s)] for s in self._snapshots if s.index >= snap.index)
                chosen = snap
                if kept <= max_bytes:
                    break
        return chosen

    # -- plumbing -----------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.readonly:
            raise ArchiveError(f"{self.directory}: opened read-only")
        if self._lock_fd is None:
            raise ArchiveError(f"{self.directory}: the archive is closed")
        if self._failed:
            raise ArchiveError(f"{self.directory}: an earlier write or fsync failed "
                               f"({self._failed}); what is on disk is unknown until the "
                               f"archive is opened again")

    def _guarded(self, call, *args):
        try:
            return call(*args)
        except OSError as err:
            self._failed = f"{getattr(call, '__name__', call)}: {err}"
            raise

    def close(self) -> None:
        """Sync what was appended and release the lock. Idempotent."""
        try:
            if self._lock_fd is not None and not self._failed:
                self.sync()
        finally:
            self._release()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- helpers --------------------------------------------------------------------------------

def _segment_header_problem(head: bytes, first: int) -> str | None:
    if len(head) < _SEG_HEADER.size:
        return "the file ends inside the segment header"
    magic, version, found, crc = _SEG_HEADER.unpack(head)
    if magic != SEGMENT_MAGIC or crc32c.crc32c(head[:-4]) != crc:
        return "damaged segment header (not an archive segment?)"
    if version != FORMAT_VERSION:
        return (f"written in archive format {version}, this build reads {FORMAT_VERSION}; "
                f"use the MooseNG version that wrote it")
    if found != first:
        return f"its header says it starts at index {found}, its name says {first}"
    return None


def _intact_block_after(buf: bytes, start: int, last: int) -> bool:
    """Is there an intact block for a later index past `start`? Then the damage before it
    is not a torn final write."""
    pos = buf.find(BLOCK_MARK, start)
    while pos != -1:
        try:
            fields = _block_header(buf, pos, len(buf) - pos)
            if fields[5] > last:
                decode_block(fields, memoryview(buf)[pos + _BLOCK.size:
                                                     pos + _BLOCK.size + fields[3]])
                return True
        except _BadBlock:
            pass
        pos = buf.find(BLOCK_MARK, pos + 1)
    return False


def _read_snapshot_meta(folder: str, index: int) -> SnapshotInfo:
    path = os.path.join(folder, META_FILE)
    try:
        with open(path, "rb") as f:
            raw = json.loads(f.read())
        info = SnapshotInfo(raw["index"], raw["term"], raw["time_ns"],
                            base64.b64decode(raw["config"]), os.path.join(folder, PROJECTION))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"{path}: unreadable snapshot description ({exc}); move "
                           f"{folder} aside if the archive has other snapshots") from None
    if info.index != index:
        raise ArchiveError(f"{path}: describes index {info.index} but the folder is named "
                           f"for {index}")
    if not os.path.isdir(info.path):
        raise ArchiveError(f"{folder}: the snapshot has no {PROJECTION}/ directory")
    return info


def copy_checkpoint(source: str, dest: str, durable: bool = True) -> None:
    """Copy a RocksDB checkpoint to `dest` (which must not exist). SST files are
    immutable: hard-linked when on the same file system. Everything else (MANIFEST,
    CURRENT, OPTIONS) is copied, since the source may be opened and changed. `durable`:
    fsync every file and the directory."""
    if not os.path.isdir(source):
        raise ArchiveError(f"snapshot source {source} is not a directory")
    os.mkdir(dest)
    for name in sorted(os.listdir(source)):
        src, dst = os.path.join(source, name), os.path.join(dest, name)
        if os.path.isdir(src):
            raise ArchiveError(f"snapshot source {source} holds a directory ({name}); a "
                               f"RocksDB checkpoint has only files")
        if name.endswith(".sst"):
            try:
                os.link(src, dst)
                continue
            except OSError:
                pass
        shutil.copyfile(src, dst)
        if durable:
            fd = os.open(dst, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    if durable:
        fsync_dir(dest)


def _write_durably(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pwrite_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)




def _tree_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):   # a file removed meanwhile
                total += os.path.getsize(os.path.join(root, name))
    return total
