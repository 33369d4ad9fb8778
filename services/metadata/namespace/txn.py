"""A write overlay over a read-only view: the fold's reads see its own writes, and
its writes are collected as an ordered list of mutations for one WriteBatch."""

from collections.abc import Callable

Getter = Callable[[str, bytes], bytes | None]

PUT, DELETE, DELETE_RANGE = "put", "delete", "delete_range"


class Txn:
    """Reads fall through to `base`; `ops` lists the mutations in order."""

    __slots__ = ("_base", "_writes", "_ranges", "ops")

    def __init__(self, base: Getter):
        self._base = base
        self._writes: dict[tuple[str, bytes], bytes | None] = {}
        self._ranges: list[tuple[str, bytes, bytes]] = []
        self.ops: list[tuple] = []

    def get(self, cf: str, key: bytes) -> bytes | None:
        hit = self._writes.get((cf, key), self)
        if hit is not self:
            return hit
        for rcf, lo, hi in self._ranges:
            if rcf == cf and lo <= key < hi:
                return None
        return self._base(cf, key)

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        self._writes[(cf, key)] = value
        self.ops.append((PUT, cf, key, value))

    def delete(self, cf: str, key: bytes) -> None:
        self._writes[(cf, key)] = None
        self.ops.append((DELETE, cf, key))

    def delete_range(self, cf: str, lo: bytes, hi: bytes) -> None:
        """Delete every key k of `cf` with lo <= k < hi."""
        for k in [k for k in self._writes if k[0] == cf and lo <= k[1] < hi]:
            del self._writes[k]
        self._ranges.append((cf, lo, hi))
        self.ops.append((DELETE_RANGE, cf, lo, hi))

    def absorb(self, child: "Txn") -> None:
        """Take over the mutations of a nested transaction, in order."""
        for op in child.ops:
            if op[0] == PUT:
                self.put(op[1], op[2], op[3])
            elif op[0] == DELETE:
                self.delete(op[1], op[2])
            else:
                self.delete_range(op[1], op[2], op[3])
