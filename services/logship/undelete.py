"""Subtree undelete: one subtree of a restored projection brought back into the live
namespace as new commands (mkdir, create, symlink, mknod, link, setxattr, setattr),
file contents by adopting the chunks the deleted files left behind (AdoptChunks):
nothing is copied, so it works only while the cluster still retains those chunks.
Small files whose bytes were kept inline (in the log) are written again from the
restored projection: they come back whatever the chunk retention.

Before changing anything it checks that --into does not exist and that every chunk
still has a copy at its version. The tree is built under a hidden name next to --into
(".NAME.restoring") and renamed to --into once complete, so --into never appears half
made. The same command run again after a failure resumes: what the hidden tree
already holds is kept, what is missing is made. (Within one run, a leader failover
is harmless anyway: each command is exactly once, as for every client.)
"""

import errno
import stat
from dataclasses import dataclass, field

from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix import records as r
from services.common.posix.errors import FsError
from services.metadata.namespace import reads

ROOT = pb.Caller(uid=0, gid=0)   # umask 0: modes are restored as they were
PAGE = 1000
RENAME_NOREPLACE = 1
O_WRONLY = 0o1


class UndeleteError(Exception):
    """The subtree cannot be brought back; the message says why and what to do."""


@dataclass
class PastNode:
    path: str            # relative to the subtree's root ("" is the root)
    attr: pb.Attr
    target: bytes = b""
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[pb.Chunk] = field(default_factory=list)
    inline: bytes | None = None   # a small file's bytes kept in the log


def split(path: str) -> list[bytes]:
    if not path.startswith("/"):
        raise UndeleteError(f"{path!r}: give an absolute path in the file system, e.g. /proj")
    return [p.encode() for p in path.split("/") if p]


def past_tree(view, path: str) -> list[PastNode]:
    """Every node under `path` in the restored projection, parents before children."""
    ino = r.ROOT_INO
    try:
        for name in split(path):
            ino = reads.lookup(view, ROOT, ino, name).inode
    except FsError as exc:
        raise UndeleteError(f"{path} did not exist at the restored point ({exc.message})") \
            from None
    nodes: list[PastNode] = []
    _collect(view, "", reads.getattr(view, ino), nodes)
    return nodes


