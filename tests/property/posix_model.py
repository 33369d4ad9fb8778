"""A plain, in-memory model of the namespace semantics of docs/namespace-semantics.md.

This is a second, independent implementation of the documented rules, written for
clarity rather than speed: a dict of nodes, a dict of entries per directory, and
link counts, directory sizes and parents derived from the tree on demand. It shares
no code with services/metadata/namespace; the property test drives both with the
same commands and checks that they agree.

Every operation first checks, in the documented order, and only then changes state,
so a failed operation changes nothing.
"""

from __future__ import annotations

import errno as E
from dataclasses import dataclass, field
from typing import NamedTuple

ROOT_INO = 1
NAME_MAX = 255
SYMLINK_MAX = 4095
XATTR_NAME_MAX = 255
XATTR_VALUE_MAX = 65536
SIZE_MAX = 1 << 57
LINK_MAX = 65000
MAX_RESERVED = 1 << 16  # inodes one ReserveInodes may ask for
INLINE_MAX = 64 << 10   # a write ending past this is not kept in the log (EFBIG)
CLIENT_TIME_WINDOW = 10 * 10**9   # a client's own time counts this long before the stamp

NOREPLACE, EXCHANGE = 1, 2
XCREATE, XREPLACE = 1, 2

SUID, SGID, STICKY = 0o4000, 0o2000, 0o1000
GROUP_X = 0o010
PERM_BITS = 0o7777
TYPE_MASK = 0o170000

# File type <-> the type bits of st_mode.
TYPE_BITS = {
    "dir": 0o040000, "reg": 0o100000, "lnk": 0o120000, "fifo": 0o010000,
    "sock": 0o140000, "chr": 0o020000, "blk": 0o060000,
}
# What mknod accepts (type 0 means a regular file).
MKNOD_TYPES = {0: "reg", 0o100000: "reg", 0o010000: "fifo", 0o140000: "sock",
               0o020000: "chr", 0o060000: "blk"}

NOW = "now"  # a TimeUpdate with now set; an int is an explicit time in ns

READ, WRITE, EXEC = 4, 2, 1


class Attr(NamedTuple):
    inode: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    rdev: int


class Outcome(NamedTuple):
    errno: int = 0
    attr: Attr | None = None
    session: int = 0
    first_inode: int = 0   # ReserveInodes: the range reserved
    inode_count: int = 0


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    umask: int = 0o022

    @property
    def root(self) -> bool:
        return self.uid == 0

    def member(self, gid: int) -> bool:
        return gid == self.gid or gid in self.groups


class Refused(Exception):
    def __init__(self, code: int, why: str = ""):
        super().__init__(f"{E.errorcode.get(code, code)} {why}")
        self.code = code


@dataclass
class Node:
    ino: int
    kind: str
    perm: int  # the 0o7777 bits
    uid: int
    gid: int
    atime: int
    mtime: int
    ctime: int
    rdev: int = 0
    size: int = 0          # regular files; symlinks: the target's length
    target: bytes = b""
    entries: dict[bytes, int] | None = None  # directories only
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    data: bytes = b""      # regular files: the bytes written; past them, zeros to size

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def mode(self) -> int:
        return TYPE_BITS[self.kind] | self.perm


@dataclass
class Session:
    acked: int = 0
    results: dict[int, Outcome] = field(default_factory=dict)


def without_privileges(perm: int) -> int:
    """Linux's should_remove_suid: setuid always, setgid when group-executable."""
    perm &= ~SUID
    if perm & GROUP_X:
        perm &= ~SGID
    return perm


