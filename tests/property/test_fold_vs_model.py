"""The namespace fold against an independent model of docs/namespace-semantics.md.

A hypothesis state machine sends random commands from several users (through the
real Applier, on a real RocksDB projection in a fresh temp dir per example) and the
same commands to tests/property/posix_model.py, and checks after every step that

* each command's result agrees: errno, and on success the returned attributes (or
  the new session id);
* a command that fails outside a session changes nothing at all (content digest);
* the whole visible tree agrees: every directory's entries (readdir, also paged),
  "." and "..", every node's attributes, symlink targets and xattrs, statfs, and
  every freed inode number is really gone;
* exactly-once: commands sent in a session and re-sent verbatim return the first
  result and change nothing; acknowledged or closed ones are refused.

Set FOLD_MODEL_EXAMPLES / FOLD_MODEL_STEPS to run longer than the CI default.
"""

import errno
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field

import hypothesis.strategies as st
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from schemas import namespace_pb2 as pb
from services.common.posix import records as r
from services.common.posix.errors import FsError
from services.metadata.applier import Applier
from services.metadata.namespace import delegation_fold, reads
from services.metadata.projection import open_projection
from tests.property.posix_model import (
    MAX_RESERVED,
    NOW,
    ROOT_INO,
    Attr,
    Outcome,
    PosixModel,
    Refused,
    User,
)

EXAMPLES = int(os.environ.get("FOLD_MODEL_EXAMPLES", "150"))
STEPS = int(os.environ.get("FOLD_MODEL_STEPS", "50"))


class Long(bytes):
    """A long byte string that prints short in failure reports."""

    def __repr__(self) -> str:
        return f"{bytes(self[:8])!r}...<{len(self)} bytes>"


ROOT = User(0, 0)
USERS = [ROOT, User(1000, 1000), User(1001, 1001, (1000,)), User(1002, 1002)]
UMASKS = [0o022, 0o000, 0o002, 0o077, 0o027]
IDS = [0, 1000, 1001, 1002, 1003]

NAMES = [b"a", b"b", b"c", b"d", b"pub", Long(b"n" * 255)]
BAD_NAMES = [b"", b"a/b", b".", b"..", Long(b"m" * 256), b"nul\0", Long(b"/" * 256)]
DIR_MODES = [0o755, 0o777, 0o1777, 0o2775, 0o2777, 0o700, 0o555, 0o311, 0o3777, 0o6755,
             0o000, 0o751]
FILE_MODES = [0o644, 0o666, 0o600, 0o755, 0o4755, 0o2755, 0o2745, 0o6777, 0o000, 0o1777,
              0o7777, 0o464, 0o2070, 0o2777, 0o2666, 0o4666]
NODE_TYPES = [0, stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK,
              stat.S_IFDIR, stat.S_IFLNK, 0o030000, 0o050000, 0o170000]
RDEVS = [0, 0x0801, 2**64 - 1]
TARGETS = [b"t", b"../a", b"/abs/path", b"", Long(b"l" * 4095), Long(b"l" * 4096)]
XATTR_NAMES = [b"user.a", b"user.b", b"trusted.t", b"security.s", Long(b"user." + b"n" * 250),
               b"system.posix_acl_access", b"other.x", b"", Long(b"user." + b"n" * 251),
               b"user."]
XATTR_VALUES = [b"v", b"", b"w" * 100, b"\0bin\xff", Long(b"b" * 65536), Long(b"b" * 65537)]
SIZES = [0, 1, 4096, 10**9, 2**57, 2**57 + 1, 2**64 - 1]
EXPLICIT_TIMES = [0, -1, -(2**31) * 10**9 - 7, 2**31 * 10**9 + 123, 2**33 * 10**9,
                  -(2**63), 2**63 - 1]

OP_CLASSES = {
    "mkdir": pb.Mkdir, "mknod": pb.Mknod, "create": pb.Create, "symlink": pb.Symlink,
    "link": pb.Link, "unlink": pb.Unlink, "rmdir": pb.Rmdir, "rename": pb.Rename,
    "setxattr": pb.Setxattr, "removexattr": pb.Removexattr,
    "open_session": pb.OpenSession, "close_session": pb.CloseSession,
    "reserve_inodes": pb.ReserveInodes,
}
INLINE_OFFSETS = [0, 1, 100, 4095, 4096, 65535, 65536, 1 << 20]
INLINE_LENGTHS = [0, 1, 3, 4096, 65536]
SEEN_BYTES = r.INLINE_MAX + 16    # how much of each file's contents is compared


def attr_of(a: pb.Attr) -> Attr:
    return Attr(a.inode, a.mode, a.nlink, a.uid, a.gid, a.size, a.atime_ns, a.mtime_ns,
                a.ctime_ns, a.rdev)


