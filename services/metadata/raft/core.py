"""A sans-IO Raft core in the style of etcd's raft library.

Ticks, messages and proposals go in; a Ready comes out listing what to persist,
what to send and what to apply. The core never touches a disk, a socket or a
clock, which is what lets tests/property drive it through a simulated network.

It implements leader election with randomized timeouts, PreVote and CheckQuorum,
pipelined and batched replication with flow control, fast back-off on mismatch,
snapshots (metadata only: the shell moves the bytes), single-server membership
changes with learners, leadership transfer and ReadIndex.
"""

import random
from dataclasses import dataclass

from services.metadata.raft.messages import (
    CAMPAIGN_TRANSFER,
    CONFIG,
    NOOP,
    NORMAL,
    Config,
    Entry,
    Message,
    MsgType,
    ReadState,
    Ready,
    SnapshotMeta,
)
from services.metadata.raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress

FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER = "follower", "pre-candidate", "candidate", "leader"


LEADER_MESSAGES = frozenset({MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP, MsgType.TIMEOUT_NOW})


def sends_before_persist(core: "RaftCore", rd: Ready) -> bool:
    """May the shell send this Ready's messages before persisting it? Yes for a
    leader's own traffic (its copy counts only once persisted); anything that
    promises durability (votes, append answers) must wait for the fsync."""
    return (core.role == LEADER and rd.hard_state is None and rd.snapshot is None
            and all(m.type in LEADER_MESSAGES for m in rd.messages))


class RaftInvariantError(Exception):
    """The core found its own state impossible: a bug or a lost fsync. Stop the node."""


@dataclass(frozen=True)
class RaftOptions:
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_bytes: int = 1 << 20        # entries per append message
    max_inflight_msgs: int = 256        # per follower
    max_inflight_bytes: int = 64 << 20  # per follower
    lease_reads: bool = False           # serve reads on the leader's lease (see lease_valid)
    lease_margin_ticks: int = 1         # a lease ends this much early: clock drift


@dataclass(frozen=True)
class Persisted:
    """What a node finds on its disk when it starts."""

    term: int = 0
    vote: int = 0
    commit: int = 0
    snapshot: SnapshotMeta | None = None
    entries: tuple[Entry, ...] = ()
    applied: int = 0


