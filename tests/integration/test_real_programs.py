"""Real programs on the mount: git, tar, make + gcc, SQLite and fio's verify jobs.

Each test runs on a tmpfs too, which shows the test itself is sound: what fails on
the mount only is the mount's doing.
"""

import hashlib
import json
import os
import random
import sqlite3
import stat
import subprocess
import tempfile
import time

import pytest

from tests.integration.mount_fixture import mounted_cluster
from tests.integration.tmpfs import mounted_tmpfs

MiB = 1 << 20


@pytest.fixture(scope="module", params=["tmpfs", "mooseng"])
def target(request, tmp_path_factory):
    if request.param == "tmpfs":
        with mounted_tmpfs() as point:
            yield point
        return
    with mounted_cluster(tmp_path_factory.mktemp("programs")) as cluster:
        yield cluster.mountpoint


@pytest.fixture
def d(target, request):
    """A fresh directory on the target for one test."""
    return tempfile.mkdtemp(prefix=f"{request.node.originalname}-", dir=target)


def run(*args, cwd, env=None, check=True, timeout=120) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n" \
                                     f"{done.stdout}\n{done.stderr}"
    return done


# -- git ---------------------------------------------------------------------------------------
def test_git_init_add_commit_log_fsck_gc_clone(d, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.org"}
    repo = os.path.join(d, "repo")
    run("git", "init", "-q", "-b", "main", repo, cwd=d, env=env)
    for i in range(20):
        os.makedirs(os.path.join(repo, f"dir{i % 5}"), exist_ok=True)
        with open(os.path.join(repo, f"dir{i % 5}", f"file{i}.txt"), "w") as f:
            f.write(f"line {i}\n" * (i + 1))
    run("git", "add", ".", cwd=repo, env=env)
    run("git", "commit", "-q", "-m", "one", cwd=repo, env=env)
    with open(os.path.join(repo, "dir0", "file0.txt"), "a") as f:
        f.write("changed\n")
    run("git", "commit", "-q", "-am", "two", cwd=repo, env=env)
    run("git", "mv", "dir1/file1.txt", "moved.txt", cwd=repo, env=env)
    run("git", "rm", "-q", "dir2/file2.txt", cwd=repo, env=env)
    run("git", "commit", "-q", "-m", "three", cwd=repo, env=env)

    log = run("git", "log", "--format=%s", cwd=repo, env=env).stdout.split()
    assert log == ["three", "two", "one"]
    assert run("git", "status", "--porcelain", cwd=repo, env=env).stdout == ""
    run("git", "fsck", "--full", "--strict", cwd=repo, env=env)
    run("git", "gc", "-q", "--prune=now", cwd=repo, env=env)   # packs, renames, deletes
    run("git", "fsck", "--full", cwd=repo, env=env)
    assert run("git", "log", "--format=%s", cwd=repo, env=env).stdout.split() == log

    clone = tmp_path / "clone"
    run("git", "clone", "-q", repo, str(clone), cwd=d, env=env)
    assert (clone / "moved.txt").read_text() == "line 1\n" * 2
    assert (clone / "dir0" / "file0.txt").read_text().endswith("changed\n")
    assert not (clone / "dir2" / "file2.txt").exists()


# -- tar ---------------------------------------------------------------------------------------
def make_tree(root: str) -> None:
    """A few hundred files of many sizes, modes and owners, symlinks (also dangling
    and to a dir), a hard link, an empty dir, a fifo, fixed times."""
    rng = random.Random(7)
    os.makedirs(root)
    for i in range(8):
        sub = os.path.join(root, f"d{i:02}", f"sub{i % 3}")
        os.makedirs(sub, exist_ok=True)
        for j in range(25):
            path = os.path.join(sub, f"f{j:02}.bin")
            size = rng.choice([0, 1, 100, 4095, 4096, 65537, 200_000])
            if (i, j) in ((3, 4), (7, 9)):
                size = 3 * MiB + 17
            with open(path, "wb") as f:
                f.write(rng.randbytes(size))
            os.chmod(path, rng.choice([0o600, 0o644, 0o640, 0o755, 0o4755, 0o2750, 0o444]))
            if j % 7 == 0:
                os.chown(path, 1000, 1000)
            os.utime(path, (1_600_000_000 + i * 100 + j, 1_500_000_000 + i * 100 + j))
    os.symlink("d00/sub0/f00.bin", os.path.join(root, "link-to-file"))
    os.symlink("d01", os.path.join(root, "link-to-dir"))
    os.symlink("../nowhere", os.path.join(root, "d02", "dangling"))
    os.link(os.path.join(root, "d03", "sub0", "f05.bin"), os.path.join(root, "hardlink"))
    os.makedirs(os.path.join(root, "empty", "deeper"))
    os.chmod(os.path.join(root, "empty"), 0o1777)
    os.mkfifo(os.path.join(root, "fifo"), 0o640)
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        os.utime(dirpath, (1_400_000_000, 1_400_000_000))


def snapshot(root: str) -> dict:
    """What a user would compare: per path its type, mode, owner, size, mtime (s),
    contents hash or link target; and which paths share an inode."""
    out, inodes = {}, {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            entry = [stat.filemode(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)]
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    entry += [st.st_size, hashlib.sha256(f.read()).hexdigest()]
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                entry.append(os.readlink(path))
            out[rel] = entry
    out["hard links"] = sorted(sorted(v) for v in inodes.values() if len(v) > 1)
    return out


def test_tar_into_the_mount_and_back_out_is_identical(d, tmp_path):
    src, back = str(tmp_path / "src"), str(tmp_path / "back")
    make_tree(src)
    into = os.path.join(d, "tree")
    os.makedirs(into)
    os.makedirs(back)
    subprocess.run(f"tar -C {src} -cf - . | tar -C {into} -xpf -", shell=True, check=True)
    subprocess.run(f"tar -C {into} -cf - . | tar -C {back} -xpf -", shell=True, check=True)
    expected = snapshot(src)
    assert len(expected) > 200
    on_target = snapshot(into)
    assert on_target == expected, _first_differences(expected, on_target)
    assert snapshot(back) == expected, _first_differences(expected, snapshot(back))


def _first_differences(a: dict, b: dict, n: int = 10) -> str:
    keys = sorted(set(a) | set(b), key=str)
    diffs = [f"{k}: {a.get(k)} != {b.get(k)}" for k in keys if a.get(k) != b.get(k)]
    return f"{len(diffs)} paths differ, first: " + "\n".join(diffs[:n])


# -- make + gcc --------------------------------------------------------------------------------
MAKEFILE = """\
prog: main.o greet.o
\t$(CC) -o $@ main.o greet.o

%.o: %.c greet.h
\t$(CC) -O1 -Wall -c -o $@ $<
"""
GREET_H = "const char *greeting(int n);\n"
MAIN_C = """\
#include <stdio.h>
#include "greet.h"
int main(void) { puts(greeting(42)); return 0; }
"""
GREET_C = """\
#include <stdio.h>
#include "greet.h"
static char buf[64];
const char *greeting(int n) { snprintf(buf, sizeof buf, "%s %d", "WORD", n); return buf; }
"""


def test_make_builds_runs_and_rebuilds_only_what_changed(d):
    for name, text in (("Makefile", MAKEFILE), ("greet.h", GREET_H), ("main.c", MAIN_C),
                       ("greet.c", GREET_C.replace("WORD", "hello"))):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    built = run("make", cwd=d).stdout
    assert "main.o" in built and "greet.o" in built
    assert run("./prog", cwd=d).stdout == "hello 42\n"
    # make decides by mtimes: nothing changed means nothing to do
    assert run("make", "-q", cwd=d, check=False).returncode == 0

    time.sleep(0.05)
    with open(os.path.join(d, "greet.c"), "w") as f:
        f.write(GREET_C.replace("WORD", "bonjour"))
    rebuilt = run("make", cwd=d).stdout
    assert "greet.o" in rebuilt and "main.c" not in rebuilt
    assert run("./prog", cwd=d).stdout == "bonjour 42\n"
    run("make", "-q", cwd=d)


# -- SQLite ------------------------------------------------------------------------------------
@pytest.mark.parametrize("journal, transactions", [("delete", 200), ("wal", 50)])
def test_sqlite_many_transactions_and_a_rollback(d, journal, transactions):
    """The rollback journal is created, synced and deleted in every transaction; WAL
    maps its -shm file shared. Fewer WAL transactions keep the run short."""
    path = os.path.join(d, f"{journal}.db")
    db = sqlite3.connect(path, isolation_level=None)
    assert db.execute(f"PRAGMA journal_mode={journal}").fetchone()[0] == journal
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER)")
    db.execute("CREATE INDEX t_n ON t (n)")
    for tx in range(transactions):
        db.execute("BEGIN")
        db.executemany("INSERT INTO t (v, n) VALUES (?, ?)",
                       [(f"row {tx}-{i} " * 20, tx * 10 + i) for i in range(10)])
        db.execute("COMMIT")
    db.execute("BEGIN")
    db.executemany("INSERT INTO t (v, n) VALUES (?, ?)", [("doomed", -1)] * 500)
    db.execute("DELETE FROM t WHERE n < 100")
    db.execute("ROLLBACK")
    db.close()

    again = sqlite3.connect(path)
    try:
        assert again.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = transactions * 10
        assert again.execute("SELECT count(*), sum(n) FROM t").fetchone() == \
            (rows, sum(range(rows)))
        assert again.execute("SELECT count(*) FROM t WHERE n = -1").fetchone()[0] == 0
    finally:
        again.close()
    assert not os.path.exists(path + "-journal")


# -- fio ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("rw, size, bs", [("write", "48M", "128k"),
                                          ("randwrite", "24M", "16k")])
def test_fio_verify(d, rw, size, bs):
    """fio writes with crc32c headers and verifies; then a second fio verifies the
    same file again from a dropped page cache, so the data comes from the mount."""
    job = ["fio", "--name=verify", f"--filename={os.path.join(d, 'data')}", f"--rw={rw}",
           f"--size={size}", f"--bs={bs}", "--verify=crc32c", "--direct=0",
           "--ioengine=psync", "--randrepeat=1", "--output-format=json"]
    for extra in (["--end_fsync=1"], ["--verify_only", "--invalidate=1"]):
        done = subprocess.run(job + extra, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"fio {extra}: {done.stderr}\n{done.stdout[-2000:]}"
        assert "verify" not in done.stderr, done.stderr
        result = json.loads(done.stdout)
        for j in result["jobs"]:
            assert j["error"] == 0, j
            assert j["read"]["io_kbytes"] == int(size[:-1]) * 1024, "all of it verified"
