"""The durable Raft log: CRC-framed entries in segment files, plus an atomic state file.

One directory per node holds:
  <first index, 20 digits>.seg  entries in index order; only ever appended to, or cut short
  state                         term, vote, commit and the compaction base (snapshot index, term)
  LOCK                          flock'd while a LogStore has the directory open

Appends are buffered by the kernel and become durable at `sync()`, so one fsync covers any
number of appends (group commit). The store keeps per entry only its file offset and term in
memory; `entries()` reads the bytes back (from the page cache, usually) and checks their CRC.
A LogStore is not thread-safe: one owner, the Raft shell's I/O loop, calls it.

docs/raft-log.md describes the format, the recovery rules and the measurements.
"""

import bisect
import dataclasses
import fcntl
import logging
import os
import re
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import crc32c

from services.metadata.raft.messages import Entry  # its kind is stored in one byte

FORMAT_VERSION = 1
SEGMENT_MAGIC = b"MNGRLOG\x00"
STATE_MAGIC = b"MNGRSTA\x00"
RECORD_MARK = b"\xc5\x1e\x7a\x3d"   # starts every record, so recovery can look past damage
MAX_ENTRY_BYTES = 64 << 20
MIN_SEGMENT_BYTES = 64
STATE_FILE = "state"
LOCK_FILE = "LOCK"

_SEGMENT_HEADER = struct.Struct(">8sHQI")   # magic, version, first index, CRC32C of those
_RECORD = struct.Struct(">4sIIQQB")         # mark, CRC32C, data length, index, term, kind
_HEAD = struct.Struct(">4sI")               # mark, CRC32C
_BODY = struct.Struct(">IQQB")              # the part the CRC covers (with the data after it)
_CRC_FROM = _RECORD.size - _BODY.size
RECORD_OVERHEAD = _RECORD.size
_STATE = struct.Struct(">8sHQQQQQI")   # magic, version, term, vote, commit, snap index+term, CRC
_SEGMENT_NAME = re.compile(r"(\d{20})\.seg")
_datasync = getattr(os, "fdatasync", os.fsync)

logger = logging.getLogger(__name__)
T = TypeVar("T")


class LogCorruptError(Exception):
    """Data that may have been acknowledged is damaged; the node must not start from it."""

    def __init__(self, path: str, what: str, offset: int | None = None,
                 index: int | None = None):
        self.path, self.offset, self.index = path, offset, index
        where = path if offset is None else f"{path} at byte offset {offset}"
        super().__init__(
            f"Raft log corrupt: {where}: {what}. Entries this node may already have "
            f"acknowledged are damaged or missing, so it must not serve from this log. "
            f"Restore the node: stop it, move its data directory "
            f"({os.path.dirname(path)}) aside for diagnosis, and start it empty so the leader "
            f"sends it a snapshot and the entries after it (safe while a majority of the "
            f"other nodes are healthy; otherwise restore from the metalogger archive).")


class LogCompactedError(LookupError):
    """The entries asked for were compacted into a snapshot: send the snapshot instead."""


class LogInUseError(Exception):
    """Another LogStore holds the directory open."""


class LogStoreFailedError(Exception):
    """An earlier write or fsync failed, so what is on disk is unknown."""


class _BadRecord(Exception):
    """Internal: the bytes at some offset are not a valid record; the message says why."""


@dataclass(frozen=True, slots=True)
class _State:
    term: int = 0
    vote: int = 0
    commit: int = 0
    snapshot_index: int = 0
    snapshot_term: int = 0


# -- framing ------------------------------------------------------------------------------

def encode_record(entry: Entry) -> bytes:
    """One record, as LogStore writes it (LogStore._fill inlines this)."""
    body = _BODY.pack(len(entry.data), entry.index, entry.term, entry.kind)
    crc = crc32c.crc32c(entry.data, crc32c.crc32c(body))
    return b"".join((_HEAD.pack(RECORD_MARK, crc), body, entry.data))


