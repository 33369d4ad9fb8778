"""Directory delegations and reserved inode ranges, through the real fold on a real
projection (services/metadata/namespace/delegation_fold.py and the delegated Create)."""

import errno
import stat

import pytest

from schemas import namespace_pb2 as pb
from services.common.posix import records as r
from services.metadata.applier import Applier
from services.metadata.namespace import delegation_fold, reads
from services.metadata.projection import POSITION_KEYS, open_projection
from tests.conftest import ALICE, ROOT

R = 1  # root inode
T = 7_000_000_123  # the time a client told the application, before the commit


class Session:
    """A client session: numbers its requests, as a mount does."""

    def __init__(self, fs):
        self.fs = fs
        result = fs.do(open_session=pb.OpenSession(client="test"))
        assert result.errno == 0 and result.session
        self.sid, self.seq = result.session, 0

    def do(self, caller=ROOT, **kwargs) -> pb.Result:
        self.seq += 1
        return self.fs.do(caller, session=self.sid, seq=self.seq, **kwargs)

    def reserve(self, count=10) -> tuple[int, int]:
        result = self.do(reserve_inodes=pb.ReserveInodes(count=count))
        assert result.errno == 0, result.message
        return result.first_inode, result.inode_count

    def create(self, parent, name, ino, time_ns=T, caller=ROOT, **kwargs) -> pb.Result:
        return self.do(caller, create=pb.Create(parent=parent, name=name, mode=0o644,
                                                inode=ino, time_ns=time_ns, **kwargs))

    def delegate(self, directory, caller=ROOT) -> pb.Result:
        return self.do(caller, delegate=pb.Delegate(dir=directory))

    def undelegate(self, directory, holder=0) -> pb.Result:
        return self.do(undelegate=pb.Undelegate(dir=directory, session=holder))


def reserved(fs, session) -> tuple[int, int] | None:
    """The session's current unused range."""
    found = fs.proj.get(r.RESERVED, r.u64(session))
    return None if found is None else delegation_fold.ranges(found)[:2]


def holder(fs, directory) -> int | None:
    found = fs.proj.get(r.DELEGATIONS, r.u64(directory))
    return None if found is None else r.from_u64(found)


def state(fs) -> dict:
    """Everything but the exactly-once records and the applied position: a failed
    command in a session records its result, and nothing else may change."""
    dump = {}
    for cf in r.COLUMN_FAMILIES:
        if cf == r.RESULTS:
            continue
        dump[cf] = {k: v for k, v in fs.proj.scan(cf, b"")
                    if not (cf == r.META and k in POSITION_KEYS)}
    return dump


def next_inode(fs) -> int:
    return r.from_u64(fs.proj.get(r.META, b"next_inode"))


# -- ReserveInodes ------------------------------------------------------------------------

def test_a_range_starts_at_the_next_inode_and_later_creates_come_after_it(fs):
    a = fs.create(R, b"a")
    s = Session(fs)
    first, count = s.reserve(10)
    assert (first, count) == (a + 1, 10)
    assert reserved(fs, s.sid) == (a + 1, a + 11)
    assert fs.create(R, b"b") == a + 11
    assert fs.mkdir(R, b"d") == a + 12


def test_a_range_reserved_ahead_follows_the_current_one(fs):
    """A client reserves its next range before the current one runs out: creates
    sent before and after that reservation both find their inodes valid."""
    s = Session(fs)
    first, _ = s.reserve(5)
    ahead, _ = s.reserve(3)
    assert ahead == first + 5 and reserved(fs, s.sid) == (first, first + 5)
    assert s.create(R, b"f", first).attr.inode == first
    assert s.create(R, b"g", ahead).attr.inode == ahead   # leaves the rest of the first
    assert reserved(fs, s.sid) == (ahead + 1, ahead + 3)
    assert s.create(R, b"h", first + 1).errno == errno.EINVAL   # passed, gone


def test_a_new_range_replaces_one_reserved_ahead_and_a_used_up_one(fs):
    s = Session(fs)
    first, _ = s.reserve(1)
    assert s.create(R, b"f", first).attr.inode == first       # used up
    second, _ = s.reserve(2)
    assert reserved(fs, s.sid) == (second, second + 2)
    third, _ = s.reserve(2)                                    # ahead of the second
    fourth, _ = s.reserve(2)                                   # replaces the third
    assert s.create(R, b"g", third).errno == errno.EINVAL
    assert s.create(R, b"g", fourth).attr.inode == fourth


