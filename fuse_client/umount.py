"""`mooseng umount`: unmount a MooseNG mount and wait for its process to finish
(it commits what is left and closes its session after the unmount)."""

import os
import shutil
import subprocess
import sys
import time

from fuse_client import mountinfo
from fuse_client.background import FSTYPE
from fuse_client.mount import pid_file

WAIT_S = 60.0


def umount(mountpoint: str, lazy: bool = False, wait_s: float = WAIT_S) -> int:
    found = mountinfo.find(mountpoint)
    if found is None:
        print(f"mooseng umount: {mountpoint} is not mounted", file=sys.stderr)
        return 1
    if found.fstype != FSTYPE:
        print(f"mooseng umount: {mountpoint} is a {found.fstype} mount, not MooseNG; "
              "use umount(8)", file=sys.stderr)
        return 1
    pid = _pid(mountpoint)
    done = subprocess.run(_command(found.mountpoint, lazy), capture_output=True, text=True)
    if done.returncode != 0:
        hint = "" if lazy else " (files open on it? -l detaches it now and ends it " \
                               "once they are closed)"
        print(f"mooseng umount: {done.stderr.strip() or 'failed'}{hint}", file=sys.stderr)
        return 1
    if pid and not lazy and not _ended(pid, wait_s):
        print(f"mooseng umount: {mountpoint} is unmounted, but its process {pid} is still "
              f"committing after {wait_s:g} s; see its log", file=sys.stderr)
        return 1
    return 0


def _command(mountpoint: str, lazy: bool) -> list[str]:
    if shutil.which("fusermount3"):
        return ["fusermount3", "-u", *(["-z"] if lazy else []), mountpoint]
    return ["umount", *(["-l"] if lazy else []), mountpoint]


def _pid(mountpoint: str) -> int:
    try:
        with open(pid_file(mountpoint)) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _ended(pid: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