def _check_record(buf: memoryview, off: int) -> tuple[int, int, int, int]:
    """(index, term, kind, end offset) of the valid record at `off`, else _BadRecord."""
    if len(buf) - off < RECORD_OVERHEAD:
        raise _BadRecord("the file ends inside a record header")
    mark, crc, length, index, term, kind = _RECORD.unpack_from(buf, off)
    if mark != RECORD_MARK:
        raise _BadRecord("no record marker")
    if length > MAX_ENTRY_BYTES:
        raise _BadRecord(f"impossible entry length {length}")
    end = off + RECORD_OVERHEAD + length
    if end > len(buf):
        raise _BadRecord("the file ends inside the entry data")
    if crc32c.crc32c(buf[off + _CRC_FROM:end]) != crc:
        raise _BadRecord("CRC mismatch")
    return index, term, kind, end


def _segment_header(first: int) -> bytes:
    fields = _SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, first, 0)[:-4]
    return fields + crc32c.crc32c(fields).to_bytes(4, "big")


def _check_segment_header(buf: bytes, first: int, path: str) -> None:
    """_BadRecord if the header is missing or damaged (maybe a torn creation);
    LogCorruptError if it is intact but does not belong here."""
    if len(buf) < _SEGMENT_HEADER.size:
        raise _BadRecord("the file ends inside the segment header")
    magic, version, found, crc = _SEGMENT_HEADER.unpack_from(buf)
    if magic != SEGMENT_MAGIC or crc32c.crc32c(buf[:_SEGMENT_HEADER.size - 4]) != crc:
        raise _BadRecord("damaged segment header")
    if version != FORMAT_VERSION:
        raise LogCorruptError(path, f"written in log format {version}, this build reads format "
                                    f"{FORMAT_VERSION}; run the MooseNG version that wrote it")
    if found != first:
        raise LogCorruptError(path, f"its header says it starts at index {found}, its name "
                                    f"says {first}; was it renamed or copied in?", 0)


def _valid_record_after(buf: bytes, start: int, after_index: int) -> tuple[int, int] | None:
    """(offset, index) of an intact record past `start` with an index above `after_index`.

    Such a record proves the damage before it is not a torn final write."""
    view = memoryview(buf)
    pos = buf.find(RECORD_MARK, start)
    while pos != -1 and len(buf) - pos >= RECORD_OVERHEAD:
        index = _RECORD.unpack_from(buf, pos)[3]
        # Only an index that could follow (one record per index at most) is worth a CRC.
        if after_index < index <= after_index + 1 + (len(buf) - start) // RECORD_OVERHEAD:
            try:
                _check_record(view, pos)
                return pos, index
            except _BadRecord:
                pass
        pos = buf.find(RECORD_MARK, pos + 1)
    return None


# -- the state file -----------------------------------------------------------------------

_STATE_ADVICE = ("it holds the node's term, vote and compaction base; without them the node "
                 "could vote twice in one term or misread its log")


def _read_state(path: str) -> _State | None:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    if len(raw) != _STATE.size:
        raise LogCorruptError(path, f"is {len(raw)} bytes, not {_STATE.size}; {_STATE_ADVICE}")
    magic, version, *fields, crc = _STATE.unpack(raw)
    if magic != STATE_MAGIC or crc32c.crc32c(raw[:-4]) != crc:
        raise LogCorruptError(path, f"fails its CRC check; {_STATE_ADVICE}")
    if version != FORMAT_VERSION:
        raise LogCorruptError(path, f"written in format {version}, this build reads format "
                                    f"{FORMAT_VERSION}; run the MooseNG version that wrote it")
    return _State(*fields)


