"""The metalogger's pure parts: what counts as a gap, which snapshots it fetches,
the recent entries a node keeps for it, its arguments, and snapshot fetch resume."""

import asyncio
import os

import grpc
import pytest

from mooseng.metalogger_command import parse_duration, parse_size
from schemas import logship_pb2 as pb
from schemas import raft_pb2 as raftpb
from services.common.addresses import AddressError
from services.logship.archive import Archive
from services.logship.continuity import GapError, check_batch, snapshot_wanted
from services.logship.follower import Follower, FollowOptions
from services.logship.snapshot_fetch import SnapshotFetchError, fetch_snapshot
from services.metadata import follow_service
from services.metadata.raft.messages import NOOP, Entry
from services.metadata.recent_entries import RecentEntries


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, NOOP, b"") for i in range(first, last + 1)]


# -- gaps -----------------------------------------------------------------------------------
def test_a_batch_continuing_the_archive_passes():
    check_batch(10, 2, 10, 2, entries(11, 20, term=3))
    check_batch(0, 0, 0, 0, entries(1, 3))


@pytest.mark.parametrize("last, last_term, prev, prev_term, batch, words", [
    (10, 2, 12, 2, entries(13, 14, 2), "after index 12, but the archive ends at 10"),
    (10, 2, 9, 2, entries(10, 11, 2), "after index 9, but the archive ends at 10"),
    (10, 2, 10, 3, entries(11, 12, 3), "histories differ"),
    (10, 2, 10, 2, entries(11, 12, 2) + entries(14, 15, 2), "entries 13..13 are missing"),
    (10, 2, 10, 2, entries(11, 12, 2) + entries(12, 12, 2), "index 12 again"),
    (10, 3, 10, 3, entries(11, 11, 2), "term never goes back"),
])
def test_what_does_not_continue_the_archive_is_a_gap(last, last_term, prev, prev_term,
                                                     batch, words):
    with pytest.raises(GapError, match=words):
        check_batch(last, last_term, prev, prev_term, batch)


def test_a_node_that_does_not_know_the_previous_term_is_not_taken_for_a_divergence():
    check_batch(10, 2, 10, 0, entries(11, 11, 2))


def test_announced_snapshots_are_fetched_only_once_the_archive_reaches_them():
    assert snapshot_wanted(announced=100, archived=50, last_index=120)
    assert not snapshot_wanted(announced=100, archived=100, last_index=120)   # have it
    assert not snapshot_wanted(announced=130, archived=50, last_index=120)    # ahead
    assert not snapshot_wanted(announced=0, archived=0, last_index=120)       # none


# -- recent entries -------------------------------------------------------------------------
def test_recent_entries_serve_what_follows_an_index_within_a_budget():
    recent = RecentEntries()
    recent.add([Entry(i, 1, 0, b"x" * 10) for i in range(1, 101)])
    got = recent.after(40, max_bytes=95)
    assert [e.index for e in got] == list(range(41, 50))
    assert recent.after(100, 1000) == []
    assert recent.term_at(50) == 1 and recent.term_at(101) is None


def test_recent_entries_forget_the_oldest_and_start_afresh_after_a_jump():
    recent = RecentEntries(max_entries=100, max_bytes=1 << 20)
    recent.add(entries(1, 101))
    assert recent.first_index > 1 and recent.last_index == 101
    assert recent.after(0, 1 << 20) is None            # older than what is kept
    recent.add(entries(500, 510))                     # a snapshot was installed
    assert (recent.first_index, recent.last_index) == (500, 510)
    assert recent.after(200, 1 << 20) is None


def test_one_large_entry_still_goes_alone():
    recent = RecentEntries()
    recent.add([Entry(1, 1, 0, b"x" * 5000), Entry(2, 1, 0, b"y")])
    assert [e.index for e in recent.after(0, max_bytes=100)] == [1]


# -- arguments ------------------------------------------------------------------------------
def test_durations_and_sizes_read_as_operators_write_them():
    assert parse_duration("90") == 90 and parse_duration("30m") == 1800
    assert parse_duration("7d") == 7 * 86400 and parse_duration("1.5h") == 5400
    assert parse_size("4096") == 4096 and parse_size("500M") == 500 << 20
    assert parse_size("20G") == 20 << 30 and parse_size("1GiB") == 1 << 30


@pytest.mark.parametrize("parse, text", [(parse_duration, "soon"), (parse_duration, "0"),
                                         (parse_duration, "5y"), (parse_size, "lots"),
                                         (parse_size, "-5G"), (parse_size, "10Q")])
