"""The nemesis suite's judges (tests/nemesis): they must fail a bad run, not only
pass a good one."""

import random

from tests.nemesis.checks import namespace
from tests.nemesis.data_workload import BIG_MAX, differs, pieces_of, size_of
from tests.nemesis.faults import Window, unavailable
from tests.nemesis.run import passed


def view(applied, digest, names):
    return {"applied": applied, "digest": digest, "names": set(names)}


def test_a_lost_acknowledged_name_a_phantom_and_a_divergence_are_counted():
    views = {1: view(10, "a", [b"x", b"y"]), 2: view(10, "b", [b"x", b"z"]),
             3: view(9, "c", [b"x", b"y"])}
    found = namespace(views, acked={b"x", b"y"}, unknown=set())
    assert found["acknowledged_lost"] == 1          # node 2 lacks y
    assert found["phantom_entries"] == 1            # node 2 has z, never asked for
    assert found["diverged_nodes"] == 1             # nodes 1 and 2 differ at index 10


def test_an_unknown_outcome_may_be_present_or_absent():
    views = {1: view(5, "d", [b"x", b"u"]), 2: view(5, "d", [b"x", b"u"])}
    assert namespace(views, {b"x"}, {b"u", b"v"}) == {
        "acknowledged_lost": 0, "phantom_entries": 0, "diverged_nodes": 0,
        "applied": {1: 5, 2: 5}}


def test_unavailability_is_the_longest_gap_between_acknowledged_writes_in_a_fault():
    windows = [Window("kill_leader", 1, start=10.0, end=14.0),
               Window("loss", 2, start=20.0, end=22.0)]
    acks = [9.0, 10.1, 12.9, 13.0, 14.5, 20.2, 20.4, 21.0, 22.5, 30.0]
    assert unavailable(windows, acks) == {"kill_leader": 2.8, "loss": 1.5}


def test_no_write_after_a_fault_is_an_endless_unavailability():
    windows = [Window("isolate_leader", 1, start=10.0, end=12.0)]
    assert unavailable(windows, [9.0, 10.5, 11.0]) == {"isolate_leader": float("inf")}


def test_a_file_that_reads_back_otherwise_is_a_difference():
    assert differs(b"abc", b"abc") == ""
    assert "first difference at 1" in differs(b"aXc", b"abc")
    assert "2 bytes read, 3 expected" in differs(b"ab", b"abc")   # cut short
    assert differs(b"", b"abc")


def test_the_pieces_written_cover_the_file_once():
    rng = random.Random(3)
    for _ in range(500):
        size = size_of(rng)
        assert 1 <= size <= BIG_MAX
        pieces = sorted(pieces_of(rng, size))
        assert pieces[0][0] == 0 and sum(n for _, n in pieces) == size
        assert all(a + n == b for (a, n), (b, _) in zip(pieces, pieces[1:], strict=False))


def test_a_run_with_a_wrong_file_or_a_bad_archive_fails():
    shipped = {"reached_commit": True, "gaps": 0, "mismatches": 0, "gap_reported": False}
    good = {"acknowledged_lost": 0, "phantom_entries": 0, "diverged_nodes": 0,
            "crashed_nodes": {}, "linearizability_violations": 0,
            "linearizability_inconclusive": False, "data_mismatches": 0,
            "data_chunks_missing": 0, "data_phantom_files": 0, "archive": shipped}
    assert passed(good)
    for key in ("data_mismatches", "data_chunks_missing", "data_phantom_files"):
        assert not passed(good | {key: 1})
    for bad in ({"reached_commit": False}, {"gaps": 1}, {"mismatches": 1},
                {"gap_reported": True}):
        assert not passed(good | {"archive": shipped | bad})


def test_an_archive_that_differs_from_a_node_log_is_counted(tmp_path):
    from services.logship.archive import Archive
    from services.metadata.raft.log_store import LogStore
    from services.metadata.raft.messages import Entry
    from tests.nemesis.checks import archive

    entries = [Entry(i, 1, data=b"c%d" % i) for i in range(1, 6)]
    store = Archive(str(tmp_path / "archive"), create=True)
    store.append(entries)
    store.sync()
    store.close()
    for name, changed in (("same", {}), ("other", {3: b"not what was archived"})):
        log = LogStore(str(tmp_path / name / "raft-log"))
        log.append([Entry(e.index, e.term, data=changed.get(e.index, e.data))
                    for e in entries])
        log.sync()
        log.close()
    found = archive(str(tmp_path / "archive"),
                    {1: str(tmp_path / "same"), 2: str(tmp_path / "other")})
    assert found == {"archived_to": 5, "gaps": 0, "mismatches": 1, "compared": 10}
