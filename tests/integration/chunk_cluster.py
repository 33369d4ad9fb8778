"""Real chunkservers as processes on loopback, for integration tests.

Every process is stopped when the test ends (call stop_all in a finally or fixture)."""

import os
import signal
import subprocess
import sys

from mooseng.ports import free_ports


class ChunkCluster:
    def __init__(self, root, masters: list[str], n: int = 4, heartbeat_s: float = 0.2,
                 scrub_interval_s: float = 0.5):
        self.root, self.masters, self.n = str(root), masters, n
        self.heartbeat_s, self.scrub_interval_s = heartbeat_s, scrub_interval_s
        self.addresses = [f"127.0.0.1:{p}" for p in free_ports(n)]
        self.procs: dict[int, subprocess.Popen] = {}

    def address(self, i: int) -> str:
        """Server i's data address (what the master and clients know it by)."""
        return self.addresses[i]

    def data_dir(self, i: int) -> str:
        return os.path.join(self.root, f"cs{i}")

    def log_path(self, i: int) -> str:
        return os.path.join(self.root, f"cs{i}.log")

    def start(self, i: int) -> None:
        os.makedirs(self.data_dir(i), exist_ok=True)
        log = open(self.log_path(i), "ab")  # noqa: SIM115
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "mooseng", "chunkserver", "--data", self.data_dir(i),
             "--masters", ",".join(self.masters), "--listen", self.addresses[i],
             "--heartbeat-s", str(self.heartbeat_s),
             "--scrub-interval-s", str(self.scrub_interval_s)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start_all(self) -> None:
        for i in range(self.n):
            self.start(i)

    def kill(self, i: int) -> int:
        """SIGKILL: a crash."""
        return self._signal(i, signal.SIGKILL)

    def stop(self, i: int) -> int:
        """SIGTERM: a clean stop; returns the exit code."""
        return self._signal(i, signal.SIGTERM)

    def _signal(self, i: int, sig: int) -> int:
        proc = self.procs.pop(i)
        if proc.poll() is None:
            proc.send_signal(sig)
        return proc.wait(timeout=30)

    def running(self, i: int) -> bool:
        return i in self.procs and self.procs[i].poll() is None

    def stop_all(self) -> None:
        for i in list(self.procs):
            proc = self.procs.pop(i)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)

    def log_of(self, i: int) -> str:
        with open(self.log_path(i), errors="replace") as f:
            return f.read()
