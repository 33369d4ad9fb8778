"""Who is asking: the Caller the fold checks permissions against.

The kernel gives uid, gid, umask and pid with each request, but not the
supplementary groups; those come from /proc/<pid>/status and are kept a moment
per pid, since one process usually sends many requests in a row.
"""

import time

from schemas import namespace_pb2 as pb

GROUPS_TTL_S = 1.0
MAX_PIDS = 4096


def parse_groups(status_text: str) -> list[int]:
    """The `Groups:` line of /proc/<pid>/status."""
    for line in status_text.splitlines():
        if line.startswith("Groups:"):
            return [int(g) for g in line.split()[1:]]
    return []


class Callers:
    def __init__(self, proc: str = "/proc", ttl_s: float = GROUPS_TTL_S):
        self.proc, self.ttl_s = proc, ttl_s
        self._groups: dict[int, tuple[float, list[int]]] = {}

    def of(self, ctx) -> pb.Caller:
        """The Caller for a pyfuse3 RequestContext (uid, gid, pid, umask)."""
        return pb.Caller(uid=ctx.uid, gid=ctx.gid, groups=self.groups(ctx.pid),
                         umask=ctx.umask)

    def groups(self, pid: int) -> list[int]:
        """The supplementary groups of `pid`; none when it is gone (or pid 0, the
        kernel itself)."""
        if pid <= 0:
            return []
        now = time.monotonic()
        cached = self._groups.get(pid)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        try:
            with open(f"{self.proc}/{pid}/status") as f:
                groups = parse_groups(f.read())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            groups = []
        if len(self._groups) >= MAX_PIDS:
            self._groups.clear()     # simple bound; refilled on demand
        self._groups[pid] = (now, groups)
        return groups
