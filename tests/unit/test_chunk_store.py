"""The chunk store on real files: what reads return, what survives a reopen, and that
damage or a torn write turns into an error instead of wrong data."""

import errno
import os
import random

import crc32c
import pytest

from services.chunk import store as store_module
from services.chunk.errors import (
    ChunkCorruptError,
    ChunkDirectoryError,
    ChunkExistsError,
    ChunkFormatError,
    ChunkIOError,
    ChunkNotFoundError,
    ChunkRangeError,
    ChunkStoreFullError,
    StaleVersionError,
)
from services.chunk.header import (
    BLOCK_SIZE,
    CHUNK_SIZE,
    HEADER_SIZE,
    SLOT_SIZE,
    SLOT_STRIDE,
    Header,
    encode,
    pick,
)
from services.chunk.placement import choose_directory
from services.chunk.store import ChunkInfo, ChunkStore

B = BLOCK_SIZE


@pytest.fixture
def dirs(tmp_path):
    out = [tmp_path / name for name in ("disk1", "disk2", "disk3")]
    for d in out:
        d.mkdir()
    return [str(d) for d in out]


@pytest.fixture
def store(dirs):
    s = ChunkStore(dirs)
    yield s
    s.close()


def chunk_path(store: ChunkStore, chunk_id: int) -> str:
    return store._paths[chunk_id]


def flip(path: str, position: int, mask: int = 0x40) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ mask]))


def test_random_ranges_read_back_as_a_bytearray_model_says(dirs):
    rng = random.Random(7)
    model, length = bytearray(CHUNK_SIZE), 0
    # a dense region over the first blocks and a sparse one at the chunk's end
    regions = [(0, 6 * B), (CHUNK_SIZE - 2 * B, CHUNK_SIZE)]
    store = ChunkStore(dirs)
    store.create(1, 5)
    for _ in range(400):
        lo, hi = rng.choice(regions)
        offset = rng.randrange(lo, hi)
        size = rng.choice([1, 100, B - 1, B, B + 1, 3 * B + 17, rng.randrange(hi - offset + 1)])
        size = min(size, hi - offset)
        action = rng.random()
        if action < 0.5:
            data = rng.randbytes(size)
            store.write(1, 5, offset, data, sync=rng.random() < 0.1)
            model[offset:offset + size] = data
            length = max(length, offset + size)
        elif action < 0.9:
            assert store.read(1, 5, offset, size) == model[offset:offset + size]
        else:
            new_length = rng.randrange(lo, hi)
            store.truncate(1, 5, new_length)
            if new_length < length:
                model[new_length:] = bytes(CHUNK_SIZE - new_length)
            length = new_length
        assert store.length(1) == length
    store.close()

    with ChunkStore(dirs) as reopened:
        assert list(reopened.list()) == [ChunkInfo(1, 5, length)]
        for lo, hi in regions:
            assert reopened.read(1, 5, lo, hi - lo) == model[lo:hi]
        assert reopened.scrub(1) == []


def test_a_partial_block_write_keeps_the_rest_of_the_block(store):
    store.create(2, 1)
    store.write(2, 1, 0, b"a" * (2 * B))
    store.write(2, 1, B - 3, b"XYZxyz")
    got = store.read(2, 1, 0, 2 * B)
    assert got == b"a" * (B - 3) + b"XYZxyz" + b"a" * (B - 3)
    assert store.read(2, 1, B - 1, 2) == b"Zx"
    assert store.scrub(2) == []


def test_unwritten_bytes_read_as_zeros_and_holes_take_no_disk(store):
    store.create(3, 1)
    assert store.read(3, 1, 0, 100) == bytes(100)              # a new chunk is all zeros
    store.write(3, 1, 40 * B + 5, b"tail")
    assert store.length(3) == 40 * B + 9
    assert store.read(3, 1, 7 * B, 3 * B) == bytes(3 * B)      # a hole
    assert store.read(3, 1, 40 * B, 12) == bytes(5) + b"tail" + bytes(3)   # past the end
    assert store.read(3, 1, CHUNK_SIZE - 10, 10) == bytes(10)
    assert store.used_bytes() < 8 * B


