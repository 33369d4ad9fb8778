"""Clients that run while the faults happen, and the history they record.

Each client is a MetadataClient (its own session, on the leader's stream, retrying
across leader changes with exactly-once numbers, as a mount does) driving three
kinds of operations, chosen by its own seeded random generator:

- a register per file, in an extended attribute: ("put", key, v) is a setxattr,
  ("get", key) a getxattr (linearizable reads, lease reads on);
- a compare-and-set register per directory holding one file `v<N>`: ("cas", key,
  a, b) renames `v<a>` to `v<b>` with RENAME_NOREPLACE (it fails with ENOENT when
  the value is not a), ("get", key) lists the directory;
- namespace: mkdir of a new name in `ns/`, to check acknowledged ⊆ present ⊆
  acknowledged ∪ unknown after healing.

An operation that fails with ENOENT (a cas that found another value) returned; one
refused with ENOSPC (a node short of disk space) never happened; one that ends any
other way (the client's deadline, EIO after a resend) never returned
as far as the checker knows: it may or may not have taken effect.
"""

import asyncio
import errno
import random
import time
from dataclasses import dataclass, field

from fuse_client.metadata_client import ClusterUnavailableError, MetadataClient
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError
from services.common.posix.records import ROOT_INO as ROOT
from tests.property.linearizability import Operation

ROOT_CALLER = pb.Caller(uid=0, gid=0)
RENAME_NOREPLACE = 1
XATTR = b"user.v"
DEADLINE_S = 5.0     # a client gives an operation up after this (unknown outcome)


@dataclass
class Layout:
    """What the setup made: inodes of the register files and cas directories."""
    files: dict[int, int] = field(default_factory=dict)    # key -> inode
    dirs: dict[int, int] = field(default_factory=dict)     # key -> inode
    ns: int = 0


@dataclass
class Record:
    ops: list[Operation] = field(default_factory=list)     # register and cas operations
    acked: set[bytes] = field(default_factory=set)          # mkdir names acknowledged
    unknown: set[bytes] = field(default_factory=set)        # mkdir names with no answer
    write_acks: list[float] = field(default_factory=list)   # when writes were acknowledged
    errors: dict[str, int] = field(default_factory=dict)    # why operations were unknown


async def set_up(masters: list[str], keys: int) -> Layout:
    layout = Layout()
    async with MetadataClient(masters, name="nemesis-setup", deadline_s=60) as md:
        for k in range(keys):
            made = await md.mutate(ROOT_CALLER, create=pb.Create(
                parent=ROOT, name=b"x%d" % k, mode=0o100644, exclusive=True))
            layout.files[k] = made.attr.inode
            made = await md.mutate(ROOT_CALLER, mkdir=pb.Mkdir(parent=ROOT, name=b"c%d" % k,
                                                               mode=0o755))
            layout.dirs[k] = made.attr.inode
            await md.mutate(ROOT_CALLER, create=pb.Create(
                parent=layout.dirs[k], name=b"v0", mode=0o100644, exclusive=True))
        layout.ns = (await md.mutate(ROOT_CALLER, mkdir=pb.Mkdir(
            parent=ROOT, name=b"ns", mode=0o755))).attr.inode
    return layout


def initial_ops(layout: Layout, start: float) -> list[Operation]:
    """The setup's values as operations that ended before any client began."""
    return [Operation(client=-1, call=start - 2, ret=start - 1, input=("put", ("c", k), 0),
                      output=None) for k in layout.dirs]


