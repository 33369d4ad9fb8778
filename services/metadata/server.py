"""A metadata node as a process: the Raft node, its transport, and the gRPC server.

`mooseng metadata --id N --data DIR --listen HOST:PORT --peers ID=HOST:PORT,...`
On SIGTERM a leader first hands leadership to its most up-to-date follower, so a
rolling restart costs no election timeout.
"""

import asyncio
import logging
import signal

import grpc

from schemas import chunkmaster_pb2_grpc, logship_pb2_grpc, metadata_pb2_grpc, raft_pb2_grpc
from schemas import raft_pb2 as pb
from services.common.streams import pipelined
from services.metadata.api import MetadataServicer
from services.metadata.chunks.control import ChunkMasterServicer
from services.metadata.chunks.manager import ChunkManager, ManagerOptions
from services.metadata.follow_service import FollowServicer
from services.metadata.raft import codec
from services.metadata.raft.node import NodeOptions, NotLeaderError, ProposalLostError, RaftNode
from services.metadata.raft.transport import SERVER_OPTIONS, Transport
from services.metadata.sessions import SessionKeeper

log = logging.getLogger(__name__)


def _reply(ident: int, outcome) -> pb.ProposalReply:
    if isinstance(outcome, NotLeaderError):
        return pb.ProposalReply(id=ident, error=str(outcome),
                                leader_address=outcome.leader_address)
    if isinstance(outcome, ProposalLostError):
        return pb.ProposalReply(id=ident, error=str(outcome))
    if isinstance(outcome, Exception):
        return pb.ProposalReply(id=ident, error=str(outcome), outcome_unknown=True)
    first, results = outcome
    return pb.ProposalReply(id=ident, first_index=first,
                            results=[r.SerializeToString() if r is not None else b""
                                     for r in results])


class RaftServicer(raft_pb2_grpc.RaftServicer):
    def __init__(self, node: RaftNode, transport: Transport):
        self.node, self.transport = node, transport

    async def Stream(self, request_iterator, context):
        await self.transport.receive(request_iterator)
        return pb.StreamClosed()

    async def OfferSnapshot(self, request, context):
        try:
            return self.transport.accept_offer(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def SendSnapshot(self, request_iterator, context):
        return await self.transport.receive_snapshot(request_iterator)

    async def Status(self, request, context):
        s = self.node.status()
        return pb.NodeStatus(id=s["id"], address=s["address"], role=s["role"], term=s["term"],
                             leader=s["leader"], leader_address=s["leader_address"],
                             commit_index=s["commit_index"], applied_index=s["applied_index"],
                             last_index=s["last_index"], snapshot_index=s["snapshot_index"],
                             log_bytes=s["log_bytes"])

    async def Propose(self, request_iterator, context):
        """Pipelined: replies go back in batches as proposals apply, matched by id."""
        def submit(proposals, put) -> None:
            for proposal in proposals:
                self.node.submit(list(proposal.commands),
                                 lambda outcome, ident=proposal.id: put(_reply(ident, outcome)))

        async for batch in pipelined(request_iterator, lambda b: b.proposals, submit,
                                     lambda replies: pb.ProposalReplyBatch(replies=replies)):
            yield batch

    async def ChangeMembership(self, request, context):
        fut = asyncio.get_running_loop().create_future()

        def done(outcome) -> None:
            if not fut.done():
                fut.set_result(outcome)
        self.node.change_membership(request.action, request.id, request.address, done)
        outcome = await fut
        if isinstance(outcome, NotLeaderError):
            return pb.MembershipReply(error=str(outcome), leader_address=outcome.leader_address)
        if isinstance(outcome, Exception):
            return pb.MembershipReply(error=str(outcome) or type(outcome).__name__)
        index, config = outcome
        return pb.MembershipReply(ok=True, index=index, config=codec.config_to_pb(config))

    async def TransferLeadership(self, request, context):
        ok = self.node.transfer_leadership(request.to)
        return pb.TransferReply(ok=ok, error="" if ok else "not the leader, or no such peer")


class MetadataServer:
    """One metadata node: Raft node, transport, sessions and the gRPC server."""

    def __init__(self, node_id: int, listen: str, peers: dict[int, str], data_dir: str,
                 options: NodeOptions | None = None, session_timeout_s: float = 30.0,
                 chunk_options: ManagerOptions | None = None, region_follower: bool = False):
        self.options = options or NodeOptions()
        self.listen = listen
        self.node = RaftNode(node_id, peers, data_dir, self.options, own_address=listen)
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        self.transport = Transport(self.node)
        self.sessions = SessionKeeper(self.node, session_timeout_s)
        raft_pb2_grpc.add_RaftServicer_to_server(RaftServicer(self.node, self.transport),
                                                 self.server)
        logship_pb2_grpc.add_LogShipServicer_to_server(FollowServicer(self.node), self.server)
        self.chunks: ChunkManager | None = None
        if self.options.state_machine == "namespace":
            self.chunks = ChunkManager(self.node, chunk_options)
            metadata_pb2_grpc.add_MetadataServicer_to_server(
                MetadataServicer(self.node, self.sessions, self.chunks, region_follower),
                self.server)
            chunkmaster_pb2_grpc.add_ChunkMasterServicer_to_server(
                ChunkMasterServicer(self.chunks), self.server)

    async def start(self) -> None:
        if self.server.add_insecure_port(self.listen) == 0:
            raise SystemExit(f"cannot listen on {self.listen}: address in use or invalid")
        await self.server.start()
        await self.node.start()
        self.sessions.start()
        if self.chunks is not None:
            self.chunks.start()
        log.info("metadata node %d serving on %s (data in %s)", self.node.id, self.listen,
                 self.node.data_dir)

    async def stop(self) -> None:
        """Hand leadership over if we hold it, then stop everything."""
        await _hand_over(self.node, self.options)
        await self.sessions.stop()
        if self.chunks is not None:
            await self.chunks.stop()
        await self.server.stop(grace=0.5)
        await self.transport.close()
        await self.node.stop()
        log.info("metadata node %d stopped", self.node.id)


async def serve(node_id: int, listen: str, peers: dict[int, str], data_dir: str,
                options: NodeOptions | None = None, session_timeout_s: float = 30.0,
                chunk_options: ManagerOptions | None = None,
                region_follower: bool = False) -> None:
    """Run a metadata node until SIGTERM or SIGINT. A node not in `peers` joins the
    running cluster they form (once a member adds it)."""
    server = MetadataServer(node_id, listen, peers, data_dir, options, session_timeout_s,
                            chunk_options, region_follower)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    failed = asyncio.create_task(server.node.failed.wait())
    await asyncio.wait([asyncio.create_task(stop.wait()), failed],
                       return_when=asyncio.FIRST_COMPLETED)
    await server.stop()
    if failed.done():
        raise SystemExit(f"metadata node {node_id} stopped after an internal error (see "
                         "the log above); restart it, and if it fails again, move its data "
                         "directory aside so it catches up from the leader")


async def _hand_over(node: RaftNode, options: NodeOptions) -> None:
    """A leader that is asked to stop transfers leadership first, briefly waiting."""
    if not node.transfer_leadership():
        return
    deadline = options.raft.election_ticks * options.tick_s * 2
    waited = 0.0
    while node.core.role == "leader" and waited < deadline:
        await asyncio.sleep(0.01)
        waited += 0.01