def test_a_stale_version_is_refused_on_every_access(store):
    store.create(4, 10)
    store.write(4, 10, 0, b"data")
    for call in (lambda: store.read(4, 9, 0, 4), lambda: store.write(4, 11, 0, b"x"),
                 lambda: store.truncate(4, 9, 0), lambda: store.set_version(4, 9, 12),
                 lambda: store.delete(4, version=9)):
        with pytest.raises(StaleVersionError) as caught:
            call()
        assert "version 10" in str(caught.value)
    store.set_version(4, 10, 11)
    with pytest.raises(StaleVersionError, match="request is for version 10 but this copy has "
                                                 "version 11"):
        store.read(4, 10, 0, 4)
    assert store.read(4, 11, 0, 4) == b"data"
    assert store.version(4) == 11


def test_versions_and_lengths_survive_a_reopen(dirs):
    with ChunkStore(dirs) as s:
        for i in range(1, 31):
            s.create(i, i + 100)
            s.write(i, i + 100, i * 1000, bytes([i]) * i)
        s.set_version(7, 107, 207, sync=True)
    with ChunkStore(dirs) as s:
        listed = list(s.list())
        assert [c.chunk_id for c in listed] == list(range(1, 31))
        assert listed[6] == ChunkInfo(7, 207, 7 * 1000 + 7)
        assert s.read(30, 130, 30 * 1000, 30) == bytes([30]) * 30
    used = [sum(len(files) for _, _, files in os.walk(d)) for d in dirs]
    assert all(n > 1 for n in used), f"chunks were not spread over the directories: {used}"


def test_truncate_drops_the_cut_bytes_and_a_later_growth_reads_zeros(store):
    store.create(5, 1)
    store.write(5, 1, 0, b"x" * (3 * B))
    store.truncate(5, 1, B + 10)
    assert store.length(5) == B + 10
    store.truncate(5, 1, 3 * B)
    assert store.read(5, 1, 0, 3 * B) == b"x" * (B + 10) + bytes(2 * B - 10)
    store.truncate(5, 1, 0)
    assert store.read(5, 1, 0, 3 * B) == bytes(3 * B)
    assert store.scrub(5) == []


def test_delete_removes_the_chunk_and_its_file(store):
    store.create(6, 1)
    store.write(6, 1, 0, b"x")
    path = chunk_path(store, 6)
    with pytest.raises(StaleVersionError):
        store.delete(6, version=2)
    assert os.path.exists(path)
    store.delete(6, version=1, sync=True)
    assert not os.path.exists(path)
    assert 6 not in store and list(store.list()) == []
    with pytest.raises(ChunkNotFoundError, match="0000000000000006 is not on this chunkserver"):
        store.read(6, 1, 0, 1)
    with pytest.raises(ChunkNotFoundError):
        store.delete(6)
    store.create(6, 3)                                 # the id can be used again
    assert store.read(6, 3, 0, 1) == b"\0"


def test_unknown_chunks_existing_chunks_and_bad_ranges_are_refused(store):
    with pytest.raises(ChunkNotFoundError):
        store.write(99, 1, 0, b"x")
    store.create(8, 1)
    with pytest.raises(ChunkExistsError, match="already exists"):
        store.create(8, 2)
    with pytest.raises(ChunkRangeError, match="split the request at 64 MiB"):
        store.write(8, 1, CHUNK_SIZE - 2, b"abc")
    with pytest.raises(ChunkRangeError):
        store.read(8, 1, -1, 2)
    with pytest.raises(ChunkRangeError):
        store.truncate(8, 1, CHUNK_SIZE + 1)
    with pytest.raises(ChunkRangeError):
        store.set_version(8, 1, 1 << 32)
    assert store.length(8) == 0


def test_directories_must_exist_and_belong_to_one_store(dirs, tmp_path):
    with pytest.raises(ChunkDirectoryError, match="does not exist"):
        ChunkStore([str(tmp_path / "not-mounted")])
    with pytest.raises(ChunkDirectoryError, match="no chunk directories"):
        ChunkStore([])
    with ChunkStore(dirs[:2]), pytest.raises(ChunkDirectoryError, match="in use by another"):
        ChunkStore(dirs[1:])
    ChunkStore(dirs).close()                           # free again once the first closes


