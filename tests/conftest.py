"""Shared fixtures: fresh projections and a tiny command builder."""

import os

import pytest
from hypothesis import settings

from schemas import namespace_pb2 as pb
from services.metadata.applier import Applier
from services.metadata.projection import open_projection

# CI runs the same examples every time (a red build means a change broke something);
# locally hypothesis keeps exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = pb.Caller(uid=0, gid=0)
ALICE = pb.Caller(uid=1000, gid=1000)
BOB = pb.Caller(uid=1001, gid=1001, groups=[1000])


class Fs:
    """A projection with an applier that numbers entries and stamps times."""

    def __init__(self, path):
        self.proj = open_projection(str(path))
        self.applier = Applier(self.proj)
        self.index = self.proj.applied_index
        self.time_ns = 1_000_000_000

    def do(self, caller=ROOT, **kwargs) -> pb.Result:
        self.index += 1
        self.time_ns += 1000
        kwargs.setdefault("time_ns", self.time_ns)
        return self.applier.apply(self.index, pb.Command(caller=caller, **kwargs))

    def ok(self, caller=ROOT, **kwargs) -> pb.Attr:
        result = self.do(caller, **kwargs)
        assert result.errno == 0, result.message
        return result.attr

    def mkdir(self, parent, name, mode=0o755, caller=ROOT) -> int:
        return self.ok(caller, mkdir=pb.Mkdir(parent=parent, name=name, mode=mode)).inode

    def create(self, parent, name, mode=0o644, caller=ROOT) -> int:
        return self.ok(caller, create=pb.Create(parent=parent, name=name, mode=mode)).inode


@pytest.fixture
def fs(tmp_path):
    f = Fs(tmp_path / "projection")
    yield f
    f.proj.close()
