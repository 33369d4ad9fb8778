"""Positions in a directory listing as the kernel sees them.

The kernel resumes a listing at the position of the last entry it accepted. "."
is position 1 and ".." position 2; an entry the master returned with cookie c is
at c + 2 (master cookies are hash + 1, below 2**62, so they fit). A master page
holds many more entries than one kernel request takes, so the page is kept on the
open directory and served from until it runs out.
"""

import bisect

from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common.posix.records import name_hash

DOT, DOTDOT = 1, 2
OFFSET = 2


def position(cookie: int) -> int:
    """The kernel's position after an entry the master gave `cookie`."""
    return cookie + OFFSET


def dots_from(start: int) -> list[bytes]:
    """Which of "." and ".." are still to be listed from position `start`."""
    return [b".", b".."][min(start, DOTDOT):]


def cookie_at(start: int) -> int:
    """The master cookie to continue from at kernel position `start`."""
    return max(start - OFFSET, 0)


def rest_of_page(page: list[mpb.DirEntry], cookies: list[int], page_cookie: int,
                 cookie: int, last: bool = False) -> int | None:
    """Where in a kept page the entries after `cookie` start, or None when the page
    cannot say (it was read from elsewhere, or `cookie` is not in it). `cookies`:
    the page's cookies, ascending (the master lists in cookie order). `last`: the page
    runs to the end of the directory, so after its last entry there is nothing (the
    page's length)."""
    if cookie == page_cookie and (page or last):
        return 0
    at = bisect.bisect_left(cookies, cookie)
    if at < len(cookies) and cookies[at] == cookie and (last or at + 1 < len(page)):
        return at + 1
    return None


def in_master_order(entries: list[tuple[bytes, pb.Attr]], cookie: int = 0
                    ) -> list[mpb.DirEntry]:
    """A directory's entries known here, as the master would list them from `cookie`:
    in name-hash order, each with the cookie the master would give it."""
    out = []
    for h, name, attr in sorted((name_hash(n), n, a) for n, a in entries):
        if h >= cookie:
            out.append(mpb.DirEntry(name=name, attr=attr, cookie=h + 1))
    return out
