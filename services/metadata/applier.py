"""Folds committed commands into the projection, a group per WriteBatch.

The running digest chains every applied entry's result and mutations, so two
replicas (or a replica and a replay) that diverge differ from the first bad entry.
"""

import hashlib
import struct

from schemas import namespace_pb2 as pb
from services.metadata.namespace.fold import fold, fold_bytes
from services.metadata.namespace.records import COLUMN_FAMILIES
from services.metadata.namespace.txn import DELETE, DELETE_RANGE, PUT, Txn
from services.metadata.projection import Projection


class ApplyError(Exception):
    """Entries were offered out of order: the log and the projection disagree."""


_TAGS = {(kind, cf): bytes([k * 16 + c])
         for k, kind in enumerate((PUT, DELETE, DELETE_RANGE))
         for c, cf in enumerate(COLUMN_FAMILIES)}
_LENGTHS = struct.Struct(">II")


def chain_digest(previous: bytes, index: int, result: bytes, ops: list[tuple]) -> bytes:
    """H(previous, index, result, mutations): every part length-prefixed, so two
    different histories never hash the same bytes."""
    parts = [previous, index.to_bytes(8, "big"), len(result).to_bytes(4, "big"), result]
    for op in ops:
        second = op[3] if len(op) == 4 else b""
        parts += (_TAGS[op[0], op[1]], _LENGTHS.pack(len(op[2]), len(second)), op[2], second)
    return hashlib.blake2b(b"".join(parts), digest_size=32).digest()


class Applier:
    """Applies log entries (index, command) in index order, exactly once each."""

    def __init__(self, projection: Projection):
        self.projection = projection

    def apply(self, index: int, command: bytes | pb.Command) -> pb.Result:
        results = self.apply_many([(index, command)])
        return results[0] if results else None

    def apply_many(self, entries) -> list[pb.Result | None]:
        """Apply entries above the applied index in one atomic write; entries at or
        below it were applied before a restart and are skipped. A command of None
        (a log entry that carries none) only moves the applied index."""
        proj = self.projection
        txn = Txn(proj.get, proj.scan)
        index, digest = proj.applied_index, proj.applied_digest
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
            proj.write(txn.net_ops(), index, digest)
        return results
