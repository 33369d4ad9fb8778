"""Point-in-time restore: the projection as it was at an index (or a time), built from
an archive: the nearest snapshot at or before it, then the archived commands after it
folded through the same Applier the metadata nodes use, so the result is byte for
byte what a node had at that index (same content, same running digest). Where the
metalogger's effects builder has recorded what a group of commands did
(services.logship.effects), the restore writes that instead of folding them again;
a group is used only if it continues the running digest the projection has.

`replay` builds just the projection; `restore` also writes what a metadata node needs
to start from the directory (`mooseng metadata --data DIR`): a snapshot checkpoint,
its membership, and a Raft log compacted up to the restored index.
"""

import contextlib
import gc
import json
import logging
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
from services.logship.effects import EffectsError, EffectsIndex, effects_dir
from services.metadata.applier import Applier, ApplyError
from services.metadata.projection import Projection, ProjectionError, open_projection
from services.metadata.raft.log_store import LogStore
from services.metadata.raft.messages import CONFIG, NORMAL, Config

log = logging.getLogger(__name__)

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
               on_results: OnResults | None = None, effects: "Effects | None" = None) -> int:
    """Bring the applier's projection from lo - 1 to hi: the archive's effects where
    a group continues the projection (`effects`, unless results are wanted), the
    archived commands folded in big batches elsewhere. Returns how many entries."""
    proj = applier.projection
    entries = _Entries(archive, lo, hi)
    with _fewer_collections():
        while proj.applied_index < hi:
            start = proj.applied_index + 1
            stop = hi
            if effects is not None and on_results is None:
                if effects.write(proj, hi, entries):
                    continue
                stop = (effects.next_start(start, hi) or hi + 1) - 1
            batch = entries.take(min(BATCH, stop - start + 1))
            if not batch:
                break
            _apply(applier, batch, on_results)
    if proj.applied_index != hi:
        raise ArchiveError(f"{archive.directory}: entries up to {hi} were expected, the "
                           f"archive gave up to {proj.applied_index}")
    return hi - lo + 1


class _Entries:
    """The archived entries lo..hi, read once, in order, taken as needed."""

    def __init__(self, archive: Archive, lo: int, hi: int):
        self._blocks = archive.batches(lo, hi)
        self._block: list[ArchivedEntry] = []
        self._pos = 0

    def take(self, count: int) -> list[ArchivedEntry]:
        out: list[ArchivedEntry] = []
        while len(out) < count:
            if self._pos == len(self._block):
                self._block, self._pos = next(self._blocks, []), 0
                if not self._block:
                    break
            part = self._block[self._pos:self._pos + count - len(out)]
            out += part
            self._pos += len(part)
        return out

    def unread(self, entries: list[ArchivedEntry]) -> None:
        self._block, self._pos = entries + self._block[self._pos:], 0


# Groups of effects written together: one WriteBatch of about this many keys.
EFFECT_BATCH_KEYS = 200_000


class Effects:
    """The archive's effects as a restore uses them: a group is written if it
    continues the projection's running digest and was made from the very entries the
    archive holds; a group in trouble is logged, and its commands folded instead."""

    def __init__(self, archive: Archive):
        self.index = EffectsIndex(effects_dir(archive.directory))
        for problem in self.index.problems:
            log.warning("archive effects: %s; those commands are folded instead", problem)
        self.entries = 0          # how many entries were written from effects

    def write(self, proj: Projection, hi: int, entries: _Entries) -> int:
        """Write the groups that continue `proj`, up to hi, taking their entries from
        `entries`; how many entries that covered (0: no group continues it here)."""
        covered, batch, keys = 0, [], 0
        last = after = None
        for group in self.index.chain(proj.applied_index + 1, hi, proj.applied_digest):
            taken = entries.take(group.last - group.first + 1)
            try:
                ranges, writes = self.index.load_for(group, taken)
            except EffectsError as exc:
                log.warning("archive effects: %s; its commands are folded instead", exc)
                del self.index.groups[group.first]
                entries.unread(taken)
                break
            batch.append((ranges, writes))
            keys += sum(map(len, writes.values()))
            covered += len(taken)
            last, after = group.last, group.after
            if keys >= EFFECT_BATCH_KEYS:
                proj.write_groups(batch, last, after)
                batch, keys = [], 0
        if batch:
            proj.write_groups(batch, last, after)
        self.entries += covered
        return covered

    def next_start(self, start: int, hi: int) -> int | None:
        return self.index.next_start(start, hi)


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


def _apply(applier: Applier, entries: list[ArchivedEntry], on_results) -> None:
    try:
        results = applier.apply_many(
            [(e.index, e.data if e.kind == NORMAL else None) for e in entries])
    except ApplyError as exc:
        raise ArchiveError(f"replay stopped: {exc}") from None
    if on_results is not None:
        on_results(entries, results)


def replay(archive: Archive, projection_dir: str, index: int | None = None,
           at_ns: int | None = None, on_results: OnResults | None = None,
           use_effects: bool = True) -> dict:
    """Build a projection in `projection_dir` (new, or empty) as it was at the target.
    Returns a summary: target, the snapshot used, entries replayed (of which written
    from the archive's effects), seconds, rate. `use_effects=False` folds every
    command (to check the effects, or measure the fold)."""
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
        effects = Effects(archive) if use_effects else None
        folded = fold_range(archive, Applier(proj), the_plan.base + 1, the_plan.target,
                            on_results, effects) if the_plan.target > the_plan.base else 0
        seconds = time.perf_counter() - started
        return {"index": the_plan.target, "from_snapshot": the_plan.base,
                "entries_replayed": folded,
                "entries_from_effects": effects.entries if effects else 0,
                "seconds": round(seconds, 3),
                "entries_per_s": round(folded / seconds) if seconds else None,
                "applied_digest": proj.applied_digest.hex()}


def restore(archive: Archive, to_dir: str, index: int | None = None,
            at_ns: int | None = None, voters: list[int] | None = None,
            use_effects: bool = True) -> dict:
    """A metadata node's data directory in `to_dir` (new, or empty), as the cluster was
    at the target: start node 1 of a new cluster on it and the others empty (they catch
    up by snapshot). `voters` replaces the archived membership (needed when the archive
    never saw one: the first members are not in the log)."""
    the_plan = plan(archive, index, at_ns)
    config = _config_at(archive, the_plan, voters)
    term = archive.term_at(the_plan.target) if the_plan.target else 0
    _fresh(to_dir)
    summary = replay(archive, os.path.join(to_dir, "projection"), the_plan.target,
                     use_effects=use_effects)
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
