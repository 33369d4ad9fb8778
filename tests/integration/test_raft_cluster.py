"""Three metadata nodes as real processes on loopback: failover, catch-up, shutdown."""

import asyncio
import collections
import json
import signal
import subprocess
import sys
import time

import pytest

from schemas import namespace_pb2 as nspb
from services.metadata.namespace import reads
from services.metadata.projection import open_projection
from services.metadata.raft.log_store import LogStore
from services.metadata.raft.messages import NORMAL
from services.metadata.raft.proposer import NoLeaderError, OutcomeUnknownError, Proposer
from tests.integration.metadata_cluster import MetadataCluster

ROOT = nspb.Caller(uid=0, gid=0)


@pytest.fixture
def cluster(tmp_path):
    c = MetadataCluster(str(tmp_path))
    yield c
    c.stop_all()


def mkdir(name: bytes) -> bytes:
    return nspb.Command(time_ns=1, caller=ROOT,
                        mkdir=nspb.Mkdir(parent=1, name=name, mode=0o755)).SerializeToString()


async def propose_names(cluster, names, workers=16, on_progress=None):
    """Propose mkdir of each name once; returns (acknowledged, unknown) name sets."""
    proposer = Proposer(list(cluster.addresses.values()), deadline_s=30)
    queue = collections.deque(names)
    acked, unknown = set(), set()

    async def worker():
        while queue:
            name = queue.popleft()
            try:
                _, [result] = await proposer.propose([mkdir(name)])
            except OutcomeUnknownError:
                unknown.add(name)
                continue
            except NoLeaderError:
                unknown.add(name)  # refused everywhere: definitely not applied, but say so
                continue
            assert nspb.Result.FromString(result).errno == 0
            acked.add(name)
            if on_progress:
                await on_progress(len(acked))

    await asyncio.gather(*(worker() for _ in range(workers)))
    await proposer.close()
    return acked, unknown


def names_in_root(data_dir: str) -> list[bytes]:
    with open_projection(f"{data_dir}/projection") as proj:
        names, cookie = [], 0
        while page := reads.readdir(proj, ROOT, 1, cookie):
            names += [e.name for e in page]
            cookie = page[-1].cookie
        return names


def logged_names(data_dir: str) -> collections.Counter:
    log = LogStore(f"{data_dir}/raft-log")
    try:
        entries = log.entries(log.first_index, log.last_index + 1)
    finally:
        log.close()
    counts = collections.Counter()
    for e in entries:
        if e.kind == NORMAL:
            counts[nspb.Command.FromString(e.data).mkdir.name] += 1
    return counts


def projection_digest(data_dir: str) -> str:
    with open_projection(f"{data_dir}/projection") as proj:
        return proj.content_digest()


@pytest.mark.slow
def test_sigkill_of_the_leader_loses_no_acknowledged_proposal(cluster):
    cluster.start_all()
    first = cluster.wait_leader()
    killed = {}

    async def kill_leader_once(acked_so_far):
        if acked_so_far >= 300 and not killed:
            killed["id"] = first["id"]
            cluster.signal(first["id"], signal.SIGKILL)

    names = [b"n%05d" % i for i in range(1500)]
    acked, unknown = asyncio.run(propose_names(cluster, names, on_progress=kill_leader_once))
    assert killed, "the leader was never killed"
    assert len(acked) > 1000, f"only {len(acked)} proposals succeeded around one failover"
    cluster.start(killed["id"])
    cluster.wait_converged()
    for i in list(cluster.procs):
        assert cluster.signal(i, signal.SIGTERM) == 0
    digests = set()
    for i in cluster.addresses:
        present = names_in_root(cluster.data(i))
        assert acked <= set(present), f"node {i} lost acknowledged proposals"
        assert set(present) <= acked | unknown, f"node {i} holds names never proposed"
        counts = logged_names(cluster.data(i))
        twice = [n for n, c in counts.items() if c > 1]
        assert not twice, f"node {i} has commands in its log twice: {twice[:5]}"
        digests.add(projection_digest(cluster.data(i)))
    assert len(digests) == 1, "the nodes' projections differ"


@pytest.mark.slow
def test_a_follower_back_after_a_long_stop_is_reached_at_once(cluster):
    """The leader's link to a follower that was down for 20 s tries to reconnect at
    least once a second: the follower catches up within seconds of its restart. (With
    gRPC's default backoff the leader next tried some 6 s after this restart, and
    after a 40 s stop 30 s after it.)"""
    cluster.start_all()
    leader = cluster.wait_leader()["id"]
    follower = next(i for i in cluster.addresses if i != leader)
    assert cluster.signal(follower, signal.SIGKILL) == -signal.SIGKILL
    time.sleep(20)                 # the outage itself: the leader's link backs off
    asyncio.run(propose_names(cluster, [b"while-down-%d" % i for i in range(20)]))
    restarted = time.monotonic()
    cluster.start(follower)
    cluster.wait_converged(timeout=60)
    assert time.monotonic() - restarted < 4, "the leader did not reach the follower soon"


