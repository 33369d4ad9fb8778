"""A snapshot is taken beside the Raft loop: however long the checkpoint takes, the
node keeps its clock, commits and answers, and what committed meanwhile is applied
after it, in order, with the snapshot exactly at the index it names."""

import asyncio
import time

from services.metadata.raft.core import LEADER, RaftOptions
from services.metadata.raft.node import NodeOptions, RaftNode

SLOW_S = 0.8        # longer than this node's election timeout (10-20 ticks of 20 ms)


async def _leading(tmp_path, snapshot_every: int = 40) -> RaftNode:
    node = RaftNode(1, {1: "127.0.0.1:1"}, str(tmp_path), NodeOptions(
        tick_s=0.02, snapshot_every=snapshot_every, state_machine="counter",
        raft=RaftOptions(election_ticks=10)))
    await node.start()
    for _ in range(500):
        if node.core.role == LEADER:
            return node
        await asyncio.sleep(0.01)
    raise AssertionError("a single voter did not become leader")


async def _watch_the_loop(lags: list[float], every: float) -> None:
    """How late each of a series of short sleeps woke: how long the loop was held."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(every)
        lags.append(time.monotonic() - start - every)


def test_a_slow_checkpoint_holds_up_applying_only(tmp_path):
    async def run():
        node = await _leading(tmp_path)
        taken = []
        checkpoint = node.machine.checkpoint

        def slow_checkpoint():
            at = node.machine.applied_index
            time.sleep(SLOW_S)                # a big projection on a slow disk
            taken.append((at, node.machine.applied_index))
            return checkpoint()
        node.machine.checkpoint = slow_checkpoint
        lags = []
        watcher = asyncio.ensure_future(_watch_the_loop(lags, 0.01))
        try:
            indexes = []
            started = time.monotonic()
            while not taken and time.monotonic() - started < 10:
                index, _ = await node.propose([b"x"])
                indexes.append(index)
            assert taken, "no snapshot was taken"
            await asyncio.sleep(0.05)         # the watcher notes the last stretch
            # the loop was never held up by the checkpoint
            assert max(lags) < SLOW_S / 2
            # nothing was applied while the checkpoint was taken: it is exactly at
            # the index it is named by
            (at, after), = taken
            assert after == at
            await asyncio.sleep(0.1)
            assert node.core.snapshot.index == at
            # everything proposed is applied, each once, in order
            assert indexes == sorted(set(indexes))
            assert node.machine.applied_index >= indexes[-1]
            assert node.machine.count == len(indexes)
        finally:
            watcher.cancel()
            await node.stop()
    asyncio.run(run())


def test_stopping_during_a_checkpoint_keeps_every_committed_entry(tmp_path):
    async def run():
        node = await _leading(tmp_path)
        checkpoint = node.machine.checkpoint
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        def slow_checkpoint():
            loop.call_soon_threadsafe(started.set)
            time.sleep(SLOW_S)
            return checkpoint()
        node.machine.checkpoint = slow_checkpoint
        last = 0
        while not started.is_set():
            last, _ = await node.propose([b"x"])
        # committed while the checkpoint runs: held back, then the node stops
        pending = asyncio.ensure_future(node.propose([b"y"]))
        await asyncio.sleep(0.1)
        await node.stop()
        pending.cancel()
        return last
    last = asyncio.run(run())

    async def restart():
        node = await _leading(tmp_path)
        try:
            index, _ = await node.propose([b"z"])
            assert index > last
            assert node.machine.applied_index == index
        finally:
            await node.stop()
    asyncio.run(restart())


def test_a_failing_checkpoint_is_tried_again_later_not_at_every_turn(tmp_path):
    async def run():
        node = await _leading(tmp_path)
        calls = []

        def failing_checkpoint():
            calls.append(node.machine.applied_index)
            raise OSError(28, "No space left on device")
        node.machine.checkpoint = failing_checkpoint
        try:
            for _ in range(60):
                await node.propose([b"x"])
            # one attempt after 40 entries, the next only 4 entries later (40 // 10)
            assert 1 <= len(calls) <= 1 + 20 // 4
            assert node.core.snapshot.index == 0     # nothing compacted
            assert node.machine.count == 60          # and nothing held back for good
        finally:
            await node.stop()
    asyncio.run(run())


def test_a_burst_of_commits_is_applied_in_slices(tmp_path):
    """Thousands of entries committed at once (an rm -rf) are applied a slice at a
    time, the loop free in between: applied in one go they held it for most of a
    second, and a leader that misses its heartbeats that long is voted out."""
    async def run():
        node = await _leading(tmp_path, snapshot_every=100_000)
        apply = node.machine.apply

        def slow_apply(entries):
            time.sleep(0.0002 * len(entries))      # 200 µs an entry, like an unlink
            return apply(entries)
        node.machine.apply = slow_apply
        lags = []
        watcher = asyncio.ensure_future(_watch_the_loop(lags, 0.005))
        try:
            first, results = await node.propose([b"x"] * 3000)
            await asyncio.sleep(0.02)
            assert len(results) == 3000 and node.machine.count == 3000
            assert max(lags) < 0.2          # 3,000 at once would be 0.6 s
        finally:
            watcher.cancel()
            await node.stop()
    asyncio.run(run())
