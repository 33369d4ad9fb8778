"""The chunkservers a mount talks to: one connection per data address, shared by
every read and write, with a deadline on every request and a memory of which
servers failed lately so that reads try the healthy copies first."""

import asyncio
import time

from services.chunk import protocol as p
from services.chunk.data_client import ChunkClient, ChunkRequestError

FAILURE_MEMORY_S = 30.0   # a server that failed this recently is tried last
SERVER_FAULTS = (p.IO_ERROR,)   # statuses that say the server, not the chunk, is ill


class ChunkServers:
    def __init__(self, timeout_s: float = 30.0):
        self.timeout_s = timeout_s
        self._clients: dict[str, ChunkClient] = {}
        self._failed_at: dict[str, float] = {}

    def client(self, address: str) -> ChunkClient:
        found = self._clients.get(address)
        if found is None:
            found = self._clients[address] = ChunkClient(address)
        return found

    async def call(self, address: str, op: str, *args, timeout_s: float | None = None,
                   **kwargs):
        """`op` of ChunkClient on `address`, within `timeout_s` (default: the client's
        request deadline). ChunkRequestError when the server refuses; OSError
        (ConnectionError, TimeoutError) when it is dead or silent."""
        request = getattr(self.client(address), op)(*args, **kwargs)
        try:
            result = await asyncio.wait_for(request, timeout_s or self.timeout_s)
        except ChunkRequestError as exc:
            if exc.status in SERVER_FAULTS:
                self._failed_at[address] = time.monotonic()
            raise
        except OSError:
            self._failed_at[address] = time.monotonic()
            raise
        self._failed_at.pop(address, None)
        return result

    def ranked(self, addresses: list[str], turn: int = 0) -> list[str]:
        """`addresses`, those without a recent failure first (in the given order, but
        starting at the `turn`-th of them, so that successive requests can share
        the work among equal copies), then the failed ones, longest ago first."""
        horizon = time.monotonic() - FAILURE_MEMORY_S
        healthy = [a for a in addresses if self._failed_at.get(a, 0.0) < horizon]
        ill = sorted((a for a in addresses if a not in healthy), key=self._failed_at.get)
        if healthy:
            turn %= len(healthy)
            healthy = healthy[turn:] + healthy[:turn]
        return healthy + ill

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