def ename(code: int) -> str:
    return errno.errorcode.get(code, str(code)) if code else "OK"


def short(value):
    if isinstance(value, bytes) and len(value) > 24:
        return f"{value[:8]!r}...<{len(value)} bytes>"
    return repr(value)


def describe(user: User, op: str, args: dict, session=0, seq=0, acked=0) -> str:
    body = ", ".join(f"{k}={short(v)}" for k, v in args.items())
    where = f" session={session} seq={seq} acked={acked}" if session else ""
    return (f"{op}({body}) by uid={user.uid} gid={user.gid} groups={list(user.groups)} "
            f"umask={user.umask:o}{where}")


def body_of(op: str, args: dict):
    if op == "write_inline":
        return pb.WriteInline(inode=args["inode"], time_ns=args["time_ns"], pieces=[
            pb.InlinePiece(offset=o, data=d) for o, d in args["pieces"]])
    if op != "setattr":
        return OP_CLASSES[op](**args)
    fields = {"inode": args["inode"], "via_handle": args.get("via_handle", False),
              "time_ns": args.get("time_ns", 0)}
    for name in ("mode", "uid", "gid", "size"):
        if args.get(name) is not None:
            fields[name] = args[name]
    for name in ("atime", "mtime"):
        when = args.get(name)
        if when == NOW:
            fields[name] = pb.TimeUpdate(now=True)
        elif when is not None:
            fields[name] = pb.TimeUpdate(ns=when)
    return pb.Setattr(**fields)


def command(user: User, now: int, op: str, args: dict, session=0, seq=0, acked=0):
    caller = pb.Caller(uid=user.uid, gid=user.gid, groups=list(user.groups),
                       umask=user.umask)
    return pb.Command(time_ns=now, caller=caller, session=session, seq=seq,
                      acked_seq=acked, **{op: body_of(op, args)})


def weighted(data, *groups, label=None):
    """An item of one of the `groups` [(weight, items)], the group chosen by weight.

    Both choices come from ranges that do not depend on the state (an empty group
    passes its turn to the first non-empty one; the item index wraps around), so that
    hypothesis can delete steps while shrinking without invalidating those after."""
    r = data.draw(st.integers(0, sum(w for w, _ in groups) - 1))
    k = 0
    while r >= groups[k][0]:
        r -= groups[k][0]
        k += 1
    items = list(groups[k][1]) or next(list(g) for _, g in groups if g)
    item = items[data.draw(st.integers(0, 63)) % len(items)]
    if label:
        data.draw(st.just(item), label=label)  # shows the choice in a failure report
    return item


@dataclass
class Sent:
    """A command sent in a session, as the client keeps it for a retry."""
    user: User
    now: int
    op: str
    args: dict
    seq: int
    acked: int
    cmd: pb.Command
    first: pb.Result


@dataclass
class Client:
    sid: int
    next_seq: int = 1
    acked: int = 0
    sent: dict[int, Sent] = field(default_factory=dict)


class FoldVsModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.path = tempfile.mkdtemp(prefix="fold-vs-model-")
        self.proj = open_projection(self.path)
        self.applier = Applier(self.proj)
        self.model = PosixModel()
        self.index = 0
        self.now = 1_700_000_000 * 10**9
        self.clients: dict[int, Client] = {}

    def teardown(self):
        self.proj.close()
        shutil.rmtree(self.path, ignore_errors=True)

    # -- sending commands ---------------------------------------------------------------
    def tick(self, data) -> int:
        self.now += data.draw(st.integers(1, 1000) | st.integers(10**15, 10**17), label="dt")
        return self.now

    def route(self, data) -> tuple[int, int, int, Client | None]:
        """(session, seq, acked, client) to send the next command with."""
        open_ids = sorted(self.model.sessions)
        gone = sorted(set(self.clients) - set(open_ids)) + [999]
        how = weighted(data, (12, ["plain"]), (6, ["session"] if open_ids else []),
                       (1, ["gone"]), (1, ["badseq"] if open_ids else []), label="route")
        if how == "plain":
            return 0, 0, 0, None
        if how == "gone":
            return weighted(data, (1, gone), label="session"), 1, 0, None
        client = self.clients[weighted(data, (1, open_ids), label="session")]
        if how == "badseq":
            seq, acked = data.draw(st.sampled_from(
                [(0, 0), (client.next_seq, client.next_seq), (client.next_seq, 2**63)]))
            return client.sid, seq, acked, None
        seq = client.next_seq
        client.next_seq += 1
        acked = weighted(data, (3, [client.acked]), (1, range(client.acked, seq)),
                         label="acked")
        client.acked = acked
        return client.sid, seq, acked, client

    def send(self, data, kinds, sender: Client | None = None):
        """Send one command of each kind in one apply_many group; compare every result.
        Each is generated against the model as it is after the ones before it. A kind
        is a gen_ method's name or a generator itself; `sender`: all in its session."""
        entries, expected, notes = [], [], []
        for kind in kinds:
            user, op, args = (kind if callable(kind) else getattr(self, "gen_" + kind))(data)
            now = self.tick(data)
            if sender is None:
                session, seq, acked, client = self.route(data)
            else:
                session, seq, acked, client = (sender.sid, sender.next_seq, sender.acked,
                                               sender)
                sender.next_seq += 1
            cmd = command(user, now, op, args, session, seq, acked)
            out = self.model.apply(user, now, op, args, session, seq, acked)
            self.index += 1
            entries.append((self.index, cmd.SerializeToString()
                            if data.draw(st.booleans(), label="as bytes") else cmd))
            expected.append(out)
            notes.append((describe(user, op, args, session, seq, acked), session, client,
                          Sent(user, now, op, args, seq, acked, cmd, None)))
            if op == "open_session" and out.errno == 0:
                self.clients[out.session] = Client(out.session)
        before = self.proj.content_digest() if len(kinds) == 1 else None
        results = self.applier.apply_many(entries)
        assert len(results) == len(entries)
        for out, res, (what, _session, client, sent) in zip(expected, results, notes,
                                                              strict=True):
            self.compare(what, out, res)
            delegated = "delegated " if sent.op == "create" and sent.args.get("inode") else ""
            if sent.op == "create" and sent.args.get("data"):
                delegated += "with data "
            event(f"{delegated}{what.split('(')[0]} -> {ename(res.errno)}")
            if client is not None:
                sent.first = pb.Result()
                sent.first.CopyFrom(res)
                client.sent[sent.seq] = sent
        if before is not None and results[0].errno and not notes[0][1]:
            assert self.proj.content_digest() == before, (
                f"{notes[0][0]} failed ({ename(results[0].errno)}) but changed the projection")

    @staticmethod
    def compare(what: str, expected: Outcome, res: pb.Result) -> None:
        assert res.errno == expected.errno, (
            f"{what}: fold says {ename(res.errno)} ({res.message!r}), model says "
            f"{ename(expected.errno)}")
        if expected.errno:
            assert not res.HasField("attr"), f"{what}: an error with attributes"
        elif expected.attr is None:
            assert not res.HasField("attr"), f"{what}: unexpected attributes {res.attr}"
        else:
            assert res.HasField("attr"), f"{what}: no attributes returned"
            assert attr_of(res.attr) == expected.attr, (
                f"{what}:\n  fold  {attr_of(res.attr)}\n  model {expected.attr}")
        assert res.session == expected.session, f"{what}: session {res.session}"
        assert (res.first_inode, res.inode_count) == (
            expected.first_inode, expected.inode_count), (
            f"{what}: fold reserved {res.first_inode}+{res.inode_count}, model "
            f"{expected.first_inode}+{expected.inode_count}")

    # -- choosing operands --------------------------------------------------------------
    def missing_inodes(self) -> list[int]:
        m = self.model
        freed = [i for i in range(2, m.next_ino) if i not in m.nodes][:3]
        return [0, m.next_ino, 2**64 - 1, *freed]

    def dir_ino(self, data, label="dir") -> int:
        m = self.model
        return weighted(data, (16, m.directories()), (2, m.others()),
                        (2, self.missing_inodes()), label=label)

    def new_parent(self, data, user: User, label="dir") -> int:
        """A directory to create in: often one `user` may write in, else any."""
        m = self.model
        writable = [d for d in m.directories() if m.may(user, m.nodes[d], 3)]
        return weighted(data, (10, writable), (8, m.directories()), (1, m.others()),
                        (1, self.missing_inodes()), label=label)

    def any_ino(self, data, label="inode") -> int:
        m = self.model
        return weighted(data, (10, m.others()), (6, m.directories()),
                        (2, self.missing_inodes()), label=label)

    def children(self, ino: int) -> list[bytes]:
        node = self.model.nodes.get(ino)
        return sorted(node.entries) if node is not None and node.is_dir else []

    def name_in(self, data, parent: int, label="name") -> bytes:
        """A name to create: often taken, mostly from a small pool, sometimes bad."""
        return weighted(data, (7, self.children(parent)), (11, NAMES), (2, BAD_NAMES),
                        label=label)

    def existing_name(self, data, parent: int, label="name") -> bytes:
        """A name to remove or rename: mostly one that is there."""
        return weighted(data, (15, self.children(parent)), (4, NAMES), (1, BAD_NAMES),
                        label=label)

    def subtree(self, ino: int) -> list[int]:
        """The directories at or below `ino`."""
        node = self.model.nodes.get(ino)
        if node is None or not node.is_dir:
            return []
        found = [ino]
        for child in node.entries.values():
            found += self.subtree(child)
        return found

    def user(self, data, near: int | None = None) -> User:
        """Any user, but often the owner of inode `near`, so that owner-only paths
        (chmod, explicit times, chgrp, sticky directories) are walked as well."""
        node = self.model.nodes.get(near) if near is not None else None
        owners = [u for u in USERS if node is not None and u.uid == node.uid]
        u = weighted(data, (3, USERS), (2, owners), label="user")
        return User(u.uid, u.gid, u.groups, data.draw(st.sampled_from(UMASKS), label="umask"))

    def xattr_name(self, data, ino: int) -> bytes:
        node = self.model.nodes.get(ino)
        present = sorted(node.xattrs) if node is not None else []
        return weighted(data, (5, present), (10, XATTR_NAMES), label="xattr")

    # -- command generators: each returns (user, op, args) ---------------------------------
    def gen_mkdir(self, data):
        user = self.user(data)
        parent = self.new_parent(data, user)
        return user, "mkdir", {
            "parent": parent, "name": self.name_in(data, parent),
            "mode": data.draw(st.sampled_from(DIR_MODES) | st.integers(0, 2**32 - 1),
                              label="mode")}

    def gen_mknod(self, data):
        user = self.user(data)
        parent = self.new_parent(data, user)
        mode = (data.draw(st.sampled_from(NODE_TYPES), label="type")
                | data.draw(st.sampled_from(FILE_MODES), label="perm"))
        return user, "mknod", {
            "parent": parent, "name": self.name_in(data, parent), "mode": mode,
            "rdev": data.draw(st.sampled_from(RDEVS), label="rdev")}

    def gen_create(self, data):
        user = self.user(data)
        parent = self.new_parent(data, user)
        return user, "create", {
            "parent": parent, "name": self.name_in(data, parent),
            "mode": data.draw(st.sampled_from(FILE_MODES), label="mode"),
            "exclusive": data.draw(st.booleans(), label="exclusive")}

    def gen_symlink(self, data):
        user = self.user(data)
        parent = self.new_parent(data, user)
        return user, "symlink", {
            "parent": parent, "name": self.name_in(data, parent),
            "target": data.draw(st.sampled_from(TARGETS), label="target")}

    def gen_link(self, data):
        m = self.model
        source = weighted(data, (12, m.others()), (3, m.directories()),
                          (1, self.missing_inodes()), label="source")
        user = self.user(data, source)
        parent = self.new_parent(data, user)
        return user, "link", {
            "inode": source, "new_parent": parent, "new_name": self.name_in(data, parent)}

    def gen_unlink(self, data):
        parent = self.dir_ino(data)
        return self.user(data, parent), "unlink", {
            "parent": parent, "name": self.existing_name(data, parent)}

    def gen_rmdir(self, data):
        parent = self.dir_ino(data)
        return self.user(data, parent), "rmdir", {
            "parent": parent, "name": self.existing_name(data, parent)}

    def gen_rename(self, data):
        m = self.model
        busy = [d for d in m.directories() if m.nodes[d].entries]
        parent = weighted(data, (12, busy), (4, m.directories()), (1, m.others()),
                          (1, self.missing_inodes()), label="parent")
        name = self.existing_name(data, parent)
        source = self.model.nodes[parent].entries.get(name) if parent in busy else None
        new_parent = weighted(data, (10, m.directories()), (4, [parent]),
                              (3, self.subtree(source)), (1, m.others()),
                              (1, self.missing_inodes()), label="new_parent")
        flags = weighted(data, (10, [0]), (4, [1]), (4, [2]), (1, [3, 4, 0x80000000]),
                         label="flags")
        if flags == 2:  # an exchange needs a target
            new_name = self.existing_name(data, new_parent, "new_name")
        else:
            new_name = self.name_in(data, new_parent, "new_name")
        return self.user(data, source), "rename", {
            "parent": parent, "name": name, "new_parent": new_parent, "new_name": new_name,
            "flags": flags}

    def gen_setattr(self, data):
        """Usually one or two attributes at a time, so every check gets its turn."""
        ino = self.any_ino(data)
        user = self.user(data, ino)
        node = self.model.nodes.get(ino)
        own_ids = [node.uid, node.gid] if node is not None else []

        def maybe(choose, label):
            if data.draw(st.integers(0, 2), label=f"with {label}") != 2:
                return None
            if isinstance(choose, st.SearchStrategy):
                return data.draw(choose, label=label)
            return choose()

        explicit = st.sampled_from(EXPLICIT_TIMES) | st.integers(-(2**63), 2**63 - 1)
        times = weighted(data, (4, ["none"]), (2, ["touch"]), (3, ["explicit"]), label="times")
        if times == "touch":
            atime = mtime = NOW
        elif times == "explicit":
            atime = maybe(st.just(NOW) | explicit, "atime")
            mtime = maybe(st.just(NOW) | explicit, "mtime")
        else:
            atime = mtime = None
        args = {
            "inode": ino,
            "mode": maybe(st.sampled_from(FILE_MODES + DIR_MODES) | st.integers(0, 2**32 - 1),
                          "mode"),
            "uid": maybe(lambda: weighted(data, (2, IDS), (1, own_ids), label="uid"), "uid"),
            "gid": maybe(lambda: weighted(data, (2, IDS), (1, own_ids + list(user.groups)),
                                          label="gid"), "gid"),
            "size": maybe(st.sampled_from(SIZES), "size"),
            "atime": atime,
            "mtime": mtime,
            "via_handle": data.draw(st.booleans(), label="via_handle"),
            "time_ns": weighted(data, (6, [0]), (2, [self.now - 10**6]),
                                (1, EXPLICIT_TIMES), label="time_ns"),
        }
        return user, "setattr", args

    def gen_setxattr(self, data):
        ino = self.any_ino(data)
        return self.user(data, ino), "setxattr", {
            "inode": ino, "name": self.xattr_name(data, ino),
            "value": data.draw(st.sampled_from(XATTR_VALUES), label="value"),
            "flags": weighted(data, (6, [0]), (3, [1]), (3, [2]), (1, [3, 4]), label="flags")}

    def gen_removexattr(self, data):
        ino = self.any_ino(data)
        return self.user(data, ino), "removexattr", {
            "inode": ino, "name": self.xattr_name(data, ino)}

    def gen_reserve_inodes(self, data):
        return self.user(data), "reserve_inodes", {
            "count": weighted(data, (8, [1, 2, 3, 5]), (1, [0, MAX_RESERVED + 1]),
                              label="count")}

    def gen_delegated_create(self, data, sid: int):
        """A create the client of session `sid` answered itself: mostly the next inode
        of its range, sometimes a later one (skipping some), sometimes one it may not
        use (used, below, past the range); at the time it told the application."""
        m = self.model
        low, end, low2, end2 = m.ranges(sid)
        bad = [i for i in (low - 1, end2 or end, m.next_ino, 2**64 - 1)
               if i > 0 and not low2 <= i < end2]
        inode = weighted(data, (10, [low] if low < end else []), (3, range(low + 1, end)),
                         (3, [low2] if low2 < end2 else []), (2, bad), label="inode")
        time_ns = weighted(data, (6, [self.now - 1, self.now - 10**9]), (1, [0]),
                           (2, EXPLICIT_TIMES), label="time_ns")
        user = self.user(data)
        parent = self.new_parent(data, user)
        return user, "create", {
            "parent": parent, "name": self.name_in(data, parent),
            "mode": data.draw(st.sampled_from(FILE_MODES), label="mode"),
            "exclusive": data.draw(st.booleans(), label="exclusive"),
            "inode": inode, "time_ns": time_ns,
            "open": data.draw(st.booleans(), label="open"),
            "data": self.bytes_of(data, "data"),
            "written_ns": weighted(data, (3, [0]), (3, [self.now]),
                                   (1, EXPLICIT_TIMES), label="written_ns")}

    @staticmethod
    def bytes_of(data, label: str) -> bytes:
        length = data.draw(st.sampled_from(INLINE_LENGTHS) | st.integers(0, 70_000),
                           label=f"{label} length")
        return Long(bytes([data.draw(st.integers(0, 255), label=label)]) * length)

    def gen_write_inline(self, data, sid: int):
        """Writes to a small file by a session: mostly one it has open, in pieces that
        fit INLINE_MAX or just do not."""
        m = self.model
        mine = sorted({i for s, i in m.opens if s == sid and i in m.nodes})
        inode = weighted(data, (10, mine), (2, m.others()), (1, m.directories()),
                         (1, self.missing_inodes()), label="inode")
        pieces = [(data.draw(st.sampled_from(INLINE_OFFSETS) | st.integers(0, 70_000),
                             label="offset"), self.bytes_of(data, "piece"))
                  for _ in range(data.draw(st.integers(0, 3), label="pieces"))]
        time_ns = weighted(data, (4, [0]), (4, [self.now - 1, self.now - 10**9]),
                           (1, [self.now - 11 * 10**9, self.now + 5]), label="time_ns")
        user = self.user(data, inode)
        return user, "write_inline", {"inode": inode, "pieces": pieces, "time_ns": time_ns}

    def gen_delegated_symlink(self, data, sid: int):
        """A symlink the client of session `sid` answered itself (see above)."""
        m = self.model
        low, end, low2, end2 = m.ranges(sid)
        inode = weighted(data, (10, [low] if low < end else []), (2, range(low + 1, end)),
                         (2, [low2] if low2 < end2 else []), (1, [m.next_ino]),
                         label="inode")
        user = self.user(data)
        parent = self.new_parent(data, user)
        return user, "symlink", {
            "parent": parent, "name": self.name_in(data, parent),
            "target": data.draw(st.sampled_from(TARGETS), label="target"),
            "inode": inode, "time_ns": self.now - 1}

    def gen_open_session(self, data):
        return self.user(data), "open_session", {"client": "host:/mnt"}

    def gen_close_session(self, data):
        sid = weighted(data, (8, sorted(self.model.sessions)), (2, sorted(self.clients)),
                       (1, [0, 12345]), label="close")
        return self.user(data), "close_session", {"session": sid}

    # -- rules ----------------------------------------------------------------------------
    @initialize()
    def shared_directories(self):
        """Directories where everyone may create, so non-root users get going: a
        sticky /tmp, a world-writable /pub, and a world-writable setgid /grp owned by
        1000:1000, where 1002 makes files in a group it is not in (mkdir cannot set
        S_ISGID; chmod can)."""
        open_root = User(0, 0, (), 0)
        setup = [(open_root, "mkdir", {"parent": ROOT_INO, "name": b"tmp", "mode": 0o1777}),
                 (open_root, "mkdir", {"parent": ROOT_INO, "name": b"pub", "mode": 0o777}),
                 (open_root, "mkdir", {"parent": ROOT_INO, "name": b"grp", "mode": 0o775}),
                 (open_root, "setattr", {"inode": 4, "mode": 0o2777, "uid": 1000, "gid": 1000})]
        for user, op, args in setup:
            self.now += 1000
            out = self.model.apply(user, self.now, op, args)
            self.index += 1
            res = self.applier.apply(self.index, command(user, self.now, op, args))
            self.compare(describe(user, op, args), out, res)
        assert res.attr.mode == stat.S_IFDIR | 0o2777

    MUTATIONS = [(6, "mkdir"), (5, "create"), (3, "mknod"), (2, "symlink"), (3, "link"),
                 (3, "unlink"), (2, "rmdir"), (8, "rename"), (6, "setattr"), (4, "setxattr"),
                 (2, "removexattr")]

    def step_kinds(self):
        """(weight, kind) of the next step; kind None when the state does not allow it.
        First comes a step that does nothing: a step whose choices all shrink to zero
        is then a few choices long, which the shrinker can delete outright."""
        sessions = len(self.model.sessions)
        sent = any(c.sent for c in self.clients.values())
        return [(1, "nothing"), *self.MUTATIONS,
                (1, "open_session" if sessions < 3 else None),
                (1, "close_session" if self.clients else None),
                (3, "resend" if sent else None), (2, "read"), (3, "group"),
                (3, "delegated")]

    @rule(data=st.data())
    def step(self, data):
        """One command (or a retry, a read, a group), chosen by weight: creations and
        renames often, sessions now and then."""
        kinds = self.step_kinds()
        r = data.draw(st.integers(0, sum(w for w, _ in kinds) - 1))
        k = 0
        while r >= kinds[k][0]:
            r -= kinds[k][0]
            k += 1
        kind = data.draw(st.just(kinds[k][1] or "nothing"), label="step")
        if kind == "resend":
            self.resend(data)
        elif kind == "read":
            self.read_as_user(data)
        elif kind == "group":
            self.group(data)
        elif kind == "delegated":
            self.delegated(data)
        elif kind != "nothing":
            self.send(data, [kind])

    def group(self, data):
        """Several commands in one apply_many: later ones must see earlier ones."""
        mutations = [(w, [k]) for w, k in self.MUTATIONS]
        size = data.draw(st.integers(2, 6), label="group size")
        self.send(data, [weighted(data, *mutations, label="kind") for _ in range(size)])

    def delegated(self, data):
        """A session's client creates files in a delegated directory without waiting:
        it reserves inodes when it has none left (or now and then anyway), then sends
        its creates, each with an inode of the range and its own time, in one group.
        With no session open, it opens one first."""
        if not self.model.sessions:
            self.send(data, ["open_session"])
            if not self.model.sessions:
                return
        sid = weighted(data, (1, sorted(self.model.sessions)), label="session")
        low, end, _, _ = self.model.ranges(sid)
        kinds = []
        if low >= end or data.draw(st.integers(0, 3), label="reserve again") == 0:
            kinds.append(self.gen_reserve_inodes)
        creates = data.draw(st.integers(1, 3), label="creates")
        kinds += [lambda d: self.gen_delegated_create(d, sid)] * creates
        kinds += [lambda d: self.gen_delegated_symlink(d, sid)] * data.draw(
            st.integers(0, 1), label="symlinks")
        writes = data.draw(st.integers(0, 3), label="writes")
        kinds += [lambda d: self.gen_write_inline(d, sid)] * writes
        self.send(data, kinds, self.clients[sid])

    def resend(self, data):
        """A client retries a command verbatim (a lost reply, a new leader)."""
        sent = [(c, s) for c in self.clients.values() for s in c.sent.values()]
        live = [(c, s) for c, s in sent if c.sid in self.model.sessions]
        unacked = [(c, s) for c, s in live if s.seq > c.acked]
        acked = [(c, s) for c, s in live if s.seq <= c.acked]
        last_acked = [(c, s) for c, s in acked if s.seq == c.acked]
        client, s = weighted(data, (6, unacked), (1, acked), (1, last_acked), (1, sent),
                             label="retry")
        event("retry of an unacknowledged command" if (client, s) in unacked
              else "retry of an acknowledged or closed command")
        what = "retry of " + describe(s.user, s.op, s.args, client.sid, s.seq, s.acked)
        expected = self.model.apply(s.user, s.now, s.op, s.args, client.sid, s.seq, s.acked)
        before = self.proj.content_digest()
        self.index += 1
        res = self.applier.apply(self.index, s.cmd)
        self.compare(what, expected, res)
        if client.sid not in self.model.sessions:
            assert res.errno == errno.ENOTCONN, what
        elif s.seq <= client.acked:
            assert res.errno == errno.EINVAL, what
        else:
            assert res == s.first, f"{what}: first {s.first}, now {res}"
        assert self.proj.content_digest() == before, f"{what} changed the projection"

    def read_as_user(self, data):
        """The read API's permission checks, for any user."""
        user = self.user(data)
        kind = data.draw(st.sampled_from(["readdir", "lookup", "getxattr", "listxattr"]))
        m, proj = self.model, self.proj
        caller = pb.Caller(uid=user.uid, gid=user.gid, groups=list(user.groups))
        if kind == "readdir":
            ino = self.dir_ino(data)
            expected = self._model_read(lambda: m.readdir(user, ino))
            got = self._fold_read(lambda: {e.name: e.attr.inode
                                           for e in reads.readdir(proj, caller, ino)})
        elif kind == "lookup":
            ino = self.dir_ino(data)
            name = weighted(data, (6, self.children(ino)), (3, NAMES),
                            (2, [b".", b"..", Long(b"m" * 256)]))
            expected = self._model_read(lambda: m.lookup(user, ino, name))
            got = self._fold_read(lambda: attr_of(reads.lookup(proj, caller, ino, name)))
        elif kind == "getxattr":
            ino = self.any_ino(data)
            name = self.xattr_name(data, ino)
            expected = self._model_read(lambda: m.getxattr(user, ino, name))
            got = self._fold_read(lambda: reads.getxattr(proj, caller, ino, name))
        else:
            ino = self.any_ino(data)
            expected = self._model_read(lambda: m.listxattr(user, ino))
            got = self._fold_read(lambda: sorted(reads.listxattr(proj, caller, ino)))
        assert got == expected, f"{kind} by {user}: fold {got!r:.200}, model {expected!r:.200}"

    @staticmethod
    def _model_read(f):
        try:
            return 0, f()
        except Refused as refused:
            return refused.code, None

    @staticmethod
    def _fold_read(f):
        try:
            return 0, f()
        except FsError as exc:
            return exc.errno, None

    # -- the whole tree -------------------------------------------------------------------
    @invariant()
    def trees_agree(self):
        m, proj = self.model, self.proj
        assert proj.applied_index == self.index
        for d in m.directories():
            want = m.entries(d)
            listing = reads.readdir(proj, pb.Caller(), d)
            got = {e.name: e for e in listing}
            assert len(got) == len(listing), f"directory {d}: a name listed twice"
            assert sorted(got) == sorted(want), (
                f"directory {d}: fold lists {sorted(map(short, got))}, model "
                f"{sorted(map(short, want))}")
            for name, entry in got.items():
                assert attr_of(entry.attr) == m.attr(want[name]), (
                    f"entry {short(name)} in {d}:\n  fold  {attr_of(entry.attr)}\n  model "
                    f"{m.attr(want[name])}")
            paged, cookie = [], 0
            while page := reads.readdir(proj, pb.Caller(), d, cookie, 2):
                paged += [e.name for e in page]
                cookie = page[-1].cookie
            assert paged == [e.name for e in listing], f"directory {d}: paging differs"
            dot = attr_of(reads.lookup(proj, pb.Caller(), d, b"."))
            dotdot = attr_of(reads.lookup(proj, pb.Caller(), d, b".."))
            assert (dot.inode, dotdot.inode) == (d, m.parent_of(d)), f"./.. of {d}"
        for ino in m.nodes:
            assert attr_of(reads.getattr(proj, ino)) == m.attr(ino), (
                f"inode {ino}:\n  fold  {attr_of(reads.getattr(proj, ino))}\n  model "
                f"{m.attr(ino)}")
            node = m.nodes[ino]
            if node.kind == "lnk":
                assert reads.readlink(proj, ino) == node.target
            if node.kind == "reg":
                held = reads.inline(proj, ino) or b""
                shown = min(SEEN_BYTES, node.size)
                got = (held + bytes(max(0, shown - len(held))))[:shown]
                assert len(held) <= node.size, f"inode {ino}: more inline bytes than its size"
                assert got == m.contents(ino, SEEN_BYTES), f"contents of inode {ino}"
            names = reads.listxattr(proj, pb.Caller(), ino)
            assert sorted(names) == sorted(node.xattrs), f"xattrs of {ino}"
            for name in names:
                assert reads.getxattr(proj, pb.Caller(), ino, name) == node.xattrs[name]
        for ino in range(1, m.next_ino + 2):
            if ino not in m.nodes:
                try:
                    reads.getattr(proj, ino)
                except FsError as exc:
                    assert exc.errno == errno.ENOENT
                else:
                    raise AssertionError(f"inode {ino} should not exist")
        fs = reads.statfs(proj)
        assert (fs.inodes, fs.used_bytes) == (len(m.nodes), m.used_bytes())


    @invariant()
    def ranges_agree(self):
        for sid in set(self.clients) | set(self.model.sessions):
            found = self.proj.get(r.RESERVED, r.u64(sid))
            got = None if found is None else delegation_fold.RANGES.unpack(found)
            assert got == self.model.reserved.get(sid), f"reserved range of session {sid}"


