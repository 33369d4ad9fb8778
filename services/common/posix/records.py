"""How namespace state is laid out in the projection's column families.

Keys are big-endian so that RocksDB's byte order is numeric order:
  inodes    ino(8)                      -> Inode.pack()
  dentries  parent(8) cookie(8) name    -> child(8) type(1)
  xattrs    ino(8) name                 -> value
  sessions  session(8)                  -> SessionRecord.pack()
  results   session(8) seq(8)           -> Result (protobuf)
  opens     session(8) ino(8)           -> u64 count of that session's opens
  inode_opens ino(8)                    -> u64 opens of the inode, all sessions
  orphans   ino(8)                      -> b"" (unlinked, still open)
  chunks    ino(8) chunk_index(8)       -> chunk id(8) version(4)
  chunk_owners chunk id(8)              -> ino(8) chunk_index(8)  (which file refers to it)
  classes   ino(8)                      -> storage class text ("copies=2"), absent: default
  committed chunk id(8)                 -> u32 version of its last commit_write
  delegations dir(8)                    -> session(8) holding it
  reserved  session(8)                  -> next(8) end(8): its unused inode range
  inline    ino(8)                      -> the first bytes of a small file kept in the
                                           log instead of chunks (inline_data.py)
  meta      b"next_inode", ...          -> u64 counters
"""

import hashlib
import stat
import struct

from schemas import namespace_pb2 as pb

ROOT_INO = 1

INODES, DENTRIES, XATTRS, SESSIONS, RESULTS, META = (
    "inodes", "dentries", "xattrs", "sessions", "results", "meta")
OPENS, INODE_OPENS, ORPHANS, CHUNKS = "opens", "inode_opens", "orphans", "chunks"
CHUNK_OWNERS, CLASSES = "chunk_owners", "classes"
# chunk id -> u32: the version its last commit_write was at. A copy older than that
# misses committed data; one at it holds what the file says (the chunk manager
# repairs versions only then). Absent in projections made before it existed.
COMMITTED = "committed"
# Delegated directories and reserved inode ranges (delegation_fold.py).
DELEGATIONS, RESERVED = "delegations", "reserved"
# Small files' bytes (common/posix/inline_data.py). Last: a family's position tags it in
# the replicas' running digest.
INLINE = "inline"
COLUMN_FAMILIES = (INODES, DENTRIES, XATTRS, SESSIONS, RESULTS, META, OPENS, INODE_OPENS,
                   ORPHANS, CHUNKS, CHUNK_OWNERS, CLASSES, COMMITTED, DELEGATIONS, RESERVED,
                   INLINE)
INLINE_MAX = 64 << 10    # a file whose end stays within this may keep its bytes inline
U32 = struct.Struct(">I")
CHUNK_SIZE = 64 << 20

U64 = struct.Struct(">Q")
TWO_U64 = struct.Struct(">QQ")   # two u64 keys side by side, packed in one call

# The struct's own method, not a function around it: the fold packs millions of keys.
u64 = U64.pack


def from_u64(b: bytes) -> int:
    return U64.unpack(b)[0]


def wide(n: int) -> bytes:
    """A 128-bit count, for sums that can outgrow 64 bits."""
    return n.to_bytes(16, "big")


def from_wide(b: bytes) -> int:
    return int.from_bytes(b, "big")


