"""AdoptChunks: a restore gives an empty file the retained chunks of a deleted one."""

import errno

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import namespace_pb2 as pb
from services.common.posix.records import CHUNK_SIZE
from services.metadata.namespace import reads
from tests.conftest import ALICE, Fs
from tests.unit.test_open_files_and_chunks import Client

R = 1


def written_then_deleted(fs, chunks: int = 2) -> list[pb.Chunk]:
    """A file with `chunks` chunks, then rm: its chunks are orphans (as retained)."""
    f = fs.create(R, b"old")
    c = Client(fs)
    c.do(open=pb.Open(inode=f, flags=2))
    made = [c.do(begin_write=pb.BeginWrite(inode=f, chunk_index=i)).chunk
            for i in range(chunks)]
    c.do(commit_write=pb.CommitWrite(inode=f, chunk_index=chunks - 1, chunk_id=made[-1].id,
                                     version=made[-1].version,
                                     end=(chunks - 1) * CHUNK_SIZE + 7))
    c.do(release=pb.Release(inode=f))
    fs.ok(unlink=pb.Unlink(parent=R, name=b"old"))
    return made


def adopt(fs, ino, chunks, size, caller=None):
    kwargs = {"caller": caller} if caller is not None else {}
    return fs.do(**kwargs, adopt_chunks=pb.AdoptChunks(inode=ino, chunks=chunks, size=size))


def test_an_empty_file_adopts_orphan_chunks_and_their_size(fs):
    chunks = written_then_deleted(fs)
    f = fs.create(R, b"back")
    size = CHUNK_SIZE + 7
    result = adopt(fs, f, chunks, size)
    assert result.errno == 0, result.message
    assert result.attr.size == size
    assert [reads.chunk(fs.proj, f, i) for i in (0, 1)] == list(chunks)
    assert [reads.chunk_owner(fs.proj, c.id) for c in chunks] == [(f, 0), (f, 1)]
    assert reads.statfs(fs.proj).used_bytes == size


def test_a_chunk_a_live_file_owns_is_refused_and_nothing_changes(fs):
    chunks = written_then_deleted(fs)
    f, g = fs.create(R, b"f"), fs.create(R, b"g")
    assert adopt(fs, f, chunks, CHUNK_SIZE + 7).errno == 0
    before = fs.proj.content_digest()
    result = adopt(fs, g, chunks[:1], 5)
    assert result.errno == errno.EBUSY and f"inode {f}" in result.message
    assert fs.proj.content_digest() == before


def test_refusals_say_why(fs):
    chunks = written_then_deleted(fs)
    f = fs.create(R, b"f")
    never = pb.Chunk(index=0, id=10_000, version=1)
    assert adopt(fs, f, [never], 5).errno == errno.ENOENT          # never allocated
    assert adopt(fs, f, chunks, CHUNK_SIZE).errno == errno.EINVAL  # chunk 1 past the size
    assert adopt(fs, f, [chunks[0], chunks[0]], 9).errno == errno.EINVAL
    assert adopt(fs, f, chunks[:1], 5, caller=ALICE).errno == errno.EPERM
    assert adopt(fs, R, chunks[:1], 5).errno == errno.EISDIR
    fs.ok(setattr=pb.Setattr(inode=f, size=1))
    assert adopt(fs, f, chunks[:1], 5).errno == errno.EEXIST       # not empty


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.integers(0, 3), max_size=4), extra=st.integers(1, 100))
def test_adoption_is_deterministic_and_never_shares_a_chunk(tmp_path_factory, picks, extra):
    """Random adoptions of the same orphans by several files, replayed twice: both
    replays agree byte for byte, and a chunk is never owned by two files."""
    digests = []
    for _ in range(2):
        fs = Fs(tmp_path_factory.mktemp("p"))
        try:
            chunks = written_then_deleted(fs, chunks=4)
            files = [fs.create(R, f"f{i}".encode()) for i in range(len(picks))]
            for ino, first in zip(files, picks, strict=True):
                part = [pb.Chunk(index=c.index - first, id=c.id, version=c.version)
                        for c in chunks[first:]]
                adopt(fs, ino, part, (len(part) - 1) * CHUNK_SIZE + extra)
            owners = [reads.chunk_owner(fs.proj, c.id) for c in chunks]
            adopted = [o for o in owners if o is not None]
            assert len(adopted) == len(set(adopted))
            for owner, c in zip(owners, chunks, strict=True):
                if owner is not None:
                    assert reads.chunk(fs.proj, *owner).id == c.id
            digests.append(fs.proj.content_digest())
        finally:
            fs.proj.close()
    assert digests[0] == digests[1]
