"""Room on a metadata node's disk: writes stop before the disk is full, not at it.

A write that fails half-way (ENOSPC in the log or in RocksDB) leaves what is on disk
unknown, and the node can only stop (raft/log_store.py refuses further use). So a
node keeps a reserve free. Below it, the leader refuses new client mutations with
ENOSPC and hands leadership to another node, and no snapshot is taken; entries still
come in, so what was already proposed commits. Below a quarter of it (the floor), a
node takes no new entries at all (the leader sends them again later, as after a lost
message): writes then wait, not fail, until space returns. All of it lifts by itself
once space is freed. The floor is far more than what is written between two checks
(a turn of the loop writes at most a few MiB).
"""

import os
import time

DEFAULT_RESERVE = 128 << 20
CHECK_EVERY_S = 0.2


class DiskSpace:
    def __init__(self, path: str, reserve: int = DEFAULT_RESERVE, clock=time.monotonic):
        self.path, self.reserve, self.clock = path, reserve, clock
        self._free, self._checked = 0, float("-inf")

    def free(self) -> int:
        now = self.clock()
        if now - self._checked >= CHECK_EVERY_S:
            st = os.statvfs(self.path)
            self._free, self._checked = st.f_bavail * st.f_frsize, now
        return self._free

    def low(self) -> bool:
        """Below the reserve: refuse new work."""
        return self.reserve > 0 and self.free() < self.reserve

    def critical(self) -> bool:
        """Below the floor: write nothing more."""
        return self.reserve > 0 and self.free() < self.reserve // 4

    def describe(self, node_id: int) -> str:
        return (f"metadata node {node_id} has {self.free() >> 20} MiB free on {self.path}, "
                f"below its reserve of {self.reserve >> 20} MiB: writes resume once space "
                f"is freed there")
