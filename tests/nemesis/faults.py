"""The faults, one at a time, each chosen and timed by the run's seed.

Each fault is injected against the node that leads when it starts (or a follower,
or a chunkserver) and returns how to heal it. The clients live in the host's
namespace: a partition between metadata nodes leaves every node reachable by clients
and chunkservers, except `isolate_leader_full`.
"""

import asyncio
import random
from dataclasses import dataclass

from tests.nemesis.cluster import Chunkservers, MetaloggerNode, NetCluster
from tests.nemesis.netlab import HOST, NetLab

KINDS = ("kill_leader", "kill_follower", "pause_leader", "pause_follower",
         "isolate_leader", "isolate_leader_full", "isolate_follower", "leader_deaf",
         "leader_mute", "bridge", "loss", "disk_full_leader", "disk_full_follower",
         "kill_chunkserver", "pause_chunkserver", "isolate_chunkserver",
         "kill_metalogger", "pause_metalogger", "isolate_metalogger",
         "disk_full_metalogger", "disk_full_chunkserver")


@dataclass
class Window:
    kind: str
    target: int
    start: float
    end: float = 0.0


class Nemesis:
    def __init__(self, cluster: NetCluster, chunks: Chunkservers, lab: NetLab,
                 rng: random.Random, clock, metalogger: MetaloggerNode | None = None):
        self.cluster, self.chunks, self.lab = cluster, chunks, lab
        self.metalogger = metalogger
        self.rng, self.clock = rng, clock
        self.windows: list[Window] = []

    async def run(self, seconds: float, kinds=KINDS) -> None:
        """Faults until `seconds` have passed: quiet 1-3 s, a fault for 2-5 s."""
        end = self.clock() + seconds
        while self.clock() + 3 < end:
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
            kind = self.rng.choice(kinds)
            await self.one(kind, min(self.rng.uniform(2.0, 5.0), max(end - self.clock(), 0.5)))

    async def one(self, kind: str, seconds: float) -> None:
        leader = await self.cluster.leader()
        ids = self.cluster.ids
        if leader is None:
            leader = self.rng.choice(ids)
        followers = [i for i in ids if i != leader]
        if kind.endswith(("chunkserver", "metalogger")):
            target = self.rng.choice(self._procs(kind).ids)
        else:
            target = leader if "leader" in kind else self.rng.choice(followers)
        window = Window(kind, target, self.clock())
        self.windows.append(window)
        heal = await asyncio.to_thread(self._inject, kind, target, leader, followers)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(heal)
        window.end = self.clock()

    def _inject(self, kind: str, target: int, leader: int, followers: list[int]):
        cluster, lab = self.cluster, self.lab
        others = [i for i in cluster.ids if i != target]
        procs = self._procs(kind)
        if kind.startswith("kill"):
            procs.kill(target)
            return lambda: procs.start(target)
        if kind.startswith("pause"):
            procs.pause(target)
            return lambda: procs.cont(target)
        if kind.startswith("disk_full"):
            procs.fill(target)
            return lambda: procs.unfill(target)
        if kind in ("isolate_leader", "isolate_follower"):
            for other in others:
                lab.cut_both(target, other)
        elif kind == "isolate_leader_full":     # from the chunkservers and clients too
            for other in others + self.chunks.ids + [HOST]:
                lab.cut_both(target, other)
        elif kind in ("isolate_chunkserver", "isolate_metalogger"):   # from all
            for other in [n for n in lab.nodes if n != target] + [HOST]:
                lab.cut_both(target, other)
        elif kind == "leader_deaf":       # its messages arrive, it hears nobody
            for other in others:
                lab.cut(other, target)
        elif kind == "leader_mute":       # it hears everyone, its messages are lost
            for other in others:
                lab.cut(target, other)
        elif kind == "bridge":            # two nodes cut apart, one sees both
            a, b = self.rng.sample(others, 2) if len(others) > 2 else others
            lab.cut_both(a, b)
        elif kind == "loss":
            lab.lose(0.2)
        else:
            raise ValueError(f"unknown fault {kind}")
        return lab.heal

    def heal_all(self) -> None:
        self.lab.heal()
        for i in self.cluster.ids:
            self.cluster.unfill(i)
        if self.metalogger is not None:
            self.metalogger.unfill(0)
        for i in self.chunks.ids:
            self.chunks.unfill(i)
        self.cluster.restart_missing()
        self.chunks.restart_missing()
        if self.metalogger is not None:
            self.metalogger.restart_missing()

    def _procs(self, kind: str):
        if kind.endswith("chunkserver"):
            return self.chunks
        if kind.endswith("metalogger"):
            if self.metalogger is None:
                raise ValueError(f"{kind}: this run has no metalogger")
            return self.metalogger
        return self.cluster

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.windows:
            out[w.kind] = out.get(w.kind, 0) + 1
        return out


def unavailable(windows: list[Window], acks: list[float]) -> dict[str, float]:
    """Per fault kind, the longest time without an acknowledged write from the fault's
    start until the first write acknowledged after it healed."""
    acks = sorted(acks)
    worst: dict[str, float] = {}
    for w in windows:
        points = [w.start] + [a for a in acks if a > w.start]
        gap, previous = 0.0, w.start
        for a in points[1:]:
            gap = max(gap, a - previous)
            previous = a
            if a >= w.end:
                break
        else:
            gap = float("inf") if w.end else gap   # nothing acknowledged after it
        worst[w.kind] = round(max(worst.get(w.kind, 0.0), gap), 3)
    return worst

