"""What people do first with a file system, through the mount, next to a tmpfs and
the local disk in the same run.

Eight workloads, one process each, run in this order on each target:

  small_write  create + write 4 KiB + close of --files files in one directory
  small_read   open + read + close of each of them
  tar_x        `tar xf` of a tree of Python sources (the standard library's, about
               330 entries, made into a tarball on local disk first)
  cp_r         `cp -r` of the system's documentation tree (/usr/share/doc)
  find_ls      `find -ls` over that copy
  grep_r       `grep -r` of a string that is in no file, over that copy
  tar_c        `tar cf /dev/null` of that copy (GNU tar then reads no contents)
  rm_rf        `rm -rf` of everything above

Rates are entries (files, directories, symlinks) per second. Caches are not
dropped between workloads: each runs just after the one before, as a person types
them. On MooseNG it also measures what one operation costs in CPU across every
process of the cluster and the mount (the metadata nodes, chunkservers, metalogger
and its effects builder, the mount): `cpu_us_per_create` (empty files, one
process) and `cpu_us_per_small_file` (the small_write phase). On 2 cores that cost,
not latency, is what bounds rates with several processes.

Prints one JSON object (progress to stderr):

  {"mooseng": R, "tmpfs": R, "disk": R, "ratios": {...}, "method": {...}}

Needs root (tmpfs, the mount), tar, cp, find and grep. Everything it starts is
stopped and removed at the end, also on failure or Ctrl-C.

With --probe it then writes --files small files again and keeps them, and measures
1,000 small-file writes, reads and stats beside them (`probe_*`): the same figures
with --files 1000 and --files 100000 show what the number of files costs.

Usage: python -m bench.workloads [--files N] [--targets mooseng,tmpfs,disk] [--probe]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time

if not __package__:   # run as a script: bench/ is on the path, the repository is not
    sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import fs_targets

DOC_TREE = "/usr/share/doc"
SMALL_FILE = 4096
PY_SOURCES_ENTRIES = 320     # about as many entries as the tree in the table
TARGETS = ("tmpfs", "disk", "mooseng")
NO_SUCH_STRING = "mooseng-bench-string-in-no-file-8d1f"
PROBE_FILES = 1000


def progress(message: str) -> None:
    print(f"bench/workloads: {message}", file=sys.stderr, flush=True)


# -- the inputs ---------------------------------------------------------------------------

def python_sources_tarball(work: str) -> tuple[str, int]:
    """A tarball of whole packages of the standard library (no caches, no tests),
    in name order until it holds about PY_SOURCES_ENTRIES entries; (path, entries)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    chosen, entries = [], 0
    for name in sorted(os.listdir(stdlib)):
        path = os.path.join(stdlib, name)
        if name in ("test", "idlelib", "site-packages", "lib2to3") or \
                not os.path.isfile(os.path.join(path, "__init__.py")):
            continue
        count = sum(1 for _ in _tree(path))
        if entries + count > PY_SOURCES_ENTRIES * 1.2:
            continue
        chosen.append(name)
        entries += count
        if entries >= PY_SOURCES_ENTRIES:
            break
    tarball = os.path.join(work, "py-sources.tar")
    with tarfile.open(tarball, "w") as tar:
        for name in chosen:
            tar.add(os.path.join(stdlib, name), arcname=f"py/{name}",
                    filter=lambda t: None if "__pycache__" in t.name else t)
    with tarfile.open(tarball) as tar:
        return tarball, len(tar.getmembers())


def _tree(path: str):
    for top, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        yield top
        yield from (os.path.join(top, f) for f in files)


def count_entries(path: str) -> int:
    """Entries under `path`, itself included (what find prints)."""
    return sum(1 for _ in _walk_all(path))


def _walk_all(path: str):
    yield path
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            yield os.path.join(top, name)


# -- the workloads -------------------------------------------------------------------------

def small_write(directory: str, files: int) -> float:
    data = os.urandom(SMALL_FILE)
    start = time.perf_counter()
    for i in range(files):
        fd = os.open(os.path.join(directory, f"f{i:06d}"),
                     os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
    return time.perf_counter() - start


def small_read(directory: str, files: int) -> float:
    start = time.perf_counter()
    for i in range(files):
        fd = os.open(os.path.join(directory, f"f{i:06d}"), os.O_RDONLY)
        got = os.read(fd, SMALL_FILE * 2)
        os.close(fd)
        if len(got) != SMALL_FILE:
            raise RuntimeError(f"f{i:06d}: read {len(got)} bytes, wrote {SMALL_FILE}")
    return time.perf_counter() - start


def empty_creates(directory: str, files: int) -> float:
    start = time.perf_counter()
    for i in range(files):
        os.close(os.open(os.path.join(directory, f"e{i:06d}"), os.O_CREAT | os.O_WRONLY,
                         0o644))
    return time.perf_counter() - start


def timed_command(argv: list[str], cwd: str | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 and not (argv[0] == "grep" and done.returncode == 1):
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): "
                           f"{done.stderr.strip()[:500]}")
    return elapsed


