"""The fold's part of a second region: region B folds region A's shipped commands,
records how far it got, and refuses everything else until it is promoted.

Pure, like the fold: it reads the projection (through a Txn) and the command. The
shipped position is written in the same Txn as the shipped commands, so B's
projection always says exactly which of A's entries it holds: a shipper (or B)
restarting resumes after it, never twice, never with a hole.
"""

import errno
import struct
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from schemas import namespace_pb2 as pb
from services.common.posix import records as r

STATE = b"region_state"        # absent: a primary that never followed anyone
SHIPPED = b"region_shipped"    # A's index, term, command time, commit seen
PROMOTED = b"region_promoted"  # time of the promotion
FOLLOWING, PRIMARY = b"following", b"promoted"
REGION_KEYS = (STATE, SHIPPED, PROMOTED)   # B's own bookkeeping: A has none of them
_POSITION = struct.Struct(">QQqQ")
REGION_OPS = ("ship_entries", "promote_region")


@dataclass(frozen=True)
class Position:
    index: int = 0          # the last of A's entries held
    term: int = 0
    time_ns: int = 0        # A's stamp on the last shipped command
    source_commit: int = 0  # A's commit index when the last batch was read


@dataclass(frozen=True)
class RegionState:
    following: bool
    promoted: bool
    position: Position
    promoted_time_ns: int = 0


def read_state(view) -> RegionState:
    """`view`: a Projection or a Txn (anything with get(cf, key))."""
    state = view.get(r.META, STATE)
    shipped = view.get(r.META, SHIPPED)
    promoted = view.get(r.META, PROMOTED)
    return RegionState(following=state == FOLLOWING, promoted=state == PRIMARY,
                       position=Position(*_POSITION.unpack(shipped)) if shipped else Position(),
                       promoted_time_ns=struct.unpack(">q", promoted)[0] if promoted else 0)


def position_record(position: Position) -> bytes:
    """The SHIPPED value for `position` (a seeded region starts at one)."""
    return _POSITION.pack(position.index, position.term, position.time_ns,
                          position.source_commit)


def following(view) -> bool:
    return view.get(r.META, STATE) == FOLLOWING


FOLLOWING_MESSAGE = ("this region follows another region's log and is read-only; write "
                     "in the primary region, or promote this one with `mooseng region "
                     "promote`")


def gate(txn, cmd: pb.Command, fold_local: Callable) -> pb.Result | None:
    """The result of a region command, or of a command a following region refuses;
    None when the command is the fold's ordinary business."""
    kind = cmd.WhichOneof("op")
    if kind == "ship_entries":
        return _ship(txn, cmd.ship_entries, fold_local)
    if kind == "promote_region":
        return _promote(txn, cmd)
    if kind is not None and following(txn):
        return _error(errno.EROFS, f"{kind}: {FOLLOWING_MESSAGE}")
    return None


def _promote(txn, cmd: pb.Command) -> pb.Result:
    if txn.get(r.META, STATE) == PRIMARY:
        return _error(errno.EALREADY, "this region was already promoted to a primary")
    txn.put(r.META, STATE, PRIMARY)
    txn.put(r.META, PROMOTED, struct.pack(">q", cmd.time_ns))
    return pb.Result(message="promoted: shipped entries are refused from now on")


def _ship(txn, op: pb.ShipEntries, fold_local: Callable) -> pb.Result:
    if txn.get(r.META, STATE) == PRIMARY:
        return _error(errno.EROFS, "this region was promoted to a primary: entries shipped "
                                   "from the old primary are refused (fenced)")
    if txn.get(r.META, STATE) is None and not _fresh(txn):
        return _error(errno.ENOTEMPTY, "this cluster has a namespace of its own (inodes, "
                                       "sessions or chunks were made here): a second "
                                       "region must start empty, with --region-follower")
    held = read_state(txn).position
    problem = check_continues(held, op)
    if problem:
        return _error(errno.EINVAL, problem)
    fresh = [e for e in op.entries if e.index > held.index]
    if not fresh:
        return pb.Result(message=f"already held: nothing after index {held.index}")
    commands = []
    for e in fresh:
        command = _parse(e)
        if isinstance(command, pb.Result):
            return command
        commands.append(command)
    time_ns = held.time_ns
    for command in commands:
        if command is not None:
            fold_local(txn, command)   # its result was A's to give; B holds the state
            time_ns = command.time_ns
    last = fresh[-1]
    txn.put(r.META, SHIPPED, _POSITION.pack(last.index, last.term, time_ns,
                                            max(op.source_commit, last.index)))
    txn.put(r.META, STATE, FOLLOWING)
    return pb.Result(message=f"shipped entries {fresh[0].index}..{last.index}")


def _fresh(txn) -> bool:
    """Nothing was ever made here: the counters are where a new projection has them."""
    return (r.from_u64(txn.get(r.META, b"next_inode")) <= 2
            and r.from_u64(txn.get(r.META, b"next_session")) <= 1
            and r.from_u64(txn.get(r.META, b"next_chunk")) <= 1)


def check_continues(held: Position, op: pb.ShipEntries) -> str:
    """Why `op` cannot be applied after `held` ("" if it can). Entries B already
    holds may be sent again (a shipper that restarted); a hole never passes."""
    index, term = op.prev_index, op.prev_term
    if index > held.index:
        return (f"gap: the batch continues region A's entry {index}, but this region "
                f"holds entries up to {held.index} only")
    for e in op.entries:
        if e.index != index + 1:
            return f"gap: entry {e.index} follows entry {index} in the batch"
        if e.term < term:
            return f"entry {e.index} has term {e.term}, below the term {term} before it"
        if index == held.index and held.index and term != held.term:
            return (f"region A's entry {index} has term {term} in the batch but "
                    f"{held.term} here: the histories differ; re-seed this region")
        index, term = e.index, e.term
    return ""


def _parse(entry: pb.ShippedEntry) -> pb.Command | pb.Result | None:
    if not entry.command:
        return None
    try:
        command = pb.Command.FromString(entry.command)
    except DecodeError as exc:
        return _error(errno.EINVAL, f"region A's entry {entry.index} does not parse: {exc}")
    if command.WhichOneof("op") in REGION_OPS:
        return _error(errno.EINVAL, f"region A's entry {entry.index} is itself a region "
                                    "command (A was a second region): following a promoted "
                                    "region from before its promotion is not supported")
    return command


def _error(code: int, message: str) -> pb.Result:
    return pb.Result(errno=code, message=message)


def refuses_clients(view, region_follower: bool) -> bool:
    """Client writes are refused while this region follows region A's log: once
    anything was shipped, or from the start on a node run with --region-follower (so
    nothing of B's own slips in before the shipper's first batch), until promoted."""
    state = view.get(r.META, STATE)
    return state == FOLLOWING or (region_follower and state != PRIMARY)
