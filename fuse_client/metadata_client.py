"""A client session with the metadata cluster.

One multiplexed stream to the leader carries every request; concurrent requests
travel in batches. Each mutation carries (session, seq). When the leader changes
(the stream breaks, or a node says it is not the leader, or an outcome is
unknown) every unanswered request is sent again to the new leader with the same
numbers, and the fold returns the first outcome: no double create, no lost rename.
Applications see a pause, not an error.

A session the cluster closed (the client was silent past the session timeout:
stopped, suspended, cut off) is replaced by a new one at the first request that
hears of it: that request, which the closed session could not have applied, goes
again in the new session, and `on_renewed` lets the mount open its files again. A
request whose outcome was already unknown (sent again after a reconnect) cannot be
retried safely: it fails with EIO.
"""

import asyncio
import errno
import itertools
import logging
import time

import grpc
from opentelemetry import trace

from schemas import metadata_pb2 as mpb
from schemas import metadata_pb2_grpc
from schemas import namespace_pb2 as pb
from services.common import tracing
from services.common.discovery import find_leader
from services.common.posix.errors import FsError
from services.common.region_lag import describe as describe_region

log = logging.getLogger(__name__)
GRPC_OPTIONS = [("grpc.max_send_message_length", 16 << 20),
                ("grpc.max_receive_message_length", 64 << 20)]
RETRY = (mpb.Reply.NOT_LEADER, mpb.Reply.UNAVAILABLE, mpb.Reply.UNKNOWN)
UNAVAILABLE_RETRY_S = 0.1
# A node that stops answering (stopped, hung, cut off from this client alone) is left
# for the leader the others elect: while something is awaited and nothing arrives for
# PROBE_S the client sends a heartbeat (any leader answers one at once, however slow
# its commits), and after SILENT_S of silence it looks for the leader again. SILENT_S
# is twice the longest stall a busy node's loop has shown (a snapshot at 100,000
# entries: about 1 s), and short enough that writes come back within 3 s of a
# leader's loss (docs/nemesis.md).
PROBE_S, SILENT_S, WATCH_S = 0.5, 2.0, 0.1
DEFER_S = 0.01  # how long a command nobody waits for may wait for company: long
# enough to gather a streak of creates, short enough that other mounts see them soon


class ClusterUnavailableError(Exception):
    """No leader answered within the client's deadline."""


class _Call:
    __slots__ = ("request", "future", "deadline", "resent", "refused")

    def __init__(self, request: mpb.Request, future: asyncio.Future, deadline: float):
        self.request, self.future, self.deadline = request, future, deadline
        self.resent = False     # sent again: an earlier copy may have been applied
        self.refused = False    # the last copy was turned away unproposed (NOT_LEADER)


class _ReadStream:
    """A second stream, to one chosen node, for follower reads. Any failure sends
    the read back to the leader's stream."""

    def __init__(self, address: str):
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)
        self.queue: asyncio.Queue[mpb.Request] = asyncio.Queue()
        self.calls: dict[int, asyncio.Future] = {}
        self.answered = 0
        self.stream = metadata_pb2_grpc.MetadataStub(self.channel).Session(
            MetadataClient._batches(self.queue))
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for batch in self.stream:
                for reply in batch.replies:
                    fut = self.calls.pop(reply.id, None)
                    if fut and not fut.done():
                        fut.set_result(reply)
        except grpc.aio.AioRpcError:
            pass
        for fut in self.calls.values():
            if not fut.done():
                fut.set_result(None)
        self.calls.clear()

    async def call(self, request: mpb.Request) -> mpb.Reply | None:
        """The reply, or None if this node could not answer."""
        if self.reader.done():
            return None
        fut = asyncio.get_running_loop().create_future()
        self.calls[request.id] = fut
        self.queue.put_nowait(request)
        reply = await fut
        if reply is None or reply.status != mpb.Reply.OK:
            return None
        self.answered += 1
        return reply

    async def close(self) -> None:
        self.stream.cancel()
        self.reader.cancel()
        await self.channel.close()


