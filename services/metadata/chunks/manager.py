"""The chunk manager: on the leader, keeps every chunk at its storage class's goal.

It checks the chunks whose copies just changed (a report, a job done, a write
begun, a class changed) and walks every chunk the log knows in the background,
asks the planner what each needs, and sends the jobs to chunkservers over their
control streams. Each tick does a bounded amount of work (`step_budget_s`), so the
cost on the leader's event loop does not grow with the number of chunks: a full
walk over many chunks takes many ticks (MooseFS loops over its chunks in about five
minutes for the same reason). While clients keep the log busy the walk gives way
to them (it is a safety net: every change that needs a look marks its chunk), and
goes on one tick in `walk_anyway_ticks`, so its health counts stay current.
Copies that no file refers to (deleted or truncated away) are deleted after the
retention delay. Everything it knows about copies is soft state:
when this node stops leading, it forgets all of it and closes the streams.
"""

import asyncio
import functools
import heapq
import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from schemas import chunkmaster_pb2 as cpb
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.chunk.header import CHUNK_SIZE, HEADER_SIZE
from services.common import storage_class
from services.common.posix import records as r
from services.metadata.chunks import planner
from services.metadata.chunks.region_source import RegionSource
from services.metadata.chunks.registry import Registry, Server
from services.metadata.namespace import reads, region_fold

log = logging.getLogger(__name__)
ROOM = HEADER_SIZE + CHUNK_SIZE


@functools.lru_cache(maxsize=64)
def _parse_class(text: bytes) -> storage_class.StorageClass:
    """A class as the log holds it; parsed once, not for every chunk of every walk."""
    return storage_class.parse(text.decode())


class ContentsUnknownError(Exception):
    """No connected chunkserver is known to hold a chunk's committed contents."""

    def __init__(self, chunk: int, committed: int, leading_s: float):
        super().__init__(f"no connected chunkserver holds chunk {chunk} at version "
                         f"{committed} or newer")
        self.chunk, self.committed, self.leading_s = chunk, committed, leading_s


@dataclass
class ManagerOptions:
    default_class: str = storage_class.DEFAULT
    tick_s: float = 0.5
    settle_s: float = 5.0        # after becoming leader, let chunkservers report first
    lost_after_s: float = 30.0   # a disconnected server's copies count until then
    quiet_s: float = 10.0        # no repair or conversion this soon after a write began
    retention_s: float = 86400.0  # unreferenced copies are kept this long
    step_budget_s: float = 0.01  # time one tick may spend checking chunks
    min_per_tick: int = 32       # chunks each kind of check goes on by, however slow
    busy_entries: int = 50       # log entries applied in a tick that make it a busy one
    walk_anyway_ticks: int = 10  # a busy leader still walks one tick in this many
    job_timeout_s: float = 120.0
    jobs_per_server: int = 8
    ec_backend: str = ""         # "" : the first available (see services/chunk/erasure.py)
    region_source: tuple[str, ...] = ()  # a second region: region A's metadata nodes


@dataclass
class _Sent:
    server: str
    chunk: int
    at: float


@dataclass
class _Pass:
    """Counts for one walk over every chunk."""
    states: dict = field(default_factory=lambda: dict.fromkeys(
        (planner.HEALTHY, planner.UNDER, planner.MISSING, planner.OVER), 0))
    chunks: int = 0


