"""Does a batch from a Follow stream continue the archive? Pure decisions, no I/O.

A metalogger that stored entries not continuing what it holds would keep a history
that no node ever had, and a restore from it would silently differ. So anything
that does not line up is a gap: reported, counted, and the stream reconnects.
"""

from collections.abc import Sequence

from services.metadata.raft.messages import Entry


class GapError(Exception):
    """The stream does not continue the archive; nothing of the batch was stored."""


def check_batch(last_index: int, last_term: int, prev_index: int, prev_term: int,
                entries: Sequence[Entry], source: str = "the node") -> None:
    """Raise GapError unless `entries` (sent after `prev_index`, whose term the node
    gives as `prev_term`, 0 if it does not know it) continue an archive ending at
    `last_index` with term `last_term`."""
    if prev_index != last_index:
        raise GapError(f"{source} sent entries after index {prev_index}, but the archive "
                       f"ends at {last_index}")
    if last_index and prev_term and prev_term != last_term:
        raise GapError(f"{source} has term {prev_term} at index {prev_index}, the archive "
                       f"has term {last_term}: the histories differ there")
    index, term = prev_index, max(prev_term, last_term)
    for e in entries:
        if e.index != index + 1:
            raise GapError(f"{source} sent index {e.index} after {index}: entries "
                           f"{index + 1}..{e.index - 1} are missing" if e.index > index + 1
                           else f"{source} sent index {e.index} again after {index}")
        if e.term < term:
            raise GapError(f"{source}'s entry {e.index} has term {e.term}, below the term "
                           f"{term} before it: a term never goes back in a committed log")
        index, term = e.index, e.term


def snapshot_wanted(announced: int, archived: int, last_index: int) -> bool:
    """Fetch a snapshot a node announces when it is newer than the archive's latest
    and the archive already holds the entries up to it (taking it earlier would make
    the archive jump over entries the stream can still deliver)."""
    return archived < announced <= last_index
