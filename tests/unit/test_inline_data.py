"""Small files kept inline: written in the log, read with the open, moved into chunk 0
when they grow (services/common/posix/inline_data.py)."""

import errno

import pytest

from schemas import namespace_pb2 as pb
from services.common.posix import inline_data
from services.common.posix import records as r
from services.common.posix.errors import FsError
from services.metadata.namespace import reads
from tests.conftest import ALICE
from tests.unit.test_open_files_and_chunks import O_RDWR, O_TRUNC, O_WRONLY, Client

R = 1


def piece(offset: int, data: bytes) -> pb.InlinePiece:
    return pb.InlinePiece(offset=offset, data=data)


def opened(fs, name=b"f", caller=None) -> tuple[Client, int]:
    client = Client(fs, caller) if caller else Client(fs)
    attr = client.do(create=pb.Create(parent=R, name=name, mode=0o644, open=True,
                                      open_flags=O_RDWR)).attr
    return client, attr.inode


def test_writes_are_kept_inline_and_grow_the_file(fs):
    c, f = opened(fs)
    got = c.do(write_inline=pb.WriteInline(inode=f, pieces=[piece(0, b"hello"),
                                                             piece(10, b"world")]))
    assert got.errno == 0 and got.attr.size == 15
    assert reads.inline(fs.proj, f) == b"hello\0\0\0\0\0world"
    c.do(write_inline=pb.WriteInline(inode=f, pieces=[piece(2, b"LL")]))
    assert reads.inline(fs.proj, f) == b"heLLo\0\0\0\0\0world"
    assert reads.statfs(fs.proj).used_bytes == 15


def test_a_write_past_the_limit_or_to_a_file_with_chunks_is_refused(fs):
    c, f = opened(fs)
    big = c.do(write_inline=pb.WriteInline(inode=f, pieces=[
        piece(0, b"a"), piece(r.INLINE_MAX, b"b")]))
    assert big.errno == errno.EFBIG
    assert reads.inline(fs.proj, f) is None and reads.getattr(fs.proj, f).size == 0
    assert c.do(begin_write=pb.BeginWrite(inode=f, chunk_index=0)).errno == 0
    assert c.do(write_inline=pb.WriteInline(inode=f, pieces=[piece(0, b"x")])).errno \
        == errno.EFBIG


def test_writing_inline_needs_the_file_open_in_the_session(fs):
    f = fs.create(R, b"f")
    c = Client(fs)
    assert c.do(write_inline=pb.WriteInline(inode=f, pieces=[piece(0, b"x")])).errno \
        == errno.EBADF


def test_a_writer_who_is_not_root_drops_setuid(fs):
    fs.ok(setattr=pb.Setattr(inode=R, mode=0o777))
    c, f = opened(fs, caller=ALICE)
    c.do(setattr=pb.Setattr(inode=f, mode=0o4755))
    attr = c.do(write_inline=pb.WriteInline(inode=f, pieces=[piece(0, b"x")])).attr
    assert attr.mode & 0o7777 == 0o755


def test_truncation_cuts_the_inline_bytes_and_an_extension_reads_zeros(fs):
    c, f = opened(fs)
    c.do(write_inline=pb.WriteInline(inode=f, pieces=[piece(0, b"abcdef")]))
    fs.ok(setattr=pb.Setattr(inode=f, size=3))
    assert reads.inline(fs.proj, f) == b"abc"
    fs.ok(setattr=pb.Setattr(inode=f, size=100))
    assert reads.inline(fs.proj, f) == b"abc" and reads.getattr(fs.proj, f).size == 100
    assert c.do(open=pb.Open(inode=f, flags=O_WRONLY | O_TRUNC)).errno == 0
    assert reads.inline(fs.proj, f) is None and reads.getattr(fs.proj, f).size == 0


def test_a_delegated_create_carries_the_whole_file(fs):
    c = Client(fs)
    first = c.do(reserve_inodes=pb.ReserveInodes(count=4)).first_inode
    made = c.do(create=pb.Create(parent=R, name=b"f", mode=0o644, inode=first,
                                 time_ns=fs.time_ns, data=b"contents"))
    assert made.errno == 0 and made.attr.size == 8
    assert reads.inline(fs.proj, first) == b"contents"
    plain = c.do(create=pb.Create(parent=R, name=b"g", mode=0o644, data=b"x"))
    assert plain.errno == errno.EINVAL        # only a create answered by the client
    with pytest.raises(FsError):
        reads.lookup(fs.proj, pb.Caller(), R, b"g")


def test_moving_inline_bytes_into_chunk_0_needs_their_digest(fs):
    c, f = opened(fs)
    c.do(write_inline=pb.WriteInline(inode=f, pieces=[piece(0, b"small")]))
    chunk = c.do(begin_write=pb.BeginWrite(inode=f, chunk_index=0)).chunk
    commit = pb.CommitWrite(inode=f, chunk_index=0, chunk_id=chunk.id,
                            version=chunk.version, end=200_000)
    assert c.do(commit_write=commit).errno == errno.ESTALE     # did not copy them
    commit.inline_digest = inline_data.digest(b"other")
    assert c.do(commit_write=commit).errno == errno.ESTALE     # copied something else
    assert reads.inline(fs.proj, f) == b"small"                # still the contents
    commit.inline_digest = inline_data.digest(b"small")
    attr = c.do(commit_write=commit)
    assert attr.errno == 0 and attr.attr.size == 200_000
    assert reads.inline(fs.proj, f) is None
    assert reads.chunk(fs.proj, f, 0).id == chunk.id


def test_a_chunk_past_0_is_not_committed_while_the_bytes_are_inline(fs):
    c, f = opened(fs)
    c.do(write_inline=pb.WriteInline(inode=f, pieces=[piece(0, b"small")]))
    chunk = c.do(begin_write=pb.BeginWrite(inode=f, chunk_index=1)).chunk
    commit = pb.CommitWrite(inode=f, chunk_index=1, chunk_id=chunk.id,
                            version=chunk.version, end=r.CHUNK_SIZE + 10,
                            inline_digest=inline_data.digest(b"small"))
    assert c.do(commit_write=commit).errno == errno.ESTALE


def test_removing_a_small_file_frees_its_bytes(fs):
    c, f = opened(fs)
    c.do(write_inline=pb.WriteInline(inode=f, pieces=[piece(0, b"x" * 1000)]))
    c.do(release=pb.Release(inode=f))
    fs.ok(unlink=pb.Unlink(parent=R, name=b"f"))
    assert list(fs.proj.scan(r.INLINE, b"")) == []
    assert reads.statfs(fs.proj).used_bytes == 0


def test_a_client_time_counts_only_just_before_the_stamp(fs):
    c, f = opened(fs)
    told = fs.time_ns + 1000 - 5_000_000       # 5 ms before the next stamp
    attr = c.do(write_inline=pb.WriteInline(inode=f, pieces=[piece(0, b"x")],
                                            time_ns=told)).attr
    assert attr.mtime_ns == told
    future = fs.time_ns + 10**9
    attr = c.do(write_inline=pb.WriteInline(inode=f, pieces=[piece(0, b"y")],
                                            time_ns=future)).attr
    assert attr.mtime_ns == fs.time_ns          # the leader's stamp
