"""The Raft log on disk: segment files (LogStore) against a RocksDB column family.

Prints one JSON object. Both engines run in the same process on the same disk.
- `entries_per_s_batch64`: batches of 64 entries of 200 bytes, one fsync per batch
  (group commit, as a busy leader persists a Ready).
- `p50_ms`, `p99_ms`: one entry appended and fsynced on its own (an idle leader).
- `reopen_ms`: opening the log the batch run wrote (LogStore scans and CRC-checks it;
  RocksDB replays its WAL).
The segmented store also reports `hard_state_p50_ms` (temp file, fsync, rename, fsync dir).
The engines alternate in rounds so disk noise hits both, and throughput is the median
round's. `ratio` is segmented / rocksdb batch throughput. `choice` is segmented unless
RocksDB is more than 10% better on both throughput and p50 latency: within that margin
the simpler format wins (docs/raft-log.md).

Usage: python bench/logstore.py [--batches N] [--singles N] [--rounds N] [--dir DIR]
"""

import argparse
import json
import os
import shutil
import tempfile
import time

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from services.metadata.raft.log_store import Entry, LogStore

BATCH = 64
ENTRY_BYTES = 200
CF = "raft_log"


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    at = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.50, 0.99)]
    return {"p50_ms": round(at[0] * 1e3, 3), "p99_ms": round(at[1] * 1e3, 3)}


def batches(count: int, size: int, first: int = 1):
    data = os.urandom(ENTRY_BYTES)
    for b in range(count):
        start = first + b * size
        yield [Entry(i, 1, 0, data) for i in range(start, start + size)]


class Segmented:
    def __init__(self, path: str):
        self.path, self.store = path, LogStore(path)

    def write(self, entries: list[Entry]) -> None:
        self.store.append(entries)
        self.store.sync()

    def reopen(self) -> None:
        self.store.close()
        self.store = LogStore(self.path)

    def close(self) -> None:
        self.store.close()


class RocksLog:
    """The log as one column family: key = big-endian index, value = term, kind, data."""

    def __init__(self, path: str):
        self.path = path
        self._open()
        self.sync = WriteOptions()
        self.sync.sync = True

    def _open(self) -> None:
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        self.db = Rdict(self.path, opts, column_families={CF: Options(raw_mode=True)})
        self.cf = self.db.get_column_family_handle(CF)

    def write(self, entries: list[Entry]) -> None:
        batch = WriteBatch(raw_mode=True)
        batch.set_default_column_family(self.cf)
        for e in entries:
            batch.put(e.index.to_bytes(8, "big"),
                      e.term.to_bytes(8, "big") + bytes([e.kind]) + e.data)
        self.db.write(batch, self.sync)

    def reopen(self) -> None:
        self.close()
        self._open()

    def close(self) -> None:
        del self.cf   # a live handle keeps the database (and its lock) open
        self.db.close()
        del self.db


def measure(engines: dict, batch_count: int, singles: int, rounds: int) -> dict:
    """Interleave the engines in rounds, so a noisy neighbour on the disk hits both;
    throughput is the median round's."""
    rates: dict[str, list[float]] = {name: [] for name in engines}
    latencies: dict[str, list[float]] = {name: [] for name in engines}
    per_round = max(1, batch_count // rounds)
    for r in range(rounds):
        first = r * (per_round * BATCH + singles // rounds) + 1
        for name, engine in engines.items():
            t = time.perf_counter()
            for entries in batches(per_round, BATCH, first):
                engine.write(entries)
            rates[name].append(per_round * BATCH / (time.perf_counter() - t))
            for entries in batches(singles // rounds, 1, first + per_round * BATCH):
                t = time.perf_counter()
                engine.write(entries)
                latencies[name].append(time.perf_counter() - t)
    results = {}
    for name, engine in engines.items():
        t = time.perf_counter()
        engine.reopen()
        results[name] = {"entries_per_s_batch64": round(sorted(rates[name])[rounds // 2]),
                         **percentiles(latencies[name]),
                         "reopen_ms": round((time.perf_counter() - t) * 1e3, 1)}
    return results


def hard_state_latency(store: LogStore, count: int) -> float:
    samples = []
    for n in range(count):
        t = time.perf_counter()
        store.save_hard_state(n + 1, 0, 0)
        samples.append(time.perf_counter() - t)
    return percentiles(samples)["p50_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2100)
    parser.add_argument("--singles", type=int, default=2100)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--dir", default=None, help="where to put the logs "
                                                    "(default: a temporary directory)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="mooseng-bench-", dir=args.dir)
    try:
        engines = {"segmented": Segmented(os.path.join(work, "segmented")),
                   "rocksdb": RocksLog(os.path.join(work, "rocksdb"))}
        results = measure(engines, args.batches, args.singles, args.rounds)
        results["segmented"]["hard_state_p50_ms"] = hard_state_latency(
            engines["segmented"].store, 100)
        for engine in engines.values():
            engine.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seg, rocks = results["segmented"], results["rocksdb"]
    ratio = seg["entries_per_s_batch64"] / rocks["entries_per_s_batch64"]
    rocks_clearly_faster = ratio < 0.9 and rocks["p50_ms"] < 0.9 * seg["p50_ms"]
    print(json.dumps({
        "dir": work, "entry_bytes": ENTRY_BYTES, "batch": BATCH, **results,
        "choice": "rocksdb" if rocks_clearly_faster else "segmented", "ratio": round(ratio, 2),
    }))

if __name__ == "__main__":
    main()
