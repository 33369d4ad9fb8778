"""A cluster out of space behaves like a full local disk: the write that does not fit
fails with ENOSPC (not EIO, and not after minutes of retries), what was committed
before it reads back intact, and a new file's first write gets ENOSPC too, unless
the file is small enough to be kept inline (in the metadata log).

The chunkservers keep their chunks on small tmpfs mounts (150 MiB each: room for two
64 MiB chunks), so three of them hold three chunks at copies=2."""

import contextlib
import errno
import os
import subprocess

import pytest

from tests.integration.mount_fixture import mounted_cluster, read

MiB = 1 << 20
pytestmark = pytest.mark.slow


@contextlib.contextmanager
def small_disks(root, count: int, size: str):
    """tmpfs of `size` on root/cs0.. (the chunkservers' data directories)."""
    if os.geteuid() != 0:
        pytest.skip("mounting tmpfs needs root")
    mounted = []
    try:
        for i in range(count):
            point = os.path.join(str(root), f"cs{i}")
            os.makedirs(point)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", point],
                           check=True, capture_output=True)
            mounted.append(point)
        yield
    finally:
        for point in mounted:
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)


def block(i: int) -> bytes:
    return bytes([i % 251]) * MiB


def write_until_full(path: str, limit_mib: int) -> tuple[int, OSError | None]:
    """Write numbered 1 MiB blocks until an error (or `limit_mib`), then close; the
    MiB that write(2) accepted and the error."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    accepted, error = 0, None
    try:
        for i in range(limit_mib):
            os.write(fd, block(i))
            accepted += 1
    except OSError as exc:
        error = exc
    finally:
        try:
            os.close(fd)
        except OSError as exc:
            error = error or exc
    return accepted, error


def test_a_full_cluster_answers_enospc_and_keeps_what_fit(tmp_path):
    with small_disks(tmp_path, 3, "150m"), mounted_cluster(tmp_path) as cluster:
        path = os.path.join(cluster.mountpoint, "big")
        accepted, error = write_until_full(path, 1024)
        assert error is not None, f"{accepted} MiB fit on 450 MiB of chunkserver disk"
        assert error.errno == errno.ENOSPC, f"the full cluster answered {error!r}"

        size = os.stat(path).st_size
        assert size % MiB == 0 and 64 * MiB <= size <= accepted * MiB
        data = read(path)
        assert len(data) == size
        bad = [i for i in range(size // MiB) if data[i * MiB:(i + 1) * MiB] != block(i)]
        assert not bad, f"MiB blocks {bad[:5]}... of what fit read back wrong"

        with pytest.raises(OSError) as again, \
                open(os.path.join(cluster.mountpoint, "another"), "wb") as f:
            f.write(block(0))
        assert again.value.errno == errno.ENOSPC
        # a small file keeps its bytes in the metadata log: no chunkserver is needed
        with open(os.path.join(cluster.mountpoint, "small"), "wb") as f:
            f.write(b"one more file")
        assert read(os.path.join(cluster.mountpoint, "small")) == b"one more file"