class RaftCore:
    def __init__(self, node_id: int, initial: Config, options: RaftOptions = RaftOptions(),
                 persisted: Persisted = Persisted(), rng: random.Random | None = None):
        self.id = node_id
        self.opts = options
        self.rng = rng or random.Random()
        snap = persisted.snapshot or SnapshotMeta(0, 0, initial)
        self.snapshot = snap
        self.log: list[Entry] = list(persisted.entries)
        if self.log and self.log[0].index != snap.index + 1:
            raise RaftInvariantError(f"log starts at {self.log[0].index}, snapshot ends at "
                                     f"{snap.index}")
        self.configs: list[tuple[int, Config]] = [(snap.index, snap.config)]
        self.configs += [(e.index, Config.decode(e.data)) for e in self.log if e.kind == CONFIG]
        self.term, self.vote = persisted.term, persisted.vote
        self.commit = max(persisted.commit, snap.index, persisted.applied)
        self.handed = max(persisted.applied, snap.index)   # last index given to apply
        self.persisted_index = self.last_index()
        self.role = FOLLOWER
        self.leader = 0
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.ticks = 0                      # this node's clock, for leases
        self.randomized_timeout = 0
        self.transferee = 0
        self.pending_conf_index = 0
        self.reads: list[tuple[bytes, int, set[int]]] = []   # ReadIndex queue
        self.reads_waiting: list[bytes] = []   # before the leader commits in its term
        self._outbox: list[Message] = []
        self._read_states: list[ReadState] = []
        self._pending_snapshot: tuple[SnapshotMeta, object] | None = None
        self._last_hard_state = (self.term, self.vote, self.commit)
        self._reset_election_timeout()

    # -- log access -----------------------------------------------------------------
    def last_index(self) -> int:
        return self.log[-1].index if self.log else self.snapshot.index

    def last_term(self) -> int:
        return self.log[-1].term if self.log else self.snapshot.term

    def term_at(self, index: int) -> int | None:
        """The term of entry `index`; None if compacted away or beyond the log."""
        first = self.snapshot.index
        if index == first:
            return self.snapshot.term
        if index < first or index > self.last_index():
            return None
        return self.log[index - first - 1].term

    def entries_from(self, lo: int, max_bytes: int) -> list[Entry]:
        start = lo - self.snapshot.index - 1
        out, size = [], 0
        for entry in self.log[start:]:
            size += len(entry.data) + 24
            if out and size > max_bytes:
                break
            out.append(entry)
        return out

    @property
    def config(self) -> Config:
        return self.configs[-1][1]

    def is_voter(self) -> bool:
        return self.id in self.config.voters

    # -- inputs ---------------------------------------------------------------------
    def tick(self) -> None:
        self.ticks += 1
        if self.role == LEADER:
            self._tick_leader()
            return
        self.election_elapsed += 1
        if self.is_voter() and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self.campaign(transfer=False)

    def propose(self, data: list[bytes]) -> tuple[int, int] | None:
        """Append client commands; returns (first index, term), or None when this node
        cannot take proposals (not the leader, or handing leadership over)."""
        if self.role != LEADER or self.transferee:
            return None
        first = self.last_index() + 1
        self._append([Entry(first + i, self.term, NORMAL, d) for i, d in enumerate(data)])
        self._broadcast_append()
        return first, self.term

    def propose_config(self, config: Config) -> int | None:
        """Propose the next membership (one voter more or less, or learner changes).
        None while an earlier change is uncommitted or the leader has not yet committed
        an entry of its own term (the single-server change safety rule)."""
        if self.role != LEADER or self.transferee:
            return None
        if self.pending_conf_index > self.commit or self.term_at(self.commit) != self.term:
            return None
        if len(config.voters ^ self.config.voters) > 1 or not config.voters:
            raise ValueError("membership changes go one voter at a time")
        index = self.last_index() + 1
        self._append([Entry(index, self.term, CONFIG, config.encode())])
        self._broadcast_append()
        return index

    def read_index(self, context: bytes, lease: bool = False) -> bool:
        """Ask for a linearizable read point. The answer comes as a ReadState once a
        quorum has confirmed this node is still the leader, or at once with `lease`
        while the leader's lease holds. False if not the leader."""
        if self.role != LEADER:
            return False
        if self.term_at(self.commit) != self.term:
            self.reads_waiting.append(context)
            return True
        if len(self.config.voters) == 1 or (lease and self.lease_valid()):
            self._read_states.append(ReadState(context, self.commit))
            return True
        self.reads.append((context, self.commit, {self.id}))
        self._broadcast_heartbeat(context)
        return True

    def lease_valid(self) -> bool:
        """Can no other leader exist yet? With CheckQuorum, a follower refuses votes for
        election_ticks after it last heard from us. So once a quorum has answered a
        heartbeat we sent at tick T, no new leader is possible before T +
        election_ticks - 1 (a tick less: the follower's first tick may come just after
        our heartbeat reached it), and the lease ends `lease_margin_ticks` before that,
        for clocks that run at different rates. Never during a leadership transfer,
        which skips leases. (The node also holds the lease to real time: see
        RaftNode._lease_holds.)"""
        return self.held_lease() is not None

    def held_lease(self) -> int | None:
        """The tick the lease started at while it holds (see lease_valid); else None."""
        if not (self.opts.lease_reads and self.opts.check_quorum) or self.transferee:
            return None
        start = self.lease_start()
        if start is None or self.ticks >= start + self.lease_ticks():
            return None
        return start

    def lease_ticks(self) -> int:
        """How long a lease lasts from the heartbeat it starts at (see lease_valid)."""
        return self.opts.election_ticks - 1 - self.opts.lease_margin_ticks

    def lease_start(self) -> int | None:
        """The tick at which we sent the newest heartbeat a quorum has answered (our
        own counts as answered now); None without a quorum of answers."""
        sent = sorted((self.progress[v].echo_tick if v != self.id else self.ticks)
                      for v in self.config.voters if v in self.progress)
        if len(sent) < self.config.quorum:
            return None
        return sent[-self.config.quorum]

    def transfer_leadership(self, to: int) -> bool:
        if self.role != LEADER or to == self.id or to not in self.config.voters:
            return False
        self.transferee = to
        self.election_elapsed = 0
        pr = self.progress[to]
        if pr.match == self.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, self.id, to, self.term))
        else:
            self._send_append(to)
        return True

    def compact(self, index: int) -> None:
        """The shell took a state machine snapshot at `index` (<= applied): forget the
        log up to it."""
        if index <= self.snapshot.index:
            return
        if index > self.handed:
            raise ValueError(f"cannot compact to {index}: only {self.handed} applied")
        config = [c for i, c in self.configs if i <= index][-1]
        self.snapshot = SnapshotMeta(index, self.term_at(index), config)
        del self.log[:index - (self.log[0].index if self.log else index + 1) + 1]
        self.configs = [(index, config)] + [(i, c) for i, c in self.configs if i > index]

    def report_unreachable(self, peer: int) -> None:
        pr = self.progress.get(peer)
        if self.role == LEADER and pr is not None and pr.state == REPLICATE:
            pr.become_probe()

    def report_snapshot(self, peer: int, ok: bool) -> None:
        """The shell finished (or failed) streaming a snapshot to `peer`."""
        pr = self.progress.get(peer)
        if self.role == LEADER and pr is not None and pr.state == SNAPSHOT:
            if not ok:
                pr.pending_snapshot = 0
            pr.become_probe()
            pr.probe_sent = ok  # on success, wait for the follower's answer

    # -- Ready ----------------------------------------------------------------------
    def ready(self) -> Ready:
        """What to do next. Messages a leader sends (appends, heartbeats) may go out
        before the Ready's entries are persisted; every other message must wait."""
        rd = Ready()
        hard = (self.term, self.vote, self.commit)
        if hard != self._last_hard_state:
            rd.hard_state = hard
        if self._pending_snapshot:
            rd.snapshot, rd.snapshot_data = self._pending_snapshot
        if self.persisted_index < self.last_index():
            rd.entries = self.log[self.persisted_index - self.snapshot.index:]
        rd.messages, self._outbox = self._outbox, []
        upto = min(self.commit, self.last_index())
        if upto > self.handed:
            start = self.handed - self.snapshot.index
            rd.committed = self.log[start:upto - self.snapshot.index]
        rd.read_states, self._read_states = self._read_states, []
        return rd

    def advance(self, rd: Ready) -> None:
        """The shell did everything `rd` asked."""
        if rd.hard_state:
            self._last_hard_state = rd.hard_state
        if rd.snapshot:
            self._pending_snapshot = None
        if rd.entries:
            self.persisted_index = max(self.persisted_index, rd.entries[-1].index)
        if rd.committed:
            self.handed = rd.committed[-1].index
        if (self.role == LEADER and self.progress[self.id].maybe_update(self.persisted_index)
                and self._maybe_commit() and self.role == LEADER):
            self._broadcast_append()

    # -- stepping messages ----------------------------------------------------------
    def step(self, m: Message) -> None:
        if m.term > self.term:
            if not self._accept_higher_term(m):
                return
        elif m.term < self.term:
            self._answer_stale(m)
            return
        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == LEADER:
            self._step_leader(m)
        elif self.role in (CANDIDATE, PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _accept_higher_term(self, m: Message) -> bool:
        """A message from a newer term. False if it is to be ignored."""
        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            # With lease reads, a node that just started does not vote either: it may
            # have been a follower whose promise a leader's lease still counts on.
            heard_recently = self.leader != 0 or (
                self.opts.lease_reads and self.ticks < self.opts.election_ticks)
            in_lease = (self.opts.check_quorum and heard_recently
                        and self.election_elapsed < self.opts.election_ticks)
            if in_lease and m.context != CAMPAIGN_TRANSFER:
                return False  # we still hear from a leader: a returning node must not disrupt
        if m.type == MsgType.PRE_VOTE or (m.type == MsgType.PRE_VOTE_RESP and not m.reject):
            return True  # a pre-vote is about a future term; ours does not change
        leader = m.frm if m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP) else 0
        self._become_follower(m.term, leader)
        return True

    def _answer_stale(self, m: Message) -> None:
        """A message from an older term: tell a stale leader or pre-candidate about ours,
        so it steps down instead of waiting forever."""
        if m.type in (MsgType.APP, MsgType.HEARTBEAT) and (
                self.opts.check_quorum or self.opts.pre_vote):
            self._send(Message(MsgType.APP_RESP, self.id, m.frm, self.term))
        elif m.type == MsgType.PRE_VOTE:
            self._send(Message(MsgType.PRE_VOTE_RESP, self.id, m.frm, self.term, reject=True))

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type == MsgType.PRE_VOTE
        can_vote = (self.vote == m.frm
                    or (self.vote == 0 and self.leader == 0)
                    or (pre and m.term > self.term))
        up_to_date = (m.log_term, m.index) >= (self.last_term(), self.last_index())
        kind = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        if can_vote and up_to_date:
            self._send(Message(kind, self.id, m.frm, m.term))
            if not pre:
                self.vote = m.frm
                self.election_elapsed = 0
        else:
            self._send(Message(kind, self.id, m.frm, self.term, reject=True))

    # -- roles ----------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = 0
        self.leader = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_election_timeout()
        self.votes = {}
        self.transferee = 0
        self.reads = []
        self.reads_waiting = []

    def _reset_election_timeout(self) -> None:
        n = self.opts.election_ticks
        self.randomized_timeout = n + self.rng.randrange(n)

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = FOLLOWER
        self.leader = leader
        self.progress = {}

    def campaign(self, transfer: bool) -> None:
        if self.opts.pre_vote and not transfer:
            self._reset(self.term)
            self.role = PRE_CANDIDATE
            self._request_votes(MsgType.PRE_VOTE, self.term + 1, b"")
        else:
            self._start_election(CAMPAIGN_TRANSFER if transfer else b"")

    def _request_votes(self, kind: int, term: int, context: bytes) -> None:
        self._record_vote(self.id, True)
        for peer in sorted(self.config.voters - {self.id}):
            self._send(Message(kind, self.id, peer, term, index=self.last_index(),
                               log_term=self.last_term(), context=context))

    def _record_vote(self, voter: int, granted: bool) -> None:
        self.votes.setdefault(voter, granted)
        voters = self.config.voters
        yes = sum(1 for v, g in self.votes.items() if g and v in voters)
        no = sum(1 for v, g in self.votes.items() if not g and v in voters)
        if yes >= self.config.quorum:
            if self.role == PRE_CANDIDATE:
                self._start_election()
            else:
                self._become_leader()
        elif no > len(voters) - self.config.quorum:
            self._become_follower(self.term, 0)

    def _start_election(self, context: bytes = b"") -> None:
        self._reset(self.term + 1)
        self.role = CANDIDATE
        self.vote = self.id
        self._request_votes(MsgType.VOTE, self.term, context)

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = LEADER
        self.leader = self.id
        self.vote = self.id
        last = self.last_index()
        self.progress = {}
        for peer in self.config.members:
            self._add_progress(peer, last + 1)
        self.pending_conf_index = last
        entries = [Entry(last + 1, self.term, NOOP)]
        if last == 0:
            # A new cluster's first members are otherwise only in its command lines:
            # the first leader writes them into the log, so that every copy of the log
            # (an archive being restored, say) says who the voters were.
            entries.append(Entry(last + 2, self.term, CONFIG, self.config.encode()))
        self._append(entries)
        self._broadcast_append()

    def _add_progress(self, peer: int, next_index: int) -> None:
        pr = Progress(next_index, self.opts.max_inflight_msgs, self.opts.max_inflight_bytes)
        if peer == self.id:
            pr.match = self.persisted_index
            pr.become_replicate()
        pr.recent_active = peer == self.id
        self.progress[peer] = pr

    # -- leader -----------------------------------------------------------------------
    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.opts.election_ticks:
            self.election_elapsed = 0
            if self.opts.check_quorum and not self._quorum_active():
                self._become_follower(self.term, 0)
                return
            self.transferee = 0  # a transfer that did not finish in time is abandoned
        if self.heartbeat_elapsed >= self.opts.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(self.reads[-1][0] if self.reads else b"")

    def _quorum_active(self) -> bool:
        active = sum(1 for peer in self.config.voters
                     if peer in self.progress and self.progress[peer].recent_active)
        for peer, pr in self.progress.items():
            pr.recent_active = peer == self.id
        return active >= self.config.quorum

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return  # not (or no longer) a member
        if m.type == MsgType.APP_RESP:
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif m.type == MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.echo_tick = max(pr.echo_tick, m.index)
            pr.probe_sent = False
            if pr.state == REPLICATE and pr.is_paused():
                pr.free_first()  # appends to it were lost: let one more through
            if pr.match < self.last_index():
                self._send_append(m.frm)
            if m.context:
                self._ack_read(m.context, m.frm)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term:
                next_probe = self._find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease(m.index, next_probe):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            if self.role != LEADER:
                return  # the commit removed us from the cluster
            self._broadcast_append()
        elif was_paused:
            self._send_append(m.frm)
        while self._send_append(m.frm, send_empty=False):
            pass
        if m.frm == self.transferee and pr.match == self.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, self.id, m.frm, self.term))

    def _find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= `index` whose term is <= `term` (skips a whole
        conflicting term per round trip)."""
        while index > self.snapshot.index:
            t = self.term_at(index)
            if t is not None and t <= term:
                break
            index -= 1
        return index

    def _maybe_commit(self) -> bool:
        matches = sorted((self.progress[v].match for v in self.config.voters
                          if v in self.progress), reverse=True)
        if len(matches) < self.config.quorum:
            return False
        candidate = matches[self.config.quorum - 1]
        # Only entries of the current term commit by counting replicas (Raft §5.4.2).
        if candidate > self.commit and self.term_at(candidate) == self.term:
            self._commit_to(candidate)
            return True
        return False

    def _commit_to(self, index: int) -> None:
        first_in_term = self.term_at(self.commit) != self.term
        self.commit = index
        if self.role == LEADER and first_in_term and self.reads_waiting:
            waiting, self.reads_waiting = self.reads_waiting, []
            for context in waiting:
                self.read_index(context)
        if self.role == LEADER and self.id not in self._config_at(index).voters:
            self._become_follower(self.term, 0)  # removed ourselves: step down once committed

    def _config_at(self, index: int) -> Config:
        return [c for i, c in self.configs if i <= index][-1]

    def _broadcast_append(self) -> None:
        for peer in self.progress:
            if peer != self.id:
                self._send_append(peer)

    def _broadcast_heartbeat(self, context: bytes) -> None:
        # `index` carries our tick; the echo tells us when a follower last heard us.
        for peer, pr in self.progress.items():
            if peer != self.id:
                self._send(Message(MsgType.HEARTBEAT, self.id, peer, self.term,
                                   index=self.ticks, commit=min(pr.match, self.commit),
                                   context=context))

    def _send_append(self, to: int, send_empty: bool = True) -> bool:
        """Send `to` what it lacks, within flow control. True if something was sent."""
        pr = self.progress[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        prev_term = self.term_at(prev)
        if prev_term is None:
            return self._send_snapshot(to, pr)
        entries = self.entries_from(pr.next, self.opts.max_msg_bytes)
        if not entries and not send_empty:
            return False
        self._send(Message(MsgType.APP, self.id, to, self.term, index=prev, log_term=prev_term,
                           entries=tuple(entries), commit=self.commit))
        if entries:
            pr.sent_entries(entries[-1].index, sum(len(e.data) + 24 for e in entries))
        elif pr.state == PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # don't stream a snapshot to a peer that may be down
        self._send(Message(MsgType.SNAP, self.id, to, self.term, snapshot=self.snapshot))
        pr.become_snapshot(self.snapshot.index)
        return True

    def _ack_read(self, context: bytes, peer: int) -> None:
        for position, (ctx, _index, acks) in enumerate(self.reads):
            if ctx != context:
                continue
            acks.add(peer)
            if len(acks & self.config.voters) >= self.config.quorum:
                # This ack confirms leadership for every request queued before it too.
                done, self.reads = self.reads[:position + 1], self.reads[position + 1:]
                self._read_states += [ReadState(c, i) for c, i, _ in done]
            return

    # -- candidate and follower -------------------------------------------------------
    def _step_candidate(self, m: Message) -> None:
        if m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
        elif (m.type == MsgType.PRE_VOTE_RESP and self.role == PRE_CANDIDATE) or (
                m.type == MsgType.VOTE_RESP and self.role == CANDIDATE):
            self._record_vote(m.frm, not m.reject)

    def _step_follower(self, m: Message) -> None:
        if m.type == MsgType.APP:
            self.election_elapsed = 0
            self.leader = m.frm
            self._handle_append(m)
        elif m.type == MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self.leader = m.frm
            if m.commit > self.commit:
                self._commit_to(min(m.commit, self.last_index()))
            self._send(Message(MsgType.HEARTBEAT_RESP, self.id, m.frm, self.term,
                               index=m.index, context=m.context))
        elif m.type == MsgType.SNAP:
            self.election_elapsed = 0
            self.leader = m.frm
            self._handle_snapshot(m)
        elif m.type == MsgType.TIMEOUT_NOW and self.is_voter():
            self.campaign(transfer=True)

    def _handle_append(self, m: Message) -> None:
        if m.index < self.commit:
            self._send(Message(MsgType.APP_RESP, self.id, m.frm, self.term, index=self.commit))
            return
        if self.term_at(m.index) != m.log_term:
            hint = min(m.index, self.last_index())
            hint = self._find_conflict_by_term(hint, m.log_term)
            self._send(Message(MsgType.APP_RESP, self.id, m.frm, self.term, index=m.index,
                               reject=True, reject_hint=hint,
                               log_term=self.term_at(hint) or 0))
            return
        last_new = m.index + len(m.entries)
        self._append_from_leader(m.entries)
        if m.commit > self.commit:
            self._commit_to(min(m.commit, last_new))
        self._send(Message(MsgType.APP_RESP, self.id, m.frm, self.term, index=last_new))

    def _append_from_leader(self, entries: tuple[Entry, ...]) -> None:
        """Append what we lack; on a conflicting term, drop our suffix first."""
        for k, entry in enumerate(entries):
            ours = self.term_at(entry.index)
            if ours == entry.term:
                continue
            if ours is not None:
                if entry.index <= self.commit:
                    raise RaftInvariantError(
                        f"node {self.id}: leader overwrites committed entry {entry.index}")
                self._truncate_from(entry.index)
            self._append(list(entries[k:]))
            return

    def _truncate_from(self, index: int) -> None:
        del self.log[index - self.snapshot.index - 1:]
        self.configs = [(i, c) for i, c in self.configs if i < index]
        self.persisted_index = min(self.persisted_index, index - 1)

    def _append(self, entries: list[Entry]) -> None:
        # A leader's own copy counts towards commit only once persisted (see advance),
        # which lets the shell send appends before its own fsync finishes.
        self.log.extend(entries)
        for entry in entries:
            if entry.kind == CONFIG:
                self._apply_config(entry.index, Config.decode(entry.data))

    def _apply_config(self, index: int, config: Config) -> None:
        """Membership takes effect as soon as the entry is in the log."""
        self.configs.append((index, config))
        if self.role != LEADER:
            return
        self.pending_conf_index = index
        for peer in config.members - set(self.progress):
            self._add_progress(peer, self.last_index() + 1)
        for peer in set(self.progress) - config.members - {self.id}:
            del self.progress[peer]

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap.index <= self.commit:
            self._send(Message(MsgType.APP_RESP, self.id, m.frm, self.term, index=self.commit))
            return
        if self.term_at(snap.index) == snap.term:
            self._commit_to(snap.index)  # we already hold that prefix
        else:
            self.snapshot = snap
            self.log = []
            self.configs = [(snap.index, snap.config)]
            self.commit = self.handed = self.persisted_index = snap.index
            self._pending_snapshot = (snap, m.snapshot_data)
        self._send(Message(MsgType.APP_RESP, self.id, m.frm, self.term,
                           index=self.last_index()))

    def _send(self, m: Message) -> None:
        self._outbox.append(m)

    # -- status -----------------------------------------------------------------------
    def status(self) -> dict:
        role = self.role
        if self.id not in self.config.members:
            role = "removed"
        elif not self.is_voter():
            role = "learner"
        return {"id": self.id, "role": role, "term": self.term, "leader": self.leader,
                "commit_index": self.commit, "applied_index": self.handed,
                "last_index": self.last_index(), "snapshot_index": self.snapshot.index}
