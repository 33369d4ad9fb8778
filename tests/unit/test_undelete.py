"""Subtree undelete against real projections: the past in one, the live cluster in
another (commands through the fold, reads through the metadata nodes' read code)."""

import asyncio
import errno
import stat

import pytest

from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError
from services.common.posix.records import CHUNK_SIZE
from services.logship.undelete import UndeleteError, past_tree, undelete
from services.metadata.api import answer
from tests.conftest import Fs
from tests.unit.test_open_files_and_chunks import Client

R = 1


class LocalCluster:
    """What undelete needs of a MetadataClient, over a projection. It can fail after
    `fail_after` commands (the cluster went away) and forget chunks (not retained)."""

    def __init__(self, fs: Fs, fail_after: int | None = None, retained: bool = True):
        self.fs, self.left, self.retained = fs, fail_after, retained

    async def mutate(self, caller, **op) -> pb.Result:
        if self.left is not None:
            if self.left == 0:
                raise FsError(errno.EIO, "the cluster went away")
            self.left -= 1
        result = self.fs.do(caller, **op)
        if result.errno:
            raise FsError(result.errno, result.message)
        return result

    async def read(self, caller, **op) -> mpb.Reply:
        if "locate_chunk_id" in op:
            wanted = op["locate_chunk_id"]
            return mpb.Reply(locations=[mpb.ChunkLocation(address="cs:1", version=wanted.version)]
                             if self.retained else [])
        reply = mpb.Reply()
        answer(self.fs.proj, mpb.Request(caller=caller, **op), reply)
        return reply


def history(fs: Fs, remove: bool) -> None:
    """A project tree with contents, links and xattrs; `remove`: then rm -rf it."""
    proj = fs.mkdir(R, b"proj", 0o750)
    sub = fs.mkdir(proj, b"sub")
    c = Client(fs)
    for name, chunks, end in ((b"big", 2, CHUNK_SIZE + 9), (b"small", 1, 5)):
        f = fs.create(sub, name, 0o640)
        c.do(open=pb.Open(inode=f, flags=2))
        for i in range(chunks):
            made = c.do(begin_write=pb.BeginWrite(inode=f, chunk_index=i)).chunk
            c.do(commit_write=pb.CommitWrite(inode=f, chunk_index=i, chunk_id=made.id,
                                             version=made.version, end=end))
        c.do(release=pb.Release(inode=f))
    fs.ok(link=pb.Link(inode=f, new_parent=proj, new_name=b"hard"))
    fs.ok(symlink=pb.Symlink(parent=proj, name=b"link", target=b"sub/big"))
    fs.create(proj, b"empty")
    fs.ok(mknod=pb.Mknod(parent=proj, name=b"fifo", mode=stat.S_IFIFO | 0o600))
    fs.ok(setxattr=pb.Setxattr(inode=f, name=b"user.tag", value=b"v"))
    fs.ok(setattr=pb.Setattr(inode=f, uid=1000, gid=1000,
                             mtime=pb.TimeUpdate(ns=1_600_000_000 * 10**9)))
    if remove:
        for name in (b"big", b"small"):
            fs.ok(unlink=pb.Unlink(parent=sub, name=name))
        fs.ok(rmdir=pb.Rmdir(parent=proj, name=b"sub"))
        for name in (b"hard", b"link", b"empty", b"fifo"):
            fs.ok(unlink=pb.Unlink(parent=proj, name=name))
        fs.ok(rmdir=pb.Rmdir(parent=R, name=b"proj"))


def seen(view, path: str) -> list:
    """What a user sees of a tree: no inode numbers, but which names share one."""
    nodes = past_tree(view, path)
    first = {}
    return [(n.path, n.attr.mode, n.attr.uid, n.attr.gid, n.attr.size, n.attr.mtime_ns,
             n.attr.atime_ns, n.target, n.xattrs, [(c.index, c.id, c.version) for c in n.chunks],
             first.setdefault(n.attr.inode, n.path)) for n in nodes]


@pytest.fixture
def places(tmp_path):
    past, live = Fs(tmp_path / "past"), Fs(tmp_path / "live")
    history(past, remove=False)
    history(live, remove=True)
    yield past, live
    past.proj.close()
    live.proj.close()


def run(past, cluster, into="/back"):
    return asyncio.run(undelete(past.proj, cluster, "/proj", into))


def test_the_subtree_comes_back_as_it_was(places):
    past, live = places
    summary = run(past, LocalCluster(live))
    assert (summary["nodes"], summary["chunks"], summary["resumed"]) == (8, 3, False)
    assert seen(live.proj, "/back") == seen(past.proj, "/proj")


@pytest.mark.parametrize("fail_after", range(20))
def test_a_failed_run_leaves_no_into_and_the_same_command_finishes_it(places, fail_after):
    """A failure after each of the 20 commands in turn (the last: the final rename)."""
    past, live = places
    with pytest.raises(UndeleteError, match=r"\.back\.restoring"):
        run(past, LocalCluster(live, fail_after=fail_after))
    with pytest.raises(UndeleteError):
        past_tree(live.proj, "/back")     # never half made under its name
    assert run(past, LocalCluster(live))["resumed"] is (fail_after > 0)
    assert seen(live.proj, "/back") == seen(past.proj, "/proj")


def test_existing_into_and_lost_chunks_are_refused_before_any_change(places):
    past, live = places
    live.mkdir(R, b"taken")
    before = live.proj.content_digest()
    with pytest.raises(UndeleteError, match="/taken exists"):
        run(past, LocalCluster(live), into="/taken")
    with pytest.raises(UndeleteError, match="contents no longer retained"):
        run(past, LocalCluster(live, retained=False))
    with pytest.raises(UndeleteError, match="did not exist"):
        asyncio.run(undelete(past.proj, LocalCluster(live), "/nope", "/x"))
    assert live.proj.content_digest() == before


def test_the_same_past_cannot_be_restored_twice(places):
    """Its chunks belong to the first copy: the fold refuses a second owner."""
    past, live = places
    run(past, LocalCluster(live))
    with pytest.raises(UndeleteError, match="belongs to inode"):
        run(past, LocalCluster(live), into="/again")
