"""Finding pyfuse3's FUSE operations table (the mount's fallocate and setxattr hooks
rely on it; tests/integration/test_posix_conformance.py checks both on a mount)."""

import pyfuse3
import pytest

from fuse_client import fuse_hooks as ff


def test_the_pinned_pyfuse3_names_what_the_hook_needs():
    names = (ff.OPS_SYMBOL, ff.SESSION_SYMBOL, ff.INIT_SYMBOL)
    found = ff.elf_symbols(pyfuse3.__file__, names)
    assert set(found) == set(names)
    assert all(value > 0 for value in found.values())


def test_a_file_that_is_not_elf_is_refused_clearly(tmp_path):
    path = tmp_path / "not-elf.so"
    path.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(ff.NotInstalled, match="not a 64-bit little-endian ELF"):
        ff.elf_symbols(str(path), (ff.OPS_SYMBOL,))


def test_without_a_session_nothing_is_patched():
    # pyfuse3.init() has not run in this process: the hook says so and is not added.
    with pytest.raises(ff.NotInstalled, match="has not made a session"):
        ff._session_ops()
