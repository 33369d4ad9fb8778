"""Readdir pages by cookie: stable under concurrent change, bounded in memory."""

import tracemalloc

import pytest

from schemas import namespace_pb2 as pb
from services.common.posix import records
from services.metadata.namespace import reads
from tests.conftest import ROOT

R = 1


def page_all(fs, ino, limit, between=None) -> list[bytes]:
    names, cookie = [], 0
    while page := reads.readdir(fs.proj, ROOT, ino, cookie, limit):
        assert len(page) >= 1
        names.extend(e.name for e in page)
        cookie = page[-1].cookie
        if between:
            between()
    return names


def test_every_entry_once_with_inserts_and_deletes_between_pages(fs):
    d = fs.mkdir(R, b"d")
    for i in range(300):
        fs.create(d, b"keep%03d" % i)
    for i in range(100):
        fs.create(d, b"gone%03d" % i)
    churn = iter(range(1000))

    def meanwhile():
        i = next(churn)
        fs.create(d, b"new%03d" % i)
        if i < 100:
            fs.ok(unlink=pb.Unlink(parent=d, name=b"gone%03d" % i))

    names = page_all(fs, d, 7, meanwhile)
    assert len(names) == len(set(names)), "an entry was returned twice"
    keep = {b"keep%03d" % i for i in range(300)}
    assert keep <= set(names), "an entry present throughout was skipped"


def test_pages_never_split_entries_with_equal_hashes(fs, monkeypatch):
    monkeypatch.setattr(records, "name_hash", lambda name: len(name) % 3)
    d = fs.mkdir(R, b"d")
    made = {b"x" * n for n in range(1, 40)}
    for name in made:
        fs.create(d, name)
    names = page_all(fs, d, 2)
    assert sorted(names) == sorted(made)


def test_readdir_returns_attributes(fs):
    d = fs.mkdir(R, b"d")
    f = fs.create(d, b"f", 0o600)
    [entry] = reads.readdir(fs.proj, ROOT, d)
    assert entry.name == b"f" and entry.attr.inode == f and entry.attr.mode == 0o100600


@pytest.mark.slow
def test_a_million_entries_page_in_bounded_memory(fs):
    d = fs.mkdir(R, b"big")
    total, group = 1_000_000, 2000
    for first in range(0, total, group):
        batch = []
        for i in range(first, first + group):
            fs.index += 1
            cmd = pb.Command(time_ns=i, caller=ROOT,
                             create=pb.Create(parent=d, name=b"file-%07d" % i, mode=0o644))
            batch.append((fs.index, cmd.SerializeToString()))
        fs.applier.apply_many(batch)
    assert reads.getattr(fs.proj, d).size == total
    tracemalloc.start()
    count, cookie, seen_last = 0, 0, None
    while page := reads.readdir(fs.proj, ROOT, d, cookie, 1000):
        count += len(page)
        assert page[-1].cookie != seen_last
        cookie = seen_last = page[-1].cookie
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == total
    assert peak < 16 << 20, f"paging a directory held {peak >> 20} MiB at once"
