"""Any single corrupted byte in a chunk file is caught: in the data by the block CRCs (a
CRC32C catches every error burst of up to 32 bits), in a header copy by that copy's CRC."""

import os
import random
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.chunk.errors import ChunkCorruptError
from services.chunk.header import BLOCK_SIZE, HEADER_SIZE, SLOT_SIZE, SLOT_STRIDE
from services.chunk.store import ChunkStore

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def chunk_file(directory: str, seed: int, size: int, syncs: int) -> tuple[str, bytes]:
    """A chunk 1 holding `size` random bytes, written in `syncs` + 1 steps."""
    data = bytearray(random.Random(seed).randbytes(size))
    data[0] |= 1                                   # never all zeros, like an empty chunk
    with ChunkStore([directory]) as store:
        store.create(1, 1)
        step = -(-size // (syncs + 1))
        for at in range(0, size, step):
            store.write(1, 1, at, data[at:at + step], sync=at + step < size)
        return store._paths[1], bytes(data)


def corrupt(path: str, position: int, mask: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        old = f.read(1) or b"\0"
        f.seek(position)
        f.write(bytes([old[0] ^ mask]))


@SETTINGS
@given(seed=st.integers(0, 2**32), size=st.integers(1, 3 * BLOCK_SIZE + 999),
       spots=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                      min_size=1, max_size=12))
def test_every_corrupted_data_byte_is_reported_on_read_and_by_scrub(seed, size, spots):
    with tempfile.TemporaryDirectory() as directory:
        path, data = chunk_file(directory, seed, size, syncs=0)
        blocks = -(-size // BLOCK_SIZE)
        file_size = os.path.getsize(path)
        for where, mask in spots:
            # anywhere in the blocks the data occupies, the zero padding past its end included
            position = int(where * blocks * BLOCK_SIZE)
            with open(path, "rb") as f:
                pristine = f.read()
            corrupt(path, HEADER_SIZE + position, mask)
            with ChunkStore([directory]) as store:
                with pytest.raises(ChunkCorruptError) as caught:
                    store.read(1, 1, 0, blocks * BLOCK_SIZE)
                assert caught.value.block == position // BLOCK_SIZE
                assert store.scrub(1) == [position // BLOCK_SIZE]
            with open(path, "wb") as f:
                f.write(pristine)
            assert os.path.getsize(path) == file_size
        with ChunkStore([directory]) as store:
            assert store.read(1, 1, 0, size) == data


@SETTINGS
@given(seed=st.integers(0, 2**32), size=st.integers(1, 2 * BLOCK_SIZE),
       position=st.integers(0, HEADER_SIZE - 1), mask=st.integers(1, 255))
def test_a_corrupted_header_byte_never_serves_data_its_header_copy_does_not_vouch_for(
        seed, size, position, mask):
    """After create and one write, copy 0 holds the creation header (empty chunk) and copy 1
    the current one. Damage to copy 1 is caught by its CRC, and the store falls back to copy
    0, which does not vouch for the data: reads fail. Damage to copy 0 or to the unused
    bytes after each copy leaves copy 1 in charge: reads return the data."""
    with tempfile.TemporaryDirectory() as directory:
        path, data = chunk_file(directory, seed, size, syncs=0)
        corrupt(path, position, mask)
        with ChunkStore([directory]) as store:
            in_current_copy = SLOT_STRIDE <= position < SLOT_STRIDE + SLOT_SIZE
            if in_current_copy:
                assert store.length(1) == 0            # fell back to the creation header
                with pytest.raises(ChunkCorruptError):
                    store.read(1, 1, 0, size)
            else:
                assert store.read(1, 1, 0, size) == data


@SETTINGS
@given(seed=st.integers(0, 2**32), size=st.integers(2, 3 * BLOCK_SIZE),
       copy=st.integers(0, 1), offset=st.integers(0, SLOT_SIZE - 1), mask=st.integers(1, 255))
def test_damage_to_either_of_two_written_header_copies_gives_right_data_or_an_error(
        seed, size, copy, offset, mask):
    """With both copies written (the earlier one synced), damage to either one leaves the
    other in charge: every block reads back as the data or fails, never as other bytes."""
    with tempfile.TemporaryDirectory() as directory:
        path, data = chunk_file(directory, seed, size, syncs=1)
        corrupt(path, copy * SLOT_STRIDE + offset, mask)
        with ChunkStore([directory]) as store:
            length = store.length(1)
            assert length in (-(-size // 2), size)      # the synced half, or all of it
            for block in range(-(-size // BLOCK_SIZE)):
                try:
                    got = store.read(1, 1, block * BLOCK_SIZE, BLOCK_SIZE)
                except ChunkCorruptError:
                    continue
                expect = data[:length].ljust(3 * BLOCK_SIZE + 1, b"\0")
                assert got == expect[block * BLOCK_SIZE:(block + 1) * BLOCK_SIZE]
