"""Metadata operations per second against a 3-node cluster, from 1 and 16 sessions.

Each session is one MetadataClient (one multiplexed stream) with WORKERS operations
in flight, like a mount serving several threads. Phases: create (empty files, each
session in its own directory), stat (getattr, linearizable), unlink. A reference
measured in the same run: the same operations on a local tmpfs directory from one
process (open/fstat/unlink through the kernel). Prints one JSON object:

  {"sessions_1": {"create_per_s", "stat_per_s", "unlink_per_s"},
   "sessions_16": {...}, "local_tmpfs": {...}, "workers_per_session": N}

Usage: python bench/metadata.py [--files N] [--workers W]
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

from fuse_client.metadata_client import MetadataClient
from mooseng.ports import free_ports
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.discovery import find_leader

ROOT = pb.Caller(uid=0, gid=0)


async def run_phase(clients, jobs_per_session, workers: int, op) -> float:
    """Run op(client, session_index, job) for every job; operations per second."""
    async def session(i, client):
        queue = list(range(jobs_per_session))

        async def worker():
            while queue:
                await op(client, i, queue.pop())
        await asyncio.gather(*(worker() for _ in range(workers)))

    start = time.perf_counter()
    await asyncio.gather(*(session(i, c) for i, c in enumerate(clients)))
    return len(clients) * jobs_per_session / (time.perf_counter() - start)


async def measure(addresses: list[str], sessions: int, files: int, workers: int,
                  tag: str) -> dict:
    clients = [await MetadataClient(addresses, f"bench-{i}").open() for i in range(sessions)]
    per_session = files // sessions
    dirs, inodes = [], {}
    for i, c in enumerate(clients):
        r = await c.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=b"%s-%d" % (tag.encode(), i),
                                                mode=0o755))
        dirs.append(r.attr.inode)

    async def create(c, i, j):
        r = await c.mutate(ROOT, create=pb.Create(parent=dirs[i], name=b"f%d" % j,
                                                  mode=0o644, exclusive=True))
        inodes[i, j] = r.attr.inode

    async def stat(c, i, j):
        await c.read(ROOT, getattr=mpb.Getattr(inode=inodes[i, j]))

    async def unlink(c, i, j):
        await c.mutate(ROOT, unlink=pb.Unlink(parent=dirs[i], name=b"f%d" % j))

    result = {}
    for name, op in (("create_per_s", create), ("stat_per_s", stat), ("unlink_per_s", unlink)):
        result[name] = round(await run_phase(clients, per_session, workers, op))
    for c in clients:
        await c.close()
    return result


def local_reference(files: int) -> dict:
    base = tempfile.mkdtemp(prefix="mooseng-bench-", dir="/dev/shm")
    try:
        names = [os.path.join(base, f"f{j}") for j in range(files)]
        result = {}
        start = time.perf_counter()
        for n in names:
            os.close(os.open(n, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        result["create_per_s"] = round(files / (time.perf_counter() - start))
        start = time.perf_counter()
        for n in names:
            os.stat(n)
        result["stat_per_s"] = round(files / (time.perf_counter() - start))
        start = time.perf_counter()
        for n in names:
            os.unlink(n)
        result["unlink_per_s"] = round(files / (time.perf_counter() - start))
        return result
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def wait_for_leader(addresses: list[str]) -> None:
    deadline = time.monotonic() + 30
    while not await find_leader(addresses):
        if time.monotonic() > deadline:
            raise SystemExit("no metadata leader within 30 s")
        await asyncio.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16_000, help="per phase")
    parser.add_argument("--workers", type=int, default=16,
                        help="operations in flight a session (default 16)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="mooseng-bench-md-")
    ports = free_ports(3)
    peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
    addresses = [f"127.0.0.1:{p}" for p in ports]
    procs = [subprocess.Popen([sys.executable, "-m", "mooseng", "metadata", "--id", str(i),
                               "--data", os.path.join(work, f"m{i}"), "--listen",
                               addresses[i - 1], "--peers", peers],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i in (1, 2, 3)]
    try:
        asyncio.run(wait_for_leader(addresses))
        report = {
            "sessions_1": asyncio.run(measure(addresses, 1, args.files, args.workers, "one")),
            "sessions_16": asyncio.run(measure(addresses, 16, args.files, args.workers,
                                               "many")),
            "local_tmpfs": local_reference(args.files),
            "workers_per_session": args.workers,
        }
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
