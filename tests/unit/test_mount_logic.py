"""The mount's pure parts: options, mountinfo, listing positions, attribute rules."""

import asyncio
import errno
import stat

import pytest

from fuse_client import attrs, dir_listing, fuse_hooks, mountinfo
from fuse_client.caller import parse_groups
from fuse_client.delegations import _unknown
from fuse_client.dir_pages import DirPage, DirPages
from fuse_client.metadata_client import ClusterUnavailableError, MetadataClient, _Call
from fuse_client.mount_options import MountOptionError, parse
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix import records as r


def test_our_options_are_taken_and_the_rest_go_to_fuse():
    opts = parse(["ro,attr_timeout=2.5", "entry_timeout=0,writeback_cache", "noexec"],
                 as_root=True)
    assert (opts.timeouts.attr, opts.timeouts.entry, opts.timeouts.negative) == (2.5, 0, 0)
    assert opts.writeback_cache
    assert {"ro", "noexec", "default_permissions", "allow_other", "dev", "suid"} <= opts.fuse
    assert not any(o.startswith(("attr_timeout", "writeback")) for o in opts.fuse)
    assert "allow_other" not in parse([], as_root=False).fuse
    assert opts.delegations and not parse(["no_delegations"], as_root=True).delegations


@pytest.mark.parametrize("bad", ["attr_timeout=soon", "negative_timeout=-1",
                                 "writeback_cache=1", "no_delegations=yes"])
def test_bad_options_say_what_is_wrong(bad):
    with pytest.raises(MountOptionError, match=bad.split("=")[0]):
        parse([bad], as_root=True)


