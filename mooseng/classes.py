"""`mooseng class` and `mooseng chunks`: storage classes of paths, and chunk health.

Paths are absolute in the MooseNG namespace (`/projects/a`), not in a mount.
Setting a class recursively is one small command per node, so a big tree never
stalls the log, and an interrupted run can simply be started again.
"""

import errno
import stat

from fuse_client.metadata_client import MetadataClient
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix.errors import FsError
from services.common.posix.records import ROOT_INO

ROOT = pb.Caller(uid=0, gid=0)


async def resolve(client: MetadataClient, path: str) -> pb.Attr:
    """The attributes of the node at `path`; FsError(ENOENT...) names the part missing."""
    if not path.startswith("/"):
        raise FsError(errno.EINVAL, f"{path!r}: give an absolute path in the file system")
    attr = (await client.read(ROOT, getattr=mpb.Getattr(inode=ROOT_INO))).attr
    for name in filter(None, path.split("/")):
        try:
            attr = (await client.read(ROOT, lookup=mpb.Lookup(parent=attr.inode,
                                                               name=name.encode()))).attr
        except FsError as exc:
            raise FsError(exc.errno, f"{path}: {name}: {exc.message}") from None
    return attr


async def get_class(client: MetadataClient, path: str) -> str:
    attr = await resolve(client, path)
    return (await client.read(ROOT, get_class=mpb.GetClass(inode=attr.inode))).storage_class


async def set_class(client: MetadataClient, path: str, text: str,
                    recursive: bool) -> tuple[int, list[str]]:
    """Set the class of `path` (and, recursively, of everything under it). Returns the
    number of nodes changed and, when recursive, the files left as they were because
    their data cannot change shape (EOPNOTSUPP): one such file does not stop the walk."""
    attr = await resolve(client, path)
    changed, kept = 0, []
    pending = [(path.rstrip("/") or "/", attr)]
    while pending:
        where, node = pending.pop()
        try:
            await client.mutate(ROOT, set_class=pb.SetClass(inode=node.inode,
                                                            storage_class=text))
        except FsError as exc:
            if not recursive or exc.errno != errno.EOPNOTSUPP:
                raise FsError(exc.errno, f"{where}: {exc.message}") from None
            kept.append(where)
            continue
        changed += 1
        if recursive and stat.S_ISDIR(node.mode):
            pending.extend((f"{where.rstrip('/')}/{name.decode(errors='replace')}", child)
                           for name, child in await _children(client, node.inode))
    return changed, kept


async def _children(client: MetadataClient, ino: int) -> list[tuple[bytes, pb.Attr]]:
    found, cookie = [], 0
    while True:
        reply = await client.read(ROOT, readdir=mpb.Readdir(inode=ino, cookie=cookie,
                                                            limit=1000))
        found.extend((e.name, e.attr) for e in reply.entries
                     if stat.S_ISDIR(e.attr.mode) or stat.S_ISREG(e.attr.mode))
        if not reply.entries:
            return found
        cookie = reply.entries[-1].cookie


async def health(client: MetadataClient) -> mpb.Health:
    return (await client.read(ROOT, chunk_health=mpb.ChunkHealth())).health


def render_health(h: mpb.Health) -> str:
    lines = ["SERVER                            ADDRESS                UP   FREE GiB  CHUNKS"]
    for s in h.servers:
        lines.append(f"{s.server_id:<33} {s.address:<22} {'yes' if s.connected else 'NO':<4} "
                     f"{s.free_bytes / (1 << 30):>8.1f}  {s.chunks:>6}")
    lines.append(f"chunks {h.chunks}: healthy {h.healthy}, under goal {h.under_goal}, "
                 f"missing {h.missing}, over goal {h.over_goal}; damaged copies {h.damaged}, "
                 f"orphans {h.orphans}, jobs running {h.jobs}"
                 + ("" if h.settled else " (first check of every chunk not finished yet)"))
    return "\n".join(lines)
