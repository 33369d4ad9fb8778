"""A hand-driven cluster of Raft cores for scenario tests: deliver, drop or hold
messages one by one, as the figures of the Raft paper do."""

import random

from services.metadata.raft.core import Persisted, RaftCore, RaftOptions
from services.metadata.raft.messages import Config, Message

OPTS = RaftOptions(election_ticks=10, heartbeat_ticks=1, max_inflight_msgs=4)


class Cluster:
    def __init__(self, n: int = 3, opts: RaftOptions = OPTS, learners=(), seed: int = 1):
        self.config = Config(frozenset(range(1, n + 1)), frozenset(learners))
        self.opts = opts
        self.nodes = {i: RaftCore(i, self.config, opts, rng=random.Random(seed + i))
                      for i in self.config.members}
        self.mailbox: list[Message] = []
        self.applied: dict[int, list] = {i: [] for i in self.nodes}
        self.read_states: dict[int, list] = {i: [] for i in self.nodes}
        self.cut: set[int] = set()   # isolated nodes

    def add_node(self, i: int, persisted: Persisted | None = None) -> RaftCore:
        self.nodes[i] = RaftCore(i, self.config, self.opts, persisted or Persisted(),
                                 random.Random(i))
        self.applied[i], self.read_states[i] = [], []
        return self.nodes[i]

    def collect(self) -> None:
        """Run every node's Ready: (persist), queue messages, apply."""
        for i, core in self.nodes.items():
            rd = core.ready()
            if not rd:
                continue
            self.mailbox += [m for m in rd.messages if m.to in self.nodes]
            self.applied[i] += rd.committed
            self.read_states[i] += rd.read_states
            core.advance(rd)

    def deliver(self, keep=lambda m: True, rounds: int = 100) -> None:
        """Deliver messages (those `keep` accepts, between connected nodes) until quiet."""
        for _ in range(rounds):
            self.collect()
            if not self.mailbox:
                return
            batch, self.mailbox = self.mailbox, []
            for m in batch:
                if keep(m) and m.frm not in self.cut and m.to not in self.cut:
                    self.nodes[m.to].step(m)
        raise AssertionError("the cluster never went quiet")

    def tick(self, node: int, times: int = 1) -> None:
        for _ in range(times):
            self.nodes[node].tick()

    def tick_all(self, times: int = 1, keep=lambda m: True) -> None:
        for _ in range(times):
            for core in self.nodes.values():
                core.tick()
            self.deliver(keep)

    def elect(self, node: int) -> RaftCore:
        self.nodes[node].campaign(transfer=False)
        self.deliver()
        assert self.nodes[node].role == "leader", self.nodes[node].status()
        return self.nodes[node]

    def propose(self, node: int, *values: bytes):
        placed = self.nodes[node].propose(list(values))
        self.deliver()
        return placed
