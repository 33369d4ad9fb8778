"""The metadata projections: RocksDB column families folded from the command log.

One WriteBatch carries a group of commands' mutations together with the new applied
index and running digest, so after a crash the projection is always at a command
boundary and knows exactly which command comes next.
"""

import hashlib
import os
from collections.abc import Iterator

from rocksdict import BlockBasedOptions, Checkpoint, Options, Rdict, WriteBatch

from services.common.posix import records as r
from services.metadata.namespace.txn import DELETE, PUT

APPLIED_INDEX = b"applied_index"
APPLIED_DIGEST = b"applied_digest"
FORMAT = b"format"
POSITION_KEYS = (APPLIED_INDEX, APPLIED_DIGEST)
FORMAT_VERSION = 1
GENESIS_DIGEST = bytes(32)


class ProjectionError(Exception):
    """The data directory cannot be used as a projection; the message says why."""


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    return opts


def _family_options() -> Options:
    """Bloom filters, in the memtable and in table files: the fold asks for many keys
    that are not there (a request's earlier result, a name about to be made), and a
    filter answers most of those without searching."""
    opts = Options(raw_mode=True)
    opts.set_memtable_prefix_bloom_ratio(0.1)
    opts.set_memtable_whole_key_filtering(True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    return opts


class Projection:
    """Read access by (column family, key), ordered scans, and atomic group writes."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._db = Rdict(path, _options(),
                             column_families={cf: _family_options()
                                              for cf in r.COLUMN_FAMILIES})
        except Exception as exc:  # rocksdict raises plain Exception for open failures
            raise ProjectionError(f"cannot open projection at {path}: {exc}") from exc
        self._cfs = {cf: self._db.get_column_family(cf) for cf in r.COLUMN_FAMILIES}
        self._handles = {cf: self._db.get_column_family_handle(cf) for cf in r.COLUMN_FAMILIES}
        self._check_format()
        self.applied_index = r.from_u64(self.get(r.META, APPLIED_INDEX))
        self.applied_digest = self.get(r.META, APPLIED_DIGEST)

    def _check_format(self) -> None:
        found = self.get(r.META, FORMAT)
        if found is None:
            self._initialize()
        elif r.from_u64(found) != FORMAT_VERSION:
            raise ProjectionError(
                f"{self.path}: projection format {r.from_u64(found)} is not supported "
                f"(this version reads format {FORMAT_VERSION}); rebuild it from the log")

    def _initialize(self) -> None:
        """A fresh projection: an empty root directory owned by root, at index 0."""
        root = r.Inode(r.ROOT_INO, 0o40755, 0, 0, 2, 0, 0, 0, 0)
        batch = WriteBatch(raw_mode=True)
        batch.put(r.u64(r.ROOT_INO), root.pack(), self._handles[r.INODES])
        meta = self._handles[r.META]
        for key, value in ((FORMAT, r.u64(FORMAT_VERSION)), (APPLIED_INDEX, r.u64(0)),
                           (APPLIED_DIGEST, GENESIS_DIGEST), (b"next_inode", r.u64(2)),
                           (b"next_session", r.u64(1)), (b"next_chunk", r.u64(1)),
                           (b"inode_count", r.u64(1)),
                           (b"used_bytes", r.wide(0))):
            batch.put(key, value, meta)
        self._db.write(batch)

    def get(self, cf: str, key: bytes) -> bytes | None:
        return self._cfs[cf].get(key)

    def scan(self, cf: str, prefix: bytes, start: bytes | None = None
             ) -> Iterator[tuple[bytes, bytes]]:
        """Keys with `prefix`, in order, from `start` (default: the prefix itself)."""
        for key, value in self._cfs[cf].items(from_key=start or prefix):
            if not key.startswith(prefix):
                return
            yield key, value

    def write(self, ops: list[tuple], applied_index: int, applied_digest: bytes) -> None:
        """Apply `ops` and move the applied position, atomically."""
        batch = WriteBatch(raw_mode=True)
        handles = self._handles
        for op in ops:
            if op[0] == PUT:
                batch.put(op[2], op[3], handles[op[1]])
            elif op[0] == DELETE:
                batch.delete(op[2], handles[op[1]])
            else:
                batch.delete_range(op[2], op[3], handles[op[1]])
        self._commit(batch, applied_index, applied_digest)

    def write_net(self, ranges: list[tuple[str, bytes, bytes]],
                  writes: dict[str, dict[bytes, bytes | None]], applied_index: int,
                  applied_digest: bytes) -> None:
        """write() of a Txn's net_writes(): the range deletions, then each key's last
        value (None: deleted), and the applied position, atomically."""
        self.write_groups([(ranges, writes)], applied_index, applied_digest)

    def write_groups(self, groups: list[tuple[list, dict]], applied_index: int,
                     applied_digest: bytes) -> None:
        """write_net() of several groups' net writes, one after the other, atomically
        (a restore writing the archive's effects)."""
        batch = WriteBatch(raw_mode=True)
        for ranges, writes in groups:
            self._add_net(batch, ranges, writes)
        self._commit(batch, applied_index, applied_digest)

    def _add_net(self, batch: WriteBatch, ranges: list, writes: dict) -> None:
        handles = self._handles
        for cf, lo, hi in ranges:
            batch.delete_range(lo, hi, handles[cf])
        for cf, values in writes.items():
            handle = handles[cf]
            put, delete = batch.put, batch.delete
            for key, value in values.items():
                if value is None:
                    delete(key, handle)
                else:
                    put(key, value, handle)

    def _commit(self, batch: WriteBatch, applied_index: int, applied_digest: bytes) -> None:
        """Write `batch` with the new applied position, atomically."""
        meta = self._handles[r.META]
        batch.put(APPLIED_INDEX, r.u64(applied_index), meta)
        batch.put(APPLIED_DIGEST, applied_digest, meta)
        self._db.write(batch)
        self.applied_index = applied_index
        self.applied_digest = applied_digest

    def content_digest(self) -> str:
        """SHA-256 over every key and value of every column family, in order, except
        the applied position: equal digests mean equal namespaces."""
        h = hashlib.sha256()
        for cf in r.COLUMN_FAMILIES:
            h.update(b"\0cf\0" + cf.encode())
            for key, value in self._cfs[cf].items():
                if cf == r.META and key in POSITION_KEYS:
                    continue
                h.update(len(key).to_bytes(4, "big") + key)
                h.update(len(value).to_bytes(4, "big") + value)
        return h.hexdigest()

    def flush(self) -> None:
        """Write the memtables to table files (safe beside writes, from any thread;
        rocksdict lets go of the GIL meanwhile)."""
        self._db.flush()

    def checkpoint(self, path: str) -> None:
        """A consistent copy of the projection at its applied index, in `path` (which
        must not exist): hard links to immutable files, so cheap. This is a snapshot."""
        self._db.flush()
        Checkpoint(self._db).create_checkpoint(path)

    def close(self) -> None:
        # Column family handles keep the database (and its LOCK) alive: drop them first.
        self._handles = {}
        for cf in self._cfs.values():
            cf.close()
        self._cfs = {}
        self._db.close()

    def __enter__(self) -> "Projection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_projection(path: str) -> Projection:
    os.makedirs(path, exist_ok=True)
    return Projection(path)
