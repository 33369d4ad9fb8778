"""The file system through the real mount, next to a tmpfs and the local disk in the
same run: mdtest-style metadata rates and fio throughput.

Targets, one after the other: a fresh tmpfs, a directory on the local disk (the one
holding the temp directory, where the cluster keeps its data too), and a MooseNG
mount of a cluster started here (`mooseng up`: 3 metadata nodes, 3 chunkservers,
copies=2, production settings). On each:

  np1, np4   bench/mdtest.py: create / stat / remove of --files empty files per
             process, each process in its own new directory, timed between barriers
  seq_write, seq_read, rand_read   bench/fio_jobs.py on one --size-mib file

Prints one JSON object (progress goes to stderr):

  {"mooseng": RESULT, "tmpfs": RESULT, "disk": RESULT, "ratios": {...}, "method": {...}}
  RESULT = {"np1": {"create_per_s", "stat_per_s", "remove_per_s"}, "np4": {...},
            "seq_write_MiBps", "seq_read_MiBps", "rand_read_iops"}

Needs root (tmpfs, drop_caches, the mount) and fio. Everything it starts or mounts
is stopped and unmounted at the end, also on failure, Ctrl-C or SIGTERM.

Usage: python -m bench.fs [--files N] [--size-mib M] [--rand-seconds S] [--quick]
       (or python bench/fs.py)
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time

if not __package__:   # run as a script: bench/ is on the path, the repository is not
    sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import fio_jobs, fs_targets, mdtest

DEFAULTS = {"files": 2000, "size_mib": 1024, "rand_seconds": 20}
QUICK = {"files": 300, "size_mib": 128, "rand_seconds": 5}
PROCESSES = (1, 4)


def measure(name: str, directory: str, args, work: str) -> dict:
    result = {}
    for n in PROCESSES:
        progress(f"{name}: mdtest np{n}, {args.files} files per process")
        result[f"np{n}"] = mdtest.run(directory, n, args.files)
    progress(f"{name}: fio on a {args.size_mib} MiB file")
    result.update(fio_jobs.measure(os.path.join(directory, "fio.data"), args.size_mib,
                                   args.rand_seconds, work))
    progress(f"{name}: {json.dumps(result)}")
    return result


def flatten(result: dict) -> dict:
    """{"np1": {"create_per_s": 5}, "seq_read_MiBps": 9} ->
    {"np1.create_per_s": 5, "seq_read_MiBps": 9}"""
    flat = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            flat[key] = value
    return flat


def ratios(ours: dict, reference: dict) -> dict:
    mine, theirs = flatten(ours), flatten(reference)
    return {k: float(f"{mine[k] / theirs[k]:.3g}") if theirs[k] else None for k in mine}


def progress(message: str) -> None:
    print(f"bench/fs: {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, help=f"empty files per process "
                        f"(default {DEFAULTS['files']}, --quick {QUICK['files']})")
    parser.add_argument("--size-mib", type=int, help=f"fio file size (default "
                        f"{DEFAULTS['size_mib']}, --quick {QUICK['size_mib']})")
    parser.add_argument("--rand-seconds", type=int, help=f"random read duration (default "
                        f"{DEFAULTS['rand_seconds']}, --quick {QUICK['rand_seconds']})")
    parser.add_argument("--quick", action="store_true", help="small sizes: a fast check")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.files, args.size_mib, args.rand_seconds) < 1:
        parser.error("--files, --size-mib and --rand-seconds must be at least 1")
    if os.geteuid() != 0 or not shutil.which("fio"):
        parser.error("needs root (tmpfs, drop_caches, the mount) and fio on the PATH")
    return args


def stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    work = tempfile.mkdtemp(prefix="mooseng-bench-fs-")
    os.chmod(work, 0o755)
    report = {}
    started = time.monotonic()
    try:
        with fs_targets.tmpfs(work, args.size_mib + 256) as path:
            report["tmpfs"] = measure("tmpfs", path, args, work)
        with fs_targets.disk(work) as path:
            disk_fs = fs_targets.describe(path)
            report["disk"] = measure(f"disk ({disk_fs})", path, args, work)
        progress("starting a cluster and mounting it")
        with fs_targets.mooseng_mount(work) as path:
            report["mooseng"] = measure("mooseng", path, args, work)
    finally:
        left = fs_targets.mounts_under(work)
        if left:
            fs_targets.warn(f"still mounted, {work} is kept: {left}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "mooseng": report["mooseng"], "tmpfs": report["tmpfs"], "disk": report["disk"],
        "ratios": {"mooseng_to_tmpfs": ratios(report["mooseng"], report["tmpfs"]),
                   "mooseng_to_disk": ratios(report["mooseng"], report["disk"])},
        "method": {
            "files_per_process": args.files, "processes": list(PROCESSES),
            "metadata": "bench/mdtest.py: per process a fresh directory, create (open "
                        "O_CREAT|O_WRONLY + close), stat, unlink; a phase lasts from the "
                        "first process's start to the last one's end; rate = ops / that",
            "fio": f"bench/fio_jobs.py: {args.size_mib} MiB file, psync iodepth=1 "
                   "numjobs=1 buffered; seq write bs=1M end_fsync=1; drop_caches; seq "
                   f"read bs=1M; drop_caches; rand read bs=4k for {args.rand_seconds} s",
            "disk": disk_fs, "mooseng": "mooseng up: 3 metadata + 3 chunkservers on "
                    "loopback, data on the disk above, copies=2, default mount options",
            "cpus": os.cpu_count(), "seconds": round(time.monotonic() - started),
        },
    }))


if __name__ == "__main__":
    main()
