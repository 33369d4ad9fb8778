"""The client API: one multiplexed stream per client, on every metadata node.

Mutations are validated, stamped (time, caller, session, sequence numbers) and
proposed on the leader; the reply is the fold's result. Reads are linearizable by
default (the leader confirms its leadership once per batch of reads, then answers
from its projection); a follower read is answered by any node once it has applied
the index the client last saw.
"""

import asyncio
import errno
import logging
import stat
import time

from opentelemetry import trace

from schemas import metadata_pb2 as mpb
from schemas import metadata_pb2_grpc
from schemas import namespace_pb2 as pb
from services.common import metrics, tracing
from services.common.posix import permissions as perm
from services.common.posix.errors import FsError
from services.common.posix.names import check_name, check_xattr_name
from services.common.posix.records import INLINE_MAX
from services.common.streams import pipelined
from services.metadata import region_open
from services.metadata.chunks.manager import ChunkManager, ContentsUnknownError
from services.metadata.invalidations import Subscriber, Subscribers, named_inodes
from services.metadata.namespace import reads, region_fold
from services.metadata.raft.core import LEADER
from services.metadata.raft.node import NotLeaderError, ProposalLostError, RaftNode
from services.metadata.recalls import Recalls
from services.metadata.sessions import SessionKeeper
from services.metadata.telemetry import MetadataTelemetry

log = logging.getLogger(__name__)

KNOWN_TYPES = frozenset({0, stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR,
                         stat.S_IFBLK, stat.S_IFDIR})  # S_IFDIR: the fold says EPERM
READS = frozenset({"lookup", "getattr", "readdir", "readlink", "getxattr", "listxattr",
                   "statfs", "access", "locate_chunk", "get_class", "chunk_health",
                   "locate_chunk_id", "read_open"})
# Answered from the leader's soft state about chunkservers: never by a follower.
LEADER_ONLY = frozenset({"locate_chunk", "chunk_health", "locate_chunk_id", "read_open"})
MAX_READDIR = 10_000
O_ACCMODE, O_TRUNC = 0o3, 0o1000
Status = mpb.Reply.Status


def reply_error(request: mpb.Request, status: int, message: str, leader: str = "",
                code: int = 0) -> mpb.Reply:
    return mpb.Reply(id=request.id, status=status, message=message, leader_address=leader,
                     errno=code)


def precheck(command: pb.Command) -> FsError | None:
    """Cheap checks the fold would also make: refuse before using a log entry."""
    kind = command.WhichOneof("op")
    op = getattr(command, kind)
    name = getattr(op, "new_name", None) if kind == "link" else getattr(op, "name", None)
    try:
        if kind in ("setxattr", "removexattr"):
            check_xattr_name(op.name)
        elif name is not None and kind not in ("open_session",):
            check_name(name)
        if kind == "rename":
            check_name(op.new_name)
        if kind == "mknod" and stat.S_IFMT(op.mode) not in KNOWN_TYPES:
            raise FsError(errno.EINVAL, f"mknod: unknown file type {stat.S_IFMT(op.mode):o}")
        if kind == "write_inline" and any(p.offset + len(p.data) > INLINE_MAX
                                          for p in op.pieces if p.data):
            raise FsError(errno.EFBIG, f"a write past {INLINE_MAX} bytes is not kept "
                                       "inline: write it through chunks")
    except FsError as exc:
        return exc
    return None