class PosixModel:
    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {
            ROOT_INO: Node(ROOT_INO, "dir", 0o755, 0, 0, 0, 0, 0, entries={})}
        self.next_ino = 2
        self.sessions: dict[int, Session] = {}
        self.next_session = 1
        # A session's unused range of reserved inodes [next, end), for its delegated
        # creates: inodes are used in increasing order, skipped ones are lost.
        self.reserved: dict[int, tuple[int, int, int, int]] = {}
        # (session, inode) -> how often the session has it open (creates that open);
        # a file with no name left lives on while any session has it open
        self.opens: dict[tuple[int, int], int] = {}

    # -- derived views ----------------------------------------------------------------
    def directories(self) -> list[int]:
        return sorted(i for i, n in self.nodes.items() if n.is_dir)

    def others(self) -> list[int]:
        return sorted(i for i, n in self.nodes.items() if not n.is_dir)

    def entries(self, ino: int) -> dict[bytes, int]:
        return dict(self.nodes[ino].entries)

    def parent_of(self, ino: int) -> int:
        if ino == ROOT_INO:
            return ROOT_INO
        for d in self.nodes.values():
            if d.is_dir and ino in d.entries.values():
                return d.ino
        raise AssertionError(f"model: inode {ino} is in no directory")

    def links(self, ino: int) -> int:
        node = self.nodes[ino]
        if node.is_dir:
            return 2 + sum(1 for c in node.entries.values() if self.nodes[c].is_dir)
        return sum(list(d.entries.values()).count(ino)
                   for d in self.nodes.values() if d.is_dir)

    def attr(self, ino: int) -> Attr:
        n = self.nodes[ino]
        size = len(n.entries) if n.is_dir else n.size
        return Attr(n.ino, n.mode, self.links(ino), n.uid, n.gid, size, n.atime, n.mtime,
                    n.ctime, n.rdev)

    def used_bytes(self) -> int:
        return sum(n.size for n in self.nodes.values() if n.kind == "reg")

    # -- permission ---------------------------------------------------------------------
    @staticmethod
    def may(user: User, node: Node, want: int) -> bool:
        if user.root:
            if want & EXEC and not node.is_dir:
                return bool(node.perm & 0o111)
            return True
        if user.uid == node.uid:
            bits = (node.perm >> 6) & 7
        elif user.member(node.gid):
            bits = (node.perm >> 3) & 7
        else:
            bits = node.perm & 7
        return (bits & want) == want

    def _need(self, user: User, node: Node, want: int, why: str) -> None:
        if not self.may(user, node, want):
            raise Refused(E.EACCES, why)

    def _may_create(self, user: User, d: Node) -> None:
        self._need(user, d, WRITE | EXEC, "may_create")

    def _may_delete(self, user: User, d: Node, victim: Node) -> None:
        self._need(user, d, WRITE | EXEC, "may_delete")
        if d.perm & STICKY and user.uid not in (0, victim.uid, d.uid):
            raise Refused(E.EPERM, "sticky")

    # -- lookups --------------------------------------------------------------------------
    def _node(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise Refused(E.ENOENT, f"no inode {ino}")
        return node

    @staticmethod
    def _check_name(name: bytes) -> None:
        if len(name) == 0:
            raise Refused(E.EINVAL, "empty name")
        if len(name) > NAME_MAX:
            raise Refused(E.ENAMETOOLONG, "name")
        if b"/" in name or b"\0" in name:
            raise Refused(E.EINVAL, "slash or NUL")
        if name == b"." or name == b"..":
            raise Refused(E.EINVAL, "dot")

    def _parent(self, user: User, ino: int, name: bytes) -> Node:
        d = self._node(ino)
        if not d.is_dir:
            raise Refused(E.ENOTDIR, "parent")
        self._check_name(name)
        self._need(user, d, EXEC, "search")
        return d

    def _is_self_or_ancestor(self, a: int, b: int) -> bool:
        """Is directory `a` the directory `b` or above it?"""
        while True:
            if a == b:
                return True
            if b == ROOT_INO:
                return False
            b = self.parent_of(b)

    def _new_node(self, user: User, now: int, d: Node, name: bytes, kind: str, perm: int,
                  rdev: int = 0, target: bytes = b"", ino: int = 0) -> Attr:
        gid = user.gid
        if d.perm & SGID:
            gid = d.gid
            if kind == "dir":
                perm |= SGID
            elif (perm & SGID and perm & GROUP_X and not user.root
                  and not user.member(gid)):
                perm &= ~SGID
        if not ino:
            ino = self.next_ino
            self.next_ino += 1
        self.nodes[ino] = Node(ino, kind, perm, user.uid, gid, now, now, now, rdev=rdev,
                               size=len(target), target=target,
                               entries={} if kind == "dir" else None)
        d.entries[name] = ino
        d.mtime = d.ctime = now
        return self.attr(ino)

    def _forget_if_unlinked(self, ino: int) -> None:
        open_somewhere = any(i == ino for _, i in self.opens)
        if self.nodes[ino].is_dir or (self.links(ino) == 0 and not open_somewhere):
            del self.nodes[ino]

    def contents(self, ino: int, length: int) -> bytes:
        """The first `length` bytes of a regular file as a reader sees them."""
        n = self.nodes[ino]
        shown = min(length, n.size)
        return (n.data + bytes(max(0, shown - len(n.data))))[:shown]

    @staticmethod
    def client_time(now: int, told: int) -> int:
        return told if told and now - CLIENT_TIME_WINDOW <= told <= now else now

    # -- operations ---------------------------------------------------------------------
    def op_mkdir(self, user, now, parent, name, mode):
        d = self._parent(user, parent, name)
        if name in d.entries:
            raise Refused(E.EEXIST)
        self._may_create(user, d)
        return self._new_node(user, now, d, name, "dir", mode & 0o1777 & ~user.umask)

    def op_mknod(self, user, now, parent, name, mode, rdev=0):
        type_bits = mode & TYPE_MASK
        if type_bits == TYPE_BITS["dir"]:
            raise Refused(E.EPERM, "mknod dir")
        kind = MKNOD_TYPES.get(type_bits)
        if kind is None:
            raise Refused(E.EINVAL, "mknod type")
        d = self._parent(user, parent, name)
        if name in d.entries:
            raise Refused(E.EEXIST)
        self._may_create(user, d)
        device = kind in ("chr", "blk")
        if device and not user.root:
            raise Refused(E.EPERM, "device by non-root")
        return self._new_node(user, now, d, name, kind, mode & PERM_BITS & ~user.umask,
                              rdev=rdev if device else 0)

    def op_create(self, user, now, parent, name, mode, exclusive=False, inode=0, time_ns=0,
                  open=False, data=b"", written_ns=0, *, session=0):
        """`inode` set: a delegated create, answered by the client as new at `time_ns`
        (0: the command's time) with the next inode(s) of its session's range.
        `open`: the new file is open in the session; `data`: its first bytes."""
        if open and not session:
            raise Refused(E.EINVAL, "create with open outside a session")
        if inode:
            after = self._claim(session, inode)
            now = time_ns or now
        d = self._parent(user, parent, name)
        if name in d.entries:
            existing = self.nodes[d.entries[name]]
            if exclusive or inode:
                raise Refused(E.EEXIST)
            if existing.is_dir:
                raise Refused(E.EISDIR)
            return self.attr(existing.ino)
        self._may_create(user, d)
        if data and not inode:
            raise Refused(E.EINVAL, "data with a create the master answers")
        if len(data) > INLINE_MAX:
            raise Refused(E.EFBIG, "data past what is kept inline")
        attr = self._new_node(user, now, d, name, "reg", mode & PERM_BITS & ~user.umask,
                              ino=inode)
        if inode:
            self.reserved[session] = after
        if data:
            node = self.nodes[attr.inode]
            node.data, node.size = data, len(data)
            node.mtime = node.ctime = max(node.mtime, written_ns)
            if not user.root:
                node.perm = without_privileges(node.perm)
            attr = self.attr(attr.inode)
        if open:
            self.opens[(session, attr.inode)] = self.opens.get((session, attr.inode), 0) + 1
        return attr

    def op_write_inline(self, user, now, inode, pieces, time_ns=0, *, session=0):
        """`pieces`: [(offset, bytes)], applied in order."""
        n = self._node(inode)
        if n.kind != "reg":
            raise Refused(E.EISDIR if n.is_dir else E.EINVAL, "not a regular file")
        if session and (session, inode) not in self.opens:
            raise Refused(E.EBADF, "not open in the session")
        data = n.data
        for offset, piece in pieces:
            if not piece:
                continue
            if offset + len(piece) > INLINE_MAX:
                raise Refused(E.EFBIG, "past what is kept inline")
            data = data.ljust(offset, b"\0")
            data = data[:offset] + piece + data[offset + len(piece):]
        now = self.client_time(now, time_ns)
        n.data, n.size = data, max(n.size, len(data))
        n.mtime = n.ctime = now
        if not user.root:
            n.perm = without_privileges(n.perm)
        return self.attr(inode)

    def _claim(self, session, inode):
        """The session's ranges after a delegated node takes `inode` (next unused)."""
        low, end, low2, end2 = self.ranges(session)
        if low <= inode < end:
            return inode + 1, end, low2, end2
        if low2 <= inode < end2:
            return inode + 1, end2, 0, 0
        raise Refused(E.EINVAL, "inode not in the session's unused ranges")

    def op_reserve_inodes(self, user, now, count, *, session=0):
        if not session:
            raise Refused(E.EINVAL, "reserving inodes needs a session")
        if not 0 < count <= MAX_RESERVED:
            raise Refused(E.EINVAL, "reserve count")
        first = self.next_ino
        self.next_ino += count
        low, end, _, _ = self.ranges(session)
        # kept, with the new range after it; or, used up, replaced by the new one
        self.reserved[session] = ((low, end, first, first + count) if low < end
                                  else (first, first + count, 0, 0))
        return Outcome(first_inode=first, inode_count=count)

    def ranges(self, session):
        """(next, end, next2, end2): the current range's unused part and the one
        after it; a used-up current range gives way to the next."""
        low, end, low2, end2 = self.reserved.get(session, (0, 0, 0, 0)) if session \
            else (0, 0, 0, 0)
        if low >= end and low2 < end2:
            return low2, end2, 0, 0
        return low, end, low2, end2

    def op_symlink(self, user, now, parent, name, target, inode=0, time_ns=0, *,
                   session=0):
        if not target:
            raise Refused(E.ENOENT, "empty target")
        if len(target) > SYMLINK_MAX:
            raise Refused(E.ENAMETOOLONG, "target")
        if b"\0" in target:
            raise Refused(E.EINVAL, "NUL in target")
        if inode:
            after = self._claim(session, inode)
            now = time_ns or now
        d = self._parent(user, parent, name)
        if name in d.entries:
            raise Refused(E.EEXIST)
        self._may_create(user, d)
        attr = self._new_node(user, now, d, name, "lnk", 0o777, target=target, ino=inode)
        if inode:
            self.reserved[session] = after
        return attr

    def op_link(self, user, now, inode, new_parent, new_name):
        src = self._node(inode)
        d = self._parent(user, new_parent, new_name)
        if new_name in d.entries:
            raise Refused(E.EEXIST)
        if not user.root and user.uid != src.uid:
            safe = (src.kind == "reg" and not src.perm & SUID
                    and not (src.perm & SGID and src.perm & GROUP_X)
                    and self.may(user, src, READ | WRITE))
            if not safe:
                raise Refused(E.EPERM, "protected hardlinks")
        self._may_create(user, d)
        if src.is_dir:
            raise Refused(E.EPERM, "link to a directory")
        if self.links(src.ino) == 0:
            raise Refused(E.ENOENT, "link to a file with no name left")
        if self.links(src.ino) >= LINK_MAX:
            raise Refused(E.EMLINK)
        d.entries[new_name] = src.ino
        d.mtime = d.ctime = now
        src.ctime = now
        return self.attr(src.ino)

    def op_unlink(self, user, now, parent, name):
        d = self._parent(user, parent, name)
        if name not in d.entries:
            raise Refused(E.ENOENT)
        victim = self.nodes[d.entries[name]]
        self._may_delete(user, d, victim)
        if victim.is_dir:
            raise Refused(E.EISDIR)
        del d.entries[name]
        d.mtime = d.ctime = now
        victim.ctime = now
        self._forget_if_unlinked(victim.ino)
        return None

    def op_rmdir(self, user, now, parent, name):
        d = self._parent(user, parent, name)
        if name not in d.entries:
            raise Refused(E.ENOENT)
        victim = self.nodes[d.entries[name]]
        self._may_delete(user, d, victim)
        if not victim.is_dir:
            raise Refused(E.ENOTDIR)
        if victim.entries:
            raise Refused(E.ENOTEMPTY)
        del d.entries[name]
        d.mtime = d.ctime = now
        del self.nodes[victim.ino]
        return None

    def op_rename(self, user, now, parent, name, new_parent, new_name, flags=0):
        if flags not in (0, NOREPLACE, EXCHANGE):
            raise Refused(E.EINVAL, "rename flags")
        exchange = flags == EXCHANGE
        old_dir = self._parent(user, parent, name)
        new_dir = self._parent(user, new_parent, new_name)
        if name not in old_dir.entries:
            raise Refused(E.ENOENT, "source")
        src = self.nodes[old_dir.entries[name]]
        tgt = self.nodes[new_dir.entries[new_name]] if new_name in new_dir.entries else None
        if flags == NOREPLACE and tgt is not None:
            raise Refused(E.EEXIST)
        if exchange and tgt is None:
            raise Refused(E.ENOENT, "exchange target")
        if src.is_dir and self._is_self_or_ancestor(src.ino, new_dir.ino):
            raise Refused(E.EINVAL, "into itself")
        if tgt is not None and tgt.is_dir and self._is_self_or_ancestor(tgt.ino, old_dir.ino):
            raise Refused(E.EINVAL if exchange else E.ENOTEMPTY, "target above source")
        if tgt is not None and tgt.ino == src.ino:
            return None
        self._may_delete(user, old_dir, src)
        if tgt is None:
            self._may_create(user, new_dir)
        else:
            self._may_delete(user, new_dir, tgt)
            if not exchange and src.is_dir and not tgt.is_dir:
                raise Refused(E.ENOTDIR)
            if not exchange and not src.is_dir and tgt.is_dir:
                raise Refused(E.EISDIR)
        if old_dir.ino != new_dir.ino:
            if src.is_dir:
                self._need(user, src, WRITE, "moving a directory")
            if exchange and tgt.is_dir:
                self._need(user, tgt, WRITE, "moving a directory")
        if not exchange and tgt is not None and tgt.is_dir and tgt.entries:
            raise Refused(E.ENOTEMPTY)
        # effects
        if exchange:
            old_dir.entries[name] = tgt.ino
            new_dir.entries[new_name] = src.ino
            tgt.ctime = now
        else:
            del old_dir.entries[name]
            new_dir.entries[new_name] = src.ino
            if tgt is not None:
                tgt.ctime = now
                self._forget_if_unlinked(tgt.ino)
        src.ctime = now
        for d in (old_dir, new_dir):
            d.mtime = d.ctime = now
        return None

    def op_setattr(self, user, now, inode, mode=None, uid=None, gid=None, size=None,
                   atime=None, mtime=None, via_handle=False, time_ns=0):
        now = self.client_time(now, time_ns)
        n = self._node(inode)
        owner = user.root or user.uid == n.uid
        if size is not None:
            if n.is_dir:
                raise Refused(E.EISDIR)
            if n.kind != "reg":
                raise Refused(E.EINVAL, "truncate a non-regular file")
            if size > SIZE_MAX:
                raise Refused(E.EFBIG)
            if not via_handle:
                self._need(user, n, WRITE, "truncate")
        touch = atime == NOW and mtime == NOW
        if touch and not owner and not self.may(user, n, WRITE):
            raise Refused(E.EACCES, "touch")
        if uid is not None and not (user.root or (user.uid == n.uid and uid == n.uid)):
            raise Refused(E.EPERM, "chown")
        if gid is not None and not (user.root or (
                user.uid == n.uid and (gid == n.gid or user.member(gid)))):
            raise Refused(E.EPERM, "chgrp")
        if mode is not None and not owner and not (
                _only_drops_setid(n.perm, mode) and self.may(user, n, WRITE)):
            raise Refused(E.EPERM, "chmod")
        if (atime is not None or mtime is not None) and not touch and not owner:
            raise Refused(E.EPERM, "explicit times")
        # effects
        new_gid = n.gid if gid is None else gid
        if mode is not None:
            perm = mode & PERM_BITS
            if not user.root and not user.member(new_gid):
                perm &= ~SGID
            n.perm = perm
        elif (uid is not None or gid is not None) and not n.is_dir:
            n.perm = without_privileges(n.perm)
        if uid is not None:
            n.uid = uid
        n.gid = new_gid
        if size is not None:
            n.size = size
            n.data = n.data[:size]
            n.mtime = now
            if not user.root and mode is None:
                n.perm = without_privileges(n.perm)
        if atime is not None:
            n.atime = now if atime == NOW else atime
        if mtime is not None:
            n.mtime = now if mtime == NOW else mtime
        n.ctime = now
        return self.attr(n.ino)

    @staticmethod
    def _xattr_namespace(name: bytes) -> None:
        if not (name.startswith(b"user.") or name.startswith(b"trusted.")
                or name.startswith(b"security.")):
            raise Refused(E.EOPNOTSUPP, "xattr namespace")
        if name in (b"user.", b"trusted.", b"security."):
            raise Refused(E.EINVAL, "a namespace with no attribute name")

    def _xattr_writable(self, user: User, n: Node, name: bytes) -> None:
        if name.startswith(b"trusted.") or name.startswith(b"security."):
            if not user.root:
                raise Refused(E.EPERM, "privileged xattr namespace")
            return
        if n.kind not in ("reg", "dir"):
            raise Refused(E.EPERM, "user xattr on a special file")
        if n.is_dir and n.perm & STICKY and not (user.root or user.uid == n.uid):
            raise Refused(E.EPERM, "user xattr of a sticky directory")
        self._need(user, n, WRITE, "xattr write")

    def op_setxattr(self, user, now, inode, name, value, flags=0):
        if flags not in (0, XCREATE, XREPLACE):
            raise Refused(E.EINVAL, "xattr flags")
        if not 1 <= len(name) <= XATTR_NAME_MAX:
            raise Refused(E.ERANGE, "xattr name length")
        if len(value) > XATTR_VALUE_MAX:
            raise Refused(E.E2BIG)
        self._xattr_namespace(name)
        n = self._node(inode)
        self._xattr_writable(user, n, name)
        if flags == XCREATE and name in n.xattrs:
            raise Refused(E.EEXIST)
        if flags == XREPLACE and name not in n.xattrs:
            raise Refused(E.ENODATA)
        n.xattrs[name] = value
        n.ctime = now
        return self.attr(n.ino)

    def op_removexattr(self, user, now, inode, name):
        if not 1 <= len(name) <= XATTR_NAME_MAX:
            raise Refused(E.ERANGE, "xattr name length")
        self._xattr_namespace(name)
        n = self._node(inode)
        self._xattr_writable(user, n, name)
        if name not in n.xattrs:
            raise Refused(E.ENODATA)
        del n.xattrs[name]
        n.ctime = now
        return self.attr(n.ino)

    # -- sessions and the exactly-once wrapper ------------------------------------------
    def op_open_session(self, user, now, client=""):
        sid = self.next_session
        self.next_session += 1
        self.sessions[sid] = Session()
        return Outcome(session=sid)

    def op_close_session(self, user, now, session):
        if session not in self.sessions:
            raise Refused(E.ENOENT, "session")
        del self.sessions[session]
        self.reserved.pop(session, None)
        for key in [k for k in self.opens if k[0] == session]:
            del self.opens[key]
            if key[1] in self.nodes:
                self._forget_if_unlinked(key[1])
        return None

    SESSION_OPS = ("create", "reserve_inodes", "write_inline", "symlink")  # with session

    def _run(self, user: User, now: int, op: str, args: dict, session: int = 0) -> Outcome:
        if op in self.SESSION_OPS:
            args = {**args, "session": session}
        try:
            out = getattr(self, "op_" + op)(user, now, **args)
        except Refused as refused:
            return Outcome(errno=refused.code)
        if isinstance(out, Outcome):
            return out
        return Outcome(attr=out)

    def apply(self, user: User, now: int, op: str, args: dict, session: int = 0,
              seq: int = 0, acked: int = 0) -> Outcome:
        """One command, with the exactly-once rules when `session` is set."""
        if not session:
            return self._run(user, now, op, args)
        s = self.sessions.get(session)
        if s is None:
            return Outcome(errno=E.ENOTCONN)
        if seq == 0 or acked >= seq or seq <= s.acked:
            return Outcome(errno=E.EINVAL)
        if seq in s.results:
            return s.results[seq]
        out = self._run(user, now, op, args, session)
        if session in self.sessions:  # not closed by this very command
            s.results[seq] = out
            if acked > s.acked:
                s.acked = acked
                s.results = {q: o for q, o in s.results.items() if q > acked}
        return out

    # -- reads ----------------------------------------------------------------------------
    def readdir(self, user: User, ino: int) -> dict[bytes, int]:
        d = self._node(ino)
        if not d.is_dir:
            raise Refused(E.ENOTDIR)
        self._need(user, d, READ, "list")
        return dict(d.entries)

    def lookup(self, user: User, parent: int, name: bytes) -> Attr:
        d = self._node(parent)
        if not d.is_dir:
            raise Refused(E.ENOTDIR)
        if len(name) > NAME_MAX:
            raise Refused(E.ENAMETOOLONG)
        self._need(user, d, EXEC, "search")
        if name == b".":
            return self.attr(d.ino)
        if name == b"..":
            return self.attr(self.parent_of(d.ino))
        if name not in d.entries:
            raise Refused(E.ENOENT)
        return self.attr(d.entries[name])

    def getxattr(self, user: User, ino: int, name: bytes) -> bytes:
        if not 1 <= len(name) <= XATTR_NAME_MAX:
            raise Refused(E.ERANGE)
        self._xattr_namespace(name)
        n = self._node(ino)
        if name.startswith(b"trusted.") and not user.root:
            raise Refused(E.ENODATA)
        if name.startswith(b"user."):
            if n.kind not in ("reg", "dir"):
                raise Refused(E.ENODATA)
            self._need(user, n, READ, "xattr read")
        if name not in n.xattrs:
            raise Refused(E.ENODATA)
        return n.xattrs[name]

    def listxattr(self, user: User, ino: int) -> list[bytes]:
        n = self._node(ino)
        return sorted(k for k in n.xattrs if user.root or not k.startswith(b"trusted."))


def _only_drops_setid(perm: int, mode: int) -> bool:
    """The kernel's "remove privileges" on a write by a non-owner: the mode loses set-id
    bits and nothing else changes."""
    dropped = perm & ~(mode & PERM_BITS)
    return bool(dropped) and not dropped & ~0o6000 and not (mode & PERM_BITS) & ~perm