class Client:
    def __init__(self, number: int, masters: list[str], layout: Layout, seed: int,
                 record: Record, clock):
        self.number, self.masters, self.layout = number, masters, layout
        self.rng = random.Random(seed * 1000 + number)
        self.record, self.clock = record, clock
        self.values = 0          # this client's next value (unique: number * 1e6 + n)
        self.names = 0
        self.last_seen: dict[int, int] = {}   # cas key -> the value last read

    async def run(self, stop: asyncio.Event) -> None:
        async with MetadataClient(self.masters, name=f"nemesis-{self.number}",
                                  deadline_s=DEADLINE_S) as md:
            self.md = md
            while not stop.is_set():
                await self._one()
                await asyncio.sleep(self.rng.uniform(0.002, 0.02))

    async def _one(self) -> None:
        roll, k = self.rng.random(), self.rng.randrange(len(self.layout.files))
        if roll < 0.25:
            await self._timed(("get", ("x", k)), self._get_x(k))
        elif roll < 0.45:
            await self._timed(("put", ("x", k), self._value()), None)
        elif roll < 0.65:
            await self._timed(("get", ("c", k)), self._get_c(k))
        elif roll < 0.85:
            old = self.last_seen.get(k, 0)
            await self._timed(("cas", ("c", k), old, self._value()), None)
        else:
            await self._mkdir()

    def _value(self) -> int:
        self.values += 1
        return self.number * 1_000_000 + self.values

    async def _timed(self, input: tuple, coro) -> None:
        """Run one register operation and record it with its call and return times."""
        call = self.clock()
        try:
            output = await (coro if coro is not None else self._write(input))
        except (FsError, ClusterUnavailableError, TimeoutError) as exc:
            self._unknown(exc)
            if not refused(exc):
                self.record.ops.append(Operation(self.number, call, None, input))
            return
        ret = self.clock()
        self.record.ops.append(Operation(self.number, call, ret, input, output))
        if input[0] == "put" or (input[0] == "cas" and output):
            self.record.write_acks.append(ret)

    async def _write(self, input: tuple):
        kind, (family, k), *args = input
        if kind == "put":
            await self.md.mutate(ROOT_CALLER, setxattr=pb.Setxattr(
                inode=self.layout.files[k], name=XATTR, value=b"%d" % args[0]))
            return None
        old, new = args
        directory = self.layout.dirs[k]
        try:
            await self.md.mutate(ROOT_CALLER, rename=pb.Rename(
                parent=directory, name=b"v%d" % old, new_parent=directory,
                new_name=b"v%d" % new, flags=RENAME_NOREPLACE))
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return False
        self.last_seen[k] = new
        return True

    async def _get_x(self, k: int):
        try:
            reply = await self.md.read(ROOT_CALLER, getxattr=mpb.Getxattr(
                inode=self.layout.files[k], name=XATTR))
        except FsError as exc:
            if exc.errno != errno.ENODATA:
                raise
            return None
        return int(reply.data)

    async def _get_c(self, k: int):
        reply = await self.md.read(ROOT_CALLER, readdir=mpb.Readdir(
            inode=self.layout.dirs[k], limit=100, names_only=True))
        names = [e.name for e in reply.entries if e.name not in (b".", b"..")]
        if len(names) != 1:
            return tuple(names)     # no register value: the checker finds it illegal
        value = int(names[0][1:])
        self.last_seen[k] = value
        return value

    async def _mkdir(self) -> None:
        self.names += 1
        name = b"%d-%d" % (self.number, self.names)
        try:
            await self.md.mutate(ROOT_CALLER, mkdir=pb.Mkdir(parent=self.layout.ns,
                                                             name=name, mode=0o755))
        except (FsError, ClusterUnavailableError, TimeoutError) as exc:
            self._unknown(exc)
            if not refused(exc):
                self.record.unknown.add(name)
            return
        self.record.acked.add(name)
        self.record.write_acks.append(self.clock())

    def _unknown(self, exc: Exception) -> None:
        why = type(exc).__name__ if not isinstance(exc, FsError) else \
            errno.errorcode.get(exc.errno, str(exc.errno))
        self.record.errors[why] = self.record.errors.get(why, 0) + 1


def refused(exc: Exception) -> bool:
    """Refused before the log (a node short of disk space): it never took effect, so
    it is left out of the history; if it had taken effect after all, a read of its
    value or its name after healing shows it."""
    return isinstance(exc, FsError) and exc.errno == errno.ENOSPC


def clock() -> float:
    return time.monotonic()
