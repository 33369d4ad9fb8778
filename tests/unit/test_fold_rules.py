"""The fold's POSIX rules, one scenario each (docs/namespace-semantics.md)."""

import errno
import stat

import pytest

from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError
from services.metadata.namespace import reads
from tests.conftest import ALICE, BOB, ROOT

R = 1  # root inode


def err(result):
    return result.errno


def test_mkdir_counts_links_and_entries_and_sets_parent_times(fs):
    a = fs.mkdir(R, b"a")
    fs.mkdir(a, b"b")
    fs.create(a, b"f")
    attr = reads.getattr(fs.proj, a)
    assert (attr.nlink, attr.size) == (3, 2)
    assert attr.mtime_ns == attr.ctime_ns == fs.time_ns
    assert reads.getattr(fs.proj, R).nlink == 3


def test_existing_name_wins_over_missing_write_permission(fs):
    d = fs.mkdir(R, b"d", 0o555)
    fs.mkdir(d, b"x")
    assert err(fs.do(ALICE, mkdir=pb.Mkdir(parent=d, name=b"x", mode=0o755))) == errno.EEXIST
    assert err(fs.do(ALICE, mkdir=pb.Mkdir(parent=d, name=b"y", mode=0o755))) == errno.EACCES


@pytest.mark.parametrize("name, code", [
    (b"", errno.EINVAL), (b"a/b", errno.EINVAL), (b"a\0b", errno.EINVAL),
    (b".", errno.EINVAL), (b"..", errno.EINVAL), (b"x" * 256, errno.ENAMETOOLONG)])
def test_bad_names_are_refused_and_change_nothing(fs, name, code):
    before = fs.proj.content_digest()
    result = fs.do(mkdir=pb.Mkdir(parent=R, name=name, mode=0o755))
    assert result.errno == code and result.message
    assert fs.proj.content_digest() == before


def test_a_255_byte_name_is_fine(fs):
    fs.create(R, b"x" * 255)
    assert reads.lookup(fs.proj, ROOT, R, b"x" * 255).nlink == 1


def test_umask_and_setgid_directory_inheritance(fs):
    shared = fs.mkdir(R, b"shared", 0o777)
    fs.ok(setattr=pb.Setattr(inode=shared, mode=0o2777, gid=1000))
    sub = fs.mkdir(shared, b"sub", 0o777, caller=pb.Caller(uid=1001, gid=1001, umask=0o022))
    attr = reads.getattr(fs.proj, sub)
    assert attr.gid == 1000 and attr.mode == stat.S_IFDIR | stat.S_ISGID | 0o755
    outsider = pb.Caller(uid=1002, gid=1002)
    f = fs.ok(outsider, create=pb.Create(parent=shared, name=b"f", mode=0o2775))
    assert f.gid == 1000 and not f.mode & stat.S_ISGID  # not in group 1000: setgid dropped


def test_sticky_directory_protects_other_users_entries(fs):
    tmp = fs.mkdir(R, b"tmp", 0o777)
    fs.ok(setattr=pb.Setattr(inode=tmp, mode=0o1777))
    fs.create(tmp, b"alices", caller=ALICE)
    assert err(fs.do(BOB, unlink=pb.Unlink(parent=tmp, name=b"alices"))) == errno.EPERM
    assert err(fs.do(BOB, rename=pb.Rename(parent=tmp, name=b"alices", new_parent=tmp,
                                           new_name=b"mine"))) == errno.EPERM
    assert err(fs.do(ALICE, unlink=pb.Unlink(parent=tmp, name=b"alices"))) == 0


def test_unlink_and_rmdir_type_errors(fs):
    d = fs.mkdir(R, b"d")
    fs.create(d, b"f")
    assert err(fs.do(unlink=pb.Unlink(parent=R, name=b"d"))) == errno.EISDIR
    assert err(fs.do(rmdir=pb.Rmdir(parent=d, name=b"f"))) == errno.ENOTDIR
    assert err(fs.do(rmdir=pb.Rmdir(parent=R, name=b"d"))) == errno.ENOTEMPTY
    assert err(fs.do(unlink=pb.Unlink(parent=d, name=b"nope"))) == errno.ENOENT