class CpuMeter:
    """CPU time (user + system) of a set of processes and their children, from
    /proc: what they used between `start` and `stop`."""

    def __init__(self, pids):
        self.pids = pids          # a callable giving the pids to count
        self.at_start: dict[int, int] = {}

    @staticmethod
    def _ticks(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        # utime, stime, cutime, cstime (fields 14-17 of stat, here from index 11)
        return sum(int(v) for v in fields[11:15])

    def start(self) -> None:
        self.at_start = {pid: self._ticks(pid) for pid in self.pids()}

    def stop_us(self) -> float:
        ticks = sum(self._ticks(pid) - before for pid, before in self.at_start.items())
        return ticks * 1e6 / os.sysconf("SC_CLK_TCK")


def cluster_pids(cluster_dir: str, mountpoint: str):
    """The pids of every process of a `mooseng up` cluster and its mount, with their
    children (the metalogger's effects builder)."""
    def pids() -> list[int]:
        found = []
        run = os.path.join(cluster_dir, "run")
        for name in os.listdir(run) if os.path.isdir(run) else ():
            try:
                with open(os.path.join(run, name)) as f:
                    found.append(int(f.read()))
            except (OSError, ValueError):
                pass
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if b"mount" in cmd and mountpoint.encode() in cmd:
                found.append(int(entry))
        children = []
        for pid in found:
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    children += [int(c) for c in f.read().split()]
            except OSError:
                pass
        return sorted(set(found + children))
    return pids


def measure(name: str, root: str, args, inputs: dict, cpu: CpuMeter | None) -> dict:
    result = {}
    small = os.path.join(root, "small")
    os.mkdir(small)

    def rate(key: str, entries: int, seconds: float) -> None:
        result[key] = round(entries / seconds, 1)
        progress(f"{name}: {key} {result[key]:,} ({entries} in {seconds:.2f} s)")

    if cpu is not None:
        cpu.start()
    rate("small_write_files_per_s", args.files, small_write(small, args.files))
    if cpu is not None:
        result["cpu_us_per_small_file"] = round(cpu.stop_us() / args.files)
    rate("small_read_files_per_s", args.files, small_read(small, args.files))
    rate("tar_x_entries_per_s", inputs["tar_entries"],
         timed_command(["tar", "xf", inputs["tarball"]], cwd=root))
    copy = os.path.join(root, "doc")
    rate("cp_r_entries_per_s", inputs["doc_entries"],
         timed_command(["cp", "-r", DOC_TREE, copy]))
    rate("find_ls_entries_per_s", inputs["doc_entries"],
         timed_command(["find", copy, "-ls"]))
    rate("grep_r_entries_per_s", inputs["doc_entries"],
         timed_command(["grep", "-r", NO_SUCH_STRING, copy]))
    rate("tar_c_entries_per_s", inputs["doc_entries"],
         timed_command(["tar", "cf", "/dev/null", copy]))
    everything = count_entries(root) - 1
    rate("rm_rf_entries_per_s", everything,
         timed_command(["rm", "-rf", small, copy, os.path.join(root, "py")]))
    if cpu is not None:
        empty = os.path.join(root, "empty")
        os.mkdir(empty)
        cpu.start()
        seconds = empty_creates(empty, args.files)
        result["cpu_us_per_create"] = round(cpu.stop_us() / args.files)
        result["create_per_s"] = round(args.files / seconds, 1)
        shutil.rmtree(empty)
    if args.probe:
        probe(root, args.files, result, cpu)
    return result


def probe(root: str, files: int, result: dict, cpu: CpuMeter | None) -> None:
    """The same small-file work on a fixed PROBE_FILES files while the file system
    holds `files` more (kept in another directory): compared between --files 1000
    and --files 100000, it shows what the number of files costs each operation.
    The cluster first finishes what the writes left it (commits, the archive), so
    the probe measures the files it holds, not the backlog of making them."""
    kept = os.path.join(root, "kept")
    os.mkdir(kept)
    small_write(kept, files)
    fd = os.open(kept, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    if cpu is not None:
        result["probe_settle_s"] = settle(cpu)
    fresh = os.path.join(root, "probe")
    os.mkdir(fresh)
    result["probe_files_held"] = files
    result["probe_small_write_files_per_s"] = round(
        PROBE_FILES / small_write(fresh, PROBE_FILES), 1)
    result["probe_small_read_files_per_s"] = round(
        PROBE_FILES / small_read(fresh, PROBE_FILES), 1)
    start = time.perf_counter()
    for i in range(PROBE_FILES):
        os.stat(os.path.join(kept, f"f{i * max(1, files // PROBE_FILES) % files:06d}"))
    result["probe_stat_per_s"] = round(PROBE_FILES / (time.perf_counter() - start), 1)
    timed_command(["rm", "-rf", kept, fresh])


def settle(cpu: CpuMeter, idle_cores: float = 0.25, limit_s: float = 300.0) -> float:
    """Wait until the measured processes use less than `idle_cores` of CPU over a
    second (at most `limit_s`); how long that took. An idle cluster of this size
    uses 0.1-0.15 cores (heartbeats, the chunk manager's walk), so the threshold
    sits above that."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        cpu.start()
        time.sleep(1.0)
        if cpu.stop_us() < idle_cores * 1e6:
            break
    return round(time.monotonic() - start, 1)


def ratios(ours: dict, reference: dict) -> dict:
    return {k: float(f"{v / reference[k]:.3g}") for k, v in ours.items()
            if reference.get(k)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000,
                        help="small files written and read (default 1000)")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="which of tmpfs,disk,mooseng to measure (default all)")
    parser.add_argument("--probe", action="store_true",
                        help=f"then write, read and stat {PROBE_FILES} small files while "
                             "--files more are kept (run with --files 1000 and 100000 "
                             "to see what the number of files costs)")
    args = parser.parse_args()
    args.targets = [t for t in args.targets.split(",") if t]
    if args.files < 1 or not set(args.targets) <= set(TARGETS) or not args.targets:
        parser.error(f"--files must be at least 1; --targets a subset of {TARGETS}")
    if os.geteuid() != 0:
        parser.error("needs root (a tmpfs, the mount)")
    if not os.path.isdir(DOC_TREE):
        parser.error(f"{DOC_TREE} is missing: the cp -r workload copies it")
    return args


def stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    work = tempfile.mkdtemp(prefix="mooseng-bench-workloads-")
    os.chmod(work, 0o755)
    report = {}
    started = time.monotonic()
    try:
        tarball, tar_entries = python_sources_tarball(work)
        inputs = {"tarball": tarball, "tar_entries": tar_entries,
                  "doc_entries": count_entries(DOC_TREE)}
        # the sources read once, so every target copies from the page cache
        subprocess.run(["sh", "-c", f"find {DOC_TREE} -type f -exec cat {{}} + "
                        f">/dev/null; cat {tarball} >/dev/null"], check=False)
        progress(f"inputs: {tar_entries} entries of Python sources, "
                 f"{inputs['doc_entries']} entries in {DOC_TREE}")
        if "tmpfs" in args.targets:
            with fs_targets.tmpfs(work, 1024) as path:
                report["tmpfs"] = measure("tmpfs", path, args, inputs, None)
        if "disk" in args.targets:
            with fs_targets.disk(work) as path:
                report["disk"] = measure(f"disk ({fs_targets.describe(path)})", path,
                                         args, inputs, None)
        if "mooseng" in args.targets:
            progress("starting a cluster and mounting it")
            with fs_targets.mooseng_mount(work) as path:
                cpu = CpuMeter(cluster_pids(os.path.join(work, "cluster"), path))
                report["mooseng"] = measure("mooseng", path, args, inputs, cpu)
    finally:
        left = fs_targets.mounts_under(work)
        if left:
            fs_targets.warn(f"still mounted, {work} is kept: {left}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    out = dict(report)
    if "mooseng" in report:
        out["ratios"] = {f"mooseng_to_{t}": ratios(report["mooseng"], report[t])
                         for t in ("tmpfs", "disk") if t in report}
    out["method"] = {
        "files": args.files, "small_file_bytes": SMALL_FILE,
        "tar_x_entries": inputs["tar_entries"], "doc_tree": DOC_TREE,
        "doc_entries": inputs["doc_entries"], "processes": 1,
        "mooseng": "mooseng up: 3 metadata nodes + 3 chunkservers + metalogger on "
                   "loopback, copies=2, default mount options",
        "caches": "not dropped between workloads", "cpus": os.cpu_count(),
        "seconds": round(time.monotonic() - started)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
