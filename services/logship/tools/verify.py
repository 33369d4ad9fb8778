"""`mooseng log verify`: every block's checksums, index continuity and terms, and every
snapshot openable at the index it claims. Stops at the first problem and names it."""

import os
from collections.abc import Callable, Iterator

from rocksdict import AccessType, Options, Rdict

from services.common.posix import records as r
from services.logship.archive import Archive, ArchiveError, SnapshotInfo
from services.logship.effects import EffectsError, EffectsIndex, effects_dir
from services.metadata.projection import APPLIED_INDEX
from services.metadata.raft.messages import Config


def verify(directory: str, out: Callable[[str], None]) -> str | None:
    """None if the archive is sound, else the first problem (also written to `out`)."""
    try:
        with Archive(directory, readonly=True) as archive:
            for note in archive.recovery_notes:
                out(f"note: {note} (a writer's unsynced tail; not an error)")
            entries = _check_entries(archive)
            for snap in archive.snapshots():
                _check_snapshot(snap)
            out(f"ok: entries {archive.first_index}..{archive.last_index} ({entries} "
                f"checked), {len(archive.snapshots())} snapshots "
                f"{[s.index for s in archive.snapshots()]}")
            _check_effects(archive, out)
            return None
    except ArchiveError as exc:
        out(f"problem: {exc}")
        return str(exc)


def _check_entries(archive: Archive) -> int:
    expect, term, count = None, 0, 0
    snaps = {s.index for s in archive.snapshots()}
    for batch in archive.batches():
        for e in batch:
            if expect is not None and e.index != expect and e.index - 1 not in snaps:
                raise ArchiveError(f"entries {expect}..{e.index - 1} are missing and no "
                                   f"snapshot covers them")
            if e.term < term:
                raise ArchiveError(f"entry {e.index} has term {e.term}, below the term "
                                   f"{term} of the entry before it")
            expect, term = e.index + 1, e.term
        count += len(batch)
    return count


def _check_snapshot(snap: SnapshotInfo) -> None:
    try:
        Config.decode(snap.config)
    except (ValueError, KeyError) as exc:
        raise ArchiveError(f"snapshot {snap.index}: its membership does not decode "
                           f"({exc})") from None
    families = {cf: Options(raw_mode=True) for cf in r.COLUMN_FAMILIES}
    try:
        db = Rdict(snap.path, Options(raw_mode=True), column_families=families,
                   access_type=AccessType.read_only())
    except Exception as exc:  # rocksdict raises plain Exception
        raise ArchiveError(f"snapshot {snap.index} at {snap.path} does not open: "
                           f"{exc}") from None
    try:
        raw = db.get_column_family(r.META).get(APPLIED_INDEX)
        found = r.from_u64(raw) if raw else None
    finally:
        db.close()
    if found != snap.index:
        raise ArchiveError(f"snapshot {snap.index} at {os.path.dirname(snap.path)}: its "
                           f"projection is at index {found}, not {snap.index}")


def _check_effects(archive: Archive, out: Callable[[str], None]) -> None:
    """The effects are derived data: trouble with them is reported, not an error (a
    restore folds the commands of a group it cannot use)."""
    index = EffectsIndex(effects_dir(archive.directory))
    if not index.groups and not index.problems:
        out("effects: none (restores fold every command)")
        return
    groups = sorted(index.groups.values(), key=lambda g: g.first)
    bad = list(index.problems)
    try:
        for group, entries in _with_entries(archive, groups):
            try:
                index.load_for(group, entries)
            except EffectsError as exc:
                bad.append(str(exc))
    except ArchiveError as exc:
        bad.append(str(exc))
    out(f"effects: {len(groups)} groups from index {groups[0].first if groups else '-'} "
        f"to {groups[-1].last if groups else '-'}, {len(bad)} unusable (restores fold "
        f"their commands)")
    for problem in bad:
        out(f"note: effects: {problem}")


def _with_entries(archive: Archive, groups: list) -> Iterator[tuple]:
    """Each group (in index order) with the archived entries in its range, the
    archive read once."""
    if not groups:
        return
    pending = iter(groups)
    group, taken = next(pending), []
    for batch in archive.batches(groups[0].first, groups[-1].last):
        for e in batch:
            while group is not None and e.index > group.last:
                yield group, taken
                group, taken = next(pending, None), []
            if group is None:
                return
            if e.index >= group.first:
                taken.append(e)
    while group is not None:
        yield group, taken
        group, taken = next(pending, None), []
