"""A write overlay over a read-only view: the fold's reads see its own writes, and
its writes are collected as an ordered list of mutations for one WriteBatch.
A savepoint lets a failed command take back exactly what it wrote.

The view does not change while a Txn lives (the applier writes the batch only at
the end), so what it returned is remembered: a replay's thousands of commands per
batch read each directory, counter and region key from RocksDB once, not per command.
"""

from collections.abc import Callable, Iterable

Getter = Callable[[str, bytes], bytes | None]
Scanner = Callable[[str, bytes], Iterable[tuple[bytes, bytes]]]

PUT, DELETE, DELETE_RANGE = "put", "delete", "delete_range"
_ABSENT = object()  # the undo log's "this key had no overlay value"


class Txn:
    """Reads fall through to `base`; `ops` lists the mutations in order."""

    __slots__ = ("_base", "_base_scan", "_writes", "_seen", "_ranges", "_range_cfs",
                 "_undo", "ops")

    def __init__(self, base: Getter, base_scan: Scanner | None = None,
                 seen: dict[str, dict[bytes, bytes | None]] | None = None):
        """`seen`: values of `base` already known (per column family), which reads
        then take from there and add to; the applier keeps it across batches."""
        self._base = base
        self._base_scan = base_scan
        # Per column family, so that a group of thousands of commands (a replay) does
        # not make every scan and range delete look at every key written.
        self._writes: dict[str, dict[bytes, bytes | None]] = {}
        self._seen: dict[str, dict[bytes, bytes | None]] = {} if seen is None else seen
        self._ranges: list[tuple[str, bytes, bytes]] = []
        self._range_cfs: dict[str, int] = {}
        self._undo: list[tuple] = []
        self.ops: list[tuple] = []

    def get(self, cf: str, key: bytes) -> bytes | None:
        writes = self._writes.get(cf)
        if writes is not None:
            hit = writes.get(key, _ABSENT)
            if hit is not _ABSENT:
                return hit
        if cf in self._range_cfs:
            for rcf, lo, hi in self._ranges:
                if rcf == cf and lo <= key < hi:
                    return None
        seen = self._seen.get(cf)
        if seen is None:
            seen = self._seen[cf] = {}
        value = seen.get(key, _ABSENT)
        if value is _ABSENT:
            value = seen[key] = self._base(cf, key)
        return value

    def _written(self, cf: str, prefix: bytes = b"") -> list[bytes]:
        """Keys of `cf` this transaction holds a value (or a deletion) for."""
        return [k for k in self._writes.get(cf, ()) if k.startswith(prefix)]

    def scan(self, cf: str, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every live (key, value) of `cf` under `prefix`, in key order, as this
        transaction sees them. For small sets: a session's open files, a file's chunks."""
        merged = {} if self._base_scan is None else dict(self._base_scan(cf, prefix))
        writes = self._writes.get(cf, {})
        for key in self._written(cf, prefix):
            merged[key] = writes[key]
        for rcf, lo, hi in self._ranges if cf in self._range_cfs else ():
            if rcf == cf:
                for key in [k for k in merged if lo <= k < hi and k not in writes]:
                    del merged[key]
        return sorted((k, v) for k, v in merged.items() if v is not None)

    def _overlay(self, cf: str) -> dict[bytes, bytes | None]:
        writes = self._writes.get(cf)
        if writes is None:
            writes = self._writes[cf] = {}
        return writes

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        writes = self._writes.get(cf) or self._overlay(cf)
        self._undo.append((writes, key, writes.get(key, _ABSENT)))
        writes[key] = value
        self.ops.append((PUT, cf, key, value))

    def delete(self, cf: str, key: bytes) -> None:
        writes = self._writes.get(cf) or self._overlay(cf)
        self._undo.append((writes, key, writes.get(key, _ABSENT)))
        seen = self._seen.get(cf)
        if seen is not None and key in seen and seen[key] is None:
            # Absent from the view: what this transaction put there (an acknowledged
            # result, a name made then moved) just leaves the overlay, and the
            # WriteBatch carries no deletion of a key that does not exist.
            writes.pop(key, None)
        else:
            writes[key] = None
        self.ops.append((DELETE, cf, key))

    def discard(self, cf: str, key: bytes) -> None:
        """delete(), looking first: a key the view does not hold leaves no tombstone
        in the projection (the deletion is still among `ops`, which the applier's
        digest covers, so every replica's digest is the same as with delete())."""
        self.get(cf, key)
        self.delete(cf, key)

    def delete_prefix(self, cf: str, prefix: bytes) -> None:
        """delete_range() of every key under `prefix`; when there is none (a file's
        extended attributes, mostly) the projection gets no range tombstone, which
        every later read of the family would have to step over."""
        hi = (int.from_bytes(prefix, "big") + 1).to_bytes(len(prefix), "big")
        if self._base_scan is None or self.scan(cf, prefix):
            self.delete_range(cf, prefix, hi)
        else:
            self.ops.append((DELETE_RANGE, cf, prefix, hi))

    def delete_range(self, cf: str, lo: bytes, hi: bytes) -> None:
        """Delete every key k of `cf` with lo <= k < hi."""
        writes = self._overlay(cf)
        for key in [k for k in writes if lo <= k < hi]:
            self._undo.append((writes, key, writes.pop(key)))
        self._undo.append(None)  # marks the range below for rollback
        self._ranges.append((cf, lo, hi))
        self._range_cfs[cf] = self._range_cfs.get(cf, 0) + 1
        self.ops.append((DELETE_RANGE, cf, lo, hi))

    def net_ops(self) -> list[tuple]:
        """Mutations with the same end state as `ops`, each key written once: the range
        deletions in order, then every key's last value (a key written before a range
        that covers it has already left the overlay). A WriteBatch for thousands of
        commands (a replay) then holds each counter and directory once, not per command."""
        out: list[tuple] = [(DELETE_RANGE, cf, lo, hi) for cf, lo, hi in self._ranges]
        for cf, writes in self._writes.items():
            out += [(DELETE, cf, key) if value is None else (PUT, cf, key, value)
                    for key, value in writes.items()]
        return out

    def net_writes(self) -> tuple[list[tuple[str, bytes, bytes]],
                                  dict[str, dict[bytes, bytes | None]]]:
        """net_ops() without building a tuple per key: the range deletions, and per
        column family every key's last value (None: deleted). Not to be changed."""
        return self._ranges, self._writes

    def savepoint(self) -> tuple[int, int]:
        return len(self.ops), len(self._undo)

    def rollback(self, savepoint: tuple[int, int]) -> None:
        """Forget every mutation made since `savepoint`."""
        n_ops, n_undo = savepoint
        while len(self._undo) > n_undo:
            step = self._undo.pop()
            if step is None:
                cf = self._ranges.pop()[0]
                self._range_cfs[cf] -= 1
                if not self._range_cfs[cf]:
                    del self._range_cfs[cf]
            elif step[2] is _ABSENT:
                step[0].pop(step[1], None)
            else:
                step[0][step[1]] = step[2]
        del self.ops[n_ops:]
