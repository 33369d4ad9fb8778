"""Point-in-time restore: the projection as it was at an index (or a time), built from
an archive: the nearest snapshot at or before it, then the archived commands after it
folded through the same Applier the metadata nodes use, so the result is byte for
byte what a node had at that index (same content, same running digest).

`replay` builds just the projection; `restore` also writes what a metadata node needs
to start from the directory (`mooseng metadata --data DIR`): a snapshot checkpoint,
its membership, and a Raft log compacted up to the restored index.
"""

import contextlib
import gc
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from services.logship.archive import (
    Archive,
    ArchivedEntry,
    ArchiveError,
    SnapshotInfo,
    copy_checkpoint,
)
from services.metadata.applier import Applier, ApplyError
from services.metadata.projection import Projection, ProjectionError, open_projection
from services.metadata.raft.log_store import LogStore
from services.metadata.raft.messages import CONFIG, NORMAL, Config

BATCH = 2048   # entries per WriteBatch: big batches amortize the write, the fold dominates

OnResults = Callable[[list[ArchivedEntry], list], None]


@dataclass(frozen=True)
class Plan:
    target: int                    # the index the projection will be at
    snapshot: SnapshotInfo | None  # start from it (None: from an empty projection)

    @property
    def base(self) -> int:
        return self.snapshot.index if self.snapshot else 0


def plan(archive: Archive, index: int | None = None, at_ns: int | None = None,
         start: int = 0) -> Plan:
    """Which snapshot to start from to reach `index` (or the last index at or before
    `at_ns`, or the archive's end). `start`: a projection already at this index can be
    continued instead (the snapshot is used only if it is further along)."""
    if index is not None and at_ns is not None:
        raise ArchiveError("give an index or a time to restore to, not both")
    if at_ns is not None:
        index = archive.index_at_time(at_ns)
        if index == 0:
            raise ArchiveError(f"{archive.directory}: nothing archived is at or before that "
                               f"time; the earliest restorable point is "
                               f"{_earliest(archive)}")
    target = archive.last_index if index is None else index
    if target < 0 or target > archive.last_index:
        raise ArchiveError(f"{archive.directory}: index {target} is past the archive's end "
                           f"({archive.last_index})")
    usable = [s for s in archive.snapshots() if start < s.index <= target]
    snapshot = usable[-1] if usable else None
    base = snapshot.index if snapshot else start
    if target > base and archive.first_index > base + 1:
        raise ArchiveError(f"{archive.directory}: cannot restore to index {target}: entries "
                           f"from {base + 1} are no longer archived (the archive starts at "
                           f"{archive.first_index}) and no snapshot lies between; the "
                           f"earliest restorable point is {_earliest(archive)}")
    return Plan(target, snapshot)


def _earliest(archive: Archive) -> str:
    snaps = archive.snapshots()
    if archive.first_index == 1:
        return "index 1"
    if snaps:
        return f"index {snaps[0].index} (a snapshot)"
    return "nothing: the archive holds no snapshot and does not start at index 1"


def fold_range(archive: Archive, applier: Applier, lo: int, hi: int,
               on_results: OnResults | None = None) -> int:
    """Fold archived entries lo..hi into the applier's projection, in big batches.
    Returns how many entries were folded."""
    done = 0
    pending: list[ArchivedEntry] = []
    with _fewer_collections():
        for block in archive.batches(lo, hi):
            pending += block
            if len(pending) >= BATCH:
                done += _apply(applier, pending, on_results)
                pending = []
        if pending:
            done += _apply(applier, pending, on_results)
    if applier.projection.applied_index != hi:
        raise ArchiveError(f"{archive.directory}: entries up to {hi} were expected, the "
                           f"archive gave up to {applier.projection.applied_index}")
    return done


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """A replay allocates millions of short-lived objects and keeps big caches: the
    cycle collector's default pace (a young collection every 700 allocations, and
    full passes over the caches) took about a tenth of the time."""
    before = gc.get_threshold()
    gc.freeze()                       # what exists now is not scanned again
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _apply(applier: Applier, entries: list[ArchivedEntry], on_results) -> int:
    try:
        results = applier.apply_many(
            [(e.index, e.data if e.kind == NORMAL else None) for e in entries])
    except ApplyError as exc:
        raise ArchiveError(f"replay stopped: {exc}") from None
    if on_results is not None:
        on_results(entries, results)
    return len(entries)