def _collect(view, path: str, attr: pb.Attr, nodes: list[PastNode]) -> None:
    node = PastNode(path, attr)
    node.xattrs = [(n, reads.getxattr(view, ROOT, attr.inode, n))
                   for n in reads.listxattr(view, ROOT, attr.inode)]
    if stat.S_ISLNK(attr.mode):
        node.target = reads.readlink(view, attr.inode)
    elif stat.S_ISREG(attr.mode):
        node.inline = reads.inline(view, attr.inode)
        node.chunks = [r_chunk for i in range(-(-attr.size // r.CHUNK_SIZE))
                       if (r_chunk := reads.chunk(view, attr.inode, i)) is not None]
    nodes.append(node)
    if stat.S_ISDIR(attr.mode):
        cookie = 0
        while page := reads.readdir(view, ROOT, attr.inode, cookie, PAGE):
            for entry in page:
                _collect(view, f"{path}/{entry.name.decode(errors='surrogateescape')}",
                         entry.attr, nodes)
            cookie = page[-1].cookie


async def resolve(md, path: str) -> int:
    """The live inode at `path`; FsError (ENOENT...) if it is not there."""
    ino = r.ROOT_INO
    for name in split(path):
        ino = (await md.read(ROOT, lookup=mpb.Lookup(parent=ino, name=name))).attr.inode
    return ino


async def check_retained(md, nodes: list[PastNode], shown: str) -> int:
    """Every chunk still has a copy at its version on the live cluster; their count."""
    asked: set[int] = set()
    for node in nodes:
        for chunk in node.chunks:
            if chunk.id in asked:
                continue   # a hard link's
            asked.add(chunk.id)
            reply = await md.read(ROOT, locate_chunk_id=mpb.LocateChunkId(
                chunk_id=chunk.id, version=chunk.version))
            if not reply.locations:
                raise UndeleteError(
                    f"{shown}{node.path}: contents no longer retained (chunk {chunk.id} "
                    f"version {chunk.version} has no copy on any connected chunkserver: "
                    "deleted after the retention window, or its servers are down); "
                    "nothing was changed")
    return len(asked)


async def undelete(view, md, path: str, into: str) -> dict:
    """Bring `path` as it is in `view` back at `into` (which must not exist)."""
    into_names = split(into)
    if not into_names:
        raise UndeleteError("--into cannot be the root directory")
    nodes = past_tree(view, path)
    try:
        parent = await resolve(md, "/" + "/".join(n.decode() for n in into_names[:-1]))
    except FsError as exc:
        raise UndeleteError(f"the parent of {into} does not exist ({exc.message})") from None
    name = into_names[-1]
    if await _existing(md, parent, name) is not None:
        raise UndeleteError(f"{into} exists: give a new --into (nothing is overwritten)")
    staging = b"." + name + b".restoring"
    resumed = await _existing(md, parent, staging) is not None
    chunks = await check_retained(md, nodes, path)
    try:
        await _build(md, nodes, parent, staging, resumed)
        await md.mutate(ROOT, rename=pb.Rename(parent=parent, name=staging, new_parent=parent,
                                               new_name=name, flags=RENAME_NOREPLACE))
    except FsError as exc:
        raise UndeleteError(f"restoring into {into} stopped ({exc}); what was made is kept "
                            f"under {staging.decode()} next to it: run the same command "
                            "again to finish it") from None
    return {"path": path, "into": into, "nodes": len(nodes), "chunks": chunks,
            "resumed": resumed}


async def _existing(md, parent: int, name: bytes) -> pb.Attr | None:
    try:
        return (await md.read(ROOT, lookup=mpb.Lookup(parent=parent, name=name))).attr
    except FsError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


async def _build(md, nodes: list[PastNode], parent: int, name: bytes,
                 resumed: bool) -> None:
    """Make `nodes` at (parent, name); `resumed`: keep what a failed run made there."""
    made: dict[str, int] = {}        # relative path -> new inode
    by_old: dict[int, int] = {}      # old inode -> new inode, for hard links
    for node in nodes:
        head, _, base = node.path.rpartition("/")
        where = made[head] if node.path else parent
        entry = base.encode(errors="surrogateescape") if node.path else name
        found = await _existing(md, where, entry) if resumed else None
        old = node.attr.inode
        if old in by_old:
            if found is None:
                await md.mutate(ROOT, link=pb.Link(inode=by_old[old], new_parent=where,
                                                   new_name=entry))
            made[node.path] = by_old[old]
        elif found is not None:
            made[node.path] = by_old[old] = found.inode
            await _fill(md, node, found)
        else:
            made[node.path] = by_old[old] = await _make(md, node, where, entry)
    # Attributes last, deepest first: making children changes their directory's times.
    for node in reversed(nodes):
        await _restore_attributes(md, node, made[node.path])


async def _make(md, node: PastNode, parent: int, name: bytes) -> int:
    mode = node.attr.mode
    if stat.S_ISDIR(mode):
        op = {"mkdir": pb.Mkdir(parent=parent, name=name, mode=mode & 0o7777)}
    elif stat.S_ISLNK(mode):
        op = {"symlink": pb.Symlink(parent=parent, name=name, target=node.target)}
    elif stat.S_ISREG(mode):
        op = {"create": pb.Create(parent=parent, name=name, mode=mode & 0o7777,
                                  exclusive=True)}
    else:
        op = {"mknod": pb.Mknod(parent=parent, name=name, mode=mode, rdev=node.attr.rdev)}
    attr = (await md.mutate(ROOT, **op)).attr
    await _fill(md, node, attr)
    return attr.inode


async def _fill(md, node: PastNode, made: pb.Attr) -> None:
    """Contents (unless a failed run adopted them already) and xattrs."""
    if stat.S_ISREG(node.attr.mode) and node.attr.size and not made.size:
        if node.inline is not None:
            await _write_inline(md, made.inode, node.inline, node.attr.size)
        else:
            await md.mutate(ROOT, adopt_chunks=pb.AdoptChunks(
                inode=made.inode, chunks=node.chunks, size=node.attr.size))
    for key, value in node.xattrs:
        await md.mutate(ROOT, setxattr=pb.Setxattr(inode=made.inode, name=key, value=value))


async def _write_inline(md, ino: int, data: bytes, size: int) -> None:
    """A small file's bytes, written again as its writer wrote them (and the zeros
    past them that a truncate made, by size)."""
    await md.mutate(ROOT, open=pb.Open(inode=ino, flags=O_WRONLY))
    try:
        await md.mutate(ROOT, write_inline=pb.WriteInline(
            inode=ino, pieces=[pb.InlinePiece(offset=0, data=data)]))
        if size > len(data):
            await md.mutate(ROOT, setattr=pb.Setattr(inode=ino, size=size))
    finally:
        await md.mutate(ROOT, release=pb.Release(inode=ino))


async def _restore_attributes(md, node: PastNode, ino: int) -> None:
    attr = node.attr
    changes = {"uid": attr.uid, "gid": attr.gid,
               "atime": pb.TimeUpdate(ns=attr.atime_ns),
               "mtime": pb.TimeUpdate(ns=attr.mtime_ns)}
    if not stat.S_ISLNK(attr.mode):
        changes["mode"] = attr.mode & 0o7777
    await md.mutate(ROOT, setattr=pb.Setattr(inode=ino, **changes))
