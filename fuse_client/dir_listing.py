"""Positions in a directory listing as the kernel sees them.

The kernel resumes a listing at the position of the last entry it accepted. "."
is position 1 and ".." position 2; an entry the master returned with cookie c is
at c + 2 (master cookies are hash + 1, below 2**62, so they fit). A master page
holds many more entries than one kernel request takes, so the page is kept on the
open directory and served from until it runs out.
"""

from schemas import metadata_pb2 as mpb

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


def rest_of_page(page: list[mpb.DirEntry], page_cookie: int,
                 cookie: int) -> list[mpb.DirEntry] | None:
    """The entries of a kept page after `cookie`, or None when the page cannot say
    (it was read from elsewhere, or `cookie` is not in it)."""
    if not page:
        return None
    if cookie == page_cookie:
        return page
    for i, entry in enumerate(page):
        if entry.cookie == cookie:
            return page[i + 1:] or None
    return None
