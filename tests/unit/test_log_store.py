"""The durable Raft log: what survives a reopen or a crash, and what recovery refuses."""

import errno
import inspect
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.metadata.raft import log_store
from services.metadata.raft.log_store import (
    RECORD_OVERHEAD,
    Entry,
    LogCompactedError,
    LogCorruptError,
    LogInUseError,
    LogStore,
    LogStoreFailedError,
)

REPO = Path(__file__).resolve().parents[2]


def payload(index: int) -> bytes:
    return f"entry {index};".encode() * (index % 5 + 1)


def make(first: int, count: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, i % 3, payload(i)) for i in range(first, first + count)]


def segments(path) -> list[Path]:
    return sorted(Path(path).glob("*.seg"))


def reopened(path, **kwargs) -> LogStore:
    return LogStore(str(path), **kwargs)


def written(path, entries, segment_bytes=64 << 20, commit=0) -> None:
    with LogStore(str(path), segment_bytes=segment_bytes) as store:
        store.append(entries)
        store.sync()
        if commit:
            store.save_hard_state(1, 0, commit)


def flip(file: Path, offset: int) -> None:
    raw = bytearray(file.read_bytes())
    raw[offset] ^= 0x40
    file.write_bytes(bytes(raw))


def record_start(index: int, first: int, entries: list[Entry]) -> int:
    """Byte offset of `index`'s record in a segment starting at `first`."""
    header = log_store._SEGMENT_HEADER.size
    return header + sum(RECORD_OVERHEAD + len(e.data) for e in entries if first <= e.index < index)


# -- appending, reading, reopening ---------------------------------------------------------

def test_a_synced_log_reads_back_the_same_after_reopen(tmp_path):
    entries = make(1, 50)
    written(tmp_path, entries)
    with reopened(tmp_path) as store:
        assert (store.first_index, store.last_index) == (1, 50)
        assert store.entries(1, 51) == entries
        assert store.term_at(0) == 0 and store.term_at(50) == 1 and store.term_at(51) is None
        assert store.recovery_notes == []


def test_an_empty_directory_is_a_fresh_node(tmp_path):
    with reopened(tmp_path / "new") as store:
        assert (store.first_index, store.last_index, store.snapshot_index) == (1, 0, 0)
        assert store.hard_state() == (0, 0, 0)
        assert store.entries(1, 10) == []


def test_many_appends_share_one_fsync(tmp_path, monkeypatch):
    calls = []
    real = log_store._datasync
    monkeypatch.setattr(log_store, "_datasync", lambda fd: calls.append(fd) or real(fd))
    with reopened(tmp_path) as store:
        calls.clear()
        for first in range(1, 201, 4):
            store.append(make(first, 4))
        assert calls == [] and store.synced_index == 0
        store.sync()
        assert len(calls) == 1 and store.synced_index == 200
    with reopened(tmp_path) as store:
        assert store.entries(1, 201) == make(1, 200)


def test_entries_respects_max_bytes_but_returns_at_least_one(tmp_path):
    entries = [Entry(i, 1, 0, bytes(100)) for i in range(1, 11)]
    written(tmp_path, entries, segment_bytes=350)
    with reopened(tmp_path, segment_bytes=350) as store:
        assert store.entries(1, 11, max_bytes=350) == entries[:3]
        assert store.entries(1, 11, max_bytes=300) == entries[:3]
        assert store.entries(2, 11, max_bytes=10) == entries[1:2]
        assert store.entries(1, 11, max_bytes=10_000) == entries
        assert store.entries(4, 6) == entries[3:5]
        assert store.entries(9, 100) == entries[8:]
        assert store.entries(11, 20) == []


def test_a_second_store_on_the_same_directory_is_refused(tmp_path):
    with reopened(tmp_path), pytest.raises(LogInUseError, match="already open"):
        reopened(tmp_path)


def test_a_gap_or_falling_term_in_an_append_is_refused(tmp_path):
    with reopened(tmp_path) as store:
        store.append(make(1, 3, term=2))
        with pytest.raises(ValueError, match="gap"):
            store.append(make(5, 1, term=2))
        with pytest.raises(ValueError, match="never decrease"):
            store.append(make(4, 1, term=1))
        with pytest.raises(ValueError, match="not contiguous"):
            store.append([Entry(4, 2, 0, b""), Entry(6, 2, 0, b"")])
        assert store.last_index == 3


