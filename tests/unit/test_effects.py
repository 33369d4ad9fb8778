"""The archive's effects: a restore that writes them gives what folding gives, and
damaged, torn, foreign or missing effects cost speed, never correctness."""

import logging
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import namespace_pb2 as pb
from services.common.posix.records import COLUMN_FAMILIES
from services.logship import effects
from services.logship.archive import Archive
from services.logship.effects import EffectsError, EffectsIndex, decode, encode
from services.logship.effects_builder import BuilderBusy, EffectsBuilder, run
from services.logship.restore import replay
from services.metadata.applier import Applier
from services.metadata.projection import open_projection
from services.metadata.raft.messages import NORMAL, Entry

T0 = 1_800_000_000 * 10**9
GROUP = 8


def commands(first: int, count: int, salt: bytes = b"") -> list[Entry]:
    """Directories and files in them, renames and removals: every command succeeds."""
    out = []
    for i in range(first, first + count):
        kind = i % 4
        if kind == 0:
            op = {"mkdir": pb.Mkdir(parent=1, name=b"d%d%s" % (i, salt), mode=0o755)}
        elif kind == 1:
            op = {"create": pb.Create(parent=1, name=b"f%d%s" % (i, salt), mode=0o644)}
        elif kind == 2:
            op = {"rename": pb.Rename(parent=1, name=b"f%d%s" % (i - 1, salt), new_parent=1,
                                      new_name=b"g%d%s" % (i, salt))}
        else:
            op = {"unlink": pb.Unlink(parent=1, name=b"g%d%s" % (i - 1, salt))}
        data = pb.Command(time_ns=T0 + i * 10**6, **op).SerializeToString()
        out.append(Entry(i, 1, NORMAL, data))
    return out


def archived(path: Path, items: list[Entry]) -> str:
    with Archive(str(path), create=True) as archive:
        archive.append(items)
        archive.sync()
    return str(path)


def build(archive_dir: str, group: int = GROUP) -> int:
    builder = EffectsBuilder(archive_dir, group)
    try:
        with Archive(archive_dir, readonly=True) as archive:
            return builder.catch_up(archive)
    finally:
        builder.close()


def restored(archive_dir: str, target: Path, **kwargs) -> tuple[tuple, dict]:
    with Archive(archive_dir, readonly=True) as archive:
        summary = replay(archive, str(target), **kwargs)
    with open_projection(str(target)) as proj:
        return (proj.content_digest(), proj.applied_digest, proj.applied_index), summary


def effect_files(archive_dir: str) -> list[Path]:
    return sorted(Path(archive_dir, "effects").glob("*.eff"))


values = st.one_of(st.none(), st.binary(max_size=40))
writes = st.dictionaries(st.sampled_from(COLUMN_FAMILIES),
                         st.dictionaries(st.binary(max_size=30), values, max_size=5),
                         max_size=4)
ranges = st.lists(st.tuples(st.sampled_from(COLUMN_FAMILIES), st.binary(max_size=9),
                            st.binary(max_size=9)), max_size=3)


@settings(max_examples=200, deadline=None)
@given(ranges=ranges, writes=writes)
def test_a_group_encodes_and_decodes_to_itself(ranges, writes):
    got_ranges, got_writes = decode(encode(ranges, writes))
    assert got_ranges == ranges
    assert got_writes == {cf: v for cf, v in writes.items() if v}


@pytest.mark.parametrize("raw", [b"", b"\x00\x00\x00\x00", b"\x00\x00\x00\x01\x00",
                                 b"\x00\x00\x00\x00\x63\xff", b"\x00\x00\x00\x00\xff\x00"])
def test_a_payload_that_does_not_parse_is_an_effects_error(raw):
    with pytest.raises(EffectsError):
        decode(raw)


def test_restore_writes_the_effects_and_gives_what_folding_gives(tmp_path):
    archive_dir = archived(tmp_path / "archive", commands(1, 100))
    assert build(archive_dir) == 100 // GROUP
    for n in (1, GROUP - 1, GROUP, GROUP + 3, 96, 100):
        folded, _ = restored(archive_dir, tmp_path / f"fold-{n}", index=n, use_effects=False)
        written, summary = restored(archive_dir, tmp_path / f"eff-{n}", index=n)
        assert written == folded
        assert summary["entries_from_effects"] == n // GROUP * GROUP


def test_the_builder_resumes_where_it_stopped_as_the_archive_grows(tmp_path):
    archive_dir = archived(tmp_path / "archive", commands(1, 20))
    assert build(archive_dir) == 2
    with Archive(archive_dir) as archive:
        archive.append(commands(21, 30))
        archive.sync()
    assert build(archive_dir) == 4          # groups ending at 24, 32, 40, 48
    indexes = EffectsIndex(os.path.join(archive_dir, "effects"))
    assert sorted(g.first for g in indexes.groups.values()) == [1, 9, 17, 25, 33, 41]
    folded, _ = restored(archive_dir, tmp_path / "fold", use_effects=False)
    written, summary = restored(archive_dir, tmp_path / "eff")
    assert written == folded and summary["entries_from_effects"] == 48


