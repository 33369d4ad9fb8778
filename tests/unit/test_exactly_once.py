"""Exactly once: a retried (session, seq) returns the first result and changes nothing."""

import errno

from schemas import namespace_pb2 as pb
from services.metadata.namespace import reads
from tests.conftest import ROOT

R = 1


def open_session(fs) -> int:
    result = fs.do(open_session=pb.OpenSession(client="test"))
    assert result.errno == 0 and result.session
    return result.session


def test_a_retried_create_returns_the_first_result_not_eexist(fs):
    s = open_session(fs)
    create = pb.Create(parent=R, name=b"f", mode=0o644, exclusive=True)
    first = fs.do(session=s, seq=1, create=create)
    before = fs.proj.content_digest()
    retry = fs.do(session=s, seq=1, create=create)
    assert retry == first and first.errno == 0
    assert fs.proj.content_digest() == before


def test_a_retried_rename_is_not_applied_twice(fs):
    s = open_session(fs)
    fs.create(R, b"a")
    mv = pb.Rename(parent=R, name=b"a", new_parent=R, new_name=b"b")
    assert fs.do(session=s, seq=1, rename=mv).errno == 0
    fs.create(R, b"a")  # somebody makes a new `a` before the retry arrives
    assert fs.do(session=s, seq=1, rename=mv).errno == 0
    assert reads.lookup(fs.proj, ROOT, R, b"a")  # the new `a` was not moved


def test_failed_commands_are_recorded_too(fs):
    s = open_session(fs)
    rm = pb.Rmdir(parent=R, name=b"missing")
    first = fs.do(session=s, seq=1, rmdir=rm)
    fs.mkdir(R, b"missing")
    assert fs.do(session=s, seq=1, rmdir=rm) == first and first.errno == errno.ENOENT


def test_acknowledged_results_are_forgotten_and_stale_seqs_refused(fs):
    s = open_session(fs)
    for seq in range(1, 4):
        fs.do(session=s, seq=seq, mkdir=pb.Mkdir(parent=R, name=b"d%d" % seq, mode=0o755))
    fs.do(session=s, seq=4, acked_seq=3, mkdir=pb.Mkdir(parent=R, name=b"d4", mode=0o755))
    assert list(fs.proj.scan("results", s.to_bytes(8, "big"))) != []
    assert len(list(fs.proj.scan("results", s.to_bytes(8, "big")))) == 1
    stale = fs.do(session=s, seq=2, mkdir=pb.Mkdir(parent=R, name=b"d2", mode=0o755))
    assert stale.errno == errno.EINVAL and "acknowledged" in stale.message


def test_unknown_and_closed_sessions_are_refused_clearly(fs):
    unknown = fs.do(session=99, seq=1, mkdir=pb.Mkdir(parent=R, name=b"d", mode=0o755))
    assert unknown.errno == errno.ENOTCONN and "open a new session" in unknown.message
    s = open_session(fs)
    fs.do(session=s, seq=1, mkdir=pb.Mkdir(parent=R, name=b"d", mode=0o755))
    assert fs.do(close_session=pb.CloseSession(session=s)).errno == 0
    assert list(fs.proj.scan("results", s.to_bytes(8, "big"))) == []
    again = fs.do(session=s, seq=2, mkdir=pb.Mkdir(parent=R, name=b"e", mode=0o755))
    assert again.errno == errno.ENOTCONN


def test_bad_sequence_numbers_are_refused(fs):
    s = open_session(fs)
    mk = pb.Mkdir(parent=R, name=b"d", mode=0o755)
    assert fs.do(session=s, seq=0, mkdir=mk).errno == errno.EINVAL
    assert fs.do(session=s, seq=3, acked_seq=3, mkdir=mk).errno == errno.EINVAL
