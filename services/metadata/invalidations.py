"""What a mutation makes stale in other clients' caches, and who to tell.

A mount caches attributes and directory entries for a short time; when another
client changes them, the leader pushes invalidations on the mount's session
stream so it drops them at once instead of at the end of its timeout.
"""

from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix import records as r

# Operations whose first fields are (parent, name) of the entry they add or remove.
_ENTRY_OPS = ("mkdir", "mknod", "create", "symlink", "unlink", "rmdir")
_NODE_OPS = ("setattr", "setxattr", "removexattr", "set_class", "commit_write",
             "adopt_chunks", "write_inline")
O_TRUNC = 0o1000


def named_inodes(projection, command: pb.Command) -> tuple[int, ...]:
    """Before an unlink, rmdir or rename is proposed: the inodes at the names it
    removes or replaces, whose link count and ctime it changes (its result names
    none). Read from the leader's projection as it is now: a race costs at most an
    extra invalidation, or one left to the attribute timeout."""
    kind = command.WhichOneof("op")
    if kind in ("unlink", "rmdir"):
        op = getattr(command, kind)
        names = ((op.parent, op.name),)
    elif kind == "rename":
        op = command.rename
        names = ((op.parent, op.name), (op.new_parent, op.new_name))
    else:
        return ()
    found = (projection.get(r.DENTRIES, r.dentry_key(parent, name)) for parent, name in names)
    return tuple(r.dentry_child(value) for value in found if value is not None)


def stale(command: pb.Command, result: pb.Result,
          inodes: tuple[int, ...] = ()) -> list[mpb.Invalidation]:
    """The invalidations a successful `command` calls for; `inodes`: more it changed
    (see named_inodes)."""
    extra = [mpb.Invalidation(inode=i) for i in inodes]
    return _stale(command, result) + extra


def _stale(command: pb.Command, result: pb.Result) -> list[mpb.Invalidation]:
    kind = command.WhichOneof("op")
    op = getattr(command, kind)
    if kind in _NODE_OPS or (kind == "open" and op.flags & O_TRUNC):
        return [mpb.Invalidation(inode=op.inode)]
    if kind in _ENTRY_OPS:
        out = [mpb.Invalidation(parent=op.parent, name=op.name),
               mpb.Invalidation(inode=op.parent)]
    elif kind == "link":
        out = [mpb.Invalidation(parent=op.new_parent, name=op.new_name),
               mpb.Invalidation(inode=op.new_parent)]
    elif kind == "rename":
        out = [mpb.Invalidation(parent=op.parent, name=op.name),
               mpb.Invalidation(parent=op.new_parent, name=op.new_name),
               mpb.Invalidation(inode=op.parent)]
        if op.new_parent != op.parent:
            out.append(mpb.Invalidation(inode=op.new_parent))
    else:
        return []   # sessions, open, release, begin_write: nothing cached changes
    if result.attr.inode:
        out.append(mpb.Invalidation(inode=result.attr.inode))   # its nlink and ctime
    return out


class Subscriber:
    """One client stream: its session, once known, and whether it wants notices."""
    __slots__ = ("session", "wanted", "notify")

    def __init__(self):
        self.session, self.wanted, self.notify = 0, False, None

    def observe(self, requests):
        for request in requests:
            if request.session and not self.session:
                self.session = request.session
            if request.invalidations:
                self.wanted = True
        return requests


class Subscribers:
    def __init__(self):
        self._all: set[Subscriber] = set()

    def add(self, subscriber: Subscriber) -> None:
        self._all.add(subscriber)

    def discard(self, subscriber: Subscriber) -> None:
        self._all.discard(subscriber)

    def _listeners(self, session: int) -> list[Subscriber]:
        return [s for s in self._all
                if s.wanted and s.notify is not None and s.session != session]

    def tell(self, session: int, notice: mpb.Invalidation) -> None:
        """A notice for `session`'s own streams (a recall of a delegated directory)."""
        for s in self._all:
            if s.session == session and s.notify is not None:
                s.notify(notice)

    def anyone_but(self, session: int) -> bool:
        """Does another stream want invalidations (is there anyone to tell)?"""
        return bool(self._listeners(session))

    def publish(self, session: int, command: pb.Command, result: pb.Result,
                inodes: tuple[int, ...] = ()) -> None:
        """Tell every other interested stream what `session`'s command made stale."""
        listeners = self._listeners(session)
        if not listeners or result.errno:
            return
        for notice in stale(command, result, inodes):
            for listener in listeners:
                listener.notify(notice)