class MetadataClient:
    def __init__(self, masters: list[str], name: str = "", heartbeat_s: float = 5.0,
                 deadline_s: float = 60.0, read_from: str = ""):
        """`read_from`: a node (HOST:PORT) that serves this client's follower reads;
        without it they go to the leader like every other request."""
        self.masters, self.name = masters, name
        self.read_from = read_from
        self._reads: _ReadStream | None = None
        self.heartbeat_s, self.deadline_s = heartbeat_s, deadline_s
        self.session = 0
        self.leader = ""
        self.last_index = 0           # the newest applied index an answer reflected
        self._ids = itertools.count(1)
        self._seq = 0
        self._calls: dict[int, _Call] = {}
        self._outgoing: asyncio.Queue[mpb.Request] = asyncio.Queue()
        self._deferred: list[mpb.Request] = []
        self._deferred_flush: asyncio.TimerHandle | None = None
        self._stream = None
        self._channel = None
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        self.read_only = False        # no session: a second region, or asked for
        # Called with lists of mpb.Invalidation: other clients' changes (see
        # services/metadata/invalidations.py). Set it before open() to receive them.
        self.on_invalidate = None
        # Called once a new stream has replaced a broken one and subscribes again:
        # the invalidations pushed in between are lost.
        self.on_reset = None
        # Delegated directories (fuse_client/delegations.py): `before(kind, op,
        # mutation)` is called before each request is sent and returns what it must
        # wait for; `on_recall(dir)` when the leader wants a directory back.
        self.before = None
        self.on_recall = None
        # async (old session, new session): the cluster closed the session and this
        # client opened a new one (the mount opens its files again in it)
        self.on_renewed = None
        self._renewal: asyncio.Task | None = None
        self.last_heard = 0.0         # monotonic time of the leader's last message
        self._connected_at = 0.0      # of the current stream
        self._probed_at = 0.0         # the last heartbeat sent (its answer is awaited)
        self._abandoned = False       # the current stream was given up for silence

    # -- life cycle -------------------------------------------------------------------------
    async def open(self, session: bool = True) -> "MetadataClient":
        """Connect and open a session. Without `session` (or when the cluster is a
        second region that follows another's log and refuses writes) the client
        only reads: mutations are answered with EROFS."""
        self._tasks = [asyncio.create_task(self._keep_connected(), name="md-connect"),
                       asyncio.create_task(self._heartbeats(), name="md-heartbeat"),
                       asyncio.create_task(self._expire(), name="md-deadlines"),
                       asyncio.create_task(self._watch(), name="md-silence")]
        if not session:
            self.read_only = True
            return self
        try:
            self.session = await self._new_session()
        except FsError as exc:
            if exc.errno != errno.EROFS:
                raise
            await self._open_read_only()
        return self

    async def _new_session(self) -> int:
        return (await self.mutate(pb.Caller(),
                                  open_session=pb.OpenSession(client=self.name))).session

    async def _open_read_only(self) -> None:
        """A following region: read without a session, and say how far behind it is."""
        self.read_only = True
        reply = await self.read(pb.Caller(), region_status=mpb.RegionStatus())
        log.warning("%s is read-only, %s", ",".join(self.masters),
                    describe_region(reply.region))

    async def region_lag(self) -> str:
        """How far this cluster (a second region) is behind region A, for humans."""
        reply = await self.read(pb.Caller(), region_status=mpb.RegionStatus())
        return describe_region(reply.region)

    async def close(self) -> None:
        if self.session and not self._closed:
            try:
                await self.mutate(pb.Caller(),
                                  close_session=pb.CloseSession(session=self.session))
            except (FsError, ClusterUnavailableError) as exc:
                log.info("closing session %d: %s", self.session, exc)
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self._reads is not None:
            await self._reads.close()
        await self._drop_stream()

    async def __aenter__(self) -> "MetadataClient":
        return await self.open()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- requests ---------------------------------------------------------------------------
    async def mutate(self, caller: pb.Caller, **op) -> pb.Result:
        """Apply one namespace command (exactly once); FsError for a POSIX error."""
        return (await self.mutate_reply(caller, **op)).result

    async def mutate_reply(self, caller: pb.Caller, **op) -> mpb.Reply:
        """Like `mutate`, but the whole reply: begin_write's also says where to write."""
        if self.before is not None:
            await _wait(self.before(*_only(op), True))
        self._seq += 1
        request = mpb.Request(session=self.session, seq=self._seq, caller=caller,
                              mutation=pb.Command(**op))
        reply = await self._call(request)
        if reply.errno == errno.ENOTCONN and self._renewable(request):
            await self._renew(request.session)
            return await self.mutate_reply(caller, **op)   # never applied: go again
        if reply.errno:
            raise FsError(reply.errno, reply.message)
        return reply

    def _renewable(self, request: mpb.Request) -> bool:
        """Whether a mutation that found its session closed may go on in a new one."""
        kind = request.mutation.WhichOneof("op")
        return (bool(request.session) and not self._closed
                and kind not in ("open_session", "close_session"))

    async def _renew(self, lost: int) -> None:
        """Open a new session in place of `lost` (once, however many requests found
        it closed), then let the owner of the old one's state move it over."""
        if self.session != lost:
            if self._renewal is not None:
                await asyncio.shield(self._renewal)
            return
        self._renewal = asyncio.ensure_future(self._open_new_session(lost))
        await asyncio.shield(self._renewal)

    async def _open_new_session(self, lost: int) -> None:
        self.session, self._seq = await self._new_session(), 0
        log.warning("the metadata cluster closed session %d (this client was not heard "
                    "from within its session timeout); continuing in session %d", lost,
                    self.session)
        if self.on_renewed is not None:
            try:
                await self.on_renewed(lost, self.session)
            except Exception:   # the new session works; what failed is logged
                log.exception("moving state to the new session failed")

    def mutate_deferred(self, caller: pb.Caller, **op) -> asyncio.Future:
        """A command nobody waits for now (a Release at close, a create answered in a
        delegated directory): it rides with the next request, or goes alone after
        DEFER_S, so that it shares a Raft round with other work instead of costing
        one of its own. It takes its place on the stream at once: a request made
        after it goes after it. Exactly once like every mutation; the future is its
        reply (errno set on failure, which is also logged)."""
        if self.before is not None:
            self.before(*_only(op), True)   # a mutation: its place on the stream suffices
        self._seq += 1
        request = mpb.Request(session=self.session, seq=self._seq, caller=caller,
                              mutation=pb.Command(**op))
        reply = self._start(request, deferred=True)
        reply.add_done_callback(_log_failure)
        return reply

    async def ping(self) -> None:
        """One round trip to the leader (a heartbeat)."""
        await self._exchange(mpb.Request(session=self.session, heartbeat=mpb.Heartbeat()))

    async def read(self, caller: pb.Caller, follower: bool = False, **op) -> mpb.Reply:
        """One read; linearizable unless `follower` (then at least as new as anything
        this client saw). FsError for a POSIX error."""
        if self.before is not None:
            await _wait(self.before(*_only(op), False))
        request = mpb.Request(session=self.session, caller=caller, follower_read=follower,
                              min_index=self.last_index, **op)
        reply = None
        if follower and self.read_from:
            if self._reads is None:
                self._reads = _ReadStream(self.read_from)
            request.id = next(self._ids)
            reply = await self._reads.call(request)
            if reply is not None:
                self.last_index = max(self.last_index, reply.index)
        if reply is None:
            reply = await self._call(request)
        if reply.errno:
            raise FsError(reply.errno, reply.message)
        return reply

    async def _call(self, request: mpb.Request) -> mpb.Reply:
        if not tracing.enabled():
            return await self._exchange(request)
        kind = request.WhichOneof("op")
        if kind == "mutation":
            kind = request.mutation.WhichOneof("op")
        with tracing.tracer().start_as_current_span(f"mooseng.client/{kind}",
                                                    kind=trace.SpanKind.CLIENT):
            request.traceparent = tracing.inject()
            return await self._exchange(request)

    async def _exchange(self, request: mpb.Request) -> mpb.Reply:
        return await self._start(request)

    def _start(self, request: mpb.Request, deferred: bool = False) -> asyncio.Future:
        """Number the request and queue it (or defer it); the future of its reply."""
        request.id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._calls[request.id] = _Call(request, fut, time.monotonic() + self.deadline_s)
        if deferred:
            self._defer(request)
        else:
            self._send(request)
        return fut

    def _defer(self, request: mpb.Request) -> None:
        self._deferred.append(request)
        if self._deferred_flush is None:
            self._deferred_flush = asyncio.get_running_loop().call_later(
                DEFER_S, self._send_deferred)

    def unsent(self, reply: asyncio.Future) -> pb.Command | None:
        """The command of a deferred request that has not been sent yet (it may still
        be changed), by the future mutate_deferred returned; None once sent."""
        for request in reversed(self._deferred):
            call = self._calls.get(request.id)
            if call is not None and call.future is reply:
                return request.mutation
        return None

    def send_deferred(self) -> None:
        """Send the deferred commands now (someone waits for what follows them)."""
        if self._deferred:
            self._send_deferred()

    def _send_deferred(self) -> None:
        if self._deferred_flush is not None:
            self._deferred_flush.cancel()
            self._deferred_flush = None
        deferred, self._deferred = self._deferred, []
        for request in deferred:
            self._put(request)

    def _send(self, request: mpb.Request) -> None:
        if self._deferred and request.HasField("mutation"):
            self._send_deferred()     # first, in seq order, and in the same Raft round
        self._put(request)

    def _put(self, request: mpb.Request) -> None:
        request.invalidations = self.on_invalidate is not None
        if request.HasField("mutation"):
            request.acked_seq = self._acked_seq()
        self._outgoing.put_nowait(request)

    def _acked_seq(self) -> int:
        """Every seq at or below this has its reply here: the fold may forget them.
        Calls are kept in the order they were made, and a mutation is numbered as it
        is made, so the first mutation still waiting has the lowest seq."""
        for call in self._calls.values():
            if call.request.seq and call.request.session == self.session:
                return call.request.seq - 1
        return self._seq

    # -- the stream -----------------------------------------------------------------------
    async def _keep_connected(self) -> None:
        streams = 0
        while not self._closed:
            leader = await find_leader(self.masters)
            if not leader:
                await asyncio.sleep(0.05)
                continue
            await self._connect(leader)
            streams += 1
            if streams > 1 and self.on_reset is not None:
                asyncio.create_task(self._resubscribed(), name="md-resubscribe")
            self._abandoned = False
            await self._serve_stream()
            self._connected.clear()
            await self._drop_stream()
            await asyncio.sleep(0.02)

    async def _connect(self, leader: str) -> None:
        self.leader = leader
        self._connected_at = time.monotonic()
        self._channel = grpc.aio.insecure_channel(leader, options=GRPC_OPTIONS)
        self._outgoing = asyncio.Queue()
        self._deferred.clear()               # they are among the unanswered calls
        for call in self._calls.values():   # unanswered: send again, same numbers
            if not call.refused:             # an earlier copy may have been applied
                call.resent = call.request.resent = True
            call.refused = False
            self._send(call.request)
        self._stream = metadata_pb2_grpc.MetadataStub(self._channel).Session(
            self._batches(self._outgoing))
        self._connected.set()

    @staticmethod
    async def _batches(queue: asyncio.Queue):
        while True:
            batch = [await queue.get()]
            await asyncio.sleep(0)  # let requests made in this loop turn join the batch
            while not queue.empty():
                batch.append(queue.get_nowait())
            yield mpb.RequestBatch(requests=batch)

    async def _serve_stream(self) -> None:
        """Take replies until the stream breaks or the leader turns us away."""
        try:
            async for batch in self._stream:
                self.last_heard = time.monotonic()
                if batch.invalidations:
                    self._notices(batch.invalidations)
                if not self._take(batch.replies):
                    return
        except grpc.aio.AioRpcError as exc:
            log.debug("metadata stream to %s ended: %s", self.leader, exc.code())
        except asyncio.CancelledError:
            if not self._abandoned or self._closed:
                raise
            log.warning("no answer from the metadata leader %s for %.0f s: looking for "
                        "the leader again", self.leader, SILENT_S)

    def _notices(self, notices) -> None:
        recalls = [n.recall_dir for n in notices if n.recall_dir]
        try:
            if recalls and self.on_recall is not None:
                for directory in dict.fromkeys(recalls):
                    self.on_recall(directory)
            others = [n for n in notices if not n.recall_dir]
            if others and self.on_invalidate is not None:
                self.on_invalidate(others)
        except Exception:   # a cache's bug must not break the session
            log.exception("invalidation handler failed")

    def _take(self, replies) -> bool:
        """Resolve answered calls; False when a reply says to go elsewhere."""
        stay = True
        for reply in replies:
            if reply.status == mpb.Reply.NOT_LEADER:
                stay = False   # also for a heartbeat: the session lives on the leader
            call = self._calls.get(reply.id)
            if call is None:
                continue
            if reply.status == mpb.Reply.UNAVAILABLE:
                # The node cannot answer yet (electing, or still learning where chunks
                # are): ask it again shortly; if it has stopped leading it says so then.
                asyncio.get_running_loop().call_later(UNAVAILABLE_RETRY_S, self._resend,
                                                      call)
                continue
            if reply.status in RETRY:
                stay = False   # the call stays pending and goes again to the new leader
                call.refused = reply.status == mpb.Reply.NOT_LEADER   # never proposed
                continue
            del self._calls[reply.id]
            self.last_index = max(self.last_index, reply.index)
            if reply.errno == errno.ENOTCONN and call.resent and call.request.session:
                reply = _outcome_lost(reply)
            if reply.status == mpb.Reply.BAD_REQUEST:
                call.future.set_exception(ValueError(f"bad request: {reply.message}"))
            elif not call.future.done():
                call.future.set_result(reply)
        return stay

    def _resend(self, call: _Call) -> None:
        if self._calls.get(call.request.id) is call and self._connected.is_set():
            call.request.resent = True   # the first may have applied (a begin_write
            # whose targets were not known yet): no refusal before the fold for it
            self._send(call.request)

    async def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        if self._channel is not None:
            await self._channel.close()
        self._stream = self._channel = None

    async def _resubscribed(self) -> None:
        """Subscribe the new stream at once (a heartbeat carries the wish), and once
        the leader has answered it, everything pushed from then on arrives: only
        then may the caches be dropped, or a change in between would be missed."""
        if self.on_invalidate is not None and self.session:
            try:
                await self._exchange(mpb.Request(session=self.session,
                                                 heartbeat=mpb.Heartbeat()))
            except Exception as exc:   # the stream broke again: the next one resets
                log.debug("resubscribing: %s", exc)
                return
        try:
            self.on_reset()
        except Exception:
            log.exception("cache reset failed")

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if self.session and self._connected.is_set():
                self._probe()

    def _probe(self) -> None:
        """A heartbeat, whose answer the silence watch then waits for."""
        self._probed_at = time.monotonic()
        self._outgoing.put_nowait(mpb.Request(id=next(self._ids), session=self.session,
                                              heartbeat=mpb.Heartbeat()))

    async def _watch(self) -> None:
        """Leave a stream that has gone silent while an answer is awaited (see
        SILENT_S): its node may be stopped or cut off from this client alone, and the
        others elect a new leader meanwhile, which would expire this session if it
        never heard from it."""
        while True:
            await asyncio.sleep(WATCH_S)
            stream = self._stream
            if stream is None or not self._connected.is_set() or self._abandoned:
                continue
            heard = max(self.last_heard, self._connected_at)
            if not self._calls and self._probed_at <= heard:
                continue                      # nothing awaited: silence is fine
            quiet = time.monotonic() - heard
            if quiet >= SILENT_S:
                self._abandoned = True
                stream.cancel()
            elif quiet >= PROBE_S and self._probed_at <= heard:
                self._probe()

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            for ident, call in list(self._calls.items()):
                if call.deadline < now:
                    del self._calls[ident]
                    if not call.future.done():
                        call.future.set_exception(ClusterUnavailableError(
                            f"no metadata leader answered within {self.deadline_s} s "
                            f"(masters: {', '.join(self.masters)})"))


def _outcome_lost(reply: mpb.Reply) -> mpb.Reply:
    """The session closed while this request's outcome was unknown (it was sent again
    after a reconnect, and an earlier copy may have been applied): it cannot be
    retried in a new session without the risk of doing it twice."""
    message = ("the metadata cluster closed this client's session while the outcome "
               "of this request was unknown: it may or may not have been applied")
    return mpb.Reply(id=reply.id, errno=errno.EIO, message=message,
                     result=pb.Result(errno=errno.EIO, message=message))


def _only(op: dict) -> tuple:
    """(kind, message) of a request given as one keyword argument."""
    [(kind, message)] = op.items()
    return kind, message


async def _wait(tasks) -> None:
    if tasks:
        await asyncio.wait(tasks)


def _log_failure(fut: asyncio.Future) -> None:
    if fut.cancelled():
        return
    if (exc := fut.exception()) is not None:
        log.warning("a deferred command failed: %s", exc)
    elif fut.result().errno:
        reply = fut.result()
        log.warning("a deferred command failed: %s", reply.message or reply.errno)