def _write_state(path: str, dir_fd: int, state: _State) -> None:
    """Replace the state file atomically: temp file, fsync, rename, fsync the directory."""
    fields = _STATE.pack(STATE_MAGIC, FORMAT_VERSION, *dataclasses.astuple(state), 0)[:-4]
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, fields + crc32c.crc32c(fields).to_bytes(4, "big"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    os.fsync(dir_fd)


# -- recovery -----------------------------------------------------------------------------

@dataclass
class _Found:
    """A segment file as recovery read it: its valid records and where they end."""

    path: str
    first: int
    offsets: array
    terms: array
    end: int                 # bytes that are valid; the file is cut here if shorter
    size: int
    damage: str | None       # why the bytes at `end` were not a record (a torn tail)

    @property
    def last(self) -> int:
        return self.first + len(self.offsets) - 1


@dataclass
class _Plan:
    state: _State | None     # None: a fresh directory
    kept: list[_Found]
    doomed: list[str]        # files to delete: compacted, interrupted resets, torn creations


def _scan_records(buf: memoryview, first: int, path: str) -> _Found:
    offsets, terms = array("Q"), array("Q")
    off, expect, prev_term = _SEGMENT_HEADER.size, first, 0
    while off < len(buf):
        try:
            index, term, _, end = _check_record(buf, off)
        except _BadRecord as bad:
            return _Found(path, first, offsets, terms, off, len(buf), str(bad))
        if index != expect:
            raise LogCorruptError(path, f"holds index {index} where {expect} belongs", off, index)
        if term < prev_term:
            raise LogCorruptError(path, f"entry {index} has term {term}, below the term "
                                        f"{prev_term} of the entry before it", off, index)
        offsets.append(off)
        terms.append(term)
        off, expect, prev_term = end, expect + 1, term
    return _Found(path, first, offsets, terms, off, len(buf), None)


def _scan_segment(path: str, first: int, newest: bool) -> _Found | None:
    """The segment's valid records; None for a newest segment whose creation was torn."""
    with open(path, "rb") as f:
        buf = f.read()
    try:
        _check_segment_header(buf, first, path)
    except _BadRecord as bad:
        if not newest:
            raise LogCorruptError(path, f"{bad} in a segment that was complete on disk",
                                  0) from None
        if _valid_record_after(buf, 0, first - 1) is None:
            return None
        raise LogCorruptError(path, f"{bad}, yet the file holds intact entries", 0) from None
    found = _scan_records(memoryview(buf), first, path)
    if found.damage is None:
        return found
    if not newest:
        raise LogCorruptError(path, f"{found.damage} in the record for index {found.last + 1}, "
                                    f"in a segment that was complete on disk", found.end,
                              found.last + 1)
    later = _valid_record_after(buf, found.end + 1, found.last)
    if later is not None:
        raise LogCorruptError(path, f"{found.damage} in the record for index {found.last + 1}, "
                                    f"yet an intact record for index {later[1]} follows at "
                                    f"offset {later[0]}, so this is not a torn final write",
                              found.end, found.last + 1)
    return found


def _scan_all(names: list[tuple[int, str]], base: int) -> tuple[list[_Found], list[str]]:
    found, doomed = [], []
    for i, (first, path) in enumerate(names):
        newest = i == len(names) - 1
        if not newest and names[i + 1][0] <= base + 1:
            doomed.append(path)   # wholly compacted: the snapshot covers it, don't read it
            continue
        seg = _scan_segment(path, first, newest)
        if seg is None:
            doomed.append(path)
        else:
            found.append(seg)
    return found, doomed


def _apply_base(found: list[_Found], state: _State) -> tuple[list[_Found], list[str]]:
    """Drop what the compaction base covers; check that the rest continues it."""
    base, base_term = state.snapshot_index, state.snapshot_term
    kept, doomed = [], []
    for seg in found:
        empty_next = seg is found[-1] and not seg.offsets and seg.first == base + 1
        (kept if seg.last > base or empty_next else doomed).append(seg)
    doomed_paths = [seg.path for seg in doomed]
    if kept and kept[0].first > base + 1:
        raise LogCorruptError(kept[0].path, f"the log resumes at index {kept[0].first} but the "
                                            f"snapshot ends at {base}: entries are missing", 0)
    _check_joins(kept)
    if base and kept and kept[0].first <= base and kept[0].terms[base - kept[0].first] != base_term:
        # A reset (compaction to a snapshot that disagrees with the log) was interrupted.
        return [], doomed_paths + [seg.path for seg in kept]
    return kept, doomed_paths


def _check_joins(kept: list[_Found]) -> None:
    prev_last, prev_term, prev_path = None, 0, ""
    for seg in kept:
        if prev_last is not None and seg.first != prev_last + 1:
            raise LogCorruptError(seg.path, f"starts at index {seg.first} but {prev_path} ends "
                                            f"at {prev_last}: entries are missing", 0)
        if seg.terms and seg.terms[0] < prev_term:
            raise LogCorruptError(seg.path, f"entry {seg.first} has term {seg.terms[0]}, below "
                                            f"the term {prev_term} of the entry before it", 0)
        prev_last, prev_path = seg.last, seg.path
        prev_term = seg.terms[-1] if seg.terms else prev_term


def _check_commit(kept: list[_Found], state: _State, directory: str) -> None:
    last = kept[-1].last if kept else state.snapshot_index
    if state.commit <= last:
        return
    torn = kept[-1] if kept and kept[-1].damage else None
    where = (f"; the record for index {torn.last + 1} at byte offset {torn.end} of {torn.path} "
             f"is damaged ({torn.damage})" if torn else "")
    raise LogCorruptError(os.path.join(directory, STATE_FILE),
                          f"entries up to {state.commit} were committed, but the log ends at "
                          f"{last}{where}", index=last + 1)


def _plan_recovery(directory: str) -> _Plan:
    names = sorted((int(m[1]), os.path.join(directory, n)) for n in os.listdir(directory)
                   if (m := _SEGMENT_NAME.fullmatch(n)))
    state_path = os.path.join(directory, STATE_FILE)
    state = _read_state(state_path)
    if state is None:
        if names:
            raise LogCorruptError(state_path, f"is missing, but {len(names)} log segments are "
                                              f"present; {_STATE_ADVICE}")
        return _Plan(None, [], [])
    found, doomed = _scan_all(names, state.snapshot_index)
    kept, more = _apply_base(found, state)
    _check_commit(kept, state, directory)
    return _Plan(state, kept, doomed + more)


def _make_durable_directory(directory: str) -> None:
    """Create the directory if needed, and make its name durable in its parent (a vote saved
    in a directory whose name a crash could still lose would be forgotten)."""
    if os.path.isdir(directory):
        return
    os.makedirs(directory)
    fd = os.open(os.path.dirname(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_directory(directory: str) -> int:
    fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LogInUseError(f"{directory} is already open by another LogStore (this or another "
                            f"process); stop the other node or close that store first") from None
    return fd


# -- the store ----------------------------------------------------------------------------

class _Segment:
    """An open segment file and the in-memory index of its records."""

    __slots__ = ("path", "first", "fd", "size", "offsets", "terms")

    def __init__(self, path: str, first: int, fd: int, size: int, offsets: array,
                 terms: array):
        self.path, self.first, self.fd, self.size = path, first, fd, size
        self.offsets, self.terms = offsets, terms

    @property
    def last(self) -> int:
        return self.first + len(self.offsets) - 1

    def span(self, index: int) -> tuple[int, int]:
        """Byte range of the record for `index`."""
        pos = index - self.first
        end = self.offsets[pos + 1] if pos + 1 < len(self.offsets) else self.size
        return self.offsets[pos], end


class LogStore:
    """Raft's durable state: the log after the last snapshot, and term, vote, commit.

    Durability: append() is buffered until sync(); save_hard_state(), truncate_suffix() and
    compact() are durable when they return.
    """

    def __init__(self, directory: str, segment_bytes: int = 64 << 20):
        if segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes={segment_bytes} is too small; use at least "
                             f"{MIN_SEGMENT_BYTES} (the default is 64 MiB)")
        self.directory = os.path.abspath(directory)
        self._segment_bytes = segment_bytes
        _make_durable_directory(self.directory)
        self._lock_fd = _lock_directory(self.directory)
        self._dir_fd = os.open(self.directory, os.O_RDONLY)
        self._segments: list[_Segment] = []
        self._dirty = self._dir_dirty = self._closed = False
        self._failed: str | None = None
        self.recovery_notes: list[str] = []   # what opening repaired (torn tails, leftovers)
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    # -- opening --------------------------------------------------------------------------

    def _open(self) -> None:
        plan = _plan_recovery(self.directory)
        self._remove_leftovers(plan.doomed)
        self._state = plan.state or _State()
        if plan.state is None:   # fresh: the state file exists before any segment does
            _write_state(self._state_path, self._dir_fd, self._state)
        for found in plan.kept:
            self._segments.append(self._reopen(found))
        if not self._segments:
            self._segments.append(self._create_segment(self._state.snapshot_index + 1))
        self.sync()

    def _remove_leftovers(self, doomed: list[str]) -> None:
        tmp = self._state_path + ".tmp"
        for path in doomed + ([tmp] if os.path.exists(tmp) else []):
            os.unlink(path)
            self.recovery_notes.append(f"removed {path} (compacted, superseded or never "
                                       f"completed)")
        if doomed:
            os.fsync(self._dir_fd)

    def _reopen(self, found: _Found) -> _Segment:
        fd = os.open(found.path, os.O_RDWR)
        if found.end < found.size:
            note = (f"cut a torn tail of {found.size - found.end} bytes at offset {found.end} "
                    f"of {found.path} ({found.damage}): a write that never reached sync()")
            logger.warning("raft log recovery: %s", note)
            self.recovery_notes.append(note)
            os.ftruncate(fd, found.end)
            _datasync(fd)
        return _Segment(found.path, found.first, fd, found.end, found.offsets, found.terms)

    # -- what is stored -------------------------------------------------------------------

    @property
    def snapshot_index(self) -> int:
        return self._state.snapshot_index

    @property
    def snapshot_term(self) -> int:
        return self._state.snapshot_term

    @property
    def first_index(self) -> int:
        """The first entry entries() serves; always snapshot_index + 1."""
        return self._state.snapshot_index + 1

    @property
    def last_index(self) -> int:
        """The last entry (snapshot_index when the log is empty after it)."""
        return self._segments[-1].last

    @property
    def synced_index(self) -> int:
        """The last entry known to be durable."""
        return self._synced_index

    @property
    def size_bytes(self) -> int:
        return sum(seg.size for seg in self._segments)

    def hard_state(self) -> tuple[int, int, int]:
        return self._state.term, self._state.vote, self._state.commit

    def term_at(self, index: int) -> int | None:
        if index == self._state.snapshot_index:
            return self._state.snapshot_term
        if not self.first_index <= index <= self.last_index:
            return None
        seg = self._segment_for(index)
        return seg.terms[index - seg.first]

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi) that exist, stopping before the data would exceed max_bytes
        (but always at least one). Read from the files and CRC-checked."""
        self._check_usable()
        if lo < self.first_index:
            raise LogCompactedError(f"entries from {lo} were compacted into the snapshot at "
                                    f"{self.snapshot_index}; send the snapshot instead")
        if hi < lo:
            raise ValueError(f"entries({lo}, {hi}): hi is below lo")
        hi = min(hi, self.last_index + 1)
        if max_bytes is not None:
            hi = self._stop_for_budget(lo, hi, max_bytes)
        out: list[Entry] = []
        while lo < hi:
            seg = self._segment_for(lo)
            stop = min(hi, seg.last + 1)
            out += self._read(seg, lo, stop)
            lo = stop
        return out

    def _segment_for(self, index: int) -> _Segment:
        at = bisect.bisect_right(self._segments, index, key=lambda seg: seg.first) - 1
        return self._segments[at]

    def _stop_for_budget(self, lo: int, hi: int, max_bytes: int) -> int:
        used = 0
        for index in range(lo, hi):
            start, end = self._segment_for(index).span(index)
            used += end - start - RECORD_OVERHEAD
            if used > max_bytes and index > lo:
                return index
        return hi

    def _read(self, seg: _Segment, lo: int, hi: int) -> list[Entry]:
        start, end = seg.span(lo)[0], seg.span(hi - 1)[1]
        view = memoryview(os.pread(seg.fd, end - start, start))
        out, off = [], 0
        for index in range(lo, hi):
            try:
                found, term, kind, rec_end = _check_record(view, off)
            except _BadRecord as bad:
                raise LogCorruptError(seg.path, f"{bad} in the record for index {index}, which "
                                                f"was intact when the log was opened",
                                      start + off, index) from None
            if found != index:
                raise LogCorruptError(seg.path, f"holds index {found} where {index} belongs",
                                      start + off, index)
            out.append(Entry(index, term, kind, bytes(view[off + RECORD_OVERHEAD:rec_end])))
            off = rec_end
        return out

    # -- changing the log -----------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Add entries (any objects with index, term, kind, data). Entries whose index and
        term match the log are skipped (Raft's log matching); at the first that conflicts,
        the suffix from there is dropped first. Not durable until sync()."""
        self._check_usable()
        if not entries:
            return
        _check_batch(entries)
        if entries[0].index > self.last_index + 1:
            raise ValueError(f"entries start at index {entries[0].index} but the log ends at "
                             f"{self.last_index}: appending would leave a gap")
        new = self._skip_known(entries)
        if not new:
            return
        prev_term = self.term_at(new[0].index - 1) or 0
        if new[0].term < prev_term:
            raise ValueError(f"entry {new[0].index} has term {new[0].term}, below the term "
                             f"{prev_term} of the entry before it: Raft terms never decrease")
        if new[0].index <= self.last_index:
            self.truncate_suffix(new[0].index)
        self._write(new)

    def _skip_known(self, entries: list[Entry]) -> list[Entry]:
        base = self._state.snapshot_index
        for k, entry in enumerate(entries):
            if entry.index == base and entry.term != self._state.snapshot_term:
                raise ValueError(f"entry {base} has term {entry.term}, but the snapshot "
                                 f"ending there has term {self._state.snapshot_term}")
            if entry.index > base and self.term_at(entry.index) != entry.term:
                return entries[k:]
        return []

    def _write(self, entries: list[Entry]) -> None:
        done = 0
        while done < len(entries):
            seg = self._segments[-1]
            if seg.offsets and seg.size >= self._segment_bytes:
                seg = self._roll(entries[done].index)
            done = self._fill(seg, entries, done)

    def _fill(self, seg: _Segment, entries: list[Entry], done: int) -> int:
        """Write entries[done:] into `seg` until it is full; return how many are written.
        (The hot path of append, hence the local names. If the write fails the store
        refuses further use, so the index may run ahead of the file.)"""
        parts, size, limit, start = [], seg.size, self._segment_bytes, done
        pack_head, pack_body, crc = _HEAD.pack, _BODY.pack, crc32c.crc32c
        offsets, terms = seg.offsets, seg.terms
        while done < len(entries) and (size < limit or done == start and not offsets):
            e = entries[done]
            body = pack_body(len(e.data), e.index, e.term, e.kind)
            parts += (pack_head(RECORD_MARK, crc(e.data, crc(body))), body, e.data)
            offsets.append(size)
            terms.append(e.term)
            size += RECORD_OVERHEAD + len(e.data)
            done += 1
        self._pwrite(seg, b"".join(parts))
        seg.size = size
        self._dirty = True
        return done

    def _roll(self, first: int) -> _Segment:
        # An older segment is complete on disk before a newer one gets any data, so recovery
        # may call damage anywhere but in the newest segment corruption, never a torn write.
        self._guarded(_datasync, self._segments[-1].fd)
        self._dirty = False
        seg = self._create_segment(first)
        self._segments.append(seg)
        return seg

    def sync(self) -> None:
        """Make everything appended durable: one fsync for any number of appends."""
        self._check_usable()
        if self._dirty:
            self._guarded(_datasync, self._segments[-1].fd)
            self._dirty = False
        if self._dir_dirty:
            self._guarded(os.fsync, self._dir_fd)
            self._dir_dirty = False
        self._synced_index = self.last_index

    def truncate_suffix(self, index: int) -> None:
        """Drop entries >= index, durably before returning (no dropped entry reappears
        after a crash). Refuses to drop compacted or committed entries."""
        self._check_usable()
        if index > self.last_index:
            return
        if index <= self._state.snapshot_index:
            raise ValueError(f"cannot drop entries from {index}: entries up to "
                             f"{self._state.snapshot_index} are compacted into a snapshot")
        if index <= self._state.commit:
            raise ValueError(f"refusing to drop committed entry {index} (commit is "
                             f"{self._state.commit}): a Raft node never loses committed entries")
        while self._segments[-1].first > index:   # newest first: every crash leaves a prefix
            self._drop_segment(self._segments.pop())
        seg = self._segments[-1]
        cut = seg.offsets[index - seg.first]
        self._guarded(os.ftruncate, seg.fd, cut)
        del seg.offsets[index - seg.first:]
        del seg.terms[index - seg.first:]
        seg.size, self._dirty = cut, True
        self.sync()

    def compact(self, upto_index: int, upto_term: int) -> None:
        """Forget entries <= upto_index (a snapshot holds them): whole segments are deleted.
        If the log does not hold (upto_index, upto_term) (a follower installed a snapshot
        ahead of or disagreeing with its log), the whole log goes and restarts after it.
        Durable when it returns."""
        self._check_usable()
        if upto_index <= self._state.snapshot_index:
            return
        ours = self.term_at(upto_index)
        if ours == upto_term:
            self._drop_prefix(upto_index, upto_term)
            return
        if ours is not None and upto_index <= self._state.commit:
            raise ValueError(f"snapshot ({upto_index}, term {upto_term}) contradicts committed "
                             f"entry {upto_index} of term {ours}")
        self._reset(upto_index, upto_term)

    def _drop_prefix(self, upto_index: int, upto_term: int) -> None:
        # The base is durable first, so recovery ignores segments whatever order they vanish in.
        self._save_state(snapshot_index=upto_index, snapshot_term=upto_term)
        dropped = False
        while len(self._segments) > 1 and self._segments[0].last <= upto_index:
            seg = self._segments.pop(0)
            os.close(seg.fd)
            os.unlink(seg.path)
            dropped = True
        if dropped:
            self._guarded(os.fsync, self._dir_fd)

    def _reset(self, upto_index: int, upto_term: int) -> None:
        self._save_state(snapshot_index=upto_index, snapshot_term=upto_term)
        while self._segments:   # newest first, so recovery sees the reset and finishes it
            self._drop_segment(self._segments.pop())
        self._segments.append(self._create_segment(upto_index + 1))
        self.sync()

    def save_hard_state(self, term: int, vote: int, commit: int) -> None:
        """Durably record term, vote (0: none) and commit. Syncs the log first if commit
        points past what is durable, so the state never refers to entries a crash could lose."""
        self._check_usable()
        old = self._state
        if min(term, vote, commit) < 0:
            raise ValueError(f"hard state ({term}, {vote}, {commit}) has a negative field")
        if term < old.term:
            raise ValueError(f"term {term} is below the saved term {old.term}: terms never "
                             f"go back")
        if term == old.term and old.vote not in (0, vote):
            raise ValueError(f"node already voted for {old.vote} in term {term}; it may not "
                             f"change its vote to {vote}")
        if commit > self.last_index:
            raise ValueError(f"commit {commit} is past the last entry {self.last_index}: "
                             f"append the entries (or compact to the snapshot) first")
        if commit > self._synced_index:
            self.sync()
        self._save_state(term=term, vote=vote, commit=commit)

    def close(self) -> None:
        """Sync (unless a write failed) and release the directory. Idempotent."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self.sync()
        finally:
            self._release()

    def __enter__(self) -> "LogStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------

    @property
    def _state_path(self) -> str:
        return os.path.join(self.directory, STATE_FILE)

    def _save_state(self, **changes: int) -> None:
        state = dataclasses.replace(self._state, **changes)
        self._guarded(_write_state, self._state_path, self._dir_fd, state)
        self._state = state

    def _create_segment(self, first: int) -> _Segment:
        path = os.path.join(self.directory, f"{first:020d}.seg")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        seg = _Segment(path, first, fd, 0, array("Q"), array("Q"))
        self._pwrite(seg, _segment_header(first))
        seg.size = _SEGMENT_HEADER.size
        self._dirty = self._dir_dirty = True
        return seg

    def _drop_segment(self, seg: _Segment) -> None:
        os.close(seg.fd)
        os.unlink(seg.path)
        self._guarded(os.fsync, self._dir_fd)

    def _pwrite(self, seg: _Segment, data: bytes) -> None:
        view, done = memoryview(data), 0
        while done < len(data):
            done += self._guarded(os.pwrite, seg.fd, view[done:], seg.size + done)

    def _guarded(self, call: Callable[..., T], *args: object) -> T:
        """Run an I/O call; after any failure, refuse further use (after a failed fsync the
        kernel may have dropped dirty pages, so only a restart's recovery knows the truth)."""
        try:
            return call(*args)
        except OSError as err:
            self._failed = f"{getattr(call, '__name__', call)}: {err}"
            raise

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError(f"the LogStore for {self.directory} is closed")
        if self._failed is not None:
            raise LogStoreFailedError(
                f"{self.directory}: an earlier write or fsync failed ({self._failed}), so what "
                f"is on disk is unknown; restart the node so recovery reads it back")

    def _release(self) -> None:
        self._closed = True
        for seg in self._segments:
            os.close(seg.fd)
        self._segments = []
        os.close(self._dir_fd)
        os.close(self._lock_fd)


def _check_batch(entries: list[Entry]) -> None:
    index, prev_term = entries[0].index, 1
    if index < 1:
        raise ValueError(f"entry index {index}: indexes start at 1")
    for e in entries:
        if (e.index != index or e.term < prev_term or not 0 <= e.kind <= 255
                or not isinstance(e.data, bytes) or len(e.data) > MAX_ENTRY_BYTES):
            _explain_bad_entry(e, index, prev_term)
        index, prev_term = index + 1, e.term


def _explain_bad_entry(e: Entry, index: int, prev_term: int) -> None:
    if e.index != index:
        raise ValueError(f"entries are not contiguous: index {e.index} where {index} belongs")
    if e.term < prev_term:
        raise ValueError(f"entry {e.index} has term {e.term}, below {prev_term}: terms start "
                         f"at 1 and never decrease")
    if not 0 <= e.kind <= 255:
        raise ValueError(f"entry {e.index} has kind {e.kind}; kinds are 0..255")
    if not isinstance(e.data, bytes):
        raise TypeError(f"entry {e.index} data is {type(e.data).__name__}, not bytes")
    raise ValueError(f"entry {e.index} holds {len(e.data)} bytes; the limit is "
                     f"{MAX_ENTRY_BYTES}: split the command")
