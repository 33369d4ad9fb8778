"""Raft's rules, one scenario each, in the spirit of the paper's figures."""

import pytest

from services.metadata.raft.core import Persisted, RaftCore, RaftInvariantError
from services.metadata.raft.messages import (
    CAMPAIGN_TRANSFER,
    CONFIG,
    NORMAL,
    Config,
    Entry,
    Message,
    MsgType,
)
from tests.unit.raft_harness import OPTS, Cluster


def log(*terms: int) -> tuple[Entry, ...]:
    return tuple(Entry(i + 1, t) for i, t in enumerate(terms))


def responses(cluster: Cluster, kind: int) -> list[Message]:
    cluster.collect()
    return [m for m in cluster.mailbox if m.type == kind]


# -- elections -----------------------------------------------------------------------

def test_a_follower_that_hears_nothing_campaigns_and_wins():
    c = Cluster(3)
    c.tick(1, OPTS.election_ticks * 2)
    c.deliver()
    assert c.nodes[1].role == "leader" and c.nodes[1].term == 1
    assert {n.leader for n in c.nodes.values()} == {1}


def test_a_candidate_with_a_stale_log_cannot_win():
    c = Cluster(3)
    c.add_node(1, Persisted(term=2, entries=log(1)))
    c.add_node(2, Persisted(term=2, entries=log(1, 2)))
    c.add_node(3, Persisted(term=2, entries=log(1, 2)))
    c.nodes[1].campaign(transfer=True)   # skip pre-vote: ask for real votes
    c.deliver()
    assert c.nodes[1].role != "leader"
    assert c.elect(2).term > 2


def test_a_node_votes_once_per_term():
    c = Cluster(3)
    c.nodes[1].campaign(transfer=True)
    c.collect()
    c.mailbox = [m for m in c.mailbox if m.to == 3]
    c.nodes[3].step(c.mailbox.pop())
    c.nodes[2].campaign(transfer=True)   # same term 1, a different candidate
    c.collect()
    vote_for_2 = [m for m in c.mailbox if m.to == 3 and m.frm == 2]
    c.mailbox = []
    c.nodes[3].step(vote_for_2[0])
    [answer] = responses(c, MsgType.VOTE_RESP)
    assert answer.reject and c.nodes[3].vote == 1


def test_pre_vote_keeps_a_partitioned_node_from_inflating_terms():
    c = Cluster(3)
    c.elect(1)
    c.cut = {3}
    for _ in range(5):
        c.tick(3, OPTS.election_ticks * 2)
        c.deliver()
    assert c.nodes[3].term == 1, "pre-vote should fail without raising the term"
    c.cut = set()
    c.tick_all(3)
    assert c.nodes[1].role == "leader" and c.nodes[1].term == 1


def test_a_returning_node_does_not_disrupt_a_healthy_leader():
    c = Cluster(3)
    c.elect(1)
    c.cut = {3}
    c.tick(3, OPTS.election_ticks * 4)
    c.cut = set()
    # Back, it campaigns before hearing a heartbeat: the others are in their leader's
    # lease and ignore its pre-vote, so nobody's term moves.
    c.nodes[3].campaign(transfer=False)
    c.deliver()
    assert c.nodes[1].role == "leader"
    assert {n.term for n in c.nodes.values()} == {1}


def test_check_quorum_makes_an_isolated_leader_step_down():
    c = Cluster(3)
    c.elect(1)
    c.cut = {1}
    c.tick_all(OPTS.election_ticks * 2 + 1)
    assert c.nodes[1].role == "follower"


# -- replication ---------------------------------------------------------------------

def test_a_follower_rejects_an_append_whose_previous_entry_does_not_match():
    follower = RaftCore(2, Config(frozenset({1, 2, 3})), OPTS,
                        Persisted(term=3, entries=log(1, 1, 2)))
    follower.step(Message(MsgType.APP, 1, 2, 3, index=3, log_term=3,
                          entries=(Entry(4, 3),), commit=0))
    [answer] = follower.ready().messages
    assert answer.type == MsgType.APP_RESP and answer.reject
    assert follower.last_index() == 3
    # Its hint says "my entry 3 is of term 2", so the leader can skip its own
    # entries of term 3 in one round trip.
    assert answer.reject_hint == 3 and answer.log_term == 2


