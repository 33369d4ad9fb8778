"""Replay is deterministic: the same log always folds to the same bytes.

Random logs (valid and invalid commands from several users) are folded twice,
and as snapshot (a RocksDB checkpoint) + suffix; projections and running digests
must be identical.
"""

import os
import stat
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import namespace_pb2 as pb
from services.metadata.applier import Applier
from services.metadata.projection import open_projection

inodes = st.integers(min_value=1, max_value=14)
names = st.sampled_from([b"a", b"b", b"c", b"dir", b"x" * 255, b"", b"bad/name", b".."])
modes = st.sampled_from([0o755, 0o700, 0o1777, 0o2775, 0o644, 0o4755, 0o000])
callers = st.sampled_from([pb.Caller(uid=0, gid=0), pb.Caller(uid=1000, gid=1000, umask=0o22),
                           pb.Caller(uid=1001, gid=1001, groups=[1000], umask=0o77)])
times = st.one_of(st.none(), st.builds(pb.TimeUpdate, now=st.booleans(),
                                       ns=st.integers(-2**62, 2**62)))


def _setattr(ino, mode, uid, size, atime, mtime):
    op = pb.Setattr(inode=ino)
    for field, value in (("mode", mode), ("uid", uid), ("size", size)):
        if value is not None:
            setattr(op, field, value)
    if atime is not None:
        op.atime.CopyFrom(atime)
    if mtime is not None:
        op.mtime.CopyFrom(mtime)
    return op


ops = st.one_of(
    st.builds(lambda p, n, m: {"mkdir": pb.Mkdir(parent=p, name=n, mode=m)}, inodes, names, modes),
    st.builds(lambda p, n, m, x: {"create": pb.Create(parent=p, name=n, mode=m, exclusive=x)},
              inodes, names, modes, st.booleans()),
    st.builds(lambda p, n, t: {"mknod": pb.Mknod(parent=p, name=n, mode=t | 0o644, rdev=7)},
              inodes, names, st.sampled_from([stat.S_IFIFO, stat.S_IFCHR, stat.S_IFSOCK, 0])),
    st.builds(lambda p, n: {"symlink": pb.Symlink(parent=p, name=n, target=b"t")},
              inodes, names),
    st.builds(lambda i, p, n: {"link": pb.Link(inode=i, new_parent=p, new_name=n)},
              inodes, inodes, names),
    st.builds(lambda p, n: {"unlink": pb.Unlink(parent=p, name=n)}, inodes, names),
    st.builds(lambda p, n: {"rmdir": pb.Rmdir(parent=p, name=n)}, inodes, names),
    st.builds(lambda p, n, q, m, f: {"rename": pb.Rename(parent=p, name=n, new_parent=q,
                                                         new_name=m, flags=f)},
              inodes, names, inodes, names, st.sampled_from([0, 0, 1, 2])),
    st.builds(lambda *a: {"setattr": _setattr(*a)}, inodes, st.one_of(st.none(), modes),
              st.one_of(st.none(), st.sampled_from([0, 1000, 1001])),
              st.one_of(st.none(), st.integers(0, 1 << 40)), times, times),
    st.builds(lambda i, n, f: {"setxattr": pb.Setxattr(inode=i, name=n, value=b"v", flags=f)},
              inodes, st.sampled_from([b"user.a", b"trusted.b", b"user.c"]),
              st.sampled_from([0, 1, 2])),
    st.builds(lambda i: {"removexattr": pb.Removexattr(inode=i, name=b"user.a")}, inodes),
)


@st.composite
def logs(draw):
    entries = draw(st.lists(st.tuples(callers, ops), min_size=1, max_size=80))
    return [pb.Command(time_ns=1000 * (i + 1), caller=c, **op).SerializeToString()
            for i, (c, op) in enumerate(entries)]


def fold_into(path, log, start=1):
    with open_projection(path) as proj:
        Applier(proj).apply_many([(start + i, data) for i, data in enumerate(log)])
        return proj.content_digest(), proj.applied_digest, proj.applied_index


@settings(max_examples=100, deadline=None)
@given(log=logs())
def test_the_same_log_folds_to_the_same_projection(log):
    with tempfile.TemporaryDirectory() as tmp:
        first = fold_into(os.path.join(tmp, "one"), log)
        second = fold_into(os.path.join(tmp, "two"), log)
    assert first == second


@settings(max_examples=100, deadline=None)
@given(log=logs(), cut=st.floats(0, 1))
def test_snapshot_plus_suffix_equals_the_whole_log(log, cut):
    k = int(len(log) * cut)
    with tempfile.TemporaryDirectory() as tmp:
        whole = fold_into(os.path.join(tmp, "whole"), log)
        with open_projection(os.path.join(tmp, "live")) as live:
            Applier(live).apply_many([(i + 1, data) for i, data in enumerate(log[:k])])
            live.checkpoint(os.path.join(tmp, "snapshot"))
        resumed = fold_into(os.path.join(tmp, "snapshot"), log[k:], start=k + 1)
    assert resumed == whole