@pytest.mark.parametrize("count", [0, delegation_fold.MAX_RESERVED + 1])
def test_a_range_of_nothing_or_too_much_is_refused(fs, count):
    s = Session(fs)
    before = state(fs)
    assert s.do(reserve_inodes=pb.ReserveInodes(count=count)).errno == errno.EINVAL
    assert state(fs) == before


def test_a_range_needs_a_session(fs):
    before = fs.proj.content_digest()
    assert fs.do(reserve_inodes=pb.ReserveInodes(count=4)).errno == errno.EINVAL
    assert fs.proj.content_digest() == before


def test_the_largest_range_is_allowed(fs):
    s = Session(fs)
    first, count = s.reserve(delegation_fold.MAX_RESERVED)
    assert count == delegation_fold.MAX_RESERVED
    assert next_inode(fs) == first + count


# -- delegated Create ---------------------------------------------------------------------

def test_a_delegated_create_gets_its_inode_and_the_clients_time(fs):
    s = Session(fs)
    first, _ = s.reserve(10)
    inodes_before = reads.statfs(fs.proj).inodes
    result = s.create(R, b"f", first)
    assert result.errno == 0, result.message
    attr = result.attr
    assert attr.inode == first and attr.nlink == 1 and attr.size == 0
    assert attr.mode == stat.S_IFREG | 0o644
    assert attr.atime_ns == attr.mtime_ns == attr.ctime_ns == T != fs.time_ns
    root = reads.getattr(fs.proj, R)
    assert root.mtime_ns == root.ctime_ns == T and root.size == 1
    assert reads.lookup(fs.proj, ROOT, R, b"f") == attr
    assert reads.getattr(fs.proj, first) == attr
    assert reserved(fs, s.sid) == (first + 1, first + 10)
    assert reads.statfs(fs.proj).inodes == inodes_before + 1
    assert next_inode(fs) == first + 10  # the range was already counted


def test_a_delegated_create_without_a_time_takes_the_commands(fs):
    s = Session(fs)
    first, _ = s.reserve(2)
    attr = s.create(R, b"f", first, time_ns=0).attr
    assert attr.mtime_ns == fs.time_ns and reads.getattr(fs.proj, R).mtime_ns == fs.time_ns


def test_a_delegated_create_may_open_the_file(fs):
    s = Session(fs)
    first, _ = s.reserve(2)
    assert s.create(R, b"f", first, open=True, open_flags=2).errno == 0
    assert fs.proj.get(r.OPENS, r.TWO_U64.pack(s.sid, first)) == r.u64(1)


def test_inodes_are_used_in_increasing_order_and_may_skip(fs):
    s = Session(fs)
    first, _ = s.reserve(5)
    assert s.create(R, b"a", first).errno == 0
    assert s.create(R, b"c", first + 2).errno == 0     # first + 1 is skipped for good
    for ino in (first + 1, first + 2, first, first - 1, first + 5, first + 100, 2**64 - 1):
        before = state(fs)
        result = s.create(R, b"x%d" % ino, ino)
        assert result.errno == errno.EINVAL and result.message, ino
        assert not result.HasField("attr")
        assert state(fs) == before, f"a failed create of {ino} changed the projection"
    assert s.create(R, b"e", first + 4).attr.inode == first + 4
    assert reserved(fs, s.sid) == (first + 5, first + 5)
    assert s.create(R, b"f", first + 5).errno == errno.EINVAL  # used up


def test_a_delegated_create_needs_a_range(fs):
    s = Session(fs)
    before = state(fs)
    result = s.create(R, b"f", next_inode(fs))
    assert result.errno == errno.EINVAL
    assert state(fs) == before


def test_a_delegated_create_outside_a_session_is_refused(fs):
    Session(fs).reserve(4)
    before = fs.proj.content_digest()
    result = fs.do(create=pb.Create(parent=R, name=b"f", mode=0o644, inode=2, time_ns=T))
    assert result.errno == errno.EINVAL
    assert fs.proj.content_digest() == before


