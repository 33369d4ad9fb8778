"""The shell around the Raft core: timers, the durable log, the transport and the
state machine, driven by one asyncio task.

Each turn of the loop steps what arrived (messages, ticks, proposals, reads) into
the core, then carries out its Ready in the order that keeps Raft safe: persist
(one fsync for the whole batch: group commit), then send, then apply.
"""

import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.common.durable_files import replace_durably
from services.metadata.raft.core import (
    LEADER,
    Persisted,
    RaftCore,
    RaftOptions,
    sends_before_persist,
)
from services.metadata.raft.disk_space import DEFAULT_RESERVE, DiskSpace
from services.metadata.raft.log_store import LogStore
from services.metadata.raft.messages import Config, Entry, Message, MsgType, SnapshotMeta
from services.metadata.state_machine import MACHINES

log = logging.getLogger(__name__)


# A Ready this small, with nothing else waiting, is fsynced on the event loop: the
# hop to a thread costs more latency than it saves (measured: p50 2.05 -> 1.95 ms).
INLINE_SYNC_ENTRIES = 4
STALL_WARN_TICKS = 4   # a tick this late is logged: the node could not keep time
# Committed entries applied per step of the loop: a burst of thousands (an rm -rf)
# applied in one go held the loop for most of a second, and a leader that cannot
# send heartbeats that long is voted out.
APPLY_SLICE = 128


class NotLeaderError(Exception):
    """This node cannot take the request; `leader_address` may (empty if unknown)."""

    def __init__(self, leader_id: int, leader_address: str):
        where = f"node {leader_id} at {leader_address}" if leader_id else "unknown yet"
        super().__init__(f"not the leader; the leader is {where}")
        self.leader_id, self.leader_address = leader_id, leader_address


class MembershipBusyError(Exception):
    """A membership change cannot start now; retrying shortly will work."""


def next_membership(config: Config, known: dict[int, str], action: str, node: int,
                    address: str) -> Config:
    """The membership after one change; ValueError if the change makes no sense."""
    voters, learners = set(config.voters), set(config.learners)
    addresses = {**known, **config.address_book()}
    if action in ("add-learner", "add-voter"):
        if node in config.members:
            raise ValueError(f"node {node} is already a member")
        if not address:
            raise ValueError(f"{action} needs the new node's HOST:PORT")
        (learners if action == "add-learner" else voters).add(node)
        addresses[node] = address
    elif action == "promote":
        if node not in learners:
            raise ValueError(f"node {node} is not a learner")
        learners.discard(node)
        voters.add(node)
    elif action == "demote":
        if node not in voters or len(voters) == 1:
            raise ValueError(f"node {node} is not a voter, or the last one")
        voters.discard(node)
        learners.add(node)
    elif action == "remove":
        if node not in config.members:
            raise ValueError(f"node {node} is not a member")
        if config.voters == {node}:
            raise ValueError("cannot remove the last voter")
        voters.discard(node)
        learners.discard(node)
    else:
        raise ValueError(f"unknown membership action {action!r}")
    return config.with_members(voters, learners, addresses)


def _writes_log(m: Message) -> bool:
    """A message whose acceptance writes to the log or installs a snapshot."""
    return (m.type == MsgType.APP and bool(m.entries)) or m.type == MsgType.SNAP


class ProposalLostError(Exception):
    """Leadership changed before the proposal committed; it was not applied."""


class LeadershipLostError(TimeoutError):
    """This node stopped leading before the proposal applied. Whether a later leader
    commits it is unknown: a retry with the same request numbers is safe."""


@dataclass(frozen=True)
class NodeOptions:
    tick_s: float = 0.05             # election timeout = election_ticks * tick_s
    snapshot_every: int = 100_000    # applied entries between snapshots
    state_machine: str = "namespace"  # or "counter", to measure consensus alone
    raft: RaftOptions = RaftOptions()
    disk_reserve: int = DEFAULT_RESERVE  # bytes kept free on the data disk (disk_space.py)
    # How fast this node's clock runs against real time: 1.0 but in fault tests, which
    # give nodes clocks that drift apart (leases are safe within the margin docs/raft.md
    # states).
    clock_rate: float = 1.0


