"""A fresh tmpfs, mounted for a test and always unmounted after it.

tmpfs is the reference the POSIX conformance suite compares the MooseNG mount with:
it is the kernel's own idea of a local POSIX file system, with nanosecond times,
xattrs and every node type."""

import contextlib
import os
import subprocess
import tempfile

import pytest


@contextlib.contextmanager
def mounted_tmpfs(size: str = "512m", options: str = ""):
    """Mount a tmpfs on a new directory and yield its path.

    The mount point is made searchable by everyone (mkdtemp makes it 0700), so tests
    that switch to an unprivileged uid can reach it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point = tempfile.mkdtemp(prefix="mooseng-tmpfs-")
    os.chmod(point, 0o755)
    opts = ",".join(filter(None, [f"size={size}", "mode=0755", options]))
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", point],
                   check=True, capture_output=True)
    try:
        yield point
    finally:
        # Lazy unmount as a fallback: a test that left a file open must not leave
        # the mount behind.
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
        os.rmdir(point)


@pytest.fixture(scope="module")
def tmpfs_dir():
    """One tmpfs for the module; cases make their own fresh directories in it."""
    with mounted_tmpfs() as point:
        yield point