def test_bad_durations_and_sizes_are_explained(parse, text):
    with pytest.raises(AddressError, match="for example"):
        parse(text)


# -- snapshot fetch -------------------------------------------------------------------------
FILES = {"000007.sst": os.urandom(5000), "CURRENT": b"MANIFEST-000001\n", "EMPTY": b""}


class FakeCall:
    """A FetchSnapshot stream served from a checkpoint directory, as the node does."""

    def __init__(self, path: str, request, break_after: int | None = None):
        self.items = asyncio.ensure_future(self._pieces(path, request))
        self.break_after = break_after
        self.sent = 0

    async def _pieces(self, path, request):
        opened = follow_service._open_all(path)
        files = follow_service._manifest(opened)
        out = [pb.SnapshotPiece(header=pb.SnapshotHeader(index=42, term=3, config=b"{}",
                                                         files=files))]
        have = dict(request.have) if request.have_index == 42 else {}
        for f in files:
            async for chunk in follow_service._chunks(42, f, opened[f.name],
                                                      have.get(f.name, 0)):
                out.append(pb.SnapshotPiece(chunk=chunk))
        for fd in opened.values():
            os.close(fd)
        return out

    async def read(self):
        items = await self.items
        if self.break_after is not None and self.sent == self.break_after:
            raise ConnectionError("the node went away")
        if self.sent == len(items):
            return grpc.aio.EOF
        self.sent += 1
        return items[self.sent - 1]


class FakeStub:
    def __init__(self, path: str, break_after: int | None = None):
        self.path, self.break_after, self.requests = path, break_after, []

    def FetchSnapshot(self, request, timeout=None):   # noqa: N802 (the gRPC name)
        self.requests.append(request)
        return FakeCall(self.path, request, self.break_after)


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "snap"
    path.mkdir()
    for name, data in FILES.items():
        (path / name).write_bytes(data)
    return str(path)


def test_an_interrupted_snapshot_fetch_resumes_with_what_it_holds(tmp_path, checkpoint,
                                                                  monkeypatch):
    monkeypatch.setattr(follow_service, "CHUNK", 1000)
    staging = str(tmp_path / "incoming")
    with pytest.raises(ConnectionError):
        asyncio.run(fetch_snapshot(FakeStub(checkpoint, break_after=4), staging))
    stub = FakeStub(checkpoint)
    fetched = asyncio.run(fetch_snapshot(stub, staging))
    assert stub.requests[0].have_index == 42 and stub.requests[0].have["000007.sst"] == 3000
    assert (fetched.index, fetched.term, fetched.config) == (42, 3, b"{}")
    for name, data in FILES.items():
        with open(os.path.join(fetched.path, name), "rb") as f:
            assert f.read() == data


def test_a_damaged_snapshot_file_is_refetched_not_kept(tmp_path, checkpoint):
    staging = str(tmp_path / "incoming")
    asyncio.run(fetch_snapshot(FakeStub(checkpoint), staging))
    sst = os.path.join(staging, f"snap-{42:020d}", "000007.sst")
    with open(sst, "r+b") as f:     # a partial file whose held bytes went bad
        f.write(b"garbage")
        f.truncate(4000)
    with pytest.raises(SnapshotFetchError, match="000007.sst failed the whole-file check"):
        asyncio.run(fetch_snapshot(FakeStub(checkpoint), staging))
    fetched = asyncio.run(fetch_snapshot(FakeStub(checkpoint), staging))
    with open(os.path.join(fetched.path, "000007.sst"), "rb") as f:
        assert f.read() == FILES["000007.sst"]


# -- the follower's store -------------------------------------------------------------------
def batch(prev: int, prev_term: int, first: int, last: int, term: int) -> pb.FollowBatch:
    return pb.FollowBatch(node_id=1, prev_index=prev, prev_term=prev_term, entries=[
        raftpb.Entry(index=i, term=term, kind=NOOP) for i in range(first, last + 1)])


def test_a_gap_keeps_what_came_before_it_and_stores_nothing_after(tmp_path):
    async def run():
        follower = Follower(Archive(str(tmp_path / "archive"), create=True),
                            FollowOptions(masters=["127.0.0.1:1"]))
        try:
            with pytest.raises(GapError, match="after index 11, but the archive ends at 10"):
                await follower._store([batch(0, 0, 1, 5, 1), batch(5, 1, 6, 10, 1),
                                       batch(11, 1, 12, 15, 1)], "127.0.0.1:1")
            return follower.archive.last_index, follower.stats.archived_index
        finally:
            await follower.close()
    assert asyncio.run(run()) == (10, 10)
