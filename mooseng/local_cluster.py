"""`mooseng up` / `mooseng down`: a whole cluster on this machine, in one directory.

DIR/cluster.json   the ports chosen at the first `up` (kept, so the next `up` finds
                   the same cluster); DIR/meta1..3, DIR/cs1..3 the data; DIR/metalogger
                   the metalogger's archive of the log; DIR/logs/ the logs;
                   DIR/run/*.pid the processes. `down` stops everything and
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
METALOGGER = "metalogger"   # its process name, and its archive's directory in DIR
METALOGGER_NICE = 10


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

    def spawn(self, name: str, args: list[str], nice: int = 0) -> None:
        """Start `mooseng ARGS` as `name` in the background; `nice`: at a lower priority
        (what may fall behind during a burst and catch up after)."""
        if self.pid(name):
            return
        os.makedirs(self.path("logs"), exist_ok=True)
        os.makedirs(self.path("run"), exist_ok=True)
        with open(self.path("logs", f"{name}.log"), "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "mooseng", *args], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True,
                                    preexec_fn=(lambda: os.nice(nice)) if nice else None)
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
            # Lease reads: the nodes share this machine's clock, the one thing a lease
            # assumes, and a lookup then costs no heartbeat round.
            self.spawn(f"meta{i}", ["metadata", "--id", i, "--data", self.path(f"meta{i}"),
                                    "--listen", address, "--peers", peers, "--lease-reads"])
        for name, address in layout.chunkservers.items():
            os.makedirs(self.path(name), exist_ok=True)
            self.spawn(name, ["chunkserver", "--data", self.path(name), "--masters",
                              layout.masters, "--listen", address])
        # The archive may lag during a burst: on one machine it must not take the CPU
        # the nodes serving the mount need (its effects builder runs lower still).
        self.spawn(METALOGGER, ["metalogger", "--masters", layout.masters, "--data",
                                self.path(METALOGGER)], nice=METALOGGER_NICE)
        asyncio.run(self._wait_ready(layout, timeout))
        self._mount(layout)
        return layout

    async def _wait_ready(self, layout: Layout, timeout: float) -> None:
        """A leader, then every chunkserver registered with it, and the leader ready to
        send writers to them (it first gives the chunkservers a few seconds to report),
        so the first write after `up` does not pause. One event loop: gRPC does not like
        a new loop per question."""
        deadline = time.monotonic() + timeout
        while not await _has_leader(layout):
            self._check_deadline(deadline, timeout, "a metadata leader", "meta1")
            await asyncio.sleep(0.2)
        from fuse_client.metadata_client import MetadataClient
        async with MetadataClient(list(layout.metadata.values()), name="mooseng up",
                                  deadline_s=timeout) as client:
            while not await _writable(client, len(layout.chunkservers)):
                self._check_deadline(deadline, timeout, "the chunkservers to register",
                                     "cs1")
                await asyncio.sleep(0.2)

    def _check_deadline(self, deadline: float, timeout: float, what: str,
                        log_name: str) -> None:
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}; see "
                               f"{self.path('logs', log_name + '.log')}")

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
        # The metalogger goes last: it archives what the nodes commit until they stop.
        for name in [*layout.chunkservers, *(f"meta{i}" for i in layout.metadata),
                     METALOGGER]:
            self.stop(name)

    def describe(self, layout: Layout) -> str:
        rows = [f"mooseng cluster in {self.dir}", f"  mount        {layout.mount}"]
        rows += [f"  metadata {i}   {a}  (pid {self.pid(f'meta{i}')})"
                 for i, a in layout.metadata.items()]
        rows += [f"  {n:<12} {a}  (pid {self.pid(n)})" for n, a in layout.chunkservers.items()]
        rows += [f"  {METALOGGER:<12} archive in {self.path(METALOGGER)}  "
                 f"(pid {self.pid(METALOGGER)})"]
        rows += [f"  logs         {self.path('logs')}",
                 f"stop it with:  mooseng down --dir {self.dir}"]
        return "\n".join(rows)


async def _has_leader(layout: Layout) -> bool:
    nodes = await gather(list(layout.metadata.values()), timeout=1.0)
    return any(n["role"] == "leader" for n in nodes)


async def _writable(client, chunkservers: int) -> bool:
    from mooseng.classes import health
    state = await health(client)
    return state.writable and sum(s.connected for s in state.servers) >= chunkservers


def is_mounted(mountpoint: str) -> bool:
    target = os.path.abspath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def clear_dead_mount(mountpoint: str) -> None:
    """A mount whose process died ("transport endpoint is not connected") is lazily
    unmounted so the mount point can be used again."""
    try:
        os.stat(mountpoint)
        os.statvfs(mountpoint)   # never answered from the kernel's cache, unlike stat
    except OSError as exc:
        if exc.errno == 107:   # ENOTCONN
            subprocess.run(["fusermount3", "-uz", mountpoint], capture_output=True)
