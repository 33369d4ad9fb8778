"""Drop what another client made stale: the kernel's caches and ours.

The master pushes invalidations for changes made by other sessions. They arrive on
the metadata client's reader task, inside the event loop that also serves FUSE
requests, so nothing here may block it: invalidating an inode can wait for the
kernel to write dirty pages back through this very loop, so it runs in a thread,
and entries go through pyfuse3's own notification thread.
"""

import asyncio
import errno
import logging
from concurrent.futures import ThreadPoolExecutor

import pyfuse3

from schemas import metadata_pb2 as mpb

log = logging.getLogger(__name__)


class Invalidator:
    def __init__(self, forget_inode):
        """`forget_inode(inode)`: drop this mount's own knowledge of the inode
        (chunk locations, the version its cached pages are of)."""
        self.forget_inode = forget_inode
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="invalidate")
        self.live = True

    def __call__(self, invalidations: list[mpb.Invalidation]) -> None:
        if not self.live:
            return
        loop = asyncio.get_running_loop()
        for inv in invalidations:
            if inv.inode:
                self.forget_inode(inv.inode)
                loop.run_in_executor(self._threads, self._inode, inv.inode)
            if inv.parent and inv.name:
                pyfuse3.invalidate_entry_async(inv.parent, inv.name, ignore_enoent=True)

    def _inode(self, inode: int) -> None:
        if not self.live:
            return
        try:
            pyfuse3.invalidate_inode(inode)
        except OSError as exc:
            if exc.errno != errno.ENOENT:   # ENOENT: the kernel does not hold it
                log.warning("invalidating inode %d: %s", inode, exc)
        except Exception:    # the session may be closing under us
            log.debug("invalidating inode %d failed", inode, exc_info=True)

    def close(self) -> None:
        self.live = False
        self._threads.shutdown(wait=False, cancel_futures=True)
