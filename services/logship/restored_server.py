"""A restored projection served read-only, as if it were a metadata cluster.

`mooseng mount --restored DIR` starts one in the mount process, on 127.0.0.1, and
mounts it like any cluster. Reads are answered from the projection by the same code
the metadata nodes use (services/metadata/api.answer); every change is EROFS. A
restored projection knows each chunk's id and version but not where its copies are
(that is the live leader's soft state), so locate_chunk asks the live cluster by
chunk id: a deleted file's chunks are still there for the retention window.
"""

import asyncio
import errno
import itertools
import logging
import os

import grpc

from schemas import metadata_pb2 as mpb
from schemas import metadata_pb2_grpc, raft_pb2, raft_pb2_grpc
from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError
from services.metadata.api import answer
from services.metadata.namespace import reads
from services.metadata.projection import Projection, open_projection

log = logging.getLogger(__name__)
ROOT = pb.Caller(uid=0, gid=0)
O_ACCMODE = 0o3
# What a read-only session still needs: opening it, opening files to read, closing.
HARMLESS = frozenset({"open_session", "close_session", "release", "open"})


class RestoredError(Exception):
    """The directory holds no restored projection; the message says what to give."""


def projection_dir(path: str) -> str:
    """The projection in `path`: a restored node directory (`mooseng restore --to`)
    or a projection itself (`mooseng log replay --to`). Never creates one."""
    for candidate in (os.path.join(path, "projection"), path):
        if os.path.isfile(os.path.join(candidate, "CURRENT")):
            return candidate
    raise RestoredError(f"{path} holds no restored projection: give the directory "
                        "`mooseng restore --from ARCHIVE ... --to DIR` made")


class RestoredServicer(metadata_pb2_grpc.MetadataServicer):
    def __init__(self, projection: Projection, live):
        self.view, self.live = projection, live
        self.sessions = itertools.count(1)

    async def Session(self, request_iterator, context):
        async for batch in request_iterator:
            replies = await asyncio.gather(*(self._reply(r) for r in batch.requests))
            yield mpb.ReplyBatch(replies=replies)

    async def _reply(self, request: mpb.Request) -> mpb.Reply:
        reply = mpb.Reply(id=request.id, index=self.view.applied_index)
        kind = request.WhichOneof("op")
        try:
            if kind == "mutation":
                self._mutation(request, reply)
            elif kind in ("heartbeat", "chunk_health"):
                pass
            elif kind is None or kind == "locate_chunk_id":
                reply.status = mpb.Reply.BAD_REQUEST
                reply.message = f"a restored view does not answer {kind or 'this request'}"
            else:
                answer(self.view, request, reply)
                await self._locate(request, reply)
        except FsError as exc:
            reply.errno, reply.message = exc.errno, exc.message
        return reply

    def _mutation(self, request: mpb.Request, reply: mpb.Reply) -> None:
        command = request.mutation
        kind = command.WhichOneof("op")
        if kind == "open" and command.open.flags & O_ACCMODE:
            kind = "open for writing"
        if kind not in HARMLESS:
            raise FsError(errno.EROFS, f"{kind}: this is a restored view of index "
                                       f"{self.view.applied_index}, read-only")
        if kind == "open_session":
            reply.result.session = next(self.sessions)
        elif kind == "open":
            reply.result.attr.CopyFrom(reads.getattr(self.view, command.open.inode))

    async def _locate(self, request: mpb.Request, reply: mpb.Reply) -> None:
        """Chunk copies by id from the live cluster; the class as it was."""
        kind = request.WhichOneof("op")
        if kind not in ("locate_chunk", "get_class"):
            return
        ino = getattr(request, kind).inode
        reply.storage_class = reads.storage_class(self.view, ino)
        if kind == "locate_chunk" and reply.HasField("chunk"):
            live = await self.live.read(ROOT, locate_chunk_id=mpb.LocateChunkId(
                chunk_id=reply.chunk.id, version=reply.chunk.version))
            reply.locations.extend(live.locations)
            reply.storage_class = reply.storage_class or live.storage_class
            if not live.locations:
                log.warning("chunk %d (inode %d) has no copy at version %d on the live "
                            "cluster: deleted after the retention window?",
                            reply.chunk.id, ino, reply.chunk.version)


class _LeaderStatus(raft_pb2_grpc.RaftServicer):
    """Clients find the leader by asking Raft.Status: this view is its own leader."""

    def __init__(self, address: str):
        self.address = address

    async def Status(self, request, context):
        return raft_pb2.NodeStatus(id=1, address=self.address, role="leader", term=1,
                                   leader=1, leader_address=self.address)


class RestoredServer:
    """The projection in `path` served on 127.0.0.1 (an ephemeral port) until stop()."""

    def __init__(self, path: str, live):
        self.path, self.live = projection_dir(path), live
        self.projection: Projection | None = None
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def start(self) -> str:
        self.projection = open_projection(self.path)
        self.server = grpc.aio.server()
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        metadata_pb2_grpc.add_MetadataServicer_to_server(
            RestoredServicer(self.projection, self.live), self.server)
        raft_pb2_grpc.add_RaftServicer_to_server(_LeaderStatus(self.address), self.server)
        await self.server.start()
        log.info("serving the restored projection %s (index %d) read-only on %s",
                 self.path, self.projection.applied_index, self.address)
        return self.address

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=1)
        if self.projection is not None:
            self.projection.close()
