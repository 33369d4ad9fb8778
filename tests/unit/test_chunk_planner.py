"""The chunk planner: what the manager does about one chunk, decided without I/O."""

from hypothesis import given
from hypothesis import strategies as st

from services.common.storage_class import parse
from services.metadata.chunks.planner import (
    HEALTHY,
    MISSING,
    OVER,
    UNDER,
    Candidate,
    Holder,
    plan,
)

V = 5
SERVERS = [f"s{i}" for i in range(6)]


def holder(server, version=V, part=0, damaged=False, alive=True, length=100) -> Holder:
    return Holder(server, f"{server}:1", part, version, length, damaged, alive)


def room(*servers, free=1 << 40) -> list[Candidate]:
    return [Candidate(s, f"{s}:1", free) for s in servers or SERVERS]


def kinds(result) -> list[tuple[str, str]]:
    return sorted((server, job.WhichOneof("kind")) for server, job in result.jobs)


def test_an_under_goal_chunk_is_copied_from_a_good_copy_to_a_new_server():
    result = plan(1, V, parse("copies=2"), [holder("s0")], room())
    assert result.state == UNDER
    [(target, job)] = result.jobs
    assert target != "s0" and job.replicate.sources == ["s0:1"]
    assert job.version == V and job.replicate.length == 100


def test_surplus_copies_go_from_the_fullest_server():
    holders = [holder("s0"), holder("s1"), holder("s2")]
    free = room("s0", "s2") + [Candidate("s1", "s1:1", 1 << 20)]
    result = plan(1, V, parse("copies=2"), holders, free)
    assert result.state == OVER
    assert kinds(result) == [("s1", "delete")]


def test_stale_and_damaged_copies_are_removed_only_once_the_goal_is_met():
    holders = [holder("s0"), holder("s1", version=V - 1), holder("s2", damaged=True)]
    under = plan(1, V, parse("copies=2"), holders, room("s3"))
    assert kinds(under) == [("s3", "replicate")]          # nothing deleted yet
    healthy = plan(1, V, parse("copies=2"), holders + [holder("s3")], room())
    assert healthy.state == HEALTHY
    assert kinds(healthy) == [("s1", "delete"), ("s2", "delete")]


def test_a_chunk_whose_write_never_reached_its_copies_gets_their_version_moved():
    holders = [holder("s0", version=V - 1), holder("s1", version=V - 1),
               holder("s2", version=V - 2)]
    result = plan(1, V, parse("copies=2"), holders, room())
    assert result.state == MISSING
    assert kinds(result) == [("s0", "set_version"), ("s1", "set_version")]
    assert all(job.set_version.old_version == V - 1 for _, job in result.jobs)


def test_copies_older_than_the_last_commit_are_never_moved_to_the_current_version():
    """The copies at the last committed version are gone; an older copy misses
    committed data, so it is not passed off as current: the chunk is missing."""
    stale = [holder("s0", V - 2), holder("s1", V - 2)]
    for committed in (V, V - 1):
        result = plan(1, V, parse("copies=2"), stale, room(), committed=committed)
        assert (result.state, result.jobs) == (MISSING, [])
    repaired = plan(1, V, parse("copies=2"), stale, room(), committed=V - 2)
    assert repaired.state == MISSING
    assert kinds(repaired) == [("s0", "set_version"), ("s1", "set_version")]


def test_copies_on_a_server_that_may_come_back_are_waited_for():
    result = plan(1, V, parse("copies=2"), [holder("s0"), holder("s1", alive=False)], room())
    assert (result.state, result.jobs) == (UNDER, [])


def test_an_ec_chunk_written_as_copies_is_encoded_by_a_holder():
    result = plan(1, V, parse("ec=2+1"), [holder("s0"), holder("s1")], room(), "isa_l_rs_vand")
    [(server, job)] = result.jobs
    assert server in ("s0", "s1")
    assert (job.encode.k, job.encode.m, job.encode.backend) == (2, 1, "isa_l_rs_vand")
    assert len(set(job.encode.targets)) == 3


def test_too_few_servers_for_the_parts_keeps_the_copies():
    result = plan(1, V, parse("ec=4+2"), [holder("s0")], room("s0", "s1", "s2"))
    assert (result.state, result.jobs) == (UNDER, [])


def test_a_complete_ec_chunk_drops_its_copies():
    holders = [holder("s0"), holder("s1", part=1), holder("s2", part=2), holder("s3", part=3)]
    result = plan(1, V, parse("ec=2+1"), holders, room())
    assert result.state == HEALTHY
    assert kinds(result) == [("s0", "delete")]


def test_a_lost_part_is_rebuilt_on_a_server_without_one():
    holders = [holder("s1", part=1), holder("s2", part=3)]
    result = plan(1, V, parse("ec=2+1"), holders, room())
    [(server, job)] = result.jobs
    assert server not in ("s1", "s2") and job.rebuild.part == 2
    assert sorted(s.part for s in job.rebuild.sources) == [1, 3]


def readable(sclass, holders) -> bool:
    good = [h for h in holders if h.alive and not h.damaged and h.version == V]
    parts = {h.part for h in good if h.part}
    return any(h.part == 0 for h in good) or (sclass.is_ec and len(parts) >= sclass.k)


