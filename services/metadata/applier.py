"""Folds committed commands into the projection, a group per WriteBatch.

The running digest chains every applied entry's result and mutations, so two
replicas (or a replica and a replay) that diverge differ from the first bad entry.
"""

import hashlib
import struct
from collections.abc import Callable

from schemas import namespace_pb2 as pb
from services.common.posix.records import COLUMN_FAMILIES, INLINE, RESULTS
from services.metadata.namespace.fold import fold, fold_bytes
from services.metadata.namespace.txn import DELETE, DELETE_RANGE, PUT, Txn
from services.metadata.projection import Projection


class ApplyError(Exception):
    """Entries were offered out of order: the log and the projection disagree."""


_TAGS = {kind: {cf: bytes([k * 16 + c]) for c, cf in enumerate(COLUMN_FAMILIES)}
         for k, kind in enumerate((PUT, DELETE, DELETE_RANGE))}
_LENGTHS = struct.Struct(">II")
_HEAD = struct.Struct(">QI")   # index, result length


def chain_digest(previous: bytes, index: int, result: bytes, ops: list[tuple]) -> bytes:
    """H(previous, index, result, mutations): every part length-prefixed, so two
    different histories never hash the same bytes."""
    parts = [previous, _HEAD.pack(index, len(result)), result]
    tags, lengths = _TAGS, _LENGTHS.pack
    for op in ops:
        if len(op) == 4:
            parts += (tags[op[0]][op[1]], lengths(len(op[2]), len(op[3])), op[2], op[3])
        else:
            parts += (tags[op[0]][op[1]], lengths(len(op[2]), 0), op[2])
    return hashlib.blake2b(b"".join(parts), digest_size=32).digest()


# (first index, last index, digest before, digest after, range deletions, net writes)
OnBatch = Callable[[int, int, bytes, bytes, list, dict], None]

# Projection values remembered across batches (see Applier): enough for the working
# set of a big namespace's hot directories and files, a bounded amount of memory.
CACHE_ENTRIES = 500_000


class Applier:
    """Applies log entries (index, command) in index order, exactly once each."""

    def __init__(self, projection: Projection, on_batch: OnBatch | None = None):
        """`on_batch` sees each batch's net writes before they are written (the
        metalogger's effects builder records them)."""
        self.projection = projection
        self.on_batch = on_batch
        # What the projection holds for keys the fold read or wrote, as of applied
        # index `_cached_at`: a RocksDB point read costs microseconds, a dict lookup
        # a tenth of that, and a replay reads the same directories over and over.
        # Only this applier writes the projection; if anything else moved it, the
        # cache is dropped.
        self._cache: dict[str, dict[bytes, bytes | None]] = {}
        self._cached_at = -1

    def apply(self, index: int, command: bytes | pb.Command) -> pb.Result:
        results = self.apply_many([(index, command)])
        return results[0] if results else None

    def apply_many(self, entries) -> list[pb.Result | None]:
        """Apply entries above the applied index in one atomic write; entries at or
        below it were applied before a restart and are skipped. A command of None
        (a log entry that carries none) only moves the applied index."""
        proj = self.projection
        cache = self._cache
        if self._cached_at != proj.applied_index or \
                sum(map(len, cache.values())) > CACHE_ENTRIES:
            cache.clear()
        txn = Txn(proj.get, proj.scan, seen=cache)
        index, digest = proj.applied_index, proj.applied_digest
        first, before = index + 1, digest
        results = []
        for entry_index, command in entries:
            if entry_index <= proj.applied_index:
                continue
            if entry_index != index + 1:
                raise ApplyError(f"entry {entry_index} offered after {index}: a gap in the log")
            index = entry_index
            if command is None:  # a log entry that is not a command (no-op, membership)
                digest = chain_digest(digest, entry_index, b"", [])
                results.append(None)
                continue
            first_op = len(txn.ops)
            fold_one = fold_bytes if isinstance(command, bytes) else fold
            result = fold_one(txn, command)
            digest = chain_digest(digest, entry_index, result.SerializeToString(),
                                  txn.ops[first_op:])
            results.append(result)
        if results:
            ranges, writes = txn.net_writes()
            if self.on_batch is not None:
                self.on_batch(first, index, before, digest, ranges, writes)
            self._cached_at = -1   # a failed write leaves the cache unknown
            proj.write_net(ranges, writes, index, digest)
            self._remember(ranges, writes)
            self._cached_at = index
        else:
            cache.pop(RESULTS, None)
            cache.pop(INLINE, None)
        return results

    def _remember(self, ranges: list[tuple], writes: dict[str, dict]) -> None:
        """Bring the cache to what the batch made of the projection. A result is read
        once, by a retry, and never again: results are not kept; nor are small files'
        bytes (up to 64 KiB each, and read again only by the next write)."""
        cache = self._cache
        for cf, _, _ in ranges:
            cache.pop(cf, None)
        for cf, values in writes.items():
            if cf in cache:
                cache[cf].update(values)
            else:
                cache[cf] = dict(values)
        cache.pop(RESULTS, None)
        cache.pop(INLINE, None)