# No explain phase: on a failure it replays the shrunk run hundreds of times (minutes)
# only to annotate which draws did not matter.
FoldVsModel.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestFoldVsModel = FoldVsModel.TestCase


# -- fold bugs the state machine found, pinned as plain tests ------------------------------

def _apply_all(path, commands):
    proj = open_projection(str(path))
    try:
        applier = Applier(proj)
        return [applier.apply(i, c) for i, c in enumerate(commands, start=1)]
    finally:
        proj.close()


def test_setxattr_checks_the_name_before_the_value_size(tmp_path):
    """docs/namespace-semantics.md (and Linux's setxattr(2)): name 1..255 bytes ->
    ERANGE, then value up to 65,536 bytes -> E2BIG. A bad name with a big value is
    ERANGE."""
    big = b"v" * 65537
    results = _apply_all(tmp_path, [
        pb.Command(time_ns=1, caller=pb.Caller(), setxattr=pb.Setxattr(
            inode=ROOT_INO, name=name, value=big)) for name in (b"", b"user." + b"n" * 251)])
    assert [ename(r.errno) for r in results] == ["ERANGE", "ERANGE"]


def test_used_bytes_past_2_64_does_not_wedge_the_fold(tmp_path):
    """128 sparse files of the largest allowed size (2^57 each) add up to 2^64 bytes:
    the fold must still return a result for the 128th truncate (success, or an
    errno), never raise, or the log entry can never be applied on any replica."""
    user = pb.Caller(uid=1000, gid=1000, umask=0o022)
    proj = open_projection(str(tmp_path / "p"))
    try:
        applier, index = Applier(proj), 0

        def do(caller, **op):
            nonlocal index
            index += 1
            return applier.apply(index, pb.Command(time_ns=index, caller=caller, **op))

        pub = do(pb.Caller(), mkdir=pb.Mkdir(parent=ROOT_INO, name=b"pub", mode=0o777))
        for n in range(128):
            f = do(user, create=pb.Create(parent=pub.attr.inode, name=b"f%d" % n, mode=0o644))
            result = do(user, setattr=pb.Setattr(inode=f.attr.inode, size=1 << 57))
            assert result is not None and proj.applied_index == index
    finally:
        proj.close()
