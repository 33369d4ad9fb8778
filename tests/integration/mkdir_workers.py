"""Workers that make directories through one session client and time every request:
what an application sees while a test breaks the cluster underneath it."""

import asyncio
import signal
import time
from collections.abc import Callable

from schemas import namespace_pb2 as pb
from tests.integration.test_raft_cluster import names_in_root

ROOT = pb.Caller(uid=0, gid=0, umask=0o022)


async def timed_mkdirs(md, workers: int, each: int,
                       after_each: Callable[[int], None] | None = None
                       ) -> tuple[list[bytes], list[str], list[float]]:
    """`workers` concurrent loops of `each` mkdirs in the root (names w<worker>-<i>);
    `after_each(acknowledged so far)` runs after every request. Returns the names
    acknowledged, the errors (repr), and every request's wait in seconds."""
    acked, errors, waits = [], [], []

    async def worker(w: int) -> None:
        for i in range(each):
            name = b"w%d-%d" % (w, i)
            started = time.monotonic()
            try:
                await md.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=name, mode=0o755))
                acked.append(name)
            except Exception as exc:   # noqa: BLE001 (counted and reported)
                errors.append(repr(exc))
            waits.append(time.monotonic() - started)
            if after_each is not None:
                after_each(len(acked))
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return acked, errors, waits


def assert_no_node_lost(cluster, acked: list[bytes]) -> None:
    """Once the nodes agree, and after a clean stop: every acknowledged name is on every
    node."""
    cluster.wait_converged()
    for i in list(cluster.procs):
        assert cluster.signal(i, signal.SIGTERM) == 0
    for i in cluster.addresses:
        lost = set(acked) - set(names_in_root(cluster.data(i)))
        assert not lost, f"node {i} lost {len(lost)} acknowledged mkdirs"
