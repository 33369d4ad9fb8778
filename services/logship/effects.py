"""The archive's effects: what each group of archived commands did to the projection.

A restore that folds every command runs at the fold's pace (tens of microseconds a
command in Python). The metalogger's effects builder (effects_builder.py) folds the
archive once, in the background, and writes down each group's net key writes; a
restore then writes those as they are, and folds only what no group covers. MooseFS's
changelog plays the same part: it records outcomes, so replaying it decides nothing.

    ARCHIVE/effects/
      LOCK                                   flock'ed by the one builder
      state/                                 the builder's projection (how far it got)
      <first index, 20 digits>.eff           groups, in index order

A group covers entries first..last (last a multiple of the group size, so groups of
different builders line up) and names the running digest before and after it and a
digest of the entries it was folded from: a restore uses a group only if it continues
the digest the projection has and the archive holds those very entries, so effects
of another history, or damaged ones, are never written, only passed over (the
commands are folded instead, at the fold's pace). The effects are derived from the
log and can always be rebuilt: deleting ARCHIVE/effects loses nothing.

A file is a header, then records: a header (mark, CRC32C of what follows it, payload
length, first, last, digest before, digest after, commands' digest) and a
zlib-compressed payload that encodes the range deletions and the net writes of the
group, per column family.
"""

import contextlib
import hashlib
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import crc32c

from services.common.posix.records import COLUMN_FAMILIES

EFFECTS = "effects"
STATE = "state"
LOCK_FILE = "LOCK"
FILE_MAGIC = b"MNGEFFS\x00"
FORMAT_VERSION = 1
RECORD_MARK = b"\xef\xfe\xc7\x5a"
FILE_BYTES = 64 << 20                  # a new file once one is this big
MAX_PAYLOAD = 1 << 30                  # anything bigger is damage
ZLIB_LEVEL = 1

_FILE_HEADER = struct.Struct(">8sHI")           # magic, version, CRC32C of those
# mark, CRC, payload length, first, last, digest before, digest after, commands' digest
_RECORD = struct.Struct(">4sIIQQ32s32s16s")
_CRC_FROM = 8                                   # the CRC covers the header after it
_COUNT = struct.Struct(">I")
_PAIR = struct.Struct(">II")
_DELETED = 0xFFFFFFFF                           # a value length that means "deleted"
_END = 0xFF
_NAME = re.compile(r"(\d{20})\.eff")
_CF_NUMBER = {cf: n for n, cf in enumerate(COLUMN_FAMILIES)}

Ranges = list[tuple[str, bytes, bytes]]
Writes = dict[str, dict[bytes, bytes | None]]


class EffectsError(Exception):
    """Effects that cannot be used; the restore folds the commands instead."""


@dataclass(frozen=True, slots=True)
class Group:
    first: int
    last: int
    before: bytes       # the running digest at first - 1
    after: bytes        # the running digest at last
    commands: bytes     # entries_digest() of the entries it covers
    path: str
    offset: int         # of the record header
    length: int         # of the payload


def effects_dir(archive_dir: str) -> str:
    return os.path.join(archive_dir, EFFECTS)


_ENTRY_HEAD = struct.Struct(">QQBI")


def entries_digest(entries) -> bytes:
    """A digest of archived entries (index, term, kind, data): a group is written only
    for the very commands it was made from, never for another history's."""
    h = hashlib.blake2b(digest_size=16)
    head, update = _ENTRY_HEAD.pack, h.update
    for e in entries:
        update(head(e.index, e.term, e.kind, len(e.data)))
        update(e.data)
    return h.digest()


# -- payload ---------------------------------------------------------------------------

def encode(ranges: Ranges, writes: Writes) -> bytes:
    """The range deletions (in order), then each column family's net writes."""
    parts = [_COUNT.pack(len(ranges))]
    for cf, lo, hi in ranges:
        parts += (bytes([_CF_NUMBER[cf]]), _PAIR.pack(len(lo), len(hi)), lo, hi)
    pair = _PAIR.pack
    for cf, values in writes.items():
        if not values:
            continue
        parts += (bytes([_CF_NUMBER[cf]]), _COUNT.pack(len(values)))
        for key, value in values.items():
            if value is None:
                parts += (pair(len(key), _DELETED), key)
            else:
                parts += (pair(len(key), len(value)), key, value)
    parts.append(bytes([_END]))
    return b"".join(parts)


