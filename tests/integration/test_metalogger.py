"""`mooseng metalogger` against real metadata nodes on loopback: it archives every
committed entry through a leader's death and the cluster's log compactions, resumes
after a restart, starts from a snapshot when the log it wants is gone, and its
archive alone rebuilds a lost cluster."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from schemas import namespace_pb2 as nspb
from services.logship.effects_builder import GROUP
from services.metadata.raft.log_store import LogStore
from services.metadata.raft.messages import NORMAL
from tests.integration.metadata_cluster import MetadataCluster
from tests.integration.metalogger_process import Metalogger
from tests.integration.test_raft_cluster import names_in_root, projection_digest, propose_names


@pytest.fixture
def place(tmp_path):
    cluster = MetadataCluster(str(tmp_path), snapshot_every=150)
    metalogger = Metalogger(str(tmp_path), list(cluster.addresses.values()))
    try:
        yield cluster, metalogger
    finally:
        try:
            metalogger.stop(signal.SIGKILL)
        finally:
            cluster.stop_all()


def archived(metalogger: Metalogger) -> list:
    archive = metalogger.archive()
    try:
        return list(archive.entries())
    finally:
        archive.close()


def mkdir_names(entries) -> set[bytes]:
    return {nspb.Command.FromString(e.data).mkdir.name for e in entries if e.kind == NORMAL}


def assert_continuous(entries, first: int) -> None:
    indexes = [e.index for e in entries]
    assert indexes == list(range(first, first + len(indexes))), "the archive has a gap"
    terms = [e.term for e in entries]
    assert terms == sorted(terms), "a term goes back in the archive"


def assert_matches_node_logs(cluster: MetadataCluster, entries) -> None:
    """What a node's log still holds is, entry for entry, what the archive holds."""
    by_index = {e.index: e for e in entries}
    compared = 0
    for i in cluster.addresses:
        log = LogStore(f"{cluster.data(i)}/raft-log")
        try:
            held = log.entries(log.first_index, min(log.last_index, max(by_index)) + 1)
        finally:
            log.close()
        for e in held:
            a = by_index[e.index]
            assert (a.term, a.kind, a.data) == (e.term, e.kind, e.data), \
                f"node {i} and the archive differ at index {e.index}"
        compared += len(held)
    assert compared, "no node log overlapped the archive: nothing was compared"


def leader_commit(cluster: MetadataCluster) -> int:
    return cluster.wait_leader()["commit_index"]


def keep_entries_past_the_snapshots(cluster: MetadataCluster, metalogger: Metalogger) -> None:
    """Nodes compact their logs every 150 entries: if every node's snapshot is at the
    commit index, no log holds an entry to compare with the archive. A few more
    commands, archived, leave entries past the snapshot."""
    for round_ in range(5):
        nodes = cluster.wait_converged()
        if any(n["snapshot_index"] < n["commit_index"] for n in nodes):
            return
        asyncio.run(propose_names(cluster, [b"z%d" % round_]))
        metalogger.wait_archived(leader_commit(cluster))
    raise AssertionError("every node's log stays compacted to its commit index")


@pytest.mark.slow
def test_follows_through_a_leader_kill_and_compaction_and_resumes_after_restart(place):
    cluster, metalogger = place
    cluster.start_all()
    first = cluster.wait_leader()
    metalogger.start()
    metalogger.wait_following()      # from the first entry: before any compaction
    killed = {}

    async def kill_leader_once(acked_so_far):
        if acked_so_far >= 150 and not killed:
            killed["id"] = first["id"]
            cluster.signal(first["id"], signal.SIGKILL)

    acked, _ = asyncio.run(propose_names(cluster, [b"a%04d" % i for i in range(500)],
                                         on_progress=kill_leader_once))
    assert killed and len(acked) > 400
    metalogger.wait_archived(leader_commit(cluster))
    metrics = metalogger.scrape()
    assert metrics["mooseng_metalogger_gaps_total"] == 0
    assert metrics["mooseng_metalogger_snapshots_archived_total"] >= 1   # periodic ones
    assert metrics["mooseng_metalogger_lag_entries"] == 0

    assert metalogger.stop() == 0                  # SIGTERM: a clean stop
    end = metalogger.archived_index()
    more, _ = asyncio.run(propose_names(cluster, [b"b%04d" % i for i in range(300)]))
    cluster.start(killed["id"])
    metalogger.start()
    metalogger.wait_archived(cluster.wait_converged()[0]["commit_index"])
    keep_entries_past_the_snapshots(cluster, metalogger)
    assert f"after index {end}" in metalogger.log()
    assert metalogger.stop() == 0
    for i in list(cluster.procs):
        assert cluster.signal(i, signal.SIGTERM) == 0

    entries = archived(metalogger)
    assert_continuous(entries, first=1)
    assert acked | more <= mkdir_names(entries), "acknowledged commands are not archived"
    assert_matches_node_logs(cluster, entries)
    archive = metalogger.archive()
    assert [s.index for s in archive.snapshots()], "no snapshot of the cluster was archived"
    archive.close()
    assert "GAP" not in metalogger.log()


