"""Open files survive unlink until released; chunks get ids and versions via the log."""

import errno

from schemas import namespace_pb2 as pb
from services.common.posix import records as r
from services.common.posix.records import CHUNK_SIZE
from services.metadata.namespace import reads
from tests.conftest import ALICE, ROOT

R = 1
O_RDONLY, O_WRONLY, O_RDWR, O_TRUNC = 0, 1, 2, 0o1000


def session(fs) -> int:
    return fs.do(open_session=pb.OpenSession(client="t")).session


class Client:
    """Commands of one session, numbered."""

    def __init__(self, fs, caller=ROOT):
        self.fs, self.caller, self.id, self.seq = fs, caller, session(fs), 0

    def do(self, **op) -> pb.Result:
        self.seq += 1
        return self.fs.do(self.caller, session=self.id, seq=self.seq, **op)


def test_an_unlinked_open_file_lives_until_its_last_release(fs):
    f = fs.create(R, b"f")
    a, b = Client(fs), Client(fs)
    assert a.do(open=pb.Open(inode=f, flags=O_RDONLY)).errno == 0
    assert b.do(open=pb.Open(inode=f, flags=O_RDWR)).errno == 0
    fs.ok(unlink=pb.Unlink(parent=R, name=b"f"))
    assert reads.getattr(fs.proj, f).nlink == 0      # still readable by inode
    assert a.do(release=pb.Release(inode=f)).errno == 0
    assert reads.getattr(fs.proj, f).nlink == 0
    assert b.do(release=pb.Release(inode=f)).errno == 0
    assert reads.statfs(fs.proj).inodes == 1         # now it is gone
    assert list(fs.proj.scan("orphans", b"")) == []


def test_closing_a_session_releases_its_files(fs):
    f = fs.create(R, b"f")
    a = Client(fs)
    a.do(open=pb.Open(inode=f))
    a.do(open=pb.Open(inode=f))
    fs.ok(unlink=pb.Unlink(parent=R, name=b"f"))
    fs.ok(close_session=pb.CloseSession(session=a.id))
    assert reads.statfs(fs.proj).inodes == 1
    assert list(fs.proj.scan("opens", b"")) == []


def test_open_checks_access_and_truncates(fs):
    f = fs.create(R, b"f", 0o644)
    fs.ok(setattr=pb.Setattr(inode=f, size=100))
    alice = Client(fs, ALICE)
    assert alice.do(open=pb.Open(inode=f, flags=O_WRONLY)).errno == errno.EACCES
    assert alice.do(open=pb.Open(inode=f, flags=O_RDONLY)).errno == 0
    root = Client(fs)
    assert root.do(open=pb.Open(inode=f, flags=O_WRONLY | O_TRUNC)).attr.size == 0
    assert root.do(open=pb.Open(inode=R, flags=O_RDWR)).errno == errno.EISDIR
    assert root.do(release=pb.Release(inode=R)).errno == errno.EBADF


def test_writes_get_new_chunk_versions_and_commit_the_length(fs):
    f = fs.create(R, b"f")
    c = Client(fs)
    c.do(open=pb.Open(inode=f, flags=O_RDWR))
    first = c.do(begin_write=pb.BeginWrite(inode=f, chunk_index=1)).chunk
    again = c.do(begin_write=pb.BeginWrite(inode=f, chunk_index=1)).chunk
    assert (again.id, again.version) == (first.id, first.version + 1)
    stale = c.do(commit_write=pb.CommitWrite(inode=f, chunk_index=1, chunk_id=first.id,
                                             version=first.version, end=CHUNK_SIZE + 10))
    assert stale.errno == errno.ESTALE
    done = c.do(commit_write=pb.CommitWrite(inode=f, chunk_index=1, chunk_id=again.id,
                                            version=again.version, end=CHUNK_SIZE + 10))
    assert done.attr.size == CHUNK_SIZE + 10
    assert reads.chunk(fs.proj, f, 0) is None                 # a hole
    assert reads.chunk(fs.proj, f, 1).version == again.version
    fs.ok(setattr=pb.Setattr(inode=f, size=5))
    assert reads.chunk(fs.proj, f, 1) is None                 # truncated away