def replay(archive: Archive, projection_dir: str, index: int | None = None,
           at_ns: int | None = None, on_results: OnResults | None = None) -> dict:
    """Build a projection in `projection_dir` (new, or empty) as it was at the target.
    Returns a summary: target, the snapshot used, entries folded, seconds, rate."""
    the_plan = plan(archive, index, at_ns)
    _fresh(projection_dir)
    started = time.perf_counter()
    if the_plan.snapshot:
        os.rmdir(projection_dir)
        copy_checkpoint(the_plan.snapshot.path, projection_dir, durable=False)
    with _open(projection_dir) as proj:
        if proj.applied_index != the_plan.base:
            raise ArchiveError(f"{the_plan.snapshot.path}: the snapshot says index "
                               f"{the_plan.base} but its projection is at "
                               f"{proj.applied_index}; the archive is damaged")
        folded = fold_range(archive, Applier(proj), the_plan.base + 1, the_plan.target,
                            on_results) if the_plan.target > the_plan.base else 0
        seconds = time.perf_counter() - started
        return {"index": the_plan.target, "from_snapshot": the_plan.base,
                "entries_replayed": folded, "seconds": round(seconds, 3),
                "entries_per_s": round(folded / seconds) if seconds else None,
                "applied_digest": proj.applied_digest.hex()}


def restore(archive: Archive, to_dir: str, index: int | None = None,
            at_ns: int | None = None, voters: list[int] | None = None) -> dict:
    """A metadata node's data directory in `to_dir` (new, or empty), as the cluster was
    at the target: start node 1 of a new cluster on it and the others empty (they catch
    up by snapshot). `voters` replaces the archived membership (needed when the archive
    never saw one: the first members are not in the log)."""
    the_plan = plan(archive, index, at_ns)
    config = _config_at(archive, the_plan, voters)
    term = archive.term_at(the_plan.target) if the_plan.target else 0
    _fresh(to_dir)
    summary = replay(archive, os.path.join(to_dir, "projection"), the_plan.target)
    target = the_plan.target
    snapshots = os.path.join(to_dir, "snapshots")
    os.makedirs(snapshots)
    with _open(os.path.join(to_dir, "projection")) as proj:
        proj.checkpoint(os.path.join(snapshots, f"snap-{target:020d}"))
    _write_node_meta(to_dir, target, term or 0, config)
    summary.update(term=term, voters=sorted(config.voters), time_ns=archive.time_at(target))
    return summary


def _config_at(archive: Archive, the_plan: Plan, voters: list[int] | None) -> Config:
    if voters:
        return Config(frozenset(voters))
    found = the_plan.snapshot.config if the_plan.snapshot else None
    lo = the_plan.base + 1
    for block in archive.batches(lo, the_plan.target):
        for e in block:
            if e.kind == CONFIG:
                found = e.data
    if found is None:
        raise ArchiveError(f"{archive.directory}: the archive does not say who the members "
                           f"were at index {the_plan.target} (no snapshot or membership "
                           f"change before it); give the new cluster's voters, e.g. "
                           f"--voters 1,2,3")
    try:
        return Config.decode(found)
    except (ValueError, KeyError) as exc:
        raise ArchiveError(f"{archive.directory}: the membership recorded at or before "
                           f"index {the_plan.target} does not decode ({exc})") from None


def _write_node_meta(to_dir: str, index: int, term: int, config: Config) -> None:
    """What RaftNode reads on start: the snapshot's meta, and a log whose compaction
    base is the restored index (so the node neither replays nor expects older entries)."""
    meta = {"index": index, "term": term, "config": config.encode().decode()}
    path = os.path.join(to_dir, f"snapshot-{index:020d}.json")
    with open(path, "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    with LogStore(os.path.join(to_dir, "raft-log")) as log:
        if index:
            log.compact(index, term)
            log.save_hard_state(term, 0, index)


def _fresh(path: str) -> None:
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise ArchiveError(f"{path} exists and is not empty; restore into a new directory "
                           f"(nothing there is overwritten)")
    os.makedirs(path, exist_ok=True)


def _open(path: str) -> Projection:
    try:
        return open_projection(path)
    except ProjectionError as exc:
        raise ArchiveError(str(exc)) from None
