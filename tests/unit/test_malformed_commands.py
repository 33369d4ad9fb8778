"""Commands that are malformed get a clear error result and leave the namespace as it was."""

import errno

import pytest

from schemas import namespace_pb2 as pb
from services.metadata.applier import ApplyError

R = 1


def apply_bytes(fs, data: bytes) -> pb.Result:
    fs.index += 1
    return fs.applier.apply(fs.index, data)


@pytest.mark.parametrize("data", [
    b"\xff\xff\xff",                       # not protobuf at all
    b"\x0a\x05abc",                        # a length that runs past the end
    pb.Command(time_ns=1).SerializeToString(),            # no operation
    b"\xfa\x3f\x00",                       # an operation from the future (unknown field)
])
def test_garbage_and_unknown_operations(fs, data):
    fs.mkdir(R, b"keep")
    before = fs.proj.content_digest()
    result = apply_bytes(fs, data)
    assert result.errno == errno.EINVAL and result.message
    assert fs.proj.content_digest() == before
    assert fs.proj.applied_index == fs.index  # the log position still advances


@pytest.mark.parametrize("op", [
    {"mkdir": pb.Mkdir(name=b"x", mode=0o755)},                      # no parent
    {"create": pb.Create(parent=R)},                                 # no name
    {"link": pb.Link(new_parent=R, new_name=b"l")},                  # no inode
    {"rename": pb.Rename(parent=R, name=b"a")},                      # no destination
    {"setattr": pb.Setattr(mode=0o644)},                             # no inode
    {"setxattr": pb.Setxattr(inode=R)},                              # no name
    {"symlink": pb.Symlink(parent=R, name=b"s")},                    # no target
    {"mknod": pb.Mknod(parent=12345, name=b"n", mode=0o10644)},      # missing parent
])
def test_missing_fields(fs, op):
    before = fs.proj.content_digest()
    result = fs.do(**op)
    assert result.errno in (errno.EINVAL, errno.ENOENT, errno.ERANGE) and result.message
    assert fs.proj.content_digest() == before


def test_entries_must_come_in_order(fs):
    fs.mkdir(R, b"a")
    with pytest.raises(ApplyError, match="gap"):
        fs.applier.apply(fs.index + 2, pb.Command(mkdir=pb.Mkdir(parent=R, name=b"b")))


def test_entries_already_applied_are_skipped(fs):
    fs.mkdir(R, b"a")
    before = fs.proj.content_digest()
    assert fs.applier.apply(fs.index, pb.Command(mkdir=pb.Mkdir(parent=R, name=b"z"))) is None
    assert fs.proj.content_digest() == before


def test_a_bug_in_the_fold_fails_one_command_not_the_log(fs, monkeypatch):
    """A command that trips a mistake in the fold (here a KeyError halfway through a
    mkdir, after it wrote) is an EIO result that changed nothing, on every replica
    alike; the next commands apply as usual."""
    from services.metadata.namespace import fold

    fs.mkdir(R, b"keep")
    before = fs.proj.content_digest()
    real = fold.SESSION_OPERATIONS["mkdir"]

    def broken(ns, op, session):
        real(ns, op, session)         # writes the new directory, then fails
        raise KeyError("a bug")
    monkeypatch.setitem(fold.SESSION_OPERATIONS, "mkdir", broken)
    result = fs.do(mkdir=pb.Mkdir(parent=R, name=b"new", mode=0o755))
    assert result.errno == errno.EIO and "KeyError" in result.message
    assert fs.proj.content_digest() == before
    monkeypatch.setitem(fold.SESSION_OPERATIONS, "mkdir", real)
    assert fs.mkdir(R, b"new")
