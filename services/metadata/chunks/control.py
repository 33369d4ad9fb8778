"""The leader's end of the chunkserver control streams (ChunkMaster.Connect).

A chunkserver's first message says who it is and what it holds. While the stream
is open the server reports changes, space, damage and finished jobs, and receives
jobs. A node that is not the leader answers with the leader's address and ends
the stream; so does a leader that stops leading.

A server that says nothing for SILENT_S is taken as gone and its stream ended (it
sends at least every --heartbeat-s, at most services.chunk.control.MAX_HEARTBEAT_S).
Hung, or cut off by a partition that leaves the connection open, it would otherwise
be offered to writers, who would wait on it, until TCP keepalive noticed half a
minute later. It reconnects with a full report when it can.
"""

import asyncio
import logging

import grpc

from schemas import chunkmaster_pb2 as cpb
from schemas import chunkmaster_pb2_grpc
from services.metadata.chunks.manager import ChunkManager

log = logging.getLogger(__name__)
CHECK_LEADER_S = 0.5
SILENT_S = 10.0       # more than three of the slowest heartbeats (MAX_HEARTBEAT_S)


class ChunkMasterServicer(chunkmaster_pb2_grpc.ChunkMasterServicer):
    def __init__(self, manager: ChunkManager):
        self.manager = manager

    def _redirect(self) -> cpb.MasterMessage:
        status = self.manager.node.status()
        return cpb.MasterMessage(leader_address=status["leader_address"],
                                 error="this metadata node is not the leader")

    async def Connect(self, request_iterator, context):
        manager = self.manager
        if not manager.leading():
            yield self._redirect()
            return
        try:
            first = await anext(request_iterator)
        except (StopAsyncIteration, grpc.RpcError):
            return
        problem = _check_hello(first)
        if problem:
            yield cpb.MasterMessage(error=problem)
            return
        outbox: asyncio.Queue[cpb.Job | None] = asyncio.Queue()
        server = manager.registry.connect(first.hello.server_id, first.hello.data_address,
                                          outbox.put_nowait)
        manager.registry.report(server, first)
        log.info("chunkserver %s at %s connected, holding %d copies", server.server_id,
                 server.address, len(first.holding))
        reader = asyncio.create_task(self._read(server, request_iterator, outbox))
        try:
            while True:
                jobs = await self._next_jobs(outbox)
                if jobs is None:
                    return
                if not manager.leading():
                    yield self._redirect()
                    return
                if jobs:
                    yield cpb.MasterMessage(jobs=jobs)
        finally:
            reader.cancel()
            manager.server_gone(server)
            log.info("chunkserver %s at %s disconnected", server.server_id, server.address)

    async def _next_jobs(self, outbox: asyncio.Queue) -> list[cpb.Job] | None:
        """Jobs waiting to go out (maybe none, to recheck leadership); None: close."""
        try:
            first = await asyncio.wait_for(outbox.get(), CHECK_LEADER_S)
        except TimeoutError:
            return []
        jobs = [first]
        while not outbox.empty():
            jobs.append(outbox.get_nowait())
        if None in jobs:
            return None
        return jobs

    async def _read(self, server, request_iterator, outbox: asyncio.Queue) -> None:
        try:
            while True:
                message = await asyncio.wait_for(anext(request_iterator), SILENT_S)
                self.manager.registry.report(server, message)
                for done in message.done:
                    self.manager.job_done(server, done)
        except (StopAsyncIteration, grpc.RpcError):
            pass
        except TimeoutError:
            log.warning("chunkserver %s at %s said nothing for %g s: taken as gone",
                        server.server_id, server.address, SILENT_S)
        except Exception:
            log.exception("chunkserver %s sent a report that could not be used",
                          server.address)
        outbox.put_nowait(None)


def _check_hello(message: cpb.ServerMessage) -> str:
    hello = message.hello
    if not message.HasField("hello") or not hello.server_id or not hello.data_address:
        return ("the first message on a control stream must say who the chunkserver is "
                "(hello with server_id and data_address) and carry its full report")
    if not message.full_report:
        return "the first message on a control stream must be a full report"
    return ""
