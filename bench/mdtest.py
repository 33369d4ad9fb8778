"""Metadata operations per second the way `mdtest` measures them, in Python.

Each of NP processes gets its own fresh directory (mdtest -u) and N file names in it.
Three phases, each run the same way: all processes and the parent meet at a barrier,
every process reads the clock, runs its N operations, reads the clock again, and all
meet at a second barrier. The phase's wall time is from the first start to the last
end (CLOCK_MONOTONIC is one clock for all processes; the parent does not read it
itself, as with 4 busy processes on 2 cores it may run only after they are done).
rate = NP * N / wall time.

  create  open(O_CREAT | O_WRONLY, 0644) + close of an empty file
  stat    os.stat of each file
  remove  unlink of each file

Directories are made before and removed after, outside the timed phases. Python's
per-call cost is about 1 µs, which only shows against tmpfs. The processes are
started with "spawn" (the caller may hold gRPC threads, which fork does not copy
safely), so the caller's main module needs the `if __name__ == "__main__":` guard.
"""

import multiprocessing
import os
import sys
import threading
import time

PHASES = ("create", "stat", "remove")
BARRIER_TIMEOUT_S = 600.0


def _create(path: str) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


OPERATIONS = {"create": _create, "stat": os.stat, "remove": os.unlink}


def _worker(directory: str, files: int, barrier, times, rank: int) -> None:
    """One rank: each phase between two barriers. An error breaks the barrier, so
    the parent and the other ranks stop instead of waiting forever."""
    names = [os.path.join(directory, f"file.mdtest.{i}") for i in range(files)]
    try:
        for p, phase in enumerate(PHASES):
            operation = OPERATIONS[phase]
            barrier.wait(BARRIER_TIMEOUT_S)
            start = time.monotonic()
            for name in names:
                operation(name)
            times[p][rank][:] = [start, time.monotonic()]
            barrier.wait(BARRIER_TIMEOUT_S)
    except threading.BrokenBarrierError:
        os._exit(2)
    except BaseException as exc:
        barrier.abort()
        print(f"mdtest rank in {directory}: {exc!r}", file=sys.stderr, flush=True)
        os._exit(1)
    os._exit(0)


def run(base: str, processes: int, files: int) -> dict:
    """Run the three phases in new directories under `base`; operations per second."""
    dirs = [os.path.join(base, f"mdtest.np{processes}.rank{i}") for i in range(processes)]
    for d in dirs:
        os.mkdir(d)
    context = multiprocessing.get_context("spawn")   # the parent may hold gRPC threads
    barrier = context.Barrier(processes + 1)
    times = [[context.Array("d", 2, lock=False) for _ in dirs] for _ in PHASES]  # start, end
    ranks = [context.Process(target=_worker, args=(d, files, barrier, times, i))
             for i, d in enumerate(dirs)]
    for rank in ranks:
        rank.start()
    rates, broken = {}, False
    try:
        for p, phase in enumerate(PHASES):
            barrier.wait(BARRIER_TIMEOUT_S)
            barrier.wait(BARRIER_TIMEOUT_S)
            wall = max(t[1] for t in times[p]) - min(t[0] for t in times[p])
            rates[f"{phase}_per_s"] = round(processes * files / wall)
    except threading.BrokenBarrierError:
        broken = True
    finally:
        barrier.abort()     # ranks still waiting (an interrupt, a failure) end
        for rank in ranks:
            rank.join(30)
            if rank.is_alive():
                rank.kill()
                rank.join()
    if broken:
        raise RuntimeError(f"mdtest with {processes} processes in {base} failed (rank exit "
                           f"codes {[r.exitcode for r in ranks]}; a failing rank printed why)")
    for d in dirs:
        os.rmdir(d)
    return rates
