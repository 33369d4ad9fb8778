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

from fuse_client.kernel_cache import KernelCache
from schemas import metadata_pb2 as mpb

log = logging.getLogger(__name__)


class Invalidator:
    def __init__(self, forget_inode, kernel: KernelCache):
        """`forget_inode(inode)`: drop this mount's own knowledge of the inode
        (chunk locations, the version its cached pages are of); `kernel`: what the
        kernel was told (its epoch moves with every invalidation)."""
        self.forget_inode, self.kernel = forget_inode, kernel
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="invalidate")
        self.live = True

    def __call__(self, invalidations: list[mpb.Invalidation]) -> None:
        if not self.live:
            return
        self.kernel.changed()
        loop = asyncio.get_running_loop()
        for inv in invalidations:
            if inv.inode:
                self.forget_inode(inv.inode)
                loop.run_in_executor(self._threads, self._inode, inv.inode)
            if inv.parent and inv.name:
                pyfuse3.invalidate_entry_async(inv.parent, inv.name, ignore_enoent=True)

    def reset(self) -> None:
        """Pushes may have been lost (the session stream broke): take back every
        entry and attribute the kernel holds."""
        if not self.live:
            return
        names, inodes = self.kernel.everything()
        log.info("session stream replaced: invalidating %d entries and %d inodes",
                 len(names), len(inodes))
        for parent, name in names:
            pyfuse3.invalidate_entry_async(parent, name, ignore_enoent=True)
        loop = asyncio.get_running_loop()
        for inode in inodes:
            self.forget_inode(inode)
        loop.run_in_executor(self._threads, self._inodes, inodes)

    def _inodes(self, inodes: list[int]) -> None:
        for inode in inodes:
            self._inode(inode)

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