@pytest.mark.slow
def test_a_metalogger_started_after_compaction_begins_from_a_snapshot(place):
    cluster, metalogger = place
    cluster.start_all()
    cluster.wait_leader()
    acked, _ = asyncio.run(propose_names(cluster, [b"c%04d" % i for i in range(400)]))
    cluster.wait_converged()
    for i in list(cluster.procs):      # restarted nodes hold no recent entries in memory:
        assert cluster.signal(i, signal.SIGTERM) == 0   # what they compacted is gone
    cluster.start_all()
    nodes = cluster.wait_converged()
    assert all(n["snapshot_index"] > 0 for n in nodes), "the nodes did not compact"
    metalogger.start()
    metalogger.wait_archived(nodes[0]["commit_index"])
    later, _ = asyncio.run(propose_names(cluster, [b"d%04d" % i for i in range(100)]))
    metalogger.wait_archived(leader_commit(cluster))
    assert metalogger.stop() == 0

    archive = metalogger.archive()
    try:
        base = archive.snapshots()[0]
        entries = list(archive.entries())
    finally:
        archive.close()
    assert base.index > 0 and "starts from it" in metalogger.log()
    assert_continuous(entries, first=base.index + 1)
    assert later <= mkdir_names(entries)
    assert "GAP" not in metalogger.log()