# -- conflicts and truncation --------------------------------------------------------------

def test_a_conflicting_append_replaces_the_suffix_for_good(tmp_path):
    written(tmp_path, make(1, 30), segment_bytes=300)
    with reopened(tmp_path, segment_bytes=300) as store:
        store.append([Entry(12, 2, 0, b"new 12"), Entry(13, 2, 0, b"new 13")])
        store.sync()
    with reopened(tmp_path, segment_bytes=300) as store:
        assert store.last_index == 13
        assert store.entries(1, 100) == make(1, 11) + [Entry(12, 2, 0, b"new 12"),
                                                        Entry(13, 2, 0, b"new 13")]
        store.append(make(14, 3, term=2))
    with reopened(tmp_path, segment_bytes=300) as store:
        assert [e.term for e in store.entries(10, 100)] == [1, 1, 2, 2, 2, 2, 2]
        assert store.entries(14, 17) == make(14, 3, term=2)


def test_a_stale_append_of_entries_already_held_drops_nothing(tmp_path):
    with reopened(tmp_path) as store:
        store.append(make(1, 10))
        store.append(make(3, 2))   # a reordered, older AppendEntries
        assert store.last_index == 10
        assert store.entries(1, 11) == make(1, 10)


def test_truncate_suffix_is_durable_and_never_resurrects(tmp_path):
    written(tmp_path, make(1, 40), segment_bytes=300)
    count = len(segments(tmp_path))
    with reopened(tmp_path, segment_bytes=300) as store:
        store.truncate_suffix(7)
        assert store.last_index == 6 and store.term_at(7) is None
        assert len(segments(tmp_path)) < count
    with reopened(tmp_path, segment_bytes=300) as store:
        assert store.entries(1, 100) == make(1, 6)
        store.append([Entry(7, 3, 0, b"short")])   # smaller than what was there
        store.sync()
    with reopened(tmp_path, segment_bytes=300) as store:
        assert store.last_index == 7 and store.entries(7, 100) == [Entry(7, 3, 0, b"short")]


def test_committed_or_compacted_entries_cannot_be_truncated(tmp_path):
    with reopened(tmp_path) as store:
        store.append(make(1, 10))
        store.save_hard_state(1, 1, 5)
        with pytest.raises(ValueError, match="committed entry 5"):
            store.truncate_suffix(5)
        store.compact(3, 1)
        with pytest.raises(ValueError, match="compacted"):
            store.truncate_suffix(2)
        store.truncate_suffix(6)
        assert store.last_index == 5


# -- compaction ----------------------------------------------------------------------------

def test_compaction_deletes_whole_segments_and_keeps_the_base_term(tmp_path):
    written(tmp_path, make(1, 60, term=4), segment_bytes=300)
    before = len(segments(tmp_path))
    with reopened(tmp_path, segment_bytes=300) as store:
        size = store.size_bytes
        store.compact(45, 4)
        assert len(segments(tmp_path)) < before and store.size_bytes < size
        assert (store.first_index, store.last_index) == (46, 60)
    with reopened(tmp_path, segment_bytes=300) as store:
        assert (store.snapshot_index, store.snapshot_term) == (45, 4)
        assert store.term_at(45) == 4 and store.term_at(44) is None
        assert store.entries(46, 61) == make(46, 15, term=4)
        with pytest.raises(LogCompactedError, match="send the snapshot"):
            store.entries(44, 50)


@pytest.mark.parametrize("upto", range(1, 16))
def test_compaction_at_any_index_keeps_exactly_the_entries_after_it(tmp_path, upto):
    written(tmp_path, make(1, 16), segment_bytes=150)   # segments of 2 to 3 entries
    with reopened(tmp_path, segment_bytes=150) as store:
        store.compact(upto, 1)
        assert store.entries(upto + 1, 17) == make(upto + 1, 16 - upto)
    with reopened(tmp_path, segment_bytes=150) as store:
        assert store.entries(upto + 1, 17) == make(upto + 1, 16 - upto)
        assert store.term_at(upto) == 1 and store.term_at(upto - 1) is None


