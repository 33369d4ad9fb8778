"""The leader's soft state about chunkservers: who is connected, what each holds.

Nothing here is in the log. A new leader starts empty and learns it from the full
report each chunkserver sends when its control stream (re)connects; until every
server has had time to report, the chunk manager does not act on it.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from schemas import chunkmaster_pb2 as cpb


@dataclass
class Copy:
    """A copy (part 0) or erasure-coded part (p + 1) of a chunk on one server."""
    server: str
    part: int
    version: int
    length: int
    damaged: str = ""   # why it is damaged, "" if it is not known to be


@dataclass
class Server:
    server_id: str
    address: str
    send: Callable[[cpb.Job | None], None]   # None closes the stream
    connected: bool = True
    lost_at: float = 0.0
    free_bytes: int = 0
    used_bytes: int = 0
    chunks: int = 0
    held: set = field(default_factory=set)   # {(chunk, part)}


class Registry:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.servers: dict[str, Server] = {}
        self.copies: dict[int, dict[tuple[str, int], Copy]] = {}
        self.dirty: set[int] = set()       # chunks whose copies changed: check them first
        self.writes: dict[int, float] = {}  # chunk -> when a write last began
        # chunk -> (version, server ids) a writer was told to bring to that version;
        # offered to readers before the servers' reports catch up
        self.expected: dict[int, tuple[int, list[str]]] = {}
        self.started = clock()

    # -- chunkservers ---------------------------------------------------------------------
    def connect(self, server_id: str, address: str,
                send: Callable[[cpb.Job | None], None]) -> Server:
        """A server's stream opened. A stream still open for the same server id (a
        restart faster than the old stream noticed) is closed: the new one wins."""
        old = self.servers.get(server_id)
        if old is not None:
            if old.connected:
                old.send(None)
            self._forget_copies(old)
        server = self.servers[server_id] = Server(server_id, address, send)
        return server

    def disconnect(self, server: Server) -> None:
        """The stream ended. Its copies stay known (but are not offered to clients)
        until `forget_lost` decides the server is gone for good."""
        if self.servers.get(server.server_id) is server:
            server.connected = False
            server.lost_at = self.clock()
            self.dirty.update(chunk for chunk, _ in server.held)

    def forget_lost(self, after_s: float) -> list[Server]:
        """Servers disconnected for longer than `after_s`: their copies count no more."""
        now, gone = self.clock(), []
        for server in list(self.servers.values()):
            if not server.connected and server.held and now - server.lost_at >= after_s:
                self._forget_copies(server)
                gone.append(server)
        return gone

    def reset(self) -> None:
        """Leadership is lost: close every stream and forget everything."""
        for server in self.servers.values():
            if server.connected:
                server.send(None)
        self.__init__(self.clock)

    # -- reports ---------------------------------------------------------------------------
    def report(self, server: Server, message: cpb.ServerMessage) -> None:
        if message.full_report:
            self._forget_copies(server)
        for held in message.holding:
            self._add(server, held)
        for held in message.dropped:
            self._drop(server, held.chunk, held.part)
        for damage in message.damaged:
            self._damage(server, damage)
        if message.HasField("space"):
            space = message.space
            server.free_bytes, server.used_bytes = space.free_bytes, space.used_bytes
            server.chunks = space.chunks

    def _damage(self, server: Server, damage: cpb.Damage) -> None:
        detail = damage.detail or "reported damaged"
        copy = self.copies.get(damage.chunk, {}).get((server.server_id, damage.part))
        if copy is not None and copy.version == damage.version:
            copy.damaged = detail
        elif copy is None and damage.version == 0:
            # A file whose header cannot be read: its version is unknown. Known as a
            # damaged copy, it is deleted like one once the chunk is at its goal.
            self._add(server, cpb.Held(chunk=damage.chunk, part=damage.part))
            self.copies[damage.chunk][(server.server_id, damage.part)].damaged = detail
        else:
            return
        self.dirty.add(damage.chunk)

    def _add(self, server: Server, held: cpb.Held) -> None:
        key = (server.server_id, held.part)
        self.copies.setdefault(held.chunk, {})[key] = Copy(server.server_id, held.part,
                                                           held.version, held.length)
        server.held.add((held.chunk, held.part))
        self.dirty.add(held.chunk)

    def _drop(self, server: Server, chunk: int, part: int) -> None:
        copies = self.copies.get(chunk)
        if copies is not None and copies.pop((server.server_id, part), None) is not None:
            if not copies:
                del self.copies[chunk]
            self.dirty.add(chunk)
        server.held.discard((chunk, part))

    def _forget_copies(self, server: Server) -> None:
        for chunk, part in list(server.held):
            self._drop(server, chunk, part)

    # -- questions -------------------------------------------------------------------------
    def of(self, chunk: int) -> Iterable[Copy]:
        return self.copies.get(chunk, {}).values()

    def alive(self, copy: Copy) -> bool:
        server = self.servers.get(copy.server)
        return server is not None and server.connected

    def address(self, server_id: str) -> str:
        return self.servers[server_id].address

    def connected(self) -> list[Server]:
        return [s for s in self.servers.values() if s.connected]

    def write_began(self, chunk: int, version: int, servers: list[str]) -> None:
        self.writes[chunk] = self.clock()
        self.expected[chunk] = (version, servers)
        self.dirty.add(chunk)

    def quiet(self, chunk: int, quiet_s: float) -> bool:
        """No write began on the chunk within `quiet_s`: safe to repair or convert."""
        began = self.writes.get(chunk)
        if began is None:
            return True
        if self.clock() - began >= quiet_s:
            del self.writes[chunk]
            self.expected.pop(chunk, None)
            return True
        return False