def test_mountinfo_lines_with_escaped_spaces():
    text = ("36 35 0:40 / /mnt/my\\040files rw,relatime shared:1 - fuse.mooseng mooseng "
            "rw,user_id=0\n"
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    mounts = mountinfo.parse(text)
    assert mounts[0] == mountinfo.Mount("/mnt/my files", "0:40", "fuse.mooseng", "mooseng")
    assert mounts[1].fstype == "ext4"


def test_listing_positions_resume_after_dots_and_entries():
    assert dir_listing.dots_from(0) == [b".", b".."]
    assert dir_listing.dots_from(dir_listing.DOT) == [b".."]
    assert dir_listing.dots_from(dir_listing.DOTDOT) == []
    assert dir_listing.cookie_at(dir_listing.position(77)) == 77
    page = [mpb.DirEntry(name=b"a", cookie=10), mpb.DirEntry(name=b"b", cookie=20)]
    cookies = [10, 20]
    assert dir_listing.rest_of_page(page, cookies, 0, 0) == 0
    assert page[dir_listing.rest_of_page(page, cookies, 0, 10)].name == b"b"
    assert dir_listing.rest_of_page(page, cookies, 0, 20) is None   # used up: ask again
    assert dir_listing.rest_of_page(page, cookies, 0, 15) is None
    # a page that runs to the end of the directory (a local listing): nothing after it
    assert dir_listing.rest_of_page(page, cookies, 0, 20, last=True) == 2
    assert dir_listing.rest_of_page([], [], 0, 0, last=True) == 0


def test_a_listing_known_here_is_in_the_masters_order_with_its_cookies():
    entries = [(bytes([65 + i]) * 3, pb.Attr(inode=i + 2)) for i in range(50)]
    listed = dir_listing.in_master_order(entries)
    cookies = [e.cookie for e in listed]
    assert cookies == sorted(cookies) and len(listed) == 50
    assert [e.cookie for e in listed] == [r.name_hash(e.name) + 1 for e in listed]
    after = dir_listing.in_master_order(entries, cookies[20])   # resumes after entry 20
    assert [e.name for e in after] == [e.name for e in listed[21:]]


def _page(entries: int) -> DirPage:
    listed = [mpb.DirEntry(name=b"%d" % i, cookie=i + 1) for i in range(entries)]
    return DirPage(listed, [e.cookie for e in listed], 0, 0, last=True)


def test_kept_listing_pages_are_bounded_by_entries_oldest_first():
    pages = DirPages(limit=100)
    pages.put(1, _page(40))
    pages.put(2, _page(40))
    pages.put(1, _page(10))           # read again: the newest, and counted once
    pages.put(3, _page(40))           # 10 + 40 + 40 fit; 2 is now the oldest
    assert [pages.get(i) is not None for i in (1, 2, 3)] == [True, True, True]
    pages.put(4, _page(30))           # over 100: the oldest (2) goes
    assert pages.get(2) is None and len(pages.get(4).entries) == 30
    pages.put(5, _page(500))          # bigger than the limit: kept alone while read
    assert pages.get(5) is not None and all(pages.get(i) is None for i in (1, 3, 4))


@pytest.mark.parametrize("release, version", [
    ("6.1.0-18-amd64", (6, 1)), ("5.1.21", (5, 1)), ("4.19.0", (4, 19)),
    ("5.10rc3", (5, 10)), ("garbage", (0, 0)), ("", (0, 0))])
def test_the_kernel_release_decides_zero_message_opendir(release, version):
    assert fuse_hooks.kernel_release(release) == version
    assert (version >= fuse_hooks.ZERO_MESSAGE_OPENDIR) == (version >= (5, 1))


class Fields:
    """pyfuse3.SetattrFields can only be made by pyfuse3; this has its attributes."""
    def __init__(self, **given):
        for name in ("atime", "mtime", "ctime", "mode", "uid", "gid", "size"):
            setattr(self, f"update_{name}", given.get(name, False))


def test_setattr_translation():
    new = attrs.entry(pb.Attr(inode=5, mode=stat.S_IFREG | 0o640, size=10, atime_ns=-3,
                              mtime_ns=1 << 62), attrs.Timeouts())
    op = attrs.setattr_command(5, new, Fields(mode=True, atime=True, mtime=True), False,
                               times_are_now=False)
    assert (op.mode, op.atime.ns, op.mtime.ns) == (0o640, -3, 1 << 62)
    touch = attrs.setattr_command(5, new, Fields(atime=True, mtime=True), False, True)
    assert touch.atime.now and touch.mtime.now
    cut = attrs.setattr_command(5, new, Fields(size=True, mtime=True, ctime=True), True, False)
    assert cut.size == 10 and cut.via_handle and not cut.HasField("mtime")
    assert attrs.setattr_command(5, new, Fields(ctime=True), False, False) is None
    assert attrs.is_time_flush(Fields(mtime=True, ctime=True), has_handle=True)
    assert not attrs.is_time_flush(Fields(mtime=True), has_handle=False)


def test_uncommitted_writes_show_in_size_and_times():
    attr = pb.Attr(inode=5, mode=stat.S_IFREG | 0o644, size=10, mtime_ns=100, ctime_ns=100)
    shown = attrs.entry(attr, attrs.Timeouts(), size=4096, written_ns=500)
    assert (shown.st_size, shown.st_mtime_ns, shown.st_ctime_ns) == (4096, 500, 500)
    assert shown.st_blocks == 8


def test_statfs_size_is_used_plus_free():
    out = attrs.statvfs(attrs.Space(used_bytes=3 << 16, free_bytes=7 << 16, inodes=9,
                                    name_max=255))
    assert (out.f_blocks, out.f_bfree, out.f_bavail) == (10, 7, 7)
    assert out.f_namemax == 255


def test_groups_from_proc_status():
    assert parse_groups("Name:\tx\nGroups:\t4 24 1000 \nNSpid:\t1\n") == [4, 24, 1000]
    assert parse_groups("Groups:\t\n") == []


# -- what the kernel was told (kernel_cache.py) ------------------------------------------

def test_an_answer_overtaken_by_an_invalidation_is_not_cached():
    from fuse_client.kernel_cache import KernelCache
    kernel = KernelCache()
    since = kernel.epoch
    assert kernel.fresh_since(since)
    kernel.changed()                       # a push arrived while the request was out
    assert not kernel.fresh_since(since)
    assert kernel.fresh_since(kernel.epoch)


def test_forgotten_entries_are_not_taken_back_and_held_ones_are():
    from fuse_client.kernel_cache import KernelCache
    kernel = KernelCache()
    kernel.told(10, 1, b"a")
    kernel.told(10, 1, b"a")               # looked up twice: count 2
    kernel.told(11, 1, b"b")
    kernel.told(12, 0, b"")                # no name known (e.g. a readdir of "..")
    kernel.forgotten(10, 1)
    kernel.forgotten(11, 1)
    epoch = kernel.epoch
    names, inodes = kernel.everything()
    assert sorted(inodes) == [10, 12]
    assert names == [(1, b"a")]
    assert kernel.epoch != epoch            # answers in flight now are not cached
    kernel.forgotten(10, 1)
    kernel.forgotten(12, 5)
    assert len(kernel) == 0


def test_default_timeouts_are_long_and_overtaken_answers_get_none():
    opts = parse([], as_root=False)
    assert opts.timeouts.attr >= 30 and opts.timeouts.entry >= 30
    shown = attrs.entry(pb.Attr(inode=5, mode=0o100644), attrs.NO_CACHE)
    assert shown.attr_timeout == 0 and shown.entry_timeout == 0


def test_a_closed_session_fails_a_request_of_unknown_outcome_instead_of_redoing_it():
    """A request sent again after a reconnect may have been applied the first time; if
    the reply to the copy says the session was closed meanwhile, a new session must not
    do it again: EIO. A request sent once was refused before anything was applied: its
    ENOTCONN stands, and the client redoes it in a new session (mutate_reply)."""
    async def scenario():
        md = MetadataClient(["127.0.0.1:1"])
        loop = asyncio.get_running_loop()
        futures = {}
        for ident, resent in ((1, True), (2, False)):
            request = mpb.Request(id=ident, session=7, seq=ident,
                                  mutation=pb.Command(mkdir=pb.Mkdir(parent=1, name=b"d")))
            call = md._calls[ident] = _Call(request, loop.create_future(), 1e18)
            call.resent = resent
            futures[ident] = call.future
        closed = [mpb.Reply(id=i, errno=errno.ENOTCONN, message="session 7 is not open")
                  for i in (1, 2)]
        assert md._take(closed)
        assert futures[1].result().errno == errno.EIO
        assert "may or may not have been applied" in futures[1].result().message
        assert futures[2].result().errno == errno.ENOTCONN
    asyncio.run(scenario())


def test_a_change_answered_here_that_is_in_doubt_is_not_called_failed():
    """The log of a create the mount answered tells a refusal (it was not made) from
    a doubt (no leader in time, or the session closed meanwhile: it may exist)."""
    async def outcomes():
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(3)]
        futures[0].set_exception(ClusterUnavailableError("no leader within 60 s"))
        futures[1].set_result(mpb.Reply(errno=errno.EIO, message="outcome unknown"))
        futures[2].set_result(mpb.Reply(errno=errno.EEXIST, message="exists"))
        return [_unknown(f) for f in futures]
    assert asyncio.run(outcomes()) == [True, True, False]
