"""A `mooseng metalogger` process for integration tests, and ways to look at its
archive while it runs (read-only: the metalogger holds the lock)."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

from mooseng.ports import free_ports
from services.logship.archive import Archive
from services.logship.effects import EffectsIndex, effects_dir


class Metalogger:
    def __init__(self, root: str, masters: list[str], name: str = "metalogger"):
        self.archive_dir = os.path.join(root, name)
        self.log_path = os.path.join(root, f"{name}.log")
        self.masters = masters
        self.metrics = f"127.0.0.1:{free_ports(1)[0]}"
        self.proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mooseng", "metalogger", "--masters",
                 ",".join(self.masters), "--data", self.archive_dir,
                 "--metrics-listen", self.metrics, *extra],
                stdout=log, stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop it; its exit status (SIGKILL if it does not stop in time)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            raise AssertionError(f"the metalogger did not stop on signal {sig}") from None

    def archive(self) -> Archive:
        return Archive(self.archive_dir, readonly=True)

    def archived_index(self) -> int:
        if not os.path.isdir(os.path.join(self.archive_dir, "segments")):
            return 0
        archive = self.archive()
        try:
            return archive.last_index
        finally:
            archive.close()

    def effects_reach(self) -> int:
        """The last index the archive's effects cover (0: none yet)."""
        groups = EffectsIndex(effects_dir(self.archive_dir)).groups.values()
        return max((g.last for g in groups), default=0)

    def wait_effects(self, index: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.effects_reach() < index:
            if time.monotonic() > deadline:
                raise AssertionError(f"the effects builder did not reach index {index} in "
                                     f"{timeout:.0f} s (it reached {self.effects_reach()})")
            time.sleep(0.2)

    def wait_archived(self, index: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.archived_index() < index:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the metalogger exited ({self.proc.returncode}):\n"
                                     f"{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the archive reached {self.archived_index()}, not "
                                     f"{index}, in {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def wait_archive_created(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(os.path.join(self.archive_dir, "LOCK")):
            if time.monotonic() > deadline:
                raise AssertionError(f"no archive after {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def wait_following(self, timeout: float = 30.0) -> None:
        """Until it has a follow stream open to a node."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.scrape().get("mooseng_metalogger_connected") == 1:
                    return
            except OSError:
                pass   # not serving metrics yet
            if time.monotonic() > deadline:
                raise AssertionError(f"the metalogger did not connect in {timeout} s:\n"
                                     f"{self.log()[-3000:]}")
            time.sleep(0.1)

    def scrape(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("mooseng_metalogger_"):
                name, value = line.rsplit(" ", 1)
                out[name.split("{")[0]] = float(value)
        return out

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()