def decode(raw: bytes) -> tuple[Ranges, Writes]:
    """encode()'s inverse; EffectsError if the bytes do not parse."""
    try:
        return _decode(raw)
    except (IndexError, struct.error, KeyError) as exc:
        raise EffectsError(f"a group's payload does not parse ({exc})") from None


def _decode(raw: bytes) -> tuple[Ranges, Writes]:
    pair, pos = _PAIR.unpack_from, 4
    ranges = []
    for _ in range(_COUNT.unpack_from(raw)[0]):
        cf = COLUMN_FAMILIES[raw[pos]]
        lo_len, hi_len = pair(raw, pos + 1)
        pos += 9
        ranges.append((cf, raw[pos:pos + lo_len], raw[pos + lo_len:pos + lo_len + hi_len]))
        pos += lo_len + hi_len
    writes: Writes = {}
    while raw[pos] != _END:
        values = writes[COLUMN_FAMILIES[raw[pos]]] = {}
        count = _COUNT.unpack_from(raw, pos + 1)[0]
        pos += 5
        for _ in range(count):
            key_len, value_len = pair(raw, pos)
            pos += 8
            key = raw[pos:pos + key_len]
            pos += key_len
            if value_len == _DELETED:
                values[key] = None
            else:
                values[key] = raw[pos:pos + value_len]
                pos += value_len
    if pos + 1 != len(raw):
        raise EffectsError("a group's payload has bytes after its end")
    return ranges, writes


def _record(first: int, last: int, before: bytes, after: bytes, commands: bytes,
            payload: bytes) -> bytes:
    header = _RECORD.pack(RECORD_MARK, 0, len(payload), first, last, before, after,
                          commands)
    crc = crc32c.crc32c(payload, crc32c.crc32c(header[_CRC_FROM:]))
    return RECORD_MARK + _COUNT.pack(crc) + header[_CRC_FROM:] + payload


def _file_header() -> bytes:
    fields = FILE_MAGIC + FORMAT_VERSION.to_bytes(2, "big")
    return fields + crc32c.crc32c(fields).to_bytes(4, "big")


# -- reading ---------------------------------------------------------------------------

class EffectsIndex:
    """The groups of an effects directory, found from their headers. A torn or damaged
    record ends its file's groups: what follows it is not trusted."""

    def __init__(self, directory: str):
        self.directory = directory
        self.groups: dict[int, Group] = {}
        self.problems: list[str] = []
        self.bad_files: list[str] = []
        self.file_ends: dict[str, int] = {}       # path -> where its intact records end
        names = sorted(n for n in os.listdir(directory) if _NAME.fullmatch(n)) \
            if os.path.isdir(directory) else []
        for name in names:
            self._scan(os.path.join(directory, name))

    def _scan(self, path: str) -> None:
        with open(path, "rb") as f:
            head = f.read(_FILE_HEADER.size)
            magic, version, crc = _FILE_HEADER.unpack(head) if len(head) == _FILE_HEADER.size \
                else (b"", 0, 0)
            if magic != FILE_MAGIC or crc32c.crc32c(head[:-4]) != crc or \
                    version != FORMAT_VERSION:
                self.problems.append(f"{path}: not an effects file of format "
                                     f"{FORMAT_VERSION}")
                self.bad_files.append(path)
                return
            offset = _FILE_HEADER.size
            size = os.fstat(f.fileno()).st_size
            while offset < size:
                header = f.read(_RECORD.size)
                if len(header) < _RECORD.size:
                    break                                   # torn: the end
                mark, _, length, first, last, before, after, commands = \
                    _RECORD.unpack(header)
                damaged = mark != RECORD_MARK or length > MAX_PAYLOAD or last < first
                if damaged:
                    self.problems.append(f"{path}: damaged record at offset {offset}")
                if damaged or offset + _RECORD.size + length > size:
                    break                                   # what follows is not trusted
                self.groups.setdefault(first, Group(first, last, before, after, commands,
                                                    path, offset, length))
                offset += _RECORD.size + length
                f.seek(offset)
            self.file_ends[path] = offset

    def load(self, group: Group) -> tuple[Ranges, Writes]:
        """A group's writes, its checksum checked."""
        try:
            with open(group.path, "rb") as f:
                f.seek(group.offset)
                data = f.read(_RECORD.size + group.length)
        except OSError as exc:     # e.g. pruned by the builder meanwhile
            raise EffectsError(f"{group.path}: {exc.strerror}") from None
        if len(data) != _RECORD.size + group.length or \
                crc32c.crc32c(data[_CRC_FROM:]) != _COUNT.unpack_from(data, 4)[0]:
            raise EffectsError(f"{group.path}: the group of entries {group.first}.."
                               f"{group.last} at offset {group.offset} fails its checksum")
        try:
            raw = zlib.decompress(data[_RECORD.size:])
        except zlib.error as exc:
            raise EffectsError(f"{group.path}: the group at offset {group.offset} does "
                               f"not decompress ({exc})") from None
        return decode(raw)

    def load_for(self, group: Group, entries: list) -> tuple[Ranges, Writes]:
        """load(), for the archived `entries` the group claims to cover: EffectsError
        unless it was made from those very entries."""
        if len(entries) != group.last - group.first + 1 or \
                entries_digest(entries) != group.commands:
            raise EffectsError(f"the group of entries {group.first}..{group.last} in "
                               f"{group.path} was not made from the archived commands")
        return self.load(group)

    def chain(self, start: int, hi: int, digest: bytes) -> Iterator[Group]:
        """The groups that continue a projection at start - 1 with `digest`, in order,
        up to index hi."""
        group = self.groups.get(start)
        while group is not None and group.last <= hi and group.before == digest:
            yield group
            digest = group.after
            group = self.groups.get(group.last + 1)

    def next_start(self, after: int, hi: int) -> int | None:
        """The first index above `after` (and at most hi) where a group starts."""
        starts = [s for s in self.groups if after < s <= hi]
        return min(starts) if starts else None


