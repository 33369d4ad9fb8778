"""A rename is durable only once its directory is synced: after a power loss the
old name, or nothing, could come back otherwise. Power cannot be cut here, so the
order of renames and directory syncs is recorded instead."""

import os

import pytest

from services.common import durable_files
from services.metadata.state_machine import NamespaceMachine


@pytest.fixture
def events(monkeypatch):
    """('rename', destination) and ('fsync', path) as they happen."""
    seen = []
    real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

    def fsync(fd):
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst):
        real_rename(src, dst)
        seen.append(("rename", os.path.abspath(dst)))

    def replace(src, dst):
        real_replace(src, dst)
        seen.append(("rename", os.path.abspath(dst)))
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def synced_after_rename(seen, dst: str) -> bool:
    at = seen.index(("rename", dst))
    return ("fsync", os.path.dirname(dst)) in seen[at + 1:]


def test_replace_durably_syncs_the_directory(tmp_path, events):
    src, dst = tmp_path / "a.tmp", tmp_path / "a"
    src.write_text("new")
    durable_files.replace_durably(str(src), str(dst))
    assert dst.read_text() == "new"
    assert synced_after_rename(events, str(dst))


def test_a_snapshot_directory_is_durable_once_taken(tmp_path, events):
    machine = NamespaceMachine(str(tmp_path / "node"))
    try:
        path = machine.checkpoint()
    finally:
        machine.close()
    assert os.path.isdir(path)
    assert synced_after_rename(events, os.path.abspath(path))


def test_pwrite_all_writes_everything(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        durable_files.pwrite_all(fd, b"x" * 3_000_000, 5)
        assert os.pread(fd, 10, 0) == b"\0" * 5 + b"x" * 5
        assert os.fstat(fd).st_size == 3_000_005
    finally:
        os.close(fd)
