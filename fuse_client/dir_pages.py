"""The last page of each directory's listing that this mount read, by inode.

A directory handle is its inode number: nothing is kept per open directory (with
fuse_hooks.py the kernel does not even send OPENDIR and RELEASEDIR, two requests
of every `find`, `tar c` and `rm -rf` step). A listing is read by position
(dir_listing.py); the page a read brought is kept here, so the kernel's next
request for the same listing, or another process's, is served from it until it
runs out. A listing that starts again from the beginning always reads a new page:
an `ls` after a change sees it.
"""

from dataclasses import dataclass

from schemas import metadata_pb2 as mpb

MAX_ENTRIES = 100_000   # entries kept over all pages; the oldest page goes first


@dataclass
class DirPage:
    entries: list[mpb.DirEntry]
    cookies: list[int]     # each entry's, ascending
    cookie: int            # the cookie the page was read from
    epoch: int             # the kernel cache epoch it was asked at
    last: bool             # the page runs to the directory's end


class DirPages:
    def __init__(self, limit: int = MAX_ENTRIES):
        self.limit = limit
        self._pages: dict[int, DirPage] = {}
        self._entries = 0

    def get(self, inode: int) -> DirPage | None:
        return self._pages.get(inode)

    def put(self, inode: int, page: DirPage) -> None:
        """Keep `page` as the directory's (the newest); a page bigger than the limit
        is still kept while it is the only one, as its listing is being read."""
        self._drop(inode)
        while self._pages and self._entries + len(page.entries) > self.limit:
            self._drop(next(iter(self._pages)))
        self._pages[inode] = page
        self._entries += len(page.entries)

    def _drop(self, inode: int) -> None:
        old = self._pages.pop(inode, None)
        if old is not None:
            self._entries -= len(old.entries)
