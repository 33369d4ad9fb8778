"""Directories delegated to this mount's session: creates answered here.

A create normally waits for a quorum of metadata nodes to write it to disk (a few
milliseconds). When a process creates several files in one directory, the mount asks
the leader for the directory (Delegate); while it holds it, no other session reads
or changes it without first recalling it (services/metadata/recalls.py), so the
mount knows every name in it. It then answers a create at once: the inode comes from
a range reserved for the session, the attributes are computed as the fold will
compute them, and the Create (carrying that inode and time) is committed in the
background with other work, in order on the session stream. What depends on such a
create waits for it: a read of the file or the directory, fsync, a recall. See
docs/delegations.md.

Local creates stop when the leader has not been heard from for LIVE_S, so a mount
cut off from the cluster cannot go on creating files that the leader, having taken
the directory back after recalls.RECALL_S, no longer expects.

A file made here stays this mount's own while it holds the directory: no other
session can reach it without a recall (which sends everything answered here first).
The mount then answers for it too: its attributes, opens, setattrs and the commits
of its writes (inline bytes, chunks) are computed here with the fold's own rules
(common/posix/attributes.py) and committed in the background, in order. Anything the
master does to it instead (a rename, a link, an xattr), or giving the directory
back, ends that.
"""

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import stat
import time

from fuse_client.inline_io import overlay
from fuse_client.metadata_client import ClusterUnavailableError
from fuse_client.reserved import Reserved
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common import storage_class
from services.common.posix import attributes
from services.common.posix import permissions as perm
from services.common.posix import records as r
from services.common.posix.errors import FsError
from services.common.posix.names import NAME_MAX, check_name, check_symlink_target

log = logging.getLogger(__name__)
ASK_AFTER = 2        # creates in a directory within ASK_WINDOW_S before asking for it
ASK_WINDOW_S = 1.0
REFUSED_S = 10.0     # after a refusal or a recall, ask for that directory again later
RESERVE = 4096       # inode numbers reserved at a time
CHUNK_RESERVE = 256  # chunk ids reserved at a time
LIVE_S = 0.5         # local creates only while the leader answered this recently
MAX_PENDING = 4096   # creates not yet committed; past this a create waits
READDIR_PAGE = 10_000
SETTLED = frozenset({"rename", "symlink", "mknod", "link", "unlink", "rmdir"})  # settle()
KEEPS_OWN = frozenset({"begin_write", "release"})   # sent to the master, change no attribute


class Held:
    """A directory this session holds: its attributes and every name in it, with the
    inode and type behind it."""
    __slots__ = ("attr", "names", "made", "tasks", "parent", "sclass")

    def __init__(self, attr: pb.Attr, names: dict[bytes, tuple[int, int]],
                 parent: int = 0, sclass: str = ""):
        self.attr, self.names = attr, names    # name -> (inode, mode)
        self.parent = parent                      # the directory it is in (0: unknown)
        self.sclass = sclass       # the storage class of files made in it ("": unknown)
        self.made: dict[bytes, int] = {}          # name -> inode: created here, uncommitted
        self.tasks: set[asyncio.Future] = set()   # commits of what was answered here

    def enter(self, name: bytes, ino: int, mode: int, now: int) -> None:
        """A new name, and the directory's attributes as the fold changes them."""
        self.names[name] = (ino, mode)
        self._touch(1, mode, now)

    def take_out(self, name: bytes, now: int) -> None:
        mode = self.names.pop(name)[1]
        self.made.pop(name, None)
        self._touch(-1, mode, now)

    def _touch(self, entries: int, mode: int, now: int) -> None:
        self.attr.size += entries
        self.attr.nlink += entries * stat.S_ISDIR(mode)
        self.attr.mtime_ns = self.attr.ctime_ns = now


