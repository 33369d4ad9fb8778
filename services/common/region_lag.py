"""How far a second region is behind region A, as a user reads it: computed from the
RegionInfo any node answers with, so the mount and the command line can say it
without the log-shipping code."""

import time
from dataclasses import dataclass

from schemas import metadata_pb2 as mpb


@dataclass(frozen=True)
class Lag:
    entries: int          # of A's committed entries not yet in B (at least)
    seconds: float | None  # since A stamped the newest command B holds; None: no command


def lag(info: mpb.RegionInfo, source_commit: int | None = None,
        now_ns: int | None = None) -> Lag:
    """How far behind B is: behind A's commit index as last heard (by the shipper, or
    `source_commit` asked of A just now). Age counts only while entries are missing:
    a caught-up region is 0 s behind however old its newest command."""
    commit = max(info.source_commit, source_commit or 0)
    behind = max(0, commit - info.shipped_index)
    if not info.shipped_time_ns:
        return Lag(behind, None)
    age = ((now_ns or time.time_ns()) - info.shipped_time_ns) / 1e9 if behind else 0.0
    return Lag(behind, max(0.0, age))


def describe(info: mpb.RegionInfo, source_commit: int | None = None) -> str:
    """One line for humans: the role, the position, the lag."""
    if info.promoted:
        return (f"primary (promoted); it had shipped region A's log up to index "
                f"{info.shipped_index} (term {info.shipped_term})")
    if not info.following:
        return "not following another region (a primary, or nothing shipped yet)"
    behind = lag(info, source_commit)
    age = "" if behind.seconds is None else f", {behind.seconds:.1f} s"
    return (f"following region A: shipped up to index {info.shipped_index} (term "
            f"{info.shipped_term}); A's commit index {max(info.source_commit, source_commit or 0)}"
            f"; behind by {behind.entries} entries{age}")
