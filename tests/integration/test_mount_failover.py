"""The mount through failures and next to another mount.

- fio writes and verifies a file while the metadata leader and then a chunkserver
  are SIGKILLed: the job finishes with no verify error, and the data verifies again
  from a dropped page cache.
- Two mounts of one cluster: what one creates, changes, renames or removes, the
  other sees: contents as soon as the writer closed and the reader opens, names and
  attributes at once (pushed invalidations), long before the kernel's attribute and
  entry timeouts (a minute) would end, also when the push was lost in a leader
  change.
"""

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest

from tests.integration import mount_fixture
from tests.integration.mount_fixture import (
    gone,
    mount_process,
    read,
    read_removed_while_open,
    second_mount,
    within,
    write,
)

PUSH_S = 2.0                # time for a pushed invalidation to reach the other kernel
FAILOVER_S = 15.0           # an election, the mounts' reconnection, and their resets


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the mount tests run as root")
    with mount_fixture.mounted_cluster(tmp_path_factory.mktemp("failover")) as c:
        yield c


def fio(*args: str) -> subprocess.Popen:
    return subprocess.Popen(["fio", *args, "--output-format=json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished_cleanly(proc: subprocess.Popen, what: str, timeout: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{what}: fio exited {proc.returncode}: {err}\n{out[-3000:]}"
    assert "verify" not in err, f"{what}: {err}"
    result = json.loads(out)
    for job in result["jobs"]:
        assert job["error"] == 0, f"{what}: {job['jobname']} error {job['error']}"
    return result


def newest_chunkserver(chunks) -> int:
    """The chunkserver that stored something last: it holds a copy of the chunk being
    written now (copies=2 on 3 servers), so killing it hits the write in flight."""
    def newest(i: int) -> float:
        latest = 0.0
        for dirpath, _dirs, files in os.walk(chunks.data_dir(i)):
            for f in files:
                with contextlib.suppress(FileNotFoundError):
                    latest = max(latest, os.stat(os.path.join(dirpath, f)).st_mtime)
        return latest
    return max((i for i in range(chunks.n) if chunks.running(i)), key=newest)


def test_fio_verifies_through_a_leader_kill_and_a_chunkserver_kill(cluster):
    work = os.path.join(cluster.mountpoint, "fio-failover")
    os.mkdir(work)
    job = ["--name=failover", f"--filename={os.path.join(work, 'data')}", "--rw=write",
           "--bs=128k", "--size=160M", "--verify=crc32c", "--direct=0",
           "--ioengine=psync"]
    # 12 MiB/s: the write phase takes ~13 s, long enough for both kills to land in it
    writer = fio(*job, "--rate=12m", "--end_fsync=1")
    killed_node = killed_server = None
    try:
        time.sleep(3)
        leader = cluster.meta.wait_leader()["id"]
        assert cluster.meta.signal(leader, signal.SIGKILL) == -signal.SIGKILL
        killed_node = leader
        time.sleep(4)
        assert writer.poll() is None, "fio finished before the chunkserver kill"
        killed_server = newest_chunkserver(cluster.chunks)
        cluster.chunks.kill(killed_server)
        result = finished_cleanly(writer, "write + verify")
        assert result["jobs"][0]["write"]["io_kbytes"] == 160 * 1024
        again = finished_cleanly(fio(*job, "--verify_only", "--invalidate=1"),
                                 "verify again from the mount")
        assert again["jobs"][0]["read"]["io_kbytes"] == 160 * 1024
        assert cluster.meta.wait_leader()["id"] != killed_node
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        # the cluster as it was, for the next test
        if killed_node is not None:
            cluster.meta.start(killed_node)
        if killed_server is not None:
            cluster.chunks.start(killed_server)
    cluster.meta.wait_converged(60)


# -- two mounts --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def other(cluster):
    """A second mount of the cluster: the path of its root."""
    with second_mount(cluster, "mnt-b") as point:
        yield point


@pytest.fixture
def both(cluster, other, request):
    """One fresh directory as each mount sees it: (path on A, path on B)."""
    name = request.node.name
    os.mkdir(os.path.join(cluster.mountpoint, name))
    return os.path.join(cluster.mountpoint, name), os.path.join(other, name)


LIMIT_S = PUSH_S            # far below the default attribute timeout: only pushes help


def test_names_created_renamed_and_removed_on_one_mount_show_on_the_other(both):
    a, b = both
    assert gone(os.path.join(b, "f"))      # B may now hold a negative entry for it
    write(os.path.join(a, "f"), b"x")
    within(LIMIT_S, lambda: os.path.exists(os.path.join(b, "f")))
    os.rename(os.path.join(a, "f"), os.path.join(a, "g"))
    within(LIMIT_S, lambda: gone(os.path.join(b, "f")) and os.path.exists(os.path.join(b, "g")))
    os.mkdir(os.path.join(a, "sub"))
    write(os.path.join(a, "sub", "inner"), b"x")
    within(LIMIT_S, lambda: os.listdir(os.path.join(b, "sub")) == ["inner"])
    os.unlink(os.path.join(a, "g"))
    within(LIMIT_S, lambda: gone(os.path.join(b, "g")))
    with pytest.raises(FileNotFoundError):
        open(os.path.join(b, "g"), "rb").close()
    assert sorted(os.listdir(b)) == ["sub"]


@pytest.mark.parametrize("change, expected", [
    (lambda p: write(p, b"FIRST VERSION"), b"FIRST VERSION"),   # same size, new bytes
    (lambda p: write(p, b" and more", "ab"), b"first version and more"),
    (lambda p: write(p, b"short"), b"short"),
    (lambda p: os.truncate(p, 0), b""),
], ids=["same-size", "grown", "shrunk", "truncated"])
def test_contents_are_fresh_on_open_after_the_writer_closed(both, change, expected):
    """Close-to-open: once A closed, B's next open reads what A wrote, although B
    read (and may cache) the old contents and size just before."""
    a, b = both
    write(os.path.join(a, "f"), b"first version")
    assert read(os.path.join(b, "f")) == b"first version"
    change(os.path.join(a, "f"))
    assert read(os.path.join(b, "f")) == expected
    within(LIMIT_S, lambda: os.stat(os.path.join(b, "f")).st_size == len(expected))


def test_the_other_way_round_too(both):
    a, b = both
    write(os.path.join(a, "f"), b"from a")
    assert read(os.path.join(b, "f")) == b"from a"
    write(os.path.join(b, "f"), b"b wrote this")
    assert read(os.path.join(a, "f")) == b"b wrote this"


def test_attributes_changed_on_one_mount_show_on_the_other(both):
    a, b = both
    write(os.path.join(a, "f"), b"x")
    os.stat(os.path.join(b, "f"))           # B has the old attributes cached
    os.chmod(os.path.join(a, "f"), 0o600)
    os.chown(os.path.join(a, "f"), 1000, 1000)
    within(LIMIT_S, lambda: (lambda st: (st.st_mode & 0o777, st.st_uid) == (0o600, 1000))(
        os.stat(os.path.join(b, "f"))))
    os.utime(os.path.join(a, "f"), ns=(5_000_000_001, 6_000_000_002))
    within(LIMIT_S, lambda: os.stat(os.path.join(b, "f")).st_mtime_ns == 6_000_000_002)
    os.setxattr(os.path.join(a, "f"), "user.tag", b"v1")
    assert os.getxattr(os.path.join(b, "f"), "user.tag") == b"v1"


def test_a_reader_keeps_reading_what_another_mount_removes(both):
    """Unlink on one mount while the other has the file open: the open file lives
    on, as it would on a local file system."""
    a, b = both
    data = os.urandom(3 << 20)
    assert read_removed_while_open(os.path.join(a, "f"), os.path.join(b, "f"), data) == data


def test_changes_made_while_a_leader_died_show_although_their_pushes_were_lost(cluster, both):
    """B caches a file's attributes and name for a minute. The leader dies; A changes
    the file through the new leader, possibly before B's session is back (so no push
    reaches B). B's new session drops everything its kernel holds, so it sees them."""
    a, b = both
    write(os.path.join(a, "f"), b"x")
    write(os.path.join(a, "doomed"), b"x")
    os.stat(os.path.join(b, "f"))
    os.stat(os.path.join(b, "doomed"))
    b_mount = mount_process(os.path.dirname(b))
    leader = cluster.meta.wait_leader()["id"]
    os.kill(b_mount, signal.SIGSTOP)         # B cannot resubscribe before A's changes
    try:
        assert cluster.meta.signal(leader, signal.SIGKILL) == -signal.SIGKILL
        os.chmod(os.path.join(a, "f"), 0o600)          # waits for the new leader
        os.unlink(os.path.join(a, "doomed"))
        os.kill(b_mount, signal.SIGCONT)
        within(FAILOVER_S, lambda: os.stat(os.path.join(b, "f")).st_mode & 0o777 == 0o600)
        within(FAILOVER_S, lambda: gone(os.path.join(b, "doomed")))
    finally:
        os.kill(b_mount, signal.SIGCONT)
        cluster.meta.start(leader)
        cluster.meta.wait_converged(60)


def test_a_rename_over_a_file_updates_its_other_names_on_the_other_mount(both):
    """Renaming over a name drops a link of the file that was there, and moves the
    source (a new ctime): another mount that cached either by another name sees it."""
    a, b = both
    write(os.path.join(a, "x"), b"x")
    os.link(os.path.join(a, "x"), os.path.join(a, "x-link"))
    write(os.path.join(a, "y"), b"y")
    os.link(os.path.join(a, "y"), os.path.join(a, "y-link"))
    assert os.stat(os.path.join(b, "x-link")).st_nlink == 2      # now cached on B
    ctime = os.stat(os.path.join(b, "y-link")).st_ctime_ns
    time.sleep(0.01)
    os.rename(os.path.join(a, "y"), os.path.join(a, "x"))
    within(LIMIT_S, lambda: os.stat(os.path.join(b, "x-link")).st_nlink == 1)
    within(LIMIT_S, lambda: os.stat(os.path.join(b, "y-link")).st_ctime_ns > ctime)


def test_an_unlink_updates_the_files_other_names_on_the_other_mount(both):
    a, b = both
    write(os.path.join(a, "x"), b"x")
    os.link(os.path.join(a, "x"), os.path.join(a, "x-link"))
    assert os.stat(os.path.join(b, "x-link")).st_nlink == 2      # now cached on B
    os.unlink(os.path.join(a, "x"))
    within(LIMIT_S, lambda: os.stat(os.path.join(b, "x-link")).st_nlink == 1)


# -- delegated directories (docs/delegations.md) ------------------------------------------
def test_a_streak_of_creates_on_one_mount_is_all_seen_by_the_other_at_once(both):
    """The creating mount answers most of these itself (it holds the directory);
    the other mount's listing recalls the directory and sees every one."""
    a, b = both
    for i in range(300):
        write(os.path.join(a, f"f{i}"), b"")
    assert sorted(os.listdir(b)) == sorted(f"f{i}" for i in range(300))
    assert os.stat(os.path.join(b, "f299")).st_ino == os.stat(os.path.join(a, "f299")).st_ino
    write(os.path.join(b, "from-b"), b"b")          # the other way round, at once
    assert read(os.path.join(a, "from-b")) == b"b"


def test_creates_the_mount_answered_are_durable_after_fsync(cluster, other):
    """A mount that dies loses only what was not fsynced, like a page cache."""
    name = "fsynced"
    with second_mount(cluster, "mnt-doomed") as doomed:
        top = os.path.join(doomed, name)
        os.mkdir(top)
        for i in range(50):
            write(os.path.join(top, f"f{i}"), b"")
        fd = os.open(os.path.join(top, "last"), os.O_CREAT | os.O_WRONLY, 0o600)
        os.fsync(fd)
        dirfd = os.open(top, os.O_RDONLY)
        os.fsync(dirfd)
        os.kill(mount_process(doomed), signal.SIGKILL)
        for descriptor in (fd, dirfd):
            with contextlib.suppress(OSError):   # its file system is gone
                os.close(descriptor)
    listed = os.listdir(os.path.join(other, name))
    assert "last" in listed and {f"f{i}" for i in range(50)} <= set(listed)


def test_a_stopped_mount_gives_its_directory_up_to_the_other_after_a_moment(cluster, both):
    """The directory was made on A, so A holds it. A freezes (SIGSTOP): B's change in
    it waits for the recall, which A cannot answer, until the leader takes the
    directory back; then it goes through, with A's earlier creates in place. A goes
    on when it wakes up."""
    a, b = both
    for i in range(20):
        write(os.path.join(a, f"f{i}"), b"")
    time.sleep(0.2)                       # A's creates have gone to the leader
    a_mount = mount_process(cluster.mountpoint)
    os.kill(a_mount, signal.SIGSTOP)
    try:
        started = time.monotonic()
        write(os.path.join(b, "from-b"), b"b")
        waited = time.monotonic() - started
        listed = set(os.listdir(b))
    finally:
        os.kill(a_mount, signal.SIGCONT)
    assert 0.5 < waited < 30
    assert listed == {f"f{i}" for i in range(20)} | {"from-b"}
    write(os.path.join(a, "after"), b"a")
    assert read(os.path.join(b, "after")) == b"a"
    assert read(os.path.join(a, "from-b")) == b"b"


def test_renames_links_and_symlinks_in_a_held_directory_keep_both_mounts_right(both):
    """The master makes these, the holder learns the names they leave and keeps
    answering creates there (it does not give the directory up for them)."""
    a, b = both
    for i in range(5):
        write(os.path.join(a, f"f{i}"), b"%d" % i)
    os.rename(os.path.join(a, "f0"), os.path.join(a, "g0"))
    os.rename(os.path.join(a, "f1"), os.path.join(a, "f2"))          # over a file
    os.symlink("g0", os.path.join(a, "link-to-g0"))
    os.link(os.path.join(a, "f3"), os.path.join(a, "hard"))
    os.unlink(os.path.join(a, "f4"))
    write(os.path.join(a, "f0"), b"new f0")        # the old name is free again
    with pytest.raises(FileExistsError):
        os.open(os.path.join(a, "g0"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    expected = {"f0", "f2", "f3", "g0", "hard", "link-to-g0"}
    assert set(os.listdir(a)) == expected
    assert set(os.listdir(b)) == expected
    assert read(os.path.join(b, "f2")) == b"1" and read(os.path.join(b, "link-to-g0")) == b"0"
    assert os.stat(os.path.join(b, "hard")).st_nlink == 2
    assert read(os.path.join(b, "f0")) == b"new f0"


def test_a_mount_frozen_past_its_session_timeout_goes_on_in_a_new_session(tmp_path):
    """A mount stopped (SIGSTOP: a suspended machine) for longer than the cluster's
    session timeout finds its session closed when it wakes: it opens a new one, and
    opens its files again in it. A file open across the freeze is still written and
    closed; new files are made. Before, every change failed with ENOTCONN until the
    file system was mounted again."""
    if os.geteuid() != 0:
        pytest.skip("the mount tests run as root")
    with mount_fixture.mounted_cluster(tmp_path, master_args=("--session-timeout", "3")
                                       ) as c:
        kept = os.path.join(c.mountpoint, "kept")
        with open(kept, "wb") as f:
            f.write(b"before the freeze, ")
            f.flush()
            pid = mount_process(c.mountpoint)
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(3 * 3.0)              # the leader closes the silent session
            finally:
                os.kill(pid, signal.SIGCONT)
            write(os.path.join(c.mountpoint, "new"), b"made after it")
            f.write(b"and after it")
        assert read(kept) == b"before the freeze, and after it"
        assert read(os.path.join(c.mountpoint, "new")) == b"made after it"
        assert "continuing in session" in c.mount_log()
