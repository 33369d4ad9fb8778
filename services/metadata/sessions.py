"""Client sessions on the leader: kept alive by traffic, expired through the log.

Which sessions exist is in the projection (opened and closed by commands); when a
client was last heard of is soft state on the leader. A new leader gives every
session a full timeout before it may expire, since it never heard them before.
"""

import asyncio
import logging
import time

from schemas import namespace_pb2 as pb
from services.common.posix import records as r
from services.metadata.namespace.region_fold import following
from services.metadata.raft.core import LEADER
from services.metadata.raft.node import RaftNode

log = logging.getLogger(__name__)


class SessionKeeper:
    def __init__(self, node: RaftNode, timeout_s: float = 30.0):
        self.node, self.timeout_s = node, timeout_s
        self.last_heard: dict[int, float] = {}
        self._term = -1
        self._closing: set[int] = set()
        self._task: asyncio.Task | None = None

    def touch(self, session: int) -> None:
        self.last_heard[session] = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="session-keeper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.timeout_s / 4))
            try:
                self.expire_silent()
            except Exception:  # keep expiring on the next round whatever went wrong
                log.exception("session expiry failed")

    def open_sessions(self) -> list[int]:
        proj = self.node.machine.projection
        return [r.from_u64(k) for k, _ in proj.scan(r.SESSIONS, b"")]

    def expire_silent(self) -> None:
        core = self.node.core
        if core.role != LEADER:
            self._term = -1
            return
        if following(self.node.machine.projection):
            return   # region A's sessions: A closes them, and its log says so
        now = time.monotonic()
        if core.term != self._term:  # new in office: everybody starts with a full timeout
            self._term = core.term
            self.last_heard = {s: now for s in self.open_sessions()}
            return
        for session in self.open_sessions():
            heard = self.last_heard.setdefault(session, now)
            if now - heard > self.timeout_s and session not in self._closing:
                self._expire(session)

    def _expire(self, session: int) -> None:
        log.info("session %d silent for %.0f s: closing it", session, self.timeout_s)
        self._closing.add(session)
        command = pb.Command(time_ns=time.time_ns(), caller=pb.Caller(),
                             close_session=pb.CloseSession(session=session))

        def done(outcome) -> None:
            self._closing.discard(session)
            self.last_heard.pop(session, None)
        self.node.submit([command.SerializeToString()], done)
