"""The metalogger archive: what it gives back, what survives a crash, what it refuses."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas import namespace_pb2 as pb
from services.logship.archive import (
    Archive,
    ArchiveError,
    ArchiveGapError,
    command_time,
)
from services.metadata.projection import open_projection
from services.metadata.raft.messages import CONFIG, NOOP, NORMAL, Config, Entry

REPO = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000 * 10**9
CONF = Config(frozenset({1, 2, 3})).encode()


def command(i: int, t: int | None = None) -> bytes:
    return pb.Command(time_ns=T0 + i * 10**9 if t is None else t,
                      mkdir=pb.Mkdir(parent=1, name=b"d%d" % i, mode=0o755)).SerializeToString()


def entries(first: int, count: int, term: int = 1) -> list[Entry]:
    """Mostly commands one second apart; every 7th a no-op, the first a membership."""
    out = []
    for i in range(first, first + count):
        if i == 1:
            out.append(Entry(i, term, CONFIG, CONF))
        elif i % 7 == 0:
            out.append(Entry(i, term, NOOP, b""))
        else:
            out.append(Entry(i, term, NORMAL, command(i)))
    return out


def written(path, items, **kwargs) -> None:
    with Archive(str(path), create=True, **kwargs) as archive:
        archive.append(items)
        archive.sync()


def segments(path) -> list[Path]:
    return sorted((Path(path) / "segments").glob("*.seg"))


def flip(file: Path, offset: int) -> None:
    raw = bytearray(file.read_bytes())
    raw[offset] ^= 0x40
    file.write_bytes(bytes(raw))


def checkpoint(tmp_path, name: str, mkdirs: int) -> str:
    """A projection checkpoint with `mkdirs` directories in it, as a node takes one."""
    with open_projection(str(tmp_path / f"{name}-db")) as proj:
        from services.metadata.applier import Applier
        applier = Applier(proj)
        applier.apply_many([(i, command(i)) for i in range(1, mkdirs + 1)])
        proj.checkpoint(str(tmp_path / name))
    return str(tmp_path / name)


def test_round_trip_keeps_every_field_and_time(tmp_path):
    items = entries(1, 500)
    written(tmp_path / "a", items)
    with Archive(str(tmp_path / "a")) as archive:
        back = list(archive.entries())
        assert (archive.first_index, archive.last_index, archive.last_term) == (1, 500, 1)
    assert [(e.index, e.term, e.kind, e.data) for e in back] == \
        [(e.index, e.term, e.kind, e.data) for e in items]
    # A command's time is its own; a no-op takes the time of the entry before it.
    assert back[5].time_ns == T0 + 6 * 10**9
    assert back[6].kind == NOOP and back[6].time_ns == back[5].time_ns
    assert back[0].time_ns == 0   # the first entry is a membership: nothing before it


def test_ranges_and_many_appends_across_segments(tmp_path):
    with Archive(str(tmp_path / "a"), create=True, segment_bytes=2000) as archive:
        for first in range(1, 1001, 10):
            archive.append(entries(first, 10, term=1 + first // 300))
        archive.sync()
    assert len(segments(tmp_path / "a")) > 3
    with Archive(str(tmp_path / "a")) as archive:
        assert [e.index for e in archive.entries(95, 412)] == list(range(95, 413))
        assert archive.last_term == 4
        assert [e.term for e in archive.entries(299, 302)] == [1, 1, 2, 2]


def test_compresses_repetitive_commands(tmp_path):
    items = entries(1, 5000)
    written(tmp_path / "a", items)
    raw = sum(len(e.data) for e in items)
    assert sum(f.stat().st_size for f in segments(tmp_path / "a")) < raw / 2


def test_gap_and_repeat_are_refused_and_nothing_is_written(tmp_path):
    written(tmp_path / "a", entries(1, 10))
    with Archive(str(tmp_path / "a")) as archive:
        with pytest.raises(ArchiveGapError, match="start at index 12 but the archive ends at 10"):
            archive.append(entries(12, 3))
        with pytest.raises(ArchiveGapError, match="archived already"):
            archive.append(entries(10, 3))
        with pytest.raises(ArchiveGapError, match="skip from 11 to 13"):
            archive.append([Entry(11, 1, NOOP), Entry(13, 1, NOOP)])
        assert archive.last_index == 10
    with Archive(str(tmp_path / "a")) as archive:
        assert archive.last_index == 10


def test_missing_directory_is_an_error_unless_created(tmp_path):
    with pytest.raises(ArchiveError, match="no archive there"):
        Archive(str(tmp_path / "nope"))
    Archive(str(tmp_path / "nope"), create=True).close()
    with Archive(str(tmp_path / "nope")) as archive:
        assert (archive.first_index, archive.last_index) == (1, 0)


def test_one_writer_at_a_time_but_readers_need_no_lock(tmp_path):
    written(tmp_path / "a", entries(1, 20))
    with Archive(str(tmp_path / "a")) as archive:
        with pytest.raises(ArchiveError, match="has the archive open for writing"):
            Archive(str(tmp_path / "a"))
        reader = Archive(str(tmp_path / "a"), readonly=True)
        assert reader.last_index == 20
        with pytest.raises(ArchiveError, match="read-only"):
            reader.append(entries(21, 1))
        reader.close()
        archive.append(entries(21, 1))


def test_torn_tail_is_cut_back_to_the_last_whole_block(tmp_path):
    written(tmp_path / "a", entries(1, 10))
    written(tmp_path / "a", entries(11, 10))
    seg = segments(tmp_path / "a")[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as f:
        f.truncate(size - 5)          # the second append's block was never fully written
    with Archive(str(tmp_path / "a")) as archive:
        assert archive.last_index == 10
        assert "never synced" in archive.recovery_notes[0]
        archive.append(entries(11, 3))   # and the archive goes on from there
    with Archive(str(tmp_path / "a")) as archive:
        assert [e.index for e in archive.entries()] == list(range(1, 14))


def test_zeros_after_the_last_block_are_a_torn_tail(tmp_path):
    written(tmp_path / "a", entries(1, 10))
    with open(segments(tmp_path / "a")[-1], "ab") as f:
        f.write(bytes(300))
    with Archive(str(tmp_path / "a")) as archive:
        assert archive.last_index == 10


def test_a_flipped_byte_in_an_earlier_block_names_the_file_and_index(tmp_path):
    written(tmp_path / "a", entries(1, 10))
    written(tmp_path / "a", entries(11, 10))
    seg = segments(tmp_path / "a")[-1]
    flip(seg, 22 + 64 + 5)   # inside the first block's payload
    with pytest.raises(ArchiveError) as caught:
        Archive(str(tmp_path / "a"))
    message = str(caught.value)
    assert str(seg) in message and "byte offset 22" in message and "index 1" in message
    assert "mooseng log verify" in message


def test_damage_in_a_sealed_segment_is_found_when_read(tmp_path):
    with Archive(str(tmp_path / "a"), create=True, segment_bytes=500) as archive:
        for first in range(1, 101, 10):
            archive.append(entries(first, 10))
    first_seg = segments(tmp_path / "a")[0]
    flip(first_seg, first_seg.stat().st_size - 3)   # payload of its last block
    with Archive(str(tmp_path / "a"), readonly=True) as archive, \
            pytest.raises(ArchiveError, match=r"payload CRC mismatch .*index \d+"):
        list(archive.entries())


def test_time_index_finds_the_last_entry_at_or_before(tmp_path):
    written(tmp_path / "a", entries(1, 100))
    with Archive(str(tmp_path / "a")) as archive:
        assert archive.index_at_time(T0 + 50 * 10**9) == 50
        assert archive.index_at_time(T0 + 50 * 10**9 - 1) == 49
        assert archive.index_at_time(T0 + 6 * 10**9 + 1) == 7   # the no-op at 7 shares 6's time
        assert archive.index_at_time(T0 + 10**12) == 100
        assert archive.index_at_time(-1) == 0


def test_time_index_tolerates_a_clock_that_steps_back(tmp_path):
    items = [Entry(i, 1, NORMAL, command(i, T0 + t)) for i, t in
             enumerate([10, 20, 30, 25, 40, 35], start=1)]
    with Archive(str(tmp_path / "a"), create=True) as archive:
        for e in items:
            archive.append([e])   # one block each
        assert archive.index_at_time(T0 + 27) == 4
        assert archive.index_at_time(T0 + 36) == 6
        assert archive.index_at_time(T0 + 22) == 2


def test_snapshot_past_the_end_continues_the_archive(tmp_path):
    snap = checkpoint(tmp_path, "cp", 5)
    with Archive(str(tmp_path / "a"), create=True) as archive:
        archive.append(entries(1, 10))
        archive.add_snapshot(50, 3, CONF, snap)
        assert (archive.last_index, archive.last_term) == (50, 3)
        with pytest.raises(ArchiveGapError):
            archive.append(entries(11, 5, term=3))
        archive.append(entries(51, 5, term=3))
    with Archive(str(tmp_path / "a")) as archive:
        assert [e.index for e in archive.entries()] == [*range(1, 11), *range(51, 56)]
        [info] = archive.snapshots()
        assert (info.index, info.term, info.config) == (50, 3, CONF)
        assert info.path.startswith(str(tmp_path / "a"))
        with open_projection(info.path) as proj:
            assert proj.applied_index == 5


def test_snapshot_that_contradicts_an_entry_is_refused(tmp_path):
    snap = checkpoint(tmp_path, "cp", 3)
    with Archive(str(tmp_path / "a"), create=True) as archive:
        archive.append(entries(1, 10, term=2))
        with pytest.raises(ArchiveError, match="contradicts the archived entry 5 of term 2"):
            archive.add_snapshot(5, 1, CONF, snap)


def test_missing_entries_without_a_snapshot_are_reported(tmp_path):
    snap = checkpoint(tmp_path, "cp", 3)
    with Archive(str(tmp_path / "a"), create=True) as archive:
        archive.append(entries(1, 10))
        archive.add_snapshot(20, 1, CONF, snap)
        archive.append(entries(21, 5))
    for path in (tmp_path / "a" / "snapshots").iterdir():
        os.rename(path, tmp_path / path.name)   # the snapshot that bridged the gap is gone
    with pytest.raises(ArchiveError, match="entries 11..20 are missing"):
        Archive(str(tmp_path / "a"))


def test_retention_drops_old_data_but_stays_restorable(tmp_path):
    snap = checkpoint(tmp_path, "cp", 3)
    with Archive(str(tmp_path / "a"), create=True, segment_bytes=300) as archive:
        for first in range(1, 301, 10):
            archive.append(entries(first, 10))
            if first in (101, 201):
                archive.add_snapshot(first + 9, 1, CONF, snap)
        before = len(segments(tmp_path / "a"))
        # Everything before entry 250's time is "old": the snapshot at 210 is the newest
        # one before that, so it and what follows stay.
        report = archive.apply_retention(max_age_s=50, max_bytes=None,
                                         now_ns=T0 + 300 * 10**9)
        assert report["dropped_snapshots"] == 1 and report["dropped_segments"] > 0
        assert [s.index for s in archive.snapshots()] == [210]
        assert archive.first_index <= 211
        assert len(segments(tmp_path / "a")) < before
    with Archive(str(tmp_path / "a")) as archive:   # still consistent on reopen
        assert archive.last_index == 300
        # Size: even a tiny budget keeps the newest snapshot and all after it.
        archive.apply_retention(None, max_bytes=1)
        assert [s.index for s in archive.snapshots()] == [210]


def test_retention_without_pressure_keeps_everything(tmp_path):
    snap = checkpoint(tmp_path, "cp", 3)
    with Archive(str(tmp_path / "a"), create=True, segment_bytes=300) as archive:
        archive.append(entries(1, 100))
        archive.add_snapshot(100, 1, CONF, snap)
        report = archive.apply_retention(None, max_bytes=10**12, now_ns=T0)
        assert report["dropped_segments"] == report["dropped_snapshots"] == 0
        assert archive.first_index == 1


def test_command_time_reads_the_first_field():
    assert command_time(command(3)) == T0 + 3 * 10**9
    assert command_time(pb.Command(time_ns=-5).SerializeToString()) == -5
    assert command_time(pb.Command(mkdir=pb.Mkdir(parent=1)).SerializeToString()) == 0
    assert command_time(b"") == 0


WRITER = """
import sys
from services.logship.archive import Archive
from services.metadata.raft.messages import Entry, NORMAL
archive = Archive(sys.argv[1], create=True)
i = archive.last_index
while True:
    archive.append([Entry(i + k, 1, NORMAL, b"x" * (k * 37 % 500)) for k in range(1, 51)])
    i += 50
    if i % 200 == 0:
        archive.sync()
        print(i, flush=True)
"""


def test_reopen_after_a_crash_keeps_everything_synced(tmp_path):
    path = str(tmp_path / "a")
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path], cwd=REPO,
                                stdout=subprocess.PIPE, text=True)
        try:
            synced = [int(proc.stdout.readline()) for _ in range(5)]
            time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
        with Archive(path) as archive:
            assert archive.last_index >= synced[-1]
            back = [e.index for e in archive.entries()]
            assert back == list(range(1, archive.last_index + 1))