def test_compaction_beyond_the_log_empties_it_and_restarts_after_the_snapshot(tmp_path):
    written(tmp_path, make(1, 20), segment_bytes=300)
    with reopened(tmp_path, segment_bytes=300) as store:
        store.compact(100, 7)
        assert (store.first_index, store.last_index) == (101, 100)
    with reopened(tmp_path, segment_bytes=300) as store:
        assert store.term_at(100) == 7 and store.term_at(20) is None
        assert [p.name for p in segments(tmp_path)] == [f"{101:020d}.seg"]
        store.append(make(101, 3, term=7))
    with reopened(tmp_path, segment_bytes=300) as store:
        assert store.entries(101, 200) == make(101, 3, term=7)


def test_a_snapshot_disagreeing_with_the_log_replaces_it(tmp_path):
    written(tmp_path, make(1, 20), segment_bytes=300)
    with reopened(tmp_path, segment_bytes=300) as store:
        store.compact(10, 2)
    with reopened(tmp_path, segment_bytes=300) as store:
        assert (store.last_index, store.term_at(10), store.term_at(11)) == (10, 2, None)


def test_a_snapshot_contradicting_a_committed_entry_is_refused(tmp_path):
    with reopened(tmp_path) as store:
        store.append(make(1, 10))
        store.save_hard_state(1, 0, 8)
        with pytest.raises(ValueError, match="contradicts committed entry 5"):
            store.compact(5, 2)
        assert (store.snapshot_index, store.last_index) == (0, 10)


def test_an_interrupted_reset_is_finished_on_open(tmp_path):
    """The state file says the snapshot (10, term 2) replaced the log, but the crash came
    before the old segments were deleted."""
    written(tmp_path, make(1, 20), segment_bytes=300)
    old = {p.name: p.read_bytes() for p in segments(tmp_path)}
    with reopened(tmp_path, segment_bytes=300) as store:
        store.compact(10, 2)
    for p in segments(tmp_path):
        p.unlink()
    for name, raw in old.items():
        (tmp_path / name).write_bytes(raw)
    with reopened(tmp_path, segment_bytes=300) as store:
        assert (store.last_index, store.term_at(10), store.entries(11, 30)) == (10, 2, [])


# -- torn tails and corruption -------------------------------------------------------------

def test_a_tail_torn_at_any_byte_is_cut_back_to_the_previous_entry(tmp_path):
    entries = make(1, 5)
    src = tmp_path / "src"
    written(src, entries)
    (seg,) = segments(src)
    raw, state = seg.read_bytes(), (src / "state").read_bytes()
    start = record_start(5, 1, entries)
    for cut in range(start, len(raw)):
        node = tmp_path / f"cut{cut}"
        node.mkdir()
        (node / seg.name).write_bytes(raw[:cut])
        (node / "state").write_bytes(state)
        with reopened(node) as store:
            assert store.entries(1, 10) == entries[:4], f"cut at {cut}"
            assert (cut == start) != bool(store.recovery_notes)
        assert (node / seg.name).stat().st_size == start


def test_a_flipped_byte_in_a_middle_record_stops_the_node_naming_the_file(tmp_path):
    entries = make(1, 10)
    written(tmp_path, entries)
    (seg,) = segments(tmp_path)
    start = record_start(5, 1, entries)
    for offset in (start + 1, start + 9, start + 14, start + RECORD_OVERHEAD + 2):
        flip(seg, offset)   # marker, length, index, data
        with pytest.raises(LogCorruptError,
                           match=rf"{re.escape(str(seg))}.*index 5.*move its data directory"):
            reopened(tmp_path)
        flip(seg, offset)
    with reopened(tmp_path) as store:
        assert store.last_index == 10


