"""Where an erasure-coded part lives in a chunk store.

A chunkserver keeps each copy or part as one chunk file keyed by a store id. A whole
copy's store id is the chunk id; part p of an erasure-coded chunk uses the chunk id
with p + 1 in the top byte, so its file name and header say which part it is, and
two parts of one chunk could even share a server. Chunk ids from the log stay below
2**56 (MAX_CHUNK_ID), which leaves the top byte free.
"""

PART_SHIFT = 56
MAX_CHUNK_ID = (1 << PART_SHIFT) - 1
MAX_PARTS = 255   # `part` is p + 1 for parts 0..254, 0 for a whole copy


def store_id(chunk: int, part: int = 0) -> int:
    """The store id of a copy (part 0) or of part `part - 1` of chunk `chunk`."""
    if not 0 <= chunk <= MAX_CHUNK_ID:
        raise ValueError(f"chunk id {chunk} is outside 0..{MAX_CHUNK_ID}")
    if not 0 <= part <= MAX_PARTS:
        raise ValueError(f"part {part} is outside 0..{MAX_PARTS}")
    return chunk | part << PART_SHIFT


def split(ident: int) -> tuple[int, int]:
    """(chunk id, part) of a store id."""
    return ident & MAX_CHUNK_ID, ident >> PART_SHIFT
