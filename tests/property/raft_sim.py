"""A deterministic simulation of a Raft cluster in one process.

Virtual time in ticks; a network that drops, delays, duplicates and reorders
messages and can be partitioned; nodes that crash and restart with only what they
persisted; clients running a KV workload whose history is checked for
linearizability. The invariants of the Raft paper are checked as the run goes.
"""

import json
import random
from dataclasses import dataclass, field

from services.metadata.raft.core import (
    LEADER,
    Persisted,
    RaftCore,
    RaftOptions,
    sends_before_persist,
)
from services.metadata.raft.messages import NORMAL, Config, Entry, Message, MsgType, Ready


class InvariantViolation(AssertionError):
    pass


@dataclass
class Disk:
    """What survives a crash: hard state, the log after the snapshot, the snapshot."""

    term: int = 0
    vote: int = 0
    commit: int = 0
    entries: list[Entry] = field(default_factory=list)
    snapshot: object = None          # SnapshotMeta
    snapshot_state: dict | None = None
    applied: int = 0


class KV:
    """The replicated state machine: a dict with put, get, cas and append."""

    def __init__(self, state: dict | None = None):
        self.data = dict(state or {})

    def apply(self, op: list):
        kind, key = op[0], op[1]
        if kind == "put":
            self.data[key] = op[2]
            return "ok"
        if kind == "append":
            self.data[key] = self.data.get(key, "") + op[2]
            return "ok"
        if kind == "cas":
            if self.data.get(key) == op[2]:
                self.data[key] = op[3]
                return True
            return False
        return self.data.get(key)


class SimNode:
    def __init__(self, node_id: int, config: Config, opts: RaftOptions, rng: random.Random,
                 disk: Disk):
        self.id, self.disk = node_id, disk
        self.up = True
        self.kv = KV(disk.snapshot_state)
        self.applied = disk.snapshot.index if disk.snapshot else 0
        self.core = RaftCore(node_id, config, opts, Persisted(
            disk.term, disk.vote, disk.commit, disk.snapshot, tuple(disk.entries),
            self.applied), rng)
        self.results: dict[int, tuple[int, object]] = {}   # index -> (term, result)
        self.crash_mid_ready = False


@dataclass
class Pending:
    client: int
    op: list
    call: int
    index: int = 0
    term: int = 0
    node: int = 0
    read_ctx: bytes = b""
    read_index: int = -1


