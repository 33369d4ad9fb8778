"""The leader's side of delegated directories: recall one before another session
touches it.

A session that holds a directory (namespace/delegation_fold.py) creates files in it
without waiting and answers lookups of absent names itself, so no other session may
read or change the directory while it holds it. Before such a request runs, the
leader asks the holder (a notice on its session stream) to commit what it made
there and give the directory back, and holds the request meanwhile. A holder that
does not answer within RECALL_S (dead, stopped, cut off) loses the directory: the
leader takes it back with an Undelegate of its own. See docs/delegations.md.
"""

import asyncio
import contextlib
import logging
import time

from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix import records as r
from services.metadata.invalidations import named_inodes

log = logging.getLogger(__name__)
RECALL_S = 1.0       # how long a holder has to give a directory back
REPEAT_S = 0.2       # the notice again (a holder's stream may have been replaced)
POLL_S = 0.05        # changes made outside this servicer (session expiry) are seen so
_INODE_FIELDS = ("parent", "new_parent", "inode")
CHANGES = frozenset({"delegate", "undelegate", "close_session"})  # see proposing()
_OWN_OPS = frozenset({"delegate", "undelegate", "reserve_inodes", "reserve_chunks",
                      "open_session",
                      "close_session", "ship_entries", "promote_region"})


def touched(projection, request: mpb.Request) -> set[int]:
    """The inodes a request reads or changes that could be delegated directories:
    the ones it names, and for unlink, rmdir and rename the ones behind its names."""
    kind = request.WhichOneof("op")
    if kind == "mutation":
        command = request.mutation
        kind = command.WhichOneof("op")
        if kind is None or kind in _OWN_OPS:
            return set()
        op = getattr(command, kind)
        found = set(named_inodes(projection, command))
    elif kind in (None, "heartbeat"):
        return set()
    else:
        op, found = getattr(request, kind), set()
    for field in _INODE_FIELDS:
        if kind in ("create", "mkdir", "symlink") and field == "inode":
            continue              # the new inode of a create or mkdir answered by a holder
        value = getattr(op, field, 0)
        if value:
            found.add(value)
    return found


class Recalls:
    def __init__(self, node, subscribers):
        self.node, self.subscribers = node, subscribers
        self.granting: dict[int, int] = {}   # dir -> session: Delegate proposed, not applied
        self._changed = asyncio.Event()

    def holder(self, directory: int) -> int:
        """The session holding (or being granted) `directory`; 0: nobody."""
        found = self.node.machine.projection.get(r.DELEGATIONS, r.u64(directory))
        if found is not None:
            return r.from_u64(found)
        return self.granting.get(directory, 0)

    def conflicts(self, request: mpb.Request) -> list[int]:
        """Delegated directories this request must wait for (held by another session)."""
        inodes = touched(self.node.machine.projection, request)
        return [d for d in inodes if self.holder(d) not in (0, request.session)]

    def proposing(self, command: pb.Command, session: int):
        """Before `session`'s command is proposed. A Delegate counts from now: a
        request checked before it applies must wait for it too. Returns what to call
        once the command is applied (or failed) when it changes delegations, so that
        held requests look again at once; None for any other command."""
        kind = command.WhichOneof("op")
        if kind not in CHANGES:
            return None
        directory = command.delegate.dir if kind == "delegate" else 0
        if directory:
            self.granting[directory] = session

        def applied() -> None:
            if directory:
                self.granting.pop(directory, None)
            self.changed()
        return applied

    def changed(self) -> None:
        """A delegation was granted or given back: held requests look again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def recall(self, directories: list[int]) -> None:
        await asyncio.gather(*(self._recall(d) for d in directories))

    async def _recall(self, directory: int) -> None:
        deadline = time.monotonic() + RECALL_S
        next_notice = 0.0
        while (holder := self.holder(directory)) != 0:
            now = time.monotonic()
            if now >= deadline:
                await self._revoke(directory, holder)
                return
            if now >= next_notice and directory not in self.granting:
                self.subscribers.tell(holder, mpb.Invalidation(recall_dir=directory))
                next_notice = now + REPEAT_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), POLL_S)

    async def _revoke(self, directory: int, holder: int) -> None:
        log.warning("session %d did not give back directory %d within %.1f s: taking "
                    "it back", holder, directory, RECALL_S)
        command = pb.Command(time_ns=time.time_ns(), caller=pb.Caller(),
                             undelegate=pb.Undelegate(dir=directory, session=holder))
        done = asyncio.get_running_loop().create_future()

        def finished(outcome) -> None:
            if not done.done():
                done.set_result(outcome)
        self.node.submit([command.SerializeToString()], finished)
        await done
        self.changed()
