"""A real `mooseng fold` process SIGKILLed at random points restarts at a command
boundary, with exactly the projection of the commands it says it applied, and
resumes to the same final projection as an uninterrupted run."""

import json
import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from mooseng.workload import command_mix
from services.metadata.applier import Applier
from services.metadata.commandfile import write_commands
from services.metadata.projection import open_projection

COMMANDS = 30_000


def reference(tmp_path, log, n):
    """(content digest, running digest) after folding exactly the first n commands."""
    path = tmp_path / f"ref-{n}"
    with open_projection(str(path)) as proj:
        Applier(proj).apply_many([(i + 1, d) for i, d in enumerate(log[:n])])
        return proj.content_digest(), proj.applied_digest


def start_fold(commands, data, group, progress=False):
    return subprocess.Popen(
        [sys.executable, "-m", "mooseng", "fold", "--commands", str(commands), "--data",
         str(data), "--group", str(group), *(["--progress"] if progress else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def first_progress(proc, timeout: float = 60.0) -> bool:
    """Wait until the fold reports applying something; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            return bool(proc.stdout.readline())
    return False


@pytest.mark.slow
@pytest.mark.parametrize("group", [1, 64])
def test_sigkill_during_apply_leaves_a_command_boundary_and_resumes(tmp_path, group):
    log = command_mix(COMMANDS, seed=group)
    commands = tmp_path / "log.commands"
    write_commands(str(commands), log)
    data = tmp_path / "projection"
    rng = random.Random(group)
    interrupted_midway = 0
    for _attempt in range(12):
        if interrupted_midway >= 3:
            break
        proc = start_fold(commands, data, group, progress=True)
        try:
            if first_progress(proc):   # it is folding: kill it somewhere in the middle
                time.sleep(rng.uniform(0.0, 0.6))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        with open_projection(str(data)) as proj:
            n, state = proj.applied_index, (proj.content_digest(), proj.applied_digest)
        if 0 < n < COMMANDS:
            interrupted_midway += 1
            assert n % group == 0 or n == COMMANDS
            assert state == reference(tmp_path, log, n), f"projection at {n} is not exact"
    assert interrupted_midway, "no kill landed in the middle of the log: raise the delays"
    proc = start_fold(commands, data, group)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["applied_index"] == COMMANDS
    final = reference(tmp_path, log, COMMANDS)
    assert report["content_digest"] == final[0]
    with open_projection(str(data)) as proj:
        assert proj.applied_digest == final[1]


def test_fold_reports_a_damaged_command_file_clearly(tmp_path):
    commands = tmp_path / "log.commands"
    write_commands(str(commands), command_mix(10))
    raw = bytearray(commands.read_bytes())
    raw[-3] ^= 0xFF
    commands.write_bytes(bytes(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "mooseng", "fold", "--commands", str(commands), "--data",
         str(tmp_path / "p")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "record 10 fails its checksum" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "nothing")
