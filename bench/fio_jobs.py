"""Sequential and random throughput of one directory, measured with fio's JSON output.

Three jobs on one file, the same on every target (all buffered, one job, one I/O at
a time: ioengine=psync, iodepth=1, numjobs=1, direct=0, fallocate=none):

  seq_write  bs=1M over the whole file, end_fsync=1 (fio's runtime includes the fsync)
  seq_read   bs=1M over the whole file, after dropping the page cache
  rand_read  bs=4k, random offsets over the whole file for a fixed time, after
             dropping the page cache (fio's default fadvise RANDOM: no read-ahead;
             randrepeat: the same offsets on every target)

Between the jobs every clean page, dentry and inode is dropped
(`echo 3 > /proc/sys/vm/drop_caches`; root only): the chunkservers' files included,
so a MooseNG read comes from its chunkservers' disk as a disk read does.
"""

import contextlib
import json
import os
import signal
import subprocess

COMMON = ("--ioengine=psync", "--iodepth=1", "--numjobs=1", "--direct=0",
          "--fallocate=none", "--invalidate=1", "--output-format=json")
TIMEOUT_S = 3600


def drop_caches() -> None:
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def _stop(fio: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(fio.pid, sig)
        try:
            fio.wait(15)
            return
        except subprocess.TimeoutExpired:
            continue


def run_job(name: str, path: str, report_dir: str, *options: str) -> dict:
    """Run one fio job; its entry of fio's "jobs" list."""
    report = os.path.join(report_dir, f"fio-{name}.json")
    # Its own process group: on an interrupt or a timeout fio and its job processes
    # are stopped together (SIGTERM lets fio end its jobs and close the file).
    fio = subprocess.Popen(["fio", f"--name={name}", f"--filename={path}", *COMMON,
                            f"--output={report}", *options], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = fio.communicate(timeout=TIMEOUT_S)
    except BaseException:
        _stop(fio)
        raise
    if fio.returncode != 0:
        raise RuntimeError(f"fio {name} on {path} failed ({fio.returncode}): "
                           f"{err.strip() or out.strip()}")
    with open(report) as f:
        job = json.load(f)["jobs"][0]
    if job["error"]:
        raise RuntimeError(f"fio {name} on {path}: error {job['error']}")
    return job


def measure(path: str, size_mib: int, rand_seconds: int, report_dir: str) -> dict:
    """Write, read, then randomly read the file at `path` (removed at the end)."""
    size = f"--size={size_mib}M"
    write = run_job("seq_write", path, report_dir, "--rw=write", "--bs=1M", size,
                    "--end_fsync=1")
    drop_caches()
    read = run_job("seq_read", path, report_dir, "--rw=read", "--bs=1M", size)
    if read["read"]["io_bytes"] != size_mib << 20:
        raise RuntimeError(f"fio seq_read read {read['read']['io_bytes']} bytes of {path}, "
                           f"not {size_mib} MiB")
    drop_caches()
    rand = run_job("rand_read", path, report_dir, "--rw=randread", "--bs=4k", size,
                   "--time_based", f"--runtime={rand_seconds}")
    os.unlink(path)
    return {"seq_write_MiBps": round(write["write"]["bw_bytes"] / (1 << 20), 1),
            "seq_read_MiBps": round(read["read"]["bw_bytes"] / (1 << 20), 1),
            "rand_read_iops": round(rand["read"]["iops"])}
