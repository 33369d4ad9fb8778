"""Opening files to read in a following region: answered from the projection with
no record (the region refuses commands of its own); opens that could change the
file are not answered this way."""

import errno
import os

import pytest

from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError
from services.metadata import region_open
from tests.conftest import ROOT

OTHER = pb.Caller(uid=1000, gid=1000)


def test_only_reading_opens_and_releases_go_unrecorded():
    def opened(flags):
        return pb.Command(open=pb.Open(inode=5, flags=flags))
    assert region_open.unrecorded(opened(os.O_RDONLY))
    assert region_open.unrecorded(opened(os.O_RDONLY | os.O_NONBLOCK))
    assert region_open.unrecorded(pb.Command(release=pb.Release(inode=5)))
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
        assert not region_open.unrecorded(opened(flags))
    assert not region_open.unrecorded(pb.Command(mkdir=pb.Mkdir(parent=1, name=b"d")))


def test_an_open_is_answered_with_the_attributes_and_the_folds_checks(fs):
    f = fs.create(1, b"f", mode=0o600)
    result = region_open.answer(fs.proj, ROOT, pb.Command(open=pb.Open(inode=f)))
    assert (result.attr.inode, result.attr.mode & 0o777) == (f, 0o600)
    with pytest.raises(FsError) as denied:          # the fold's permission check
        region_open.answer(fs.proj, OTHER, pb.Command(open=pb.Open(inode=f)))
    assert denied.value.errno == errno.EACCES
    with pytest.raises(FsError) as gone:
        region_open.answer(fs.proj, ROOT, pb.Command(open=pb.Open(inode=999)))
    assert gone.value.errno == errno.ENOENT
    assert region_open.answer(fs.proj, ROOT, pb.Command(release=pb.Release(inode=f))) \
        == pb.Result()
