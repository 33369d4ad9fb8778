"""What this mount has let the kernel cache, so that it can take it all back.

The kernel keeps the entries and attributes we answer with for the mount's
timeouts (long by default), and stays right because the leader pushes an
invalidation for every change another client makes. Two gaps remain, and this
module closes both:

- A push can overtake the answer it invalidates: the leader answers a lookup, a
  change lands and its invalidation reaches the kernel before pyfuse3 has written
  the lookup's answer, which the kernel would then keep. So every request notes
  the invalidation count when it starts, and an answer given while invalidations
  arrived is given with no caching time at all.
- Pushes are lost while the session stream is down (a leader change). After a
  new stream is subscribed, everything the kernel holds is invalidated.
"""

NO_NAME = (0, b"")


class KernelCache:
    def __init__(self):
        self.epoch = 0          # invalidations received so far (a reset counts too)
        self._lookups: dict[int, int] = {}           # inode -> the kernel's lookup count
        self._names: dict[int, tuple[int, bytes]] = {}  # inode -> (parent, name) last told

    # -- bookkeeping ----------------------------------------------------------------------
    def changed(self) -> None:
        """An invalidation arrived: answers in flight must not be cached."""
        self.epoch += 1

    def fresh_since(self, epoch: int) -> bool:
        """True when no invalidation arrived since `epoch` was read."""
        return self.epoch == epoch

    def told(self, inode: int, parent: int, name: bytes) -> None:
        """The kernel got an entry for `inode` (its lookup count grows by one)."""
        self._lookups[inode] = self._lookups.get(inode, 0) + 1
        if name:
            self._names[inode] = (parent, name)

    def name_of(self, inode: int) -> tuple[int, bytes]:
        """(parent, name) the kernel last got the inode by; NO_NAME if none."""
        return self._names.get(inode, NO_NAME)

    def forgotten(self, inode: int, count: int) -> None:
        left = self._lookups.get(inode, 0) - count
        if left > 0:
            self._lookups[inode] = left
        else:
            self._lookups.pop(inode, None)
            self._names.pop(inode, None)

    def __len__(self) -> int:
        return len(self._lookups)

    # -- taking it back -----------------------------------------------------------------
    def everything(self) -> tuple[list[tuple[int, bytes]], list[int]]:
        """Every (parent, name) and every inode the kernel may hold, to invalidate."""
        self.changed()
        names = [n for n in self._names.values() if n != NO_NAME]
        return names, list(self._lookups)