class Simulation:
    def __init__(self, n: int, seed: int, drop: float = 0.0, dup: float = 0.0,
                 max_delay: int = 2, snapshot_every: int = 0, lease_reads: bool = False):
        self.rng = random.Random(seed)
        self.opts = RaftOptions(election_ticks=10, heartbeat_ticks=2, max_inflight_msgs=8,
                                lease_reads=lease_reads)
        self.config = Config(frozenset(range(1, n + 1)))
        self.disks = {i: Disk() for i in self.config.voters}
        self.nodes = {i: self._boot(i) for i in self.config.voters}
        self.drop, self.dup, self.max_delay = drop, dup, max_delay
        self.snapshot_every = snapshot_every
        self.now = 0
        self.inflight: list[tuple[int, int, Message]] = []   # (deliver_at, seq, msg)
        self.seq = 0
        self.cut: set[frozenset[int]] = set()     # pairs that cannot talk
        self.leaders: dict[int, int] = {}         # term -> leader (Election Safety)
        self.checked_leaders: set[tuple[int, int]] = set()
        self.committed: dict[int, Entry] = {}     # index -> entry, as applied anywhere
        self.history: list[dict] = []
        self.pending: list[Pending] = []
        self.next_ctx = 0

    def _boot(self, i: int) -> SimNode:
        return SimNode(i, self.config, self.opts, random.Random(self.rng.random()),
                       self.disks[i])

    # -- faults -------------------------------------------------------------------------
    def partition(self, group: set[int]) -> None:
        """Cut every link between `group` and the rest."""
        others = set(self.nodes) - group
        self.cut = {frozenset((a, b)) for a in group for b in others}

    def heal(self) -> None:
        self.cut = set()

    def crash(self, i: int) -> None:
        self.nodes[i].up = False

    def crash_mid_ready(self, i: int) -> None:
        """Crash at the node's next Ready, after its early sends, before persisting."""
        self.nodes[i].crash_mid_ready = True

    def restart(self, i: int) -> None:
        if not self.nodes[i].up:
            self.nodes[i] = self._boot(i)

    # -- the run ------------------------------------------------------------------------
    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.step_tick()

    def step_tick(self) -> None:
        self.now += 1
        for node in self.nodes.values():
            if node.up:
                node.core.tick()
        self._deliver_due()
        for node in self.nodes.values():
            if node.up:
                self._handle_ready(node)
        self._expire_clients()

    def _deliver_due(self) -> None:
        due = [x for x in self.inflight if x[0] <= self.now]
        self.inflight = [x for x in self.inflight if x[0] > self.now]
        for _, _, m in sorted(due, key=lambda x: (x[0], x[1])):
            node = self.nodes[m.to]
            if node.up:
                node.core.step(m)
                self._handle_ready(node)

    def _send(self, m: Message, sender: SimNode) -> None:
        blocked = frozenset((m.frm, m.to)) in self.cut
        if blocked or self.rng.random() < self.drop:
            if m.type == MsgType.SNAP:
                sender.core.report_snapshot(m.to, False)
            return
        if m.type == MsgType.SNAP:
            m.snapshot_data = dict(sender.disk.snapshot_state or {})
            sender.core.report_snapshot(m.to, True)
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            self.seq += 1
            delay = self.rng.randint(0, self.max_delay)
            self.inflight.append((self.now + delay, self.seq, m))

    def _handle_ready(self, node: SimNode) -> None:
        core = node.core
        while node.up and (rd := core.ready()):
            early = sends_before_persist(core, rd)
            if early:
                for m in rd.messages:
                    self._send(m, node)
            if node.crash_mid_ready:
                node.up = False  # the appends went out, our own fsync never happened
                return
            self._persist(node, rd)
            if not early:
                for m in rd.messages:
                    self._send(m, node)
            self._apply(node, rd)
            core.advance(rd)
            self._check_leader(node)
            self._maybe_snapshot(node)

    def _persist(self, node: SimNode, rd: Ready) -> None:
        disk = node.disk
        if rd.hard_state:
            disk.term, disk.vote, disk.commit = rd.hard_state
        if rd.snapshot:
            disk.snapshot, disk.entries = rd.snapshot, []
            disk.snapshot_state = dict(rd.snapshot_data)
            node.kv = KV(rd.snapshot_data)
            node.applied = rd.snapshot.index
        if rd.entries:
            first = rd.entries[0].index
            base = disk.snapshot.index if disk.snapshot else 0
            del disk.entries[first - base - 1:]
            disk.entries.extend(rd.entries)

    def _apply(self, node: SimNode, rd: Ready) -> None:
        for entry in rd.committed:
            if entry.index != node.applied + 1:
                raise InvariantViolation(f"node {node.id} applies {entry.index} after "
                                         f"{node.applied}")
            seen = self.committed.setdefault(entry.index, entry)
            if (seen.term, seen.data) != (entry.term, entry.data):
                raise InvariantViolation(f"State Machine Safety: index {entry.index} is "
                                         f"{seen} on one node, {entry} on node {node.id}")
            result = node.kv.apply(json.loads(entry.data)) if entry.kind == NORMAL else None
            node.applied = entry.index
            node.disk.applied = entry.index
            node.results[entry.index] = (entry.term, result)
        for rs in rd.read_states:
            for p in self.pending:
                if p.read_ctx == rs.context and p.node == node.id:
                    p.read_index = rs.index
        self._complete_clients(node)

    def _maybe_snapshot(self, node: SimNode) -> None:
        base = node.core.snapshot.index
        if self.snapshot_every and node.applied - base >= self.snapshot_every:
            node.core.compact(node.applied)
            node.disk.snapshot = node.core.snapshot
            node.disk.snapshot_state = dict(node.kv.data)
            node.disk.entries = [e for e in node.disk.entries if e.index > node.applied]

    def _check_leader(self, node: SimNode) -> None:
        core = node.core
        if core.role != LEADER:
            return
        known = self.leaders.setdefault(core.term, node.id)
        if known != node.id:
            raise InvariantViolation(f"Election Safety: term {core.term} has leaders "
                                     f"{known} and {node.id}")
        if (core.term, node.id) in self.checked_leaders:
            return
        # Leader Completeness, checked as the leader takes office: everything committed
        # so far (necessarily in earlier terms) must be in its log.
        self.checked_leaders.add((core.term, node.id))
        for index, entry in self.committed.items():
            if index > core.snapshot.index and core.term_at(index) != entry.term:
                raise InvariantViolation(f"Leader Completeness: leader {node.id} of term "
                                         f"{core.term} lacks committed entry {index}")

    # -- clients ------------------------------------------------------------------------
    def leader(self) -> SimNode | None:
        live = [n for n in self.nodes.values() if n.up and n.core.role == LEADER]
        return max(live, key=lambda n: n.core.term) if live else None

    def client_op(self, client: int, op: list) -> None:
        """Start an operation at the current leader (or fail at once if there is none)."""
        if any(p.client == client for p in self.pending):
            return  # one operation at a time per client, as a real client waits
        # A client may still talk to a deposed leader that has not noticed yet.
        leaders = [n for n in self.nodes.values() if n.up and n.core.role == LEADER]
        p = Pending(client, op, self.now)
        if not leaders:
            return
        node = self.rng.choice(leaders)
        p.node = node.id
        if op[0] == "get":
            self.next_ctx += 1
            p.read_ctx = b"r%d" % self.next_ctx
            if not node.core.read_index(p.read_ctx, lease=self.opts.lease_reads):
                return
        else:
            placed = node.core.propose([json.dumps(op).encode()])
            if placed is None:
                return
            p.index, p.term = placed
        self.pending.append(p)
        self._handle_ready(node)

    def _complete_clients(self, node: SimNode) -> None:
        still = []
        for p in self.pending:
            if p.node != node.id:
                still.append(p)
            elif p.read_ctx and 0 <= p.read_index <= node.applied:
                self._record(p, node.kv.apply(p.op))
            elif p.index and p.index in node.results:
                term, result = node.results[p.index]
                if term == p.term:
                    self._record(p, result)
                # else: overwritten by another term's entry, so never committed: the
                # client saw a failure and the operation is not part of the history
            else:
                still.append(p)
        self.pending = still

    def _expire_clients(self, timeout: int = 60) -> None:
        for p in [p for p in self.pending if self.now - p.call > timeout]:
            self.pending.remove(p)
            self._record(p, None, returned=False)

    def _record(self, p: Pending, output, returned: bool = True) -> None:
        if not returned and p.op[0] == "get":
            return  # a read that never returned changed nothing and told nobody anything
        self.history.append({"client": p.client, "call": p.call,
                             "ret": self.now if returned else None,
                             "input": tuple(p.op), "output": output})

    def finish(self) -> None:
        """Unknown outcome for whatever is still pending."""
        for p in self.pending:
            self._record(p, None, returned=False)
        self.pending = []

    # -- whole-run checks ---------------------------------------------------------------
    def check_log_matching(self) -> None:
        """Two logs holding an entry with the same index and term are identical up to it."""
        cores = [n.core for n in self.nodes.values()]
        for a in cores:
            for b in cores:
                if a.id >= b.id:
                    continue
                lo = max(a.snapshot.index, b.snapshot.index) + 1
                hi = min(a.last_index(), b.last_index())
                agreed = False
                for index in range(hi, lo - 1, -1):
                    ea = a.log[index - a.snapshot.index - 1]
                    eb = b.log[index - b.snapshot.index - 1]
                    if agreed and ea != eb:
                        raise InvariantViolation(f"Log Matching: nodes {a.id} and {b.id} "
                                                 f"differ at {index} below a common entry")
                    agreed = agreed or ea.term == eb.term
                    if ea.term == eb.term and ea != eb:
                        raise InvariantViolation(f"Log Matching: ({index}, t{ea.term}) holds "
                                                 f"different data on {a.id} and {b.id}")
