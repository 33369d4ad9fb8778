"""Chunk store throughput against plain files on the same disk, in the same run.

Prints one JSON object. Both sides move the same bytes in the same I/O size:
- `write_mib_s`: 64 MiB chunks written front to back, one fdatasync per chunk at its end
  (ChunkStore: create, write, sync; plain: open, pwrite, fdatasync).
- `read_cold_mib_s`: the same chunks read back after their pages were dropped from the
  page cache (posix_fadvise DONTNEED), so the disk is read; ChunkStore checks every CRC.
- `read_warm_mib_s`: read once more, from the page cache: the cost of checking and copying.
Each holds both sides and `ratio` = chunkstore / plain. The sides alternate in rounds so
disk noise hits both; each figure is the median round's.

Usage: python bench/chunkstore.py [--mib N] [--io-kib N] [--rounds N] [--dir DIR]
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

from services.chunk.header import CHUNK_SIZE
from services.chunk.store import ChunkStore


def drop_cache(paths: list[str]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


class Store:
    def __init__(self, work: str):
        self.dir = os.path.join(work, "store")
        os.makedirs(self.dir)
        self.store = ChunkStore([self.dir])

    def write(self, chunks: int, source: memoryview, io: int) -> None:
        for c in range(chunks):
            self.store.create(c, 1)
            for off in range(0, CHUNK_SIZE, io):
                self.store.write(c, 1, off, source[off:off + io])
            self.store.sync(c)

    def read(self, chunks: int, io: int) -> None:
        for c in range(chunks):
            for off in range(0, CHUNK_SIZE, io):
                self.store.read(c, 1, off, io)

    def paths(self) -> list[str]:
        return [os.path.join(d, f) for d, _, files in os.walk(self.dir)
                for f in files if f.endswith(".mng")]

    def clear(self, chunks: int) -> None:
        for c in range(chunks):
            self.store.delete(c)


class Plain:
    def __init__(self, work: str):
        self.dir = os.path.join(work, "plain")
        os.makedirs(self.dir)

    def write(self, chunks: int, source: memoryview, io: int) -> None:
        for c in range(chunks):
            fd = os.open(os.path.join(self.dir, str(c)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            for off in range(0, CHUNK_SIZE, io):
                os.pwrite(fd, source[off:off + io], off)
            os.fdatasync(fd)
            os.close(fd)

    def read(self, chunks: int, io: int) -> None:
        for c in range(chunks):
            fd = os.open(os.path.join(self.dir, str(c)), os.O_RDONLY)
            for off in range(0, CHUNK_SIZE, io):
                os.pread(fd, io, off)
            os.close(fd)

    def paths(self) -> list[str]:
        return [os.path.join(self.dir, f) for f in os.listdir(self.dir)]

    def clear(self, chunks: int) -> None:
        for path in self.paths():
            os.unlink(path)


def timed_rate(mib: float, run) -> float:
    t = time.perf_counter()
    run()
    return mib / (time.perf_counter() - t)


def measure(sides: dict, chunks: int, io: int, rounds: int) -> dict:
    source = memoryview(os.urandom(CHUNK_SIZE))
    mib = chunks * CHUNK_SIZE / 2**20
    rates = {name: {"write": [], "read_cold": [], "read_warm": []} for name in sides}
    for r in range(rounds):
        order = list(sides.items()) if r % 2 == 0 else list(reversed(sides.items()))
        for name, side in order:
            rates[name]["write"].append(timed_rate(mib, lambda s=side: s.write(chunks, source, io)))
            drop_cache(side.paths())
            rates[name]["read_cold"].append(timed_rate(mib, lambda s=side: s.read(chunks, io)))
            rates[name]["read_warm"].append(timed_rate(mib, lambda s=side: s.read(chunks, io)))
            side.clear(chunks)
    out = {}
    for metric in ("write", "read_cold", "read_warm"):
        medians = {name: statistics.median(rates[name][metric]) for name in sides}
        out[f"{metric}_mib_s"] = {**{n: round(v, 1) for n, v in medians.items()},
                                  "ratio": round(medians["chunkstore"] / medians["plain"], 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="data per round (64 MiB chunks)")
    parser.add_argument("--io-kib", type=int, default=1024, help="bytes per write and read")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None,
                        help="where to put the files (default: a temporary directory)")
    args = parser.parse_args()
    chunks = max(1, args.mib * 2**20 // CHUNK_SIZE)
    work = tempfile.mkdtemp(prefix="mooseng-bench-", dir=args.dir)
    try:
        sides = {"chunkstore": Store(work), "plain": Plain(work)}
        results = measure(sides, chunks, args.io_kib << 10, args.rounds)
        sides["chunkstore"].store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"dir": work, "mib": chunks * CHUNK_SIZE >> 20, "io_kib": args.io_kib,
                      "rounds": args.rounds, **results}))


if __name__ == "__main__":
    main()