def test_another_sessions_range_is_not_yours(fs):
    s, t = Session(fs), Session(fs)
    first, _ = s.reserve(4)
    t.reserve(4)
    before = state(fs)
    assert t.create(R, b"f", first).errno == errno.EINVAL
    assert state(fs) == before


def test_an_existing_name_is_eexist_even_without_exclusive_and_the_claim_rolls_back(fs):
    fs.create(R, b"f")
    fs.mkdir(R, b"d")
    s = Session(fs)
    first, _ = s.reserve(4)
    for name in (b"f", b"d"):
        before = state(fs)
        result = s.create(R, name, first)
        assert result.errno == errno.EEXIST and not result.HasField("attr")
        assert state(fs) == before
    assert reserved(fs, s.sid) == (first, first + 4)
    assert s.create(R, b"g", first).attr.inode == first  # the inode is still unused


def test_a_delegated_create_is_checked_like_any_other(fs):
    locked = fs.mkdir(R, b"locked", 0o755)
    f = fs.create(R, b"file")
    s = Session(fs)
    first, _ = s.reserve(4)
    for parent, name, caller, code in [
            (locked, b"x", ALICE, errno.EACCES), (f, b"x", ROOT, errno.ENOTDIR),
            (999, b"x", ROOT, errno.ENOENT), (R, b"a/b", ROOT, errno.EINVAL),
            (R, b"n" * 256, ROOT, errno.ENAMETOOLONG)]:
        before = state(fs)
        assert s.create(parent, name, first, caller=caller).errno == code, (parent, name)
        assert state(fs) == before
    assert reads.getattr(fs.proj, locked).mtime_ns != T


def test_a_delegated_create_in_a_setgid_directory_inherits_its_group(fs):
    shared = fs.mkdir(R, b"shared", 0o777)
    fs.ok(setattr=pb.Setattr(inode=shared, mode=0o2777, gid=1000))
    s = Session(fs)
    first, _ = s.reserve(4)
    outsider = pb.Caller(uid=1002, gid=1002)
    attr = s.do(outsider, create=pb.Create(parent=shared, name=b"f", mode=0o2775,
                                           inode=first, time_ns=T)).attr
    assert attr.inode == first and attr.uid == 1002 and attr.gid == 1000
    assert not attr.mode & stat.S_ISGID  # not in group 1000: setgid dropped
    member = pb.Caller(uid=1001, gid=1001, groups=[1000])
    attr = s.do(member, create=pb.Create(parent=shared, name=b"g", mode=0o2775,
                                         inode=first + 1, time_ns=T)).attr
    assert attr.gid == 1000 and attr.mode & stat.S_ISGID


def test_a_retried_delegated_create_returns_the_first_result(fs):
    s = Session(fs)
    first, _ = s.reserve(4)
    create = pb.Create(parent=R, name=b"f", mode=0o644, inode=first, time_ns=T)
    s.seq += 1
    result = fs.do(session=s.sid, seq=s.seq, create=create)
    assert result.errno == 0
    before = fs.proj.content_digest()
    retry = fs.do(session=s.sid, seq=s.seq, create=create)
    assert retry == result  # not EEXIST, not EINVAL for a used inode
    assert fs.proj.content_digest() == before


def test_a_retried_reservation_returns_the_same_range(fs):
    s = Session(fs)
    s.seq += 1
    first = fs.do(session=s.sid, seq=s.seq, reserve_inodes=pb.ReserveInodes(count=8))
    before = fs.proj.content_digest()
    again = fs.do(session=s.sid, seq=s.seq, reserve_inodes=pb.ReserveInodes(count=8))
    assert again == first and first.first_inode and first.inode_count == 8
    assert fs.proj.content_digest() == before


# -- Delegate -----------------------------------------------------------------------------

def test_an_unlink_answered_by_the_holder_keeps_the_time_it_told(fs):
    d = fs.mkdir(R, b"d")
    fs.create(d, b"f")
    fs.create(d, b"g")
    s = Session(fs)
    assert s.delegate(d).errno == 0
    assert s.do(unlink=pb.Unlink(parent=d, name=b"f", time_ns=T)).errno == 0
    assert reads.getattr(fs.proj, d).mtime_ns == T
    other = Session(fs)   # not the holder: its time is not taken
    assert other.do(unlink=pb.Unlink(parent=d, name=b"g", time_ns=T + 5)).errno == 0
    assert reads.getattr(fs.proj, d).mtime_ns == fs.time_ns


