"""Open files and directories of a mount, by the handle number the kernel holds.

pyfuse3 passes only the handle to read, write, flush, release and readdir, so a
handle keeps who opened it (the Caller whose rights the master checks) and what
it is.
"""

import itertools
from dataclasses import dataclass, field

from schemas import metadata_pb2 as mpb
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


@dataclass
class OpenDir:
    inode: int
    caller: pb.Caller
    attr: pb.Attr                             # as it was opened
    parent: pb.Attr | None = None             # "..", fetched with the first page
    page: list[mpb.DirEntry] = field(default_factory=list)
    page_cookies: list[int] = field(default_factory=list)   # each entry's, ascending
    page_cookie: int = -1                     # the cookie `page` was read from
    page_epoch: int = -1                      # the kernel cache epoch it was asked at
    page_last: bool = False                   # the page runs to the directory's end


class Handles:
    def __init__(self):
        self._numbers = itertools.count(1)
        self.files: dict[int, OpenFile] = {}
        self.dirs: dict[int, OpenDir] = {}
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

    def add_dir(self, handle: OpenDir) -> int:
        fh = next(self._numbers)
        self.dirs[fh] = handle
        return fh
