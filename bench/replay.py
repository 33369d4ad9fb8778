"""How fast a point-in-time restore replays an archived log.

Builds a realistic archive in a temporary directory (four client sessions doing a mix
of mkdir, create, setattr, rename and unlink, each with its session and request number
as the mount sends them, one millisecond apart, with the leader's no-ops), then times
`restore` from it: every command is read from the archive, checksummed, decompressed
and folded into a fresh projection, and the node files are written.

The archive also gets its effects, as the metalogger's effects builder makes them in
the background (services.logship.effects): each group of 1024 commands folded once,
its net writes recorded. A restore writes those and folds only the commands past the
last whole group.

Prints one JSON object: `commands_per_s` is the restore's rate. The reference is
MooseFS 4.59 replaying its changelog on this machine: 248,796 changes in 1.9 s,
about 130,000 changes/s. Also measured in the same run: `fold_commands_per_s`, the
builder folding every command (what a restore does where no effects exist), and
reading the archive alone (checksums and decompression, no fold).

Usage: python bench/replay.py [--commands N] [--dir DIR]
"""

import argparse
import json
import os
import random
import shutil
import tempfile
import time

from schemas import namespace_pb2 as pb
from services.logship.archive import Archive
from services.logship.effects_builder import EffectsBuilder
from services.logship.restore import restore
from services.metadata.projection import open_projection
from services.metadata.raft.messages import NOOP, NORMAL, Entry

MOOSEFS_CHANGES_PER_S = 130_000
T0 = 1_795_000_000 * 10**9   # 2026-11-18
SESSIONS = 4


class Workload:
    """A valid command mix, tracking the namespace so that every command succeeds."""

    def __init__(self, seed: int = 1):
        self.rng = random.Random(seed)
        self.dirs, self.files = [1], []       # files: [parent, name, inode]
        self.next_ino = 2
        self.seq = dict.fromkeys(range(1, SESSIONS + 1), 0)
        self.count = 0

    def commands(self, count: int) -> list[bytes]:
        caller = pb.Caller(uid=1000, gid=1000, umask=0o022)
        out = [pb.Command(time_ns=T0, setattr=pb.Setattr(inode=1, uid=1000, gid=1000))]
        out += [pb.Command(time_ns=T0, open_session=pb.OpenSession(client=f"bench-{s}"))
                for s in self.seq]
        self.next_ino += 0
        while len(out) < count:
            session = self.rng.randrange(1, SESSIONS + 1)
            self.seq[session] += 1
            seq = self.seq[session]
            out.append(pb.Command(time_ns=T0 + len(out) * 10**6, caller=caller,
                                  session=session, seq=seq, acked_seq=seq - 1,
                                  **self._op(len(out))))
        return [c.SerializeToString() for c in out]

    def _op(self, i: int) -> dict:
        rng, roll = self.rng, self.rng.random()
        if roll < 0.08 or not self.files and roll < 0.5:
            self.dirs.append(self._allocate())
            return {"mkdir": pb.Mkdir(parent=rng.choice(self.dirs[:-1]), name=b"d%d" % i,
                                      mode=0o755)}
        if roll < 0.40 or not self.files:
            parent = rng.choice(self.dirs)
            self.files.append([parent, b"f%d" % i, self._allocate()])
            return {"create": pb.Create(parent=parent, name=b"f%d" % i, mode=0o644)}
        if roll < 0.60:
            ino = rng.choice(self.files)[2]
            if rng.random() < 0.5:
                return {"setattr": pb.Setattr(inode=ino, mode=rng.choice([0o600, 0o644]))}
            return {"setattr": pb.Setattr(inode=ino, mtime=pb.TimeUpdate(now=True),
                                          atime=pb.TimeUpdate(now=True))}
        if roll < 0.80:
            entry = rng.choice(self.files)
            new_parent = rng.choice(self.dirs)
            op = pb.Rename(parent=entry[0], name=entry[1], new_parent=new_parent,
                           new_name=b"r%d" % i)
            entry[0], entry[1] = new_parent, b"r%d" % i
            return {"rename": op}
        parent, name, _ = self.files.pop(rng.randrange(len(self.files)))
        return {"unlink": pb.Unlink(parent=parent, name=name)}

    def _allocate(self) -> int:
        self.next_ino += 1
        return self.next_ino - 1


