"""The fold's write overlay: deletions of keys the view does not hold leave nothing
to write, while the list of operations (which the replicas' digest covers) is the
same as a plain deletion's."""

from services.metadata.namespace.txn import DELETE, DELETE_RANGE, Txn

BASE = {("x", b"\x00\x00\x00\x07a"): b"1", ("x", b"\x00\x00\x00\x07b"): b"2",
        ("y", b"k"): b"v"}


def txn() -> Txn:
    def scan(cf, prefix):
        return sorted((k, v) for (c, k), v in BASE.items() if c == cf and k.startswith(prefix))
    return Txn(lambda cf, key: BASE.get((cf, key)), scan)


def test_discarding_an_absent_key_writes_nothing_but_is_recorded():
    t = txn()
    t.discard("y", b"absent")
    t.discard("y", b"k")
    assert t.ops == [(DELETE, "y", b"absent"), (DELETE, "y", b"k")]
    assert t.net_writes() == ([], {"y": {b"k": None}})


def test_deleting_an_empty_prefix_writes_no_range_tombstone():
    t = txn()
    t.delete_prefix("x", b"\x00\x00\x00\x08")            # nothing under it
    assert t.net_writes()[0] == [] and not t.net_writes()[1].get("x")
    assert t.ops == [(DELETE_RANGE, "x", b"\x00\x00\x00\x08", b"\x00\x00\x00\x09")]
    t.delete_prefix("x", b"\x00\x00\x00\x07")            # two keys under it
    assert t.net_writes()[0] == [("x", b"\x00\x00\x00\x07", b"\x00\x00\x00\x08")]
    assert t.get("x", b"\x00\x00\x00\x07a") is None


def test_a_prefix_emptied_in_the_same_transaction_is_seen_as_empty():
    t = txn()
    t.delete("x", b"\x00\x00\x00\x07a")
    t.delete("x", b"\x00\x00\x00\x07b")
    point = t.savepoint()
    t.delete_prefix("x", b"\x00\x00\x00\x07")
    assert t.net_writes()[0] == []
    t.rollback(point)
    assert t.ops[-1] == (DELETE, "x", b"\x00\x00\x00\x07b")