class ChunkManager:
    def __init__(self, node, options: ManagerOptions | None = None,
                 clock=time.monotonic):
        self.node, self.options, self.clock = node, options or ManagerOptions(), clock
        self.default_class = storage_class.parse(self.options.default_class)
        self.registry = Registry(clock)
        self._ids = itertools.count(1)
        self._task: asyncio.Task | None = None
        self._backend = self.options.ec_backend
        # While this region follows region A's log, chunks it lacks come from A.
        self.region = (RegionSource(list(self.options.region_source), clock)
                       if self.options.region_source else None)
        self.following = False
        self._reset(term=None)

    def _reset(self, term) -> None:
        self.term, self.since = term, self.clock()
        if self.region is not None:
            self.region.forget()
        self.jobs: dict[int, _Sent] = {}
        self.busy: dict[int, int] = {}          # chunk -> job id in flight
        self.orphans: dict[int, float] = {}     # chunk -> first seen unreferenced
        self.cursor: bytes | None = b""
        self.current, self.finished = _Pass(), None
        self.orphan_pass: list[int] = []        # chunks with copies, left to look at
        self.later: list[tuple[float, int]] = []   # (when, chunk): check it again then
        self._cands: list[planner.Candidate] | None = None
        self._applied_seen = self.node.machine.applied_index
        self._busy_ticks = 0

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chunk-manager")
        if self.region is not None:
            self.region.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.region is not None:
            await self.region.stop()
        self.registry.reset()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.options.tick_s)
            try:
                self.step()
            except Exception:   # a bug here must not stop the manager for good
                log.exception("chunk manager step failed")

    def leading(self) -> bool:
        return self.node.core.role == "leader"

    def step(self) -> None:
        if not self.leading():
            if self.term is not None:
                self.registry.reset()
                self._reset(term=None)
            return
        if self.term != self.node.core.term:
            # Newly leading. Streams that connected already came to this node as the
            # leader: what they reported stays (a report is a fact about a server,
            # whoever leads); only jobs and walks start again.
            self._reset(term=self.node.core.term)
        if self.clock() - self.since < self.options.settle_s:
            return
        self.following = region_fold.following(self.node.machine.projection)
        if self.region is not None and not self.following:
            self.region.forget()     # promoted (or nothing shipped yet): A is no source
        self._expire_jobs()
        for server in self.registry.forget_lost(self.options.lost_after_s):
            log.warning("chunkserver %s (%s) has been gone %.0f s: re-replicating its chunks",
                        server.server_id, server.address, self.options.lost_after_s)
        self._cands = None
        deadline = time.perf_counter() + self.options.step_budget_s
        self._recheck_due()
        self._check_dirty(deadline)
        if self._walk_due():
            self._walk(deadline)
            self._sweep_orphans(deadline)

    def _walk_due(self) -> bool:
        """Not while clients keep the log busy (more than `busy_entries` applied since
        the last tick), except one tick in `walk_anyway_ticks`."""
        applied = self.node.machine.applied_index
        busy = applied - self._applied_seen > self.options.busy_entries
        self._applied_seen = applied
        self._busy_ticks = self._busy_ticks + 1 if busy else 0
        return not busy or self._busy_ticks % self.options.walk_anyway_ticks == 0

    # -- chunkserver events (from the control stream) ------------------------------------------
    def server_gone(self, server: Server) -> None:
        self.registry.disconnect(server)
        for ident, sent in list(self.jobs.items()):
            if sent.server == server.server_id:
                self._finish(ident)

    def job_done(self, server: Server, done: cpb.JobDone) -> None:
        sent = self.jobs.get(done.job)
        if sent is None:
            return
        if not done.ok:
            log.warning("chunkserver %s failed a job on chunk %d: %s", server.address,
                        sent.chunk, done.message)
        self._finish(done.job)

    def _finish(self, ident: int) -> None:
        sent = self.jobs.pop(ident)
        if self.busy.get(sent.chunk) == ident:
            del self.busy[sent.chunk]
        self.registry.dirty.add(sent.chunk)

    def _expire_jobs(self) -> None:
        limit = self.clock() - self.options.job_timeout_s
        for ident in [i for i, s in self.jobs.items() if s.at < limit]:
            log.warning("job %d on chunk %d timed out", ident, self.jobs[ident].chunk)
            self._finish(ident)

    # -- checking chunks -----------------------------------------------------------------------
    def _budget(self, deadline: float):
        """Counts 0, 1, 2...; stops once past `deadline` (after min_per_tick)."""
        for done in itertools.count():
            if done >= self.options.min_per_tick and time.perf_counter() > deadline:
                return
            yield done

    def _check_dirty(self, deadline: float) -> None:
        """The chunks whose copies changed, as many as the tick allows; the rest wait
        for the next tick."""
        dirty = self.registry.dirty
        for _ in self._budget(deadline):
            if not dirty:
                return
            self._check_reported(dirty.pop())

    def _recheck_due(self) -> None:
        """Chunks left alone while a write was going on are looked at once it is over."""
        now = self.clock()
        while self.later and self.later[0][0] <= now:
            self.registry.dirty.add(heapq.heappop(self.later)[1])

    def _walk(self, deadline: float) -> None:
        """Check chunks in the log's order from where the last tick stopped; a full
        walk publishes the health counts."""
        view = self.node.machine.projection
        scan = view.scan(r.CHUNKS, b"", start=self.cursor or None)
        for _ in self._budget(deadline):
            found = next(scan, None)
            if found is None:
                self.finished, self.current, self.cursor = self.current, _Pass(), b""
                return
            key, value = found
            ino, _index = r.split_chunk_key(key)
            chunk, version = r.CHUNK_VALUE.unpack(value)
            state = self._check(chunk, version, ino)
            self.current.states[state] += 1
            self.current.chunks += 1
            self.cursor = key + b"\0"     # the next tick starts after this key

    def _check_reported(self, chunk: int) -> None:
        view = self.node.machine.projection
        owner = reads.chunk_owner(view, chunk)
        if owner is None:
            if chunk in self.registry.copies:
                self.orphans.setdefault(chunk, self.clock())
            return
        found = view.get(r.CHUNKS, r.chunk_key(*owner))
        if found is not None:
            self._check(chunk, r.CHUNK_VALUE.unpack(found)[1], owner[0])

    def class_changed(self, ino: int) -> None:
        """A file's storage class changed: check its chunks soon, not when the walk
        comes by."""
        view = self.node.machine.projection
        for _key, value in view.scan(r.CHUNKS, r.u64(ino)):
            self.registry.dirty.add(r.CHUNK_VALUE.unpack(value)[0])

    def _check(self, chunk: int, version: int, ino: int) -> str:
        holders = self.holders(chunk)
        sclass = self.class_of(ino)
        idle = chunk not in self.busy and self.registry.quiet(chunk, self.options.quiet_s)
        if chunk not in self.busy and not idle:    # a write is going on: look again after
            heapq.heappush(self.later, (self.registry.writes[chunk] + self.options.quiet_s,
                                        chunk))
        if self.following and not planner.readable(version, sclass, holders):
            return self._fetch(chunk, version, holders) if idle else planner.MISSING
        result = planner.plan(chunk, version, sclass, holders,
                              self._candidates() if idle else [], self._ec_backend(sclass),
                              self._committed(chunk),
                              self.parts_class_of(ino, sclass)
                              if any(h.part for h in holders) else None)
        if idle:
            for server, job in result.jobs:
                self._send(server, job)
        elif result.state == planner.MISSING and holders:
            return planner.UNDER   # a writer is moving the copies to the new version
        return result.state

    def never_written(self, chunk: int) -> bool:
        """No commit ever reached the chunk and no server holds or is writing a copy:
        a write began on it and was given up before any copy was made. Its contents
        are zeros: readers are answered as for a hole (docs/consistency.md promises
        nothing of a write that was never committed)."""
        return (self._committed(chunk) is None and not self.registry.of(chunk)
                and chunk not in self.registry.expected)

    def _committed(self, chunk: int) -> int | None:
        found = self.node.machine.projection.get(r.COMMITTED, r.u64(chunk))
        return r.U32.unpack(found)[0] if found is not None else None

    def _fetch(self, chunk: int, version: int, holders: list[planner.Holder]) -> str:
        """A following region lacks the chunk's version: a copy from region A's
        chunkservers, or decoded from its parts there (never a stale copy of ours moved
        on: A wrote since)."""
        if self.region is None:
            return planner.MISSING   # no --region-follower A_MASTERS: nowhere to fetch from
        found, shape = self.region.sources(chunk, version)
        result = planner.fetch(chunk, version, holders, self._candidates(),
                               [(loc.address, loc.length) for loc in found if not loc.part],
                               [loc for loc in found if loc.part], shape)
        for server, job in result.jobs:
            self.region.used(chunk, version)
            self._send(server, job)
        return result.state

    def holders(self, chunk: int) -> list[planner.Holder]:
        reg = self.registry
        return [planner.Holder(c.server, reg.address(c.server), c.part, c.version, c.length,
                               bool(c.damaged), reg.alive(c)) for c in reg.of(chunk)]

    def class_of(self, ino: int) -> storage_class.StorageClass:
        found = self.node.machine.projection.get(r.CLASSES, r.u64(ino))
        if found is None:
            return self.default_class
        return _parse_class(found)

    def parts_class_of(self, ino: int, sclass) -> storage_class.StorageClass | None:
        """The shape parts of the file's chunks may still have, under a copies=N class."""
        if sclass.is_ec:
            return None
        found = reads.parts_class(self.node.machine.projection, ino)
        return _parse_class(found.encode()) if found is not None else None

    def reading_class(self, ino: int) -> storage_class.StorageClass:
        """The class a client reads the file's chunks with: the shape of any parts."""
        sclass = self.class_of(ino)
        return self.parts_class_of(ino, sclass) or sclass

    def _candidates(self) -> list[planner.Candidate]:
        """Servers with room that are not already doing their share of jobs (worked
        out once a tick, and again after a job is sent)."""
        if self._cands is None:
            load = Counter(sent.server for sent in self.jobs.values())
            self._cands = [c for c in self._room()
                           if load[c.server] < self.options.jobs_per_server]
        return self._cands

    def _ec_backend(self, sclass) -> str:
        if sclass.is_ec and not self._backend:
            from services.chunk.erasure import available_backends
            self._backend = (available_backends() or [""])[0]
        return self._backend

    def _send(self, server_id: str, job: cpb.Job) -> None:
        server = self.registry.servers.get(server_id)
        if server is None or not server.connected:
            return
        job.id = next(self._ids)
        self._cands = None
        self.jobs[job.id] = _Sent(server_id, job.chunk, self.clock())
        self.busy[job.chunk] = job.id
        server.send(job)

    # -- orphans -------------------------------------------------------------------------------
    def _sweep_orphans(self, deadline: float) -> None:
        """Copies of chunks no file refers to are deleted once the retention delay has
        passed since this leader first saw them unreferenced (a new leader starts the
        delay again: retention errs on the side of keeping data). One pass looks at
        every chunk that has copies, a tick's budget at a time."""
        if not self.orphan_pass:
            for chunk in [c for c in self.orphans if c not in self.registry.copies]:
                del self.orphans[chunk]
            self.orphan_pass = list(self.registry.copies)
        view, now = self.node.machine.projection, self.clock()
        for _ in self._budget(deadline):
            if not self.orphan_pass:
                return
            chunk = self.orphan_pass.pop()
            if chunk not in self.registry.copies or \
                    reads.chunk_owner(view, chunk) is not None:
                self.orphans.pop(chunk, None)
                continue
            first = self.orphans.setdefault(chunk, now)
            if now - first >= self.options.retention_s and chunk not in self.busy:
                for copy in list(self.registry.of(chunk)):
                    if self.registry.alive(copy):
                        self._send(copy.server, cpb.Job(chunk=chunk, version=0,
                                                        delete=cpb.Delete(part=copy.part)))

    # -- what clients and operators ask --------------------------------------------------------
    def settled(self) -> bool:
        """Leading long enough for the chunkservers to have reported: until then, where
        copies are is not known well enough to send a writer anywhere."""
        return (self.leading() and self.term == self.node.core.term
                and self.clock() - self.since >= self.options.settle_s)

    def locations(self, chunk: int, version: int) -> list[mpb.ChunkLocation]:
        """Good copies and parts at `version` on connected servers, copies first. The
        servers a writer is moving to `version` are included before their reports say
        so: a reader that comes too early gets a stale-version error and asks again,
        but one that reads what it just wrote does not wait for a report."""
        reg = self.registry
        found = [c for c in reg.of(chunk)
                 if c.version == version and not c.damaged and reg.alive(c)]
        found.sort(key=lambda c: (c.part, planner.mix(chunk, c.server)))
        out = [mpb.ChunkLocation(address=reg.address(c.server), part=c.part,
                                 version=c.version, length=c.length) for c in found]
        expected_version, servers = reg.expected.get(chunk, (0, []))
        if expected_version == version:
            have = {c.server for c in found if c.part == 0}
            out[:0] = [mpb.ChunkLocation(address=reg.address(s), version=version)
                       for s in servers if s not in have and reg.servers[s].connected]
        return out

    def write_targets(self, chunk: int, version: int, sclass) -> list[mpb.ChunkLocation]:
        """Where a writer puts whole copies of the chunk at `version` (just begun).
        The existing copies with the newest version carry the chunk's data: the writer
        moves them to `version` and writes there (a copy already there was moved by an
        earlier attempt of this write, or by a repair that took its writer for dead).
        A chunk with no copy yet (new, or held only as erasure-coded parts) gets fresh
        servers, version 0: create.
        Raises ContentsUnknownError when the chunk has committed contents that no
        connected server is known to hold: fresh servers would replace them with zeros."""
        goal = sclass.m + 1 if sclass.is_ec else sclass.copies
        floor = self._committed(chunk) or 0     # older copies miss committed writes
        held = {c.server: (c.version, c.length) for c in self.registry.of(chunk)
                if c.part == 0 and floor <= c.version <= version and not c.damaged
                and self.registry.alive(c)}
        # The last writer's copies, if their reports have not caught up with it yet;
        # not a new chunk's server that has since reported no room for one (its create
        # was refused: the writer gets other servers, or ENOSPC).
        last_version, last_servers = self.registry.expected.get(chunk, (0, []))
        for server in last_servers:
            known = self.registry.servers[server]
            if held.get(server, (0, 0))[0] < last_version < version \
                    and floor <= last_version and known.connected \
                    and (floor or known.free_bytes >= ROOM):
                held[server] = (last_version, held.get(server, (0, 0))[1])
        if held:
            newest = max(v for v, _ in held.values())
            chosen = [(s, v, n) for s, (v, n) in held.items() if v == newest]
            # Short of the goal (a copy's server died under an earlier write): fresh
            # servers too, which the writer fills from these before it writes, so an
            # fsync finds the bytes on as many copies as the class asks for.
            holders = [h for h in self.holders(chunk) if h.part == 0]
            chosen += [(c.server, 0, 0) for c in planner.spread(
                chunk, self._room(), holders, goal - len(chosen))]
        elif floor and not self.contents(chunk, version):
            raise ContentsUnknownError(chunk, floor, self.clock() - self.since)
        else:
            # beside a part is fine: a copy has its own store id
            copies = [h for h in self.holders(chunk) if h.part == 0]
            fresh = planner.spread(chunk, self._room(), copies, goal)
            chosen = [(c.server, 0, 0) for c in fresh]
        self.registry.write_began(chunk, version, [server for server, _, _ in chosen])
        return [mpb.ChunkLocation(address=self.registry.address(server), version=held,
                                  length=length) for server, held, length in chosen]

    def placement(self) -> list[str]:
        """The connected chunkservers with room for a new chunk, for a client that
        begins new chunks itself (it spreads them over these by chunk id)."""
        return [c.address for c in self._room()]

    def client_began(self, chunk: pb.Chunk, addresses) -> None:
        """A client began a new chunk itself, on these servers: readers are sent
        there before the servers' reports say so, as after a begin_write here."""
        ids = {s.address: s.server_id for s in self.registry.servers.values()}
        self.registry.write_began(chunk.id, chunk.version,
                                  [ids[a] for a in addresses if a in ids])

    def contents(self, chunk: int, version: int) -> list[mpb.ChunkLocation]:
        """Where a writer that began `version` reads the chunk's contents from when it
        has no whole copy to move: the copies and parts at the version before, or parts
        a repair already moved to `version` (it took the writer for dead)."""
        return self.locations(chunk, version - 1) or [
            loc for loc in self.locations(chunk, version) if loc.part]

    def _room(self) -> list[planner.Candidate]:
        return [planner.Candidate(s.server_id, s.address, s.free_bytes)
                for s in self.registry.connected() if s.free_bytes >= ROOM]

    def health(self) -> mpb.Health:
        done = self.finished or self.current
        damaged = sum(1 for copies in self.registry.copies.values()
                      for c in copies.values() if c.damaged)
        servers = [mpb.ServerHealth(server_id=s.server_id, address=s.address,
                                    connected=s.connected, free_bytes=s.free_bytes,
                                    used_bytes=s.used_bytes, chunks=s.chunks)
                   for s in sorted(self.registry.servers.values(), key=lambda s: s.address)]
        return mpb.Health(servers=servers, chunks=done.chunks,
                          healthy=done.states[planner.HEALTHY],
                          under_goal=done.states[planner.UNDER],
                          missing=done.states[planner.MISSING],
                          over_goal=done.states[planner.OVER], damaged=damaged,
                          orphans=len(self.orphans), jobs=len(self.jobs),
                          settled=self.finished is not None, writable=self.settled())