class Inode:
    """One node's attributes. Directories also keep their parent and, in `size`,
    their number of entries; symlinks keep their target."""

    __slots__ = ("ino", "mode", "uid", "gid", "nlink", "size", "atime", "mtime", "ctime",
                 "rdev", "parent", "target")
    _LAYOUT = struct.Struct(">BIIIIQqqqQQ")
    _FORMAT = 1

    def __init__(self, ino, mode, uid, gid, nlink, size, atime, mtime, ctime,
                 rdev=0, parent=0, target=b""):
        self.ino, self.mode, self.uid, self.gid = ino, mode, uid, gid
        self.nlink, self.size, self.rdev, self.parent = nlink, size, rdev, parent
        self.atime, self.mtime, self.ctime = atime, mtime, ctime
        self.target = target

    def pack(self) -> bytes:
        return self._LAYOUT.pack(
            self._FORMAT, self.mode, self.uid, self.gid, self.nlink, self.size,
            self.atime, self.mtime, self.ctime, self.rdev, self.parent) + self.target

    @classmethod
    def unpack(cls, ino: int, data: bytes) -> "Inode":
        layout = cls._LAYOUT
        fields = layout.unpack_from(data)
        if fields[0] != cls._FORMAT:
            raise ValueError(f"inode {ino}: unknown record format {fields[0]}")
        # Positionally: mode .. ctime, rdev, parent, then the target.
        return cls(ino, *fields[1:], data[layout.size:])

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def to_attr(self) -> pb.Attr:
        attr = pb.Attr()
        self.fill_attr(attr)
        return attr

    def fill_attr(self, attr: pb.Attr) -> None:
        """Set `attr` (e.g. a Result's own attr) to these attributes: assigning in
        place costs half of building an Attr and copying it into its Result."""
        attr.SetInParent()
        attr.inode, attr.mode, attr.nlink = self.ino, self.mode, self.nlink
        attr.uid, attr.gid, attr.size, attr.rdev = self.uid, self.gid, self.size, self.rdev
        attr.atime_ns, attr.mtime_ns, attr.ctime_ns = self.atime, self.mtime, self.ctime


def name_hash(name: bytes, _blake2b=hashlib.blake2b, _from_bytes=int.from_bytes) -> int:
    """A stable 62-bit hash of an entry name: its position in the directory."""
    return _from_bytes(_blake2b(name, digest_size=8).digest(), "big") >> 2


def dentry_key(parent: int, name: bytes) -> bytes:
    return TWO_U64.pack(parent, name_hash(name)) + name


def dentry_prefix(parent: int) -> bytes:
    return U64.pack(parent)


def split_dentry_key(key: bytes) -> tuple[int, bytes]:
    """(hash, name) of a dentry key."""
    return from_u64(key[8:16]), key[16:]


def dentry_value(child: int, mode: int) -> bytes:
    return U64.pack(child) + bytes([stat.S_IFMT(mode) >> 12])


def dentry_child(value: bytes) -> int:
    return from_u64(value[:8])


def xattr_key(ino: int, name: bytes) -> bytes:
    return U64.pack(ino) + name


def result_key(session: int, seq: int) -> bytes:
    return TWO_U64.pack(session, seq)


class SessionRecord:
    """An open client session: when it opened, what it has acknowledged, who it is."""

    __slots__ = ("opened_ns", "acked_seq", "client")
    _LAYOUT = struct.Struct(">qQ")

    def __init__(self, opened_ns: int, acked_seq: int, client: str):
        self.opened_ns, self.acked_seq, self.client = opened_ns, acked_seq, client

    def pack(self) -> bytes:
        return self._LAYOUT.pack(self.opened_ns, self.acked_seq) + self.client.encode()

    @classmethod
    def unpack(cls, data: bytes) -> "SessionRecord":
        opened, acked = cls._LAYOUT.unpack_from(data)
        return cls(opened, acked, data[cls._LAYOUT.size:].decode())


CHUNK_VALUE = struct.Struct(">QI")


def parts_class_key(ino: int) -> bytes:
    """The CLASSES key of the ec=K+M shape a file's chunks may still be held in as parts
    after its class changed to copies=N (the chunk manager decodes them back)."""
    return U64.pack(ino) + b"/parts"


def chunk_key(ino: int, index: int) -> bytes:
    return TWO_U64.pack(ino, index)


def split_chunk_key(key: bytes) -> tuple[int, int]:
    """(ino, chunk index) of a chunks key; also the value of a chunk_owners entry."""
    return from_u64(key[:8]), from_u64(key[8:16])
