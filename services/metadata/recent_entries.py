"""The entries a metadata node applied last, kept in memory for log followers.

A node compacts its log the moment a snapshot is due, in the same turn that applies
the entries which made it due, so a follower reading only the log would always miss
the entries just before every snapshot. These are kept here instead, bounded by
count and bytes; a follower further behind reads the log, or fetches the snapshot.
"""

from collections.abc import Sequence

from services.metadata.raft.messages import Entry

MAX_ENTRIES = 50_000
MAX_BYTES = 32 << 20


class RecentEntries:
    """Consecutive applied entries; a jump (a snapshot installed) starts afresh."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: list[Entry] = []
        self._bytes = 0

    @property
    def first_index(self) -> int:
        return self._entries[0].index if self._entries else 0

    @property
    def last_index(self) -> int:
        return self._entries[-1].index if self._entries else 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        if self._entries and entries[0].index != self.last_index + 1:
            self._entries, self._bytes = [], 0
        self._entries.extend(entries)
        self._bytes += sum(len(e.data) for e in entries)
        if len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._trim()

    def _trim(self) -> None:
        """Drop the oldest down to three quarters of both limits: trimming is rare."""
        keep_entries, keep_bytes = self.max_entries * 3 // 4, self.max_bytes * 3 // 4
        drop, size = 0, self._bytes
        while drop < len(self._entries) - 1 and (
                len(self._entries) - drop > keep_entries or size > keep_bytes):
            size -= len(self._entries[drop].data)
            drop += 1
        del self._entries[:drop]
        self._bytes = size

    def after(self, index: int, max_bytes: int) -> list[Entry] | None:
        """Entries after `index` up to about max_bytes of data (at least one); None if
        they are not held from index + 1 on."""
        if not self._entries or not self.first_index <= index + 1 <= self.last_index + 1:
            return None
        out, used = [], 0
        for pos in range(index + 1 - self.first_index, len(self._entries)):
            e = self._entries[pos]
            used += len(e.data)
            if out and used > max_bytes:
                break
            out.append(e)
        return out

    def term_at(self, index: int) -> int | None:
        if self._entries and self.first_index <= index <= self.last_index:
            return self._entries[index - self.first_index].term
        return None