def test_a_mkdir_answered_by_the_holder_and_born_delegated(fs):
    s = Session(fs)
    first, _ = s.reserve(4)
    result = s.do(mkdir=pb.Mkdir(parent=R, name=b"d", mode=0o2775, inode=first, time_ns=T,
                                 delegate=True))
    assert result.errno == 0, result.message
    attr = result.attr
    assert attr.inode == first and attr.nlink == 2 and attr.mtime_ns == T
    assert stat.S_ISDIR(attr.mode) and attr.mode & 0o7777 == 0o775   # no setgid from mode
    assert holder(fs, first) == s.sid
    root = reads.getattr(fs.proj, R)
    assert root.nlink == 3 and root.mtime_ns == T
    assert reserved(fs, s.sid) == (first + 1, first + 4)
    # a directory born delegated needs a session
    assert fs.do(mkdir=pb.Mkdir(parent=R, name=b"e", mode=0o755, delegate=True)).errno \
        == errno.EINVAL
    assert s.do(mkdir=pb.Mkdir(parent=R, name=b"d", mode=0o755, inode=first + 1)).errno \
        == errno.EEXIST


def test_an_rmdir_answered_by_the_holder_keeps_the_time_it_told_and_frees_the_delegation(fs):
    s = Session(fs)
    d = s.do(mkdir=pb.Mkdir(parent=R, name=b"d", mode=0o755, delegate=True)).attr.inode
    sub = s.do(mkdir=pb.Mkdir(parent=d, name=b"sub", mode=0o755, delegate=True)).attr.inode
    assert holder(fs, sub) == s.sid
    assert s.do(rmdir=pb.Rmdir(parent=d, name=b"sub", time_ns=T)).errno == 0
    assert reads.getattr(fs.proj, d).mtime_ns == T and holder(fs, sub) is None


def test_delegate_takes_a_directory_for_the_session(fs):
    d = fs.mkdir(R, b"d")
    s = Session(fs)
    result = s.delegate(d)
    assert result.errno == 0 and result.attr.inode == d
    assert holder(fs, d) == s.sid
    assert s.delegate(d).errno == 0  # again: still its own
    assert holder(fs, d) == s.sid


def test_delegate_needs_a_session(fs):
    d = fs.mkdir(R, b"d")
    before = fs.proj.content_digest()
    assert fs.do(delegate=pb.Delegate(dir=d)).errno == errno.EINVAL
    assert fs.proj.content_digest() == before


@pytest.mark.parametrize("owner, mode, code", [
    (0, 0o755, errno.EACCES),      # no write permission
    (1000, 0o600, errno.EACCES),   # no search permission
    (1000, 0o500, errno.EACCES),
    (0, 0o733, 0),                 # write and search suffice: reading is not needed
    (1000, 0o700, 0)])
def test_delegate_needs_write_and_search_permission(fs, owner, mode, code):
    d = fs.mkdir(R, b"d")
    fs.ok(setattr=pb.Setattr(inode=d, mode=mode, uid=owner))
    s = Session(fs)
    before = state(fs)
    assert s.delegate(d, caller=ALICE).errno == code
    if code:
        assert state(fs) == before and holder(fs, d) is None
    else:
        assert holder(fs, d) == s.sid


def test_delegate_wants_an_existing_directory(fs):
    f = fs.create(R, b"f")
    s = Session(fs)
    before = state(fs)
    assert s.delegate(f).errno == errno.ENOTDIR
    assert s.delegate(999).errno == errno.ENOENT
    assert s.delegate(0).errno == errno.ENOENT
    assert state(fs) == before


def test_a_directory_delegated_to_one_session_is_busy_for_another(fs):
    d = fs.mkdir(R, b"d")
    s, t = Session(fs), Session(fs)
    assert s.delegate(d).errno == 0
    before = state(fs)
    assert t.delegate(d).errno == errno.EBUSY
    assert state(fs) == before and holder(fs, d) == s.sid
    assert s.undelegate(d).errno == 0
    assert t.delegate(d).errno == 0 and holder(fs, d) == t.sid


