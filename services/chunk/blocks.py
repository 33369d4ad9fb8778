"""Block arithmetic of a chunk, pure: which 64 KiB blocks a byte range touches, which of
them a write covers only partly, and the CRCs of the blocks a write leaves behind."""

from collections.abc import Mapping

import crc32c

from services.chunk.errors import ChunkRangeError
from services.chunk.header import BLOCK_SIZE, CHUNK_SIZE


def check_range(offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > CHUNK_SIZE:
        raise ChunkRangeError(
            f"byte range offset={offset} length={length} is outside a chunk (0 to {CHUNK_SIZE}"
            " bytes): split the request at 64 MiB chunk boundaries")


def touched(offset: int, length: int) -> range:
    """The blocks holding bytes [offset, offset + length)."""
    if length == 0:
        return range(0)
    return range(offset // BLOCK_SIZE, (offset + length - 1) // BLOCK_SIZE + 1)


def partly_covered(offset: int, length: int) -> list[int]:
    """Blocks a write covers only in part: their other bytes must be read to get the CRC."""
    blocks = touched(offset, length)
    end = offset + length
    return [b for b in blocks if offset > b * BLOCK_SIZE or end < (b + 1) * BLOCK_SIZE]


def written_crcs(offset: int, data, old: Mapping[int, bytes]) -> dict[int, int]:
    """CRC32C of each block after `data` lands at `offset`.

    `old` holds the previous contents (BLOCK_SIZE bytes, verified) of the partly covered
    blocks; the CRC runs over old prefix + new bytes + old suffix without copying them.
    """
    view, end, crcs = memoryview(data), offset + len(data), {}
    for b in touched(offset, len(data)):
        start = b * BLOCK_SIZE
        lo, hi = max(offset, start), min(end, start + BLOCK_SIZE)
        crc = crc32c.crc32c(old[b][:lo - start]) if lo > start else 0
        crc = crc32c.crc32c(view[lo - offset:hi - offset], crc)
        if hi < start + BLOCK_SIZE:
            crc = crc32c.crc32c(old[b][hi - start:], crc)
        crcs[b] = crc
    return crcs
