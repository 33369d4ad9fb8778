"""The wire form of the core's messages (schemas/raft.proto)."""

from schemas import raft_pb2 as pb
from services.metadata.raft.messages import (
    CONFIG,
    NOOP,
    NORMAL,
    Config,
    Entry,
    Message,
    MsgType,
    SnapshotMeta,
)


class CodecError(ValueError):
    """A peer sent a message that is not a valid Raft message."""


def config_to_pb(config: Config) -> pb.Membership:
    return pb.Membership(voters=sorted(config.voters), learners=sorted(config.learners),
                         addresses=config.address_book())


def config_from_pb(m: pb.Membership) -> Config:
    return Config(frozenset(m.voters), frozenset(m.learners),
                  tuple(sorted(m.addresses.items())))


def snapshot_to_pb(meta: SnapshotMeta) -> pb.SnapshotMeta:
    return pb.SnapshotMeta(index=meta.index, term=meta.term, config=config_to_pb(meta.config))


def snapshot_from_pb(m: pb.SnapshotMeta) -> SnapshotMeta:
    return SnapshotMeta(m.index, m.term, config_from_pb(m.config))


def encode(m: Message) -> pb.RaftMessage:
    out = pb.RaftMessage(type=m.type, to=m.to, term=m.term, index=m.index,
                         log_term=m.log_term, commit=m.commit, reject=m.reject,
                         reject_hint=m.reject_hint, context=m.context)
    setattr(out, "from", m.frm)  # `from` is a Python keyword
    if m.entries:
        out.entries.extend(pb.Entry(index=e.index, term=e.term, kind=e.kind, data=e.data)
                           for e in m.entries)
    if m.snapshot is not None:
        out.snapshot.CopyFrom(snapshot_to_pb(m.snapshot))
    return out


def decode(m: pb.RaftMessage) -> Message:
    """The core's form of a wire message; CodecError if it makes no sense."""
    if m.type not in MsgType.NAMES:
        raise CodecError(f"unknown message type {m.type}")
    for e in m.entries:
        if e.kind not in (NORMAL, NOOP, CONFIG):
            raise CodecError(f"entry {e.index} has unknown kind {e.kind}")
        if e.kind == CONFIG:
            try:
                Config.decode(e.data)
            except (ValueError, KeyError, TypeError) as exc:
                raise CodecError(f"entry {e.index}: bad membership: {exc}") from exc
    if m.entries and any(e.index != m.index + 1 + i for i, e in enumerate(m.entries)):
        raise CodecError("entries are not contiguous after the previous index")
    return Message(
        m.type, getattr(m, "from"), m.to, m.term, index=m.index, log_term=m.log_term,
        entries=tuple(Entry(e.index, e.term, e.kind, e.data) for e in m.entries),
        commit=m.commit, reject=m.reject, reject_hint=m.reject_hint, context=m.context,
        snapshot=snapshot_from_pb(m.snapshot) if m.HasField("snapshot") else None)