def test_a_directory_with_too_many_entries_is_not_delegated(fs, monkeypatch):
    monkeypatch.setattr(delegation_fold, "MAX_DELEGATED_ENTRIES", 2)
    d = fs.mkdir(R, b"d")
    fs.create(d, b"a")
    fs.mkdir(d, b"b")
    s = Session(fs)
    assert s.delegate(d).errno == 0  # exactly the limit is fine
    assert s.undelegate(d).errno == 0
    fs.create(d, b"c")
    before = state(fs)
    assert s.delegate(d).errno == errno.E2BIG
    assert state(fs) == before and holder(fs, d) is None


# -- Undelegate ---------------------------------------------------------------------------

def test_the_holder_gives_a_directory_back(fs):
    d, e = fs.mkdir(R, b"d"), fs.mkdir(R, b"e")
    s = Session(fs)
    s.delegate(d)
    s.delegate(e)
    assert s.undelegate(d).errno == 0
    assert holder(fs, d) is None and holder(fs, e) == s.sid
    assert s.undelegate(e, holder=s.sid).errno == 0  # naming itself is the same
    assert holder(fs, e) is None


def test_a_session_cannot_give_back_another_sessions_directory(fs):
    d = fs.mkdir(R, b"d")
    s, t = Session(fs), Session(fs)
    s.delegate(d)
    before = state(fs)
    assert t.undelegate(d, holder=s.sid).errno == errno.EPERM
    assert t.undelegate(d).errno == 0  # its own: it holds nothing there
    assert state(fs) == before and holder(fs, d) == s.sid


def test_the_leader_takes_a_directory_back(fs):
    d = fs.mkdir(R, b"d")
    s, t = Session(fs), Session(fs)
    s.delegate(d)
    before = fs.proj.content_digest()
    assert fs.do(undelegate=pb.Undelegate(dir=d, session=t.sid)).errno == 0
    assert fs.proj.content_digest() == before  # the wrong holder: nothing happens
    assert fs.do(undelegate=pb.Undelegate(dir=d, session=s.sid)).errno == 0
    assert holder(fs, d) is None
    assert t.delegate(d).errno == 0


def test_giving_back_what_is_not_held_is_fine_and_changes_nothing(fs):
    d = fs.mkdir(R, b"d")
    s = Session(fs)
    before = state(fs)
    assert s.undelegate(d).errno == 0
    assert s.undelegate(999).errno == 0
    assert fs.do(undelegate=pb.Undelegate(dir=d)).errno == 0
    assert fs.do(undelegate=pb.Undelegate(dir=d, session=s.sid)).errno == 0
    assert state(fs) == before


# -- CloseSession -------------------------------------------------------------------------

def test_closing_a_session_drops_its_delegations_and_its_range(fs):
    d, e, g = fs.mkdir(R, b"d"), fs.mkdir(R, b"e"), fs.mkdir(R, b"g")
    s, t = Session(fs), Session(fs)
    s.delegate(d)
    s.delegate(e)
    t.delegate(g)
    s.reserve(4)
    t_first, _ = t.reserve(4)
    assert fs.do(close_session=pb.CloseSession(session=s.sid)).errno == 0
    assert holder(fs, d) is None and holder(fs, e) is None and reserved(fs, s.sid) is None
    assert holder(fs, g) == t.sid and reserved(fs, t.sid) == (t_first, t_first + 4)
    assert list(fs.proj.scan(r.DELEGATIONS, b"")) == [(r.u64(g), r.u64(t.sid))]
    assert t.delegate(d).errno == 0


def test_a_closed_sessions_inodes_are_never_handed_out_again(fs):
    s = Session(fs)
    first, _ = s.reserve(4)
    fs.do(close_session=pb.CloseSession(session=s.sid))
    assert fs.create(R, b"f") == first + 4
    t = Session(fs)
    assert t.reserve(4)[0] == first + 5


# -- replay ---------------------------------------------------------------------------------

