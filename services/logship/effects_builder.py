"""The effects builder: folds an archive's commands once, in the background, and
records each group's net writes (services.logship.effects) so that restores need
not fold them again.

The metalogger runs it as a child process at the lowest CPU priority: it takes
what the metadata nodes leave over, falls behind under load and catches up after.
Its state is a projection of its own (ARCHIVE/effects/state), so it resumes where
it stopped; when the archive no longer holds the entries that follow it (retention,
or a gap the metalogger bridged with a snapshot) it starts again from the snapshot
that covers them.

    python -m services.logship.effects_builder ARCHIVE [--group N] [--once]
"""

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import sys
import time

from services.logship.archive import (
    SEGMENTS,
    SNAPSHOTS,
    Archive,
    ArchiveError,
    copy_checkpoint,
)
from services.logship.effects import (
    LOCK_FILE,
    STATE,
    EffectsIndex,
    EffectsWriter,
    effects_dir,
    entries_digest,
)
from services.metadata.applier import Applier
from services.metadata.projection import Projection, open_projection
from services.metadata.raft.messages import NORMAL

log = logging.getLogger(__name__)

GROUP = 1024          # entries per group: a restore folds at most this many past a group
IDLE_S = 1.0          # how often a caught-up builder looks for more
SYNC_EVERY = 64       # groups between fdatasyncs of the effects (they are derived data)


class BuilderBusy(Exception):
    """Another builder holds the archive's effects."""


class EffectsBuilder:
    def __init__(self, archive_dir: str, group: int = GROUP):
        self.archive_dir = archive_dir
        self.directory = effects_dir(archive_dir)
        self.group = group
        os.makedirs(self.directory, exist_ok=True)
        self._lock_fd = _lock(os.path.join(self.directory, LOCK_FILE))
        self.state: Projection | None = None
        self.writer = EffectsWriter(self.directory)
        self._open_state()
        index = EffectsIndex(self.directory)
        for problem in index.problems:
            log.warning("effects: %s (dropped; the restore folds those commands)", problem)
        self.writer.open_after(index, self.state.applied_index)
        self._commands = b""      # entries_digest() of the group being folded

    def _open_state(self) -> None:
        self.state = open_projection(os.path.join(self.directory, STATE))

    def catch_up(self, archive: Archive, stop=lambda: False) -> int:
        """Fold every complete group the archive holds past the state; returns how
        many groups were written."""
        written = 0
        if not self._can_continue(archive):
            self._reseed(archive)
        while True:
            before = self.state.applied_index
            done, gap = self._fold_groups(archive, stop)
            written += done
            if not gap or stop():
                break
            self._reseed(archive)          # the snapshot that bridges the gap
            if self.state.applied_index <= before:
                break
        self.writer.sync()
        return written

    def _fold_groups(self, archive: Archive, stop) -> tuple[int, bool]:
        """Fold the whole groups that follow the state; (groups written, whether a
        gap in the archive stopped it)."""
        applier = Applier(self.state, on_batch=self._record)
        start = self.state.applied_index + 1
        final = archive.last_index // self.group * self.group   # the last whole group's end
        pending: list = []
        written = 0
        for block in archive.batches(start, final) if start <= final else ():
            for e in block:
                if e.index != start + len(pending):
                    return written, True
                pending.append(e)
                if e.index % self.group == 0:
                    self._commands = entries_digest(pending)
                    applier.apply_many([(p.index, p.data if p.kind == NORMAL else None)
                                        for p in pending])
                    pending = []
                    start = e.index + 1
                    written += 1
                    if written % SYNC_EVERY == 0:
                        self.writer.sync()
                    if stop():
                        return written, False
        return written, False

    def _record(self, first, last, before, after, ranges, writes) -> None:
        self.writer.append(first, last, before, after, self._commands, ranges, writes)

    def _can_continue(self, archive: Archive) -> bool:
        """Whether the archive holds the entry after the state (or nothing new yet)."""
        applied = self.state.applied_index
        if applied > archive.last_index:
            return False       # an archive other than the one the state came from
        if applied == archive.last_index:
            return True
        return archive.first_index <= applied + 1 and _holds(archive, applied + 1)

    def _reseed(self, archive: Archive) -> None:
        """Start the state again from the first snapshot past it (or from nothing if
        the archive goes back to index 1)."""
        applied = self.state.applied_index
        later = [s for s in archive.snapshots() if s.index > applied]
        if applied > archive.last_index or not later:
            later = archive.snapshots() if archive.first_index > 1 else []
            applied = -1
        self.state.close()
        path = os.path.join(self.directory, STATE)
        shutil.rmtree(path)
        if later:
            copy_checkpoint(later[0].path, path, durable=False)
            log.info("effects: the state starts again from the snapshot at index %d",
                     later[0].index)
        self._open_state()
        if applied < 0:        # not a continuation: the old groups are of no use
            self.writer.close()
            for name in os.listdir(self.directory):
                if name.endswith(".eff"):
                    os.unlink(os.path.join(self.directory, name))

    def prune(self, archive: Archive) -> int:
        """Drop groups no restore can use: those ending at or before the oldest point
        a restore can start from."""
        if archive.first_index <= 1:
            return 0
        snaps = archive.snapshots()
        return self.writer.prune_through(snaps[0].index if snaps else 0)

    def close(self) -> None:
        self.writer.close()
        if self.state is not None:
            self.state.close()
            self.state = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _holds(archive: Archive, index: int) -> bool:
    for block in archive.batches(index, index):
        return bool(block) and block[0].index == index
    return False


