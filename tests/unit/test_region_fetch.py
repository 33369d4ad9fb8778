"""A second region's chunk fetching, decided without I/O: which chunks it lacks,
where a copy from region A goes, and how answers from region A are kept."""

from schemas import metadata_pb2 as mpb
from services.common.storage_class import parse
from services.metadata.chunks.planner import MISSING, Candidate, Holder, fetch, readable
from services.metadata.chunks.region_source import RETRY_S, RegionSource

V = 5
A = [("a0:1", 100), ("a1:1", 100)]


def holder(server, version=V, part=0, damaged=False, alive=True) -> Holder:
    return Holder(server, f"{server}:1", part, version, 100, damaged, alive)


def room(*servers) -> list[Candidate]:
    return [Candidate(s, f"{s}:1", 1 << 40) for s in servers]


def test_a_chunk_is_lacking_without_a_good_copy_or_enough_parts_at_its_version():
    copies, ec = parse("copies=2"), parse("ec=2+1")
    assert readable(V, copies, [holder("b0")])
    assert not readable(V, copies, [])
    assert not readable(V, copies, [holder("b0", version=V - 1)])   # A wrote again
    assert not readable(V, copies, [holder("b0", damaged=True), holder("b1", alive=False)])
    assert readable(V, ec, [holder("b0", part=1), holder("b1", part=3)])
    assert not readable(V, ec, [holder("b0", part=1), holder("b1", part=1)])


def test_one_copy_is_fetched_from_region_a_onto_a_free_server():
    result = fetch(7, V, [], room("b0", "b1"), A)
    assert result.state == MISSING
    [(target, job)] = result.jobs
    assert target in ("b0", "b1")
    assert (job.chunk, job.version) == (7, V)
    assert list(job.replicate.sources) == ["a0:1", "a1:1"] and job.replicate.length == 100


def test_a_stale_copy_is_replaced_by_region_a_s_version_not_moved_on():
    result = fetch(7, V, [holder("b1", version=V - 1)], room("b0", "b1"), A)
    [(target, job)] = result.jobs
    assert target == "b1" and job.WhichOneof("kind") == "replicate"


def test_nothing_is_sent_while_region_a_names_no_copy_or_no_server_has_room():
    assert fetch(7, V, [], room("b0"), []).jobs == []
    assert fetch(7, V, [], [], A).jobs == []


def test_answers_are_asked_once_used_once_and_asked_again_when_empty():
    now = [0.0]
    source = RegionSource(["a:1"], clock=lambda: now[0])
    assert source.sources(7, V) == ([], None) and list(source.wanted) == [(7, V)]
    copy = mpb.ChunkLocation(address="a0:1", version=V, length=100)
    source.wanted.clear()
    source.found[(7, V)] = (now[0], [copy], None)
    assert source.sources(7, V) == ([copy], None) and not source.wanted
    source.used(7, V)                         # a job went out: ask again next time
    assert source.sources(7, V) == ([], None) and list(source.wanted) == [(7, V)]
    source.wanted.clear()
    source.found[(7, V)] = (now[0], [], None)   # A held none (it is at another version)
    assert source.sources(7, V) == ([], None) and not source.wanted
    now[0] += RETRY_S
    assert source.sources(7, V) == ([], None) and list(source.wanted) == [(7, V)]
    source.forget()
    assert not source.wanted and not source.found


def part(address: str, p: int) -> mpb.ChunkLocation:
    return mpb.ChunkLocation(address=address, part=p, version=V, length=60)


def test_a_chunk_region_a_holds_only_as_parts_is_decoded_from_them():
    parts = [part("a0:1", 1), part("a1:1", 3)]
    result = fetch(7, V, [], room("b0", "b1"), [], parts, parse("ec=2+1"))
    [(target, job)] = result.jobs
    assert target in ("b0", "b1") and (job.decode.k, job.decode.m) == (2, 1)
    assert [(s.address, s.part) for s in job.decode.sources] == [("a0:1", 1), ("a1:1", 3)]
    # too few parts, or a shape nobody named, fetch nothing
    assert fetch(7, V, [], room("b0"), [], parts[:1], parse("ec=2+1")).jobs == []
    assert fetch(7, V, [], room("b0"), [], parts, None).jobs == []
    # whole copies, when A has them, are simply copied
    assert fetch(7, V, [], room("b0"), A, parts, parse("ec=2+1")).jobs[0][1].HasField(
        "replicate")


def test_region_a_s_answer_keeps_copies_or_else_parts_with_their_shape():
    source = RegionSource(["a:1"])
    copy, parts = mpb.ChunkLocation(address="a2:1", version=V), [part("a0:1", 1)]
    assert source._usable((7, V), [copy, *parts], "ec=2+1") == ([copy], None)
    assert source._usable((7, V), parts, "ec=2+1") == (parts, parse("ec=2+1"))
    assert source._usable((7, V), parts, "copies=2") == ([], None)   # shape unknown
    assert source._usable((7, V), [], "ec=2+1") == ([], None)
