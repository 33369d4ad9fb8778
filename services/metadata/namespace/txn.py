"""A write overlay over a read-only view: the fold's reads see its own writes, and
its writes are collected as an ordered list of mutations for one WriteBatch.
A savepoint lets a failed command take back exactly what it wrote."""

from collections.abc import Callable, Iterable

Getter = Callable[[str, bytes], bytes | None]
Scanner = Callable[[str, bytes], Iterable[tuple[bytes, bytes]]]

PUT, DELETE, DELETE_RANGE = "put", "delete", "delete_range"
_ABSENT = object()  # the undo log's "this key had no overlay value"


class Txn:
    """Reads fall through to `base`; `ops` lists the mutations in order."""

    __slots__ = ("_base", "_base_scan", "_writes", "_ranges", "_range_cfs", "_cf_keys",
                 "_undo", "ops")

    def __init__(self, base: Getter, base_scan: Scanner | None = None):
        self._base = base
        self._base_scan = base_scan
        self._writes: dict[tuple[str, bytes], bytes | None] = {}
        self._ranges: list[tuple[str, bytes, bytes]] = []
        # Per column family: how many ranges, and every key ever written (a superset
        # of its live writes), so that a group of thousands of commands (a replay)
        # does not make every read, scan and range delete look at all of them.
        self._range_cfs: dict[str, int] = {}
        self._cf_keys: dict[str, set[bytes]] = {}
        self._undo: list[tuple] = []
        self.ops: list[tuple] = []

    def get(self, cf: str, key: bytes) -> bytes | None:
        hit = self._writes.get((cf, key), _ABSENT)
        if hit is not _ABSENT:
            return hit
        if cf in self._range_cfs:
            for rcf, lo, hi in self._ranges:
                if rcf == cf and lo <= key < hi:
                    return None
        return self._base(cf, key)

    def _written(self, cf: str, prefix: bytes = b"") -> list[bytes]:
        """Keys of `cf` this transaction holds a value (or a deletion) for."""
        writes = self._writes
        return [k for k in self._cf_keys.get(cf, ()) if k.startswith(prefix)
                and (cf, k) in writes]

    def scan(self, cf: str, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every live (key, value) of `cf` under `prefix`, in key order, as this
        transaction sees them. For small sets: a session's open files, a file's chunks."""
        merged = {} if self._base_scan is None else dict(self._base_scan(cf, prefix))
        for key in self._written(cf, prefix):
            merged[key] = self._writes[cf, key]
        for rcf, lo, hi in self._ranges if cf in self._range_cfs else ():
            if rcf == cf:
                for key in [k for k in merged if lo <= k < hi and (rcf, k) not in self._writes]:
                    del merged[key]
        return sorted((k, v) for k, v in merged.items() if v is not None)

    def _write(self, cf: str, key: bytes, value: bytes | None) -> None:
        k = (cf, key)
        self._undo.append((k, self._writes.get(k, _ABSENT)))
        self._writes[k] = value
        keys = self._cf_keys.get(cf)
        if keys is None:
            keys = self._cf_keys[cf] = set()
        keys.add(key)

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        self._write(cf, key, value)
        self.ops.append((PUT, cf, key, value))

    def delete(self, cf: str, key: bytes) -> None:
        self._write(cf, key, None)
        self.ops.append((DELETE, cf, key))

    def delete_range(self, cf: str, lo: bytes, hi: bytes) -> None:
        """Delete every key k of `cf` with lo <= k < hi."""
        for key in [k for k in self._written(cf) if lo <= k < hi]:
            self._undo.append(((cf, key), self._writes.pop((cf, key))))
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
        for (cf, key), value in self._writes.items():
            out.append((DELETE, cf, key) if value is None else (PUT, cf, key, value))
        return out

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
            elif step[1] is _ABSENT:
                self._writes.pop(step[0], None)
            else:
                self._writes[step[0]] = step[1]
        del self.ops[n_ops:]
