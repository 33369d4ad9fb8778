"""Open files of a mount, by the handle number the kernel holds.

pyfuse3 passes only the handle to read, write, flush and release, so a handle keeps
who opened the file (the Caller whose rights the master checks) and what it is.
Directories keep nothing per open (dir_pages.py).
"""

import itertools
from dataclasses import dataclass

from schemas import namespace_pb2 as pb


@dataclass
class OpenFile:
    inode: int
    caller: pb.Caller
    flags: int
    wrote: bool = False     # written through since the last flush
    attr: pb.Attr | None = None   # as it was opened
    logged: bool = True     # the open is recorded at the master (a Release ends it);
    # an open for reading is not, until this mount removes the file's name (pinned)


class Handles:
    def __init__(self):
        self._numbers = itertools.count(1)
        self.files: dict[int, OpenFile] = {}
        self._opens: dict[int, int] = {}      # inode -> open files of it here

    def add_file(self, handle: OpenFile) -> int:
        fh = next(self._numbers)
        self.files[fh] = handle
        self._opens[handle.inode] = self._opens.get(handle.inode, 0) + 1
        return fh

    def file(self, fh: int) -> OpenFile:
        return self.files[fh]

    def drop_file(self, fh: int) -> OpenFile:
        handle = self.files.pop(fh)
        left = self._opens[handle.inode] - 1
        if left:
            self._opens[handle.inode] = left
        else:
            del self._opens[handle.inode]
        return handle

    def is_open(self, inode: int) -> bool:
        return inode in self._opens