def test_a_flipped_data_byte_is_reported_on_read_and_by_scrub(store):
    store.create(9, 1)
    data = random.Random(9).randbytes(4 * B)
    store.write(9, 1, 0, data, sync=True)
    path = chunk_path(store, 9)
    flip(path, HEADER_SIZE + 2 * B + 1234)
    with pytest.raises(ChunkCorruptError) as caught:
        store.read(9, 1, 2 * B + 5000, 10)
    assert caught.value.block == 2 and path in str(caught.value)
    assert "block 2" in str(caught.value)
    assert store.read(9, 1, 0, 2 * B) == data[:2 * B]           # other blocks still read
    assert store.scrub(9) == [2]
    with pytest.raises(ChunkCorruptError):                     # no fresh CRC over damage
        store.write(9, 1, 2 * B + 10, b"patch")
    store.write(9, 1, 2 * B, data[2 * B:3 * B])                # a whole-block rewrite heals
    assert store.read(9, 1, 0, 4 * B) == data
    assert store.scrub(9) == []


def test_a_damaged_header_is_reported_clearly(dirs):
    with ChunkStore(dirs) as s:
        s.create(10, 1, sync=True)                     # only header copy 0 is written yet
        s.create(11, 1)
        path = chunk_path(s, 10)
    flip(path, 40)                                     # inside copy 0's length field
    with ChunkStore(dirs) as s:
        with pytest.raises(ChunkCorruptError) as caught:
            s.read(10, 1, 0, 1)
        assert caught.value.block is None
        message = str(caught.value)
        assert "header" in message and path in message and "fails its CRC32C" in message
        assert [c.chunk_id for c in s.list()] == [11]          # left out of the report...
        assert list(s.damaged()) == [10]                       # ...and listed as damaged
        with pytest.raises(ChunkCorruptError):
            s.scrub(10)
        s.delete(10)                                   # it can still be removed
        assert s.damaged() == {}


def test_a_header_of_a_newer_format_is_refused_not_guessed_at(dirs):
    with ChunkStore(dirs) as s:
        s.create(12, 1)
        path = chunk_path(s, 12)
    raw = bytearray(encode(Header(12, 1, generation=5)))
    raw[8] = 2                                         # format version 2
    raw[-4:] = crc32c.crc32c(bytes(raw[:-4])).to_bytes(4, "little")
    with open(path, "r+b") as f:
        f.seek(SLOT_STRIDE)
        f.write(raw)
    with ChunkStore(dirs) as s, pytest.raises(ChunkFormatError, match="format version 2"):
        s.read(12, 1, 0, 1)