def test_hard_links_keep_the_inode_until_the_last_name_goes(fs):
    f = fs.create(R, b"f")
    fs.ok(setattr=pb.Setattr(inode=f, size=100))
    fs.ok(link=pb.Link(inode=f, new_parent=R, new_name=b"g"))
    assert reads.getattr(fs.proj, f).nlink == 2
    fs.ok(unlink=pb.Unlink(parent=R, name=b"f"))
    assert reads.lookup(fs.proj, ROOT, R, b"g").size == 100
    fs.ok(unlink=pb.Unlink(parent=R, name=b"g"))
    with pytest.raises(FsError) as gone:
        reads.getattr(fs.proj, f)
    assert gone.value.errno == errno.ENOENT
    assert reads.statfs(fs.proj).used_bytes == 0
    assert reads.statfs(fs.proj).inodes == 1


def test_links_to_directories_and_protected_hardlinks(fs):
    d = fs.mkdir(R, b"d", 0o777)
    assert err(fs.do(link=pb.Link(inode=d, new_parent=R, new_name=b"d2"))) == errno.EPERM
    secret = fs.create(R, b"secret", 0o600)
    assert err(fs.do(ALICE, link=pb.Link(inode=secret, new_parent=d,
                                         new_name=b"mine"))) == errno.EPERM


def test_rename_into_own_subtree_and_over_ancestor(fs):
    a = fs.mkdir(R, b"a")
    b = fs.mkdir(a, b"b")
    mv = pb.Rename(parent=R, name=b"a", new_parent=b, new_name=b"a")
    assert err(fs.do(rename=mv)) == errno.EINVAL
    over = pb.Rename(parent=a, name=b"b", new_parent=R, new_name=b"a")
    assert err(fs.do(rename=over)) == errno.ENOTEMPTY


def test_rename_replaces_and_moves_directories(fs):
    a = fs.mkdir(R, b"a")
    b = fs.mkdir(R, b"b")
    fs.mkdir(a, b"sub")
    fs.mkdir(b, b"empty")
    fs.ok(rename=pb.Rename(parent=a, name=b"sub", new_parent=b, new_name=b"empty"))
    assert reads.getattr(fs.proj, a).nlink == 2
    assert reads.getattr(fs.proj, b).nlink == 3
    sub = reads.lookup(fs.proj, ROOT, b, b"empty")
    assert reads.lookup(fs.proj, ROOT, sub.inode, b"..").inode == b
    assert reads.statfs(fs.proj).inodes == 4


def test_rename_type_mismatches_and_flags(fs):
    fs.mkdir(R, b"d")
    fs.create(R, b"f")
    fs.mkdir(R, b"e")
    fs.create(fs.mkdir(R, b"full"), b"x")

    def rename(name, new, flags=0):
        return err(fs.do(rename=pb.Rename(parent=R, name=name, new_parent=R, new_name=new,
                                          flags=flags)))
    assert rename(b"d", b"f") == errno.ENOTDIR
    assert rename(b"f", b"d") == errno.EISDIR
    assert rename(b"e", b"full") == errno.ENOTEMPTY
    assert rename(b"d", b"e", flags=1) == errno.EEXIST
    assert rename(b"d", b"nothing", flags=2) == errno.ENOENT
    assert rename(b"d", b"e", flags=3) == errno.EINVAL
    assert rename(b"d", b"full", flags=2) == 0  # exchange ignores emptiness and types
    assert reads.lookup(fs.proj, ROOT, R, b"d").size == 1


def test_rename_exchange_across_directories_fixes_links_and_parents(fs):
    a = fs.mkdir(R, b"a")
    b = fs.mkdir(R, b"b")
    sub = fs.mkdir(a, b"sub")
    f = fs.create(b, b"f")
    fs.ok(rename=pb.Rename(parent=a, name=b"sub", new_parent=b, new_name=b"f", flags=2))
    assert reads.lookup(fs.proj, ROOT, a, b"sub").inode == f
    assert reads.lookup(fs.proj, ROOT, b, b"f").inode == sub
    assert (reads.getattr(fs.proj, a).nlink, reads.getattr(fs.proj, b).nlink) == (2, 3)
    assert reads.lookup(fs.proj, ROOT, sub, b"..").inode == b


