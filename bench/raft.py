"""Committed proposals per second and commit latency of a 3-node cluster, side by
side with PySyncObj (a peer Python Raft) doing the same in the same run.

Both run three node processes on loopback and apply each commit to a counter:
PySyncObj with its defaults (in-memory log, no fsync; load issued inside its
leader process), MooseNG with `--state-machine counter` (every commit fsynced on
a majority; load from a client process over the pipelined gRPC stream). MooseNG
is then measured again doing real work: mkdir commands folded into the RocksDB
namespace on every node. Prints one JSON object:

  {"mooseng": {"commits_per_s", "commits_per_s_64", "p50_ms", "p99_ms"},
   "pysyncobj": {...same keys}, "throughput_ratio": mooseng/pysyncobj at 1,000,
   "mooseng_namespace": {...same keys}, "disk_fdatasync_p50_ms"}

Usage: python bench/raft.py [--seconds S] [--dir DIR] [--skip-pysyncobj]
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
import threading
import time

from mooseng.ports import free_ports
from schemas import namespace_pb2 as nspb
from services.metadata.raft.proposer import Proposer

HERE = os.path.abspath(__file__)
SEQUENTIAL = 500


def fsync_latency_ms(directory: str, rounds: int = 300) -> float:
    """The median cost of appending 200 bytes and fdatasync on this disk, now."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    latencies = []
    try:
        for _ in range(rounds):
            os.write(fd, b"x" * 200)
            start = time.perf_counter()
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    return round(percentile(latencies, 0.5) * 1000, 3)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


# -- MooseNG ---------------------------------------------------------------------------

class Names:
    """Unique mkdir commands under the root directory."""

    def __init__(self):
        self.n = 0
        self.root = nspb.Caller(uid=0, gid=0)

    def next(self) -> bytes:
        self.n += 1
        return nspb.Command(time_ns=self.n, caller=self.root, mkdir=nspb.Mkdir(
            parent=1, name=b"b%09d" % self.n, mode=0o755)).SerializeToString()


async def mooseng_load(addresses: list[str], seconds: float) -> dict:
    proposer = Proposer(addresses)
    names = Names()
    for _ in range(200):  # warm up: connections, leader caches
        await proposer.propose([names.next()])
    latencies = []
    for _ in range(SEQUENTIAL):
        start = time.perf_counter()
        await proposer.propose([names.next()])
        latencies.append(time.perf_counter() - start)
    rates = {}
    for inflight in (64, 1000):
        done = 0
        stop = time.perf_counter() + seconds

        async def worker(stop=stop):
            nonlocal done
            while time.perf_counter() < stop:
                await proposer.propose([names.next()])
                done += 1
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        rates[inflight] = done / (time.perf_counter() - start)
    await proposer.close()
    return {"commits_per_s": round(rates[1000]), "commits_per_s_64": round(rates[64]),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 3)}


def run_mooseng(work: str, seconds: float, machine: str) -> dict:
    ports = free_ports(3)
    peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
    procs = []
    try:
        for i, port in enumerate(ports, start=1):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "mooseng", "metadata", "--id", str(i), "--data",
                 os.path.join(work, f"{machine}{i}"), "--listen", f"127.0.0.1:{port}",
                 "--peers", peers, "--state-machine", machine],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        addresses = [f"127.0.0.1:{p}" for p in ports]
        return asyncio.run(mooseng_load(addresses, seconds))
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()


# -- PySyncObj -------------------------------------------------------------------------

def pysyncobj_node(index: int, ports: list[int], seconds: float, result_path: str) -> None:
    """One PySyncObj node; the one that becomes leader runs the load and reports."""
    from pysyncobj import SyncObj, replicated

    class Counter(SyncObj):
        def __init__(self, me, others):
            super().__init__(me, others)
            self.value = 0

        @replicated
        def incr(self):
            self.value += 1
            return self.value

    addresses = [f"127.0.0.1:{p}" for p in ports]
    node = Counter(addresses[index], addresses[:index] + addresses[index + 1:])
    while not os.path.exists(result_path):
        if node._isLeader() and node.isReady():
            report = pysyncobj_load(node, seconds)
            tmp = result_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(report, f)
            os.rename(tmp, result_path)
            break
        time.sleep(0.05)
    time.sleep(0.5)
    node.destroy()


def pysyncobj_load(node, seconds: float) -> dict:
    for _ in range(50):
        node.incr(sync=True, timeout=10)
    latencies = []
    for _ in range(SEQUENTIAL):
        start = time.perf_counter()
        node.incr(sync=True, timeout=10)
        latencies.append(time.perf_counter() - start)
    rates = {}
    for inflight in (64, 1000):
        slots = threading.Semaphore(inflight)
        done = [0]

        def finished(result, error, done=done, slots=slots):
            done[0] += 1
            slots.release()
        start = time.perf_counter()
        stop = start + seconds
        while time.perf_counter() < stop:
            if slots.acquire(timeout=0.1):
                node.incr(callback=finished)
        for _ in range(inflight):  # let the last ones land
            slots.acquire(timeout=5)
        rates[inflight] = done[0] / (time.perf_counter() - start)
    return {"commits_per_s": round(rates[1000]), "commits_per_s_64": round(rates[64]),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 3)}


def run_pysyncobj(work: str, seconds: float) -> dict:
    ports = free_ports(3)
    result = os.path.join(work, "pysyncobj.json")
    procs = [subprocess.Popen([sys.executable, HERE, "--pysyncobj-node", str(i),
                               "--ports", ",".join(map(str, ports)), "--seconds",
                               str(seconds), "--result", result])
             for i in range(3)]
    try:
        deadline = time.time() + 120 + 4 * seconds
        while not os.path.exists(result):
            if time.time() > deadline:
                raise SystemExit("PySyncObj did not finish: see its output above")
            time.sleep(0.1)
        with open(result) as f:
            return json.load(f)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput phase")
    parser.add_argument("--dir", help="where the nodes keep data (default: a temp dir)")
    parser.add_argument("--skip-pysyncobj", action="store_true")
    parser.add_argument("--pysyncobj-node", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pysyncobj_node is not None:
        pysyncobj_node(args.pysyncobj_node, [int(p) for p in args.ports.split(",")],
                       args.seconds, args.result)
        return
    work = tempfile.mkdtemp(prefix="mooseng-bench-raft-", dir=args.dir)
    try:
        report = {"mooseng": run_mooseng(work, args.seconds, "counter")}
        if not args.skip_pysyncobj:
            report["pysyncobj"] = run_pysyncobj(work, args.seconds)
            report["throughput_ratio"] = round(
                report["mooseng"]["commits_per_s"] / report["pysyncobj"]["commits_per_s"], 2)
        report["mooseng_namespace"] = run_mooseng(work, args.seconds, "namespace")
        # Every sequential commit waits for a follower's fsync: this is its floor.
        report["disk_fdatasync_p50_ms"] = fsync_latency_ms(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
