"""A metadata node whose disk fills (each node's data on a small tmpfs of its own):
writes stop with ENOSPC and a message that says where, nothing half-written, no node
dies, and everything resumes by itself once space is freed (services/metadata/raft/
disk_space.py)."""

import asyncio
import errno
import os
import subprocess
import time

import pytest

from fuse_client.metadata_client import MetadataClient
from schemas import namespace_pb2 as nspb
from services.common.posix.errors import FsError
from services.common.posix.records import ROOT_INO
from tests.integration.metadata_cluster import MetadataCluster
from tests.integration.test_raft_cluster import names_in_root
from tests.nemesis.cluster import fill as fill_to
from tests.nemesis.cluster import mount_tmpfs, unfill

pytestmark = pytest.mark.slow
DISK_MB, RESERVE_MB = 160, 32
ROOT = nspb.Caller(uid=0, gid=0)


@pytest.fixture
def cluster(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs per node needs root")
    c = MetadataCluster(str(tmp_path), extra_args=("--disk-reserve-mb", str(RESERVE_MB)))
    mounted = []
    try:
        for i in c.addresses:
            mounted.append(mount_tmpfs(c.data(i), DISK_MB))
        yield c
    finally:
        c.stop_all()
        for path in mounted:
            subprocess.run(["umount", "-l", path], check=False)


def fill(c: MetadataCluster, i: int, leave_mb: int = 16) -> None:
    """Leave `leave_mb` free on node i's disk (16: below its reserve, above its floor)."""
    fill_to(c.data(i), leave_mb << 20)


def free(c: MetadataCluster, i: int) -> None:
    unfill(c.data(i))


async def mkdir(md: MetadataClient, name: bytes) -> int:
    """0 when made, else the errno."""
    try:
        await md.mutate(ROOT, mkdir=nspb.Mkdir(parent=ROOT_INO, name=name, mode=0o755))
    except FsError as exc:
        return exc.errno
    return 0


@pytest.mark.parametrize("leave_mb", [16, 4])   # below the reserve; below the floor too
def test_every_disk_full_refuses_writes_with_enospc_and_they_resume_when_space_returns(
        cluster, leave_mb):
    cluster.start_all()
    cluster.wait_leader()

    async def run():
        async with MetadataClient(list(cluster.addresses.values()), deadline_s=20) as md:
            assert await mkdir(md, b"before") == 0
            for i in cluster.addresses:
                fill(cluster, i, leave_mb)
            # Each node looks at its disk every 0.2 s. A write on its way meanwhile
            # would wait for space below the floor (no node takes entries): none is.
            await asyncio.sleep(0.5)
            refusal, made = None, []
            deadline = time.monotonic() + 10
            while refusal is None:
                assert time.monotonic() < deadline, "writes were not refused"
                name = b"late%d" % len(made)
                try:
                    await md.mutate(ROOT, mkdir=nspb.Mkdir(parent=ROOT_INO, name=name,
                                                           mode=0o755))
                    made.append(name)
                except FsError as exc:
                    refusal = (exc, name)
            exc, refused = refusal
            assert exc.errno == errno.ENOSPC
            assert "MiB free" in exc.message and "reserve" in exc.message
            for i in cluster.addresses:
                free(cluster, i)
            deadline = time.monotonic() + 10
            while (code := await mkdir(md, b"after")) == errno.ENOSPC:
                assert time.monotonic() < deadline, "writes did not resume"
                await asyncio.sleep(0.1)
            assert code == 0
            return made, refused
    made, refused = asyncio.run(run())
    nodes = cluster.wait_converged()
    assert all(n["role"] != "unreachable" for n in nodes)
    assert all(p.poll() is None for p in cluster.procs.values()), "a node died"
    for i in list(cluster.procs):
        cluster.signal(i, 15)
    for i in cluster.addresses:
        names = names_in_root(cluster.data(i))
        assert {b"before", b"after", *made} <= set(names) and refused not in names


def test_a_leader_whose_disk_fills_hands_over_and_catches_up_once_freed(cluster):
    cluster.start_all()
    first = cluster.wait_leader()["id"]

    async def run():
        async with MetadataClient(list(cluster.addresses.values()), deadline_s=20) as md:
            fill(cluster, first)
            made, refused = 0, 0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                code = await mkdir(md, b"d%d" % (made + refused))
                made += code == 0
                refused += code == errno.ENOSPC
                assert code in (0, errno.ENOSPC)
            assert made > 50, f"no other node took over the writes ({refused} refused)"
            free(cluster, first)
            return made
    asyncio.run(run())
    assert cluster.wait_leader()["id"] != first
    cluster.wait_converged()       # the old leader took the entries it refused
    assert cluster.procs[first].poll() is None
