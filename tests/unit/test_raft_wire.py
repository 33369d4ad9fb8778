"""What arrives from peers is checked before the core sees it."""

import pytest

from schemas import raft_pb2 as pb
from services.metadata.raft import codec
from services.metadata.raft.messages import CONFIG, Config, Entry, Message, MsgType, SnapshotMeta
from services.metadata.raft.transport import _plain_file_name


def test_a_message_survives_the_wire():
    m = Message(MsgType.APP, 1, 2, 5, index=7, log_term=4,
                entries=(Entry(8, 5, 0, b"x"), Entry(9, 5, CONFIG,
                                                    Config(frozenset({1, 2})).encode())),
                commit=6, context=b"c",
                snapshot=SnapshotMeta(3, 2, Config(frozenset({1}), frozenset({4}),
                                                   ((4, "h:1"),))))
    back = codec.decode(pb.RaftMessage.FromString(codec.encode(m).SerializeToString()))
    assert back == m


@pytest.mark.parametrize("raw, problem", [
    (pb.RaftMessage(type=99), "unknown message type"),
    (pb.RaftMessage(type=MsgType.APP, entries=[pb.Entry(index=1, kind=7)]), "unknown kind"),
    (pb.RaftMessage(type=MsgType.APP, entries=[pb.Entry(index=1, kind=CONFIG, data=b"{")]),
     "bad membership"),
    (pb.RaftMessage(type=MsgType.APP, index=3, entries=[pb.Entry(index=9)]), "contiguous"),
])
def test_nonsense_from_a_peer_is_refused(raw, problem):
    with pytest.raises(codec.CodecError, match=problem):
        codec.decode(raw)


@pytest.mark.parametrize("name, ok", [("000012.sst", True), ("CURRENT", True),
                                      ("../etc/passwd", False), ("..", False), ("", False),
                                      ("a/b", False)])
def test_snapshot_file_names_stay_in_their_folder(name, ok):
    assert _plain_file_name(name) == ok
