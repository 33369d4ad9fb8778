"""Every metadata node serves Prometheus metrics about its operations and its log."""

import asyncio
import re
import signal
import urllib.request

import pytest

from fuse_client.metadata_client import MetadataClient
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError
from tests.integration.metadata_cluster import MetadataCluster

ROOT = pb.Caller()


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        return r.read().decode()


def value(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in the metrics")


@pytest.fixture
def cluster(tmp_path):
    c = MetadataCluster(str(tmp_path), metrics=True)
    c.start_all()
    c.wait_leader()
    yield c
    c.stop_all()


def test_metrics_count_operations_and_follow_the_log(cluster):
    async def work():
        async with MetadataClient(list(cluster.addresses.values())) as c:
            for i in range(5):
                await c.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=b"d%d" % i, mode=0o755))
            with pytest.raises(FsError):
                await c.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=b"d0", mode=0o755))
            await c.read(ROOT, getattr=mpb.Getattr(inode=1))
    asyncio.run(work())
    leader = cluster.wait_converged()
    leader = next(n for n in leader if n["role"] == "leader")
    text = scrape(cluster.metrics[leader["id"]])
    assert value(text, "mooseng_metadata_operations_total", op="mkdir", result="ok") == 5
    assert value(text, "mooseng_metadata_operations_total", op="mkdir",
                 result="File exists") == 1
    assert value(text, "mooseng_metadata_operation_duration_seconds_count", op="getattr") == 1
    assert value(text, "mooseng_raft_is_leader") == 1
    assert value(text, "mooseng_raft_commit_index") == leader["commit_index"]
    assert value(text, "mooseng_raft_term") == leader["term"]
    assert value(text, "mooseng_raft_log_bytes") > 0
    follower = next(i for i in cluster.addresses if i != leader["id"])
    follower_text = scrape(cluster.metrics[follower])
    assert value(follower_text, "mooseng_raft_is_leader") == 0
    assert value(follower_text, "mooseng_raft_applied_index") == leader["commit_index"]
    assert re.search(r"^mooseng_raft_leader_changes_total", follower_text, re.M)


def test_a_leader_change_is_counted(cluster):
    first = cluster.wait_leader()
    survivor = next(i for i in cluster.addresses if i != first["id"])
    before = value(scrape(cluster.metrics[survivor]), "mooseng_raft_leader_changes_total")
    cluster.signal(first["id"], signal.SIGKILL)
    cluster.wait(lambda ns: any(n["role"] == "leader" for n in ns), 30, "a new leader")
    after = value(scrape(cluster.metrics[survivor]), "mooseng_raft_leader_changes_total")
    assert after >= before + 1