def _lock(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BuilderBusy(f"{path}: another effects builder is running") from None
    return fd


def run(archive_dir: str, group: int = GROUP, once: bool = False,
        parent: int | None = None) -> int:
    """Build until stopped (SIGTERM), or the parent process is gone, or (`once`) the
    archive is caught up with."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

    def stop() -> bool:
        return bool(stopping) or (parent is not None and os.getppid() != parent)

    builder = EffectsBuilder(archive_dir, group)
    seen = None
    try:
        while not stop():
            now = _archive_files(archive_dir)
            written = 0
            if now != seen:           # opening an archive reads every block header
                with Archive(archive_dir, readonly=True) as archive:
                    written = builder.catch_up(archive, stop)
                    builder.prune(archive)
                seen = now
            if once and not written:
                break
            if not written:
                time.sleep(IDLE_S)
    finally:
        builder.close()
    return 0


def _archive_files(archive_dir: str) -> tuple:
    """The archive's segments (name, size) and snapshots: what changes when it grows."""
    found = []
    for sub in (SEGMENTS, SNAPSHOTS):
        with contextlib.suppress(FileNotFoundError):
            found += [(sub, e.name, e.stat().st_size) for e in os.scandir(
                os.path.join(archive_dir, sub))]
    return tuple(sorted(found))


async def supervise(archive_dir: str, group: int = GROUP, retry_s: float = 5.0) -> None:
    """Run the builder as a child process at the lowest priority until cancelled;
    start it again if it stops (another builder still held the lock, or it failed:
    its output, in the metalogger's log, says why)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))
    while True:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.logship.effects_builder", archive_dir,
            "--group", str(group), "--parent", str(os.getpid()), "--nice",
            stdin=asyncio.subprocess.DEVNULL, env=env)
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await asyncio.shield(proc.wait())
            raise
        log.warning("the effects builder stopped (exit status %s); starting it again in "
                    "%.0f s", code, retry_s)
        await asyncio.sleep(retry_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("--group", type=int, default=GROUP)
    parser.add_argument("--once", action="store_true", help="stop when caught up")
    parser.add_argument("--parent", type=int, help="stop when this process is gone")
    parser.add_argument("--nice", action="store_true", help="run at the lowest priority")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s effects %(message)s")
    if args.nice:
        with contextlib.suppress(OSError):
            os.nice(19)
    try:
        return run(args.archive, args.group, args.once, args.parent)
    except (BuilderBusy, ArchiveError) as exc:
        print(f"effects builder: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