# -- writing ---------------------------------------------------------------------------

class EffectsWriter:
    """Appends groups; one writer at a time (the builder holds LOCK)."""

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._fd: int | None = None
        self._path = ""
        self._end = 0

    def open_after(self, index: EffectsIndex, applied: int) -> None:
        """Continue the directory: cut whatever lies past the builder's state at
        `applied` (written, then lost by a crash of the state) or past damage."""
        for group in sorted(index.groups.values(), key=lambda g: g.first):
            if group.last > applied:
                self._cut(group.path, group.offset)
                break
        for path, end in index.file_ends.items():
            with contextlib.suppress(FileNotFoundError):
                if os.path.getsize(path) > end:
                    os.truncate(path, end)     # a torn or damaged tail
        for path in index.bad_files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _cut(self, path: str, offset: int) -> None:
        """Drop `path` from `offset` on, and every later file."""
        for name in sorted(os.listdir(self.directory)):
            other = os.path.join(self.directory, name)
            if _NAME.fullmatch(name) and other > path:
                os.unlink(other)
        if offset <= _FILE_HEADER.size:
            os.unlink(path)
        else:
            os.truncate(path, offset)

    def append(self, first: int, last: int, before: bytes, after: bytes, commands: bytes,
               ranges: Ranges, writes: Writes) -> None:
        payload = zlib.compress(encode(ranges, writes), ZLIB_LEVEL)
        record = _record(first, last, before, after, commands, payload)
        if self._fd is None or self._end + len(record) > FILE_BYTES:
            self._start_file(first)
        _write_all(self._fd, record, self._end)
        self._end += len(record)

    def _start_file(self, first: int) -> None:
        self.close()
        self._path = os.path.join(self.directory, f"{first:020d}.eff")
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _write_all(self._fd, _file_header(), 0)
        self._end = _FILE_HEADER.size

    def sync(self) -> None:
        if self._fd is not None:
            os.fdatasync(self._fd)

    def prune_through(self, index: int) -> int:
        """Delete the files whose groups all end at or before `index` (no restore can
        start before it any more). Returns how many."""
        names = sorted(n for n in os.listdir(self.directory) if _NAME.fullmatch(n))
        dropped = 0
        for name, following in zip(names, names[1:], strict=False):
            if int(_NAME.fullmatch(following)[1]) - 1 <= index:
                os.unlink(os.path.join(self.directory, name))
                dropped += 1
        return dropped

    def close(self) -> None:
        if self._fd is not None:
            os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view, done = memoryview(data), 0
    while done < len(data):
        done += os.pwrite(fd, view[done:], offset + done)
