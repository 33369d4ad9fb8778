"""`mooseng up` / `mooseng down`: a whole cluster on this machine, in one directory.

DIR/cluster.json   the ports chosen at the first `up` (kept, so the next `up` finds
                   the same cluster); DIR/meta1..3, DIR/cs1..3 the data; DIR/logs/ the
                   logs; DIR/run/*.pid the processes. `down` stops everything and
                   unmounts but keeps the data, so `up` again brings back the same files,
                   also after every process was killed (a reboot).
"""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from mooseng.ports import free_ports
from mooseng.status import gather

METADATA_NODES, CHUNKSERVERS = 3, 3


class ClusterError(Exception):
    pass


@dataclass
class Layout:
    metadata: dict[str, str]       # node id -> HOST:PORT
    chunkservers: dict[str, str]   # name -> HOST:PORT of its data port
    mount: str

    @property
    def masters(self) -> str:
        return ",".join(self.metadata.values())


class LocalCluster:
    def __init__(self, directory: str):
        self.dir = os.path.abspath(directory)
        self.config = os.path.join(self.dir, "cluster.json")

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    # -- layout ------------------------------------------------------------------------------
    def layout(self, mount: str | None = None) -> Layout:
        """The cluster's layout: as saved, or chosen now (free ports) and saved."""
        if os.path.exists(self.config):
            with open(self.config) as f:
                layout = Layout(**json.load(f))
            if mount and os.path.abspath(mount) != layout.mount:
                layout.mount = os.path.abspath(mount)
                self._save(layout)
            return layout
        ports = free_ports(METADATA_NODES + CHUNKSERVERS)
        layout = Layout(
            metadata={str(i + 1): f"127.0.0.1:{p}" for i, p in enumerate(ports[:3])},
            chunkservers={f"cs{i + 1}": f"127.0.0.1:{p}" for i, p in enumerate(ports[3:])},
            mount=os.path.abspath(mount or "mnt"))
        os.makedirs(self.dir, exist_ok=True)
        self._save(layout)
        return layout

    def _save(self, layout: Layout) -> None:
        with open(self.config + ".tmp", "w") as f:
            json.dump(asdict(layout), f, indent=2)
        os.replace(self.config + ".tmp", self.config)

    # -- processes ---------------------------------------------------------------------------
    def pid(self, name: str) -> int | None:
        """The pid of a running process of ours called `name`, else None."""
        try:
            with open(self.path("run", f"{name}.pid")) as f:
                pid = int(f.read())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"mooseng" not in f.read():
                    return None   # the pid was reused (after a reboot)
        except (OSError, ValueError):
            return None
        return pid

    def spawn(self, name: str, args: list[str]) -> None:
        if self.pid(name):
            return
        os.makedirs(self.path("logs"), exist_ok=True)
        os.makedirs(self.path("run"), exist_ok=True)
        with open(self.path("logs", f"{name}.log"), "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "mooseng", *args], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        with open(self.path("run", f"{name}.pid"), "w") as f:
            f.write(str(proc.pid))

    def stop(self, name: str, timeout: float = 20.0) -> None:
        pid = self.pid(name)
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.pid(name) and time.monotonic() < deadline:
                time.sleep(0.05)   # (a zombie's cmdline is empty: it counts as gone)
            if self.pid(name):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path("run", f"{name}.pid"))

    # -- up and down -------------------------------------------------------------------------
    def up(self, mount: str | None, timeout: float = 60.0) -> Layout:
        layout = self.layout(mount)
        peers = ",".join(f"{i}={a}" for i, a in layout.metadata.items())
        for i, address in layout.metadata.items():
            self.spawn(f"meta{i}", ["metadata", "--id", i, "--data", self.path(f"meta{i}"),
                                    "--listen", address, "--peers", peers])
        self._wait(lambda: _has_leader(layout), timeout, "a metadata leader", "meta1")
        for name, address in layout.chunkservers.items():
            self.spawn(name, ["chunkserver", "--data", self.path(name), "--masters",
                              layout.masters, "--listen", address])
        self._wait(lambda: _connected(layout) >= len(layout.chunkservers), timeout,
                   "the chunkservers to register", "cs1")
        self._mount(layout)
        return layout

    def _mount(self, layout: Layout) -> None:
        clear_dead_mount(layout.mount)
        if is_mounted(layout.mount):
            return
        os.makedirs(layout.mount, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "mooseng", "mount", "--masters", layout.masters,
             "--log", self.path("logs", "mount.log"), layout.mount],
            capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise ClusterError(f"mounting {layout.mount} failed: {done.stderr.strip()} "
                               f"(see {self.path('logs', 'mount.log')})")

    def down(self) -> None:
        if not os.path.exists(self.config):
            raise ClusterError(f"{self.dir} holds no cluster (no cluster.json): nothing to "
                               "stop")
        layout = self.layout()
        if is_mounted(layout.mount):
            subprocess.run([sys.executable, "-m", "mooseng", "umount", layout.mount],
                           capture_output=True, timeout=60)
        clear_dead_mount(layout.mount)
        for name in [*layout.chunkservers, *(f"meta{i}" for i in layout.metadata)]:
            self.stop(name)

    def _wait(self, ready, timeout: float, what: str, log_name: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.2)
        raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}; see "
                           f"{self.path('logs', log_name + '.log')}")

    def describe(self, layout: Layout) -> str:
        rows = [f"mooseng cluster in {self.dir}", f"  mount        {layout.mount}"]
        rows += [f"  metadata {i}   {a}  (pid {self.pid(f'meta{i}')})"
                 for i, a in layout.metadata.items()]
        rows += [f"  {n:<12} {a}  (pid {self.pid(n)})" for n, a in layout.chunkservers.items()]
        rows += [f"  logs         {self.path('logs')}",
                 f"stop it with:  mooseng down --dir {self.dir}"]
        return "\n".join(rows)


def _has_leader(layout: Layout) -> bool:
    nodes = asyncio.run(gather(list(layout.metadata.values()), timeout=1.0))
    return any(n["role"] == "leader" for n in nodes)


def _connected(layout: Layout) -> int:
    from fuse_client.metadata_client import MetadataClient
    from mooseng.classes import health

    async def count() -> int:
        async with MetadataClient(list(layout.metadata.values()), name="mooseng up",
                                  deadline_s=5.0) as client:
            return sum(s.connected for s in (await health(client)).servers)
    try:
        return asyncio.run(count())
    except Exception:   # not ready yet: ask again
        return 0


def is_mounted(mountpoint: str) -> bool:
    target = os.path.abspath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def clear_dead_mount(mountpoint: str) -> None:
    """A mount whose process died ("transport endpoint is not connected") is lazily
    unmounted so the mount point can be used again."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        if exc.errno == 107:   # ENOTCONN
            subprocess.run(["fusermount3", "-uz", mountpoint], capture_output=True)