def test_rename_of_a_hard_link_onto_itself_changes_nothing(fs):
    f = fs.create(R, b"f")
    fs.ok(link=pb.Link(inode=f, new_parent=R, new_name=b"g"))
    before = fs.proj.content_digest()
    fs.ok(rename=pb.Rename(parent=R, name=b"f", new_parent=R, new_name=b"g"))
    assert fs.proj.content_digest() == before


def test_chown_rules_and_privilege_clearing(fs):
    f = fs.create(R, b"f", 0o777)
    fs.ok(setattr=pb.Setattr(inode=f, uid=1000, gid=1000, mode=0o6755))
    assert err(fs.do(ALICE, setattr=pb.Setattr(inode=f, uid=1001))) == errno.EPERM
    assert err(fs.do(ALICE, setattr=pb.Setattr(inode=f, gid=1001))) == errno.EPERM
    assert err(fs.do(BOB, setattr=pb.Setattr(inode=f, uid=1000))) == errno.EPERM
    attr = fs.ok(ALICE, setattr=pb.Setattr(inode=f, gid=1000))
    assert attr.mode & 0o7777 == 0o755  # setuid and setgid (group-executable) cleared


def test_chmod_by_non_member_drops_setgid_and_needs_ownership(fs):
    f = fs.create(R, b"f")
    fs.ok(setattr=pb.Setattr(inode=f, uid=1000, gid=5000))
    assert fs.ok(ALICE, setattr=pb.Setattr(inode=f, mode=0o2755)).mode & 0o7777 == 0o755
    assert err(fs.do(BOB, setattr=pb.Setattr(inode=f, mode=0o777))) == errno.EPERM


def test_truncate_by_non_root_clears_setuid_and_sets_times(fs):
    f = fs.create(R, b"f", 0o777)
    fs.ok(setattr=pb.Setattr(inode=f, mode=0o4777))
    attr = fs.ok(ALICE, setattr=pb.Setattr(inode=f, size=10))
    assert attr.mode & 0o7777 == 0o777
    assert attr.mtime_ns == attr.ctime_ns == fs.time_ns and attr.size == 10
    assert err(fs.do(setattr=pb.Setattr(inode=R, size=1))) == errno.EISDIR


def test_truncate_needs_write_unless_via_an_open_handle(fs):
    f = fs.create(R, b"f", 0o644)
    fs.ok(setattr=pb.Setattr(inode=f, uid=1000))
    fs.ok(ALICE, setattr=pb.Setattr(inode=f, mode=0o444))
    assert err(fs.do(ALICE, setattr=pb.Setattr(inode=f, size=0))) == errno.EACCES
    assert err(fs.do(ALICE, setattr=pb.Setattr(inode=f, size=0, via_handle=True))) == 0


def test_times_now_needs_write_and_explicit_times_need_ownership(fs):
    f = fs.create(R, b"f", 0o666)
    now = pb.TimeUpdate(now=True)
    assert err(fs.do(ALICE, setattr=pb.Setattr(inode=f, atime=now, mtime=now))) == 0
    assert err(fs.do(ALICE, setattr=pb.Setattr(inode=f, mtime=now))) == errno.EPERM
    explicit = pb.TimeUpdate(ns=-5 * 10**9)
    assert err(fs.do(ALICE, setattr=pb.Setattr(inode=f, mtime=explicit))) == errno.EPERM
    far = pb.TimeUpdate(ns=2**62)
    attr = fs.ok(setattr=pb.Setattr(inode=f, atime=explicit, mtime=far))
    assert (attr.atime_ns, attr.mtime_ns) == (-5 * 10**9, 2**62)
    g = fs.create(R, b"g", 0o644)
    assert err(fs.do(ALICE, setattr=pb.Setattr(inode=g, atime=now, mtime=now))) == errno.EACCES


