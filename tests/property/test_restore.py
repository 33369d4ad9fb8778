"""Point-in-time restore gives back exactly what a live node had at that index.

Random logs (valid and invalid commands, no-ops and membership entries) are applied
one by one to a live projection while an archive records them, with snapshots taken
at random points as a node takes them. Restoring at a random index N (or at the time
of N) must give the content digest and the running digest the live projection had
at N, whether the restore starts from a snapshot or from the first entry.
"""

import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import namespace_pb2 as pb
from services.logship.archive import Archive
from services.logship.effects_builder import EffectsBuilder
from services.logship.restore import plan, replay
from services.metadata.applier import Applier
from services.metadata.projection import open_projection
from services.metadata.raft.messages import CONFIG, NOOP, NORMAL, Config, Entry
from tests.property.test_replay_determinism import callers, ops

CONF = Config(frozenset({1, 2, 3})).encode()

items = st.one_of(
    st.tuples(st.just(NORMAL), callers, ops), st.tuples(st.just(NORMAL), callers, ops),
    st.tuples(st.just(NORMAL), callers, ops), st.tuples(st.just(NOOP)),
    st.tuples(st.just(CONFIG)))


@st.composite
def histories(draw):
    """Entries with terms that never fall, and where snapshots are taken."""
    drawn = draw(st.lists(items, min_size=1, max_size=40))
    entries, term = [], 1
    for i, item in enumerate(drawn, start=1):
        term += draw(st.sampled_from([0, 0, 0, 1]))
        if item[0] == NORMAL:
            data = pb.Command(time_ns=10**9 * i, caller=item[1], **item[2]).SerializeToString()
        else:
            data = CONF if item[0] == CONFIG else b""
        entries.append(Entry(i, term, item[0], data))
    snaps = draw(st.sets(st.integers(1, len(entries)), max_size=3))
    return entries, sorted(snaps)


def live_run(work: str, entries: list[Entry], snaps: list[int]) -> dict[int, tuple]:
    """Apply as a node does, archiving as a metalogger does; (content, applied digest)
    at every index."""
    seen = {}
    with open_projection(os.path.join(work, "live")) as proj, \
            Archive(os.path.join(work, "archive"), create=True) as archive:
        applier = Applier(proj)
        seen[0] = (proj.content_digest(), proj.applied_digest)
        for e in entries:
            applier.apply_many([(e.index, e.data if e.kind == NORMAL else None)])
            archive.append([e])
            seen[e.index] = (proj.content_digest(), proj.applied_digest)
            if e.index in snaps:
                checkpoint = os.path.join(work, f"cp-{e.index}")
                proj.checkpoint(checkpoint)
                archive.add_snapshot(e.index, e.term, CONF, checkpoint)
        archive.sync()
    return seen


def restored(archive: Archive, path: str, **target) -> tuple:
    replay(archive, path, **target)
    with open_projection(path) as proj:
        return proj.content_digest(), proj.applied_digest


@settings(max_examples=40, deadline=None)
@given(history=histories(), data=st.data())
def test_restore_at_n_equals_the_live_projection_at_n(history, data):
    entries, snaps = history
    n = data.draw(st.integers(1, len(entries)), label="N")
    with tempfile.TemporaryDirectory() as work:
        seen = live_run(work, entries, snaps)
        with Archive(os.path.join(work, "archive"), readonly=True) as archive:
            assert restored(archive, os.path.join(work, "at-index"), index=n) == seen[n]
            # By time: a command's time names its index (no-ops share the time before).
            at = archive.time_at(n)
            by_time = archive.index_at_time(at)
            assert by_time >= n
            assert restored(archive, os.path.join(work, "at-time"), at_ns=at) == seen[by_time]


@settings(max_examples=25, deadline=None)
@given(history=histories())
def test_snapshot_plus_suffix_equals_full_replay(history):
    entries, snaps = history
    with tempfile.TemporaryDirectory() as work:
        seen = live_run(work, entries, snaps)
        last = entries[-1].index
        with Archive(os.path.join(work, "archive"), readonly=True) as archive:
            the_plan = plan(archive, last)
            assert the_plan.base == (snaps[-1] if snaps else 0)
            from_snapshot = restored(archive, os.path.join(work, "snap"))
        # The same archive without its snapshots: everything replayed from index 1.
        for name in os.listdir(os.path.join(work, "archive", "snapshots")):
            os.rename(os.path.join(work, "archive", "snapshots", name),
                      os.path.join(work, f"aside-{name}"))
        with Archive(os.path.join(work, "archive"), readonly=True) as archive:
            assert plan(archive, last).base == 0
            full = restored(archive, os.path.join(work, "full"))
        assert from_snapshot == full == seen[last]


@settings(max_examples=40, deadline=None)
@given(history=histories(), group=st.integers(1, 6), data=st.data())
def test_restore_through_the_archives_effects_equals_the_live_projection(
        history, group, data):
    """The effects builder folds the archive in groups; a restore that writes those
    groups (and folds what they do not cover) still gives exactly the live state."""
    entries, snaps = history
    n = data.draw(st.integers(1, len(entries)), label="N")
    with tempfile.TemporaryDirectory() as work:
        seen = live_run(work, entries, snaps)
        archive_dir = os.path.join(work, "archive")
        builder = EffectsBuilder(archive_dir, group=group)
        with Archive(archive_dir, readonly=True) as archive:
            builder.catch_up(archive)
        builder.close()
        with Archive(archive_dir, readonly=True) as archive:
            summary = replay(archive, os.path.join(work, "restored"), index=n)
            base = plan(archive, n).base
        with open_projection(os.path.join(work, "restored")) as proj:
            assert (proj.content_digest(), proj.applied_digest) == seen[n]
        # The entries between the first group boundary at or after the restore's start
        # and the last one at or before N were written from effects, not folded.
        first_boundary, last_boundary = -(-base // group) * group, n // group * group
        assert summary["entries_from_effects"] == max(0, last_boundary - first_boundary)