class Delegations:
    def __init__(self, md, on_lost=None, enabled: bool = True):
        """`md`: the open MetadataClient; `on_lost(parent, name, inode)`: a create
        answered here failed at the master after all (the kernel must forget it);
        not `enabled` (-o no_delegations): never ask for a directory."""
        self.md, self.on_lost, self.enabled = md, on_lost, enabled
        self.held: dict[int, Held] = {}
        self.pending: dict[int, asyncio.Future] = {}  # inode -> the reply to the last
        # command answered here for it
        self.own: dict[int, pb.Attr] = {}   # files made here and only reachable here yet
        self.own_at: dict[int, tuple[int, bytes]] = {}   # own file -> (directory, name)
        self.targets: dict[int, bytes] = {}   # own symbolic link -> its target
        self._counts: dict[int, tuple[float, int]] = {}
        self._not_before: dict[int, float] = {}
        self._asking: dict[int, asyncio.Task] = {}    # dir -> asking for it
        self._stale: set[int] = set()     # asked for, then recalled or changed meanwhile
        self.inodes = Reserved(self._reserve_inodes, RESERVE, self._spawn)
        self.chunk_ids = Reserved(self._reserve_chunks, CHUNK_RESERVE, self._spawn)
        self.placement: list[str] = []   # chunkservers with room, for new chunks
        self.began: dict[int, set[int]] = {}   # own file -> chunk indexes begun
        self._tasks: set[asyncio.Task] = set()
        self._answering = False     # sending a command answered here (see before())

    def attach(self) -> "Delegations":
        """Be told of every request the session sends, and of recalls."""
        self.md.before = self.before
        self.md.on_recall = self.recall
        return self

    # -- answering here ---------------------------------------------------------------
    def create(self, caller: pb.Caller, parent: int, name: bytes, mode: int,
               flags: int) -> pb.Attr | None:
        """The new file's attributes if this create is answered here, else None (ask
        the master: it also gives the right error)."""
        return self._answer(caller, parent, name,
                            stat.S_IFREG | (mode & 0o7777 & ~caller.umask),
                            lambda attr: {"create": pb.Create(
                                parent=parent, name=name, mode=mode,
                                exclusive=bool(flags & os.O_EXCL), open=True,
                                open_flags=flags, inode=attr.inode, time_ns=attr.ctime_ns)})

    def mkdir(self, caller: pb.Caller, parent: int, name: bytes, mode: int
              ) -> pb.Attr | None:
        """Like create, for a directory; the new (empty) directory is held too."""
        attr = self._answer(caller, parent, name,
                            stat.S_IFDIR | (mode & 0o1777 & ~caller.umask),
                            lambda attr: {"mkdir": pb.Mkdir(
                                parent=parent, name=name, mode=mode, inode=attr.inode,
                                time_ns=attr.ctime_ns, delegate=True)})
        if attr is not None:
            self.adopt(attr, parent, self.held[parent].sclass)
        return attr

    def symlink(self, caller: pb.Caller, parent: int, name: bytes, target: bytes
                ) -> pb.Attr | None:
        """Like create, for a symbolic link (a target the fold would refuse goes to
        the master, which says why)."""
        try:
            check_symlink_target(target)
        except FsError:
            return None
        attr = self._answer(caller, parent, name, stat.S_IFLNK | 0o777,
                            lambda attr: {"symlink": pb.Symlink(
                                parent=parent, name=name, target=target,
                                inode=attr.inode, time_ns=attr.ctime_ns)},
                            size=len(target))
        if attr is not None:
            self.targets[attr.inode] = target
        return attr

    def readlink(self, inode: int) -> bytes | None:
        """The target of a symbolic link this mount made, while it answers for it."""
        return self.targets.get(inode) if inode in self.own else None

    def _answer(self, caller: pb.Caller, parent: int, name: bytes, mode: int, command,
                size: int = 0) -> pb.Attr | None:
        """Make a node here if this session may; `command(attr)`: the one to send."""
        if not self._may_answer(caller, parent, name):
            return None
        attr = self._new(self.held[parent], caller, name, mode, size)
        if attr is not None:
            self._defer(caller, parent, name, attr.inode, **command(attr))
        return attr

    def adopt(self, attr: pb.Attr, parent: int, sclass: str = "") -> None:
        """A directory this session just made in `parent`, delegated to it
        (Mkdir.delegate); `sclass`: the storage class its files get."""
        self.held[attr.inode] = Held(attr, {}, parent, sclass)
        self.inodes.take(ahead=True)
        self.chunk_ids.take(ahead=True)

    async def settle(self, entries: list[tuple[int, bytes]]) -> None:
        """After a command the master made (a rename, symlink, mknod, link, unlink or
        rmdir) changed these names: learn what they are now in the held directories among them, and
        those directories' attributes. If that fails, give them back."""
        dirs = {parent for parent, _ in entries if parent in self.held}
        try:
            for parent, name in entries:
                if parent in self.held:
                    await self._learn(parent, name)
            for directory in dirs:
                attr = (await self.md.read(pb.Caller(), getattr=mpb.Getattr(
                    inode=directory))).attr
                if directory in self.held:
                    self.held[directory].attr.CopyFrom(attr)
        except Exception as exc:      # the cluster, or a name that is not what it was
            log.info("giving back directories %s: %s", sorted(dirs), exc)
            for directory in dirs:
                self.give_back(directory)

    async def _learn(self, parent: int, name: bytes) -> None:
        try:
            attr = (await self.md.read(pb.Caller(), lookup=mpb.Lookup(
                parent=parent, name=name))).attr
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            attr = None
        held = self.held.get(parent)
        if held is None:
            return
        held.made.pop(name, None)
        if attr is None:
            held.names.pop(name, None)
        else:
            held.names[name] = (attr.inode, attr.mode)

    def attributes_set(self, attr: pb.Attr) -> None:
        """A held directory's setattr (chmod, chown, utimes) was answered by the
        master: its names are as they were, its attributes are these."""
        held = self.held.get(attr.inode)
        if held is not None:
            held.attr.CopyFrom(attr)

    def made_at_master(self, parent: int, name: bytes, attr: pb.Attr) -> None:
        """A create or mkdir in a held directory was made by the master (no inode
        number was at hand here, or the name existed): the directory's names and
        attributes follow, as the fold changed them."""
        held = self.held.get(parent)
        if held is None or name in held.names:
            return
        held.enter(name, attr.inode, attr.mode, attr.ctime_ns)

    def _may_answer(self, caller: pb.Caller, parent: int, name: bytes) -> bool:
        held = self.held.get(parent)
        if (held is None or name in held.names or not self._live()
                or not self.md.session):
            return False
        directory = _node(held.attr)
        try:
            check_name(name)
            perm.search(caller, directory)
            perm.may_create(caller, directory)
        except FsError:
            return False
        return True

    def _new(self, held: Held, caller: pb.Caller, name: bytes, mode: int, size: int = 0
             ) -> pb.Attr | None:
        """The attributes the fold will give a node made in `held` (None: no inode
        number left for now), entered in the directory as known here."""
        ino = self.inodes.take()
        if not ino:
            return None
        now = time.time_ns()
        mode, gid = perm.inherited(caller, _node(held.attr), mode)
        nlink = 2 if stat.S_ISDIR(mode) else 1
        attr = r.Inode(ino, mode, caller.uid, gid, nlink, size, now, now, now).to_attr()
        held.enter(name, ino, mode, now)
        held.made[name] = ino
        self.own[ino] = attr
        self.own_at[ino] = (held.attr.inode, name)
        return attr

    def unlink(self, caller: pb.Caller, parent: int, name: bytes) -> bool:
        """Unlink a file in a held directory here (True), or leave it to the master:
        a directory, a sticky directory, a caller without write permission."""
        found = self._removable(caller, parent, name)
        if found is None or stat.S_ISDIR(found[1]):
            return False
        self._remove(caller, parent, name, found[0], lambda now: {
            "unlink": pb.Unlink(parent=parent, name=name, time_ns=now)})
        return True

    def rmdir(self, caller: pb.Caller, parent: int, name: bytes) -> bool:
        """Remove a directory made or held here that is empty, in a held directory
        (True), or leave it to the master."""
        found = self._removable(caller, parent, name)
        if found is None or not stat.S_ISDIR(found[1]):
            return False
        child = self.held.get(found[0])
        if child is None or child.names:
            return False
        del self.held[found[0]]
        self._remove(caller, parent, name, found[0], lambda now: {
            "rmdir": pb.Rmdir(parent=parent, name=name, time_ns=now)})
        return True

    def _removable(self, caller: pb.Caller, parent: int, name: bytes
                   ) -> tuple[int, int] | None:
        """(inode, mode) of a name this session may remove here; None: ask the master."""
        held = self.held.get(parent)
        if held is None or not self._live() or held.attr.mode & stat.S_ISVTX:
            return None
        ino, mode = held.names.get(name, (0, 0))
        if not ino:
            return None
        try:
            perm.may_create(caller, _node(held.attr))
        except FsError:
            return None
        return ino, mode

    def _remove(self, caller: pb.Caller, parent: int, name: bytes, ino: int,
                command) -> None:
        """Take the name out here; `command(now)`: the one to send."""
        now = time.time_ns()
        self.held[parent].take_out(name, now)
        self._drop_own(ino)
        self._defer(caller, parent, name, ino, **command(now))

    def _defer(self, caller: pb.Caller, parent: int, name: bytes, ino: int, **op) -> None:
        """Send a command answered here; reads of `ino` or `parent` wait for it."""
        self._answering = True
        try:
            reply = self.md.mutate_deferred(caller, **op)
        finally:
            self._answering = False
        self.pending[ino] = reply        # a later command on the inode implies this one
        self.held[parent].tasks.add(reply)
        reply.add_done_callback(lambda r: self._committed(r, parent, name, ino))

    async def room(self, parent: int) -> None:
        """Before a create or a removal: when the cluster falls behind, wait for the
        oldest ones (what is answered but not committed stays bounded); while this
        mount asks for the directory, wait for the answer (a change sent to the master
        meanwhile would make the names it lists stale, and a big directory's listing
        would be read again and again: an `rm -rf` of one crawled at a few hundred
        entries a second); in a held directory after a quiet spell, hear from the
        leader first (see LIVE_S)."""
        while len(self.pending) >= MAX_PENDING:
            await asyncio.wait([next(iter(self.pending.values()))])
        asking = self._asking.get(parent)
        if asking is not None:
            await asyncio.wait([asking])
        if parent in self.held and not self._live():
            with contextlib.suppress(Exception):   # then the create goes to the master
                await self.md.ping()

    def lookup(self, caller: pb.Caller, parent: int, name: bytes) -> pb.Attr | None:
        """A name in a held directory: its attributes if created here and not yet
        committed; FsError(ENOENT) if it does not exist; None: ask the master. The
        errors are the master's (ENAMETOOLONG, EACCES before ENOENT)."""
        held = self.held.get(parent)
        if held is None or name in (b".", b".."):
            return None
        if len(name) > NAME_MAX:
            raise FsError(errno.ENAMETOOLONG, f"entry name is {len(name)} bytes")
        perm.search(caller, _node(held.attr))
        found = held.names.get(name)
        if found is None:
            raise FsError(errno.ENOENT, f"{name!r} is not in directory {parent}")
        return self.own.get(found[0]) if self._live() else None

    def made_here(self, inode: int) -> bool:
        """A file this mount answers for: it has no extended attributes (the kernel
        asks for security.capability before each write)."""
        return inode in self.own

    def closed_unsent(self, inode: int) -> bool:
        """A file created here is closed before its create was even sent (the usual
        create-and-close): the create then need not open it at the master, and no
        Release is needed. False: release it as usual."""
        command = self._unsent(inode)
        if command is None or not command.create.open:
            return False
        command.create.open = False
        command.create.open_flags = 0
        return True

    def getattr(self, inode: int) -> pb.Attr | None:
        """A held directory's attributes as they are with the creates made here, or
        the attributes of a file this mount answers for."""
        held = self.held.get(inode)
        if held is not None:
            return held.attr
        return self.own.get(inode) if self._live() else None

    def _committed(self, task: asyncio.Future, parent: int, name: bytes, ino: int) -> None:
        if self.pending.get(ino) is task:
            del self.pending[ino]
        held = self.held.get(parent)
        if held is not None:
            held.tasks.discard(task)
            if held.made.get(name) == ino:     # committed: the master answers for it
                del held.made[name]
        failure = _failure(task)
        if failure is not None:
            log.error("a change answered by this mount %s at the master: %r in directory "
                      "%d (inode %d): %s", "may not have been made" if _unknown(task)
                      else "failed", name, parent, ino, failure)
            self.held.pop(ino, None)    # a directory made here that was not made
            self._drop_own(ino)
            self.give_back(parent)
            if self.on_lost is not None:
                self.on_lost(parent, name, ino)

    # -- files this mount answers for ---------------------------------------------------
    def own_file(self, inode: int) -> pb.Attr | None:
        """The attributes of a file this mount answers for, while it may."""
        if inode in self.own and self._live() and self.md.session:
            return self.own[inode]
        return None

    def listing(self, caller: pb.Caller, directory: int
                ) -> list[tuple[bytes, pb.Attr]] | None:
        """Every entry of a held directory with its attributes, when this mount knows
        them all (it made them): the directory is listed without the master. None:
        ask the master. FsError (EACCES) as the master would refuse it."""
        held = self.held.get(directory)
        if held is None or not self._live():
            return None
        perm.require(caller, _node(held.attr), perm.R, "no read permission on the "
                                                        "directory")
        out = []
        for name, (ino, _mode) in held.names.items():
            sub = self.held.get(ino)
            attr = sub.attr if sub is not None else self.own.get(ino)
            if attr is None:
                return None
            out.append((name, attr))
        return out

    def parent_of(self, directory: int) -> tuple[int, pb.Attr | None]:
        """(inode, attributes) of the directory a held directory is in, as far as
        known here: (0, None) when this mount did not make it; attributes None when
        that directory is not held."""
        held = self.held.get(directory)
        if held is None or not held.parent:
            return 0, None
        above = self.held.get(held.parent)
        return held.parent, above.attr if above is not None else None

    def inode_at(self, inode: int, names) -> bool:
        """Whether a held directory has `inode` at one of these (directory, name)."""
        for parent, name in names:
            held = self.held.get(parent)
            if held is not None and held.names.get(name, (0, 0))[0] == inode:
                return True
        return False

    def open_own(self, caller: pb.Caller, inode: int, flags: int
                 ) -> tuple[pb.Attr, bool] | None:
        """Open a file this mount answers for: (its attributes, whether the open is
        recorded at the master: one that may write is, in the background), or None:
        ask the master. FsError as the fold would refuse it."""
        attr = self.own_file(inode)
        if attr is None or not stat.S_ISREG(attr.mode):
            return None
        node = _node(attr)
        want = {0: perm.R, os.O_WRONLY: perm.W, os.O_RDWR: perm.R | perm.W}.get(
            flags & os.O_ACCMODE)
        if want is None:
            raise FsError(errno.EINVAL, f"open: bad access mode in flags {flags:#o}")
        truncate = bool(flags & os.O_TRUNC)
        perm.require(caller, node, want | (perm.W if truncate else 0), "open")
        if not (want & perm.W or truncate):
            return attr, False
        now = time.time_ns()
        if truncate:
            attributes.truncated_at_open(caller, node, now)
        return self._answer_own(caller, node, open=pb.Open(
            inode=inode, flags=flags, time_ns=now)), True

    def setattr_own(self, caller: pb.Caller, inode: int, op: pb.Setattr) -> pb.Attr | None:
        """A setattr of a file this mount answers for, checked and applied as the fold
        does (FsError as it would refuse it); None: ask the master."""
        attr = self.own_file(inode)
        if attr is None:
            return None
        node = _node(attr)
        gid = attributes.check_setattr(caller, node, op)
        op.time_ns = time.time_ns()
        attributes.apply_setattr(caller, node, op, gid, op.time_ns)
        return self._answer_own(caller, node, setattr=op)

    def commit_inline(self, caller: pb.Caller, inode: int, pieces, written_ns: int
                      ) -> pb.Attr | None:
        """Commit writes kept inline to a file this mount answers for: inside its
        create when that has not gone yet (one command for create, write and close),
        else a WriteInline, in the background. None: ask the master."""
        attr = self.own_file(inode)
        if attr is None:
            return None
        node = _node(attr)
        end = max((offset + len(data) for offset, data in pieces), default=0)
        command = self._unsent(inode)
        if command is not None and command.WhichOneof("op") == "create" \
                and not command.create.data and attr.size == 0:
            data = overlay(b"", pieces)
            command.create.data, command.create.written_ns = data, written_ns
            attributes.wrote(caller, node, len(data), max(node.mtime, written_ns))
            self.own[inode] = node.to_attr()
            return self.own[inode]
        attributes.wrote(caller, node, max(node.size, end), written_ns)
        return self._answer_own(caller, node, write_inline=pb.WriteInline(
            inode=inode, time_ns=written_ns,
            pieces=[pb.InlinePiece(offset=o, data=d) for o, d in pieces]))

    def commit_chunk(self, caller: pb.Caller, op: pb.CommitWrite) -> pb.Attr | None:
        """Commit a chunk's writes to a file this mount answers for, in the background
        (the bytes are on every copy already). None: ask the master."""
        attr = self.own_file(op.inode)
        if attr is None:
            return None
        node = _node(attr)
        attributes.wrote(caller, node, op.end, op.time_ns)
        return self._answer_own(caller, node, commit_write=op)

    def begin_chunk(self, caller: pb.Caller, inode: int, index: int) -> mpb.Reply | None:
        """Begin a new chunk of a file this mount answers for here, as the master
        would answer a begin_write (a chunk id of the session's range, version 1, on
        chunkservers spread by id), committing the BeginWrite in the background.
        None: ask the master (not a new chunk, no id or class at hand)."""
        attr = self.own_file(inode)
        begun = self.began.setdefault(inode, set()) if attr is not None else set()
        if attr is None or index in begun or attr.size > index * r.CHUNK_SIZE:
            return None
        sclass = self.held[self.own_at[inode][0]].sclass
        if not sclass or not self.placement:
            return None
        chunk_id = self.chunk_ids.take()
        if not chunk_id:
            return None
        parsed = storage_class.parse(sclass)
        targets = spread(chunk_id, self.placement,
                         parsed.m + 1 if parsed.is_ec else parsed.copies)
        begun.add(index)
        self._answer_own(caller, _node(attr), begin_write=pb.BeginWrite(
            inode=inode, chunk_index=index, chunk_id=chunk_id, targets=targets))
        reply = mpb.Reply(storage_class=sclass,
                          targets=[mpb.ChunkLocation(address=a) for a in targets])
        reply.result.attr.CopyFrom(attr)
        reply.result.chunk.CopyFrom(pb.Chunk(index=index, id=chunk_id, version=1))
        return reply

    def _answer_own(self, caller: pb.Caller, node, **op) -> pb.Attr:
        parent, name = self.own_at[node.ino]
        self.own[node.ino] = node.to_attr()
        self._defer(caller, parent, name, node.ino, **op)
        return self.own[node.ino]

    def _unsent(self, inode: int) -> pb.Command | None:
        reply = self.pending.get(inode)
        return self.md.unsent(reply) if reply is not None else None

    # -- ordering with everything else ---------------------------------------------------
    def before(self, kind: str, op, mutation: bool) -> list[asyncio.Future]:
        """Called before every request this session sends: what it must wait for.
        A read of a file created here, or of a held directory, waits for those
        creates (reads may overtake commands on the way). A command changing a held
        directory other than by a create made here ends the delegation: the
        directory's names are no longer all known here."""
        if mutation and kind in ("delegate", "undelegate", "reserve_inodes",
                                 "reserve_chunks"):
            return []
        if self._answering:
            return []   # a command answered here: the names are as it left them
        if mutation and kind in ("create", "mkdir") and op.parent in self.held:
            return []   # made_at_master() enters the name
        if mutation and kind == "setattr" and op.inode in self.held:
            return []   # attributes_set() takes the master's answer
        # settle() learns what these made of the names in held directories
        kept = (getattr(op, "parent", 0), getattr(op, "new_parent", 0)) \
            if mutation and kind in SETTLED else ()
        waits = []
        for field in ("parent", "new_parent", "inode"):
            ino = getattr(op, field, 0)
            if not ino:
                continue
            if ino in self._asking and mutation:
                self._stale.add(ino)
            held = self.held.get(ino)
            if held is not None:
                if not mutation:
                    waits += held.tasks
                elif ino not in kept:
                    self.give_back(ino)
            if mutation and ino in self.own and kind not in KEEPS_OWN:
                self._drop_own(ino)    # the master's answer is newer than ours
            elif mutation and kind == "begin_write" and ino in self.own:
                self.began.setdefault(ino, set()).add(op.chunk_index)
            if ino in self.pending and not mutation:
                waits.append(self.pending[ino])
        if waits:
            self.md.send_deferred()     # someone waits for them: no reason to linger
        return waits

    def renaming(self, parent: int, name: bytes, name_of) -> None:
        """Before a command sent to the master changes what is at (parent, name)
        (a rename, or an unlink, rmdir or link not answered here): a node made or
        held here that is there changes at the master (its ctime, its links), so it
        is no longer answered for here. `name_of(inode)`: where the kernel knows it."""
        held = self.held.get(parent)
        ino = held.names.get(name, (0, 0))[0] if held is not None else 0
        found = {ino} if ino else {i for i in self.held if name_of(i) == (parent, name)}
        for inode in found:
            self._drop_own(inode)
            self.give_back(inode)

    async def settled(self, inode: int) -> None:
        """fsync: the creates of this file, or made in this directory, are committed."""
        waits = [self.pending[inode]] if inode in self.pending else []
        held = self.held.get(inode)
        if held is not None:
            waits += held.tasks
        if waits:
            await asyncio.wait(waits)

    async def drain(self) -> None:
        if self.pending:
            await asyncio.wait(list(self.pending.values()))

    # -- taking and giving back ------------------------------------------------------------
    def changed(self, caller: pb.Caller, parent: int) -> None:
        """A create or unlink in `parent` went to the master: a streak of them is
        worth asking for the directory."""
        now = time.monotonic()
        if (parent in self.held or parent in self._asking or not self.md.session
                or not self.enabled):
            return
        if self._not_before.get(parent, 0.0) > now:
            return
        start, count = self._counts.get(parent, (now, 0))
        if now - start > ASK_WINDOW_S:
            start, count = now, 0
        count += 1
        self._counts[parent] = (start, count)
        if count >= ASK_AFTER:
            self._counts.pop(parent, None)
            self._asking[parent] = self._spawn(self._ask(caller, parent))

    async def _ask(self, caller: pb.Caller, parent: int) -> None:
        try:
            if not self.inodes.at_hand() and not self.inodes.asking():
                await self.inodes.fill()
            reply = await self.md.mutate_reply(caller, delegate=pb.Delegate(dir=parent))
            names = await self._names(parent)
            if parent in self._stale:            # recalled or changed meanwhile
                self._undelegate(parent)
                self._not_before[parent] = max(self._not_before.get(parent, 0.0),
                                               time.monotonic() + ASK_WINDOW_S)
                return
            self.held[parent] = Held(reply.result.attr, names, sclass=reply.storage_class)
        except Exception as exc:   # refused (EBUSY, E2BIG, EACCES), or the cluster
            log.debug("not taking directory %d: %s", parent, exc)
            self._not_before[parent] = time.monotonic() + REFUSED_S
        finally:
            self._asking.pop(parent, None)
            self._stale.discard(parent)

    async def _names(self, parent: int) -> dict[bytes, tuple[int, int]]:
        names, cookie = {}, 0
        while True:
            reply = await self.md.read(pb.Caller(), readdir=mpb.Readdir(
                inode=parent, cookie=cookie, limit=READDIR_PAGE, names_only=True))
            if not reply.entries:
                return names
            names.update((e.name, (e.attr.inode, e.attr.mode)) for e in reply.entries)
            cookie = reply.entries[-1].cookie

    def recall(self, directory: int, wanted: bool = True) -> None:
        """The leader wants the directory back (another session `wanted` it: ask for
        it again only after a while): the creates made in it go first (they are
        ahead on the stream), then the Undelegate, now."""
        if directory in self._asking:
            self._stale.add(directory)
        if wanted:
            self._not_before[directory] = time.monotonic() + REFUSED_S
        held = self.held.pop(directory, None)
        if held is not None:
            self._disown(held)             # others may change them from now on
        self._drop_own(directory)          # its own attributes too
        self._undelegate(directory)

    def give_back(self, directory: int) -> None:
        """This session changes the directory in a way not tracked here (a mkdir, a
        rename...): give it back; ask again only after a while, not at once."""
        held = self.held.pop(directory, None)
        self._drop_own(directory)
        if held is not None:
            self._disown(held)               # their attributes may change at the master
            self._not_before[directory] = time.monotonic() + REFUSED_S
            self._undelegate(directory)

    def _disown(self, held: Held) -> None:
        for ino, _mode in held.names.values():
            self._drop_own(ino)

    def _drop_own(self, ino: int) -> None:
        self.own.pop(ino, None)
        self.own_at.pop(ino, None)
        self.targets.pop(ino, None)
        self.began.pop(ino, None)

    def reset(self) -> None:
        """The session stream was replaced: a recall may have been missed."""
        for directory in list(self.held):
            self.recall(directory, wanted=False)

    def renewed(self) -> None:
        """The cluster closed the session (and with it the directories it held and
        the inode numbers reserved for it); a new one starts with nothing."""
        for directory in list(self.held):
            self._disown(self.held.pop(directory))
        self._stale.update(self._asking)
        self.inodes.reset()
        self.chunk_ids.reset()

    def _undelegate(self, directory: int) -> None:
        self.md.mutate_deferred(pb.Caller(), undelegate=pb.Undelegate(dir=directory))
        self.md.send_deferred()

    # -- reserved numbers ----------------------------------------------------------------
    async def _reserve_inodes(self, count: int) -> tuple[int, int]:
        result = await self.md.mutate(pb.Caller(),
                                      reserve_inodes=pb.ReserveInodes(count=count))
        return result.first_inode, result.inode_count

    async def _reserve_chunks(self, count: int) -> tuple[int, int]:
        reply = await self.md.mutate_reply(pb.Caller(),
                                           reserve_chunks=pb.ReserveChunks(count=count))
        self.placement = [t.address for t in reply.targets]
        return reply.result.first_chunk, reply.result.chunk_count

    def has_inodes(self) -> bool:
        """Reserved inode numbers are at hand (creates can be answered here)."""
        return self.inodes.at_hand()

    def _live(self) -> bool:
        return time.monotonic() - self.md.last_heard < LIVE_S

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()


