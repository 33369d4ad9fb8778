"""The command line as a user runs it."""

import subprocess
import sys


def mooseng(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "mooseng", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_demo_prints_outcomes_and_the_tree_and_is_deterministic(tmp_path):
    first = mooseng("demo", "--data", str(tmp_path / "one"))
    assert first.returncode == 0, first.stderr
    assert "EPERM: sticky directory" in first.stdout
    assert "EINVAL: cannot move a directory into itself" in first.stdout
    assert "latest -> notes.txt" in first.stdout
    assert "crw-rw-rw-" in first.stdout and "drwxrwxrwt" in first.stdout
    second = mooseng("demo", "--data", str(tmp_path / "two"))
    assert second.stdout == first.stdout


def test_the_demo_log_refolds_to_the_same_tree(tmp_path):
    assert mooseng("demo", "--data", str(tmp_path / "demo")).returncode == 0
    fold = mooseng("fold", "--commands", str(tmp_path / "demo" / "demo.commands"),
                   "--data", str(tmp_path / "refold"))
    assert fold.returncode == 0, fold.stderr
    original = mooseng("tree", "--data", str(tmp_path / "demo" / "projection"))
    refolded = mooseng("tree", "--data", str(tmp_path / "refold"))
    assert original.stdout == refolded.stdout and "notes-v1.txt" in original.stdout


def test_bad_arguments_and_missing_files_say_what_is_wrong(tmp_path):
    missing = mooseng("fold", "--commands", str(tmp_path / "nope"), "--data", str(tmp_path))
    assert missing.returncode != 0 and "nope" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert mooseng("frobnicate").returncode == 2