class MetadataServicer(metadata_pb2_grpc.MetadataServicer):
    def __init__(self, node: RaftNode, sessions: SessionKeeper,
                 chunks: ChunkManager | None = None, region_follower: bool = False):
        self.node, self.sessions = node, sessions
        self.region_follower = region_follower
        self.chunks = chunks or ChunkManager(node)
        self.subscribers = Subscribers()
        self.recalls = Recalls(node, self.subscribers)
        self._held: set[asyncio.Task] = set()   # requests waiting for a recall
        self.telemetry = MetadataTelemetry(node)

    async def Session(self, request_iterator, context):
        stream = Subscriber()

        def subscribe(notify) -> None:
            stream.notify = notify
        self.subscribers.add(stream)
        try:
            async for batch in pipelined(
                    request_iterator, lambda b: stream.observe(b.requests), self._handle,
                    lambda replies, notices: mpb.ReplyBatch(replies=replies,
                                                            invalidations=notices),
                    subscribe):
                yield batch
        finally:
            self.subscribers.discard(stream)

    async def _handle(self, requests, put) -> None:
        waiters: dict[int, object] = {}   # request id -> its proposal, for stage spans
        raw_put = put
        if tracing.enabled():
            put = self._traced(requests, put, waiters)
        if metrics.serving():
            put = self._measured(requests, put)
        linearizable, follower = [], []
        for request in requests:
            kind = request.WhichOneof("op")
            if request.session:
                self.sessions.touch(request.session)
            if kind is not None and (held := self.recalls.conflicts(request)):
                self._after_recall(request, held, raw_put)
            elif kind is None:
                put(reply_error(request, Status.BAD_REQUEST,
                                "the request has no operation this server knows"))
            elif kind == "mutation" and self._unrecorded(request):
                linearizable.append(request)   # a reading open in a following region
            elif kind == "mutation":
                waiter = self._mutate(request, put)
                if waiter is not None and not waiter.finished:
                    waiters[request.id] = waiter
            elif kind == "heartbeat":
                put(self._heartbeat_reply(request))
            elif request.follower_read and kind not in LEADER_ONLY:
                follower.append(request)
            else:
                linearizable.append(request)
        if linearizable:
            await self._read(linearizable, put, follower=False)
        if follower:
            await self._read(follower, put, follower=True)

    def _heartbeat_reply(self, request: mpb.Request) -> mpb.Reply:
        """Only the leader keeps sessions alive (sessions.py). A node that stopped
        leading while a quiet client's stream stayed on it sends the client to the
        leader: answered here, the client would go on thinking all is well while the
        leader, never hearing from it, expires its session."""
        if request.session and self.node.core.role != LEADER:
            refusal = self.node.not_leader()
            return reply_error(request, Status.NOT_LEADER, str(refusal),
                               refusal.leader_address)
        return mpb.Reply(id=request.id, index=self.node.machine.applied_index)

    def _after_recall(self, request: mpb.Request, directories: list[int], put) -> None:
        """A request touching directories delegated to another session runs once they
        are given back (recalls.py). A follower cannot recall: the client asks the
        leader instead."""
        if request.follower_read and self.node.core.role != LEADER:
            put(reply_error(request, Status.UNAVAILABLE, "a delegated directory: ask the "
                                                         "leader"))
            return

        async def run() -> None:
            await self.recalls.recall(directories)
            await self._handle([request], put)
        task = asyncio.create_task(run())
        self._held.add(task)
        task.add_done_callback(self._held.discard)

    def _measured(self, requests, put):
        started = time.perf_counter()
        kinds = {r.id: _kind(r) for r in requests}

        def measured_put(reply: mpb.Reply) -> None:
            self.telemetry.record(kinds.pop(reply.id, "unknown"), reply, started)
            put(reply)
        return measured_put

    def _traced(self, requests, put, waiters: dict):
        """A server span per request, a child of the client's; ends with the reply."""
        spans = {}
        for request in requests:
            kind = _kind(request)
            spans[request.id] = tracing.tracer().start_span(
                f"Metadata/{kind}", context=tracing.extract(request.traceparent),
                kind=trace.SpanKind.SERVER)

        def traced_put(reply: mpb.Reply) -> None:
            span = spans.pop(reply.id, None)
            if span is not None:
                waiter = waiters.pop(reply.id, None)
                if waiter is not None:
                    stage_spans(span, waiter.times)
                span.set_attribute("mooseng.status", mpb.Reply.Status.Name(reply.status))
                span.set_attribute("mooseng.errno", reply.errno)
                span.end()
            put(reply)
        return traced_put

    # -- mutations ------------------------------------------------------------------------
    def _unrecorded(self, request: mpb.Request) -> bool:
        """A reading open (or a release) while this region follows region A's log:
        answered like a read, with no record (see services/metadata/region_open.py)."""
        return (region_open.unrecorded(request.mutation)
                and region_fold.refuses_clients(self.node.machine.projection,
                                                self.region_follower))

    def _mutate(self, request: mpb.Request, put):
        """Validate, stamp and propose the request's command; once applied, reply (with
        what the chunk layer adds) and tell other sessions. The proposal's waiter, or
        None when the request was refused."""
        refusal = self._refusal(request)
        if refusal is not None:
            put(refusal)
            return None
        command = request.mutation
        stamped = self._stamp(request)
        named = named_inodes(self.node.machine.projection, command) \
            if self.subscribers.anyone_but(request.session) else ()
        delegations_changed = self.recalls.proposing(command, request.session)

        def done(outcome) -> None:
            if delegations_changed is not None:
                delegations_changed()
            reply = self._mutation_reply(request, outcome)
            if reply.status == Status.OK and not reply.errno:
                self.subscribers.publish(request.session, stamped, reply.result, named)
                reply = self._applied(request, reply)
            put(reply)
        return self.node.submit([stamped.SerializeToString()], done)

    def _refusal(self, request: mpb.Request) -> mpb.Reply | None:
        """The answer to a mutation that must not be proposed, or None."""
        command = request.mutation
        kind = command.WhichOneof("op")
        if kind is None:
            return reply_error(request, Status.BAD_REQUEST, "the mutation has no operation")
        if region_fold.refuses_clients(self.node.machine.projection, self.region_follower):
            message = f"{kind}: {region_fold.FOLLOWING_MESSAGE}"
            return mpb.Reply(id=request.id, errno=errno.EROFS, message=message,
                             result=pb.Result(errno=errno.EROFS, message=message))
        if not request.HasField("caller"):
            return reply_error(request, Status.BAD_REQUEST, "a mutation needs the caller's "
                                                            "uid, gid and groups")
        if kind != "open_session" and not request.session:
            return reply_error(request, Status.BAD_REQUEST, "mutations need a session: "
                                                            "open one first")
        if (self.node.core.role == LEADER and self.node.disk.low()
                and not request.resent):      # a resent one may have applied: the fold
            # answers it; a follower sends the client to the leader, which may have room
            message = f"{kind}: {self.node.disk.describe(self.node.id)}"
            return mpb.Reply(id=request.id, errno=errno.ENOSPC, message=message,
                             result=pb.Result(errno=errno.ENOSPC, message=message))
        if (problem := precheck(command)) is not None:
            return mpb.Reply(id=request.id, errno=problem.errno, message=problem.message,
                             result=pb.Result(errno=problem.errno, message=problem.message))
        return None

    def _stamp(self, request: mpb.Request) -> pb.Command:
        """The command as the log keeps it: the leader's time, who asked, and the
        session's request numbers (exactly-once); a storage class change also
        carries the cluster's default class."""
        command = request.mutation
        kind = command.WhichOneof("op")
        opening = kind == "open_session"
        stamped = pb.Command(time_ns=time.time_ns(), caller=request.caller,
                             session=0 if opening else request.session,
                             seq=0 if opening else request.seq,
                             acked_seq=request.acked_seq)
        getattr(stamped, kind).CopyFrom(getattr(command, kind))
        if kind == "set_class":
            stamped.set_class.default_class = str(self.chunks.default_class)
        return stamped

    def _applied(self, request: mpb.Request, reply: mpb.Reply) -> mpb.Reply:
        """What the chunk layer does after a command applied, and adds to its reply."""
        command = request.mutation
        kind = command.WhichOneof("op")
        if kind == "begin_write" and command.begin_write.chunk_id:
            self.chunks.client_began(reply.result.chunk, command.begin_write.targets)
        elif kind == "begin_write":
            reply = self._add_write_targets(request, reply)
        elif kind == "reserve_chunks":
            reply.targets.extend(mpb.ChunkLocation(address=address)
                                 for address in self.chunks.placement())
        elif kind in ("delegate", "mkdir"):   # where new files' chunks go
            reply.storage_class = str(self.chunks.class_of(reply.result.attr.inode))
        elif kind == "set_class":
            self.chunks.class_changed(command.set_class.inode)
        return reply

    def _mutation_reply(self, request: mpb.Request, outcome) -> mpb.Reply:
        if isinstance(outcome, NotLeaderError):
            return reply_error(request, Status.NOT_LEADER, str(outcome),
                               outcome.leader_address)
        if isinstance(outcome, ProposalLostError):
            return reply_error(request, Status.UNAVAILABLE, str(outcome))
        if isinstance(outcome, Exception):
            return reply_error(request, Status.UNKNOWN, str(outcome))
        index, [result] = outcome
        return mpb.Reply(id=request.id, errno=result.errno, message=result.message,
                         result=result, index=index)

    def _add_write_targets(self, request: mpb.Request, reply: mpb.Reply) -> mpb.Reply:
        """Where to write: the chunk's copies, or fresh servers for a new chunk. A leader
        that has not yet heard from the chunkservers cannot tell: it asks the client to
        retry (the retry, with the same request numbers, gets the same chunk version)."""
        if not self.chunks.settled():
            return reply_error(request, Status.UNAVAILABLE, "this leader is still learning "
                               "where chunks are from the chunkservers; retry")
        chunk, ino = reply.result.chunk, reply.result.attr.inode
        if (held := reads.inline(self.node.machine.projection, ino)) is not None:
            reply.inline, reply.data = True, held   # to copy into chunk 0 first
        sclass = self.chunks.class_of(ino)
        # the shape to fill from parts with
        reply.storage_class = str(self.chunks.parts_class_of(ino, sclass) or sclass)
        reply.locations.extend(self.chunks.contents(chunk.id, chunk.version))
        try:
            reply.targets.extend(self.chunks.write_targets(chunk.id, chunk.version, sclass))
        except ContentsUnknownError as exc:
            return self._contents_unknown(request, exc)
        if not reply.targets:
            reply.errno = errno.ENOSPC
            reply.message = ("no chunkserver with room for another chunk is connected: "
                             "start one, or free space")
        return reply

    def _contents_unknown(self, request: mpb.Request, exc: ContentsUnknownError) -> mpb.Reply:
        """The chunk's servers may still be reconnecting to this leader (the client
        retries, and its write waits), or be gone: once they have had the time a lost
        server gets, the write fails with EIO rather than wait for ever."""
        if exc.leading_s < self.chunks.options.lost_after_s:
            return reply_error(request, Status.UNAVAILABLE, f"{exc}; retry")
        reply = mpb.Reply(id=request.id, errno=errno.EIO,
                          message=f"{exc}: its data is unreachable until one comes back")
        log.warning("write to chunk %d refused: %s", exc.chunk, reply.message)
        return reply

    # -- reads ------------------------------------------------------------------------------
    async def _read(self, requests, put, follower: bool) -> None:
        try:
            if follower:
                applied = await self.node.wait_applied(max(r.min_index for r in requests))
            else:
                applied = await self.node.read_barrier()
        except NotLeaderError as exc:
            for request in requests:
                put(reply_error(request, Status.NOT_LEADER, str(exc), exc.leader_address))
            return
        except TimeoutError:
            for request in requests:
                put(reply_error(request, Status.UNAVAILABLE, "no quorum confirmed this "
                                                             "leader in time; retry"))
            return
        view = self.node.machine.projection
        for request in requests:
            reply = mpb.Reply(id=request.id, index=applied)
            try:
                if request.HasField("mutation"):
                    reply.result.CopyFrom(region_open.answer(view, request.caller,
                                                             request.mutation))
                else:
                    answer(view, request, reply)
                    self._answer_chunks(request, reply)
            except FsError as exc:
                reply.errno, reply.message = exc.errno, exc.message
            put(reply)


    def _answer_chunks(self, request: mpb.Request, reply: mpb.Reply) -> None:
        """The parts of a read that come from the chunk manager, not the projection."""
        kind = request.WhichOneof("op")
        if kind in ("locate_chunk", "read_open") and not reply.inline:
            reply.storage_class = str(self.chunks.reading_class(getattr(request, kind).inode))
            if reply.HasField("chunk"):
                reply.locations.extend(self.chunks.locations(reply.chunk.id,
                                                             reply.chunk.version))
                if not reply.locations and self.chunks.never_written(reply.chunk.id):
                    reply.ClearField("chunk")    # zeros: read as a hole
        elif kind == "get_class":
            reply.storage_class = str(self.chunks.class_of(request.get_class.inode))
        elif kind == "chunk_health":
            reply.health.CopyFrom(self.chunks.health())
        elif kind == "locate_chunk_id":
            # By id: the file may be gone (a restore reads a deleted tree's chunks
            # while they are retained). Before the chunkservers have reported, "no
            # copy" would be a lie: the client retries.
            if not self.chunks.settled():
                reply.status = Status.UNAVAILABLE
                reply.message = "this leader is still learning where chunks are; retry"
                return
            op = request.locate_chunk_id
            owner = reads.chunk_owner(self.node.machine.projection, op.chunk_id)
            reply.storage_class = str(self.chunks.reading_class(owner[0]) if owner
                                      else self.chunks.default_class)
            # Reported copies only: the servers its last writer was sent to, which
            # locate_chunk also names, may have deleted an orphan since.
            reply.locations.extend(
                mpb.ChunkLocation(address=h.address, part=h.part, version=h.version,
                                  length=h.length)
                for h in sorted(self.chunks.holders(op.chunk_id), key=lambda h: h.part)
                if h.version == op.version and not h.damaged and h.alive)