def spread(chunk_id: int, servers: list[str], copies: int) -> list[str]:
    """`copies` of `servers` for a chunk, chosen by the chunk id (rendezvous hashing:
    new chunks spread evenly, and each server's share moves little when one joins)."""
    def weight(address: str) -> bytes:
        return hashlib.blake2b(f"{chunk_id}/{address}".encode(), digest_size=8).digest()
    return sorted(servers, key=weight)[:copies]


def _node(attr: pb.Attr) -> r.Inode:
    return r.Inode(attr.inode, attr.mode, attr.uid, attr.gid, attr.nlink, attr.size,
                   attr.atime_ns, attr.mtime_ns, attr.ctime_ns)


def _unknown(task: asyncio.Task) -> bool:
    """Whether a failed change's outcome is unknown rather than a refusal: no leader
    answered in time, or the session closed while it was in doubt (EIO). The kernel
    forgets the name either way, and asks the master again."""
    if task.cancelled():
        return False
    if (exc := task.exception()) is not None:
        return isinstance(exc, ClusterUnavailableError)
    return task.result().errno == errno.EIO


def _failure(task: asyncio.Task) -> str | None:
    if task.cancelled():
        return "cancelled"
    if (exc := task.exception()) is not None:
        return str(exc)
    reply = task.result()
    return f"{errno.errorcode.get(reply.errno, reply.errno)}: {reply.message}" \
        if reply.errno else None
