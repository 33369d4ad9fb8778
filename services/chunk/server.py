"""The chunkserver process: the chunk store on its data disks, the data port, the control
stream to the metadata leader and the scrubber, until SIGTERM or SIGINT."""

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from dataclasses import dataclass

from services.chunk.control import ControlLink
from services.chunk.data_server import DataServer
from services.chunk.errors import ChunkError, chunk_name
from services.chunk.jobs import INCOMPLETE, JobRunner
from services.chunk.scrubber import Scrubber
from services.chunk.store import ChunkStore

log = logging.getLogger(__name__)

SERVER_ID_FILE = "server_id"
UNREACHABLE_HOSTS = ("0.0.0.0", "::", "")


@dataclass
class Options:
    directories: list[str]
    masters: list[str]
    listen: str
    heartbeat_s: float = 1.0
    scrub_mibps: float = 64.0
    scrub_interval_s: float = 3600.0


class ChunkServerError(Exception):
    """A chunkserver that cannot start as configured; the message says what to fix."""


def server_id(directory: str) -> str:
    """This server's id, made once and kept in `directory`: the master knows a server by
    it across restarts and address changes."""
    path = os.path.join(directory, SERVER_ID_FILE)
    try:
        with open(path) as f:
            ident = f.read().strip()
    except FileNotFoundError:
        ident = uuid.uuid4().hex
        with open(path + ".tmp", "w") as f:
            f.write(ident + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
        return ident
    if not ident:
        raise ChunkServerError(f"{path} is empty: restore it from a backup, or remove it to "
                               "register this server as a new one (its chunks stay usable)")
    return ident


def drop_incomplete(store: ChunkStore) -> None:
    """Delete copies a job left half made (version 0) when the process last stopped."""
    for info in list(store.list()):
        if info.version == INCOMPLETE:
            log.warning("deleting chunk file %s: a copy left half made by an interrupted "
                        "job", chunk_name(info.chunk_id))
            with contextlib.suppress(ChunkError):
                store.delete(info.chunk_id, INCOMPLETE, sync=True)


class ChunkServer:
    def __init__(self, options: Options):
        self.options = options
        host, _, _ = options.listen.rpartition(":")
        if host in UNREACHABLE_HOSTS:
            raise ChunkServerError(
                f"--listen {options.listen}: the master tells clients this address, so "
                "name one they can reach (this host's IP or name), not a wildcard")
        self.store = ChunkStore(options.directories)
        self.data = DataServer(self.store)
        self.link: ControlLink | None = None
        self.scrubber: Scrubber | None = None

    async def run(self, stop: asyncio.Event) -> None:
        o = self.options
        drop_incomplete(self.store)
        ident = server_id(o.directories[0])
        host, _, port = o.listen.rpartition(":")
        port = await self.data.start(host.strip("[]"), int(port))
        address = f"{host}:{port}"
        runner = JobRunner(self.store, address)
        self.link = link = ControlLink(o.masters, ident, address, self.store, runner,
                                       o.heartbeat_s)
        runner.on_change = self.data.on_change = link.changed
        self.data.on_damage = link.damaged
        self.scrubber = Scrubber(self.store, link.damaged, o.scrub_mibps, o.scrub_interval_s)
        log.info("server id %s; chunk data on %s (%d chunks in %s); masters %s",
                 ident, address, len(self.store), ", ".join(o.directories),
                 ", ".join(o.masters))
        tasks = [asyncio.create_task(link.run()), asyncio.create_task(self.scrubber.run())]
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopping}:
                task.result()    # a loop that ended by itself: a bug, raise it
        finally:
            for task in (stopping, *tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.data.stop()
            self.store.close()
            log.info("chunkserver stopped")


async def serve(options: Options, metrics: bool = False) -> None:
    """Run a chunkserver until SIGTERM or SIGINT."""
    server = ChunkServer(options)
    if metrics:
        publish_metrics(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.run(stop)


def publish_metrics(server: ChunkServer) -> None:
    """Gauges for Prometheus (served by services.common.metrics.serve_metrics)."""
    from opentelemetry.metrics import CallbackOptions, Observation

    from services.common.metrics import meter
    m = meter()

    def gauge(name: str, description: str, read) -> None:
        def observe(_: CallbackOptions):
            return [Observation(read())]
        m.create_observable_gauge(name, callbacks=[observe], description=description)

    link = lambda: server.link  # noqa: E731  (made once the data port is bound)
    gauge("mooseng_chunkserver_chunks", "copies and parts held", lambda: len(server.store))
    gauge("mooseng_chunkserver_free_bytes", "free bytes for chunks",
          lambda: link().space.free_bytes if link() else 0)
    gauge("mooseng_chunkserver_connected", "1 while the control stream to a master is open",
          lambda: int(bool(link() and link().connected_to)))
    gauge("mooseng_chunkserver_scrub_passes", "full scrub passes since start",
          lambda: server.scrubber.passes if server.scrubber else 0)
    gauge("mooseng_chunkserver_damaged_chunks", "chunks the scrubber found damaged",
          lambda: len(server.scrubber.known) if server.scrubber else 0)