def test_xattr_flags_namespaces_and_permissions(fs):
    f = fs.create(R, b"f", 0o644)

    def setx(name, flags=0, caller=ROOT, value=b"v"):
        return err(fs.do(caller, setxattr=pb.Setxattr(inode=f, name=name, value=value,
                                                      flags=flags)))
    assert setx(b"user.a", flags=2) == errno.ENODATA
    assert setx(b"user.a", flags=1) == 0
    assert setx(b"user.a", flags=1) == errno.EEXIST
    assert setx(b"user.a", flags=2, value=b"w") == 0
    assert setx(b"other.a") == errno.EOPNOTSUPP
    assert setx(b"user.") == setx(b"trusted.", flags=1) == errno.EINVAL
    assert setx(b"user.b", caller=ALICE) == errno.EACCES
    assert setx(b"trusted.t", caller=ALICE) == errno.EPERM
    assert setx(b"trusted.t") == 0
    assert setx(b"user.big", value=b"x" * 65537) == errno.E2BIG
    assert reads.getxattr(fs.proj, ALICE, f, b"user.a") == b"w"
    assert reads.listxattr(fs.proj, ALICE, f) == [b"user.a"]
    assert sorted(reads.listxattr(fs.proj, ROOT, f)) == [b"trusted.t", b"user.a"]
    fs.ok(removexattr=pb.Removexattr(inode=f, name=b"user.a"))
    assert err(fs.do(removexattr=pb.Removexattr(inode=f, name=b"user.a"))) == errno.ENODATA


def test_mknod_types_and_devices(fs):
    def mknod(name, mode, caller=ROOT):
        return fs.do(caller, mknod=pb.Mknod(parent=R, name=name, mode=mode, rdev=0x0103))
    assert mknod(b"fifo", stat.S_IFIFO | 0o644).attr.rdev == 0
    assert mknod(b"null", stat.S_IFCHR | 0o666).attr.rdev == 0x0103
    assert err(mknod(b"dir", stat.S_IFDIR | 0o755)) == errno.EPERM
    assert err(mknod(b"bad", 0o170000 | 0o644)) == errno.EINVAL
    d = fs.mkdir(R, b"d", 0o777)
    dev = fs.do(ALICE, mknod=pb.Mknod(parent=d, name=b"sda", mode=stat.S_IFBLK | 0o600))
    assert err(dev) == errno.EPERM


def test_symlink_targets(fs):
    assert err(fs.do(symlink=pb.Symlink(parent=R, name=b"l", target=b""))) == errno.ENOENT
    long = b"x" * 4096
    assert err(fs.do(symlink=pb.Symlink(parent=R, name=b"l", target=long))) == \
        errno.ENAMETOOLONG
    attr = fs.ok(symlink=pb.Symlink(parent=R, name=b"l", target=b"x" * 4095))
    assert reads.readlink(fs.proj, attr.inode) == b"x" * 4095 and attr.size == 4095


def test_create_without_exclusive_returns_the_existing_file(fs):
    f = fs.create(R, b"f")
    again = fs.do(create=pb.Create(parent=R, name=b"f", mode=0o600))
    assert again.errno == 0 and again.attr.inode == f
    assert err(fs.do(create=pb.Create(parent=R, name=b"f", exclusive=True))) == errno.EEXIST
    assert err(fs.do(create=pb.Create(parent=R, name=b"f2", mode=0o644,
                                      exclusive=True))) == 0


def test_search_permission_guards_lookups_and_creates(fs):
    d = fs.mkdir(R, b"private", 0o700)
    fs.create(d, b"f")
    with pytest.raises(FsError) as exc:
        reads.lookup(fs.proj, ALICE, d, b"f")
    assert exc.value.errno == errno.EACCES
    assert err(fs.do(ALICE, create=pb.Create(parent=d, name=b"g"))) == errno.EACCES
    with pytest.raises(FsError) as exc:
        reads.readdir(fs.proj, ALICE, d)
    assert exc.value.errno == errno.EACCES


def test_a_writer_who_is_not_the_owner_may_only_drop_set_id_bits(fs):
    f = fs.create(R, b"setid", 0o6777)
    fs.ok(setattr=pb.Setattr(inode=f, mode=0o6777))          # root sets both bits
    assert fs.do(ALICE, setattr=pb.Setattr(inode=f, mode=0o0777)).errno == 0
    assert reads.getattr(fs.proj, f).mode & 0o7777 == 0o777
    assert fs.do(ALICE, setattr=pb.Setattr(inode=f, mode=0o0775)).errno == errno.EPERM