def test_a_conflicting_suffix_is_replaced_by_the_leaders():
    follower = RaftCore(2, Config(frozenset({1, 2, 3})), OPTS,
                        Persisted(term=3, entries=log(1, 2, 2, 2)))
    follower.step(Message(MsgType.APP, 1, 2, 3, index=1, log_term=1,
                          entries=(Entry(2, 3), Entry(3, 3)), commit=1))
    assert [e.term for e in follower.log] == [1, 3, 3]
    rd = follower.ready()
    assert [e.index for e in rd.entries] == [2, 3]  # persist the new suffix


def test_overwriting_a_committed_entry_stops_the_node():
    follower = RaftCore(2, Config(frozenset({1, 2, 3})), OPTS,
                        Persisted(term=3, commit=2, entries=log(1, 2)))
    with pytest.raises(RaftInvariantError, match="committed"):
        follower._append_from_leader((Entry(2, 3),))


def test_a_divergent_follower_catches_up_in_few_round_trips():
    c = Cluster(3)
    c.add_node(1, Persisted(term=5, entries=log(*[1] * 5, *[5] * 50)))
    c.add_node(2, Persisted(term=5, entries=log(*[1] * 5, *[5] * 50)))
    c.add_node(3, Persisted(term=4, entries=log(*[1] * 5, *[4] * 200)))
    leader = c.elect(1)
    appends = []
    c.deliver(keep=lambda m: appends.append(m) or True)
    c.tick_all(2)
    assert c.nodes[3].log == leader.log
    rejections = [m for m in appends if m.type == MsgType.APP_RESP and m.reject and m.frm == 3]
    assert len(rejections) <= 2, f"back-off took {len(rejections)} rejections"


def test_the_leader_pipelines_appends_up_to_its_window():
    c = Cluster(3)
    leader = c.elect(1)
    for i in range(10):
        leader.propose([b"x%d" % i])
    c.collect()
    to_2 = [m for m in c.mailbox if m.to == 2 and m.type == MsgType.APP]
    assert len(to_2) == OPTS.max_inflight_msgs, "appends should flow without waiting"
    c.deliver()
    assert leader.commit == leader.last_index()


def test_many_proposals_become_one_append_and_one_persist():
    c = Cluster(3)
    leader = c.elect(1)
    placed = leader.propose([b"v%d" % i for i in range(100)])
    rd = leader.ready()
    assert len(rd.entries) == 100
    assert len([m for m in rd.messages if m.to == 2]) == 1
    assert placed == (rd.entries[0].index, leader.term)


def test_a_leader_never_commits_an_earlier_terms_entry_by_counting_replicas():
    # Figure 8: (2, term 2) sits on S1, S2, S3 -- a majority of five -- yet it must
    # not commit until an entry of the leader's own term does.
    c = Cluster(5)
    c.add_node(1, Persisted(term=3, entries=log(1, 2)))
    c.add_node(2, Persisted(term=3, entries=log(1, 2)))
    for i in (3, 4):
        c.add_node(i, Persisted(term=3, entries=log(1)))
    c.add_node(5, Persisted(term=3, entries=log(1, 3)))
    c.nodes[1].campaign(transfer=True)
    c.deliver(keep=lambda m: m.type in (MsgType.VOTE, MsgType.VOTE_RESP))
    leader = c.nodes[1]
    assert leader.role == "leader" and leader.term == 4
    c.collect()
    c.mailbox = []
    for peer in (2, 3):  # both now hold entry 2
        leader.step(Message(MsgType.APP_RESP, peer, 1, 4, index=2))
    assert leader.commit < 2, "committed an old-term entry by counting replicas"
    for peer in (2, 3):  # and now the leader's own no-op at index 3
        leader.step(Message(MsgType.APP_RESP, peer, 1, 4, index=3))
    assert leader.commit == 3


