"""POSIX conformance: every case of posix_suite run on a fresh tmpfs (the reference)
and on the target, step by step; a failure names the family, the case and the first
steps where the target differs from tmpfs.

Targets: a second tmpfs (which checks the suite itself: two runs of the kernel's own
file system must agree, so every case is deterministic) and the MooseNG mount.
"""

import os
import tempfile

import pytest

from tests.integration.mount_fixture import mounted_cluster
from tests.integration.posix_suite import CASES, differences, run_case
from tests.integration.random_syscalls import first_difference, run_sequence
from tests.integration.tmpfs import mounted_tmpfs, tmpfs_dir  # noqa: F401 - a fixture


@pytest.fixture(scope="module", params=["tmpfs", "mooseng"])
def target(request):
    """(name, directory) of the file system under test."""
    if request.param == "tmpfs":
        with mounted_tmpfs() as point:
            yield "tmpfs2", point
    else:
        with mounted_cluster(request.getfixturevalue("tmp_path_factory").mktemp("posix")) \
                as cluster:
            yield "mooseng", cluster.mountpoint


# Differences we know of and cannot remove yet, by target and case.
KNOWN: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_as_tmpfs(name, tmpfs_dir, target):  # noqa: F811 - the fixture
    target_name, target_dir = target
    if (target_name, name) in KNOWN:
        pytest.xfail(KNOWN[target_name, name])
    reference = run_case(name, tmpfs_dir)
    got = run_case(name, target_dir)
    diffs = differences(reference, got, "tmpfs", target_name)
    assert not diffs, f"{name} on {target_name} differs from tmpfs:\n" + "\n".join(diffs)


@pytest.mark.parametrize("batch", range(4))
def test_random_call_sequences_match_tmpfs(batch, tmpfs_dir, target):  # noqa: F811
    """40 seeded sequences of 40 random calls each per batch (random_syscalls.py)."""
    target_name, target_dir = target
    for seed in range(batch * 40, batch * 40 + 40):
        reference = run_sequence(_fresh(tmpfs_dir), seed)
        got = run_sequence(_fresh(target_dir), seed)
        difference = first_difference(reference, got)
        assert difference is None, f"seed {seed} on {target_name}: {difference}"


def _fresh(root: str) -> str:
    path = tempfile.mkdtemp(prefix="random-", dir=root)
    os.chmod(path, 0o777)     # the unprivileged steps may create in it
    return path


def test_the_suite_notices_a_difference(tmpfs_dir):  # noqa: F811 - the fixture
    """A tmpfs mounted nodev differs from tmpfs exactly where device nodes are opened:
    a comparison that could not fail would pass here too."""
    with mounted_tmpfs(options="nodev") as nodev:
        reference = run_case("mknod-devices_as_root", tmpfs_dir)
        got = run_case("mknod-devices_as_root", nodev)
    assert differences(reference, got, "tmpfs", "nodev") == [
        "step 5 'write to the null device': tmpfs=('ok', 4) nodev='EACCES'",
        "step 6 'read the zero device': tmpfs=('ok', " + repr(bytes(100)) + ") nodev='EACCES'",
    ]
