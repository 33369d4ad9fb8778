"""A restored projection served read-only: reads as a metadata node answers them,
every change EROFS, chunk copies asked of the live cluster by chunk id."""

import asyncio
import errno

import pytest

from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.logship.restored_server import RestoredError, RestoredServicer, projection_dir
from tests.conftest import ROOT
from tests.unit.test_open_files_and_chunks import Client

R = 1


class LiveCluster:
    """Answers locate_chunk_id as a live leader would; records what it was asked."""

    def __init__(self):
        self.asked = []

    async def read(self, caller, **op):
        self.asked.append(op["locate_chunk_id"])
        return mpb.Reply(storage_class="copies=2", locations=[
            mpb.ChunkLocation(address="10.0.0.9:9422", version=op["locate_chunk_id"].version)])


def ask(servicer, **op) -> mpb.Reply:
    return asyncio.run(servicer._reply(mpb.Request(id=7, caller=ROOT, **op)))


@pytest.fixture
def served(fs):
    d = fs.mkdir(R, b"d")
    f = fs.create(d, b"f")
    c = Client(fs)
    c.do(open=pb.Open(inode=f, flags=2))
    chunk = c.do(begin_write=pb.BeginWrite(inode=f)).chunk
    c.do(commit_write=pb.CommitWrite(inode=f, chunk_id=chunk.id, version=chunk.version,
                                     end=5))
    live = LiveCluster()
    return RestoredServicer(fs.proj, live), live, d, f, chunk


def test_reads_are_answered_from_the_projection(served):
    servicer, _, d, f, _ = served
    reply = ask(servicer, lookup=mpb.Lookup(parent=d, name=b"f"))
    assert (reply.errno, reply.attr.inode, reply.attr.size) == (0, f, 5)
    assert [e.name for e in ask(servicer, readdir=mpb.Readdir(inode=d)).entries] == [b"f"]
    assert ask(servicer, lookup=mpb.Lookup(parent=d, name=b"nope")).errno == errno.ENOENT


def test_chunks_are_located_on_the_live_cluster_by_id(served):
    servicer, live, _, f, chunk = served
    reply = ask(servicer, locate_chunk=mpb.LocateChunk(inode=f, chunk_index=0))
    assert (reply.chunk.id, reply.chunk.version) == (chunk.id, chunk.version)
    assert [loc.address for loc in reply.locations] == ["10.0.0.9:9422"]
    assert reply.storage_class == "copies=2"
    assert [(a.chunk_id, a.version) for a in live.asked] == [(chunk.id, chunk.version)]


@pytest.mark.parametrize("op", [
    {"mkdir": pb.Mkdir(parent=R, name=b"x", mode=0o755)},
    {"unlink": pb.Unlink(parent=R, name=b"d")},
    {"open": pb.Open(inode=2, flags=1)},
    {"begin_write": pb.BeginWrite(inode=2)}])
def test_every_change_is_erofs(served, op):
    reply = ask(served[0], session=1, seq=1, mutation=pb.Command(**op))
    assert reply.errno == errno.EROFS and "read-only" in reply.message


def test_a_session_opens_and_files_open_for_reading(served):
    servicer, _, _, f, _ = served
    assert ask(servicer, mutation=pb.Command(open_session=pb.OpenSession())).result.session
    opened = ask(servicer, session=1, seq=2, mutation=pb.Command(open=pb.Open(inode=f)))
    assert (opened.errno, opened.result.attr.inode) == (0, f)
    assert ask(servicer, session=1, seq=3,
               mutation=pb.Command(release=pb.Release(inode=f))).errno == 0


def test_a_directory_without_a_projection_is_refused_and_left_alone(tmp_path):
    with pytest.raises(RestoredError, match="restore"):
        projection_dir(str(tmp_path))
    assert list(tmp_path.iterdir()) == []
