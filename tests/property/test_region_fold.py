"""The shipped-position bookkeeping of a second region, in the fold.

Region A's log (random commands, with no-op entries between) is shipped to B in
random batches; the shipper may send batches again (it restarted) or too early (a
proposal overtook another): B must end with A's namespace, holding each entry once,
and a batch that leaves a hole must change nothing. Promotion fences the shipper off.
"""

import errno
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import namespace_pb2 as pb
from services.logship.region_status import namespace_digest
from services.metadata.applier import Applier
from services.metadata.namespace.region_fold import read_state
from services.metadata.projection import open_projection
from tests.property.test_replay_determinism import logs


def a_log(commands: list[bytes], noops: list[bool]) -> list[pb.ShippedEntry]:
    """A's entries: the commands, with a no-op entry (no command) where asked; terms
    rise now and then, as after an election."""
    entries, index = [], 0
    for i, data in enumerate(commands):
        if noops[i % len(noops)]:
            index += 1
            entries.append(pb.ShippedEntry(index=index, term=1 + index // 7))
        index += 1
        entries.append(pb.ShippedEntry(index=index, term=1 + index // 7, command=data))
    return entries


def batch(entries: list[pb.ShippedEntry], lo: int, hi: int) -> bytes:
    """ShipEntries of entries[lo:hi] (positions in the list, 0-based)."""
    prev = entries[lo - 1] if lo else pb.ShippedEntry()
    return pb.Command(ship_entries=pb.ShipEntries(
        prev_index=prev.index, prev_term=prev.term, entries=entries[lo:hi],
        source_commit=entries[-1].index)).SerializeToString()


class RegionB:
    """B's projection and the index its own Raft log would give each command."""

    def __init__(self, path: str):
        self.projection = open_projection(path)
        self.applier = Applier(self.projection)

    def apply(self, command: bytes) -> pb.Result:
        return self.applier.apply(self.projection.applied_index + 1, command)

    def close(self) -> None:
        self.projection.close()


def folded_by_a(commands: list[bytes], path: str) -> str:
    with open_projection(path) as proj:
        Applier(proj).apply_many(list(enumerate(commands, start=1)))
        return namespace_digest(proj)


@st.composite
def deliveries(draw, n: int):
    """Cut points splitting n entries into batches, and a schedule: each step sends
    the next batch, or again one already sent, or one too far ahead."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, n - 1)), max_size=n)) | {0, n})
    spans = list(zip(cuts, cuts[1:], strict=False))
    extra = draw(st.lists(st.tuples(st.integers(0, len(spans) - 1),
                                    st.sampled_from(["again", "ahead"])), max_size=6))
    return spans, extra


@settings(max_examples=60, deadline=None)
@given(commands=logs(), noops=st.lists(st.booleans(), min_size=1, max_size=5),
       data=st.data())
def test_b_ends_with_a_namespace_whatever_is_sent_again_or_too_early(commands, noops, data):
    entries = a_log(commands, noops)
    spans, extra = data.draw(deliveries(len(entries)))
    with tempfile.TemporaryDirectory() as tmp:
        expected = folded_by_a(commands, f"{tmp}/a")
        b = RegionB(f"{tmp}/b")
        try:
            for step, (lo, hi) in enumerate(spans):
                for which, how in extra:
                    if which != step:
                        continue
                    before = namespace_digest(b.projection)
                    if how == "again" and step:
                        earlier = spans[data.draw(st.integers(0, step - 1))]
                        assert b.apply(batch(entries, *earlier)).errno == 0
                    elif how == "ahead" and step + 1 < len(spans):
                        result = b.apply(batch(entries, *spans[step + 1]))
                        assert result.errno == errno.EINVAL and "gap" in result.message
                    assert namespace_digest(b.projection) == before
                assert b.apply(batch(entries, lo, hi)).errno == 0
                held = read_state(b.projection).position
                assert (held.index, held.term) == (entries[hi - 1].index, entries[hi - 1].term)
            assert namespace_digest(b.projection) == expected
            assert read_state(b.projection).following
        finally:
            b.close()


def ship_one(b: RegionB, index: int, term: int, prev_term: int, command: bytes = b""):
    return b.apply(pb.Command(ship_entries=pb.ShipEntries(
        prev_index=index - 1, prev_term=prev_term,
        entries=[pb.ShippedEntry(index=index, term=term, command=command)]))
        .SerializeToString())


MKDIR = pb.Command(time_ns=5, caller=pb.Caller(), mkdir=pb.Mkdir(parent=1, name=b"d",
                                                                   mode=0o755))


def test_a_different_history_at_the_shipped_position_is_refused(tmp_path):
    b = RegionB(str(tmp_path))
    try:
        assert ship_one(b, 1, 2, 0).errno == 0
        refused = ship_one(b, 2, 2, prev_term=1)   # A's entry 1 had term 2, not 1
        assert refused.errno == errno.EINVAL and "histories differ" in refused.message
        assert read_state(b.projection).position.index == 1
    finally:
        b.close()


def test_following_refuses_local_writes_and_promotion_fences_the_shipper(tmp_path):
    b = RegionB(str(tmp_path))
    try:
        assert ship_one(b, 1, 1, 0, MKDIR.SerializeToString()).errno == 0
        local = pb.Command(time_ns=6, caller=pb.Caller(),
                           mkdir=pb.Mkdir(parent=1, name=b"mine", mode=0o755))
        assert b.apply(local.SerializeToString()).errno == errno.EROFS
        promote = pb.Command(time_ns=7, promote_region=pb.PromoteRegion()).SerializeToString()
        assert b.apply(promote).errno == 0
        assert b.apply(promote).errno == errno.EALREADY
        fenced = ship_one(b, 2, 1, 1, local.SerializeToString())
        assert fenced.errno == errno.EROFS and "fenced" in fenced.message
        assert b.apply(local.SerializeToString()).errno == 0   # a primary now
        state = read_state(b.projection)
        assert state.promoted and not state.following and state.promoted_time_ns == 7
        assert state.position.index == 1 and state.position.time_ns == 5
    finally:
        b.close()


def test_a_cluster_with_a_namespace_of_its_own_refuses_to_follow(tmp_path):
    b = RegionB(str(tmp_path))
    try:
        assert b.apply(MKDIR.SerializeToString()).errno == 0   # B made something itself
        refused = ship_one(b, 1, 1, 0, MKDIR.SerializeToString())
        assert refused.errno == errno.ENOTEMPTY and "start empty" in refused.message
        assert not read_state(b.projection).following
    finally:
        b.close()
