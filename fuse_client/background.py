"""`mooseng mount` without --foreground: start the mount as a detached process and
return once it is live, or fail with the reason the process gave."""

import os
import subprocess
import sys
import time

from fuse_client import mountinfo

FSTYPE = "fuse.mooseng"
TAIL_BYTES = 4000


def start(child_args: list[str], mountpoint: str, log_path: str, timeout_s: float) -> int:
    """Run `mooseng <child_args>` (a --foreground mount) in a new session, its output
    appended to `log_path`; wait until `mountpoint` is mounted."""
    log_dir = os.path.dirname(os.path.abspath(log_path))
    os.makedirs(log_dir, exist_ok=True)
    with open(log_path, "ab") as log:
        start_at = log.tell()
        proc = subprocess.Popen([sys.executable, "-m", "mooseng", *child_args],
                                stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
    deadline = time.monotonic() + timeout_s
    while True:
        found = mountinfo.find(mountpoint)
        if found is not None and found.fstype == FSTYPE:
            print(f"mooseng: mounted {mountpoint} (pid {proc.pid}, log {log_path})")
            return 0
        code = proc.poll()
        if code is not None:
            print(f"mooseng mount: the mount process ended (exit status {code}) before "
                  f"{mountpoint} was mounted:\n{_tail(log_path, start_at)}", file=sys.stderr)
            return code or 1
        if time.monotonic() > deadline:
            proc.terminate()
            print(f"mooseng mount: {mountpoint} was not mounted within {timeout_s:g} s; "
                  f"stopped the mount process. Its log ({log_path}):\n"
                  f"{_tail(log_path, start_at)}", file=sys.stderr)
            return 1
        time.sleep(0.05)


def _tail(log_path: str, start_at: int) -> str:
    """What the process wrote to its log, at most the last TAIL_BYTES."""
    with open(log_path, "rb") as f:
        f.seek(max(start_at, os.path.getsize(log_path) - TAIL_BYTES))
        return f.read().decode(errors="replace").rstrip() or "(nothing)"
