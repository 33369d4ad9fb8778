"""The offline half of log shipping, as an operator uses it: `mooseng log ...` on a real
archive, `mooseng restore` to a point in time, and a new metadata cluster rebuilt from
the restored directory alone (node 1 from it, nodes 2 and 3 empty)."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuse_client.metadata_client import MetadataClient
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.logship.archive import Archive
from services.metadata.applier import Applier
from services.metadata.projection import open_projection
from services.metadata.raft.messages import NOOP, NORMAL, Config, Entry
from tests.integration.metadata_cluster import MetadataCluster

REPO = Path(__file__).resolve().parents[2]
ROOT = pb.Caller(uid=0, gid=0)
T0 = 1_795_000_000 * 10**9          # 2026-11-18T11:06:40Z
BEFORE_RM = "2026-11-18T11:06:40.5Z"  # after the tree was made, before it was removed
SNAPSHOT_AT = 30


def history() -> list[Entry]:
    """A project tree made, a snapshot's worth in; later it is removed (`rm -rf`)."""
    ops = [{"mkdir": pb.Mkdir(parent=1, name=b"proj", mode=0o755)}]          # inode 2
    ops += [{"create": pb.Create(parent=2, name=b"file%d" % i, mode=0o644)} for i in range(40)]
    ops += [{"mkdir": pb.Mkdir(parent=1, name=b"keep", mode=0o700)}]
    ops += [{"unlink": pb.Unlink(parent=2, name=b"file%d" % i)} for i in range(40)]
    ops += [{"rmdir": pb.Rmdir(parent=1, name=b"proj")}]
    entries = [Entry(1, 1, NOOP, b"")]
    for i, op in enumerate(ops, start=2):
        # The tree is made in the first 0.1 s; the removal starts a second later.
        when = T0 + i * 10**6 + (10**9 if "unlink" in op or "rmdir" in op else 0)
        entries.append(Entry(i, 2 if i > 20 else 1, NORMAL,
                             pb.Command(time_ns=when, caller=ROOT, **op).SerializeToString()))
    return entries


@pytest.fixture
def archive_dir(tmp_path) -> str:
    """An archive as a metalogger leaves it: entries, and a snapshot the cluster took."""
    path = str(tmp_path / "archive")
    with open_projection(str(tmp_path / "live")) as proj, \
            Archive(path, create=True) as archive:
        applier = Applier(proj)
        for e in history():
            applier.apply_many([(e.index, e.data if e.kind == NORMAL else None)])
            archive.append([e])
            if e.index == SNAPSHOT_AT:
                proj.checkpoint(str(tmp_path / "cp"))
                archive.add_snapshot(e.index, e.term, Config(frozenset({1, 2, 3})).encode(),
                                     str(tmp_path / "cp"))
        archive.sync()
    return path


