"""Render a projection's namespace as an indented listing, for humans."""

import stat
from collections.abc import Iterator

from schemas import namespace_pb2 as pb
from services.common.posix.records import ROOT_INO
from services.metadata.namespace import reads

ROOT = pb.Caller(uid=0, gid=0)


def _describe(name: str, attr: pb.Attr, view) -> str:
    mode = stat.filemode(attr.mode)
    owner = f"{attr.uid}:{attr.gid}"
    size = f"{attr.rdev >> 8},{attr.rdev & 0xff}" if stat.S_ISCHR(attr.mode) or \
        stat.S_ISBLK(attr.mode) else str(attr.size)
    line = f"{mode} {attr.nlink:>3} {owner:>11} {size:>9}  {name}"
    if stat.S_ISLNK(attr.mode):
        line += " -> " + reads.readlink(view, attr.inode).decode(errors="replace")
    return line


def _entries(view, ino: int) -> Iterator[reads.DirEntry]:
    """A directory's entries by name within each page, page by page."""
    cookie = 0
    while page := reads.readdir(view, ROOT, ino, cookie):
        yield from sorted(page, key=lambda e: e.name)
        cookie = page[-1].cookie


def render(view, ino: int = ROOT_INO, indent: str = "") -> Iterator[str]:
    if not indent:
        yield _describe("/", reads.getattr(view, ino), view)
    for entry in _entries(view, ino):
        name = entry.name.decode(errors="replace")
        yield _describe(indent + "  " + name, entry.attr, view)
        if stat.S_ISDIR(entry.attr.mode):
            yield from render(view, entry.attr.inode, indent + "  ")