def test_a_flipped_byte_in_the_last_record_counts_as_torn_unless_committed(tmp_path):
    """A damaged final record looks exactly like a write cut short by a crash, so it is cut
    away, unless the hard state says it was committed: then it is corruption."""
    entries = make(1, 10)
    written(tmp_path / "a", entries)
    written(tmp_path / "b", entries, commit=10)
    for node in ("a", "b"):
        (seg,) = segments(tmp_path / node)
        flip(seg, record_start(10, 1, entries) + RECORD_OVERHEAD)
    with reopened(tmp_path / "a") as store:
        assert store.last_index == 9 and "torn tail" in store.recovery_notes[0]
    with pytest.raises(LogCorruptError, match="up to 10 were committed.*index 10"):
        reopened(tmp_path / "b")


def test_damage_at_the_end_of_an_older_segment_is_corruption(tmp_path):
    entries = make(1, 30)
    written(tmp_path, entries, segment_bytes=300)
    older = segments(tmp_path)[0]
    older.write_bytes(older.read_bytes()[:-3])
    with pytest.raises(LogCorruptError, match=rf"{re.escape(str(older))}.*complete on disk"):
        reopened(tmp_path, segment_bytes=300)


def test_a_missing_middle_segment_is_corruption(tmp_path):
    written(tmp_path, make(1, 30), segment_bytes=300)
    missing = segments(tmp_path)[1]
    missing.unlink()
    with pytest.raises(LogCorruptError, match="entries are missing"):
        reopened(tmp_path, segment_bytes=300)


def test_a_torn_new_segment_is_removed(tmp_path):
    written(tmp_path, make(1, 5))
    (tmp_path / f"{6:020d}.seg").write_bytes(b"MNGR")
    with reopened(tmp_path) as store:
        assert store.last_index == 5 and len(segments(tmp_path)) == 1
        store.append(make(6, 2))
        assert store.entries(5, 8) == make(5, 3)


def test_damage_found_after_opening_is_reported_on_read(tmp_path):
    entries = make(1, 10)
    written(tmp_path, entries)
    with reopened(tmp_path) as store:
        flip(segments(tmp_path)[0], record_start(3, 1, entries) + RECORD_OVERHEAD)
        assert store.entries(1, 3) == entries[:2]
        with pytest.raises(LogCorruptError, match="index 3"):
            store.entries(1, 5)


def test_after_a_failed_fsync_the_store_refuses_further_use(tmp_path, monkeypatch):
    store = reopened(tmp_path)
    store.append(make(1, 3))

    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(log_store, "_datasync", failing)
    with pytest.raises(OSError, match="Input/output"):
        store.sync()
    with pytest.raises(LogStoreFailedError, match="restart the node"):
        store.append(make(4, 1))
    store.close()   # releases the directory without trying to sync again
    monkeypatch.undo()
    with reopened(tmp_path) as store:
        assert store.last_index == 3


# -- hard state ----------------------------------------------------------------------------

def test_hard_state_round_trips(tmp_path):
    with reopened(tmp_path) as store:
        store.append(make(1, 5))
        store.save_hard_state(3, 2, 4)
        assert store.synced_index == 5   # saving commit 4 synced the entries it refers to
    with reopened(tmp_path) as store:
        assert store.hard_state() == (3, 2, 4)
        with pytest.raises(ValueError, match="already voted for 2"):
            store.save_hard_state(3, 1, 4)
        with pytest.raises(ValueError, match="past the last entry"):
            store.save_hard_state(3, 2, 6)
        store.save_hard_state(4, 0, 5)
    with reopened(tmp_path) as store:
        assert store.hard_state() == (4, 0, 5)


@pytest.mark.parametrize("damage", ["flip", "short", "missing"])
def test_a_damaged_or_missing_state_file_with_a_log_is_corruption(tmp_path, damage):
    written(tmp_path, make(1, 5))
    state = tmp_path / "state"
    if damage == "flip":
        flip(state, 20)
    elif damage == "short":
        state.write_bytes(state.read_bytes()[:10])
    else:
        state.unlink()
    with pytest.raises(LogCorruptError, match=rf"{re.escape(str(state))}.*vote twice"):
        reopened(tmp_path)


# -- against a model -----------------------------------------------------------------------

