"""The chunkserver's control stream to the metadata leader (ChunkMaster.Connect).

On every (re)connection the first message is a hello with a full report of what the
store holds: a new leader knows nothing, which server holds what is soft state. After
that, every heartbeat carries the free space and what changed since the last message;
damage and finished jobs go out at once. Jobs from the leader run concurrently.

`Reports` decides what each message says and does no I/O; `ControlLink` is the shell
that reads the store and talks gRPC.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

import grpc

from schemas import chunkmaster_pb2 as pb
from schemas import chunkmaster_pb2_grpc
from services.chunk.jobs import INCOMPLETE, JobRunner
from services.chunk.parts import split
from services.chunk.store import ChunkInfo, ChunkStore

log = logging.getLogger(__name__)

GRPC_OPTIONS = [("grpc.keepalive_time_ms", 10_000)]
FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.2, 1.0
CHANGE_DELAY_S = 0.01
# The master takes a server silent for 10 s as gone (services/metadata/chunks/control.py):
# a heartbeat must come well within that.
MAX_HEARTBEAT_S = 3.0
REDIRECT_PAUSE_S = 0.05
USED_BYTES_EVERY_S = 10.0   # counting used bytes stats every chunk file, at most
USED_BYTES_STATS_PER_S = 2000   # ... this many a second on average (big servers count
# less often, so the count costs the same whatever the number of chunks)


def held(ident: int, version: int, length: int) -> pb.Held:
    chunk, part = split(ident)
    return pb.Held(chunk=chunk, part=part, version=version, length=length)


class Reports:
    """What the leader has been told, and what it still has to hear. Pure.

    Damage is remembered per store id until the copy changes, so a new leader hears of
    it again with the full report instead of counting a damaged copy as good.
    """

    def __init__(self):
        self.reported: dict[int, tuple[int, int]] = {}   # store id -> (version, length)
        self.changed: set[int] = set()
        self.known_damage: dict[int, dict[str, pb.Damage]] = {}
        self.new_damage: list[pb.Damage] = []
        self.done: list[pb.JobDone] = []

    def change(self, ident: int) -> None:
        self.changed.add(ident)
        self.known_damage.pop(ident, None)   # the copy was replaced, moved on or deleted

    def damage(self, ident: int, version: int, detail: str) -> bool:
        """Note damage; False if the leader already knows of exactly this."""
        chunk, part = split(ident)
        seen = self.known_damage.setdefault(ident, {})
        if detail in seen:
            return False
        seen[detail] = pb.Damage(chunk=chunk, part=part, version=version, detail=detail)
        self.new_damage.append(seen[detail])
        return True

    def job_done(self, done: pb.JobDone) -> None:
        self.done.append(done)

    def urgent(self) -> bool:
        """Is there something the leader should hear before the next heartbeat?"""
        return bool(self.new_damage or self.done)

    def full(self, listing: Iterable[ChunkInfo], unreadable: dict[int, str]) -> pb.ServerMessage:
        """Everything held (copies still being made left out) and all damage known."""
        self.reported = {c.chunk_id: (c.version, c.length) for c in listing
                         if c.version != INCOMPLETE}
        for ident in set(self.known_damage) - set(self.reported) - set(unreadable):
            del self.known_damage[ident]             # gone
        for ident, why in unreadable.items():       # a damaged header: version unknown
            self.damage(ident, 0, why)
        message = pb.ServerMessage(
            full_report=True,
            holding=[held(i, v, n) for i, (v, n) in sorted(self.reported.items())],
            damaged=[d for ident, ds in sorted(self.known_damage.items())
                     for d in ds.values()], done=self.done)
        # `changed` stays: a change made while the store was listed is checked again
        # against `reported` by the next incremental message, which is harmless
        self.new_damage, self.done = [], []
        return message

    def incremental(self, now: dict[int, tuple[int, int] | None]) -> pb.ServerMessage:
        """The changes since the last message, given the current (version, length) of
        changed store ids (None: no longer held). Ids missing from `now` (changed while
        it was read) wait for the next message."""
        message = pb.ServerMessage(damaged=self.new_damage, done=self.done)
        for ident in sorted(now):
            current = now.get(ident)
            if current is not None and current[0] != INCOMPLETE:
                if self.reported.get(ident) != current:
                    message.holding.append(held(ident, *current))
                    self.reported[ident] = current
            elif ident in self.reported:
                message.dropped.append(held(ident, *self.reported.pop(ident)))
        self.changed -= now.keys()
        self.new_damage, self.done = [], []
        return message


def current_state(store: ChunkStore, idents: Iterable[int]) -> dict[int, tuple[int, int] | None]:
    """(version, length) of each store id the store still holds readably, else None."""
    out: dict[int, tuple[int, int] | None] = {}
    for ident in idents:
        try:
            out[ident] = (store.version(ident), store.length(ident))
        except Exception:    # gone, or unreadable: either way not a copy to count
            out[ident] = None
    return out


class StreamEnded(Exception):
    """The leader closed the stream or refused it."""


class ControlLink:
    """Keeps one Connect stream open to whichever metadata node leads."""

    def __init__(self, masters: list[str], server_id: str, data_address: str,
                 store: ChunkStore, runner: JobRunner, heartbeat_s: float = 1.0):
        if not masters:
            raise ValueError("no metadata addresses given: name at least one with --masters")
        self.masters, self.server_id, self.data_address = masters, server_id, data_address
        self.store, self.runner, self.heartbeat_s = store, runner, heartbeat_s
        self.reports = Reports()
        self.connected_to: str | None = None
        self._wake = asyncio.Event()
        self._jobs: dict[int, asyncio.Task] = {}
        self.space = pb.Space()
        self._used, self._used_at = 0, float("-inf")
        self._counting: asyncio.Task | None = None

    # -- what the rest of the chunkserver calls -------------------------------------------

    def changed(self, ident: int) -> None:
        """A copy was created, moved to another version or deleted: the leader hears of
        it within CHANGE_DELAY_S (writers are placed by what it knows)."""
        self.reports.change(ident)
        self._wake.set()

    def damaged(self, ident: int, version: int, detail: str) -> None:
        if self.reports.damage(ident, version, detail):
            log.error("damaged copy reported to the master: %s", detail)
            self._wake.set()

    # -- the stream -----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect for ever; cancel the task to stop."""
        turn, backoff, redirect = 0, FIRST_BACKOFF_S, None
        try:
            while True:
                address = redirect or self.masters[turn % len(self.masters)]
                redirect = None
                try:
                    redirect = await self._session(address)
                    backoff = FIRST_BACKOFF_S
                    await asyncio.sleep(REDIRECT_PAUSE_S)   # no busy loop between two nodes
                except Exception as e:   # any failure: the data port must stay up
                    if isinstance(e, (StreamEnded, grpc.aio.AioRpcError, OSError)):
                        log.warning("control stream to %s: %s; retrying in %.1f s",
                                    address, _why(e), backoff)
                    else:
                        log.exception("control stream to %s failed unexpectedly; retrying "
                                      "in %.1f s", address, backoff)
                    self.connected_to = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    turn += 1
        finally:
            for task in self._jobs.values():
                task.cancel()

    async def _session(self, address: str) -> str:
        """One stream to `address`; returns the leader's address if sent there."""
        async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
            call = chunkmaster_pb2_grpc.ChunkMasterStub(channel).Connect()
            first = await self._full_report()
            await _write(call, first)
            log.info("control stream to %s open; reported %d copies", address,
                     len(first.holding))
            self.connected_to = address
            loops = {asyncio.create_task(self._send_loop(call)),
                     asyncio.create_task(self._receive_loop(call, address))}
            try:
                finished, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
                return finished.pop().result()   # a failed write or read raises here
            finally:
                for task in loops:
                    task.cancel()
                call.cancel()
                self.connected_to = None

    async def _receive_loop(self, call, address: str) -> str:
        while True:
            reply = await call.read()
            if reply is grpc.aio.EOF:
                raise StreamEnded("the master ended the stream")
            if reply.leader_address and reply.leader_address != address:
                log.info("%s is not the leader; going to %s", address, reply.leader_address)
                return reply.leader_address
            if reply.error:      # a follower that knows no leader says only this
                raise StreamEnded(f"the master refused the stream: {reply.error}")
            for job in reply.jobs:
                self._start_job(job)

    async def _send_loop(self, call) -> str:
        while True:
            if not self.reports.urgent():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.heartbeat_s)
                await asyncio.sleep(CHANGE_DELAY_S)   # changes made together go together
            await _write(call, await self._incremental())

    def _start_job(self, job: pb.Job) -> None:
        if job.id in self._jobs:      # sent again (a retry): it is already under way
            return

        async def run() -> None:
            try:
                self.reports.job_done(await self.runner.run(job))
                self._wake.set()
            finally:
                del self._jobs[job.id]
        self._jobs[job.id] = asyncio.create_task(run())

    # -- reading the store ----------------------------------------------------------------

    async def _full_report(self) -> pb.ServerMessage:
        listing = await asyncio.to_thread(lambda: list(self.store.list()))
        unreadable = await asyncio.to_thread(self.store.damaged)
        message = self.reports.full(listing, unreadable)
        message.hello.CopyFrom(pb.Hello(server_id=self.server_id,
                                        data_address=self.data_address))
        message.space.CopyFrom(await self._measure_space())
        return message

    async def _incremental(self) -> pb.ServerMessage:
        now = await asyncio.to_thread(current_state, self.store, list(self.reports.changed))
        message = self.reports.incremental(now)
        message.space.CopyFrom(await self._measure_space())
        return message

    async def _measure_space(self) -> pb.Space:
        """Free space now (statvfs: quick), used space as last counted. Counting stats
        every chunk file, which on a big server can take longer than the master waits
        for a heartbeat: after the first count it runs apart from the messages."""
        if self._used_at == float("-inf"):
            await self._count_used()
        elif self._counting is None and time.monotonic() - self._used_at >= max(
                USED_BYTES_EVERY_S, len(self.store) / USED_BYTES_STATS_PER_S):
            self._counting = asyncio.create_task(self._count_used())
        free = await asyncio.to_thread(self.store.free_bytes)
        self.space = pb.Space(free_bytes=free, used_bytes=self._used, chunks=len(self.store))
        return self.space

    async def _count_used(self) -> None:
        try:
            self._used = await asyncio.to_thread(self.store.used_bytes)
        finally:
            self._used_at, self._counting = time.monotonic(), None


async def _write(call, message: pb.ServerMessage) -> None:
    """call.write, raising why the stream ended if it has (grpc.aio says only that the
    call is finished)."""
    try:
        await call.write(message)
    except asyncio.InvalidStateError:
        raise StreamEnded(f"{(await call.code()).name}: {await call.details()}") from None


def _why(exc: Exception) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__