def _log() -> list[bytes]:
    """Sessions 1 and 2, delegations, ranges, delegated creates that succeed and fail."""
    root, alice = pb.Caller(uid=0, gid=0), pb.Caller(uid=1000, gid=1000, umask=0o022)
    steps = [
        (root, 0, 0, {"mkdir": pb.Mkdir(parent=R, name=b"pub", mode=0o777)}),
        (root, 0, 0, {"open_session": pb.OpenSession(client="a")}),
        (alice, 0, 0, {"open_session": pb.OpenSession(client="b")}),
        (alice, 1, 1, {"delegate": pb.Delegate(dir=2)}),
        (alice, 2, 1, {"delegate": pb.Delegate(dir=2)}),          # EBUSY
        (alice, 1, 2, {"reserve_inodes": pb.ReserveInodes(count=5)}),
        (alice, 1, 3, {"create": pb.Create(parent=2, name=b"f", mode=0o644, inode=3,
                                           time_ns=55)}),
        (alice, 1, 4, {"create": pb.Create(parent=2, name=b"g", mode=0o644, inode=5,
                                           time_ns=56)}),
        (alice, 1, 5, {"create": pb.Create(parent=2, name=b"h", mode=0o644, inode=4,
                                           time_ns=57)}),         # EINVAL
        (alice, 1, 6, {"create": pb.Create(parent=2, name=b"f", mode=0o644, inode=6,
                                           time_ns=58)}),         # EEXIST
        (alice, 1, 4, {"create": pb.Create(parent=2, name=b"g", mode=0o644, inode=5,
                                           time_ns=56)}),         # a retry
        (root, 0, 0, {"create": pb.Create(parent=2, name=b"plain", mode=0o644)}),
        (alice, 2, 2, {"reserve_inodes": pb.ReserveInodes(count=2)}),
        (alice, 2, 3, {"undelegate": pb.Undelegate(dir=2, session=1)}),  # EPERM
        (root, 0, 0, {"undelegate": pb.Undelegate(dir=2, session=1)}),
        (alice, 2, 4, {"delegate": pb.Delegate(dir=R)}),           # EACCES
        (alice, 2, 5, {"delegate": pb.Delegate(dir=2)}),
        (root, 0, 0, {"close_session": pb.CloseSession(session=2)}),
        (alice, 1, 7, {"create": pb.Create(parent=2, name=b"i", mode=0o644, inode=7,
                                           time_ns=59)}),
    ]
    return [pb.Command(time_ns=1000 * (i + 1), caller=caller, session=session, seq=seq,
                       **op).SerializeToString()
            for i, (caller, session, seq, op) in enumerate(steps)]


def _fold_into(path, log):
    with open_projection(str(path)) as proj:
        results = Applier(proj).apply_many([(i + 1, data) for i, data in enumerate(log)])
        return ([res.errno for res in results], proj.content_digest(), proj.applied_digest,
                list(proj.scan(r.DELEGATIONS, b"")), list(proj.scan(r.RESERVED, b"")))


def test_replaying_delegations_folds_to_the_same_projection(tmp_path):
    log = _log()
    first = _fold_into(tmp_path / "one", log)
    second = _fold_into(tmp_path / "two", log)
    assert first == second
    codes, _, _, delegations, ranges = first
    assert codes == [0, 0, 0, 0, errno.EBUSY, 0, 0, 0, errno.EINVAL, errno.EEXIST, 0, 0, 0,
                     errno.EPERM, 0, errno.EACCES, 0, 0, 0]
    assert delegations == [] and ranges == [(r.u64(1), delegation_fold.RANGES.pack(8, 8, 0, 0))]


def test_replaying_from_a_snapshot_gives_the_same_projection(tmp_path):
    log = _log()
    whole = _fold_into(tmp_path / "whole", log)
    k = 9
    with open_projection(str(tmp_path / "live")) as live:
        Applier(live).apply_many([(i + 1, data) for i, data in enumerate(log[:k])])
        live.checkpoint(str(tmp_path / "snapshot"))
    with open_projection(str(tmp_path / "snapshot")) as proj:
        Applier(proj).apply_many([(k + i + 1, data) for i, data in enumerate(log[k:])])
        resumed = proj.content_digest(), proj.applied_digest
    assert resumed == whole[1:3]