def test_data_written_without_its_header_update_reads_as_an_error(store, monkeypatch):
    store.create(13, 1)
    old = b"o" * (3 * B)
    store.write(13, 1, 0, old, sync=True)

    def lost_header(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(ChunkStore, "_write_header", lost_header)
    with pytest.raises(ChunkIOError, match="I/O error on chunk 000000000000000d"):
        store.write(13, 1, B + 100, b"n" * 50)
    monkeypatch.undo()
    with pytest.raises(ChunkCorruptError) as caught:
        store.read(13, 1, B, 10)
    assert caught.value.block == 1
    assert store.read(13, 1, 0, B) == old[:B]                  # untouched blocks are fine
    assert store.scrub(13) == [1]


def test_a_torn_header_write_falls_back_to_the_previous_header(dirs, monkeypatch):
    store = ChunkStore(dirs)
    store.create(14, 1)
    store.write(14, 1, 0, b"a" * B, sync=True)
    real = store_module.pwrite_all

    def torn(fd, data, offset):
        if offset < HEADER_SIZE:                       # half a header copy, then the crash
            real(fd, bytes(data)[:len(data) // 2], offset)
            raise OSError(errno.EIO, "Input/output error")
        real(fd, data, offset)
    monkeypatch.setattr(store_module, "pwrite_all", torn)
    with pytest.raises(ChunkIOError):
        store.write(14, 1, 0, b"b" * (B + 1))
    monkeypatch.undo()
    store.close()
    with ChunkStore(dirs) as s:
        assert s.length(14) == B                       # the previous header, intact
        with pytest.raises(ChunkCorruptError):
            s.read(14, 1, 0, 10)                       # its block was overwritten: an error


def test_a_crash_at_any_point_of_a_write_gives_old_data_new_data_or_an_error(tmp_path):
    """Disk states a crash can leave (each block's pages old or new, header copy old, new or
    torn) never read back as anything but the old bytes, the new bytes, or an error."""
    d = tmp_path / "disk"
    d.mkdir()
    rng = random.Random(14)
    with ChunkStore([str(d)]) as s:
        s.create(15, 1)
        s.write(15, 1, 0, rng.randbytes(3 * B), sync=True)
        path = chunk_path(s, 15)
        with open(path, "rb") as f:
            before = f.read()
        s.write(15, 1, B // 2, rng.randbytes(3 * B))       # longer: the length tells them apart
        with open(path, "rb") as f:
            after = f.read()
    old_data = before[HEADER_SIZE:].ljust(4 * B, b"\0")
    new_data = after[HEADER_SIZE:].ljust(4 * B, b"\0")
    for trial in range(60):
        page = (4096, B)[trial % 2]        # blocks wholly old or new, or a mix of pages
        data = b"".join(rng.choice((old_data, new_data))[p:p + page]
                        for p in range(0, 4 * B, page))
        slot = next(slice(at, at + SLOT_SIZE) for at in (0, SLOT_STRIDE)
                    if before[at:at + SLOT_SIZE] != after[at:at + SLOT_SIZE])
        cut = rng.randrange(SLOT_SIZE)
        headers = {"old": before[slot], "new": after[slot],
                   "torn": after[slot][:cut] + before[slot][cut:]}
        kind = ("old", "new", "torn")[trial % 3]
        disk = bytearray(after[:HEADER_SIZE])
        disk[slot] = headers[kind]
        (d / "crashed").mkdir(exist_ok=True)
        with ChunkStore([str(d / "crashed")]) as s:
            s.create(15, 1)
            crashed = chunk_path(s, 15)
        with open(crashed, "wb") as f:
            f.write(bytes(disk) + data)
        with ChunkStore([str(d / "crashed")]) as s:
            expect = new_data if s.length(15) == len(after) - HEADER_SIZE else old_data
            for block in range(4):
                try:
                    got = s.read(15, 1, block * B, B)
                except ChunkCorruptError:
                    continue
                assert got == expect[block * B:(block + 1) * B], (trial, kind, block)
            s.delete(15)


def test_a_header_update_never_overwrites_the_last_synced_copy(dirs):
    s = ChunkStore(dirs, max_open=1)
    s.create(16, 1)
    s.write(16, 1, 0, b"x", sync=True)
    path = chunk_path(s, 16)
    with open(path, "rb") as f:
        synced, slot = pick(f.read(HEADER_SIZE))
    for i in range(4):
        s.write(16, 1, i, b"y")                       # unsynced updates...
        s.create(100 + i, 1)                           # ...while the file is closed and reopened
        with open(path, "rb") as f:
            raw = f.read(HEADER_SIZE)
        assert raw[slot * SLOT_STRIDE:slot * SLOT_STRIDE + SLOT_SIZE] == encode(synced)
    assert s.read(16, 1, 0, 5) == b"yyyy\0"
    s.close()


def test_a_create_the_disk_refuses_leaves_no_chunk_behind(store, monkeypatch):
    def disk_full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(store_module, "pwrite_all", disk_full)
    with pytest.raises(ChunkIOError, match="No space left on device"):
        store.create(17, 1)
    monkeypatch.undo()
    assert 17 not in store and list(store.list()) == []
    store.create(17, 1)                                # nothing left in the way
    assert store.read(17, 1, 0, 3) == bytes(3)


def test_new_chunks_go_where_there_is_room_in_proportion_to_free_space(store, monkeypatch):
    free = {"/a": 3 << 40, "/b": 1 << 40, "/full": 10 << 20}
    picks = [choose_directory(i, free, 65 << 20) for i in range(4000)]
    assert picks.count("/full") == 0
    assert 2.5 < picks.count("/a") / picks.count("/b") < 3.5
    assert choose_directory(1, {"/full": 10 << 20}, 65 << 20) is None
    monkeypatch.setattr(ChunkStore, "_free", staticmethod(lambda directory: 1 << 20))
    with pytest.raises(ChunkStoreFullError, match="free some space or add a directory"):
        store.create(18, 1)
