"""Sequential write then read of one file through ChunkIO, against plain file I/O on the
local disk in the same run.

The bench starts its own cluster: 3 metadata nodes and 3 chunkservers on loopback, their
data in a temporary directory on the local disk, all stopped at the end. The file has
storage class copies=2, so every byte is written twice (two chunkservers, same disk).
Both sides do the same: write the file in --io-kib pieces, then make it durable (ChunkIO
fsync: commit and SYNC on every copy; local: os.fsync), drop the file's pages from the
page cache (posix_fadvise DONTNEED on the local file and on every chunk file), then
read it back in --io-kib pieces, one read at a time. Prints one JSON object:

  {"write_MiBps", "read_MiBps", "local_write_MiBps", "local_read_MiBps",
   "write_ratio", "read_ratio", ...}

Usage: python bench/data.py [--size-mib N] [--io-kib K]
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import uvloop

from fuse_client.chunk_io import ChunkIO
from fuse_client.metadata_client import MetadataClient
from mooseng.ports import free_ports
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.discovery import find_leader

ROOT = pb.Caller(uid=0, gid=0)
CHUNKSERVERS = 3
FAIRNESS = ("both sides: write in io_kib pieces, then fsync (ChunkIO: commit + SYNC on "
            "every copy), then posix_fadvise DONTNEED on every data file, then read in "
            "io_kib pieces one at a time; cluster data and local file on the same disk")


def start_cluster(work: str) -> tuple[list[str], list[subprocess.Popen]]:
    ports = free_ports(3 + CHUNKSERVERS)
    masters = [f"127.0.0.1:{p}" for p in ports[:3]]
    peers = ",".join(f"{i + 1}={a}" for i, a in enumerate(masters))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([sys.executable, "-m", "mooseng", "metadata", "--id", str(i),
                               "--data", os.path.join(work, f"m{i}"), "--listen",
                               masters[i - 1], "--peers", peers], **quiet)
             for i in (1, 2, 3)]
    for i, port in enumerate(ports[3:]):
        data = os.path.join(work, f"cs{i}")
        os.makedirs(data)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "mooseng", "chunkserver", "--data", data, "--masters",
             ",".join(masters), "--listen", f"127.0.0.1:{port}"], **quiet))
    return masters, procs


async def wait_ready(client: MetadataClient, masters: list[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        if await find_leader(masters):
            health = (await client.read(ROOT, chunk_health=mpb.ChunkHealth())).health
            if sum(s.connected and s.free_bytes > 0 for s in health.servers) >= CHUNKSERVERS:
                break
        if time.monotonic() > deadline:
            raise SystemExit(f"the cluster was not ready within 60 s (masters {masters})")
        await asyncio.sleep(0.1)
    await warm_up(client)


async def warm_up(client: MetadataClient) -> None:
    """Write and commit one small file. A new leader hands out no write targets until
    it has heard from the chunkservers for a few seconds (docs/chunk-management.md), so
    without this the first write of the measured file would time the cluster's start."""
    inode = (await client.mutate(ROOT, create=pb.Create(parent=1, name=b"warm-up",
                                                        mode=0o644))).attr.inode
    await client.mutate(ROOT, open=pb.Open(inode=inode, flags=os.O_RDWR))
    writer = ChunkIO(client)
    await writer.write(ROOT, inode, 0, b"x" * 4096)
    await writer.fsync(ROOT, inode)
    await writer.close()


def drop_cache(paths: list[str]) -> None:
    """Evict the files' pages (they are clean after the fsync, so this drops them)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def files_under(root: str) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


async def through_chunk_io(masters: list[str], work: str, size: int, io: int,
                           block: bytes) -> dict:
    async with MetadataClient(masters, "bench-data") as client:
        await wait_ready(client, masters)
        inode = (await client.mutate(ROOT, create=pb.Create(parent=1, name=b"big",
                                                            mode=0o644))).attr.inode
        await client.mutate(ROOT, open=pb.Open(inode=inode, flags=os.O_RDWR))
        writer = ChunkIO(client)
        start = time.perf_counter()
        for offset in range(0, size, io):
            await writer.write(ROOT, inode, offset, block)
        await writer.fsync(ROOT, inode)
        write_s = time.perf_counter() - start
        await writer.close()
        chunk_files = [f for i in range(CHUNKSERVERS)
                       for f in files_under(os.path.join(work, f"cs{i}"))
                       if f.endswith(".mng")]
        drop_cache(chunk_files)
        reader = ChunkIO(client)    # a cold client: it locates every chunk
        start = time.perf_counter()
        for offset in range(0, size, io):
            got = await reader.read(ROOT, inode, offset, io, size)
            if len(got) != io or got[:16] != block[:16]:
                raise SystemExit(f"read back wrong bytes at offset {offset}")
        read_s = time.perf_counter() - start
        await reader.close()
        return {"write_s": write_s, "read_s": read_s, "chunk_files": len(chunk_files)}


def through_local_file(work: str, size: int, io: int, block: bytes) -> dict:
    path = os.path.join(work, "local-reference")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    start = time.perf_counter()
    for _ in range(0, size, io):
        os.write(fd, block)
    os.fsync(fd)
    write_s = time.perf_counter() - start
    os.close(fd)
    drop_cache([path])
    fd = os.open(path, os.O_RDONLY)
    start = time.perf_counter()
    for _ in range(0, size, io):
        if len(os.read(fd, io)) != io:
            raise SystemExit("the local file reads back short")
    read_s = time.perf_counter() - start
    os.close(fd)
    os.unlink(path)
    return {"write_s": write_s, "read_s": read_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--io-kib", type=int, default=1024, help="bytes per write/read call")
    args = parser.parse_args()
    size, io = args.size_mib << 20, args.io_kib << 10
    if size % io:
        raise SystemExit("--size-mib must be a multiple of --io-kib")
    block = os.urandom(io)
    work = tempfile.mkdtemp(prefix="mooseng-bench-data-")
    masters, procs = start_cluster(work)
    try:
        ours = uvloop.run(through_chunk_io(masters, work, size, io, block))
        local = through_local_file(work, size, io, block)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    mib = size / (1 << 20)
    report = {
        "write_MiBps": round(mib / ours["write_s"], 1),
        "read_MiBps": round(mib / ours["read_s"], 1),
        "local_write_MiBps": round(mib / local["write_s"], 1),
        "local_read_MiBps": round(mib / local["read_s"], 1),
    }
    report["write_ratio"] = round(report["write_MiBps"] / report["local_write_MiBps"], 3)
    report["read_ratio"] = round(report["read_MiBps"] / report["local_read_MiBps"], 3)
    report.update(size_mib=args.size_mib, io_kib=args.io_kib, storage_class="copies=2",
                  chunkservers=CHUNKSERVERS, fairness=FAIRNESS)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