@pytest.mark.slow
def test_a_lost_cluster_is_rebuilt_from_the_metalogger_archive_alone(place, tmp_path):
    cluster, metalogger = place
    cluster.start_all()
    cluster.wait_leader()
    metalogger.start()
    metalogger.wait_following()
    acked, _ = asyncio.run(propose_names(cluster, [b"e%04d" % i for i in range(400)]))
    metalogger.wait_archived(leader_commit(cluster))
    cluster.stop_all()
    for i in cluster.addresses:                     # every node lost, with its disk
        shutil.rmtree(cluster.data(i))
    assert metalogger.stop() == 0

    rebuilt = MetadataCluster(str(tmp_path / "rebuilt"))
    # Every voter from the archive: two empty voters would be a majority that can
    # elect a leader with an empty log.
    for i in rebuilt.addresses:
        done = subprocess.run([sys.executable, "-m", "mooseng", "restore", "--from",
                               metalogger.archive_dir, "--to", rebuilt.data(i)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    try:
        rebuilt.start_all()
        rebuilt.wait_converged()
        for i in list(rebuilt.procs):
            assert rebuilt.signal(i, signal.SIGTERM) == 0
        for i in rebuilt.addresses:
            assert acked <= set(names_in_root(rebuilt.data(i))), f"node {i} misses files"
        assert len({projection_digest(rebuilt.data(i)) for i in rebuilt.addresses}) == 1
    finally:
        rebuilt.stop_all()


def test_a_second_metalogger_on_the_same_archive_is_refused(tmp_path):
    first = Metalogger(str(tmp_path), ["127.0.0.1:1"])   # nobody there: it keeps trying
    first.start()
    try:
        first.wait_archive_created()
        second = subprocess.run(
            [sys.executable, "-m", "mooseng", "metalogger", "--masters", "127.0.0.1:1",
             "--data", first.archive_dir], capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "another process" in second.stderr
        assert first.stop() == 0
    finally:
        first.stop(signal.SIGKILL)


@pytest.mark.parametrize("args, words", [
    (["--retain-age", "soon"], "is not a duration"),
    (["--retain-size", "lots"], "is not a size"),
    (["--masters", "nowhere"], "is not HOST:PORT"),
])
def test_bad_metalogger_arguments_are_explained(tmp_path, args, words):
    done = subprocess.run(
        [sys.executable, "-m", "mooseng", "metalogger", "--masters", "127.0.0.1:1",
         "--data", str(tmp_path / "a"), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr


def builder_pids(archive_dir: str) -> list[int]:
    """The effects builder processes working on `archive_dir`."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"services.logship.effects_builder" in argv and archive_dir.encode() in argv:
                pids.append(int(name))
    return pids


@pytest.mark.slow
def test_the_metalogger_records_effects_that_restores_write_instead_of_folding(tmp_path):
    """With the default snapshot interval, a restore would fold every command; the
    metalogger's background builder lets it write the first 1024 entries' effects. It
    gives what folding gives, and the builder goes when the metalogger does."""
    cluster = MetadataCluster(str(tmp_path))
    metalogger = Metalogger(str(tmp_path), list(cluster.addresses.values()))
    try:
        cluster.start_all()
        cluster.wait_leader()
        metalogger.start()
        metalogger.wait_following()
        asyncio.run(propose_names(cluster, [b"e%04d" % i for i in range(1100)]))
        metalogger.wait_archived(leader_commit(cluster))
        metalogger.wait_effects(GROUP)
        (builder,) = builder_pids(metalogger.archive_dir)

        def mooseng(*args) -> str:
            done = subprocess.run([sys.executable, "-m", "mooseng", *args],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            return done.stdout

        written = json.loads(mooseng("log", "replay", metalogger.archive_dir, "--to",
                                     str(tmp_path / "written")).splitlines()[0])
        folded = json.loads(mooseng("log", "replay", metalogger.archive_dir, "--no-effects",
                                    "--to", str(tmp_path / "folded")).splitlines()[0])
        assert written["entries_from_effects"] == GROUP and folded["entries_from_effects"] == 0
        assert written["content_digest"] == folded["content_digest"]
        assert written["applied_digest"] == folded["applied_digest"]
        assert "effects: 1 groups from index 1 to 1024, 0 unusable" in mooseng(
            "log", "verify", metalogger.archive_dir)

        metalogger.proc.kill()                   # no clean stop: the builder sees it gone
        metalogger.proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while builder in builder_pids(metalogger.archive_dir):
            assert time.monotonic() < deadline, "the effects builder outlived its metalogger"
            time.sleep(0.1)
    finally:
        metalogger.stop(signal.SIGKILL)
        cluster.stop_all()


@pytest.mark.slow
def test_a_full_archive_disk_pauses_the_metalogger_until_space_returns(tmp_path):
    """The archive's disk fills while entries keep coming: the metalogger says so and
    waits (it used to exit), and once space is freed it goes on where the archive
    ends, with no gap."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for the archive needs root")
    cluster = MetadataCluster(str(tmp_path))
    metalogger = Metalogger(str(tmp_path), list(cluster.addresses.values()))
    os.makedirs(metalogger.archive_dir)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs",
                    metalogger.archive_dir], check=True)
    filler = os.path.join(metalogger.archive_dir, "filler")
    try:
        cluster.start_all()
        cluster.wait_leader()
        metalogger.start("--no-effects")
        acked, _ = asyncio.run(propose_names(cluster, [b"e%04d" % i for i in range(100)]))
        metalogger.wait_archived(leader_commit(cluster))
        st = os.statvfs(metalogger.archive_dir)
        with open(filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize - 4096)
        more, _ = asyncio.run(propose_names(cluster, [b"f%04d-" % i + b"x" * 200
                                                      for i in range(2000)]))
        deadline = time.monotonic() + 30
        while "disk is full" not in metalogger.log():
            assert time.monotonic() < deadline, metalogger.log()[-2000:]
            time.sleep(0.2)
        assert metalogger.proc.poll() is None, "the metalogger exited on a full disk"
        os.remove(filler)
        metalogger.wait_archived(leader_commit(cluster))
        assert metalogger.stop() == 0
        entries = archived(metalogger)
        assert_continuous(entries, first=1)
        assert acked | more <= mkdir_names(entries)
        assert "GAP" not in metalogger.log()
    finally:
        metalogger.stop(signal.SIGKILL)
        cluster.stop_all()
        subprocess.run(["umount", "-l", metalogger.archive_dir], check=False)
