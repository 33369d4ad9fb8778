"""Which mounts the kernel has: /proc/self/mountinfo, read and parsed."""

import os
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    device: str       # "major:minor"; the bdi of a FUSE mount is named by it
    fstype: str       # "fuse.mooseng" for ours
    source: str


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        dash = fields.index("-")
        mounts.append(Mount(_unescape(fields[4]), fields[2], fields[dash + 1],
                            _unescape(fields[dash + 2])))
    return mounts


def canonical(mountpoint: str) -> str:
    """The absolute path mountinfo shows. Only the parent's symlinks are resolved:
    looking at the mount point itself could hang on a stuck mount."""
    path = os.path.abspath(mountpoint)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def find(mountpoint: str, path: str = MOUNTINFO) -> Mount | None:
    """The topmost mount at `mountpoint`, if any."""
    target = canonical(mountpoint)
    with open(path) as f:
        found = [m for m in parse(f.read()) if m.mountpoint == target]
    return found[-1] if found else None