Outcome = Callable[[object], None]   # gets (first index, results) or an exception


class _Waiter:
    """A proposal of `count` commands from `first`, waiting for them to apply."""

    __slots__ = ("term", "done", "first", "count", "results", "finished", "deadline",
                 "times")

    def __init__(self, done: Outcome, count: int, deadline: float):
        self.done, self.count, self.deadline = done, count, deadline
        self.term = self.first = 0
        self.results: list = []
        self.finished = False
        # Wall-clock ns at: submitted, appended to the leader's log, committed, applied.
        self.times = [time.time_ns(), 0, 0, 0]

    def applied(self, entry: Entry, result) -> None:
        if entry.term != self.term:
            self.fail(ProposalLostError(
                f"entry {entry.index} went to a later leader; the proposal was lost"))
            return
        self.results.append(result)
        if len(self.results) == self.count and not self.finished:
            self.times[3] = time.time_ns()
            self.finished = True
            self.done((self.first, self.results))

    def fail(self, exc: Exception) -> None:
        if not self.finished:
            self.finished = True
            self.done(exc)


class RaftNode:
    def __init__(self, node_id: int, peers: dict[int, str], data_dir: str,
                 options: NodeOptions | None = None, own_address: str = ""):
        """`peers`: the voters the cluster started with (this node among them), or,
        for a node joining a running cluster, its current members."""
        options = options or NodeOptions()
        self.id, self.data_dir, self.options = node_id, data_dir, options
        self.peers = dict(peers)
        if own_address:
            self.peers[node_id] = own_address
        os.makedirs(data_dir, exist_ok=True)
        self.disk = DiskSpace(data_dir, options.disk_reserve)
        self._low_since = 0.0      # when the disk went below its reserve (0: it is not)
        self._handed_over_at = 0.0
        self.log = LogStore(os.path.join(data_dir, "raft-log"))
        self.machine = MACHINES[options.state_machine](data_dir)
        self.core = self._restore_core(Config(frozenset(peers)))
        self.on_members_changed: Callable[[dict[int, str]], None] = lambda peers: None
        self._known_config = None
        self.leader_changes = 0
        self.failed = asyncio.Event()   # set if the loop died: the process must exit
        self._seen_leader = 0
        self._saved_vote = self.log.hard_state()[:2]
        self._inbox: list[Message] = []
        self._actions: list[Callable[[], None]] = []
        self._proposals: list[tuple[list[bytes], _Waiter]] = []
        self._deadlines: collections.deque[_Waiter] = collections.deque()
        self._reads: list[asyncio.Future] = []            # reads waiting for a ReadIndex
        self._read_futures: dict[bytes, list[asyncio.Future]] = {}  # asked, per context
        self._waiting: dict[int, _Waiter] = {}             # log index -> its proposal
        self._read_waiting: list[tuple[int, list[asyncio.Future]]] = []  # until applied
        self._read_seq = 0
        self._read_round: bytes | None = None     # the ReadIndex context in flight
        self._read_round_term = 0
        self._flushing: asyncio.Future | None = None   # a snapshot's slow part, beside
        self._checkpoint: asyncio.Future | None = None  # taking the snapshot, in a thread
        self._checkpoint_index = 0
        self._snapshot_retry_at = 0          # after a failed snapshot: not before this
        # Committed entries not applied yet: a slice per step of the loop, none while a
        # checkpoint is being taken (it must be exactly at its index).
        self._to_apply: collections.deque[Entry] = collections.deque()
        self._wake = asyncio.Event()
        self._ticks = 0
        # When the core's last ticks were given (a lease is shorter than this ring):
        self._tick_times = [0.0] * (self.options.raft.election_ticks + 1)
        self._tasks: list[asyncio.Task] = []
        self.send: Callable[[list[Message]], None] = lambda messages: None
        self.send_snapshot: Callable[[Message, str], None] = lambda m, path: None
        # Told each applied batch, in order (log followers keep recent entries that
        # a snapshot may compact away before they read them from the log).
        self.on_applied: list[Callable[[list[Entry]], None]] = []
        self.stopped = False

    # -- start-up -----------------------------------------------------------------------
    def _snapshot_meta_path(self, index: int) -> str:
        return os.path.join(self.data_dir, f"snapshot-{index:020d}.json")

    def _read_snapshot_meta(self) -> SnapshotMeta | None:
        """The membership and term at the log's compaction point. One file per point:
        a crash between writing a new one and compacting the log keeps the old one."""
        index = self.log.snapshot_index
        if index == 0:
            return None
        with open(self._snapshot_meta_path(index)) as f:
            raw = json.load(f)
        return SnapshotMeta(raw["index"], raw["term"], Config.decode(raw["config"].encode()))

    def _write_snapshot_meta(self, meta: SnapshotMeta) -> None:
        path = self._snapshot_meta_path(meta.index)
        with open(path + ".tmp", "w") as f:
            json.dump({"index": meta.index, "term": meta.term,
                       "config": meta.config.encode().decode()}, f)
            f.flush()
            os.fsync(f.fileno())
        replace_durably(path + ".tmp", path)

    def _forget_snapshot_metas(self, keep: int) -> None:
        for name in os.listdir(self.data_dir):
            if name.startswith("snapshot-") and name != os.path.basename(
                    self._snapshot_meta_path(keep)):
                os.unlink(os.path.join(self.data_dir, name))

    def _restore_core(self, initial: Config) -> RaftCore:
        term, vote, commit = self.log.hard_state()
        snapshot = self._read_snapshot_meta()
        applied = self.machine.applied_index
        if snapshot and applied < snapshot.index:
            raise RuntimeError(
                f"node {self.id}: the projection is at index {applied} but the log was "
                f"compacted up to {snapshot.index}; wipe {self.data_dir} so the node "
                "catches up from the leader's snapshot")
        entries = tuple(self.log.entries(self.log.first_index, self.log.last_index + 1))
        persisted = Persisted(term, vote, commit, snapshot, entries, applied)
        return RaftCore(self.id, initial, self.options.raft, persisted,
                        random.Random(f"{self.id}-{time.time_ns()}"))

    # -- the loop -----------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._ticker(), name="raft-ticker"),
                       asyncio.create_task(self._loop(), name="raft-loop")]

    def _now(self) -> float:
        """This node's clock (real time but in fault tests: see NodeOptions)."""
        return time.monotonic() * self.options.clock_rate

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        real_tick = self.options.tick_s / self.options.clock_rate
        while True:
            start = loop.time()
            await asyncio.sleep(real_tick)
            late = loop.time() - start - real_tick
            if late > STALL_WARN_TICKS * self.options.tick_s:
                log.warning("node %d: the event loop was held up for %.2f s (an election "
                            "times out after %d-%d ticks of %.0f ms)", self.id, late,
                            self.options.raft.election_ticks,
                            2 * self.options.raft.election_ticks, self.options.tick_s * 1000)
            self._ticks += 1
            self._wake.set()

    def _lease_holds(self) -> bool:
        """The core's lease (core.lease_valid), checked against real time too. The
        core's clock counts turns of the ticker, so a node whose loop stalled does not
        take its leader for dead the moment it resumes (its messages may not be read
        yet). A lease must not outlast real time, though: a leader that was paused
        (SIGSTOP, a stalled loop, a descheduled VM) resumes with a clock that barely
        moved. So the time since the core's clock reached the lease's start tick
        (when the heartbeat the quorum answered was sent, or before) must be within
        the lease too."""
        start = self.core.held_lease()
        if start is None:
            return False
        started = self._tick_times[start % len(self._tick_times)]
        return self._now() - started < self.core.lease_ticks() * self.options.tick_s

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._to_apply:
                await asyncio.sleep(0)   # others' turn between slices of applying
            try:
                await self._turn()
            except Exception:
                log.exception("node %d: the raft loop failed; stopping the node", self.id)
                self.stopped = True
                self.failed.set()
                raise

    async def _turn(self) -> None:
        """Step in what arrived, then carry out Readies until the core is quiet.
        Whatever arrives during an fsync joins the next batch: group commit."""
        self._maybe_snapshot()      # a snapshot's step in a thread may have ended
        if self._apply_slice():     # what earlier turns left, a slice at a time
            self._wake.set()        # then the rest of the turn, after other work
            return
        self._step_inputs()
        core = self.core
        while rd := core.ready():
            await self._carry_out(rd)
            core.advance(rd)
            if self._apply_slice():
                await asyncio.sleep(0)   # between slices, the event loop's other work
            self._release_reads()
            self._maybe_snapshot()
            self._follow_membership()
            self._step_inputs()

    def _step_inputs(self) -> None:
        core = self.core
        actions, self._actions = self._actions, []
        for action in actions:
            action()
        inbox, self._inbox = self._inbox, []
        if self._disk_low() and self.disk.critical():
            inbox = [m for m in inbox if not _writes_log(m)]
        for m in inbox:
            core.step(m)
        ticks, self._ticks = self._ticks, 0
        for _ in range(ticks):
            core.tick()
            self._tick_times[core.ticks % len(self._tick_times)] = self._now()
        if core.leader != self._seen_leader:
            self._seen_leader = core.leader
            self.leader_changes += bool(core.leader)
            log.info("node %d: term %d, %s", self.id, core.term,
                     f"the leader is node {core.leader}" if core.leader else "no leader known")
        if ticks:
            self._expire_proposals()
        if self._deadlines and core.role != LEADER:
            self._abandon_proposals()
        self._take_proposals()
        self._take_reads()

    def _take_proposals(self) -> None:
        proposals, self._proposals = self._proposals, []
        if not proposals:
            return
        placed = None
        if self.core.role == LEADER:
            placed = self.core.propose([c for commands, _ in proposals for c in commands])
        if placed is None:
            refusal = self.not_leader()
            for _, waiter in proposals:
                waiter.fail(refusal)
            return
        index, term = placed
        now = time.time_ns()
        for commands, waiter in proposals:
            waiter.term, waiter.first = term, index
            waiter.times[1] = now
            for i in range(index, index + len(commands)):
                self._waiting[i] = waiter
            self._deadlines.append(waiter)
            index += len(commands)

    def _expire_proposals(self) -> None:
        """Proposals not applied in time: their outcome is unknown to the caller."""
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines and (deadlines[0].finished or deadlines[0].deadline < now):
            deadlines.popleft().fail(TimeoutError("not applied before the deadline"))

    def _disk_low(self) -> bool:
        """Below the disk's reserve (disk_space.py): say so once, and a leader hands
        leadership to a node that may have room (at most every 2 s)."""
        if not self.disk.low():
            if self._low_since:
                log.warning("node %d: %d MiB free again on %s: writes resume", self.id,
                            self.disk.free() >> 20, self.data_dir)
            self._low_since = 0.0
            return False
        now = time.monotonic()
        if not self._low_since:
            self._low_since = now
            log.error("%s", self.disk.describe(self.id))
        if self.core.role == LEADER and now - self._handed_over_at >= 2.0:
            self._handed_over_at = now
            self.transfer_leadership()
        return True

    def _abandon_proposals(self) -> None:
        """No longer the leader (cut off, or deposed): the clients waiting on proposals
        hear it now and retry elsewhere, instead of waiting out their deadlines."""
        lost = LeadershipLostError("this node stopped leading before the proposal "
                                   "applied; its outcome is unknown: retry")
        while self._deadlines:
            self._deadlines.popleft().fail(lost)

    def _take_reads(self) -> None:
        """Reads wait for the ReadIndex round in flight to finish, then all that
        gathered meanwhile share the next one: a few rounds per round trip, however
        many reads (each round is a heartbeat to every follower and back)."""
        if self._read_round is not None:
            if self.core.role == LEADER and self.core.term == self._read_round_term:
                return
            # Leadership went while the round was out: it will never be answered.
            self._fail_reads(self._read_futures.pop(self._read_round, []))
            self._read_round = None
        reads, self._reads = [f for f in self._reads if not f.done()], []
        if not reads:
            return
        self._read_seq += 1
        context = f"{self.id}:{self._read_seq}".encode()
        if self.core.read_index(context, lease=self.options.raft.lease_reads
                                and self._lease_holds()):
            self._read_futures[context] = reads
            self._read_round, self._read_round_term = context, self.core.term
            return
        self._fail_reads(reads)

    def _fail_reads(self, futures: list[asyncio.Future]) -> None:
        refusal = self.not_leader()
        for fut in futures:
            if not fut.done():
                fut.set_exception(refusal)

    async def _carry_out(self, rd) -> None:
        """Persist, send, apply: in the order that keeps Raft's promises."""
        early = sends_before_persist(self.core, rd)
        if early:
            self._send(rd.messages)  # replicate while our own fsync runs
        if rd.snapshot:
            await self._checkpoint_taken()
            self._install_snapshot(rd.snapshot, rd.snapshot_data)
        if rd.entries:
            self.log.append(rd.entries)
        if rd.hard_state and rd.hard_state[:2] != self._saved_vote:
            await asyncio.to_thread(self.log.save_hard_state, *rd.hard_state)
            self._saved_vote = rd.hard_state[:2]
        if rd.entries:
            # A lone small write syncs inline (a thread hop would only add latency),
            # unless messages went out early: they leave only when the loop runs, and a
            # blocking fsync would hold them until it ends (3.9 -> 3.5 ms per commit).
            if len(rd.entries) <= INLINE_SYNC_ENTRIES and not self._inbox and not early:
                self.log.sync()
            else:
                await asyncio.to_thread(self.log.sync)
        if not early:
            self._send(rd.messages)
        if rd.committed:
            self._apply(rd.committed)
        for state in rd.read_states:
            if futures := self._read_futures.pop(state.context, None):
                self._read_waiting.append((state.index, futures))
            if state.context == self._read_round:
                self._read_round = None
                self._wake.set()  # the reads that gathered meanwhile go next

    def _send(self, messages: list[Message]) -> None:
        plain = []
        for m in messages:
            if m.type == MsgType.SNAP:
                path = self.machine.latest_snapshot()
                if path is None:
                    self.core.report_snapshot(m.to, False)
                else:
                    self.send_snapshot(m, path)
            else:
                plain.append(m)
        if plain:
            self.send(plain)

    def _apply(self, entries: list[Entry]) -> None:
        """Queue committed entries: the turn applies a slice of them at its end."""
        self._to_apply.extend(entries)

    def _apply_slice(self) -> bool:
        """Apply up to APPLY_SLICE queued entries (False: none), unless a checkpoint
        is being taken; the loop comes back for the rest after other work."""
        if self._checkpoint is not None or not self._to_apply:
            return False
        queue = self._to_apply
        entries = [queue.popleft() for _ in range(min(APPLY_SLICE, len(queue)))]
        self._apply_now(entries)
        self._release_reads()
        if queue:
            self._wake.set()
        return True

    def _apply_now(self, entries: list[Entry]) -> None:
        committed_at = time.time_ns()
        for entry in entries:
            if (waiter := self._waiting.get(entry.index)) is not None:
                waiter.times[2] = committed_at
        results = self.machine.apply(entries)
        for entry, result in zip(entries, results, strict=True):
            waiter = self._waiting.pop(entry.index, None)
            if waiter is not None:
                waiter.applied(entry, result)
        for listener in self.on_applied:
            listener(entries)

    def _install_snapshot(self, meta: SnapshotMeta, staged: str) -> None:
        """State first, log second: a crash in between leaves a projection ahead of
        its log, which a restart handles (entries up to the applied index are never
        applied again, and the leader overwrites or resends what differs)."""
        log.info("node %d: installing snapshot at index %d", self.id, meta.index)
        self._to_apply.clear()     # all committed before the snapshot, which holds them
        self.machine.install(staged)
        self._write_snapshot_meta(meta)
        self.log.compact(meta.index, meta.term)
        self._forget_snapshot_metas(keep=meta.index)

    def _follow_membership(self) -> None:
        """Learn where members added since the start listen, and tell the transport."""
        config = self.core.config
        if config is self._known_config:
            return
        self._known_config = config
        self.peers.update(config.address_book())
        self.on_members_changed({i: a for i, a in self.peers.items()
                                 if i in config.members or i == self.id})

    def _maybe_snapshot(self) -> None:
        """Every snapshot_every entries, a snapshot at the applied index, and the log
        compacted up to it, without holding up this loop (a leader that stopped
        answering for longer than the election timeout was voted out, and every
        session stream and delegation with it). Two steps in a thread: writing the
        state machine's memory to disk (seconds for a big memtable) while entries go
        on being applied, then the checkpoint itself, while committed entries are
        held back so that it is exactly at the index it is named by. Replication,
        commits and heartbeats go on throughout; only applying waits."""
        if self._checkpoint is not None:
            if self._checkpoint.done():
                self._finish_checkpoint()
            return
        if self.disk.low():        # _step_inputs already said so and handed over
            return
        applied = self.machine.applied_index
        if applied - self.core.snapshot.index < self.options.snapshot_every \
                or applied < self._snapshot_retry_at:
            return
        if self._flushing is None:
            self._flushing = self._in_thread(self.machine.flush)
            return
        if not self._flushing.done():
            return
        flushed, self._flushing = self._flushing, None
        if flushed.exception() is not None:
            log.warning("node %d: writing the projection to disk before a snapshot "
                        "failed: %s", self.id, flushed.exception())
        self._checkpoint_index = applied
        self._checkpoint = self._in_thread(self.machine.checkpoint)

    def _in_thread(self, fn) -> asyncio.Future:
        future = asyncio.ensure_future(asyncio.to_thread(fn))
        future.add_done_callback(lambda _f: self._wake.set())
        return future

    def _finish_checkpoint(self, apply: bool = True) -> None:
        """The checkpoint is taken: compact the log up to it (unless it failed), then
        apply what was held back meanwhile (`apply` False: stopping; those entries are
        in the log and are applied at the next start)."""
        done, self._checkpoint = self._checkpoint, None
        index = self._checkpoint_index
        if done.exception() is not None:
            # tried again after a tenth of the interval, not at every turn (a full
            # disk would otherwise keep both threads busy)
            self._snapshot_retry_at = index + max(1, self.options.snapshot_every // 10)
            log.warning("node %d: taking a snapshot at index %d failed (trying again "
                        "at index %d): %s", self.id, index, self._snapshot_retry_at,
                        done.exception())
        else:
            self.core.compact(index)
            self._write_snapshot_meta(self.core.snapshot)
            self.log.compact(index, self.core.snapshot.term)
            self._forget_snapshot_metas(keep=index)
        if apply:
            self._apply_slice()
        else:
            self._to_apply.clear()    # in the log, and applied at the next start

    async def _checkpoint_taken(self, apply: bool = True) -> None:
        """Before the state machine is replaced or closed: the thread is done with it."""
        if self._checkpoint is not None:
            await asyncio.wait([self._checkpoint])
            self._finish_checkpoint(apply)
        if self._flushing is not None:
            await asyncio.wait([self._flushing])

    # -- reads --------------------------------------------------------------------------
    def _release_reads(self) -> None:
        applied = self.machine.applied_index
        still = []
        for index, futures in self._read_waiting:
            if index <= applied:
                for fut in futures:
                    if not fut.done():
                        fut.set_result(applied)
            else:
                still.append((index, futures))
        self._read_waiting = still

    def deliver(self, m: Message) -> None:
        self._inbox.append(m)
        self._wake.set()

    def _later(self, action: Callable[[], None]) -> None:
        """Run `action` on the core at the next turn (never in the middle of a Ready)."""
        self._actions.append(action)
        self._wake.set()

    def report_unreachable(self, peer: int) -> None:
        self._later(lambda: self.core.report_unreachable(peer))

    def report_snapshot(self, peer: int, ok: bool) -> None:
        self._later(lambda: self.core.report_snapshot(peer, ok))

    def submit(self, commands: list[bytes], done: Outcome, timeout: float = 10.0) -> _Waiter:
        """Replicate and apply `commands` together; `done` gets (first index, results),
        NotLeaderError or ProposalLostError (not applied), or TimeoutError (unknown).
        The returned waiter's `times` say when each stage happened, for tracing."""
        waiter = _Waiter(done, len(commands), time.monotonic() + timeout)
        if self.core.role != LEADER:
            waiter.fail(self.not_leader())
            return waiter
        self._proposals.append((commands, waiter))
        self._wake.set()
        return waiter

    async def propose(self, commands: list[bytes], timeout: float = 10.0
                      ) -> tuple[int, list]:
        fut = asyncio.get_running_loop().create_future()

        def done(outcome) -> None:
            if fut.done():
                return
            if isinstance(outcome, Exception):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
        self.submit(commands, done, timeout)
        return await fut

    async def read_barrier(self, timeout: float = 5.0) -> int:
        """Wait until this node may serve a linearizable read; returns the applied
        index to serve it at. NotLeaderError if this node is not the leader."""
        if self.core.role != LEADER:
            raise self.not_leader()
        core = self.core
        if (self.options.raft.lease_reads and core.term_at(core.commit) == core.term
                and self.machine.applied_index >= core.commit
                and self._lease_holds()):
            return self.machine.applied_index   # the lease holds and all is applied:
            # what the loop's round would answer, without waiting for a turn of it
        fut = asyncio.get_running_loop().create_future()
        self._reads.append(fut)
        self._wake.set()
        return await asyncio.wait_for(fut, timeout)

    async def wait_applied(self, index: int, timeout: float = 5.0) -> int:
        """Wait until this node (any role) has applied `index` (follower reads)."""
        if self.machine.applied_index >= index:
            return self.machine.applied_index
        fut = asyncio.get_running_loop().create_future()
        self._read_waiting.append((index, [fut]))
        return await asyncio.wait_for(fut, timeout)

    def transfer_leadership(self, to: int = 0) -> bool:
        """Hand leadership to `to` (0: the most up-to-date voter). False if this node
        is not the leader or there is nobody to hand it to."""
        if self.core.role != LEADER:
            return False
        if not to:
            candidates = [(pr.match, peer) for peer, pr in self.core.progress.items()
                          if peer != self.id and peer in self.core.config.voters]
            if not candidates:
                return False
            to = max(candidates)[1]
        if to not in self.core.config.voters or to == self.id:
            return False
        self._later(lambda: self.core.transfer_leadership(to))
        return True

    def change_membership(self, action: str, node: int, address: str, done: Outcome,
                          timeout: float = 10.0) -> None:
        """One server at a time: add-learner, add-voter, promote, demote, remove.
        `done` gets (index, config) once the change commits, or an exception."""
        waiter = _Waiter(lambda outcome: done(
            outcome if isinstance(outcome, Exception) else (outcome[0], self.core.config)),
            1, time.monotonic() + timeout)

        def propose() -> None:
            try:
                config = next_membership(self.core.config, self.peers, action, node, address)
            except ValueError as exc:
                waiter.fail(exc)
                return
            index = self.core.propose_config(config) if self.core.role == LEADER else None
            if index is None:
                waiter.fail(self.not_leader() if self.core.role != LEADER else
                            MembershipBusyError("another membership change is still "
                                                "committing, or this leader has not yet "
                                                "committed in its term; retry shortly"))
                return
            waiter.term, waiter.first = self.core.term, index
            self._waiting[index] = waiter
            self._deadlines.append(waiter)
        self._later(propose)

    def not_leader(self) -> NotLeaderError:
        leader = self.core.leader if self.core.leader != self.id else 0
        return NotLeaderError(leader, self.peers.get(leader, ""))

    def status(self) -> dict:
        s = self.core.status()
        s["address"] = self.peers.get(self.id, "")
        s["leader_address"] = self.peers.get(self.core.leader, "")
        s["applied_index"] = self.machine.applied_index
        s["log_bytes"] = self.log.size_bytes
        return s

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for waiter in [*self._waiting.values(), *self._deadlines]:
            waiter.fail(TimeoutError("the node shut down before the proposal applied"))
        with contextlib.suppress(Exception):
            await self._checkpoint_taken(apply=False)
        self.log.close()
        self.machine.close()
        self.stopped = True