def test_a_damaged_group_is_passed_over_and_its_commands_folded(tmp_path, caplog):
    archive_dir = archived(tmp_path / "archive", commands(1, 64))
    build(archive_dir)
    groups = sorted(EffectsIndex(os.path.join(archive_dir, "effects")).groups.values(),
                    key=lambda g: g.first)
    third = groups[2]
    raw = bytearray(Path(third.path).read_bytes())
    raw[groups[3].offset - 1] ^= 0x10                  # the last byte of its payload
    Path(third.path).write_bytes(bytes(raw))
    folded, _ = restored(archive_dir, tmp_path / "fold", use_effects=False)
    with caplog.at_level(logging.WARNING):
        written, summary = restored(archive_dir, tmp_path / "eff")
    assert written == folded
    assert summary["entries_from_effects"] == 64 - GROUP    # all but the damaged group
    assert "fails its checksum" in caplog.text


def test_a_torn_tail_is_cut_and_the_restore_folds_what_it_lost(tmp_path):
    archive_dir = archived(tmp_path / "archive", commands(1, 40))
    builder = EffectsBuilder(archive_dir, GROUP)
    with Archive(archive_dir, readonly=True) as archive:
        builder.catch_up(archive)
    builder.close()
    (last,) = effect_files(archive_dir)
    size = last.stat().st_size
    os.truncate(last, size - 7)                        # a crash in the last append
    index = EffectsIndex(os.path.join(archive_dir, "effects"))
    assert max(g.last for g in index.groups.values()) == 32 and not index.problems
    # The restore folds what no group covers.
    written, summary = restored(archive_dir, tmp_path / "eff")
    folded, _ = restored(archive_dir, tmp_path / "fold", use_effects=False)
    assert written == folded and summary["entries_from_effects"] == 32
    with Archive(archive_dir) as archive:
        archive.append(commands(41, 8))
        archive.sync()
    build(archive_dir)      # cuts the torn record, goes on after its state (40)
    written, summary = restored(archive_dir, tmp_path / "eff2")
    folded, _ = restored(archive_dir, tmp_path / "fold2", use_effects=False)
    assert written == folded and summary["entries_from_effects"] == 32 + GROUP
    assert EffectsIndex(os.path.join(archive_dir, "effects")).file_ends[str(last)] < size


def test_effects_of_another_history_are_never_written(tmp_path):
    """The effects of one archive copied into another with different commands: no group
    continues the digest, so every command is folded."""
    mine = archived(tmp_path / "mine", commands(1, 32))
    other = archived(tmp_path / "other", commands(1, 32, salt=b"x"))
    build(other)
    os.rename(os.path.join(other, "effects"), os.path.join(mine, "effects"))
    folded, _ = restored(mine, tmp_path / "fold", use_effects=False)
    written, summary = restored(mine, tmp_path / "eff")
    assert written == folded and summary["entries_from_effects"] == 0


def test_the_builder_starts_again_from_the_snapshot_that_bridges_a_gap(tmp_path):
    """A metalogger that fell behind a compaction archived a snapshot and went on after
    it: the builder cannot fold across the gap, so it continues from the snapshot."""
    live = tmp_path / "live"
    first, second = commands(1, 20), commands(41, 20)
    with open_projection(str(live)) as proj:
        applier = Applier(proj)
        applier.apply_many([(e.index, e.data) for e in first + commands(21, 20)])
        proj.checkpoint(str(tmp_path / "cp40"))
        applier.apply_many([(e.index, e.data) for e in second])
        live_state = (proj.content_digest(), proj.applied_digest, proj.applied_index)
    archive_dir = archived(tmp_path / "archive", first)
    assert build(archive_dir) == 2                    # 1..16
    with Archive(archive_dir) as archive:
        archive.add_snapshot(40, 1, b"", str(tmp_path / "cp40"))
        archive.append(second)
        archive.sync()
    assert build(archive_dir) == 2                    # 41..48 and 49..56, from the snapshot
    written, summary = restored(archive_dir, tmp_path / "eff")
    assert written == live_state and summary["entries_from_effects"] == 16


def test_one_builder_at_a_time_and_run_once_catches_up(tmp_path):
    archive_dir = archived(tmp_path / "archive", commands(1, 30))
    holder = EffectsBuilder(archive_dir, GROUP)
    try:
        with pytest.raises(BuilderBusy):
            EffectsBuilder(archive_dir, GROUP)
    finally:
        holder.close()
    assert run(archive_dir, GROUP, once=True) == 0
    assert len(EffectsIndex(os.path.join(archive_dir, "effects")).groups) == 3


def test_retention_drops_only_files_no_restore_can_start_in(tmp_path, monkeypatch):
    """Groups ending at or before the oldest point a restore can start from are of no
    use: whole files of them go, the file holding that point stays."""
    monkeypatch.setattr(effects, "FILE_BYTES", 2_000)     # a file every few groups
    archive_dir = archived(tmp_path / "archive", commands(1, 200))
    build(archive_dir)
    files = effect_files(archive_dir)
    firsts = [int(f.name.split(".")[0]) for f in files]
    assert len(files) >= 4
    cut = firsts[2] + GROUP          # inside the third file
    writer = effects.EffectsWriter(os.path.join(archive_dir, "effects"))
    assert writer.prune_through(cut) == 2
    assert [int(f.name.split(".")[0]) for f in effect_files(archive_dir)] == firsts[2:]
    folded, _ = restored(archive_dir, tmp_path / "fold", use_effects=False)
    written, summary = restored(archive_dir, tmp_path / "eff")
    # Folded up to the first group kept, whose digest the fold reaches: written from it.
    assert written == folded and summary["entries_from_effects"] == 200 - firsts[2] + 1
