"""Writing files so that they survive a crash or a power loss: writes that go in
whole, and the directory synced after a name in it was made, renamed or removed (a
rename reaches the disk only with its directory)."""

import os


def pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of `data` at `offset` (os.pwrite may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def fsync_dir(path: str) -> None:
    """Make the names in directory `path` durable (after a create, rename or unlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(src: str, dst: str) -> None:
    """Rename `src` over `dst` (its contents already synced) and sync the directory,
    so that after a power loss `dst` is the new file, never a missing one."""
    os.replace(src, dst)
    fsync_dir(os.path.dirname(os.path.abspath(dst)))