def test_commit_reaches_followers_and_they_apply_in_order():
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"a", b"b")
    c.tick_all(2)
    for i in (1, 2, 3):
        assert [e.data for e in c.applied[i] if e.kind == NORMAL] == [b"a", b"b"]


def test_a_new_clusters_first_leader_writes_its_members_into_the_log():
    """So that every copy of the log (a metalogger's archive) says who the first
    voters were."""
    c = Cluster(3)
    c.elect(1)
    c.tick_all(2)
    for i in (1, 2, 3):
        configs = [Config.decode(e.data) for e in c.applied[i] if e.kind == CONFIG]
        assert [cfg.voters for cfg in configs] == [frozenset({1, 2, 3})]


# -- snapshots -----------------------------------------------------------------------

def test_a_follower_behind_the_compacted_log_gets_a_snapshot():
    c = Cluster(3)
    leader = c.elect(1)
    c.cut = {3}
    for i in range(20):
        c.propose(1, b"v%d" % i)
    leader.compact(leader.commit)
    c.cut = set()
    sent = []
    c.tick_all(3, keep=lambda m: sent.append(m) or True)
    snaps = [m for m in sent if m.type == MsgType.SNAP]
    assert snaps and snaps[0].snapshot.index == leader.snapshot.index
    c.tick_all(3)
    assert c.nodes[3].snapshot.index == leader.snapshot.index
    assert c.nodes[3].last_index() == leader.last_index()


def test_snapshot_ready_comes_before_entries_after_it():
    follower = RaftCore(3, Config(frozenset({1, 2, 3})), OPTS, Persisted(term=1))
    meta = Message(MsgType.SNAP, 1, 3, 2).snapshot  # None: build a real one below
    assert meta is None
    from services.metadata.raft.messages import SnapshotMeta
    snap = SnapshotMeta(10, 2, Config(frozenset({1, 2, 3})))
    follower.step(Message(MsgType.SNAP, 1, 3, 2, snapshot=snap, snapshot_data="files"))
    rd = follower.ready()
    assert rd.snapshot == snap and rd.snapshot_data == "files" and not rd.committed
    assert rd.messages[0].index == 10  # it tells the leader where it now stands


# -- membership, transfer, reads -----------------------------------------------------

def test_a_learner_replicates_but_does_not_vote_or_count():
    c = Cluster(3, learners={4})
    leader = c.elect(1)
    c.cut = {2, 3}
    leader.propose([b"x"])
    c.deliver()
    assert c.nodes[4].last_index() == leader.last_index()
    assert leader.commit < leader.last_index(), "a learner's copy must not commit"
    assert c.nodes[4].status()["role"] == "learner"
    c.tick(4, OPTS.election_ticks * 3)
    assert c.nodes[4].role == "follower" and c.nodes[4].term == 1


def test_membership_changes_go_one_at_a_time_and_take_effect_when_appended():
    c = Cluster(3)
    leader = c.elect(1)
    c.tick_all(1)
    bigger = Config(frozenset({1, 2, 3, 4}))
    c.add_node(4)
    index = leader.propose_config(bigger)
    assert index and leader.config == bigger and 4 in leader.progress
    assert leader.propose_config(Config(frozenset({1, 2, 3, 4, 5}))) is None  # pending
    c.deliver()
    c.tick_all(2)
    assert leader.commit >= index
    assert c.nodes[4].config == bigger and c.nodes[4].is_voter()
    with pytest.raises(ValueError):
        leader.propose_config(Config(frozenset({1, 2})))  # two voters at once


def test_a_leader_that_removes_itself_steps_down_once_committed():
    c = Cluster(3)
    leader = c.elect(1)
    c.tick_all(1)
    leader.propose_config(Config(frozenset({2, 3})))
    c.deliver()
    c.tick_all(1)
    assert leader.role == "follower"
    c.tick_all(OPTS.election_ticks * 3)
    assert any(c.nodes[i].role == "leader" for i in (2, 3))


