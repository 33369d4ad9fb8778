"""Command files and projection directories: damage is reported, never misread."""

import pytest

from services.common.posix import records as r
from services.metadata.commandfile import CommandFileError, read_commands, write_commands
from services.metadata.projection import ProjectionError, open_projection

COMMANDS = [b"one", b"", b"three" * 100]


def test_round_trip(tmp_path):
    path = str(tmp_path / "c")
    assert write_commands(path, COMMANDS) == 3
    assert list(read_commands(path)) == COMMANDS


@pytest.mark.parametrize("damage, message", [
    (lambda raw: b"NOTMAGIC" + raw[8:], "not a MooseNG command file"),
    (lambda raw: raw[:-2], "record 3 is torn"),
    (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "record 3 fails its checksum"),
    (lambda raw: raw + b"\x00\x00", "record 4 is torn"),
])
def test_damage_is_reported_with_the_record_number(tmp_path, damage, message):
    path = tmp_path / "c"
    write_commands(str(path), COMMANDS)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CommandFileError, match=message):
        list(read_commands(str(path)))


def test_a_projection_reopens_in_the_same_process(tmp_path):
    with open_projection(str(tmp_path / "p")) as proj:
        proj.write([("put", r.META, b"probe", b"1")], 1, bytes(32))
    with open_projection(str(tmp_path / "p")) as proj:
        assert proj.applied_index == 1 and proj.get(r.META, b"probe") == b"1"


def test_a_projection_of_another_format_is_refused(tmp_path):
    with open_projection(str(tmp_path / "p")) as proj:
        proj.write([("put", r.META, b"format", r.u64(99))], 1, bytes(32))
    with pytest.raises(ProjectionError, match="format 99 is not supported"):
        open_projection(str(tmp_path / "p"))


def test_a_directory_that_is_not_a_projection_is_refused(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "CURRENT").write_text("garbage\n")
    with pytest.raises(ProjectionError, match="cannot open projection"):
        open_projection(str(tmp_path / "p"))