def mooseng(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mooseng", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_log_tools_on_a_real_archive(archive_dir, tmp_path):
    dump = mooseng("log", "dump", archive_dir, "--from", "2", "--to", "4")
    assert dump.returncode == 0, dump.stderr
    lines = dump.stdout.splitlines()
    assert len(lines) == 3
    assert "2026-11-18T11:06:40.002000000Z" in lines[0] and "mkdir" in lines[0]
    assert 'name="proj"' in lines[0] and 'name="file0"' in lines[1]

    as_json = mooseng("log", "dump", archive_dir, "--json", "--results", "--from", "43",
                      "--to", "44")
    first, second = (json.loads(x) for x in as_json.stdout.splitlines())
    assert (first["op"], first["args"]["name"]) == ("mkdir", "keep")
    assert first["result"]["attr"]["inode"] == 43
    assert second["op"] == "unlink" and second["result"] == {"errno": 0}

    stats = json.loads(mooseng("log", "stats", archive_dir, "--json").stdout)
    assert stats["operations"] == {"create": 40, "unlink": 40, "mkdir": 2, "rmdir": 1}
    assert stats["kinds"] == {"command": 83, "noop": 1} and stats["snapshots"] == [30]

    verify = mooseng("log", "verify", archive_dir)
    assert verify.returncode == 0 and "ok: entries 1..84" in verify.stdout

    # Replays before and after the removal differ, in the removed tree.
    assert mooseng("log", "replay", archive_dir, "--to", str(tmp_path / "then"),
                   "--at", BEFORE_RM).returncode == 0
    assert mooseng("log", "replay", archive_dir, "--to", str(tmp_path / "now")).returncode == 0
    same = mooseng("log", "diff", str(tmp_path / "now"), str(tmp_path / "now"))
    assert same.returncode == 0 and "identical" in same.stdout
    differ = mooseng("log", "diff", str(tmp_path / "then"), str(tmp_path / "now"),
                     "--limit", "200")
    assert differ.returncode == 1
    assert "dentries[parent 1, 'proj']" in differ.stdout and "keys differ" in differ.stdout

    # A damaged archive: verify names the file and exits 1; the tools exit 2, no traceback.
    segment = sorted(Path(archive_dir, "segments").iterdir())[0]
    raw = bytearray(segment.read_bytes())
    raw[200] ^= 0xFF
    segment.write_bytes(bytes(raw))
    broken = mooseng("log", "verify", archive_dir)
    assert broken.returncode == 1 and str(segment) in broken.stdout
    dumped = mooseng("log", "dump", archive_dir)
    assert dumped.returncode == 2 and "Traceback" not in dumped.stderr
    assert str(segment) in dumped.stderr
    missing = mooseng("restore", "--from", str(tmp_path / "nope"), "--to", str(tmp_path / "x"))
    assert missing.returncode == 2 and "no archive there" in missing.stderr
    assert not (tmp_path / "x").exists()


def test_restore_before_rm_rf_then_a_new_cluster_serves_it(archive_dir, tmp_path):
    cluster = MetadataCluster(str(tmp_path / "cluster"))
    os.makedirs(cluster.root)
    done = mooseng("restore", "--from", archive_dir, "--at", BEFORE_RM, "--to",
                   cluster.data(1))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    # From the snapshot at 30, then the entries to 43 (the last before the removal).
    assert (summary["index"], summary["from_snapshot"], summary["voters"]) == (43, 30, [1, 2, 3])
    try:
        # Node 1 from the restore and node 2 empty first: node 2 cannot win an election
        # without node 1's vote, which a log behind node 1's never gets. Two empty voters
        # together could elect a leader with an empty log (Raft's majority would have no
        # data), so node 3 starts empty only once node 2 holds the restored state.
        cluster.start(1)
        cluster.start(2)
        assert cluster.wait_leader(timeout=60)["id"] == 1
        cluster.wait(lambda ns: all(n.get("applied_index", 0) >= 43 for n in ns
                                    if n.get("id") in (1, 2)), 60, "node 2 catching up")
        cluster.start(3)
        cluster.wait_converged(timeout=60)

        async def read_back() -> tuple[list[bytes], int]:
            async with MetadataClient(list(cluster.addresses.values()), name="t") as c:
                proj = (await c.read(ROOT, lookup=mpb.Lookup(parent=1, name=b"proj"))).attr
                names = []
                reply = await c.read(ROOT, readdir=mpb.Readdir(inode=proj.inode, limit=1000))
                names += [e.name for e in reply.entries]
                made = await c.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=b"after",
                                                           mode=0o755))
                return names, made.attr.inode

        names, new_inode = asyncio.run(read_back())
        assert sorted(names) == sorted(b"file%d" % i for i in range(40))
        assert new_inode == 44           # the restored counters go on where they were
        nodes = cluster.wait_converged(timeout=60)
        assert {n["applied_index"] for n in nodes} == {nodes[0]["applied_index"]}
    finally:
        cluster.stop_all()
    digests = set()
    for i in cluster.addresses:
        with open_projection(os.path.join(cluster.data(i), "projection")) as proj:
            digests.add(proj.content_digest())
    assert len(digests) == 1, "the empty nodes did not catch up to the restored one"