holders_strategy = st.lists(
    st.builds(holder, st.sampled_from(SERVERS), st.integers(V - 2, V),
              st.integers(0, 4), st.booleans(), st.booleans()),
    max_size=8, unique_by=lambda h: (h.server, h.part))


@given(st.sampled_from(["copies=1", "copies=2", "copies=3", "ec=2+1", "ec=3+2"]),
       holders_strategy, st.lists(st.sampled_from(SERVERS), unique=True))
def test_deletions_never_make_a_readable_chunk_unreadable(text, holders, free):
    sclass = parse(text)
    result = plan(1, V, sclass, holders, room(*free) if free else [])
    deleted = {(server, job.delete.part) for server, job in result.jobs
               if job.WhichOneof("kind") == "delete"}
    left = [h for h in holders if (h.server, h.part) not in deleted]
    assert readable(sclass, left) or not readable(sclass, holders)
    for server, _job in result.jobs:   # jobs go to connected servers only
        assert server in free or any(h.server == server and h.alive for h in holders)


# -- a file that was ec=2+1 and is copies=N now: its parts are decoded back -------------

EC21 = parse("ec=2+1")


def test_parts_of_a_file_now_kept_as_copies_are_decoded_into_one():
    holders = [holder("s0", part=1), holder("s1", part=2), holder("s2", part=3)]
    result = plan(1, V, parse("copies=2"), holders, room("s0", "s1", "s2"),
                  parts_class=EC21)
    assert result.state == UNDER
    [(server, job)] = result.jobs
    # a server holding a part may take the copy: their store ids differ
    assert server in ("s0", "s1", "s2") and (job.decode.k, job.decode.m) == (2, 1)
    assert sorted(s.part for s in job.decode.sources) == [1, 2, 3]


def test_the_decoded_copy_is_replicated_beside_parts_and_the_parts_go_at_the_goal():
    parts = [holder("s0", part=1), holder("s1", part=2), holder("s2", part=3)]
    result = plan(1, V, parse("copies=2"), [holder("s0"), *parts], room("s0", "s1", "s2"),
                  parts_class=EC21)
    [(server, job)] = result.jobs
    assert server in ("s1", "s2") and job.replicate.sources == ["s0:1"]
    done = plan(1, V, parse("copies=2"), [holder("s0"), holder("s1"), *parts], room(),
                parts_class=EC21)
    assert done.state == HEALTHY
    assert kinds(done) == [("s0", "delete"), ("s1", "delete"), ("s2", "delete")]


def test_too_few_parts_to_decode_make_no_job():
    result = plan(1, V, parse("copies=2"), [holder("s0", part=1)], room(), parts_class=EC21)
    assert result.state == MISSING and result.jobs == []


def readable_as(sclass, shape, holders) -> bool:
    return readable(sclass, holders) or readable(shape, holders)


@given(st.sampled_from(["copies=1", "copies=2", "copies=3"]), holders_strategy,
       st.lists(st.sampled_from(SERVERS), unique=True))
def test_decoding_never_deletes_what_a_chunk_is_readable_from(text, holders, free):
    sclass = parse(text)
    result = plan(1, V, sclass, holders, room(*free) if free else [], parts_class=EC21)
    deleted = {(server, job.delete.part) for server, job in result.jobs
               if job.WhichOneof("kind") == "delete"}
    left = [h for h in holders if (h.server, h.part) not in deleted]
    assert readable_as(sclass, EC21, left) or not readable_as(sclass, EC21, holders)


def test_parts_a_dead_writer_left_behind_are_moved_to_the_current_version():
    # Writing into a chunk held only as parts begins a new version, then writes whole
    # copies; a writer that dies in between leaves every part one version behind.
    parts = [holder("s0", V - 1, part=1), holder("s1", V - 1, part=2),
             holder("s2", V - 1, part=3)]
    for sclass, shape in ((parse("ec=2+1"), None), (parse("copies=2"), EC21)):
        result = plan(1, V, sclass, parts, room(), committed=V - 1, parts_class=shape)
        assert result.state == MISSING
        assert kinds(result) == [("s0", "set_version"), ("s1", "set_version"),
                                 ("s2", "set_version")]
        assert all(job.set_version.old_version == V - 1 for _, job in result.jobs)
    # not when they miss a commit, or are too few to read
    assert plan(1, V, parse("ec=2+1"), parts, room(), committed=V - 2).jobs == []
    assert plan(1, V, parse("ec=2+1"), parts[:1], room(), committed=V - 1).jobs == []
    assert plan(1, V, parse("copies=2"), parts, room(), committed=V - 1).jobs == []


def test_a_chunk_no_commit_reached_and_no_server_holds_is_a_hole_not_missing():
    """A write began on the chunk and was given up before any copy was made: there is
    nothing to lose, so nothing is missing (and no job is sent). With a commit on
    record, or any copy anywhere, it is still missing until repaired."""
    assert (plan(1, V, parse("copies=2"), [], room()).state,
            plan(1, V, parse("ec=2+1"), [], room()).jobs) == (HEALTHY, [])
    assert plan(1, V, parse("copies=2"), [], room(), committed=V).state == MISSING
    lost = [holder("s0", V - 1, alive=False)]
    assert plan(1, V, parse("copies=2"), lost, room()).state == MISSING