def test_the_version_of_a_chunks_last_commit_is_kept_until_the_chunk_goes(fs):
    """What the chunk manager checks before moving old copies to a new version."""
    f = fs.create(R, b"f")
    c = Client(fs)
    c.do(open=pb.Open(inode=f, flags=O_RDWR))

    def committed(chunk_id):
        found = fs.proj.get(r.COMMITTED, r.u64(chunk_id))
        return r.U32.unpack(found)[0] if found is not None else None

    first = c.do(begin_write=pb.BeginWrite(inode=f)).chunk
    assert committed(first.id) is None                        # begun, never committed
    c.do(commit_write=pb.CommitWrite(inode=f, chunk_id=first.id, version=first.version,
                                     end=10))
    again = c.do(begin_write=pb.BeginWrite(inode=f)).chunk
    assert committed(first.id) == first.version == again.version - 1
    c.do(commit_write=pb.CommitWrite(inode=f, chunk_id=again.id, version=again.version,
                                     end=20))
    assert committed(first.id) == again.version
    fs.ok(setattr=pb.Setattr(inode=f, size=0))
    assert committed(first.id) is None


def test_writing_needs_an_open_file(fs):
    f = fs.create(R, b"f")
    c = Client(fs)
    assert c.do(begin_write=pb.BeginWrite(inode=f)).errno == errno.EBADF
    assert c.do(begin_write=pb.BeginWrite(inode=R)).errno == errno.EISDIR


def test_a_write_by_non_root_clears_setuid(fs):
    f = fs.create(R, b"f", 0o777)
    fs.ok(setattr=pb.Setattr(inode=f, mode=0o4777))
    c = Client(fs, ALICE)
    c.do(open=pb.Open(inode=f, flags=O_WRONLY))
    chunk = c.do(begin_write=pb.BeginWrite(inode=f)).chunk
    done = c.do(commit_write=pb.CommitWrite(inode=f, chunk_id=chunk.id, version=chunk.version,
                                            end=3))
    assert done.attr.mode & 0o7777 == 0o777


def test_chunks_know_their_file_until_it_lets_them_go(fs):
    f = fs.create(R, b"f")
    c = Client(fs)
    c.do(open=pb.Open(inode=f, flags=O_RDWR))
    chunks = [c.do(begin_write=pb.BeginWrite(inode=f, chunk_index=i)).chunk for i in range(3)]
    ids = [chunk.id for chunk in chunks]
    c.do(commit_write=pb.CommitWrite(inode=f, chunk_index=2, chunk_id=ids[2],
                                     version=chunks[2].version, end=3 * CHUNK_SIZE))
    assert [reads.chunk_owner(fs.proj, i) for i in ids] == [(f, 0), (f, 1), (f, 2)]
    fs.ok(setattr=pb.Setattr(inode=f, size=CHUNK_SIZE + 1))   # chunk 2 goes
    assert reads.chunk_owner(fs.proj, ids[2]) is None
    assert reads.chunk_owner(fs.proj, ids[1]) == (f, 1)
    c.do(release=pb.Release(inode=f))
    fs.ok(unlink=pb.Unlink(parent=R, name=b"f"))               # the rest go with the file
    assert [reads.chunk_owner(fs.proj, i) for i in ids] == [None, None, None]


def test_storage_classes_are_checked_and_inherited(fs):
    d = fs.mkdir(R, b"d")
    assert fs.do(set_class=pb.SetClass(inode=d, storage_class="ec=3+")).errno == errno.EINVAL
    assert fs.do(set_class=pb.SetClass(inode=d, storage_class="copies=0")).errno == errno.EINVAL
    fs.ok(set_class=pb.SetClass(inode=d, storage_class="ec=2+1"))
    sub = fs.mkdir(d, b"sub")
    f = fs.create(sub, b"f")
    assert reads.storage_class(fs.proj, f) == "ec=2+1"
    assert reads.storage_class(fs.proj, R) == ""               # the cluster default
    fs.ok(set_class=pb.SetClass(inode=f, storage_class=""))
    assert reads.storage_class(fs.proj, f) == ""


