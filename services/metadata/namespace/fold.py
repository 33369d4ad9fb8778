"""The namespace fold: (projection, command) -> (mutations, result).

Pure: it reads the projection through a Txn and the command, nothing else, so every
replica, restore and replay computes the same bytes. It is also the authority: every
precondition is checked here, in the order docs/namespace-semantics.md gives.

This module dispatches and keeps exactly-once; each family of operations lives in a
module of its own, over the Namespace of namespace.py: tree_fold (names), attribute_fold,
session_fold (sessions, opens), data_fold (writes, inline bytes, classes, adoption),
delegation_fold and region_fold.
"""

import errno
import logging
import struct

from google.protobuf.message import DecodeError

from schemas import namespace_pb2 as pb
from services.common.posix import records as r
from services.common.posix.errors import FsError
from services.metadata.namespace import (
    attribute_fold,
    data_fold,
    delegation_fold,
    region_fold,
    session_fold,
    tree_fold,
)
from services.metadata.namespace.namespace import Namespace
from services.metadata.namespace.txn import Txn

log = logging.getLogger(__name__)
# Exceptions that only the fold's own logic raises on a command's contents.
FOLD_BUGS = (ArithmeticError, LookupError, TypeError, ValueError, AttributeError,
             AssertionError, NotImplementedError, RecursionError)
PRUNE_ONE_BY_ONE = 64  # acknowledged results forgotten key by key up to this many


OPERATIONS = {
    "mknod": tree_fold.mknod, "link": tree_fold.link, "rename": tree_fold.rename,
    "setattr": attribute_fold.setattr, "setxattr": attribute_fold.setxattr,
    "removexattr": attribute_fold.removexattr,
    "open_session": session_fold.open_session, "close_session": session_fold.close_session,
    "set_class": data_fold.set_class, "adopt_chunks": data_fold.adopt_chunks,
}
# Operations on a session's own state take its id too.
SESSION_OPERATIONS = {"create": tree_fold.create, "symlink": tree_fold.symlink,
                      "unlink": tree_fold.unlink, "mkdir": tree_fold.mkdir,
                      "rmdir": tree_fold.rmdir,
                      "open": session_fold.open_file, "release": session_fold.release,
                      "begin_write": data_fold.begin_write,
                      "commit_write": data_fold.commit_write,
                      "write_inline": data_fold.write_inline,
                      "delegate": delegation_fold.delegate,
                      "undelegate": delegation_fold.undelegate,
                      "reserve_inodes": delegation_fold.reserve_inodes,
                      "reserve_chunks": delegation_fold.reserve_chunks}


# -- the fold -----------------------------------------------------------------------

def fold(txn: Txn, cmd: pb.Command) -> pb.Result:
    """Apply one command to `txn`; return its result. A failed command changes
    nothing but its exactly-once record. A region that follows another region's log
    folds only what is shipped from there (services.metadata.namespace.region_fold)."""
    if (gated := region_fold.gate(txn, cmd, fold_local)) is not None:
        return gated
    return fold_local(txn, cmd)


def fold_local(txn: Txn, cmd: pb.Command) -> pb.Result:
    """One command of this cluster's own history, or one shipped from region A."""
    session = None
    if cmd.session:
        session = _session_of(txn, cmd)
        if not isinstance(session, r.SessionRecord):
            return session  # an error, or the result recorded the first time
    result = _run(txn, cmd)
    if session is not None:
        _record(txn, cmd, session, result)
    return result


def fold_bytes(txn: Txn, data: bytes) -> pb.Result:
    """Fold a command as it is stored in the log; bytes that do not parse are a
    clear error result, and change nothing."""
    cmd = pb.Command()
    try:
        cmd.ParseFromString(data)
    except DecodeError as exc:
        return _error(errno.EINVAL, f"command does not parse: {exc}")
    return fold(txn, cmd)


def _run(txn: Txn, cmd: pb.Command) -> pb.Result:
    kind = cmd.WhichOneof("op")
    if kind is None:
        return _error(errno.EINVAL, "command has no operation (unknown or missing type)")
    savepoint = txn.savepoint()
    try:
        if kind in SESSION_OPERATIONS:
            return SESSION_OPERATIONS[kind](Namespace(txn, cmd), getattr(cmd, kind),
                                            cmd.session)
        return OPERATIONS[kind](Namespace(txn, cmd), getattr(cmd, kind))
    except FsError as exc:
        txn.rollback(savepoint)
        return _error(exc.errno, exc.message)
    except (struct.error, OverflowError) as exc:
        # A value the records cannot hold: every replica fails the same way, so the
        # command fails (loudly) instead of stopping the log for good.
        log.error("command %s failed in the fold: %s", kind, exc)
        txn.rollback(savepoint)
        return _error(errno.EOVERFLOW, f"{kind}: a value is out of range ({exc})")
    except FOLD_BUGS as exc:
        # A mistake in the fold that this command's contents trigger: deterministic,
        # so every replica fails it the same way. Failing the one command (changing
        # nothing) keeps the log moving; raising would stop every replica, and again
        # at every restart. Errors of the disk or memory are not caught: a replica
        # that cannot read its state must stop, not answer differently from the rest.
        log.exception("BUG: command %s failed in the fold; it fails with EIO and "
                      "changes nothing", kind)
        txn.rollback(savepoint)
        return _error(errno.EIO, f"{kind}: the metadata service could not apply this "
                                 f"command ({type(exc).__name__}: {exc}); nothing changed")


def _session_of(txn: Txn, cmd: pb.Command) -> r.SessionRecord | pb.Result:
    data = txn.get(r.SESSIONS, r.u64(cmd.session))
    if data is None:
        return _error(errno.ENOTCONN, f"session {cmd.session} is not open (closed or "
                                      "expired): open a new session")
    session = r.SessionRecord.unpack(data)
    if cmd.seq == 0 or cmd.acked_seq >= cmd.seq:
        return _error(errno.EINVAL, f"bad request numbers: seq {cmd.seq} must be at least 1 "
                                    f"and above acked_seq {cmd.acked_seq}")
    if cmd.seq <= session.acked_seq:
        return _error(errno.EINVAL, f"request {cmd.seq} of session {cmd.session} was already "
                                    "acknowledged; its result is gone")
    recorded = txn.get(r.RESULTS, r.result_key(cmd.session, cmd.seq))
    if recorded is not None:
        return pb.Result.FromString(recorded)
    return session


def _record(txn: Txn, cmd: pb.Command, session: r.SessionRecord, result: pb.Result) -> None:
    if txn.get(r.SESSIONS, r.u64(cmd.session)) is None:
        return  # the command closed its own session
    txn.put(r.RESULTS, r.result_key(cmd.session, cmd.seq), result.SerializeToString())
    if cmd.acked_seq > session.acked_seq:
        if cmd.acked_seq - session.acked_seq <= PRUNE_ONE_BY_ONE:
            for seq in range(session.acked_seq + 1, cmd.acked_seq + 1):
                txn.delete(r.RESULTS, r.result_key(cmd.session, seq))
        else:  # a big jump: one range tombstone
            txn.delete_range(r.RESULTS, r.result_key(cmd.session, session.acked_seq + 1),
                             r.result_key(cmd.session, cmd.acked_seq + 1))
        session.acked_seq = cmd.acked_seq
        txn.put(r.SESSIONS, r.u64(cmd.session), session.pack())


def _error(code: int, message: str) -> pb.Result:
    return pb.Result(errno=code, message=message)