def _kind(request: mpb.Request) -> str:
    kind = request.WhichOneof("op") or "unknown"
    if kind == "mutation":
        kind = request.mutation.WhichOneof("op") or "unknown"
    return kind


def stage_spans(parent, times: list[int]) -> None:
    """The proposal's life as child spans: waiting to be proposed, replication until
    commit, and the fold's apply (times: submitted, proposed, committed, applied)."""
    if not all(times):
        return
    ctx = trace.set_span_in_context(parent)
    for name, start, end in (("raft.propose", times[0], times[1]),
                             ("raft.commit", times[1], times[2]),
                             ("namespace.apply", times[2], times[3])):
        tracing.tracer().start_span(name, context=ctx, start_time=start).end(end_time=end)


def answer(view, request: mpb.Request, reply: mpb.Reply) -> None:
    """Fill `reply` for one read; FsError for a POSIX error."""
    kind = request.WhichOneof("op")
    op = getattr(request, kind)
    caller = request.caller
    if kind == "lookup":
        reply.attr.CopyFrom(reads.lookup(view, caller, op.parent, op.name))
    elif kind == "getattr":
        reply.attr.CopyFrom(reads.getattr(view, op.inode))
    elif kind == "readdir":
        limit = min(op.limit or 1000, MAX_READDIR)
        for e in reads.readdir(view, caller, op.inode, op.cookie, limit, op.names_only):
            reply.entries.add(name=e.name, attr=e.attr, cookie=e.cookie)
    elif kind == "readlink":
        reply.data = reads.readlink(view, op.inode)
    elif kind == "getxattr":
        reply.data = reads.getxattr(view, caller, op.inode, op.name)
    elif kind == "listxattr":
        reply.names.extend(reads.listxattr(view, caller, op.inode))
    elif kind == "statfs":
        fs = reads.statfs(view)
        reply.statfs.CopyFrom(mpb.FsStat(inodes=fs.inodes,
                                         used_bytes=min(fs.used_bytes, (1 << 64) - 1),
                                         name_max=fs.name_max))
    elif kind == "access":
        node = reads.inode(view, op.inode)
        if op.mask & 7 and not perm.allowed(caller, node, op.mask & 7):
            raise FsError(errno.EACCES, f"access {op.mask:o} denied on inode {op.inode}")
    elif kind == "get_class":
        reads.inode(view, op.inode)
    elif kind == "region_status":
        state = region_fold.read_state(view)
        p = state.position
        reply.region.CopyFrom(mpb.RegionInfo(
            following=state.following, promoted=state.promoted, shipped_index=p.index,
            shipped_term=p.term, shipped_time_ns=p.time_ns, source_commit=p.source_commit,
            promoted_time_ns=state.promoted_time_ns))
    elif kind == "locate_chunk":
        found = reads.chunk(view, op.inode, op.chunk_index)
        if reads.inline(view, op.inode) is not None:
            reply.inline = True     # its bytes are inline (not sent: no read permission
            # is checked here); a write to chunk 0 copies them first
        elif found is not None:
            reply.chunk.CopyFrom(found)
    elif kind == "read_open":
        read_open(view, caller, op, reply)


def read_open(view, caller, op: mpb.ReadOpen, reply: mpb.Reply) -> None:
    """An open for reading, checked as the fold checks an open, with what a first
    read needs: the inline bytes, or where chunk 0 is (the locations are added from
    the chunk manager)."""
    if op.flags & (O_ACCMODE | O_TRUNC):
        raise FsError(errno.EINVAL, "read_open is for opens that only read (no write "
                                    "access, no O_TRUNC): open the file with a command")
    node = reads.inode(view, op.inode)
    perm.require(caller, node, perm.R, "open")
    node.fill_attr(reply.attr)
    if not stat.S_ISREG(node.mode):
        return
    held = reads.inline(view, node.ino)
    if held is not None:
        reply.inline, reply.data = True, held
    elif (found := reads.chunk(view, node.ino, 0)) is not None:
        reply.chunk.CopyFrom(found)
