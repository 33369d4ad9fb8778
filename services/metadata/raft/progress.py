"""The leader's view of one follower: how far it matches, what to send next, and
how much may be in flight (flow control by messages and by bytes)."""

from collections import deque

PROBE, REPLICATE, SNAPSHOT = "probe", "replicate", "snapshot"


class Progress:
    __slots__ = ("match", "next", "state", "probe_sent", "pending_snapshot",
                 "inflight", "inflight_bytes", "recent_active", "max_msgs", "max_bytes",
                 "echo_tick")

    def __init__(self, next_index: int, max_msgs: int, max_bytes: int):
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False       # PROBE: one append outstanding, wait for its answer
        self.pending_snapshot = 0
        self.inflight: deque[tuple[int, int]] = deque()   # (last index, bytes) per message
        self.inflight_bytes = 0
        self.recent_active = False    # heard from it since the last quorum check
        self.max_msgs, self.max_bytes = max_msgs, max_bytes
        self.echo_tick = -1 << 62     # our tick when it last heard us (leases)

    def __repr__(self) -> str:
        return f"<{self.state} match={self.match} next={self.next} inflight={len(self.inflight)}>"

    # -- state changes ------------------------------------------------------------
    def _reset(self, state: str) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()
        self.inflight_bytes = 0

    def become_probe(self) -> None:
        if self.state == SNAPSHOT:
            pending = self.pending_snapshot
            self._reset(PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, index: int) -> None:
        self._reset(SNAPSHOT)
        self.pending_snapshot = index

    # -- flow ---------------------------------------------------------------------
    def is_paused(self) -> bool:
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return (len(self.inflight) >= self.max_msgs
                    or self.inflight_bytes >= self.max_bytes)
        return True

    def sent_entries(self, last_index: int, nbytes: int) -> None:
        """An append carrying entries up to `last_index` went out."""
        if self.state == REPLICATE:
            self.next = last_index + 1
            self.inflight.append((last_index, nbytes))
            self.inflight_bytes += nbytes
        elif self.state == PROBE:
            self.probe_sent = True

    def free_first(self) -> None:
        if self.inflight:
            self.inflight_bytes -= self.inflight.popleft()[1]

    def maybe_update(self, index: int) -> bool:
        """The follower matches up to `index`. False if that is old news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0][0] <= index:
            self.inflight_bytes -= self.inflight.popleft()[1]
        return updated

    def maybe_decrease(self, rejected: int, next_probe: int) -> bool:
        """The follower rejected an append at `rejected`; back off towards `next_probe`.
        False if the rejection is stale (about an append we no longer care about)."""
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, next_probe + 1), self.match + 1, 1)
        self.probe_sent = False
        return True