@pytest.mark.slow
def test_a_wiped_node_catches_up_by_snapshot(tmp_path):
    cluster = MetadataCluster(str(tmp_path), snapshot_every=200)
    try:
        cluster.start_all()
        cluster.wait_leader()
        acked, _ = asyncio.run(propose_names(cluster, [b"a%04d" % i for i in range(600)]))
        leader = cluster.wait_converged()
        victim = next(n["id"] for n in leader if n["role"] != "leader")
        cluster.signal(victim, signal.SIGKILL)
        subprocess.run(["rm", "-rf", cluster.data(victim)], check=True)
        acked2, _ = asyncio.run(propose_names(cluster, [b"b%04d" % i for i in range(300)]))
        cluster.start(victim)
        nodes = cluster.wait_converged()
        assert next(n for n in nodes if n["id"] == victim)["snapshot_index"] > 0
        assert "installing snapshot" in cluster.log_of(victim)
        # Every node restarts from its own compacted log and snapshot.
        for i in list(cluster.procs):
            cluster.signal(i, signal.SIGKILL)
        cluster.start_all()
        cluster.wait_converged()
        for i in list(cluster.procs):
            cluster.signal(i, signal.SIGTERM)
        assert acked | acked2 <= set(names_in_root(cluster.data(victim)))
        assert len({projection_digest(cluster.data(i)) for i in cluster.addresses}) == 1
    finally:
        cluster.stop_all()


def test_sigterm_on_the_leader_hands_leadership_over(cluster):
    cluster.start_all()
    leader = cluster.wait_leader()
    assert cluster.signal(leader["id"], signal.SIGTERM) == 0
    nodes = cluster.wait(lambda ns: any(n["role"] == "leader" for n in ns), 10, "hand-over")
    new = next(n for n in nodes if n["role"] == "leader")
    assert new["term"] == leader["term"] + 1, "a transfer takes exactly one election"
    assert [n for n in nodes if n["role"] == "unreachable"] == \
        [n for n in nodes if n["address"] == cluster.addresses[leader["id"]]]


def test_status_json_lists_every_node_and_marks_the_dead(cluster):
    cluster.start_all()
    leader = cluster.wait_leader()
    victim = next(i for i in cluster.addresses if i != leader["id"])
    cluster.signal(victim, signal.SIGKILL)
    out = subprocess.run([sys.executable, "-m", "mooseng", "status", "--masters",
                          ",".join(cluster.addresses.values()), "--json"],
                         capture_output=True, text=True, timeout=30)
    nodes = json.loads(out.stdout)
    assert [n["address"] for n in nodes] == list(cluster.addresses.values())
    for n in nodes:
        assert set(n) >= {"id", "address", "role", "term", "commit_index", "applied_index"}
    roles = {n["address"]: n["role"] for n in nodes}
    assert roles[cluster.addresses[victim]] == "unreachable"
    assert roles[cluster.addresses[leader["id"]]] == "leader"


@pytest.mark.parametrize("args, message", [
    (["--id", "4", "--peers", "1=127.0.0.1:1,2=127.0.0.1:2"], "--id 4 is not among"),
    (["--id", "1", "--peers", "1=localhost"], "is not HOST:PORT"),
    (["--id", "1", "--peers", "one=127.0.0.1:5"], "positive numeric ID"),
])
def test_bad_node_arguments_are_explained(tmp_path, args, message):
    out = subprocess.run([sys.executable, "-m", "mooseng", "metadata", "--data",
                          str(tmp_path), "--listen", "127.0.0.1:1", *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_node_joins_as_learner_is_promoted_and_a_voter_leaves(cluster):
    cluster.start_all()
    cluster.wait_leader()
    asyncio.run(propose_names(cluster, [b"before%03d" % i for i in range(100)]))
    cluster.start(4, join=True)
    added = cluster.members("add-learner", "4", cluster.addresses[4])
    assert added.returncode == 0, added.stderr
    nodes = cluster.wait_converged()
    assert {n["id"]: n["role"] for n in nodes}[4] == "learner"
    assert cluster.members("promote", "4").returncode == 0
    leader = cluster.wait_leader()
    gone = next(i for i in (1, 2, 3) if i != leader["id"])
    removed = cluster.members("remove", str(gone))
    assert removed.returncode == 0, removed.stderr
    cluster.signal(gone, signal.SIGTERM)
    del cluster.addresses[gone]
    acked, _ = asyncio.run(propose_names(cluster, [b"after%03d" % i for i in range(100)]))
    nodes = cluster.wait_converged()
    assert {n["id"] for n in nodes} == {1, 2, 3, 4} - {gone}
    assert all(n["role"] in ("leader", "follower") for n in nodes)
    assert len(acked) == 100
    refused = cluster.members("add-voter", "4", cluster.addresses[4])
    assert refused.returncode == 1 and "already a member" in refused.stderr
