"""Which of a chunkserver's directories a new chunk goes to, pure.

Weighted rendezvous hashing: each directory scores -free / ln(h), with h a hash of
(chunk id, directory) in (0, 1). The highest score wins, so a directory gets new chunks
in proportion to its free space, the choice needs no shared state, and adding a
directory moves only its share of new chunks.
"""

import hashlib
import math
from collections.abc import Mapping


def _unit_hash(chunk_id: int, directory: str) -> float:
    digest = hashlib.blake2b(f"{chunk_id}:{directory}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") + 0.5) / 2**64


def choose_directory(chunk_id: int, free: Mapping[str, int], need: int) -> str | None:
    """The directory for `chunk_id` among those with at least `need` free bytes, or None."""
    best, best_score = None, -math.inf
    for directory, free_bytes in free.items():
        if free_bytes < need:
            continue
        score = -free_bytes / math.log(_unit_hash(chunk_id, directory))
        if score > best_score:
            best, best_score = directory, score
    return best