class Model:
    """The log as a plain list after a (snapshot index, term) base."""

    def __init__(self):
        self.base, self.base_term, self.log = 0, 0, []

    @property
    def last(self) -> int:
        return self.base + len(self.log)

    def term_at(self, index: int) -> int | None:
        if index == self.base:
            return self.base_term
        return self.log[index - self.base - 1].term if self.base < index <= self.last else None

    def append(self, entries):
        for k, e in enumerate(entries):
            if e.index > self.base and self.term_at(e.index) != e.term:
                del self.log[e.index - self.base - 1:]
                self.log += entries[k:]
                return

    def compact(self, upto, term):
        if self.term_at(upto) == term:
            del self.log[:upto - self.base]
        else:
            self.log = []
        self.base, self.base_term = upto, term


OPS = st.lists(st.tuples(st.sampled_from(["append", "append", "truncate", "compact", "reopen"]),
                         st.integers(0, 10_000), st.integers(0, 10_000)), max_size=40)


def step(store: LogStore, model: Model, op: str, a: int, b: int) -> LogStore:
    span = model.last - model.base + 1
    if op == "append":
        start = model.base + 1 + a % span
        term = max(1, model.term_at(start - 1) + b % 3)
        batch = [Entry(i, term, b % 4, payload(i + b)) for i in range(start, start + 1 + b % 12)]
        store.append(batch)
        model.append(batch)
    elif op == "truncate":
        store.truncate_suffix(model.base + 1 + a % span)
        del model.log[a % span:]
    elif op == "compact":
        upto = model.base + 1 + a % (span + 2)
        if upto <= model.last:
            term = model.term_at(upto) + (b % 4 == 0)   # sometimes disagree with the log
        else:
            term = max(1, model.term_at(model.last) + b % 2)
        store.compact(upto, term)
        model.compact(upto, term)
    else:
        store.close()
        store = reopened(store.directory, segment_bytes=200)
    return store


def same(store: LogStore, model: Model) -> None:
    assert (store.snapshot_index, store.snapshot_term) == (model.base, model.base_term)
    assert (store.first_index, store.last_index) == (model.base + 1, model.last)
    assert store.entries(store.first_index, store.last_index + 1) == model.log
    for index in range(max(0, model.base - 1), model.last + 2):
        assert store.term_at(index) == model.term_at(index)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_random_operations_match_a_list_model(ops):
    with tempfile.TemporaryDirectory() as tmp:
        store, model = reopened(tmp, segment_bytes=200), Model()
        try:
            for op, a, b in ops:
                store = step(store, model, op, a, b)
                same(store, model)
            store.close()
            store = reopened(tmp, segment_bytes=200)
            same(store, model)
        finally:
            store.close()


# -- a real crash --------------------------------------------------------------------------

CHILD = inspect.getsource(payload) + """
import sys
from services.metadata.raft.log_store import Entry, LogStore
store = LogStore(sys.argv[1], segment_bytes=2048)
last = store.last_index
while True:
    n = last % 7 + 1
    store.append([Entry(i, 1, 0, payload(i)) for i in range(last + 1, last + n + 1)])
    store.sync()
    last += n
    if last % 200 < n:
        store.compact(last - 100, 1)
    print(last, flush=True)
"""


def test_sigkill_never_loses_a_synced_entry(tmp_path):
    """SIGKILL keeps the page cache, so this checks the store's own ordering and recovery
    (torn records, half-made segments, interrupted compaction), not the disk's."""
    rng = random.Random(7)
    data, reported = tmp_path / "log", 0
    for attempt in range(4):
        out = tmp_path / f"out{attempt}"
        with open(out, "w") as sink:
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(data)], cwd=REPO,
                                     stdout=sink, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            while not out.read_text() and time.monotonic() < deadline:
                assert child.poll() is None, child.stderr.read().decode()
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stderr.close()
        lines = out.read_text().split()
        assert lines, "the child never synced anything"
        reported = int(lines[-1])
        with reopened(data) as store:
            assert store.last_index >= reported
            got = store.entries(store.first_index, reported + 1)
            assert got == [Entry(i, 1, 0, payload(i)) for i in range(store.first_index,
                                                                      reported + 1)]
    assert reported > 50