def test_erasure_coded_data_goes_back_to_copies_but_takes_no_other_shape(fs):
    # No job re-encodes parts: read with another shape they are lost, or deleted as
    # extra. Copies are made back from them with the shape the file keeps for them.
    d = fs.mkdir(R, b"d")
    fs.ok(set_class=pb.SetClass(inode=d, storage_class="ec=4+2"))
    f = fs.create(d, b"f")
    fs.ok(set_class=pb.SetClass(inode=f, storage_class="ec=2+1"))   # no data yet
    c = Client(fs, ROOT)
    c.do(open=pb.Open(inode=f, flags=O_RDWR))
    chunk = c.do(begin_write=pb.BeginWrite(inode=f, chunk_index=0)).chunk
    c.do(commit_write=pb.CommitWrite(inode=f, chunk_index=0, chunk_id=chunk.id,
                                     version=chunk.version, end=1000))

    def refused(text: str) -> str:
        result = fs.do(set_class=pb.SetClass(inode=f, storage_class=text))
        assert result.errno == errno.EOPNOTSUPP and "ec=2+1" in result.message
        return result.message
    refused("ec=4+2")
    assert "by name" in refused("")                  # the default may be another shape
    fs.ok(set_class=pb.SetClass(inode=f, storage_class="copies=2"))
    assert (reads.storage_class(fs.proj, f), reads.parts_class(fs.proj, f)) == \
        ("copies=2", "ec=2+1")
    refused("ec=4+2")                                # parts of ec=2+1 may be left
    fs.ok(set_class=pb.SetClass(inode=f, storage_class="copies=3"))
    assert reads.parts_class(fs.proj, f) == "ec=2+1"
    fs.ok(set_class=pb.SetClass(inode=f, storage_class="ec=2+1"))   # its parts fit again
    assert reads.parts_class(fs.proj, f) is None
    fs.ok(set_class=pb.SetClass(inode=f, storage_class="copies=2"))
    fs.ok(setattr=pb.Setattr(inode=f, size=0))        # no chunk left: no parts to mind
    assert reads.parts_class(fs.proj, f) is None
    fs.ok(set_class=pb.SetClass(inode=f, storage_class="ec=4+2"))
    assert fs.do(set_class=pb.SetClass(inode=d, storage_class="copies=2")).errno == 0


def test_a_file_of_an_erasure_coded_cluster_default_keeps_its_parts_shape(fs):
    # A file with no class of its own has the default the leader stamps on SetClass.
    f = fs.create(R, b"f")
    c = Client(fs, ROOT)
    c.do(open=pb.Open(inode=f, flags=O_RDWR))
    chunk = c.do(begin_write=pb.BeginWrite(inode=f, chunk_index=0)).chunk
    c.do(commit_write=pb.CommitWrite(inode=f, chunk_index=0, chunk_id=chunk.id,
                                     version=chunk.version, end=1000))
    refused = fs.do(set_class=pb.SetClass(inode=f, storage_class="ec=4+2",
                                          default_class="ec=2+1"))
    assert refused.errno == errno.EOPNOTSUPP and "ec=2+1" in refused.message
    fs.ok(set_class=pb.SetClass(inode=f, storage_class="copies=2", default_class="ec=2+1"))
    assert reads.parts_class(fs.proj, f) == "ec=2+1"
    fs.ok(set_class=pb.SetClass(inode=f, storage_class="", default_class="ec=2+1"))
    assert reads.parts_class(fs.proj, f) is None         # back to its parts' shape
    assert fs.do(set_class=pb.SetClass(inode=f, storage_class="copies=2",
                                       default_class="nonsense")).errno == 0


def test_only_the_owner_sets_a_storage_class(fs):
    f = fs.create(R, b"f", 0o666)
    assert fs.do(ALICE, set_class=pb.SetClass(inode=f, storage_class="copies=3")).errno \
        == errno.EPERM


def test_create_can_open_in_the_same_command(fs):
    alice = Client(fs, ALICE)
    d = fs.mkdir(R, b"d", 0o777)
    made = alice.do(create=pb.Create(parent=d, name=b"ro", mode=0o444, open=True,
                                     open_flags=O_RDWR))
    assert made.errno == 0                       # its creator may write a read-only file
    assert alice.do(release=pb.Release(inode=made.attr.inode)).errno == 0
    again = alice.do(create=pb.Create(parent=d, name=b"ro", mode=0o444, open=True,
                                      open_flags=O_RDWR))
    assert again.errno == errno.EACCES          # an existing one is checked like open
    assert fs.do(create=pb.Create(parent=d, name=b"x", open=True)).errno == errno.EINVAL


def test_o_trunc_truncates_even_a_read_only_open_given_write_permission(fs):
    f = fs.create(R, b"f", 0o644)
    fs.ok(setattr=pb.Setattr(inode=f, size=100))
    alice, root = Client(fs, ALICE), Client(fs)
    assert alice.do(open=pb.Open(inode=f, flags=O_RDONLY | O_TRUNC)).errno == errno.EACCES
    assert root.do(open=pb.Open(inode=f, flags=O_RDONLY | O_TRUNC)).errno == 0
    assert reads.getattr(fs.proj, f).size == 0
