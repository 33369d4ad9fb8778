"""The nemesis suite's judges (tests/nemesis): they must fail a bad run, not only
pass a good one."""

from tests.nemesis.checks import namespace
from tests.nemesis.faults import Window, unavailable


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
