"""Real metadata nodes as processes on loopback, for integration tests.

Every process is stopped when the test ends, passed or failed."""

import asyncio
import os
import signal
import subprocess
import sys
import time

from mooseng.ports import free_ports
from mooseng.status import gather

TICK_MS = 20   # elections in 200-400 ms: tests stay quick


class MetadataCluster:
    def __init__(self, root, n: int = 3, snapshot_every: int = 100_000,
                 session_timeout: float = 30.0, metrics: bool = False,
                 extra_args: tuple[str, ...] = ()):
        self.session_timeout = session_timeout
        self.extra_args = extra_args
        self.metrics = {i: f"127.0.0.1:{free_ports(1)[0]}" for i in range(1, n + 1)} \
            if metrics else {}
        self.root = root
        self.ports = dict(zip(range(1, n + 1), free_ports(n), strict=True))
        self.addresses = {i: f"127.0.0.1:{p}" for i, p in self.ports.items()}
        self.peers = ",".join(f"{i}={a}" for i, a in self.addresses.items())
        self.snapshot_every = snapshot_every
        self.procs: dict[int, subprocess.Popen] = {}

    def data(self, i: int) -> str:
        return os.path.join(self.root, f"node{i}")

    def start(self, i: int, join: bool = False) -> None:
        """Start node i; with `join`, a new node (given an address here) that a member
        will add to the running cluster."""
        if i not in self.addresses:
            self.addresses[i] = f"127.0.0.1:{free_ports(1)[0]}"
        log = open(os.path.join(self.root, f"node{i}.log"), "ab")  # noqa: SIM115
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "mooseng", "metadata", "--id", str(i), "--data",
             self.data(i), "--listen", self.addresses[i], "--peers", self.peers_of(i),
             "--tick-ms", str(TICK_MS), "--snapshot-every", str(self.snapshot_every),
             "--session-timeout", str(self.session_timeout), *(["--join"] if join else []),
             *(["--metrics-listen", self.metrics[i]] if i in self.metrics else []),
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def peers_of(self, i: int) -> str:
        """The --peers node i is started with: how it reaches the others."""
        return self.peers

    def members(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mooseng", "members", "--masters",
             ",".join(self.addresses.values()), *args],
            capture_output=True, text=True, timeout=60)

    def start_all(self) -> None:
        for i in self.addresses:
            self.start(i)

    def signal(self, i: int, sig: int) -> int:
        proc = self.procs.pop(i)
        proc.send_signal(sig)
        return proc.wait(timeout=30)

    def stop_all(self) -> None:
        for i in list(self.procs):
            proc = self.procs.pop(i)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)

    def status(self) -> list[dict]:
        return asyncio.run(gather(list(self.addresses.values()), timeout=1.0))

    def wait(self, predicate, timeout: float = 30.0, what: str = "the cluster"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = self.status()
            if predicate(nodes):
                return nodes
            time.sleep(0.05)
        raise AssertionError(f"{what} did not happen in {timeout} s: {self.status()}")

    def wait_leader(self, timeout: float = 30.0) -> dict:
        nodes = self.wait(lambda ns: any(n["role"] == "leader" for n in ns), timeout,
                          "a leader election")
        return next(n for n in nodes if n["role"] == "leader")

    def wait_converged(self, timeout: float = 30.0) -> list[dict]:
        """Every node up and applied up to the leader's commit."""
        def converged(ns):
            leaders = [n for n in ns if n["role"] == "leader"]
            return (leaders and all(n["role"] != "unreachable" for n in ns)
                    and all(n["applied_index"] == leaders[0]["commit_index"] for n in ns))
        return self.wait(converged, timeout, "convergence")

    def log_of(self, i: int) -> str:
        with open(os.path.join(self.root, f"node{i}.log"), errors="replace") as f:
            return f.read()