def test_leadership_transfer_hands_over_to_an_up_to_date_follower():
    c = Cluster(3)
    leader = c.elect(1)
    c.propose(1, b"x")
    assert leader.transfer_leadership(3)
    assert leader.propose([b"refused during transfer"]) is None
    c.deliver()
    assert c.nodes[3].role == "leader" and c.nodes[1].role == "follower"
    votes = [m for m in c.nodes[3].ready().messages if m.type == MsgType.VOTE]
    assert not votes or votes[0].context == CAMPAIGN_TRANSFER


def test_read_index_answers_only_after_a_quorum_confirms_leadership():
    c = Cluster(3)
    leader = c.elect(1)
    c.propose(1, b"x")
    assert leader.read_index(b"r1")
    c.collect()
    assert c.read_states[1] == []
    c.deliver(keep=lambda m: m.type != MsgType.HEARTBEAT_RESP or m.frm == 2)
    [state] = c.read_states[1]
    assert state.context == b"r1" and state.index == leader.commit


def test_read_index_is_refused_by_followers_and_held_by_a_deposed_leader():
    c = Cluster(3)
    leader = c.elect(1)
    assert not c.nodes[2].read_index(b"r")
    c.cut = {1}
    leader.read_index(b"stale")
    c.tick_all(OPTS.election_ticks * 3)
    assert c.read_states[1] == [], "an isolated leader must not answer a read"


def test_config_entries_are_decoded_on_restart():
    entries = (Entry(1, 1), Entry(2, 1, CONFIG, Config(frozenset({1, 2})).encode()))
    core = RaftCore(1, Config(frozenset({1, 2, 3})), OPTS, Persisted(term=1, entries=entries))
    assert core.config == Config(frozenset({1, 2}))


def lease_cluster() -> Cluster:
    from dataclasses import replace
    return Cluster(3, opts=replace(OPTS, lease_reads=True))


def test_a_lease_read_answers_at_once_while_a_quorum_heard_us_recently():
    c = lease_cluster()
    c.tick_all(OPTS.election_ticks * 3)
    leader = next(n for n in c.nodes.values() if n.role == "leader")
    c.tick_all(2)   # a heartbeat round answered by everyone
    c.propose(leader.id, b"x")
    assert leader.read_index(b"fast", lease=True)
    c.collect()
    assert [s.context for s in c.read_states[leader.id]] == [b"fast"]


def test_a_lease_expires_when_the_followers_stop_answering():
    c = lease_cluster()
    c.tick_all(OPTS.election_ticks * 3)
    leader = next(n for n in c.nodes.values() if n.role == "leader")
    c.tick_all(2)
    c.cut = set(c.nodes) - {leader.id}
    for _ in range(OPTS.election_ticks - 1):
        leader.tick()
    c.collect()
    c.mailbox = []
    assert not leader.lease_valid(), "the lease outlived the followers' promise"
    leader.read_index(b"slow", lease=True)
    c.collect()
    assert c.read_states[leader.id] == [], "without a lease it must ask a quorum"


def test_the_lease_starts_at_the_newest_heartbeat_a_quorum_answered():
    c = lease_cluster()
    c.tick_all(OPTS.election_ticks * 3)
    leader = next(n for n in c.nodes.values() if n.role == "leader")
    c.tick_all(2)
    start = leader.lease_start()
    assert start is not None and leader.ticks - 2 <= start <= leader.ticks
    c.cut = set(c.nodes) - {leader.id}
    leader.tick()
    c.collect()
    c.mailbox = []
    assert leader.lease_start() == start      # unanswered heartbeats do not move it


def test_leases_are_off_during_a_transfer_and_by_default():
    c = lease_cluster()
    c.tick_all(OPTS.election_ticks * 3)
    leader = next(n for n in c.nodes.values() if n.role == "leader")
    c.tick_all(2)
    assert leader.lease_valid()
    c.cut = set(c.nodes) - {leader.id}
    leader.transfer_leadership(next(i for i in c.nodes if i != leader.id))
    assert not leader.lease_valid()
    plain = Cluster(3)
    plain.tick_all(OPTS.election_ticks * 3)
    assert not any(n.lease_valid() for n in plain.nodes.values())