def build_archive(path: str, commands: list[bytes]) -> tuple[int, float]:
    """Archive the commands as a metalogger does (a leader's no-op first, appends of
    64 entries, a sync every 1024); returns (entries, seconds)."""
    entries = [Entry(1, 1, NOOP, b"")]
    entries += [Entry(i, 1, NORMAL, data) for i, data in enumerate(commands, start=2)]
    started = time.perf_counter()
    with Archive(path, create=True) as archive:
        for first in range(0, len(entries), 64):
            archive.append(entries[first:first + 64])
            if first % 1024 == 0:
                archive.sync()
    return len(entries), time.perf_counter() - started


def read_rate(path: str) -> float:
    """Entries per second read back (checksums, decompression), no fold."""
    started = time.perf_counter()
    count = 0
    with Archive(path, readonly=True) as archive:
        for batch in archive.batches():
            count += len(batch)
    return count / (time.perf_counter() - started)


def build_effects(path: str) -> tuple[int, float]:
    """What the metalogger's effects builder does in the background; (groups, seconds)."""
    started = time.perf_counter()
    builder = EffectsBuilder(path)
    try:
        with Archive(path, readonly=True) as archive:
            groups = builder.catch_up(archive)
    finally:
        builder.close()
    return groups, time.perf_counter() - started


def _tree_bytes(path: str, suffix: str) -> int:
    return sum(e.stat().st_size for e in os.scandir(path) if e.name.endswith(suffix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=250_000)
    parser.add_argument("--dir", default=None, help="where to work (default: a temporary "
                                                    "directory under $TMPDIR)")
    args = parser.parse_args()
    workload = Workload()
    commands = workload.commands(args.commands)
    work = tempfile.mkdtemp(prefix="mooseng-bench-replay-", dir=args.dir)
    try:
        archive_dir = os.path.join(work, "archive")
        entries, write_s = build_archive(archive_dir, commands)
        archive_bytes = _tree_bytes(os.path.join(archive_dir, "segments"), ".seg")
        reading = read_rate(archive_dir)
        groups, build_s = build_effects(archive_dir)
        effects_bytes = _tree_bytes(os.path.join(archive_dir, "effects"), ".eff")
        with Archive(archive_dir, readonly=True) as archive:
            started = time.perf_counter()
            summary = restore(archive, os.path.join(work, "restored"), voters=[1, 2, 3])
            seconds = time.perf_counter() - started
        with open_projection(os.path.join(work, "restored", "projection")) as proj:
            inodes = int.from_bytes(proj.get("meta", b"inode_count"), "big")
        expected = 1 + len(workload.dirs) - 1 + len(workload.files)
        assert inodes == expected, f"restore gave {inodes} inodes, the workload made {expected}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "commands": len(commands),
        "entries": entries,
        "restore_seconds": round(seconds, 2),
        "commands_per_s": round(len(commands) / seconds),
        "moosefs_changes_per_s": MOOSEFS_CHANGES_PER_S,
        "ratio_to_moosefs": round(len(commands) / seconds / MOOSEFS_CHANGES_PER_S, 3),
        "target_commands_per_s": 50_000,
        "entries_from_effects": summary["entries_from_effects"],
        "effects_groups": groups,
        "fold_commands_per_s": round(len(commands) / build_s),
        "effects_bytes": effects_bytes,
        "archive_read_entries_per_s": round(reading),
        "archive_write_entries_per_s": round(entries / write_s),
        "archive_bytes": archive_bytes,
        "archive_bytes_per_command": round(archive_bytes / len(commands), 1),
        "command_bytes": sum(map(len, commands)),
        "restored_index": summary["index"],
    }))


if __name__ == "__main__":
    main()
