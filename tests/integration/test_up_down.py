"""`mooseng up` / `mooseng down`: a whole local cluster and its mount, in one directory.

Files survive down and up again, and a reboot-like SIGKILL of every process."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from mooseng.local_cluster import is_mounted
from services.logship.archive import Archive, ArchiveError


def mooseng(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mooseng", *args], capture_output=True,
                          text=True, timeout=180)


def ours(*marks: str) -> list[int]:
    """Pids of processes whose command line names one of `marks` (our directories)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if "mooseng" in cmdline and any(m in cmdline for m in marks):
            found.append(int(pid))
    return found


def kill_all(*marks: str) -> None:
    for pid in ours(*marks):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while ours(*marks) and time.monotonic() < deadline:
        time.sleep(0.05)


def archived_index(data: str) -> int:
    try:
        archive = Archive(os.path.join(data, "metalogger"), readonly=True)
    except ArchiveError:
        return 0   # not created yet
    try:
        return archive.last_index
    finally:
        archive.close()


def wait_archive_beyond(data: str, index: int, timeout: float = 60.0) -> int:
    """The metalogger's archive, once it holds more than `index` entries."""
    deadline = time.monotonic() + timeout
    while (now := archived_index(data)) <= index:
        assert time.monotonic() < deadline, f"the metalogger's archive stays at {now}"
        time.sleep(0.2)
    return now


@pytest.fixture
def place(tmp_path):
    data, mnt = str(tmp_path / "cluster"), str(tmp_path / "mnt")
    yield data, mnt
    mooseng("down", "--dir", data)
    kill_all(data, mnt)
    subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)


def test_up_down_up_and_a_reboot_keep_the_files(place):
    data, mnt = place
    started = mooseng("up", "--dir", data, "--mount", mnt)
    assert started.returncode == 0, started.stderr
    assert mnt in started.stdout and "mooseng down" in started.stdout
    assert "metalogger" in started.stdout
    os.mkdir(os.path.join(mnt, "docs"))
    with open(os.path.join(mnt, "docs", "hello.txt"), "wb") as f:
        f.write(b"hello, cluster\n" * 1000)
    archived = wait_archive_beyond(data, 0)

    stopped = mooseng("down", "--dir", data)
    assert stopped.returncode == 0, stopped.stderr
    assert not is_mounted(mnt) and ours(data, mnt) == []

    assert mooseng("up", "--dir", data).returncode == 0     # the mount point is kept
    with open(os.path.join(mnt, "docs", "hello.txt"), "rb") as f:
        assert f.read() == b"hello, cluster\n" * 1000

    kill_all(data, mnt)                                       # a reboot, more or less
    again = mooseng("up", "--dir", data)
    assert again.returncode == 0, again.stderr
    with open(os.path.join(mnt, "docs", "hello.txt"), "rb") as f:
        assert f.read() == b"hello, cluster\n" * 1000
    os.mkdir(os.path.join(mnt, "more"))                     # the archive keeps growing
    wait_archive_beyond(data, archived)


def test_down_without_a_cluster_says_so(tmp_path):
    done = mooseng("down", "--dir", str(tmp_path / "nothing"))
    assert done.returncode == 1 and "no cluster" in done.stderr
